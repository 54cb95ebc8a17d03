"""A mobile node behind a NAT: registration with UDP tunnelling and its side of the tunnel (RFC 3519).

One UDP socket, bound to the care-of address, carries everything: the Registration Request (with the
UDP Tunnel Request extension), the reply, and the tunnel data in both directions — so the NAT mapping
the home agent learns from the request is the one the data uses.  The TUN side is
:class:`~ha.mn.tunnel.MobileNodeTunnel`'s (home address on ``mnt0``, policy rule for its traffic):

- from the home agent (UDP source = HA:434): type 3 is a reply to a pending request, type 4 tunnel data
  whose inner packet goes to the TUN when it is addressed to the home address;
- from the TUN: what the stack sends from the home address goes to HA:434 behind the 4-byte tunnel
  data header (type 4, next header 4);
- keepalives (RFC 3519): an ICMP echo request to the home agent through the tunnel every keepalive
  interval (the home agent's, from its UDP Tunnel Reply, unless overridden); the echo replies are
  counted, not given to the stack;
- renewals every ``renew`` seconds (default: a third of the granted lifetime) from the same socket: if
  the NAT lost its state meanwhile, the renewal is what makes the home agent learn the new mapping.

Run standalone (the lab starts it this way; ``mipha mn ... udp-endpoint`` runs the same code)::

    python -m ha.mn.udp_tunnel --netns mipha-lab-mn --home 10.1.0.100 --coa 172.16.0.10 \\
        --ha 10.1.0.1 --key 00112233445566778899aabbccddeeff
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ha.dataplane.checksum import internet_checksum
from ha.netns import NetnsError
from ha.protocol import SecurityAssociation
from ha.protocol.constants import REGISTRATION_PORT, RequestFlags

from .session import MobileNodeSession, ReplyOutcome
from .tunnel import MobileNodeTunnel, TunnelConfig, TunnelError

_HEADER = bytes((4, 4, 0, 0))
#: IP + UDP + tunnel data header: the TUN's MTU is 1500 minus this on a 1500-byte path.
UDP_TUNNEL_OVERHEAD = 32
_KEEPALIVE_ID = 0x3519


@dataclass(slots=True)
class UdpTunnelStats:
    registrations: int = 0
    denials: int = 0
    timeouts: int = 0
    keepalives_sent: int = 0
    keepalive_replies: int = 0
    decapsulated: int = 0
    encapsulated: int = 0
    last_code: int | None = None
    drops: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "registrations": self.registrations,
            "denials": self.denials,
            "timeouts": self.timeouts,
            "keepalives_sent": self.keepalives_sent,
            "keepalive_replies": self.keepalive_replies,
            "decapsulated": self.decapsulated,
            "encapsulated": self.encapsulated,
            "last_code": self.last_code,
            "drops": dict(self.drops),
        }


def keepalive_packet(home: IPv4Address, ha: IPv4Address, sequence: int) -> bytes:
    """An ICMP echo request from the home address to the home agent (the RFC 3519 keepalive)."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, _KEEPALIVE_ID, sequence & 0xFFFF) + b"mipha-keepalive"
    icmp = icmp[:2] + struct.pack("!H", internet_checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, home.packed, ha.packed)
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + icmp


class MobileNodeUdpTunnel(MobileNodeTunnel):
    """The mobile node's RFC 3519 endpoint (see the module docstring)."""

    def __init__(
        self,
        config: TunnelConfig,
        session: MobileNodeSession,
        *,
        port: int = 0,
        timeout: float = 1.0,
        retries: int = 3,
    ) -> None:
        super().__init__(config)
        session.udp_tunnel = True
        session.flags |= RequestFlags.D  # co-located care-of address: the node decapsulates
        self.session = session
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.udp_stats = UdpTunnelStats()
        self.keepalive_interval: int | None = None
        self.granted: int | None = None
        self._target = (str(config.home_agent), REGISTRATION_PORT)
        self._pending: tuple[int, asyncio.Future[ReplyOutcome]] | None = None
        self._sequence = 0

    def _open_transport(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind((str(self.config.care_of_address), self.port))
        except OSError as exc:
            sock.close()
            raise TunnelError(f"cannot bind UDP to {self.config.care_of_address}: {exc.strerror}") from exc
        sock.setblocking(False)
        return sock

    # -- registration ------------------------------------------------------------------------------

    async def register(self, *, lifetime: int | None = None) -> ReplyOutcome | None:
        """Send one request (retransmitted ``retries`` times) and wait for its authenticated reply."""
        assert self._raw is not None and self._loop is not None
        for _attempt in range(self.retries + 1):
            identification = self.session.next_identification(time.time())
            data = self.session.build(identification, lifetime=lifetime)
            future: asyncio.Future[ReplyOutcome] = self._loop.create_future()
            self._pending = (identification, future)
            self._raw.sendto(data, self._target)
            try:
                outcome = await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                continue
            finally:
                self._pending = None
            self.udp_stats.last_code = outcome.code
            if outcome.accepted and outcome.authenticated:
                self.udp_stats.registrations += 1
                if lifetime != 0:
                    self.granted = outcome.lifetime
                    if outcome.udp_tunnel is not None:
                        self.keepalive_interval = outcome.udp_tunnel.keepalive_interval
            else:
                self.udp_stats.denials += 1
            return outcome
        self.udp_stats.timeouts += 1
        return None

    def _on_reply(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self.udp_stats.drops["unexpected-reply"] += 1
            return
        identification, future = pending
        outcome = self.session.check_reply(data, identification, time.time())
        if outcome is None or not outcome.authenticated:
            self.udp_stats.drops["reply-not-authenticated"] += 1
            return
        if not future.done():
            future.set_result(outcome)

    def send_keepalive(self) -> None:
        """One keepalive through the tunnel (RFC 3519)."""
        assert self._raw is not None
        self._sequence += 1
        packet = keepalive_packet(self.config.home_address, self.config.home_agent, self._sequence)
        self._raw.sendto(_HEADER + packet, self._target)
        self.udp_stats.keepalives_sent += 1

    async def run(
        self, stop: asyncio.Event, *, renew: float | None = None, keepalive: float | None = None
    ) -> None:
        """Renew and send keepalives until ``stop`` is set (the first registration is the caller's)."""
        next_renewal = time.monotonic() + (renew or max(1.0, (self.granted or 60) / 3))
        next_keepalive = time.monotonic() + (keepalive or self.keepalive_interval or 110)
        while not stop.is_set():
            wait = max(0.0, min(next_renewal, next_keepalive) - time.monotonic())
            try:
                await asyncio.wait_for(stop.wait(), wait)
                return
            except TimeoutError:
                pass
            now = time.monotonic()
            if now >= next_keepalive:
                self.send_keepalive()
                next_keepalive = now + (keepalive or self.keepalive_interval or 110)
            if now >= next_renewal:
                await self.register()
                next_renewal = time.monotonic() + (renew or max(1.0, (self.granted or 60) / 3))

    # -- data path ---------------------------------------------------------------------------------

    def _on_tunnel_readable(self) -> None:
        sock, fd, stats = self._raw, self._fd, self.udp_stats
        assert sock is not None
        home, ha = self.config.home_address.packed, self.config.home_agent.packed
        for _ in range(self.burst):
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                stats.drops["receive-error"] += 1
                return
            if source != self._target or not data:
                stats.drops["not-from-home-agent"] += 1
                continue
            if data[0] == 3:
                self._on_reply(data)
                continue
            if data[0] != 4 or len(data) < 24 or data[1] != 4:
                stats.drops["not-tunnel-data"] += 1
                continue
            inner = data[4:]
            if inner[16:20] != home:
                stats.drops["not-to-home-address"] += 1
                continue
            ihl = (inner[0] & 0x0F) * 4
            if (
                inner[12:16] == ha
                and inner[9] == 1
                and len(inner) > ihl + 6
                and inner[ihl] == 0
                and struct.unpack_from("!H", inner, ihl + 4)[0] == _KEEPALIVE_ID
            ):
                stats.keepalive_replies += 1
                continue
            try:
                os.write(fd, inner)
            except OSError:
                stats.drops["tun-write-error"] += 1
                continue
            stats.decapsulated += 1

    def _on_tun_readable(self) -> None:
        sock, fd, stats = self._raw, self._fd, self.udp_stats
        assert sock is not None
        home, target = self.config.home_address.packed, self._target
        for _ in range(self.burst):
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                return
            except OSError:
                stats.drops["tun-read-error"] += 1
                return
            if len(packet) < 20 or packet[0] >> 4 != 4 or packet[12:16] != home:
                stats.drops["not-from-home-address"] += 1
                continue
            try:
                sock.sendto(_HEADER + packet, target)
            except OSError:
                stats.drops["send-error"] += 1
                continue
            stats.encapsulated += 1


# -- command line ------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The endpoint's own options (``mipha mn udp-endpoint`` adds them to its sub-command)."""
    parser.add_argument("--home", type=IPv4Address, required=True, help="home address")
    parser.add_argument("--coa", type=IPv4Address, required=True, help="(private) co-located care-of address")
    parser.add_argument("--netns", help="network namespace of the mobile node (default: this one)")
    parser.add_argument("--ifname", default="mnt0", help="TUN device name (default mnt0)")
    parser.add_argument("--mtu", type=int, default=1500 - UDP_TUNNEL_OVERHEAD)
    parser.add_argument("--local-port", type=int, default=0, help="UDP port to register from (0: any)")
    parser.add_argument("--renew", type=float, help="seconds between renewals (default: lifetime / 3)")
    parser.add_argument("--keepalive", type=float, help="seconds between keepalives (default: the HA's)")
    parser.add_argument("--no-deregister", action="store_true", help="leave the binding when stopped")


async def serve(args: argparse.Namespace, session: MobileNodeSession) -> tuple[int, UdpTunnelStats]:
    """Register, carry the tunnel until SIGTERM/SIGINT, deregister; (exit status, statistics)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = TunnelConfig(
        home_address=args.home,
        care_of_address=args.coa,
        home_agent=session.home_agent,
        ifname=args.ifname,
        netns=args.netns,
        mtu=args.mtu,
    )
    endpoint = MobileNodeUdpTunnel(config, session, port=args.local_port)
    async with endpoint:
        outcome = await endpoint.register()
        if outcome is None or not outcome.accepted:
            code = None if outcome is None else outcome.code
            print(f"udp tunnel: registration failed (code {code})", flush=True)
            return 1, endpoint.udp_stats
        tunnel = outcome.udp_tunnel
        granted = f"code {tunnel.code}, keepalive {tunnel.keepalive_interval} s" if tunnel else "NOT granted"
        print(
            f"udp tunnel up: {config.ifname} carries {config.home_address}; code {outcome.code}, "
            f"lifetime {outcome.lifetime}, UDP tunnel {granted} "
            f"(netns {config.netns or '-'}, pid {os.getpid()})",
            flush=True,
        )
        await endpoint.run(stop, renew=args.renew, keepalive=args.keepalive)
        if not args.no_deregister:
            await endpoint.register(lifetime=0)
    return 0, endpoint.udp_stats


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ha.mn.udp_tunnel",
        description="mobile node behind a NAT: RFC 3519 registration and UDP tunnel (runs until signalled)",
    )
    add_arguments(parser)
    parser.add_argument("--ha", type=IPv4Address, required=True, help="home agent address")
    parser.add_argument("--key", type=bytes.fromhex, required=True, help="MN-HA key, hex")
    parser.add_argument("--spi", type=int, default=256)
    parser.add_argument("--lifetime", type=int, default=600)
    parser.add_argument("--force", action="store_true", help="set F (UDP tunnelling even without a NAT)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    session = MobileNodeSession(
        home_agent=args.ha,
        home_address=args.home,
        care_of_address=args.coa,
        sa=SecurityAssociation(args.spi, args.key),
        lifetime=args.lifetime,
        flags=RequestFlags.T,
        udp_force=args.force,
    )
    try:
        status, stats = asyncio.run(serve(args, session))
    except (TunnelError, NetnsError, OSError) as exc:
        print(f"udp tunnel endpoint failed: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"udp tunnel down: {json.dumps(stats.as_dict())}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
