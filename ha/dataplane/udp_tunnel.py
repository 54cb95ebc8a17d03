"""The userspace RFC 3519 UDP tunnel endpoint of a home agent (used by the ``tun`` backend).

No kernel this project runs on has ``fou``, so IP-in-UDP is carried in userspace, through the virtual
router's UDP 434 socket (the one registrations arrive on: the NAT mapping the mobile node registered
from is exactly that socket's peer):

- **forward**: a packet for a UDP-tunnelled home address goes to the binding's NAT mapping as
  ``UDP(434 -> mapping) | 4, 4, 0 | inner packet`` (:meth:`UdpTunnels.send`);
- **reverse**: a type-4 datagram is decapsulated only when its UDP source is the mapping registered for
  the inner packet's source (the home address); anything else is dropped and counted;
- **keepalive** (RFC 3519): an ICMP echo request to the home agent's address inside the tunnel is
  answered here, back through the same tunnel (the kernel would refuse to tunnel a packet whose source
  is the home agent itself, RFC 2003 §3);
- **DF and path MTU** (RFC 2003 §3.1, §4, as for IP-in-IP): the outer packet carries DF exactly when
  the inner one does (the socket's ``IP_MTU_DISCOVER`` follows the packet: ``DO`` or ``DONT``).  An
  inner DF packet the path cannot carry is refused by the kernel (``EMSGSIZE``, from the device MTU or
  from an ICMP "fragmentation needed" about an earlier outer packet); the tunnel's MTU then becomes
  the kernel's path MTU and the original sender gets ICMP fragmentation-needed with MTU - 32
  (:attr:`UdpTunnels.too_big`, wired by the backend);
- **ICMP errors about outer packets** (RFC 2003 §4): one quoting an outer UDP packet of ours to a NAT
  mapping (the NAT translates the quote back) is relayed to the sender of the inner packet it quotes
  (:meth:`UdpTunnels.relay_icmp`, :func:`~ha.dataplane.icmp.relayed_error`'s rule; port unreachable
  counts as the far end being gone); fragmentation needed lowers the tunnel MTU at once.

The mapping is the binding's: a renewal from a new source port (the NAT lost its state) moves it, the
engine says so with a new ``SetHomeRoute``.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, Literal

from ha.netns import write_sysctl

from .base import DataPlaneError, DesiredBinding
from .checksum import internet_checksum
from .icmp import (
    FRAGMENTATION_NEEDED,
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DO,
    IP_PMTUDISC_DONT,
    IcmpErrors,
    IcmpListener,
    open_icmp_sender,
    relayed_error,
)
from .intents import RemoveHomeRoute, SetHomeRoute

if TYPE_CHECKING:
    from pyroute2 import IPRoute

#: Bytes an IP-in-UDP tunnel adds: outer IP (20) + UDP (8) + the tunnel data header (4).
UDP_OVERHEAD = 32
TUNNEL_DATA = 4
NEXT_HEADER_IP = 4
_HEADER = bytes((TUNNEL_DATA, NEXT_HEADER_IP, 0, 0))
_ICMP = 1
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_ECHO_REQUEST = 8


@dataclass(slots=True)
class UdpPath:
    """The forward path of one UDP-tunnelled home address (same fields the tun fast path reads)."""

    coa: IPv4Address  # the NAT's address
    dest: tuple[str, int]  # the NAT mapping
    packed: bytes
    mtu: int
    gre: bool = False
    udp: Literal[True] = True
    in_packets: int = 0
    in_octets: int = 0
    out_packets: int = 0
    out_octets: int = 0


def echo_reply(request: bytes | memoryview) -> bytes | None:
    """The ICMP echo reply to an IPv4 echo request (addresses swapped, same id/sequence/data)."""
    packet = bytes(request)
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[9] != _ICMP or packet[ihl] != _ECHO_REQUEST:
        return None
    icmp = bytearray(packet[ihl:])
    icmp[0] = 0
    icmp[2:4] = b"\0\0"
    icmp[2:4] = struct.pack("!H", internet_checksum(icmp))
    header = bytearray(packet[:20])  # options are not echoed
    header[0] = 0x45
    header[2:4] = struct.pack("!H", 20 + len(icmp))
    header[6:8] = b"\0\0"
    header[8] = 64
    header[10:12] = b"\0\0"
    header[12:16], header[16:20] = packet[16:20], packet[12:16]
    header[10:12] = struct.pack("!H", internet_checksum(header))
    return bytes(header + icmp)


class UdpTunnels:
    """Every UDP tunnel of one virtual router: mappings, paths and the 434 socket."""

    def __init__(
        self,
        ha_address: IPv4Address,
        counts: Counter[str],
        write_tun: Callable[[bytes | memoryview], None],
    ) -> None:
        self.ha_packed = ha_address.packed
        # The registration socket is bound to 0.0.0.0: IP_PKTINFO makes the home agent address the
        # outer source, as for replies (the mobile node accepts tunnel data only from HA:434).
        self._source = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, self.ha_packed, bytes(4)))]
        self.counts = counts
        self.write_tun = write_tun
        self.sock: socket.socket | None = None
        self._df: int | None = None  # the DF setting the socket has (None: not set by us yet)
        #: Called with a path and an inner DF packet the kernel refused as too big for it (EMSGSIZE):
        #: the backend updates ``path.mtu`` and answers ICMP fragmentation-needed.
        self.too_big: Callable[[UdpPath, bytes | memoryview], None] | None = None
        #: Where relayed ICMP errors go out (the backend's sender); None: counted, not sent.
        self.icmp: IcmpErrors | None = None
        self.port = 0  # the UDP port tunnel data leaves from (the socket's)
        #: Home address -> the NAT mapping's port (from ``SetHomeRoute.udp_port``).
        self.ports: dict[IPv4Address, int] = {}
        self._paths: dict[bytes, UdpPath] = {}  # packed home address -> path
        self._by_mapping: dict[tuple[str, int], bytes] = {}  # mapping -> packed home address
        self.keepalives_answered = 0

    def path(self, home: bytes, mapping: tuple[str, int], mtu: int) -> UdpPath:
        """The path of a UDP-tunnelled home address, created or moved to ``mapping``."""
        current = self._paths.get(home)
        if current is not None and current.dest == mapping:
            return current
        if current is not None:
            self._by_mapping.pop(current.dest, None)
        coa = IPv4Address(mapping[0])
        path = UdpPath(coa, mapping, coa.packed, mtu)
        if current is not None:  # a moved mapping keeps its counters
            path.in_packets, path.in_octets = current.in_packets, current.in_octets
            path.out_packets, path.out_octets = current.out_packets, current.out_octets
        self._paths[home] = path
        self._by_mapping[mapping] = home
        return path

    def forget(self, home: bytes) -> None:
        path = self._paths.pop(home, None)
        if path is not None:
            self._by_mapping.pop(path.dest, None)

    def path_of(self, home: bytes) -> UdpPath | None:
        return self._paths.get(home)

    def keep_only(self, homes: set[bytes]) -> None:
        """Forget every path whose home address is not in ``homes`` (after a full resync)."""
        for home in [h for h in self._paths if h not in homes]:
            self.forget(home)

    def counters(self, nat: IPv4Address) -> tuple[int, int, int, int]:
        """In/out packets and octets of every UDP tunnel behind ``nat`` (for ``tunnels/tunnel``)."""
        totals = [0, 0, 0, 0]
        for p in self._paths.values():
            if p.coa == nat:
                totals[0] += p.in_packets
                totals[1] += p.in_octets
                totals[2] += p.out_packets
                totals[3] += p.out_octets
        return totals[0], totals[1], totals[2], totals[3]

    def attach(self, sock: socket.socket | None) -> None:
        """Send tunnel data through ``sock`` (the virtual router's UDP 434 socket)."""
        self.sock, self._df = sock, None
        self.port = sock.getsockname()[1] if sock is not None else 0

    def relay_icmp(self, data: bytes) -> None:
        """An ICMP error (the whole IP packet) quoting one of our outer UDP packets: relay it to the
        inner packet's sender (RFC 2003 §4), or count why not."""
        counts = self.counts
        ihl = (data[0] & 0x0F) * 4
        icmp_type, code = data[ihl], data[ihl + 1]
        outer = data[ihl + 8 :]
        at = (outer[0] & 0x0F) * 4 if outer else 0
        if len(outer) < at + 8 or outer[9] != socket.IPPROTO_UDP or outer[12:16] != self.ha_packed:
            counts["icmp-too-short"] += 1
            return
        source_port, destination_port = struct.unpack_from("!HH", outer, at)
        home = self._by_mapping.get((socket.inet_ntoa(outer[16:20]), destination_port))
        path = self._paths.get(home) if home is not None and source_port == self.port else None
        if path is None:
            counts["icmp-unknown-tunnel"] += 1  # a registration reply's error, or a forgotten mapping
            return
        inner = outer[at + 8 + len(_HEADER) :]
        if outer[at + 8 : at + 10] != _HEADER[:2] or len(inner) < 20 or inner[0] >> 4 != 4:
            counts["icmp-too-short"] += 1
            return
        relay = relayed_error(icmp_type, code, udp=True)
        if relay is None:
            counts["icmp-not-relayed"] += 1
            return
        mtu = 0
        if relay == FRAGMENTATION_NEEDED:
            reported = struct.unpack_from("!H", data, ihl + 6)[0]
            if reported >= 68 + UDP_OVERHEAD:
                path.mtu = min(path.mtu, reported)
            mtu = path.mtu - UDP_OVERHEAD
        counts["icmp-relayed"] += 1
        if self.icmp is not None:
            self.icmp.send(*relay, inner, mtu=mtu)

    def send(self, path: UdpPath, packet: bytes | memoryview) -> None:
        """Forward one inner packet through the tunnel (the caller checked TTL, loops and size).

        DF is copied from the inner header (RFC 2003 §3.1): the socket's setting is switched only when
        it differs from the packet's, so a run of packets alike costs no extra system call.
        """
        sock = self.sock
        if sock is None:
            self.counts["udp-no-socket"] += 1
            return
        df = packet[6] & 0x40
        if df != self._df:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO if df else IP_PMTUDISC_DONT)
            self._df = df
        try:
            sock.sendmsg((_HEADER, packet), self._source, 0, path.dest)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and df:
                self.counts["frag-needed"] += 1
                if self.too_big is not None:
                    self.too_big(path, packet)
                return
            self.counts["udp-send-failed"] += 1
            return
        path.out_packets += 1
        path.out_octets += len(packet)

    def receive(self, data: bytes, source: tuple[str, int]) -> None:
        """A type-4 datagram from ``source``: decapsulate it, or answer a keepalive, or drop it."""
        counts = self.counts
        if len(data) < 24 or data[0] != TUNNEL_DATA:
            counts["udp-malformed"] += 1
            return
        if data[1] != NEXT_HEADER_IP:
            counts["udp-next-header-unsupported"] += 1
            return
        inner = memoryview(data)[4:]
        if inner[0] >> 4 != 4:
            counts["udp-malformed"] += 1
            return
        home = bytes(inner[12:16])
        path = self._paths.get(home)
        if path is None or path.dest != source:
            counts["udp-reverse-spoofed"] += 1
            return
        path.in_packets += 1
        path.in_octets += len(inner)
        if bytes(inner[16:20]) == self.ha_packed:
            reply = echo_reply(inner)
            if reply is not None:
                self.keepalives_answered += 1
                counts["udp-keepalives-answered"] += 1
                self.send(path, reply)
                return
        self.write_tun(inner)


class UdpTunnelRoutes:
    """What a :class:`~ha.dataplane.kernel.KernelPlane` backend adds to carry RFC 3519 UDP tunnels.

    Mixed in before ``KernelPlane``: remembers each UDP-tunnelled home address's NAT port from its
    ``SetHomeRoute`` (and from ``resync``), and plugs the registration socket and its type-4 datagrams
    into :attr:`udp`.  The backend builds :attr:`udp` and keeps its per-home paths in step
    (:meth:`UdpTunnels.path` / :meth:`UdpTunnels.forget`) when it refreshes its fast path.
    """

    udp: UdpTunnels

    def attach_udp_socket(self, sock: object) -> None:
        self.udp.attach(sock)  # type: ignore[arg-type]

    def udp_input(self, data: bytes, source: tuple[str, int]) -> None:
        self.udp.receive(data, source)

    def _set_home_route(self, intent: SetHomeRoute) -> None:
        super()._set_home_route(intent)  # type: ignore[misc]
        self.udp.ports[intent.home_address] = intent.udp_port

    def _remove_home_route(self, intent: RemoveHomeRoute) -> None:
        super()._remove_home_route(intent)  # type: ignore[misc]
        self.udp.ports.pop(intent.home_address, None)

    def _resync(self, wanted: list[DesiredBinding]) -> None:
        self.udp.ports = {b.home_address: b.udp_port for b in wanted if b.udp_port}
        super()._resync(wanted)  # type: ignore[misc]


UDP_TUN_IFNAME = "mip-udp"
_TUNSETIFF = 0x400454CA
_IFF_TUN_NO_PI = 0x0001 | 0x1000
_BURST = 256


class UdpTunDevice:
    """A TUN of its own for the UDP tunnels of a backend whose other tunnels are kernel devices (ipip).

    Home addresses bound through a UDP tunnel are routed into ``mip-udp``; what the kernel forwards
    into it is sent to the binding's NAT mapping (:class:`UdpTunnels`), and what comes back through the
    tunnel is written to it.  The inner TTL decrement is the kernel's forwarding step into the TUN
    (which answers time exceeded itself); a packet with TTL 0 or from the home agent itself is dropped
    and counted; one longer than the tunnel MTU - 32 with DF is dropped, counted and answered with ICMP
    fragmentation-needed (MTU - 32) from the home agent's address, as the ``tun`` backend does, and
    the tunnel MTU follows the kernel's path MTU (``path_mtu``, asked in the VR's namespace) when a
    send is refused as too big.
    """

    def __init__(
        self,
        ha_address: IPv4Address,
        counts: Counter[str],
        *,
        mtu: int = 1500,
        path_mtu: Callable[[IPv4Address], int] | None = None,
    ) -> None:
        self.counts = counts
        self.mtu = mtu
        self.fd = -1
        self.ifindex = 0
        self.ha_address = ha_address
        self.local = frozenset({ha_address.packed})
        self.icmp = IcmpErrors(counts)
        self.path_mtu = path_mtu
        self.udp = UdpTunnels(ha_address, counts, self.write)
        self.icmp_in = IcmpListener(self.udp.relay_icmp, _BURST)  # errors quoting our outer UDP packets
        self.udp.too_big = self._too_big
        self.udp.icmp = self.icmp

    def open(self, ipr: IPRoute) -> None:
        """Create the TUN (call it on the namespace's thread, so it lives in the virtual router)."""
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", UDP_TUN_IFNAME.encode(), _IFF_TUN_NO_PI))
        except OSError as exc:
            os.close(fd)
            raise DataPlaneError(f"cannot create TUN device {UDP_TUN_IFNAME}: {exc}") from exc
        self.fd = fd
        self.icmp.sock = open_icmp_sender(self.ha_address)
        self.icmp_in.open(self.ha_address, (socket.IPPROTO_UDP,))
        self.ifindex = socket.if_nametoindex(UDP_TUN_IFNAME)
        write_sysctl(("net", "ipv6", "conf", UDP_TUN_IFNAME, "disable_ipv6"), 1)
        write_sysctl(("net", "ipv4", "conf", UDP_TUN_IFNAME, "rp_filter"), 2)
        ipr.link("set", index=self.ifindex, state="up", mtu=self.mtu)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.fd, self._on_readable)
        self.icmp_in.start(loop)

    def close(self, loop: Any) -> None:
        if self.fd >= 0:
            loop.remove_reader(self.fd)
            os.close(self.fd)  # the non-persistent TUN goes, with its routes
            self.fd = -1
        self.icmp.close()
        self.icmp_in.close(loop)

    def write(self, packet: bytes | memoryview) -> None:
        try:
            os.write(self.fd, packet)
        except OSError:
            self.counts["tun-write-failed"] += 1

    def _on_readable(self) -> None:
        fd, read, counts, udp, local = self.fd, os.read, self.counts, self.udp, self.local
        for _ in range(_BURST):
            try:
                packet = read(fd, 65535)
            except BlockingIOError:
                return
            except OSError:  # pragma: no cover - device gone
                return
            path = udp.path_of(packet[16:20])
            if path is None:
                counts["no-binding"] += 1
            elif len(packet) < 20 or packet[0] >> 4 != 4:
                counts["not-ipv4"] += 1
            elif packet[8] == 0:
                counts["ttl-expired"] += 1
            elif packet[12:16] in local or packet[12:16] == path.packed:
                counts["loop"] += 1
            elif packet[6] & 0x40 and len(packet) > path.mtu - UDP_OVERHEAD:
                counts["frag-needed"] += 1
                self.icmp.send(3, 4, packet, mtu=path.mtu - UDP_OVERHEAD)
            else:
                udp.send(path, packet)

    def _too_big(self, path: UdpPath, packet: bytes | memoryview) -> None:
        """The kernel refused an inner DF packet as too big: learn the path MTU, tell the sender."""
        if self.path_mtu is not None:
            path.mtu = self.path_mtu(path.coa)
        self.icmp.send(3, 4, packet, mtu=path.mtu - UDP_OVERHEAD)
