"""The ``ipip`` backend: the kernel forwards, mipha only programs it (pyroute2); standard kernels only.

Per care-of address one ``ipip`` device ``mip-<CoA hex>`` (or ``gre`` device ``mig-<CoA hex>`` for the
G bit) with local = HA address, remote = CoA, TTL 64, TOS inherited (RFC 2003 §3.1 copy), path MTU
discovery on (DF copied, ICMP fragmentation-needed by the kernel).  Home addresses get /32 routes into
that device in mipha's table (batched, :mod:`ha.dataplane.nlbatch`).

Reverse tunnelling (RFC 3024) is enforced by the kernel with **strict** ``rp_filter`` on each tunnel
device: a decapsulated packet is accepted only if the route back to its inner source leaves through the
same device, i.e. only when the outer source is the CoA registered for that home address.  (Strict, not
loose, on purpose: loose would accept any inner source with any route.)  If ``net.ipv4.conf.all.rp_filter``
is 2 the kernel uses the maximum and the check becomes loose; :meth:`IpipPlane.start` logs that.

Limits, declared in :attr:`IpipPlane.capabilities` so the engine never accepts what this backend cannot
do: a kernel route cannot copy packets, so simultaneous bindings (S) are answered with code 1 (one
care-of address at a time; the tun backend duplicates); minimal encapsulation is not available in Linux;
RFC 3519 UDP tunnels go through a TUN of their own in userspace (``mip-udp``, no ``fou`` needed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
from collections import Counter
from ipaddress import IPv4Address

from pyroute2.netlink.exceptions import NetlinkError

from ha.netns import read_sysctl, write_sysctl

from .base import Capabilities, DataPlaneError, TunnelCounters, VirtualRouterPlane
from .icmp import path_mtu
from .intents import Encapsulation
from .kernel import KernelPlane, Tunnel, TunnelKey
from .ownership import GRE_PREFIX, IPIP_PREFIX, coa_from_ifname, tunnel_ifname
from .udp_tunnel import UDP_TUN_IFNAME, UdpTunDevice, UdpTunnelRoutes

log = logging.getLogger(__name__)

_KIND = {Encapsulation.IP_IN_IP: ("ipip", IPIP_PREFIX), Encapsulation.GRE: ("gre", GRE_PREFIX)}


class IpipPlane(UdpTunnelRoutes, KernelPlane):
    """Kernel IP-in-IP / GRE tunnels programmed through pyroute2."""

    name = "ipip"
    capabilities = Capabilities(simultaneous_bindings=False)
    _stats: dict[int, dict[str, int]] = {}

    def __init__(self, vr: VirtualRouterPlane, **kw: int) -> None:
        super().__init__(vr, **kw)
        self.udp_counts: Counter[str] = Counter()
        self.udp_tun = UdpTunDevice(vr.ha_address, self.udp_counts, path_mtu=self._udp_path_mtu)
        self.udp = self.udp_tun.udp

    async def _start_backend(self) -> None:
        if await self._acall(read_sysctl, ("net", "ipv4", "conf", "all", "rp_filter")) == "2":
            log.warning("VR %s: conf.all.rp_filter=2 makes the reverse-tunnel check loose", self.vr.name)
        await self._acall(self._adopt)
        try:
            await self._acall(self.udp_tun.open, self.ipr)
        except (OSError, DataPlaneError) as exc:  # no /dev/net/tun: no UDP tunnels (142), the rest works
            log.warning("VR %s: no RFC 3519 UDP tunnels (%s)", self.vr.name, exc)
            self.capabilities = dataclasses.replace(self.capabilities, udp_tunnels=False)
            return
        self.udp_tun.start(asyncio.get_running_loop())

    def _udp_path_mtu(self, nat: IPv4Address) -> int:
        """The kernel's path MTU towards a UDP tunnel's NAT, asked in the VR's namespace."""
        return int(self._call(path_mtu, nat, self.udp_tun.mtu))

    async def _stop_backend(self) -> None:
        self.udp_tun.close(asyncio.get_running_loop())

    def _adopt(self) -> None:
        """Learn tunnels left by a previous run (refcount 0), so ``apply`` after a restart reuses them.

        The engine is expected to call :meth:`resync` right after a restart, which sets real counts.
        """
        for key, (ifindex, ifname) in self._existing().items():
            tunnel = self._tunnels.setdefault(key, Tunnel(*key, 0, ifindex, ifname))
            self._current.setdefault(tunnel.coa, tunnel)
            self._dirty_coas.add(tunnel.coa)

    def _existing(self) -> dict[TunnelKey, tuple[int, str]]:
        """mipha tunnel devices in the namespace: (CoA, encapsulation) -> (ifindex, ifname)."""
        found: dict[TunnelKey, tuple[int, str]] = {}
        for link in self.ipr.get_links():
            ifname = link.get("IFLA_IFNAME") or ""
            coa = coa_from_ifname(ifname)
            if coa is None:
                continue
            info = link.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            for encap, (want_kind, prefix) in _KIND.items():
                if kind == want_kind and ifname.startswith(prefix):
                    found[(coa, encap)] = (link["index"], ifname)
        return found

    def _create_tunnel(self, tunnel: Tunnel) -> None:
        if tunnel.encapsulation == Encapsulation.IP_IN_UDP:  # userspace: routed into mip-udp
            tunnel.ifindex, tunnel.ifname = self.udp_tun.ifindex, UDP_TUN_IFNAME
            return
        if tunnel.encapsulation not in _KIND:
            raise DataPlaneError(f"the ipip backend does not support {tunnel.encapsulation} encapsulation")
        kind, prefix = _KIND[tunnel.encapsulation]
        ifname = tunnel_ifname(tunnel.coa, prefix)
        ha, coa = str(self.vr.ha_address), str(tunnel.coa)
        spec = {f"{kind}_local": ha, f"{kind}_remote": coa, f"{kind}_ttl": 64}
        if kind == "ipip":
            spec["ipip_tos"] = 1  # inherit
            spec["ipip_pmtudisc"] = 1
        try:
            self.ipr.link("add", ifname=ifname, kind=kind, **spec)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise DataPlaneError(f"cannot create {kind} tunnel {ifname} to {coa}: {exc}") from exc
        idx = self.ipr.link_lookup(ifname=ifname)
        if not idx:
            raise DataPlaneError(f"tunnel device {ifname} vanished")
        write_sysctl(("net", "ipv4", "conf", ifname, "rp_filter"), 1)
        self.ipr.link("set", index=idx[0], state="up")
        tunnel.ifindex, tunnel.ifname = idx[0], ifname

    def _delete_tunnel(self, tunnel: Tunnel) -> None:
        if not tunnel.ifindex or tunnel.encapsulation == Encapsulation.IP_IN_UDP:
            return
        try:
            self.ipr.link("del", index=tunnel.ifindex)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise DataPlaneError(f"cannot delete tunnel {tunnel.ifname}: {exc}") from exc

    def _reconcile_tunnels(self, wanted: dict[TunnelKey, Tunnel]) -> None:
        existing = self._existing()
        for key, (ifindex, ifname) in list(existing.items()):
            if key not in wanted:
                self._delete_tunnel(Tunnel(*key, 0, ifindex, ifname))
                del existing[key]
        for key, tunnel in wanted.items():
            have = existing.get(key)
            if have is None:
                self._create_tunnel(tunnel)
            else:
                tunnel.ifindex, tunnel.ifname = have

    def _route_oif(self, coas: tuple[IPv4Address, ...]) -> int:
        return self._current[coas[0]].ifindex

    def tunnels(self) -> list[TunnelCounters]:
        self._stats = self._call(self._link_stats) if self._ns is not None else {}
        return super().tunnels()

    def _refresh(self, full: bool, homes: set[IPv4Address], coas: set[IPv4Address]) -> None:
        """Keep the UDP tunnels' per-home paths in step (the kernel devices need nothing here)."""
        udp = self.udp
        if full:
            homes = set(self._homes)
            udp.keep_only({h.packed for h in homes})
        for coa in coas:
            homes |= self._homes_by_coa.get(coa, set())
        for hoa in homes:
            bound = self._homes.get(hoa)
            tunnel = self._current.get(bound[0]) if bound else None
            if bound and tunnel is not None and tunnel.encapsulation == Encapsulation.IP_IN_UDP:
                udp.path(hoa.packed, (str(bound[0]), udp.ports.get(hoa, 0)), self.udp_tun.mtu)
            else:
                udp.forget(hoa.packed)

    def _counters(self, coa: IPv4Address) -> tuple[int, int, int, int]:
        totals = list(self.udp.counters(coa))
        for t in self._tunnels_to(coa):
            s = self._stats.get(t.ifindex, {})
            for i, name in enumerate(("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")):
                totals[i] += s.get(name, 0)
        return totals[0], totals[1], totals[2], totals[3]

    def _link_stats(self) -> dict[int, dict[str, int]]:
        return {
            link["index"]: dict(link.get("IFLA_STATS64") or {})
            for link in self.ipr.get_links()
            if coa_from_ifname(link.get("IFLA_IFNAME") or "") is not None
        }


def kernel_has_ipip() -> bool:
    """Probe: can an ``ipip`` device be created?  Run it in a scratch namespace (``run_in_netns``)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        try:
            ipr.link("add", ifname="mip-probe", kind="ipip", ipip_local="127.0.0.1", ipip_remote="127.0.0.2")
        except NetlinkError:
            return False
        ipr.link("del", ifname="mip-probe")
        return True
