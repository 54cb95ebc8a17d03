"""What the ``ipip`` and ``tun`` backends share: the VR namespace, mipha's table + rule, host routes,
proxy-ARP entries, gratuitous ARP, reference-counted tunnels and reconciliation.

A backend subclass only says how a tunnel is made (:meth:`_create_tunnel` / :meth:`_delete_tunnel`),
which device a home address is routed into (:meth:`_route_oif`) and how its fast path is refreshed
(:meth:`_refresh`).  Intents are dispatched through :attr:`KernelPlane.HANDLERS`, a table
keyed by intent type (h11's ``WRITERS`` idea).  Route and proxy changes are not sent one by one: the
handlers record the final wanted state per address and :meth:`_flush` sends them as netlink batches
(:mod:`ha.dataplane.nlbatch`), so applying 10k bindings costs a handful of ``send`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, ClassVar

from pyroute2 import IPRoute

from ha.netns import NetnsThread, ensure_netns, read_sysctl, write_sysctl

from . import nlbatch
from .base import DataPlane, DataPlaneError, DesiredBinding, TunnelCounters, VirtualRouterPlane
from .intents import (
    Encapsulation,
    EnsureTunnel,
    GratuitousArp,
    Intent,
    ProxyArp,
    ReleaseTunnel,
    RemoveHomeRoute,
    SetHomeRoute,
)
from .ownership import MIPHA_RULE_PRIORITY, MIPHA_TABLE, RTPROT_MIPHA

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
INLINE_FLUSH_MAX = 64
ARP_REQUEST = 1
ARP_REPLY = 2


@dataclass(slots=True)
class Tunnel:
    """One tunnel per (care-of address, encapsulation), shared by every binding behind it."""

    coa: IPv4Address
    encapsulation: Encapsulation
    refs: int = 0
    ifindex: int = 0
    ifname: str | None = None


TunnelKey = tuple[IPv4Address, Encapsulation]


def garp_frame(sender_mac: bytes, home_address: IPv4Address, *, op: int = ARP_REQUEST) -> bytes:
    """A broadcast gratuitous ARP: sender IP = target IP = home address (RFC 5944 §4.6)."""
    ip = home_address.packed
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sender_mac, ip, b"\xff" * 6, ip)
    return b"\xff" * 6 + sender_mac + struct.pack("!H", ETH_P_ARP) + arp


def arp_request(sender_mac: bytes, sender: IPv4Address, target: IPv4Address) -> bytes:
    """A broadcast ARP request "who has ``target``, tell ``sender``"."""
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, ARP_REQUEST, sender_mac, sender.packed, b"\0" * 6, target.packed
    )
    return b"\xff" * 6 + sender_mac + struct.pack("!H", ETH_P_ARP) + arp


#: A node that came home is asked for its MAC on the home link: this many ARP requests, this far apart.
CAME_HOME_PROBES = 3
CAME_HOME_PROBE_INTERVAL = 0.3


class KernelPlane(DataPlane):
    """Base of the kernel-programming backends, bound to one virtual router."""

    HANDLERS: ClassVar[dict[type, str]] = {
        EnsureTunnel: "_ensure_tunnel",
        ReleaseTunnel: "_release_tunnel",
        SetHomeRoute: "_set_home_route",
        RemoveHomeRoute: "_remove_home_route",
        ProxyArp: "_proxy_arp",
        GratuitousArp: "_gratuitous_arp",
    }
    #: True when creating a tunnel touches the kernel (so it must run on the namespace's thread).
    TUNNELS_IN_KERNEL: ClassVar[bool] = True

    def __init__(
        self, vr: VirtualRouterPlane, *, table: int = MIPHA_TABLE, proto: int = RTPROT_MIPHA
    ) -> None:
        self.vr = vr
        self.table = table
        self.proto = proto
        self.rule_priority = MIPHA_RULE_PRIORITY if table == MIPHA_TABLE else table
        self.standby = vr.standby  # hot standby: tunnels and routes only (set_standby)
        # One tunnel per (CoA, encapsulation); ``_current`` is the one a CoA's home routes use (the
        # most recently ensured), so an encapsulation change of a live binding can move its routes.
        self._tunnels: dict[TunnelKey, Tunnel] = {}
        self._current: dict[IPv4Address, Tunnel] = {}
        self._homes: dict[IPv4Address, tuple[IPv4Address, ...]] = {}
        self._reverse: dict[IPv4Address, bool] = {}
        # Reverse index and change tracking, so one registration costs O(1) whatever the table size.
        self._homes_by_coa: dict[IPv4Address, set[IPv4Address]] = {}
        self._dirty_homes: set[IPv4Address] = set()
        self._dirty_coas: set[IPv4Address] = set()
        self._full_refresh = True
        self._lock = asyncio.Lock()
        self._proxied: set[IPv4Address] = set()
        self._route_ops: dict[IPv4Address, int | None] = {}  # address -> oif (add/replace) or None (delete)
        self._proxy_ops: dict[IPv4Address, bool] = {}
        self._garps: list[GratuitousArp] = []
        # One AF_PACKET socket per plane (closing one costs an RCU grace period, ~15 ms on the event
        # loop) and one pacing task for every pending burst: [frame, frames still to send].
        self._garp_sock: socket.socket | None = None
        self._garp_pending: list[list[Any]] = []
        self._garp_task: asyncio.Task[None] | None = None
        self.garps_sent = 0
        #: Called with each gratuitous ARP intent whose first frame went out (the engine counts those).
        self.on_garp_sent: Callable[[GratuitousArp], None] | None = None
        self._arp_waiters: dict[bytes, asyncio.Future[bytes]] = {}  # home address (packed) -> its MAC
        self._probes: set[asyncio.Task[None]] = set()
        self._ns: NetnsThread | None = None
        self._nl: nlbatch.RtnlBatch | None = None
        self._ipr: IPRoute | None = None
        self.home_ifindex = 0
        self.home_mac = b""
        if vr.proxy_arp_mode not in ("entry", "interface"):
            raise DataPlaneError(f"proxy_arp_mode must be 'entry' or 'interface', not {vr.proxy_arp_mode!r}")
        self.proxy_per_entry = vr.proxy_arp_mode == "entry"
        self._proxy_arp_before: str | None = None
        self._dispatch: dict[type, Callable[[Any], None]] = {
            kind: getattr(self, name) for kind, name in self.HANDLERS.items()
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def ns(self) -> NetnsThread:
        if self._ns is None:
            raise DataPlaneError(f"{self.name} backend for VR {self.vr.name!r} is not started")
        return self._ns

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.ns.call(fn, *args)

    async def _acall(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.ns.submit(fn, *args))

    async def start(self) -> None:
        if self.vr.netns is not None and ensure_netns(self.vr.netns):
            log.info("VR %s: created network namespace %s", self.vr.name, self.vr.netns)
        self._ns = NetnsThread(self.vr.netns)
        try:
            self._nl = self._call(nlbatch.RtnlBatch)
            self._ipr = self._call(IPRoute)
            await self._acall(self._prepare_namespace)
            await self._start_backend()
        except BaseException:
            await self.stop(flush=False)  # release threads, sockets and the TUN; keep kernel state
            raise

    def _prepare_namespace(self) -> None:
        """Forwarding on, proxy_delay 0 and the home interface's MAC, mipha's policy rule."""
        write_sysctl(("net", "ipv4", "ip_forward"), 1)
        home = self.vr.home_interface
        if home:
            try:
                self.home_ifindex = socket.if_nametoindex(home)
            except OSError as exc:
                raise DataPlaneError(f"home interface {home!r} not found in VR {self.vr.name!r}") from exc
            write_sysctl(("net", "ipv4", "neigh", home, "proxy_delay"), 0)
            write_sysctl(("net", "ipv4", "conf", home, "forwarding"), 1)
            if not self.proxy_per_entry:
                key = ("net", "ipv4", "conf", home, "proxy_arp")
                self._proxy_arp_before = read_sysctl(key)
                write_sysctl(key, 0 if self.standby else 1)
            link = self.ipr.get_links(self.home_ifindex)[0]
            self.home_mac = bytes.fromhex(link.get("IFLA_ADDRESS").replace(":", ""))
        else:  # once, not per binding: a log line per registration cost ~5 % of the daemon's CPU
            log.warning(
                "VR %s has no home interface: no proxy ARP nor gratuitous ARP for its bindings", self.vr.name
            )
        self._ensure_rule()

    @property
    def ipr(self) -> IPRoute:
        assert self._ipr is not None
        return self._ipr

    @property
    def nl(self) -> nlbatch.RtnlBatch:
        assert self._nl is not None
        return self._nl

    def _ensure_rule(self) -> None:
        """Exactly one ``pref <prio> lookup <table> proto <proto>`` rule; other mipha rules go.
        A standby has none: its table is programmed but not looked up."""
        if self.standby:
            self._delete_rule()
            return
        found = False
        for rule in self.ipr.get_rules(family=socket.AF_INET):
            if rule.get("protocol") != self.proto:
                continue
            if rule.get("table") == self.table and rule.get("priority") == self.rule_priority and not found:
                found = True
                continue
            self.ipr.rule(
                "del", family=socket.AF_INET, table=rule.get("table"), priority=rule.get("priority")
            )
        if not found:
            self.ipr.rule(
                "add",
                family=socket.AF_INET,
                table=self.table,
                priority=self.rule_priority,
                protocol=self.proto,
            )

    def _delete_rule(self) -> None:
        for rule in self.ipr.get_rules(family=socket.AF_INET):
            if rule.get("protocol") == self.proto and rule.get("table") == self.table:
                self.ipr.rule("del", family=socket.AF_INET, table=self.table, priority=rule.get("priority"))

    async def stop(self, *, flush: bool = True) -> None:
        for probe in list(self._probes):
            probe.cancel()
        if self._garp_task is not None:
            self._garp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._garp_task
            self._garp_task = None
        self._garp_pending.clear()
        if self._garp_sock is not None:
            self._garp_sock.close()
            self._garp_sock = None
        await self._stop_backend()
        if self._ns is None:
            return
        try:
            if flush:
                async with self._lock:
                    await self._acall(self._flush_kernel)
        finally:
            if self._nl is not None:
                self._call(self._nl.close)
                self._nl = None
            if self._ipr is not None:
                self._call(self._ipr.close)
                self._ipr = None
            self._ns.close()
            self._ns = None

    def _flush_kernel(self) -> None:
        """Remove every object of ours from the namespace (and nothing else)."""
        self._reconcile_routes({})
        self._reconcile_proxies(set())
        self._reconcile_tunnels({})
        self._delete_rule()
        if self._proxy_arp_before is not None and self.vr.home_interface:
            write_sysctl(("net", "ipv4", "conf", self.vr.home_interface, "proxy_arp"), self._proxy_arp_before)
            self._proxy_arp_before = None
        self._tunnels.clear()
        self._current.clear()
        self._homes.clear()
        self._reverse.clear()
        self._homes_by_coa.clear()
        self._full_refresh = True
        self._proxied.clear()

    # -- intents -----------------------------------------------------------------------------------

    async def apply(self, intents: Iterable[Intent]) -> None:
        async with self._lock:  # one batch at a time: the pending-change tables are shared
            try:
                for intent in intents:
                    handler = self._dispatch.get(type(intent))
                    if handler is None:
                        raise DataPlaneError(f"{self.name} backend cannot handle {type(intent).__name__}")
                    if isinstance(intent, ReleaseTunnel):
                        await self._flush_soon()  # routes leave the device before it goes
                    handler(intent)
            finally:
                await self._flush_soon()
                self._on_homes_changed()
        garps, self._garps = self._garps, []
        for garp in garps:
            self._start_garp(garp)

    async def _flush_soon(self) -> None:
        """Send pending changes: inline when few (a netlink socket works from any thread; this saves
        two thread hops per registration), on the netns thread when many (keeps the loop responsive)."""
        if len(self._route_ops) + len(self._proxy_ops) <= INLINE_FLUSH_MAX:
            self._flush()
        else:
            await self._acall(self._flush)

    def _tunnels_to(self, coa: IPv4Address) -> list[Tunnel]:
        """Every tunnel to ``coa`` (one per encapsulation in use)."""
        return [t for e in Encapsulation if (t := self._tunnels.get((coa, e))) is not None]

    def _ensure_tunnel(self, intent: EnsureTunnel) -> None:
        key = (intent.care_of_address, intent.encapsulation)
        tunnel = self._tunnels.get(key)
        if tunnel is None:
            tunnel = Tunnel(*key)
            if self.TUNNELS_IN_KERNEL:
                self._call(self._create_tunnel, tunnel)
            else:
                self._create_tunnel(tunnel)
            self._tunnels[key] = tunnel
        tunnel.refs += 1
        if self._current.get(tunnel.coa) is not tunnel:
            self._current[tunnel.coa] = tunnel
            self._dirty_coas.add(tunnel.coa)
            self._reroute(tunnel.coa)

    def _release_tunnel(self, intent: ReleaseTunnel) -> None:
        key = (intent.care_of_address, intent.encapsulation)
        tunnel = self._tunnels.get(key)
        if tunnel is None:
            log.warning("release of unknown tunnel to %s (%s) ignored", *key)
            return
        tunnel.refs -= 1
        if tunnel.refs > 0:
            return
        del self._tunnels[key]
        self._dirty_coas.add(tunnel.coa)
        if self._current.get(tunnel.coa) is tunnel:
            other = next(iter(self._tunnels_to(tunnel.coa)), None)
            if other is None:
                del self._current[tunnel.coa]
            else:  # the CoA's routes move to its other tunnel before this one goes
                self._current[tunnel.coa] = other
                self._reroute(tunnel.coa)
                self._call(self._flush)
        if self.TUNNELS_IN_KERNEL:
            self._call(self._delete_tunnel, tunnel)
        else:
            self._delete_tunnel(tunnel)

    def _reroute(self, coa: IPv4Address) -> None:
        """Queue route updates for home addresses whose device depends on ``coa``'s current tunnel."""
        for hoa in self._homes_by_coa.get(coa, ()):
            self._route_ops[hoa] = self._route_oif(self._homes[hoa])
            self._dirty_homes.add(hoa)

    def _index_home(self, hoa: IPv4Address, coas: tuple[IPv4Address, ...]) -> None:
        """Record ``hoa`` -> ``coas`` (empty: forget it) in the tables and the reverse index."""
        for old in self._homes.get(hoa, ()):
            users = self._homes_by_coa.get(old)
            if users is not None:
                users.discard(hoa)
                if not users:
                    del self._homes_by_coa[old]
        if coas:
            self._homes[hoa] = coas
            for coa in coas:
                self._homes_by_coa.setdefault(coa, set()).add(hoa)
        else:
            self._homes.pop(hoa, None)
            self._reverse.pop(hoa, None)
        self._dirty_homes.add(hoa)

    def _set_home_route(self, intent: SetHomeRoute) -> None:
        if not intent.care_of_addresses:
            self._remove_home_route(RemoveHomeRoute(intent.home_address))
            return
        for coa in intent.care_of_addresses:
            if coa not in self._current:
                raise DataPlaneError(f"no tunnel to {coa} for home address {intent.home_address}")
        self._index_home(intent.home_address, intent.care_of_addresses)
        self._reverse[intent.home_address] = intent.reverse_tunnel
        self._route_ops[intent.home_address] = self._route_oif(intent.care_of_addresses)

    def _remove_home_route(self, intent: RemoveHomeRoute) -> None:
        self._index_home(intent.home_address, ())
        self._route_ops[intent.home_address] = None

    def _proxy_arp(self, intent: ProxyArp) -> None:
        if not self.home_ifindex:  # said once, at start (_prepare_namespace): not once per binding
            return
        if intent.enabled:
            self._proxied.add(intent.home_address)
        else:
            self._proxied.discard(intent.home_address)
        if self.proxy_per_entry and not self.standby:
            self._proxy_ops[intent.home_address] = intent.enabled

    def _gratuitous_arp(self, intent: GratuitousArp) -> None:
        if self.standby:
            log.debug("VR %s is a standby: gratuitous ARP for %s skipped", self.vr.name, intent.home_address)
            return
        if not self.home_ifindex:  # said once, at start
            return
        self._garps.append(intent)

    def _flush(self) -> None:
        """Send the accumulated route / proxy changes as netlink batches (see :meth:`_flush_soon`)."""
        route_ops, self._route_ops = self._route_ops, {}
        proxy_ops, self._proxy_ops = self._proxy_ops, {}
        by_oif: dict[int | None, list[IPv4Address]] = {}
        for addr, oif in route_ops.items():
            by_oif.setdefault(oif, []).append(addr)
        failures: dict[IPv4Address, int] = {}
        for oif, addrs in by_oif.items():
            if oif is None:
                tpl = nlbatch.route_template(add=False, table=self.table, proto=self.proto)
                failures |= self.nl.run(tpl, addrs, ignore=nlbatch.IGNORE_MISSING)
            else:
                tpl = nlbatch.route_template(add=True, table=self.table, proto=self.proto, oif=oif)
                failures |= self.nl.run(tpl, addrs)
        adds = [a for a, on in proxy_ops.items() if on]
        dels = [a for a, on in proxy_ops.items() if not on]
        if adds:
            tpl = nlbatch.proxy_template(add=True, ifindex=self.home_ifindex, proto=self.proto)
            failures |= self.nl.run(tpl, adds)
        if dels:
            tpl = nlbatch.proxy_template(add=False, ifindex=self.home_ifindex, proto=self.proto)
            failures |= self.nl.run(tpl, dels, ignore=nlbatch.IGNORE_MISSING)
        if failures:
            raise DataPlaneError(str(nlbatch.NetlinkError("route/proxy programming", failures)))

    def _garp_socket(self) -> socket.socket:
        if self._garp_sock is None:
            sock: socket.socket = self._call(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                sock.bind((self.vr.home_interface, ETH_P_ARP))
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
            self._garp_sock = sock
        return self._garp_sock

    def _start_garp(self, intent: GratuitousArp) -> None:
        """Send the first gratuitous ARP at once; the pacing task sends the rest of the burst."""
        if intent.for_mobile_node and not intent.mn_mac:  # learn the node's MAC first
            probe = asyncio.get_running_loop().create_task(self._came_home(intent))
            self._probes.add(probe)
            probe.add_done_callback(self._probes.discard)
            return
        if intent.for_mobile_node and intent.mn_mac:
            sender = bytes.fromhex(intent.mn_mac.replace(":", "").replace("-", ""))
            op = ARP_REPLY
        else:
            sender, op = self.home_mac, ARP_REQUEST
        frame = garp_frame(sender, intent.home_address, op=op)
        try:
            self._garp_socket().send(frame)
            self.garps_sent += 1
        except OSError as exc:
            log.error("gratuitous ARP for %s failed: %s", intent.home_address, exc)
            return
        if self.on_garp_sent is not None:
            self.on_garp_sent(intent)
        if self.vr.garp_count > 1:
            self._garp_pending.append([frame, self.vr.garp_count - 1])
            if self._garp_task is None or self._garp_task.done():
                self._garp_task = asyncio.get_running_loop().create_task(self._garp_pacer())

    async def _came_home(self, intent: GratuitousArp) -> None:
        """RFC 5944 §4.6: when a node comes home the home agent broadcasts gratuitous ARPs carrying the
        *node's* hardware address.  The node answers for its address on the home link now (the proxy
        entry is gone): ARP requests for it tell the home agent its MAC.  No answer: nothing is sent,
        nothing is counted (the node's own gratuitous ARP, which RFC 5944 §4.6 also asks for, remains)."""
        key = intent.home_address.packed
        loop = asyncio.get_running_loop()
        sock = self._garp_socket()
        waiter: asyncio.Future[bytes] = loop.create_future()
        if not self._arp_waiters:
            loop.add_reader(sock.fileno(), self._on_arp_frames, sock)
        self._arp_waiters[key] = waiter
        try:
            probe = arp_request(self.home_mac, self.vr.ha_address, intent.home_address)
            for _ in range(CAME_HOME_PROBES):
                try:
                    sock.send(probe)
                except OSError as exc:
                    log.error("ARP request for %s failed: %s", intent.home_address, exc)
                try:
                    mac = await asyncio.wait_for(asyncio.shield(waiter), CAME_HOME_PROBE_INTERVAL)
                except TimeoutError:
                    continue
                self._start_garp(GratuitousArp(intent.home_address, True, mac.hex(":")))
                return
            log.warning(
                "VR %s: %s did not answer ARP on the home link: no came-home gratuitous ARP sent",
                self.vr.name,
                intent.home_address,
            )
        finally:
            if self._arp_waiters.get(key) is waiter:
                del self._arp_waiters[key]
            if not self._arp_waiters and self._garp_sock is sock:
                loop.remove_reader(sock.fileno())

    def _on_arp_frames(self, sock: socket.socket) -> None:
        """ARP replies on the home link: the MAC of a home address a came-home probe waits for."""
        for _ in range(64):
            try:
                frame = sock.recv(128)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(frame) < 42 or frame[12:14] != b"\x08\x06" or frame[20:22] != b"\x00\x02":
                continue  # not an ARP reply
            waiter = self._arp_waiters.get(frame[28:32])
            if waiter is not None and not waiter.done() and frame[22:28] != self.home_mac:
                waiter.set_result(frame[22:28])

    async def _garp_pacer(self) -> None:
        """Every ``garp_interval``: one more frame of every pending burst, until all are complete."""
        while self._garp_pending:
            await asyncio.sleep(self.vr.garp_interval)
            batch, self._garp_pending = self._garp_pending, []
            sock = self._garp_sock
            for item in batch:
                if sock is None:
                    break
                try:
                    sock.send(item[0])
                    self.garps_sent += 1
                except OSError as exc:
                    log.error("gratuitous ARP failed: %s", exc)
                    continue
                item[1] -= 1
                if item[1] > 0:
                    self._garp_pending.append(item)

    async def wait_garps(self) -> None:
        """Wait for pending gratuitous ARP bursts (tests, orderly shutdown), came-home probes first."""
        while self._probes:
            await asyncio.gather(*list(self._probes), return_exceptions=True)
        while self._garp_task is not None and not self._garp_task.done():
            await asyncio.gather(self._garp_task, return_exceptions=True)

    # -- hot standby -------------------------------------------------------------------------------

    async def set_standby(self, standby: bool) -> None:
        async with self._lock:
            self.standby = standby
            await self._acall(self._apply_role)

    def _apply_role(self) -> None:
        """The policy rule, then proxy ARP for every home address held (none on a standby)."""
        self._ensure_rule()
        home = self.vr.home_interface
        if self.proxy_per_entry:
            self._reconcile_proxies(set() if self.standby else self._proxied)
        elif home:
            write_sysctl(("net", "ipv4", "conf", home, "proxy_arp"), 0 if self.standby else 1)

    # -- reconciliation ----------------------------------------------------------------------------

    async def resync(self, desired: Iterable[DesiredBinding]) -> None:
        wanted = list(desired)
        async with self._lock:
            await self._acall(self._resync, wanted)
            self._on_homes_changed()

    def _resync(self, wanted: list[DesiredBinding]) -> None:
        """Dump what carries our marks, diff with ``wanted``, batch the difference (netns thread)."""
        self._ensure_rule()
        refs: dict[TunnelKey, Tunnel] = {}
        for binding in wanted:
            for coa in binding.care_of_addresses:
                tunnel = refs.setdefault((coa, binding.encapsulation), Tunnel(coa, binding.encapsulation))
                tunnel.refs += 1
        self._reconcile_tunnels(refs)
        self._tunnels = refs
        self._current = {t.coa: t for t in refs.values()}
        self._homes = {b.home_address: b.care_of_addresses for b in wanted if b.care_of_addresses}
        self._reverse = {b.home_address: b.reverse_tunnel for b in wanted}
        self._homes_by_coa = {}
        for hoa, coas in self._homes.items():
            for coa in coas:
                self._homes_by_coa.setdefault(coa, set()).add(hoa)
        self._full_refresh = True
        self._reconcile_routes({hoa: self._route_oif(coas) for hoa, coas in self._homes.items()})
        self._proxied = set(self._homes) if self.home_ifindex else set()
        self._reconcile_proxies(self._proxied if self.proxy_per_entry and not self.standby else set())

    def _reconcile_routes(self, wanted: dict[IPv4Address, int]) -> None:
        current = {r.dst: r.oif for r in self.nl.dump_routes(self.table, self.proto)}
        stale = [dst for dst in current if dst not in wanted]
        if stale:
            tpl = nlbatch.route_template(add=False, table=self.table, proto=self.proto)
            self.nl.run(tpl, stale, ignore=nlbatch.IGNORE_MISSING)
        by_oif: dict[int, list[IPv4Address]] = {}
        for dst, oif in wanted.items():
            if current.get(dst) != oif:
                by_oif.setdefault(oif, []).append(dst)
        failures: dict[IPv4Address, int] = {}
        for oif, addrs in by_oif.items():
            tpl = nlbatch.route_template(add=True, table=self.table, proto=self.proto, oif=oif)
            failures |= self.nl.run(tpl, addrs)
        if failures:
            raise DataPlaneError(str(nlbatch.NetlinkError("route resync", failures)))

    def _reconcile_proxies(self, wanted: set[IPv4Address]) -> None:
        ours = [p for p in self.nl.dump_proxies() if p.proto == self.proto]
        by_if: dict[int, list[IPv4Address]] = {}
        have: set[IPv4Address] = set()
        for entry in ours:
            if entry.ifindex == self.home_ifindex and entry.dst in wanted:
                have.add(entry.dst)
            else:
                by_if.setdefault(entry.ifindex, []).append(entry.dst)
        for ifindex, addrs in by_if.items():
            tpl = nlbatch.proxy_template(add=False, ifindex=ifindex, proto=self.proto)
            self.nl.run(tpl, addrs, ignore=nlbatch.IGNORE_MISSING)
        missing = [a for a in wanted if a not in have]
        if missing:
            tpl = nlbatch.proxy_template(add=True, ifindex=self.home_ifindex, proto=self.proto)
            failures = self.nl.run(tpl, missing)
            if failures:
                raise DataPlaneError(str(nlbatch.NetlinkError("proxy-ARP resync", failures)))

    # -- backend hooks -----------------------------------------------------------------------------

    async def _start_backend(self) -> None:
        """Open devices/sockets and adopt kernel state left by a previous run."""

    async def _stop_backend(self) -> None:
        """Close what :meth:`_start_backend` opened."""

    def _create_tunnel(self, tunnel: Tunnel) -> None:
        """Make the kernel (or userspace) tunnel for ``tunnel.coa`` (netns thread)."""
        raise NotImplementedError

    def _delete_tunnel(self, tunnel: Tunnel) -> None:
        raise NotImplementedError

    def _reconcile_tunnels(self, wanted: dict[TunnelKey, Tunnel]) -> None:
        """Make the set of tunnels exactly ``wanted`` (fills in their ifindex/ifname)."""
        raise NotImplementedError

    def _route_oif(self, coas: tuple[IPv4Address, ...]) -> int:
        """The device a home address bound to ``coas`` is routed into."""
        raise NotImplementedError

    def _on_homes_changed(self) -> None:
        """Bindings changed: let the backend refresh its fast path, then forget what changed."""
        self._refresh(self._full_refresh, self._dirty_homes, self._dirty_coas)
        self._full_refresh = False
        self._dirty_homes = set()
        self._dirty_coas = set()

    def _refresh(self, full: bool, homes: set[IPv4Address], coas: set[IPv4Address]) -> None:
        """Refresh fast-path tables: everything (``full``) or only these home / care-of addresses."""

    def tunnels(self) -> list[TunnelCounters]:
        """One entry per care-of address (the YANG list key); counters come from :meth:`_counters`."""
        out = []
        for coa in sorted(self._current):
            refs = sum(t.refs for t in self._tunnels_to(coa))
            out.append(TunnelCounters(coa, self._current[coa].ifname, refs, *self._counters(coa)))
        return out

    def _counters(self, coa: IPv4Address) -> tuple[int, int, int, int]:
        """(in packets, in octets, out packets, out octets) of the tunnels to ``coa``."""
        return (0, 0, 0, 0)
