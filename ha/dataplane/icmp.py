"""ICMP errors and path MTU for the userspace tunnel paths (RFC 2003 §4, RFC 1191).

Shared by the ``tun`` backend and the RFC 3519 UDP tunnels of both backends:

- :func:`icmp_error` builds an ICMP error quoting the offending packet;
- :class:`IcmpErrors` sends them from the home agent's address to the inner source, rate-limited,
  never about an ICMP error or a non-first fragment;
- :class:`IcmpListener` receives the errors that quote our own outer packets, for relaying;
- :func:`path_mtu` asks the kernel for its path MTU towards a tunnel end (what it learnt from ICMP
  "fragmentation needed" about our outer packets, or the egress device's MTU);
- :func:`attach_filter` / :func:`drop_all_filter`: classic BPF on raw sockets that only send.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address

from .checksum import internet_checksum

SO_ATTACH_FILTER = 26
IP_MTU_DISCOVER = 10
IP_MTU = 14
IP_PMTUDISC_DONT = 0
IP_PMTUDISC_DO = 2
ICMP_ERRORS_PER_SECOND = 200
#: ICMP destination unreachable, fragmentation needed (RFC 1191): ``(type, code)``.
FRAGMENTATION_NEEDED = (3, 4)
_ICMP_ERROR_TYPES = frozenset({3, 4, 5, 11, 12})
#: The smallest MTU a path may report (RFC 791's 68) plus the outer header it must still carry.
_MIN_MTU = 68


def attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """Attach a classic BPF program (``(code, jt, jf, k)`` instructions) to ``sock``."""
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    insns = (ctypes.c_ubyte * len(raw)).from_buffer_copy(raw)
    prog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(insns))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)


def drop_all_filter(sock: socket.socket) -> None:
    """``ret 0``: a send-only raw socket never queues received copies."""
    attach_filter(sock, [(0x06, 0, 0, 0)])


def quoted_protocol_filter(protocols: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """BPF keeping only ICMP destination-unreachable / time-exceeded that quote a packet of one of
    ``protocols`` (x = the ICMP packet's IP header length, the quoted protocol at x + 8 + 9)."""
    n = len(protocols)
    program = [
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf)
        (0x50, 0, 0, 0),  # ldb [x+0]: the ICMP type
        (0x15, 1, 0, 3),  # jeq #3: to the protocol load
        (0x15, 0, n + 2, 11),  # jeq #11, else drop
        (0x50, 0, 0, 17),  # ldb [x+17]: the quoted protocol
    ]
    program += [(0x15, n - 1 - i, 1 if i == n - 1 else 0, proto) for i, proto in enumerate(protocols)]
    return [*program, (0x06, 0, 0, 0xFFFF), (0x06, 0, 0, 0)]  # accept, drop


def open_icmp_listener(ha_address: IPv4Address, protocols: tuple[int, ...]) -> socket.socket:
    """A raw ICMP socket bound to the home agent's address that receives only the errors quoting our
    outer packets of ``protocols`` (call it in the VR's namespace)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP)
    try:
        sock.bind((str(ha_address), 0))
        sock.setblocking(False)
        attach_filter(sock, quoted_protocol_filter(protocols))
    except BaseException:
        sock.close()
        raise
    return sock


def icmp_error(icmp_type: int, code: int, offending: bytes | memoryview, *, mtu: int = 0) -> bytes:
    """An ICMP error quoting the offending IP header + 8 bytes (RFC 792; next-hop MTU per RFC 1191)."""
    ihl = (offending[0] & 0x0F) * 4
    rest = struct.pack("!HH", 0, mtu)
    body = struct.pack("!BBH", icmp_type, code, 0) + rest + bytes(offending[: ihl + 8])
    csum = internet_checksum(body)
    return body[:2] + struct.pack("!H", csum) + body[4:]


def open_icmp_sender(ha_address: IPv4Address) -> socket.socket:
    """A raw ICMP socket bound to the home agent's address that receives nothing (call it in the VR's
    namespace)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_ICMP)
    try:
        sock.bind((str(ha_address), 0))
        sock.setblocking(False)
        drop_all_filter(sock)
    except BaseException:
        sock.close()
        raise
    return sock


class IcmpErrors:
    """ICMP errors to original senders, at most ``per_second`` a second (counted in ``counts``)."""

    def __init__(self, counts: Counter[str], per_second: int = ICMP_ERRORS_PER_SECOND) -> None:
        self.counts = counts
        self.per_second = per_second
        self.sock: socket.socket | None = None
        self._budget = per_second
        self._window = 0.0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, icmp_type: int, code: int, packet: bytes | memoryview, *, mtu: int = 0) -> None:
        """ICMP error from the HA address to the inner source; never about ICMP errors (RFC 1122)."""
        ihl = (packet[0] & 0x0F) * 4
        if packet[9] == 1 and len(packet) > ihl and packet[ihl] in _ICMP_ERROR_TYPES:
            return
        if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:  # not the first fragment
            return
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._budget = now, self.per_second
        if self._budget <= 0 or self.sock is None:
            self.counts["icmp-rate-limited"] += 1
            return
        self._budget -= 1
        try:
            error = icmp_error(icmp_type, code, packet, mtu=mtu)
            self.sock.sendto(error, (socket.inet_ntoa(packet[12:16]), 0))
            self.counts["icmp-sent"] += 1
        except OSError:
            self.counts["icmp-send-failed"] += 1


class IcmpListener:
    """The raw socket that receives the ICMP errors quoting our outer packets, drained into ``handle``
    at most ``burst`` at a wakeup (so the tunnels' own reads are not starved)."""

    def __init__(self, handle: Callable[[bytes], None], burst: int) -> None:
        self.handle = handle
        self.burst = burst
        self.sock: socket.socket | None = None

    def open(self, ha_address: IPv4Address, protocols: tuple[int, ...]) -> None:
        """Call it on the namespace's thread, so the socket lives in the virtual router."""
        self.sock = open_icmp_listener(ha_address, protocols)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.sock is not None:
            loop.add_reader(self.sock.fileno(), self._drain)

    def _drain(self) -> None:
        assert self.sock is not None
        for _ in range(self.burst):
            try:
                data = self.sock.recv(65535)
            except OSError:  # BlockingIOError: drained; anything else: the next wakeup tries again
                return
            self.handle(data)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.sock is not None:
            loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


def relayed_error(icmp_type: int, code: int, *, udp: bool = False) -> tuple[int, int] | None:
    """RFC 2003 §4: what the original sender gets for an ICMP error about one of our outer packets.

    Net unreachable → net unreachable; host / protocol unreachable and time exceeded → host
    unreachable (the tunnel's far end is unreachable); fragmentation needed → fragmentation needed
    (the caller puts its tunnel MTU minus the overhead in it).  Port unreachable means the same as
    protocol unreachable for an RFC 3519 UDP tunnel (``udp``: nothing listens at the NAT mapping any
    more) and cannot concern IP-in-IP.  Source route failed, source quench and parameter problem are
    not relayed (None).
    """
    if icmp_type == 11:
        return (3, 1)
    if icmp_type == 3 and code == 0:
        return (3, 0)
    if icmp_type == 3 and (code in (1, 2) or (udp and code == 3)):
        return (3, 1)
    if icmp_type == 3 and code == 4:
        return FRAGMENTATION_NEEDED
    return None


def path_mtu(destination: IPv4Address, default: int) -> int:
    """The kernel's path MTU towards ``destination`` (``IP_MTU`` of a connected UDP socket; call it in
    the VR's namespace), ``default`` if it cannot say."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((str(destination), 9))
            return max(_MIN_MTU + 20, int(probe.getsockopt(socket.IPPROTO_IP, IP_MTU)))
    except OSError:
        return default
