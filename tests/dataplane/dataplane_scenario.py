"""The home-agent forwarding scenario shared by the tun test (this kernel) and the ipip test (inside UML).

Topology (every namespace unique and removed afterwards)::

    cn ──cn0 10.1.0.10/24══home0 10.1.0.1/24── ha ──tr0 192.0.2.1/24══mn0 192.0.2.10,.11,.12/24── mn
       correspondent      home link (HA address)   transit                 mobile node, co-located CoAs

The mobile node decapsulates itself with a raw ``IPPROTO_IPIP`` socket (:class:`MobileNode`): it
records what arrives through the tunnel, answers ICMP echo through the reverse tunnel, and can send
reverse-tunnelled packets from any outer source (to test the RFC 3024 check).  A packet socket on
``mn0`` records the outer headers seen on the transit link.

Run directly (``python tests/dataplane/dataplane_scenario.py ipip``) inside UML; exit status 0 = pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ha.dataplane.base import DataPlane, VirtualRouterPlane
from ha.dataplane.factory import create_backend
from ha.dataplane.intents import (
    Encapsulation,
    EnsureTunnel,
    GratuitousArp,
    ProxyArp,
    ReleaseTunnel,
    RemoveHomeRoute,
    SetHomeRoute,
)
from ha.dataplane.ownership import MIPHA_TABLE, RTPROT_MIPHA, TUN_IFNAME
from ha.netns import NetnsThread

HA_ADDR = IPv4Address("10.1.0.1")
CN_ADDR = IPv4Address("10.1.0.10")
HOA = IPv4Address("10.1.0.100")
OTHER_HOA = IPv4Address("10.1.0.101")
COA1 = IPv4Address("192.0.2.10")
COA2 = IPv4Address("192.0.2.11")
ROGUE = IPv4Address("192.0.2.12")
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3


def sh(cmd: str) -> str:
    """Run one ``ip``/``ethtool`` command; fail loudly with its stderr."""
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{cmd!r} failed: {proc.stderr.strip()}")
    return proc.stdout


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(
    src: IPv4Address, dst: IPv4Address, proto: int, payload: bytes, *, ttl: int = 64, tos: int = 0
) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), 0, 0x4000, ttl, proto, 0, src.packed, dst.packed
    )
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def udp(src: IPv4Address, dst: IPv4Address, sport: int, dport: int, data: bytes) -> bytes:
    length = 8 + len(data)
    pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, 17, length)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    csum = checksum(pseudo + hdr + data) or 0xFFFF
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, length, csum) + data)


@dataclass
class Topology:
    """Three namespaces with unique names; :meth:`destroy` removes them whatever happened."""

    tag: str = field(default_factory=lambda: f"{os.getpid():x}{uuid.uuid4().hex[:6]}")

    @property
    def cn(self) -> str:
        return f"mt-cn-{self.tag}"

    @property
    def ha(self) -> str:
        return f"mt-ha-{self.tag}"

    @property
    def mn(self) -> str:
        return f"mt-mn-{self.tag}"

    def create(self) -> None:
        for ns in (self.cn, self.ha, self.mn):
            sh(f"ip netns add {ns}")
            sh(f"ip -n {ns} link set lo up")
        sh(f"ip -n {self.cn} link add cn0 type veth peer name home0 netns {self.ha}")
        sh(f"ip -n {self.ha} link add tr0 type veth peer name mn0 netns {self.mn}")
        for ns, dev, addr in (
            (self.cn, "cn0", f"{CN_ADDR}/24"),
            (self.ha, "home0", f"{HA_ADDR}/24"),
            (self.ha, "tr0", "192.0.2.1/24"),
            (self.mn, "mn0", f"{COA1}/24"),
        ):
            sh(f"ip -n {ns} addr add {addr} dev {dev}")
            sh(f"ip netns exec {ns} ethtool -K {dev} tx off tso off gso off")
            sh(f"ip -n {ns} link set {dev} up")
        for extra in (COA2, ROGUE):
            sh(f"ip -n {self.mn} addr add {extra}/24 dev mn0")
        sh(f"ip -n {self.cn} route add default via {HA_ADDR}")
        sh(f"ip -n {self.mn} route add 10.1.0.0/24 via 192.0.2.1")

    def destroy(self) -> None:
        for ns in (self.cn, self.ha, self.mn):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    @classmethod
    @contextlib.contextmanager
    def built(cls) -> Iterator[Topology]:
        """A topology created now and destroyed on the way out, also when creating it failed halfway."""
        topo = cls()
        try:
            topo.create()
            yield topo
        finally:
            topo.destroy()


class Recorder:
    """A background thread reading one socket and keeping every datagram; ``on_packet`` may answer."""

    def __init__(self, sock: socket.socket, on_packet: Callable[[bytes], None] | None = None) -> None:
        self.sock = sock
        self.sock.settimeout(0.05)
        self.packets: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._on_packet = on_packet
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            with self._lock:
                self.packets.append(data)
            if self._on_packet is not None:
                self._on_packet(data)

    def clear(self) -> None:
        with self._lock:
            self.packets.clear()

    def snapshot(self) -> list[bytes]:
        with self._lock:
            return list(self.packets)

    async def wait_for(self, predicate: Callable[[bytes], bool], timeout: float = 10.0) -> bytes | None:
        """The first recorded packet matching ``predicate`` within ``timeout`` (polls; never asserts time)."""
        deadline = time.monotonic() + timeout
        while True:
            for pkt in self.snapshot():
                if predicate(pkt):
                    return pkt
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class MobileNode:
    """Co-located-CoA mobile node: decapsulates with a raw socket, answers echo via the reverse tunnel."""

    def __init__(self, ns: NetnsThread) -> None:
        self.ns = ns
        self.coa = COA1
        self.tx: dict[IPv4Address, socket.socket] = {}
        for addr in (COA1, COA2, ROGUE):
            sock = ns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)
            sock.bind((str(addr), 0))
            self.tx[addr] = sock
        self.rx = Recorder(ns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP), self._answer)

    def inner(self) -> Iterator[tuple[bytes, bytes]]:
        """(outer header, inner packet) pairs received so far."""
        for pkt in self.rx.snapshot():
            ihl = (pkt[0] & 0x0F) * 4
            yield pkt[:ihl], pkt[ihl:]

    def _answer(self, pkt: bytes) -> None:
        ihl = (pkt[0] & 0x0F) * 4
        inner = pkt[ihl:]
        iihl = (inner[0] & 0x0F) * 4
        if inner[9] == 1 and inner[iihl] == 8 and inner[16:20] == HOA.packed:  # echo request to the HoA
            echo = bytearray(inner[iihl:])
            echo[0] = 0
            echo[2:4] = b"\x00\x00"
            echo[2:4] = struct.pack("!H", checksum(bytes(echo)))
            reply = ipv4(HOA, IPv4Address(inner[12:16]), 1, bytes(echo))
            self.send_reverse(reply, outer_source=self.coa)

    def send_reverse(self, inner: bytes, *, outer_source: IPv4Address) -> None:
        self.tx[outer_source].sendto(inner, (str(HA_ADDR), 0))

    def close(self) -> None:
        self.rx.close()
        for sock in self.tx.values():
            sock.close()


def is_arp(
    pkt: bytes, *, op: int | None = None, spa: IPv4Address | None = None, tpa: IPv4Address | None = None
) -> bool:
    if len(pkt) < 42 or pkt[12:14] != b"\x08\x06":
        return False
    arp_op = struct.unpack_from("!H", pkt, 20)[0]
    return (
        (op is None or arp_op == op)
        and (spa is None or pkt[28:32] == spa.packed)
        and (tpa is None or pkt[38:42] == tpa.packed)
    )


def arp_request(src_mac: bytes, target: IPv4Address) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src_mac, CN_ADDR.packed, b"\0" * 6, target.packed)
    return b"\xff" * 6 + src_mac + b"\x08\x06" + arp


def is_outer(pkt: bytes, *, src: IPv4Address, dst: IPv4Address, proto: int = 4) -> bool:
    """An Ethernet frame carrying IPv4 with this outer source/destination and protocol."""
    return (
        len(pkt) >= 34
        and pkt[12:14] == b"\x08\x00"
        and pkt[23] == proto
        and pkt[26:30] == src.packed
        and pkt[30:34] == dst.packed
    )


def kernel_objects(ha_ns: str) -> dict[str, list[str]]:
    """What mipha may have left in the HA namespace, by kind (empty lists = nothing)."""
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in sh(f"ip -n {ha_ns} -o link").splitlines()
        if line.split(":")[1].strip().startswith(("mip-", "mig-")) and TUN_IFNAME not in line
    ]
    return {
        "links": links,
        "routes": sh(f"ip -n {ha_ns} route show table {MIPHA_TABLE} proto {RTPROT_MIPHA}").splitlines(),
        "rules": [r for r in sh(f"ip -n {ha_ns} rule").splitlines() if f"proto {RTPROT_MIPHA}" in r],
        "proxies": [
            p for p in sh(f"ip -n {ha_ns} neigh show proxy").splitlines() if f"proto {RTPROT_MIPHA}" in p
        ],
    }


class Failure(AssertionError):
    pass


def check(cond: object, what: str) -> None:
    if not cond:
        raise Failure(what)


async def run_scenario(
    kind: str, topo: Topology, log: Callable[[str], None] = print, *, proxy_arp_mode: str = "entry"
) -> None:
    """The whole scenario against backend ``kind``; raises :class:`Failure` on the first broken promise."""
    cn, ha_ns, mn_ns = NetnsThread(topo.cn), NetnsThread(topo.ha), NetnsThread(topo.mn)
    vr = VirtualRouterPlane(
        name="t",
        netns=topo.ha,
        ha_address=HA_ADDR,
        home_interface="home0",
        garp_count=2,
        garp_interval=0.05,
        proxy_arp_mode=proxy_arp_mode,
    )
    plane: DataPlane = create_backend(kind, vr)
    check(plane.name == kind, f"factory built {plane.name}, wanted {kind}")
    closers: list[Callable[[], None]] = []
    try:
        await plane.start()
        cn_arp = cn.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        cn_arp.bind(("cn0", ETH_P_ARP))
        cn_mac = cn_arp.getsockname()[4]
        arp_seen = Recorder(cn_arp)
        closers.append(arp_seen.close)
        wire_sock = mn_ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        wire_sock.bind(("mn0", ETH_P_IP))
        wire = Recorder(wire_sock)
        closers.append(wire.close)
        mn = MobileNode(mn_ns)
        closers.append(mn.close)
        cn_udp = cn.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cn_udp.bind((str(CN_ADDR), 7000))
        cn_rx = Recorder(cn_udp)
        closers.append(cn_rx.close)
        cn_icmp = cn.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        icmp_rx = Recorder(cn_icmp)
        closers.append(icmp_rx.close)
        ha_mac = bytes.fromhex(
            sh(f"ip -n {topo.ha} -o link show home0").split("link/ether ")[1].split()[0].replace(":", "")
        )

        async def arp_answer(timeout: float = 1.0) -> bytes | None:
            arp_seen.clear()
            cn_arp.send(arp_request(cn_mac, HOA))
            reply = await arp_seen.wait_for(lambda p: is_arp(p, op=2, spa=HOA), timeout=timeout)
            return None if reply is None else reply[22:28]

        def send_udp(payload: bytes) -> None:
            cn_udp.sendto(payload, (str(HOA), 7777))

        def mn_got(payload: bytes) -> Callable[[bytes], bool]:
            return lambda pkt: pkt.endswith(payload) and pkt[((pkt[0] & 15) * 4) + 16 :][:4] == HOA.packed

        stats = getattr(plane, "stats", None)  # tun backend: userspace drop counters

        # 0. Nothing is intercepted before a binding exists.
        check(await arp_answer() is None, "proxy ARP answered before any binding")
        log("no interception before registration: ok")

        # 1. First binding: tunnel, host route, proxy ARP, gratuitous ARP with the HA's MAC.
        await plane.apply(
            [EnsureTunnel(COA1), SetHomeRoute(HOA, (COA1,)), ProxyArp(HOA, True), GratuitousArp(HOA)]
        )
        garp = await arp_seen.wait_for(lambda p: is_arp(p, spa=HOA, tpa=HOA))
        check(
            garp is not None and garp[22:28] == ha_mac, "no gratuitous ARP with the HA's MAC on the home link"
        )
        await plane.wait_garps()  # type: ignore[attr-defined]
        check(
            await arp_answer(10.0) == ha_mac,
            "proxy ARP did not answer for the home address with the HA's MAC",
        )
        log("gratuitous ARP + proxy ARP: ok")

        # 2. Ping through the tunnel (echo answered by the MN via the reverse tunnel).
        echo = struct.pack("!BBHHH", 8, 0, 0, 0x4D49, 1) + b"mipha-ping"
        echo = echo[:2] + struct.pack("!H", checksum(echo)) + echo[4:]
        cn_icmp.sendto(echo, (str(HOA), 0))
        reply = await icmp_rx.wait_for(
            lambda p: p[12:16] == HOA.packed and p[20] == 0 and p.endswith(b"mipha-ping")
        )
        check(reply is not None, "ping to the home address got no echo reply through the tunnels")
        check(
            await wire.wait_for(lambda p: is_outer(p, src=HA_ADDR, dst=COA1)) is not None,
            "no IP-in-IP (proto 4) from the HA address to CoA1 on the transit link",
        )
        log("ping through the tunnel and back through the reverse tunnel: ok")

        # 3. UDP forward: arrives inside IP-in-IP, outer HA -> CoA1, inner TTL decremented once.
        wire.clear()
        send_udp(b"udp-1")
        got = await mn.rx.wait_for(mn_got(b"udp-1"))
        check(got is not None, "UDP to the home address did not reach the mobile node through the tunnel")
        assert got is not None
        check(got[12:16] == HA_ADDR.packed and got[16:20] == COA1.packed, "wrong outer addresses")
        inner = got[(got[0] & 15) * 4 :]
        check(inner[8] == 63, f"inner TTL {inner[8]}, expected 64 - 1")
        log("UDP through IP-in-IP: ok")

        # 3b. RFC 2003 rules: DF over the tunnel MTU -> frag-needed with MTU - 20; TTL 1 -> time exceeded.
        big = cn.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closers.append(big.close)
        big.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
        big.sendto(b"x" * 1472, (str(HOA), 7777))  # 1500 bytes with DF
        frag = await icmp_rx.wait_for(lambda p: p[20] == 3 and p[21] == 4)
        check(frag is not None, "no ICMP fragmentation-needed for a DF packet over the tunnel MTU")
        assert frag is not None
        check(struct.unpack_from("!H", frag, 26)[0] == 1480, "frag-needed does not carry MTU - 20 = 1480")
        check(frag[12:16] == HA_ADDR.packed, "frag-needed not sent by the HA")
        short = cn.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closers.append(short.close)
        short.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 1)
        short.sendto(b"ttl-1", (str(HOA), 7777))
        check(await icmp_rx.wait_for(lambda p: p[20] == 11) is not None, "TTL 1 did not give time exceeded")
        check(
            await mn.rx.wait_for(mn_got(b"ttl-1"), timeout=0.3) is None, "a TTL-expired packet was tunnelled"
        )
        if stats is not None:  # the userspace encapsulator's own loop rule (inner source = the CoA)
            from_coa = mn_ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
            closers.append(from_coa.close)
            from_coa.bind((str(COA1), 0))
            from_coa.sendto(b"loop", (str(HOA), 7777))
            deadline = time.monotonic() + 3
            while stats.counts["loop"] == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            check(stats.counts["loop"] == 1, "a packet from the CoA to its own home address was not dropped")
            check(await mn.rx.wait_for(mn_got(b"loop"), timeout=0.2) is None, "looping packet was tunnelled")
        log("frag-needed, TTL expiry, loop rule: ok")

        # 4. Reverse tunnel: accepted from CoA1; dropped from a rogue outer source or a foreign inner source.
        cn_rx.clear()
        mn.send_reverse(udp(HOA, CN_ADDR, 7777, 7000, b"rev-ok"), outer_source=COA1)
        check(
            await cn_rx.wait_for(lambda p: p == b"rev-ok") is not None, "reverse-tunnelled UDP not delivered"
        )
        mn.send_reverse(udp(HOA, CN_ADDR, 7777, 7000, b"rev-spoof"), outer_source=ROGUE)
        mn.send_reverse(udp(OTHER_HOA, CN_ADDR, 7777, 7000, b"rev-inner-spoof"), outer_source=COA1)
        mn.send_reverse(udp(HOA, CN_ADDR, 7777, 7000, b"rev-after"), outer_source=COA1)
        check(await cn_rx.wait_for(lambda p: p == b"rev-after") is not None, "reverse tunnel stopped working")
        check(b"rev-spoof" not in cn_rx.snapshot(), "a spoofed outer source was decapsulated")
        check(b"rev-inner-spoof" not in cn_rx.snapshot(), "an unregistered inner source was decapsulated")
        if stats is not None:
            check(stats.counts["reverse-spoofed"] >= 2, f"spoofed packets not counted: {dict(stats.counts)}")
        log("reverse tunnel + spoofed source dropped: ok")

        # 5. Handover to CoA2: traffic moves, the old tunnel goes, CoA1 can no longer reverse-tunnel.
        await plane.apply([EnsureTunnel(COA2), SetHomeRoute(HOA, (COA2,)), ReleaseTunnel(COA1)])
        mn.coa = COA2
        wire.clear()
        send_udp(b"udp-2")
        check(
            await wire.wait_for(lambda p: is_outer(p, src=HA_ADDR, dst=COA2) and p.endswith(b"udp-2"))
            is not None,
            "after handover traffic does not go to CoA2",
        )
        check(
            not any(is_outer(p, src=HA_ADDR, dst=COA1) for p in wire.snapshot()), "traffic still sent to CoA1"
        )
        tunnels = plane.tunnels()
        check([t.care_of_address for t in tunnels] == [COA2], f"tunnels after handover: {tunnels}")
        check(tunnels[0].binding_count == 1 and tunnels[0].out_packets >= 1, f"tunnel counters: {tunnels}")
        cn_rx.clear()
        mn.send_reverse(udp(HOA, CN_ADDR, 7777, 7000, b"rev-old-coa"), outer_source=COA1)
        mn.send_reverse(udp(HOA, CN_ADDR, 7777, 7000, b"rev-new-coa"), outer_source=COA2)
        check(
            await cn_rx.wait_for(lambda p: p == b"rev-new-coa") is not None, "reverse tunnel from CoA2 failed"
        )
        check(b"rev-old-coa" not in cn_rx.snapshot(), "old CoA still accepted after handover")
        if kind == "tun":  # reverse tunnelling refused for the binding (T bit clear): nothing decapsulated
            await plane.apply([SetHomeRoute(HOA, (COA2,), reverse_tunnel=False)])
            assert stats is not None
            dropped = stats.counts["reverse-spoofed"]
            mn.send_reverse(udp(HOA, CN_ADDR, 7777, 7000, b"rev-no-t"), outer_source=COA2)
            deadline = time.monotonic() + 3
            while stats.counts["reverse-spoofed"] == dropped and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            check(
                stats.counts["reverse-spoofed"] == dropped + 1, "packet without T bit not dropped and counted"
            )
            await plane.apply([SetHomeRoute(HOA, (COA2,), reverse_tunnel=True)])
            mn.send_reverse(udp(HOA, CN_ADDR, 7777, 7000, b"rev-t-again"), outer_source=COA2)
            check(
                await cn_rx.wait_for(lambda p: p == b"rev-t-again") is not None, "reverse tunnel not restored"
            )
            check(b"rev-no-t" not in cn_rx.snapshot(), "reverse-tunnelled packet accepted without the T bit")
        if kind == "ipip":
            check(kernel_objects(topo.ha)["links"] == [f"mip-{int(COA2):08x}"], "ipip devices after handover")
        log("handover: ok")

        # 5b. The binding switches to GRE (the engine sends no SetHomeRoute for that): routes follow.
        await plane.apply(
            [EnsureTunnel(COA2, Encapsulation.GRE), ReleaseTunnel(COA2, Encapsulation.IP_IN_IP)]
        )
        wire.clear()
        send_udp(b"udp-gre")
        gre = await wire.wait_for(
            lambda p: is_outer(p, src=HA_ADDR, dst=COA2, proto=47) and p.endswith(b"udp-gre")
        )
        check(gre is not None, "after the switch to GRE no GRE (proto 47) packet reached CoA2")
        assert gre is not None
        check(gre[34:38] == b"\x00\x00\x08\x00", f"GRE header {gre[34:38].hex()} is not plain IPv4 GRE")
        if kind == "ipip":
            check(
                kernel_objects(topo.ha)["links"] == [f"mig-{int(COA2):08x}"], "gre devices after the switch"
            )
        gre_tx = mn_ns.socket(socket.AF_INET, socket.SOCK_RAW, 47)
        closers.append(gre_tx.close)
        gre_tx.bind((str(COA2), 0))
        cn_rx.clear()
        gre_tx.sendto(b"\x00\x00\x08\x00" + udp(HOA, CN_ADDR, 7777, 7000, b"rev-gre"), (str(HA_ADDR), 0))
        check(
            await cn_rx.wait_for(lambda p: p == b"rev-gre") is not None, "GRE reverse tunnel not decapsulated"
        )
        await plane.apply([EnsureTunnel(COA2), ReleaseTunnel(COA2, Encapsulation.GRE)])
        wire.clear()
        send_udp(b"udp-back")
        check(
            await wire.wait_for(lambda p: is_outer(p, src=HA_ADDR, dst=COA2) and p.endswith(b"udp-back"))
            is not None,
            "switching back to IP-in-IP failed",
        )
        log("encapsulation change IP-in-IP -> GRE -> IP-in-IP: ok")

        # 5c. Simultaneous bindings (S bit): tun copies to every CoA; ipip routes to the first one.
        await plane.apply([EnsureTunnel(COA1), SetHomeRoute(HOA, (COA2, COA1))])
        wire.clear()
        send_udp(b"udp-s")
        check(
            await wire.wait_for(lambda p: is_outer(p, src=HA_ADDR, dst=COA2) and p.endswith(b"udp-s"))
            is not None,
            "simultaneous bindings: nothing to the first CoA",
        )
        copy = await wire.wait_for(
            lambda p: is_outer(p, src=HA_ADDR, dst=COA1) and p.endswith(b"udp-s"),
            timeout=3 if kind == "tun" else 0.3,
        )
        check((copy is not None) == (kind == "tun"), "simultaneous bindings: copy to the second CoA")
        await plane.apply([SetHomeRoute(HOA, (COA2,)), ReleaseTunnel(COA1)])
        log("simultaneous bindings: ok")

        # 5d. A narrower path to the CoA: DF packets too big for it get frag-needed with its MTU - 20.
        sh(f"ip -n {topo.ha} link set tr0 mtu 1400")
        icmp_rx.clear()
        big.sendto(b"y" * 1400, (str(HOA), 7777))  # 1428 bytes with DF: fits 1480, not 1400 - 20
        frag = await icmp_rx.wait_for(lambda p: p[20] == 3 and p[21] == 4)
        check(frag is not None, "no frag-needed for a DF packet over the narrower path MTU")
        assert frag is not None
        mtu = struct.unpack_from("!H", frag, 26)[0]
        check(mtu == 1380, f"frag-needed carries {mtu}, not path MTU 1400 - 20")
        sh(f"ip -n {topo.ha} link set tr0 mtu 1500")

        # 5e. A router inside the tunnel reports fragmentation-needed (MTU 1300) about an outer packet.
        quoted = ipv4(HA_ADDR, COA2, 4, udp(CN_ADDR, HOA, 7000, 7777, b"q" * 8))[:28]
        report = struct.pack("!BBHHH", 3, 4, 0, 0, 1300) + quoted
        report = report[:2] + struct.pack("!H", checksum(report)) + report[4:]
        router = mn_ns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        closers.append(router.close)
        router.bind((str(COA2), 0))
        router.sendto(report, (str(HA_ADDR), 0))
        icmp_rx.clear()
        frag = None
        for _ in range(100):  # until the HA has processed the report (no fixed delay to guess)
            big.sendto(b"z" * 1300, (str(HOA), 7777))  # 1328 bytes with DF: over 1300 - 20
            frag = await icmp_rx.wait_for(lambda p: p[20] == 3 and p[21] == 4, timeout=0.1)
            if frag is not None:
                break
        check(frag is not None, "no frag-needed after an ICMP from inside the tunnel lowered the path MTU")
        assert frag is not None
        mtu = struct.unpack_from("!H", frag, 26)[0]
        check(mtu == 1280, f"frag-needed carries {mtu}, not the reported 1300 - 20")
        log("path MTU towards the CoA: ok")

        if kind == "tun":  # 5f. RFC 2003 §4: other ICMP errors from inside the tunnel reach the sender

            def report_from_tunnel(icmp_type: int, code: int, sport: int) -> None:
                quoted = ipv4(HA_ADDR, COA2, 4, udp(CN_ADDR, HOA, sport, 7777, b"inner"))[:56]
                msg = struct.pack("!BBHI", icmp_type, code, 0, 0) + quoted
                router.sendto(msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:], (str(HA_ADDR), 0))

            def quoting(sport: int) -> Callable[[bytes], bool]:
                # an ICMP from the HA to the CN quoting the CN's own datagram (to the home address)
                return lambda p: (
                    p[12:16] == HA_ADDR.packed
                    and p[44:48] == HOA.packed
                    and p[48:50] == struct.pack("!H", sport)
                )

            icmp_rx.clear()
            report_from_tunnel(3, 3, 7101)  # port unreachable: never relayed
            report_from_tunnel(3, 1, 7102)
            report_from_tunnel(11, 0, 7103)  # time exceeded -> host unreachable
            host = await icmp_rx.wait_for(quoting(7102))
            check(host is not None and host[20:22] == b"\x03\x01", "host unreachable not relayed as 3/1")
            ttl = await icmp_rx.wait_for(quoting(7103))
            check(
                ttl is not None and ttl[20:22] == b"\x03\x01", "time exceeded not relayed as host unreachable"
            )
            check(not any(quoting(7101)(p) for p in icmp_rx.snapshot()), "port unreachable was relayed")
            log("ICMP errors from inside the tunnel relayed: ok")

        # 6. Deregistration: interception stops, every per-binding kernel object is gone.
        await plane.apply([RemoveHomeRoute(HOA), ProxyArp(HOA, False), ReleaseTunnel(COA2)])
        objs = kernel_objects(topo.ha)
        check(objs["links"] == [] and objs["routes"] == [] and objs["proxies"] == [], f"left over: {objs}")
        check(plane.tunnels() == [], "tunnels remain after deregistration")
        wire.clear()
        send_udp(b"udp-3")
        await asyncio.sleep(0.3)
        check(
            not any(is_outer(p, src=HA_ADDR, dst=COA2) for p in wire.snapshot()),
            "still tunnelling after dereg",
        )
        check(await arp_answer() is None, "proxy ARP still answers after deregistration")
        log("deregistration: ok")
    finally:
        for close in reversed(closers):
            with contextlib.suppress(Exception):
                close()
        await plane.stop(flush=True)
        for t in (cn, ha_ns, mn_ns):
            t.close()
    objs = kernel_objects(topo.ha)
    check(all(not v for v in objs.values()), f"objects left after stop: {objs}")
    check(TUN_IFNAME not in sh(f"ip -n {topo.ha} -o link"), "TUN device left after stop")
    proxy_arp = sh(f"ip netns exec {topo.ha} cat /proc/sys/net/ipv4/conf/home0/proxy_arp").strip()
    check(proxy_arp == "0", "proxy_arp on the home interface not restored")
    log("stop: zero mipha objects left")


def main(argv: list[str]) -> int:
    kind = argv[1] if len(argv) > 1 else "tun"
    with Topology.built() as topo:
        try:
            asyncio.run(run_scenario(kind, topo))
        except Failure as exc:
            print(f"SCENARIO FAILED ({kind}): {exc}", flush=True)
            return 1
    print(f"SCENARIO PASSED ({kind})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
