"""The ``tun`` backend: RFC 2003 IP-in-IP (and basic GRE) in userspace; works on any kernel.

Kernel side: one TUN device per VR (``mip-tun``), every bound home address has a /32 route into it in
mipha's table, the home link proxies ARP for it.  Userspace side, on the asyncio loop:

- **forward**: packets read from the TUN (in bursts, until ``EAGAIN``) are looked up by destination.
  The inner TTL decrement of RFC 2003 §3.1 is the kernel's forwarding step into the TUN (which also
  sends ICMP time exceeded on expiry, from the HA); the reader never decrements a second time and
  refuses to encapsulate TTL 0.  DF packets longer than the tunnel MTU - 20 get ICMP
  fragmentation-needed with MTU - 20; the tunnel MTU starts at ``tunnel_mtu`` and drops to the
  kernel's path MTU towards the CoA as soon as a send fails with ``EMSGSIZE``.  Packets whose source
  is the care-of address or an HA address are dropped (loop).  A copy goes to every care-of address
  of the binding through a raw ``IPPROTO_IPIP`` (or ``IPPROTO_GRE``) socket bound to the HA address:
  the kernel builds the outer header; TOS is copied (``IP_TOS`` control message) and DF is copied
  (one socket with ``IP_PMTUDISC_DO``, one with ``IP_PMTUDISC_DONT``).
- **reverse** (RFC 3024): proto-4 / proto-47 packets to the HA address are decapsulated only when the
  outer source is a care-of address registered for the inner source and reverse tunnelling is allowed
  for that binding; the inner packet is written to the TUN (``rp_filter`` loose there).  Anything else is
  dropped and counted (:attr:`TunPlane.stats`).

ICMP errors from inside the tunnel about our outer packets are relayed to the original sender as RFC
2003 §4 says (:meth:`TunPlane._relay_icmp`).

- **RFC 3519 UDP tunnels** (``Encapsulation.IP_IN_UDP``, for mobile nodes behind a NAT): the same
  forward lookup; the packet goes out of the virtual router's UDP 434 socket (given with
  :meth:`TunPlane.attach_udp_socket`) to the binding's NAT mapping, behind the 4-byte tunnel data
  header (type 4, next header 4).  Type-4 datagrams the registration socket receives come to
  :meth:`TunPlane.udp_input`: the inner packet is accepted only from the NAT mapping registered for
  its source (the home address), and a keepalive (an ICMP echo request to the home agent inside the
  tunnel, the RFC 3519 keepalive) is answered through the tunnel by this reader.  The outer UDP packet
  carries the inner DF; inner DF packets longer than the tunnel MTU - 32 get fragmentation-needed, and
  the tunnel MTU follows the kernel's path MTU when a DF send is refused (``udp_tunnel.UdpTunnels``).

Not supported here: minimal encapsulation (RFC 2004) and GRE with checksum/key/sequence bits (such
packets are dropped and counted).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import struct
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Literal

from ha.netns import write_sysctl

from .base import DataPlaneError, VirtualRouterPlane
from .icmp import (
    FRAGMENTATION_NEEDED,
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DO,
    IP_PMTUDISC_DONT,
    IcmpErrors,
    IcmpListener,
    drop_all_filter,
    open_icmp_sender,
    path_mtu,
    relayed_error,
)
from .intents import Encapsulation
from .kernel import KernelPlane, Tunnel, TunnelKey
from .ownership import TUN_IFNAME
from .udp_tunnel import UDP_OVERHEAD, UdpPath, UdpTunnelRoutes, UdpTunnels

log = logging.getLogger(__name__)

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_GRE = 47
GRE_IPV4 = b"\x00\x00\x08\x00"
BURST = 256


@dataclass(slots=True)
class _Path:
    """Fast-path view of one tunnel: what the reader needs per packet, plus its counters."""

    coa: IPv4Address
    dest: tuple[str, int]
    packed: bytes
    gre: bool
    mtu: int
    tx: socket.socket | None = None  # IP-in-IP send sockets, DF clear / DF set
    udp: Literal[False] = False  # UdpPath is the RFC 3519 UDP tunnel (``if path.udp`` tells them apart)
    tx_df: socket.socket | None = None
    in_packets: int = 0
    in_octets: int = 0
    out_packets: int = 0
    out_octets: int = 0


@dataclass(slots=True)
class TunStats:
    """Drops and ICMP errors of the userspace path (not per tunnel)."""

    counts: Counter[str] = field(default_factory=Counter)


#: ICMP errors the reader relays (RFC 2003 §4): those quoting our IP-in-IP, GRE or UDP (RFC 3519) packets.
_TUNNEL_PROTOCOLS = (socket.IPPROTO_IPIP, IPPROTO_GRE, socket.IPPROTO_UDP)


class TunPlane(UdpTunnelRoutes, KernelPlane):
    """Userspace IP-in-IP home agent data plane for one virtual router."""

    name = "tun"
    TUNNELS_IN_KERNEL = False  # tunnels are fast-path entries only

    def __init__(
        self,
        vr: VirtualRouterPlane,
        *,
        tunnel_mtu: int = 1500,
        burst: int = BURST,
        txqlen: int = 4096,
        **kw: int,
    ) -> None:
        super().__init__(vr, **kw)
        self.tunnel_mtu = tunnel_mtu
        self.burst = burst
        self.txqlen = txqlen
        self.stats = TunStats()
        self._fd = -1
        self.tun_ifindex = 0
        self._tx: dict[tuple[bool, bool], socket.socket] = {}  # (gre, df) -> raw socket
        self._rx: list[socket.socket] = []
        self._icmp = IcmpErrors(self.stats.counts)
        self._icmp_in = IcmpListener(self._relay_icmp, burst)
        self._paths: dict[IPv4Address, _Path] = {}
        self._by_packed: dict[bytes, _Path] = {}
        self._fwd: dict[bytes, tuple[_Path | UdpPath, ...]] = {}
        self._rev: dict[bytes, frozenset[bytes]] = {}
        self._local: frozenset[bytes] = frozenset({vr.ha_address.packed})
        self.udp = UdpTunnels(vr.ha_address, self.stats.counts, self._write_tun)
        self.udp.too_big = self._udp_too_big
        self.udp.icmp = self._icmp

    # -- lifecycle ---------------------------------------------------------------------------------

    async def _start_backend(self) -> None:
        await self._acall(self._open)
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._on_tun_readable)
        for sock in self._rx:
            loop.add_reader(sock.fileno(), self._on_tunnel_readable, sock)
        self._icmp_in.start(loop)

    def _open(self) -> None:
        """TUN + raw sockets, created on the netns thread so they live in the VR's namespace."""
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", TUN_IFNAME.encode(), IFF_TUN | IFF_NO_PI))
        except OSError as exc:
            os.close(fd)
            raise DataPlaneError(f"cannot create TUN device {TUN_IFNAME}: {exc}") from exc
        self._fd = fd
        self.tun_ifindex = socket.if_nametoindex(TUN_IFNAME)
        write_sysctl(("net", "ipv6", "conf", TUN_IFNAME, "disable_ipv6"), 1)
        write_sysctl(("net", "ipv4", "conf", TUN_IFNAME, "rp_filter"), 2)
        # A longer queue than the default 500 absorbs bursts while the loop is busy elsewhere.
        self.ipr.link("set", index=self.tun_ifindex, state="up", mtu=self.tunnel_mtu, txqlen=self.txqlen)
        # The loop rule covers every address of the router (snapshot at start), not only the HA's.
        local = {IPv4Address(a.get("IFA_ADDRESS")).packed for a in self.ipr.get_addr(family=socket.AF_INET)}
        self._local = frozenset(local | {self.vr.ha_address.packed})
        ha = str(self.vr.ha_address)
        for gre in (False, True):
            proto = IPPROTO_GRE if gre else socket.IPPROTO_IPIP
            for df in (True, False):
                sock = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, proto)
                sock.bind((ha, 0))
                sock.setsockopt(
                    socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT
                )
                sock.setblocking(False)
                if df:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                    self._rx.append(sock)
                else:
                    drop_all_filter(sock)
                self._tx[(gre, df)] = sock
        self._icmp.sock = open_icmp_sender(self.vr.ha_address)
        self._icmp_in.open(self.vr.ha_address, _TUNNEL_PROTOCOLS)

    def pause_reading(self) -> None:
        """Stop reading the TUN (packets queue in the kernel, up to ``txqlen``); for benchmarks."""
        asyncio.get_running_loop().remove_reader(self._fd)

    def resume_reading(self) -> None:
        asyncio.get_running_loop().add_reader(self._fd, self._on_tun_readable)

    async def _stop_backend(self) -> None:
        loop = asyncio.get_running_loop()
        if self._fd >= 0:
            loop.remove_reader(self._fd)
            os.close(self._fd)  # a non-persistent TUN disappears with its routes
            self._fd = -1
        for sock in self._rx:
            loop.remove_reader(sock.fileno())
        for sock in self._tx.values():
            sock.close()
        self._icmp.close()
        self._icmp_in.close(loop)
        self._tx.clear()
        self._rx.clear()

    # -- tunnels (userspace only: nothing to create in the kernel) ---------------------------------

    def _create_tunnel(self, tunnel: Tunnel) -> None:
        if tunnel.encapsulation == Encapsulation.MINIMAL:
            raise DataPlaneError("the tun backend does not support minimal encapsulation (RFC 2004)")
        if tunnel.encapsulation == Encapsulation.IP_IN_UDP and self.udp.sock is None:
            raise DataPlaneError("no UDP socket attached for RFC 3519 tunnels")
        tunnel.ifname = TUN_IFNAME
        tunnel.ifindex = self.tun_ifindex

    def _delete_tunnel(self, tunnel: Tunnel) -> None:
        """Nothing in the kernel: :meth:`_on_homes_changed` drops the fast-path entry."""

    def _reconcile_tunnels(self, wanted: dict[TunnelKey, Tunnel]) -> None:
        for tunnel in wanted.values():
            self._create_tunnel(tunnel)

    def _route_oif(self, coas: tuple[IPv4Address, ...]) -> int:
        return self.tun_ifindex

    # -- RFC 3519 UDP tunnels --------------------------------------------------------------------------

    def _write_tun(self, packet: bytes | memoryview) -> None:
        try:
            os.write(self._fd, packet)
        except OSError:
            self.stats.counts["tun-write-failed"] += 1

    def _refresh(self, full: bool, homes: set[IPv4Address], coas: set[IPv4Address]) -> None:
        """Update the per-packet tables (keys are packed addresses: no parsing on the fast path).

        Incremental after ``apply`` (only the home and care-of addresses touched), complete after
        ``resync``.  A CoA keeps its counters; its encapsulation is that of its current tunnel.
        """
        if full:
            self._paths = {c: p for c, p in self._paths.items() if c in self._current}
            coas = set(self._current)
            homes = set(self._homes)
            self._fwd.clear()
            self._rev.clear()
            self._by_packed = {p.packed: p for p in self._paths.values()}
        for coa in coas:
            tunnel = self._current.get(coa)
            if tunnel is None:
                gone = self._paths.pop(coa, None)
                if gone is not None:
                    self._by_packed.pop(gone.packed, None)
                homes |= self._homes_by_coa.get(coa, set())
                continue
            path = self._paths.get(coa)
            if path is None:
                path = _Path(coa, (str(coa), 0), coa.packed, False, self.tunnel_mtu)
                self._paths[coa] = path
                self._by_packed[path.packed] = path
            path.gre = tunnel.encapsulation == Encapsulation.GRE
            path.tx, path.tx_df = self._tx.get((False, False)), self._tx.get((False, True))
        paths = self._paths
        udp = self.udp
        for hoa in homes:
            key = hoa.packed
            bound = self._homes.get(hoa)
            if bound is None:
                self._fwd.pop(key, None)
                self._rev.pop(key, None)
                udp.forget(key)
                continue
            tunnel = self._current.get(bound[0])
            if tunnel is not None and tunnel.encapsulation == Encapsulation.IP_IN_UDP:
                # One NAT mapping per home address: its own path (the port differs per node).
                mapping = (str(bound[0]), udp.ports.get(hoa, 0))
                self._fwd[key] = (udp.path(key, mapping, self.tunnel_mtu),)
                self._rev.pop(key, None)  # never accepted as plain IP-in-IP from the NAT
                continue
            udp.forget(key)
            self._fwd[key] = tuple(paths[c] for c in bound if c in paths)
            if self._reverse.get(hoa, True):
                self._rev[key] = frozenset(c.packed for c in bound)
            else:
                self._rev.pop(key, None)

    def _counters(self, coa: IPv4Address) -> tuple[int, int, int, int]:
        p = self._paths.get(coa)
        own = (0, 0, 0, 0) if p is None else (p.in_packets, p.in_octets, p.out_packets, p.out_octets)
        udp = self.udp.counters(coa)
        return (own[0] + udp[0], own[1] + udp[1], own[2] + udp[2], own[3] + udp[3])

    # -- fast path ---------------------------------------------------------------------------------

    def _on_tun_readable(self) -> None:
        """Drain up to ``burst`` packets per wake-up (one epoll round per burst, not per packet)."""
        fd, read, forward = self._fd, os.read, self._forward
        fwd, local = self._fwd, self._local
        counts = self.stats.counts
        for _ in range(self.burst):
            try:
                packet = read(fd, 65535)
            except BlockingIOError:
                return
            except OSError as exc:  # pragma: no cover - device gone
                log.error("TUN read failed: %s", exc)
                return
            paths = fwd.get(packet[16:20])
            if not paths:
                counts["no-binding"] += 1
                continue
            # Fast path, the common case inlined: one IP-in-IP path, IPv4, TOS 0, TTL left, not a
            # loop, DF clear or small enough.  Anything else takes _forward, which has every rule.
            if len(paths) == 1 and len(packet) >= 20 and packet[0] >> 4 == 4 and not packet[1] and packet[8]:
                path = paths[0]
                src = packet[12:16]
                df = packet[6] & 0x40
                if (
                    not path.gre
                    and not path.udp
                    and src != path.packed
                    and src not in local
                    and not (df and len(packet) > path.mtu - 20)
                ):
                    tx = path.tx_df if df else path.tx
                    assert tx is not None  # set with the path (_refresh), before it forwards
                    try:
                        tx.sendto(packet, path.dest)
                    except OSError:
                        forward(packet, paths)  # the slow path knows every error case
                        continue
                    path.out_packets += 1
                    path.out_octets += len(packet)
                    continue
            forward(packet, paths)

    def _forward(self, packet: bytes, paths: tuple[_Path | UdpPath, ...]) -> None:
        """Encapsulate one packet read from the TUN, bound for a home address (RFC 2003 §3, §4)."""
        counts = self.stats.counts
        if len(packet) < 20 or packet[0] >> 4 != 4:
            counts["not-ipv4"] += 1
            return
        src = packet[12:16]
        if src in self._local:
            counts["loop"] += 1
            return
        if packet[8] == 0:  # never encapsulate TTL 0 (RFC 2003 §3.1)
            counts["ttl-expired"] += 1
            self._send_icmp(11, 0, packet)
            return
        df = packet[6] & 0x40
        tos = packet[1]
        size = len(packet)
        for path in paths:
            if src == path.packed:
                counts["loop"] += 1
                continue
            if path.udp:
                if df and size > path.mtu - UDP_OVERHEAD:
                    counts["frag-needed"] += 1
                    self._send_icmp(3, 4, packet, mtu=path.mtu - UDP_OVERHEAD)
                    return
                self.udp.send(path, packet)
                continue
            if df and size > path.mtu - 20:
                counts["frag-needed"] += 1
                self._send_icmp(3, 4, packet, mtu=path.mtu - 20)
                return
            if path.gre:
                payload = GRE_IPV4 + packet
                sock = self._tx[(True, bool(df))]
            else:
                payload = packet
                tx = path.tx_df if df else path.tx
                assert tx is not None  # set with the path (_refresh), before it forwards
                sock = tx
            try:
                if tos:
                    sock.sendmsg([payload], [(socket.IPPROTO_IP, socket.IP_TOS, bytes([tos]))], 0, path.dest)
                else:
                    sock.sendto(payload, path.dest)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE and df:
                    # The path to the CoA is narrower than we thought (the kernel learnt it from an
                    # ICMP, or the egress device is smaller): keep it per tunnel, tell the sender.
                    path.mtu = self._path_mtu(path.coa)
                    counts["frag-needed"] += 1
                    self._send_icmp(3, 4, packet, mtu=path.mtu - 20)
                    return
                counts[f"send-{errno.errorcode.get(exc.errno or 0, 'error')}"] += 1
                continue
            path.out_packets += 1
            path.out_octets += size

    def _path_mtu(self, coa: IPv4Address) -> int:
        """The kernel's path MTU towards ``coa``, asked in the VR's namespace."""
        try:
            return int(self._call(path_mtu, coa, self.tunnel_mtu))
        except OSError:
            return self.tunnel_mtu

    def _udp_too_big(self, path: UdpPath, packet: bytes | memoryview) -> None:
        """An inner DF packet the kernel refused for a UDP tunnel (EMSGSIZE): as for IP-in-IP."""
        path.mtu = self._path_mtu(path.coa)
        self._send_icmp(3, 4, packet, mtu=path.mtu - UDP_OVERHEAD)

    def _send_icmp(self, icmp_type: int, code: int, packet: bytes | memoryview, *, mtu: int = 0) -> None:
        """ICMP error from the HA address to the inner source (rate-limited, :class:`IcmpErrors`)."""
        self._icmp.send(icmp_type, code, packet, mtu=mtu)

    def _relay_icmp(self, data: bytes) -> None:
        """RFC 2003 §4: an ICMP error about one of our outer packets goes on to the original sender.

        The rule is :func:`~ha.dataplane.icmp.relayed_error`'s; fragmentation needed also lowers the
        tunnel MTU, and the sender gets MTU - 20.  Errors about RFC 3519 UDP tunnels are
        :meth:`UdpTunnels.relay_icmp`'s.
        """
        counts = self.stats.counts
        ihl = (data[0] & 0x0F) * 4
        icmp_type, code = data[ihl], data[ihl + 1]
        outer = data[ihl + 8 :]
        if len(outer) < 20 or outer[12:16] not in self._local:
            return
        if outer[9] == socket.IPPROTO_UDP:
            self.udp.relay_icmp(data)
            return
        path = self._by_packed.get(outer[16:20])
        if path is None:
            counts["icmp-unknown-tunnel"] += 1
            return
        inner_at = (outer[0] & 0x0F) * 4 + (4 if outer[9] == IPPROTO_GRE else 0)
        inner = outer[inner_at:]
        if len(inner) < 20 or inner[0] >> 4 != 4:
            counts["icmp-too-short"] += 1
            return
        relay = relayed_error(icmp_type, code)
        if relay is None:
            counts["icmp-not-relayed"] += 1
            return
        mtu = 0
        if relay == FRAGMENTATION_NEEDED:
            reported = struct.unpack_from("!H", data, ihl + 6)[0]
            if reported >= 68 + 20:
                path.mtu = min(path.mtu, reported)
            mtu = path.mtu - 20
        counts["icmp-relayed"] += 1
        self._send_icmp(*relay, inner, mtu=mtu)

    def _on_tunnel_readable(self, sock: socket.socket) -> None:
        decap = self._decapsulate
        for _ in range(self.burst):
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            decap(data)

    def _decapsulate(self, data: bytes) -> None:
        """Reverse tunnel (RFC 3024): accept only from a CoA registered for the inner source."""
        counts = self.stats.counts
        ihl = (data[0] & 0x0F) * 4
        inner_at = ihl
        if data[9] == IPPROTO_GRE:
            if data[ihl : ihl + 4] != GRE_IPV4:
                counts["gre-unsupported"] += 1
                return
            inner_at += 4
        inner = data[inner_at:]
        if len(inner) < 20 or inner[0] >> 4 != 4:
            counts["decap-malformed"] += 1
            return
        outer_src = data[12:16]
        allowed = self._rev.get(inner[12:16])
        if allowed is None or outer_src not in allowed:
            counts["reverse-spoofed"] += 1
            return
        path = self._by_packed.get(outer_src)
        if path is not None:
            path.in_packets += 1
            path.in_octets += len(inner)
        try:
            os.write(self._fd, inner)
        except OSError:
            counts["tun-write-failed"] += 1
