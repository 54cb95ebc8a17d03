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

Limits: with simultaneous bindings (S bit) the kernel route goes to the *first* care-of address of the
``SetHomeRoute`` (one route cannot copy packets); the tun backend duplicates.  Minimal encapsulation is
not available in Linux (refused with :class:`DataPlaneError`).
"""

from __future__ import annotations

import errno
import logging
from ipaddress import IPv4Address

from pyroute2.netlink.exceptions import NetlinkError

from ha.netns import read_sysctl, write_sysctl

from .base import DataPlaneError, TunnelCounters
from .intents import Encapsulation
from .kernel import KernelPlane, Tunnel
from .ownership import GRE_PREFIX, IPIP_PREFIX, coa_from_ifname, tunnel_ifname

log = logging.getLogger(__name__)

_KIND = {Encapsulation.IP_IN_IP: ("ipip", IPIP_PREFIX), Encapsulation.GRE: ("gre", GRE_PREFIX)}


class IpipPlane(KernelPlane):
    """Kernel IP-in-IP / GRE tunnels programmed through pyroute2."""

    name = "ipip"

    async def _start_backend(self) -> None:
        if await self._acall(read_sysctl, ("net", "ipv4", "conf", "all", "rp_filter")) == "2":
            log.warning("VR %s: conf.all.rp_filter=2 makes the reverse-tunnel check loose", self.vr.name)
        await self._acall(self._adopt)

    def _adopt(self) -> None:
        """Learn tunnels left by a previous run, so ``apply`` after a restart reuses them."""
        for coa, (ifindex, ifname, kind) in self._existing().items():
            encap = Encapsulation.GRE if kind == "gre" else Encapsulation.IP_IN_IP
            self._tunnels.setdefault(coa, Tunnel(coa, encap, 0, ifindex, ifname))

    def _existing(self) -> dict[IPv4Address, tuple[int, str, str]]:
        """mipha tunnel devices in the namespace: CoA -> (ifindex, ifname, kind)."""
        found: dict[IPv4Address, tuple[int, str, str]] = {}
        for link in self.ipr.get_links():
            ifname = link.get("IFLA_IFNAME")
            coa = coa_from_ifname(ifname or "")
            if coa is None:
                continue
            info = link.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            if kind in ("ipip", "gre"):
                found[coa] = (link["index"], ifname, kind)
        return found

    def _create_tunnel(self, tunnel: Tunnel) -> None:
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
        if not tunnel.ifindex:
            return
        try:
            self.ipr.link("del", index=tunnel.ifindex)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise DataPlaneError(f"cannot delete tunnel {tunnel.ifname}: {exc}") from exc

    def _reconcile_tunnels(self, wanted: dict[IPv4Address, Tunnel]) -> None:
        existing = self._existing()
        for coa, (ifindex, ifname, kind) in list(existing.items()):
            want = wanted.get(coa)
            if want is None or _KIND.get(want.encapsulation, ("",))[0] != kind:
                self._delete_tunnel(Tunnel(coa, Encapsulation.IP_IN_IP, 0, ifindex, ifname))
                existing.pop(coa)
        for tunnel in wanted.values():
            have = existing.get(tunnel.coa)
            if have is None:
                self._create_tunnel(tunnel)
            else:
                tunnel.ifindex, tunnel.ifname = have[0], have[1]
        self._tunnels = dict(wanted)

    def _route_oif(self, coas: tuple[IPv4Address, ...]) -> int:
        return self._tunnels[coas[0]].ifindex

    def tunnels(self) -> list[TunnelCounters]:
        stats = self._call(self._link_stats) if self._ns is not None else {}
        out = []
        for t in sorted(self._tunnels.values(), key=lambda t: t.coa):
            s = stats.get(t.ifindex, {})
            out.append(
                TunnelCounters(
                    t.coa,
                    t.ifname,
                    t.refs,
                    s.get("rx_packets", 0),
                    s.get("rx_bytes", 0),
                    s.get("tx_packets", 0),
                    s.get("tx_bytes", 0),
                )
            )
        return out

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
