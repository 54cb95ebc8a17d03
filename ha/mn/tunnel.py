"""A mobile node's own tunnel endpoint for a co-located care-of address, in userspace (RFC 2003, RFC 3024).

A mobile node away from home with a co-located care-of address decapsulates what its home agent
tunnels to it and, with reverse tunnelling (T bit), sends its home-address traffic back through the
same tunnel.  Kernels without the ``ipip`` module (this project's build machines) cannot do that with
an ``ipip`` device, so this endpoint does it with a TUN device and a raw socket, in the mobile node's
network namespace:

- ``mnt0`` (a TUN, IPv4 only) carries the home address as a /32; a policy rule sends every packet
  whose source is the home address to a table whose only route is ``default dev mnt0``.
- a raw ``IPPROTO_IPIP`` socket bound to the care-of address receives the home agent's packets
  (the kernel strips nothing: we see the outer header).  A packet is decapsulated only when its outer
  source is the home agent and its inner destination is the home address; the inner packet is written
  to the TUN and the mobile node's own stack answers it (ping, UDP to a socket bound to the home
  address, ...).
- what the stack sends from the home address is read from the TUN and sent back through the same raw
  socket to the home agent: the kernel builds the outer header (source = care-of address).

Reads are drained in bursts (up to :data:`BURST` per wake-up) on the asyncio loop.  :meth:`stop`
removes the rule; the TUN device, its address and its route disappear when its descriptor is closed.

Run standalone (the lab starts it this way)::

    python -m ha.mn.tunnel --netns mipha-lab-mn --home 192.0.2.10 --coa 198.51.100.7 --ha 192.0.2.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ha.netns import NetnsError, NetnsThread, write_sysctl

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
BURST = 256
#: Policy routing for home-address-sourced traffic (chosen away from mipha's HA-side 434).
DEFAULT_TABLE = 4343
DEFAULT_RULE_PRIORITY = 4343


class TunnelError(Exception):
    """The endpoint could not be set up; the message says which step failed."""


@dataclass(frozen=True, slots=True)
class TunnelConfig:
    """Where the endpoint lives and whom it talks to."""

    home_address: IPv4Address
    care_of_address: IPv4Address
    home_agent: IPv4Address
    ifname: str = "mnt0"
    netns: str | None = None  # None: the calling process's namespace
    mtu: int = 1480  # 1500 on the transit link minus the 20-byte outer header
    table: int = DEFAULT_TABLE
    rule_priority: int = DEFAULT_RULE_PRIORITY


@dataclass(slots=True)
class TunnelStats:
    """Packets and octets each way, drops by reason."""

    decapsulated: int = 0
    decapsulated_octets: int = 0
    encapsulated: int = 0
    encapsulated_octets: int = 0
    drops: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "decapsulated": self.decapsulated,
            "decapsulated_octets": self.decapsulated_octets,
            "encapsulated": self.encapsulated,
            "encapsulated_octets": self.encapsulated_octets,
            "drops": dict(self.drops),
        }


class MobileNodeTunnel:
    """The endpoint (see the module docstring); ``async with MobileNodeTunnel(cfg):`` or start/stop."""

    def __init__(self, config: TunnelConfig, *, burst: int = BURST) -> None:
        self.config = config
        self.burst = burst
        self.stats = TunnelStats()
        self.ifindex = 0
        self._ns: NetnsThread | None = None
        self._fd = -1
        self._raw: socket.socket | None = None
        self._rule_added = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ha = config.home_agent.packed
        self._home = config.home_address.packed
        self._dest = (str(config.home_agent), 0)

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the TUN, address, rule, route and raw socket; on any failure undo what was made."""
        if self._ns is not None:
            raise TunnelError("tunnel endpoint already started")
        self._loop = asyncio.get_running_loop()
        try:
            self._ns = NetnsThread(self.config.netns)
            await asyncio.wrap_future(self._ns.submit(self._setup))
        except BaseException:
            await self.stop()
            raise
        assert self._raw is not None
        self._loop.add_reader(self._fd, self._on_tun_readable)
        self._loop.add_reader(self._raw.fileno(), self._on_tunnel_readable)

    def _setup(self) -> None:
        """Runs on the namespace thread: everything created here lives in the mobile node's namespace."""
        self._create_tun()
        self._raw = self._open_transport()
        self._configure_routes()

    def _create_tun(self) -> None:
        cfg = self.config
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunnelError(f"cannot open /dev/net/tun: {exc.strerror}") from exc
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", cfg.ifname.encode(), IFF_TUN | IFF_NO_PI))
        except OSError as exc:
            os.close(fd)
            raise TunnelError(f"cannot create TUN device {cfg.ifname}: {exc.strerror}") from exc
        self._fd = fd
        self.ifindex = socket.if_nametoindex(cfg.ifname)
        write_sysctl(("net", "ipv6", "conf", cfg.ifname, "disable_ipv6"), 1)
        # Decapsulated packets come in on the TUN from anywhere: loose reverse-path check there.
        write_sysctl(("net", "ipv4", "conf", cfg.ifname, "rp_filter"), 2)

    def _open_transport(self) -> socket.socket:
        """The socket the tunnel's outer packets use: raw IP-in-IP, bound to the care-of address."""
        cfg = self.config
        try:
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_IPIP)
        except OSError as exc:
            raise TunnelError(f"cannot open a raw IP-in-IP socket: {exc.strerror}") from exc
        self._raw = raw
        try:
            raw.bind((str(cfg.care_of_address), 0))
        except OSError as exc:
            raise TunnelError(
                f"care-of address {cfg.care_of_address} is not configured in "
                f"{cfg.netns or 'this namespace'} ({exc.strerror})"
            ) from exc
        # The outer packet may be fragmented on a narrower path (the inner DF bit is the sender's).
        raw.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        raw.setblocking(False)
        return raw

    def _configure_routes(self) -> None:
        """Home address on the TUN; what the home address sends goes into the TUN (policy rule)."""
        cfg = self.config
        with IPRoute() as ipr:
            try:
                ipr.link("set", index=self.ifindex, state="up", mtu=cfg.mtu)
                ipr.addr("add", index=self.ifindex, address=str(cfg.home_address), prefixlen=32)
                ipr.route("add", dst="0.0.0.0/0", oif=self.ifindex, table=cfg.table)
                try:
                    ipr.rule(
                        "add",
                        family=socket.AF_INET,
                        src=str(cfg.home_address),
                        src_len=32,
                        table=cfg.table,
                        priority=cfg.rule_priority,
                    )
                    self._rule_added = True
                except NetlinkError as exc:
                    if exc.code != 17:  # EEXIST: left by an endpoint that was killed; it is ours
                        raise
                    self._rule_added = True
            except NetlinkError as exc:
                raise TunnelError(f"cannot configure {cfg.ifname}: {exc}") from exc

    async def stop(self) -> None:
        """Remove readers, the rule, the raw socket and the TUN (idempotent; safe after a failed start)."""
        loop = self._loop
        if self._fd >= 0 and loop is not None:
            loop.remove_reader(self._fd)
        if self._raw is not None and loop is not None:
            loop.remove_reader(self._raw.fileno())
        if self._ns is not None:
            try:
                await asyncio.wrap_future(self._ns.submit(self._teardown))
            finally:
                self._ns.close()
                self._ns = None

    def _teardown(self) -> None:
        cfg = self.config
        if self._rule_added:
            with IPRoute() as ipr, contextlib.suppress(NetlinkError):
                ipr.rule(
                    "del",
                    family=socket.AF_INET,
                    src=str(cfg.home_address),
                    src_len=32,
                    table=cfg.table,
                    priority=cfg.rule_priority,
                )
            self._rule_added = False
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._fd >= 0:
            os.close(self._fd)  # the non-persistent TUN goes, with its address and route
            self._fd = -1

    async def __aenter__(self) -> MobileNodeTunnel:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- fast path ---------------------------------------------------------------------------------

    def _on_tunnel_readable(self) -> None:
        """Decapsulate up to ``burst`` packets: outer source must be the HA, inner destination us."""
        raw, fd, stats, drops = self._raw, self._fd, self.stats, self.stats.drops
        assert raw is not None
        ha, home = self._ha, self._home
        for _ in range(self.burst):
            try:
                packet = raw.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                drops["receive-error"] += 1
                return
            ihl = (packet[0] & 0x0F) * 4
            if packet[12:16] != ha:
                drops["not-from-home-agent"] += 1
                continue
            inner = packet[ihl:]
            if len(inner) < 20 or inner[0] >> 4 != 4:
                drops["malformed"] += 1
                continue
            if inner[16:20] != home:
                drops["not-to-home-address"] += 1
                continue
            try:
                os.write(fd, inner)
            except OSError:
                drops["tun-write-error"] += 1
                continue
            stats.decapsulated += 1
            stats.decapsulated_octets += len(inner)

    def _on_tun_readable(self) -> None:
        """Reverse-tunnel up to ``burst`` packets the stack sent from the home address."""
        raw, fd, stats, drops = self._raw, self._fd, self.stats, self.stats.drops
        assert raw is not None
        home, dest = self._home, self._dest
        for _ in range(self.burst):
            try:
                packet = os.read(fd, 65535)
            except BlockingIOError:
                return
            except OSError:
                drops["tun-read-error"] += 1
                return
            if len(packet) < 20 or packet[0] >> 4 != 4:
                drops["not-ipv4"] += 1
                continue
            if packet[12:16] != home:
                drops["not-from-home-address"] += 1
                continue
            try:
                raw.sendto(packet, dest)
            except OSError:
                drops["send-error"] += 1
                continue
            stats.encapsulated += 1
            stats.encapsulated_octets += len(packet)


# -- command line ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ha.mn.tunnel",
        description="mobile node tunnel endpoint for a co-located care-of address (runs until signalled)",
    )
    parser.add_argument("--home", type=IPv4Address, required=True, help="home address")
    parser.add_argument("--coa", type=IPv4Address, required=True, help="co-located care-of address")
    parser.add_argument("--ha", type=IPv4Address, required=True, help="home agent address")
    parser.add_argument("--netns", help="network namespace of the mobile node (default: this one)")
    parser.add_argument("--ifname", default="mnt0", help="TUN device name (default mnt0)")
    parser.add_argument("--mtu", type=int, default=1480)
    parser.add_argument("--table", type=int, default=DEFAULT_TABLE, help="policy routing table")
    parser.add_argument("--rule-priority", type=int, default=DEFAULT_RULE_PRIORITY)
    return parser


async def _serve(config: TunnelConfig) -> TunnelStats:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    async with MobileNodeTunnel(config) as tunnel:
        print(
            f"tunnel up: {config.ifname} carries {config.home_address}; IP-in-IP between "
            f"{config.care_of_address} and home agent {config.home_agent}"
            f" (netns {config.netns or '-'}, pid {os.getpid()})",
            flush=True,
        )
        await done.wait()
    return tunnel.stats


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = TunnelConfig(
        home_address=args.home,
        care_of_address=args.coa,
        home_agent=args.ha,
        ifname=args.ifname,
        netns=args.netns,
        mtu=args.mtu,
        table=args.table,
        rule_priority=args.rule_priority,
    )
    try:
        stats = asyncio.run(_serve(config))
    except (TunnelError, NetnsError, OSError) as exc:
        print(f"tunnel endpoint failed: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"tunnel down: {stats.as_dict()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
