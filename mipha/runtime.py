"""A running virtual router: its network namespace, data plane backend, engine and UDP listener.

The daemon keeps one :class:`VirtualRouter` per configured ``virtual-router`` entry.  Starting one is
the fallible part of a configuration transaction (the namespace, the backend's kernel objects, the
UDP socket on the home agent address); it happens in the transaction's PREPARE phase so that a
refusal by the kernel becomes the client's ``rpc-error`` and nothing stays half-built.

After every burst of registrations (and every expiry), :meth:`VirtualRouter.flush` runs before the
replies leave: it journals the binding changes (so a ``kill -9`` loses no acknowledged binding), then
the data plane intents are handed to the backend in one batch, and the engine's events become
NETCONF notifications.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from ha.dataplane.base import DataPlane, DataPlaneError, TunnelCounters, VirtualRouterPlane
from ha.dataplane.factory import create_backend
from ha.engine.bindings import UDP_TUNNEL, Binding
from ha.engine.config import VirtualRouterConfig
from ha.engine.errors import ConfigRefused
from ha.engine.events import Event
from ha.engine.home_agent import HomeAgent, ReplayState
from ha.netns import NetnsThread, ensure_netns, is_owned, release_netns
from ha.transport import HomeAgentTransport, open_udp_socket

from .aaa import AaaClient
from .heap import collector_paused
from .journal import HAS_NONCE, RENEWAL, BindingJournal, BindingRecord, Renewals

log = logging.getLogger(__name__)
_PACK_U32 = struct.Struct("!I").pack


def _ntoa(value: int) -> str:
    return socket.inet_ntoa(_PACK_U32(value))


class VirtualRouterError(Exception):
    """Starting or changing a virtual router failed; ``path`` names the YANG node to blame."""

    def __init__(self, message: str, path: str, app_tag: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.app_tag = app_tag


#: Bindings looked at per page of a whole-table clear-bindings (:meth:`VirtualRouter.clear_all`): a few
#: ms of the loop each, journal, notifications and data plane included.
CLEAR_PAGE = 256


def _vr_path(name: str) -> str:
    return f"/mipha:virtual-routers/mipha:virtual-router[mipha:name='{name}']"


def record_of(vr: str, engine: HomeAgent, b: Binding) -> BindingRecord:
    """The journal record of one of ``engine``'s binding objects."""
    node = engine.node(b.mobile_node)
    subscriber = engine.subscriber(b.mobile_node)
    return BindingRecord(
        vr,
        _ntoa(b.home_address),
        _ntoa(b.care_of_address),
        b.mobile_node,
        _ntoa(b.source >> 16),
        b.source & 0xFFFF,
        b.lifetime,
        b.registered + engine.wall_offset,
        b.identification,
        b.flags & (0xFF | UDP_TUNNEL),  # the request's flags, and whether the tunnel is RFC 3519 UDP
        str(b.encapsulation),
        node.nai if node is not None else None,
        subscriber.journal_json() if subscriber is not None else None,
        engine.carried_nonce(b),
        engine.revocation_record(b),
    )


class VirtualRouter:
    """One virtual router's runtime (see the module docstring)."""

    def __init__(
        self,
        config: VirtualRouterConfig,
        *,
        backend: str,
        journal: BindingJournal | None,
        on_events: Callable[[str, list[Event]], None] | None = None,
        proxy_arp_mode: str = "entry",
    ) -> None:
        self.name = config.name
        self.config = config
        self.backend_kind = backend
        self.journal = journal
        self.on_events = on_events
        self.proxy_arp_mode = proxy_arp_mode
        self.netns: str | None = config.namespace
        self.created_netns = False
        self.engine: HomeAgent | None = None
        self.plane: DataPlane | None = None
        self.transport: HomeAgentTransport | None = None
        self._discontinuity = time.time()
        self._plane_queue: list = []
        self._plane_task: asyncio.Task | None = None
        self.plane_errors = 0
        self.home_prefix: IPv4Network | None = None
        self._ns: NetnsThread | None = None
        #: hot standby (mipha.standby): whether to answer now, and where binding changes are replicated
        #: before their replies leave (returns the future the replies wait for)
        self.gate: Callable[[], bool] | None = None
        self.replicate: Callable[..., asyncio.Future] | None = None
        #: hot standby: the data plane starts as a standby (tunnels and routes, no rule, no proxy ARP)
        self.standby_plane = False
        self.aaa: AaaClient | None = None
        self._aaa_config: object = None
        #: YANG-Push on-change (mipha.onchange): each burst's changed binding keys and events
        #: (this router, keys of bindings added/removed/changed, bindings renewed in place, events);
        #: the renewed ones as bindings, so a hook with nobody listening builds nothing per renewal
        self.on_changes: Callable[[VirtualRouter, list[int], list[Binding], list[Event]], None] | None = None

    # -- the VirtualRouterState protocol used by mipha.state ------------------------------------------

    def tunnels(self) -> list[TunnelCounters]:
        return self.plane.tunnels() if self.plane is not None else []

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def discontinuity_time(self) -> float:
        return self._discontinuity

    def clear_statistics(self) -> None:
        if self.engine is not None:
            self.engine.clear_statistics()
        self._discontinuity = time.time()

    # -- life cycle -------------------------------------------------------------------------------------

    async def start(self, restored: Sequence[BindingRecord] = ()) -> None:
        """Build everything; on failure undo what was built and raise VirtualRouterError."""
        try:
            await self._start(restored)
        except BaseException:
            await self.stop(flush=True, release=True)
            raise

    async def _start(self, restored: Sequence[BindingRecord]) -> None:
        path = _vr_path(self.name)
        if self.netns is not None:
            try:
                self.created_netns = ensure_netns(self.netns)
            except OSError as exc:
                raise VirtualRouterError(
                    f"cannot create network namespace {self.netns}: {exc}", path
                ) from exc
        ha = self.config.home_agent
        if ha is None:
            return
        ha_path = f"{path}/mipha:home-agent"
        try:
            ns_thread = NetnsThread(self.netns)
        except OSError as exc:  # e.g. a stale /run/netns file: an error for the operator, never a crash
            raise VirtualRouterError(str(exc), path) from exc
        with ns_thread as self._ns:  # one thread in the namespace for every check
            try:
                if self.netns is not None and is_owned(self.netns):
                    self._ensure_loopback_address(ha.address)
                self._check_local_address(ha.address, f"{ha_path}/mipha:address")
                if ha.home_interface is not None:
                    self._check_interface(ha.home_interface, f"{ha_path}/mipha:home-interface")
                    self.home_prefix = self._interface_prefix(ha.home_interface, ha.address)
            finally:
                self._ns = None
        with collector_paused():
            engine = HomeAgent(self.engine_config(self.config))
        self.config = engine.config  # its node map is the engine's own: one map of 100k entries, not two
        if self.journal is not None or self.replicate is not None:
            engine.track_changes()
        if self.replicate is not None:
            engine.track_replay()
        plane = create_backend(
            self.backend_kind,
            VirtualRouterPlane(
                name=self.name,
                netns=self.netns,
                ha_address=ha.address,
                home_interface=ha.home_interface,
                proxy_arp_mode=self.proxy_arp_mode,
                standby=self.standby_plane,
            ),
        )
        self.plane = plane
        engine.set_capabilities(plane.capabilities)  # never code 0 for what the backend cannot do
        if hasattr(plane, "on_garp_sent"):  # count the gratuitous ARPs that really left
            plane.on_garp_sent = engine.gratuitous_arp_sent
        try:
            engine.check_capabilities()
        except ConfigRefused as exc:
            raise VirtualRouterError(exc.message, exc.path, exc.app_tag) from exc
        try:
            await plane.start()
        except (DataPlaneError, OSError) as exc:
            raise VirtualRouterError(f"data plane ({plane.name}) refused to start: {exc}", ha_path) from exc
        self.engine = engine
        loop = asyncio.get_running_loop()
        if restored:
            self._restore(engine, restored, loop.time(), time.time())
        try:
            await plane.resync(list(engine.desired_bindings()))
        except (DataPlaneError, OSError) as exc:
            raise VirtualRouterError(
                f"data plane ({plane.name}) refused the bindings: {exc}", ha_path
            ) from exc
        engine.drain_intents()  # resync restated their effect
        sock = None
        try:  # the unicast socket takes the usual traffic, the wildcard one broadcasts (ha.transport)
            sock = open_udp_socket("0.0.0.0", ha.udp_port, self.netns)
            unicast = open_udp_socket(ha.address, ha.udp_port, self.netns, pktinfo=False)
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise VirtualRouterError(
                f"cannot listen on UDP port {ha.udp_port} in {self.netns or 'the default namespace'}: {exc}",
                f"{ha_path}/mipha:udp-port",
            ) from exc
        plane.attach_udp_socket(unicast)  # tunnel data leaves from the HA's address (RFC 3519)
        self.transport = HomeAgentTransport(
            engine,
            sock,
            unicast=unicast,
            on_output=self.flush,
            tunnel_data=plane.udp_input if plane.capabilities.udp_tunnels else None,
            gate=self.gate,
        )
        self.transport.start()
        self.aaa = AaaClient(
            engine=lambda: self.engine,
            config=lambda: self.config.aaa,
            nas_address=ha.address,
            netns=self.netns,
            flush=self.flush,
            transport=lambda: self.transport,
        )
        self._aaa_config = self.config.aaa
        self.aaa.start()
        log.info(
            "virtual router %s: home agent %s on UDP %d (netns %s, data plane %s, %d bindings restored; %s)",
            self.name,
            ha.address,
            ha.udp_port,
            self.netns or "-",
            plane.name,
            engine.binding_count,
            self.transport.receive_path,
        )

    def _restore(
        self,
        engine: HomeAgent,
        records: Sequence[BindingRecord],
        now: float,
        wallclock: float,
        replay: dict[str, ReplayState] | None = None,
    ) -> None:
        """Bindings into the engine; each node's replay state from ``replay`` (its own key in etcd)
        or else from its newest binding that carries a nonce (the binding's identification already
        resumes a timestamp node's state in ``restore_binding``)."""
        restored = 0
        newest: dict[str, BindingRecord] = {}
        for record in records:
            remaining = record.remaining(wallclock)
            if remaining <= 0:
                continue
            if engine.restore_binding(record, now=now, wallclock=wallclock):
                restored += 1
                last = newest.get(record.mobile_node)
                if last is None or record.registered_at > last.registered_at:
                    newest[record.mobile_node] = record
            else:
                log.warning(
                    "virtual router %s: journaled binding %s -> %s no longer matches the configuration",
                    self.name,
                    record.home_address,
                    record.care_of_address,
                )
        replay = replay or {}
        for name, record in newest.items():
            if record.ha_nonce is not None and name not in replay:
                engine.restore_replay(name, ReplayState(record.identification, record.ha_nonce, None))
        for name, state in replay.items():
            engine.restore_replay(name, state)
        engine.take_changed_bindings()  # already in the journal
        engine.take_replay_changes()
        engine.drain_events()  # restoring is not news: no notifications

    def engine_config(self, config: VirtualRouterConfig) -> VirtualRouterConfig:
        """What the engine needs beyond YANG: the home link prefix (subnet-directed discovery, 136)."""
        ha = config.home_agent
        if ha is None or ha.home_prefix == self.home_prefix:  # (an engine's config carries its own)
            return config
        return dataclasses.replace(config, home_agent=dataclasses.replace(ha, home_prefix=self.home_prefix))

    def _interface_prefix(self, name: str, address: IPv4Address) -> IPv4Network | None:
        """The IPv4 prefix on the home interface (the one holding the HA address if there are several)."""
        from pyroute2 import IPRoute

        def probe() -> list[tuple[str, int]]:
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=name)
                if not index:
                    return []
                return [
                    (a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                    for a in ipr.get_addr(family=socket.AF_INET, index=index[0])
                ]

        try:
            found = [IPv4Interface(f"{a}/{n}") for a, n in self._in_netns(probe)]
        except OSError:
            return None
        for iface in found:
            if iface.ip == address:
                return iface.network
        return found[0].network if found else None

    def _in_netns(self, fn: Callable, *args: object):
        """Run ``fn`` on the namespace thread :meth:`_start` holds open for its checks."""
        assert self._ns is not None
        return self._ns.call(fn, *args)

    def _ensure_loopback_address(self, address: IPv4Address) -> None:
        """In a namespace mipha created, put the home agent address on ``lo`` (as JUNOSe puts the
        router ID on a loopback) unless an interface already has it, so the VR works out of the box."""
        from pyroute2 import IPRoute

        def setup() -> None:
            with IPRoute() as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                ipr.link("set", index=lo, state="up")
                present = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)}
                if str(address) not in present:
                    ipr.addr("add", index=lo, address=str(address), prefixlen=32)

        try:
            self._in_netns(setup)
        except Exception as exc:  # the local-address check below reports the consequence
            log.warning("virtual router %s: cannot add %s to lo: %s", self.name, address, exc)

    def _check_local_address(self, address: IPv4Address, path: str) -> None:
        """The HA address must be configured in the namespace: tunnels and replies come from it."""

        def probe() -> None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((str(address), 0))
            finally:
                s.close()

        try:
            self._in_netns(probe)
        except OSError as exc:
            raise VirtualRouterError(
                f"home agent address {address} is not configured on any interface of "
                f"{self.netns or 'the default namespace'} ({exc.strerror})",
                path,
            ) from exc

    def _check_interface(self, name: str, path: str) -> None:
        def probe() -> int:
            return socket.if_nametoindex(name)

        try:
            self._in_netns(probe)
        except OSError as exc:
            raise VirtualRouterError(
                f"home interface {name} does not exist in {self.netns or 'the default namespace'}", path
            ) from exc

    async def stop(self, *, flush: bool = True, release: bool = False) -> None:
        """Stop listening and, with ``flush``, remove every kernel object of this VR."""
        if self.aaa is not None:
            self.aaa.close()
            self.aaa = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._plane_task is not None:
            with contextlib.suppress(BaseException):
                await self._plane_task
            self._plane_task = None
        if self.plane is not None:
            try:
                await self.plane.stop(flush=flush)
            except Exception:
                log.exception("virtual router %s: data plane stop failed", self.name)
            self.plane = None
        if release and self.netns is not None and self.created_netns:
            try:
                release_netns(self.netns)
            except OSError:
                log.exception("virtual router %s: cannot delete namespace %s", self.name, self.netns)
        self.engine = None

    def records(self) -> list[BindingRecord]:
        """Journal records of every binding, in key order (what a rebuilt router takes over)."""
        return [record for page in self.record_pages() for record in page]

    def record_pages(self, page: int = 4096) -> Iterator[list[BindingRecord]]:
        """The same, page by page; each page is read after the previous page's last key, so the
        caller may let the event loop run between pages (the journal's compaction does)."""
        engine = self.engine
        if engine is None:
            return
        for bindings in engine.raw_binding_pages(page):
            yield [record_of(self.name, engine, b) for b in bindings]

    # -- the output pump ------------------------------------------------------------------------------

    def flush(self) -> asyncio.Future | None:
        """Journal (and replicate) binding changes, queue intents for the data plane, publish events.

        Called by the transport after each burst and timer, *before* it sends the burst's replies;
        with hot standby it returns the replication's future, which the replies wait for.
        """
        engine = self.engine
        if engine is None:
            return None
        changed, renewed = engine.take_binding_changes()
        replay = engine.take_replay_changes() if self.replicate is not None else []
        replicated = None
        if (changed or renewed or replay) and (self.journal is not None or self.replicate is not None):
            added, removed = [], []
            for key in changed:
                b = engine.raw_binding(key)
                if b is None:
                    removed.append((self.name, _ntoa(key >> 32), _ntoa(key & 0xFFFFFFFF)))
                else:
                    added.append(record_of(self.name, engine, b))
            renewals = self._renewals(engine, renewed, added) if renewed else []
            if self.journal is not None and (added or removed or renewals):
                self.journal.record(added, removed, renewals)
            if self.replicate is not None:
                replicated = self.replicate(added, removed, self._replay_records(added, replay))
        elif self.replicate is not None:  # replies behind earlier writes (a retransmission's)
            replicated = self.replicate()
        intents = engine.drain_intents()
        if intents:
            self._plane_queue.extend(intents)
            if self._plane_task is None or self._plane_task.done():
                self._plane_task = asyncio.get_running_loop().create_task(self._pump())
        events = engine.drain_events()
        aaa = self.aaa
        if aaa is not None:
            if self._aaa_config is not self.config.aaa:  # a commit changed virtual-router/aaa
                self._aaa_config = self.config.aaa
                aaa.reconfigure()
            if events:
                aaa.account(events)
        if events and self.on_events is not None:
            self.on_events(self.name, events)
        if (changed or renewed or events) and self.on_changes is not None:
            self.on_changes(self, changed, renewed, events)
        if aaa is not None:
            lookups = engine.drain_aaa_lookups()
            if lookups:
                aaa.submit(lookups)
        return replicated

    def _renewals(
        self, engine: HomeAgent, renewed: list[Binding], added: list[BindingRecord]
    ) -> list[Renewals]:
        """The journal's packed form of bindings renewed in place (mipha.journal.RENEWAL); whole
        records instead (into ``added``) when a standby takes them (replication sends whole records).
        An AAA-learnt node's binding keeps the subscriber its record carries: the engine reports the
        binding changed, not renewed, when RADIUS gave the node a new one."""
        if self.replicate is not None:
            added.extend(record_of(self.name, engine, b) for b in renewed)
            return []
        offset, carried, pack = engine.wall_offset, engine.carried_nonce, RENEWAL.pack
        mask = 0xFF | UDP_TUNNEL
        records = b"".join(
            [
                pack(
                    b.home_address,
                    b.care_of_address,
                    b.source >> 16,
                    b.source & 0xFFFF,
                    b.lifetime,
                    b.identification,
                    b.registered + offset,
                    (b.flags & mask) | (0 if (nonce := carried(b)) is None else HAS_NONCE),
                    nonce or 0,
                )
                for b in renewed
            ]
        )
        return [Renewals(self.name, records)]

    # -- hot standby (mipha.standby) --------------------------------------------------------------------

    def _replay_records(
        self, added: list[BindingRecord], replay: list[tuple[str, ReplayState | None]]
    ) -> list[tuple[str, str, ReplayState | None]]:
        """Replay state to replicate beside the bindings: (vr, node, state), None where a binding
        record of this burst carries the node's state (or it has none): its own key then goes.

        A binding record carries its request's Identification and the nonce its reply sent; the node's
        state needs a key of its own only when no record written now says it (a 133, a denial, a
        deregistration, an expiry of the binding that carried it)."""
        if not replay:
            return []
        carriers = {r.mobile_node: r for r in added}
        out: list[tuple[str, str, ReplayState | None]] = []
        for name, state in replay:
            record = carriers.get(name)
            carried = state is None or (
                record is not None
                and state.offered_nonce is None
                and record.identification == state.identification
                and record.ha_nonce == state.ha_nonce
            )
            out.append((self.name, name, None if carried else state))
        return out

    async def adopt(self, records: list[BindingRecord], replay: dict[str, ReplayState] | None = None) -> None:
        """Take over replicated bindings and replay state: into the engine, then the data plane (as
        after a restart)."""
        engine, plane = self.engine, self.plane
        if engine is None or plane is None:
            return
        loop = asyncio.get_running_loop()
        engine.reset_replay()  # what this member remembers from an earlier term is stale
        self._restore(engine, records, loop.time(), time.time(), replay or {})
        await self.settle()
        await plane.resync(list(engine.desired_bindings()))
        engine.drain_intents()
        if self.transport is not None:
            self.transport.poke()

    async def release_bindings(self) -> None:
        """No longer active: forget every binding and its kernel state, journaling nothing."""
        engine, plane = self.engine, self.plane
        if engine is None or plane is None or engine.binding_count == 0:
            return
        engine.clear_bindings()
        engine.take_changed_bindings()
        engine.take_replay_changes()
        engine.drain_intents()
        engine.drain_events()
        await self.settle()
        await plane.resync([])

    async def clear_all(self, *, care_of_address: IPv4Address | None = None) -> int:
        """``clear-bindings`` of every binding (or every one to ``care_of_address``) in pages of
        :data:`CLEAR_PAGE`, the event loop running between them: registrations arriving meanwhile are
        answered at once.  What is cleared is what was registered before the clear began
        (``HomeAgent.clear_bindings_page``): a registration answered meanwhile stands, whether it came
        before or after its binding's page.  Each page is journaled, notified and accounted like a
        burst, and the data plane (and the Accounting-Stops in flight) kept up with before the next
        page; returns when the last page's kernel state is gone."""
        loop = asyncio.get_running_loop()
        before, after, cleared = loop.time(), None, 0
        while True:
            engine = self.engine
            if engine is None:
                return cleared
            count, after = engine.clear_bindings_page(
                before=before, after=after, limit=CLEAR_PAGE, care_of_address=care_of_address
            )
            if count:
                cleared += count
                self.flush()
                if self.transport is not None:
                    self.transport.poke()
            await self.settle()
            if self.aaa is not None:
                await self.aaa.accounting_room()
            if after is None:
                return cleared
            await asyncio.sleep(0)

    async def _pump(self) -> None:
        """Apply queued intents in order, in batches, until the queue is empty."""
        while self._plane_queue and self.plane is not None:
            batch, self._plane_queue = self._plane_queue, []
            try:
                await self.plane.apply(batch)
            except Exception as exc:
                self.plane_errors += 1
                log.exception(
                    "virtual router %s: data plane refused %d intents; resyncing", self.name, len(batch)
                )
                if self.engine is not None:  # the replies left: withdraw, count, notify (issue 11)
                    self.engine.data_plane_failed(batch, str(exc))
                    self.flush()
                await self._resync()

    async def _resync(self) -> None:
        if self.plane is None or self.engine is None:
            return
        try:
            await self.plane.resync(list(self.engine.desired_bindings()))
        except Exception:
            self.plane_errors += 1
            log.exception("virtual router %s: data plane resync failed", self.name)

    async def settle(self) -> None:
        """Wait until every queued intent reached the data plane (RPCs and tests use it)."""
        while self._plane_task is not None and not self._plane_task.done():
            await self._plane_task
        if self._plane_queue and self.plane is not None:
            self._plane_task = asyncio.get_running_loop().create_task(self._pump())
            await self._plane_task
