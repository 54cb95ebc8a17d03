"""The daemon side of hot standby: gates, replication hooks, takeover and the home agent address.

:mod:`mipha.redundancy` decides who is active (etcd); this module makes the daemon follow:

- every virtual router's transport answers only while this node is active and inside its lease
  (``gate``), and every burst's replies wait until its binding changes are in etcd (``replicate``);
- taking over (``on_active``): one catch-up read of the group's bindings (complete, since no older
  leader can write any more), installed in each virtual router's engine and data plane, then the home
  agent address is put on the home interface and announced with gratuitous ARP;
- standing by (``on_standby``): the address is taken off the home interface at once; when the
  leadership is lost (not merely suspended) the engine's bindings and their kernel state go too.

The home agent address stays on ``lo`` of both members (sockets bind to it, tunnels leave from it);
``arp_ignore=1`` on the home interface makes only the member that has it *there* answer ARP for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from lxml import etree

from ha.dataplane.intents import GratuitousArp
from ha.engine.home_agent import HomeAgent
from ha.netns import NetnsThread

from .journal import BindingRecord
from .redundancy import Member, Mirror, RedundancyConfig
from .runtime import VirtualRouter

log = logging.getLogger(__name__)
NS = "urn:mipha:yang:mipha-home-agent"
WARM_INTERVAL = 0.25  # seconds between checks of the standby's data plane against the mirror
_Q = f"{{{NS}}}"


class HotStandby:
    """One daemon's membership in its redundancy group (see the module docstring)."""

    def __init__(self, config: RedundancyConfig, routers: Callable[[], Iterable[VirtualRouter]]) -> None:
        self.config = config
        self.routers = routers
        self.member = Member(
            config, on_active=self._on_active, on_standby=self._on_standby, describe=self._describe
        )
        self.mirror = Mirror(self.member)
        self.adopted = 0  # fencing token whose bindings the engines hold (0: none)
        self.takeover_seconds: float | None = None
        #: set by the daemon: running configuration (top-level elements) and its generation number
        self.running: Callable[[], tuple[Iterable[etree._Element], int]] | None = None
        self._generation: int | None = None
        self._config_task: asyncio.Task | None = None
        self._warm_task: asyncio.Task | None = None
        self._warm_lock = asyncio.Lock()  # programming from the mirror vs taking over
        self.warmed = -1  # mirror generation the standby's data planes hold

    # -- wiring ---------------------------------------------------------------------------------------

    def attach(self, vr: VirtualRouter) -> None:
        """Called for every virtual router before it starts."""
        vr.gate = self._answering
        vr.replicate = self.member.replicator.submit
        vr.standby_plane = not self.member.token

    def _answering(self) -> bool:
        # (not before the takeover installed the group's bindings: the token is set before that)
        return self.member.active and self.adopted == self.member.token

    def _describe(self) -> dict:
        return {"started": time.time()}

    async def start(self) -> None:
        for vr in list(self.routers()):
            await self._own_address(vr, False)
        self._digest()
        await self.member.start()
        self.mirror.start()
        loop = asyncio.get_running_loop()
        self._config_task = loop.create_task(self._follow_config())
        if self.config.warm_kernel:
            self._warm_task = loop.create_task(self._keep_warm())

    async def stop(self) -> None:
        for task in (self._config_task, self._warm_task):
            if task is not None:
                task.cancel()
        await self.mirror.stop()
        await self.member.stop(resign=True)
        for vr in list(self.routers()):
            await self._own_address(vr, False)

    # -- configuration agreement ----------------------------------------------------------------------

    def _digest(self) -> bool:
        """Recompute the configuration digest when running changed; True when it did."""
        if self.running is None:
            return False
        roots, generation = self.running()
        if generation == self._generation:
            return False
        self._generation = generation
        self.member.config_digest = config_digest(roots)
        return True

    async def _follow_config(self) -> None:
        """After a commit, the active member publishes the new digest; a standby compares its own."""
        while True:
            await asyncio.sleep(1.0)
            try:
                if self._digest() and self.member.token:
                    await self.member.publish_config()
            except Exception as exc:  # etcd unreachable or fenced: the campaign loop deals with it
                log.debug("redundancy: configuration digest not published: %r", exc)

    # -- the standby's data plane ----------------------------------------------------------------------

    def _records_by_vr(self) -> dict[str, list[BindingRecord]]:
        by_vr: dict[str, list[BindingRecord]] = defaultdict(list)
        for record in self.mirror.records.values():
            by_vr[record.vr].append(record)
        return by_vr

    async def _keep_warm(self) -> None:
        """A standby programs what it can without owning the home agent address: tunnels and the
        routes in mipha's table, from the group's bindings, whenever they moved (not on renewals).
        Its data plane has no policy rule into that table and no proxy ARP (``set_standby``), so
        nothing of it acts on its forwarding or on the shared home link until it takes over."""
        while True:
            await asyncio.sleep(WARM_INTERVAL)
            if self.member.token or self.mirror.generation == self.warmed:
                continue
            async with self._warm_lock:
                if self.member.token:
                    continue
                generation = self.mirror.generation
                by_vr = self._records_by_vr()
                try:
                    for vr in list(self.routers()):
                        if vr.plane is not None and vr.engine is not None and vr.engine.binding_count == 0:
                            await vr.plane.resync(HomeAgent.desired_of(by_vr.get(vr.name, [])))
                except Exception:  # retried at the next change; the takeover reconciles anyway
                    log.exception("redundancy: the standby's data plane could not follow the bindings")
                    continue
                self.warmed = generation

    # -- role changes ---------------------------------------------------------------------------------

    async def _on_active(self, token: int) -> None:
        clock = time.monotonic
        started = clock()
        phases: list[float] = [started]
        adopted = token != self.adopted
        if adopted:
            async with self._warm_lock:
                await self.mirror.stop()  # the active one is the writer: following its own writes is waste
                await self.mirror.load()
                phases.append(clock())
                by_vr = self._records_by_vr()
                for vr in list(self.routers()):
                    await vr.release_bindings()
                    # the engine, and the data plane's difference from what the standby programmed
                    await vr.adopt(by_vr.get(vr.name, []), self.mirror.replay_of(vr.name))
                self.member.replicator.replay_keys = set(self.mirror.replay)
                self.adopted = token
                self.warmed = -1
                phases.append(clock())
        for vr in list(self.routers()):
            if vr.plane is not None:
                await vr.plane.set_standby(False)  # the policy rule, proxy ARP for every home address
        phases.append(clock())
        for vr in list(self.routers()):
            await self._own_address(vr, True)
            ha = vr.config.home_agent
            if adopted and vr.engine and vr.plane and ha is not None and ha.home_interface is not None:
                # Correspondents' ARP caches still point at the old active (RFC 5944 §4.6 on takeover).
                homes = {b.home_address for b in vr.engine.desired_bindings()}
                await vr.plane.apply([GratuitousArp(h, False) for h in sorted(homes)])
        phases.append(clock())
        self.takeover_seconds = phases[-1] - started
        steps = "/".join(f"{b - a:.3f}" for a, b in itertools.pairwise(phases))
        log.info(
            "redundancy: active with %d replicated bindings (takeover %.3f s; %s: %s s)",
            len(self.mirror.records),
            self.takeover_seconds,
            "read/install/rule+proxy ARP/address+gratuitous ARP" if adopted else "rule+proxy ARP/address",
            steps,
        )

    async def _on_standby(self, reason: str) -> None:
        for vr in list(self.routers()):
            await self._own_address(vr, False)
        if not reason.startswith("suspended"):
            for vr in list(self.routers()):
                if vr.plane is not None:
                    await vr.plane.set_standby(True)
                await vr.release_bindings()
            self.adopted = 0
            self.mirror.start()

    async def _own_address(self, vr: VirtualRouter, own: bool) -> None:
        """Put the home agent address on the home interface (and announce it) or take it off."""
        ha = vr.config.home_agent
        if ha is None or ha.home_interface is None:
            return
        address, interface = str(ha.address), ha.home_interface
        # With the home link's prefix length, as on a single box: a /32 there would make the home
        # link prefix (subnet-directed discovery, computed at a virtual router's start) the address.
        length = vr.home_prefix.prefixlen if vr.home_prefix is not None else 32

        def change() -> None:
            from pyroute2 import IPRoute

            with open(f"/proc/sys/net/ipv4/conf/{interface}/arp_ignore", "w") as f:
                f.write("1")
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=interface)
                if not index:
                    return
                present = {
                    a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET, index=index[0])
                }
                if own and address not in present:
                    ipr.addr("add", index=index[0], address=address, prefixlen=length)
                elif not own and address in present:
                    for a in ipr.get_addr(family=socket.AF_INET, index=index[0], address=address):
                        ipr.addr("del", index=index[0], address=address, prefixlen=a["prefixlen"])

        try:
            with NetnsThread(vr.netns) as ns:
                await asyncio.get_running_loop().run_in_executor(None, ns.call, change)
            if own and vr.plane is not None:
                await vr.plane.apply([GratuitousArp(ha.address, False)])
        except Exception:
            log.exception("redundancy: cannot %s %s on %s", "add" if own else "remove", address, interface)

    # -- operational state ----------------------------------------------------------------------------

    def state(self) -> etree._Element:
        """The ``redundancy`` container of op state."""
        status = self.member.status
        top = etree.Element(_Q + "redundancy", nsmap={None: NS})
        for name, value in (
            ("node", self.config.node),
            ("group", self.config.group),
            ("role", status.role),
            ("leader", status.leader),
        ):
            if value is not None:
                etree.SubElement(top, _Q + name).text = value
        for peer in status.peers:
            etree.SubElement(top, _Q + "peer").text = peer
        if status.last_failover is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(status.last_failover))
            etree.SubElement(top, _Q + "last-failover").text = stamp + "Z"
        lag = self.member.replicator.queued if self.member.token else self.mirror.lag
        etree.SubElement(top, _Q + "replication-lag").text = str(lag)
        if self.member.token:  # the active one holds what it replicated in its engines
            held = sum(vr.engine.binding_count for vr in self.routers() if vr.engine is not None)
        else:
            held = len(self.mirror.records)
        etree.SubElement(top, _Q + "bindings-replicated").text = str(held)
        if status.config_agrees is not None:
            etree.SubElement(top, _Q + "configuration-agrees").text = str(status.config_agrees).lower()
        if status.reason:
            etree.SubElement(top, _Q + "reason").text = status.reason
        return top


def config_digest(roots: Iterable[etree._Element]) -> str:
    """SHA-256 over the ``virtual-routers`` configuration in a canonical form (children sorted, so
    the order entries were created in does not matter), without ``netns``: each member names its
    own namespaces."""
    digest = hashlib.sha256()
    for root in roots:
        if root.tag == _Q + "virtual-routers":
            digest.update(_canonical(root))
    return digest.hexdigest()


def _canonical(el: etree._Element) -> bytes:
    children = sorted(_canonical(c) for c in el if isinstance(c.tag, str) and c.tag != _Q + "netns")
    text = (el.text or "").strip() if not len(el) else ""
    return b"<%s>%s%s</>" % (el.tag.encode(), text.encode(), b"".join(children))


class RedundancyStateProvider:
    """The server's operational provider for ``mipha:redundancy``."""

    roots = frozenset({(NS, "redundancy")})

    def __init__(self, standby: HotStandby) -> None:
        self.standby = standby

    def get_state(self, request) -> list[etree._Element]:
        return [self.standby.state()]
