"""Data plane figures (issue 4): tun forwarding rate, binding programming rate, resync time.

1. **tun pps, 64-byte packets**, two ways, on the topology of the tests (correspondent — HA — MN).
   A generator process in the correspondent namespace sends 64-byte IPv4/UDP packets to a bound home
   address as fast as it can; the HA's tun backend (this process, one asyncio loop) encapsulates them to
   the CoA.  Figure: packets encapsulated per second (tunnel ``out_packets``), and per CPU-second of
   this process.  Baseline in the same run: the same backend with ``burst=1`` (one packet per wake-up).
   Target: >= 150k pps per core.  Second way, without the generator competing for the 2 cores: the
   reader is paused, ``--drain`` packets queue in the TUN (``txqlen`` raised), then the drain is timed.
2. **New bindings programmed per second** (host route + proxy-ARP entry each, tun backend's
   ``apply``, i.e. the shared batched-netlink path of ipip and tun), for 10k and 100k bindings.
   Baseline in the same run: pyroute2 one call per route and one per proxy entry (10k; 100k would take
   minutes).  Target: >= 20k/s.  Also with ``proxy_arp_mode="interface"`` (no per-address entry).
   Both ways are also run with an RFC 3519 UDP tunnel (``IP_IN_UDP``: the same TUN reader, the packet
   leaves through the UDP 434 socket behind the 4-byte tunnel data header), printed beside the IP-in-IP
   figure of the same run.  Target: >= 100k pps per CPU-second.
3. **Resync of 100k bindings** after a restart: a new backend reconciles against the kernel state left
   by the old one (tun: routes die with the TUN, proxy entries survive) with 10% of the bindings changed.

Proxy-ARP entries live in the kernel's 16-bucket ``pneigh`` hash: each insert/delete scans a chain,
so past ~30k entries the kernel, not mipha, sets the pace; the ``interface`` mode figures show the
rest of the path.

Run as root: ``.venv/bin/python bench/dataplane.py [--seconds S] [--skip-pps]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
import uuid
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "dataplane"))

from dataplane_scenario import COA1, HA_ADDR, HOA, Topology  # noqa: E402
from pyroute2 import IPRoute  # noqa: E402

from ha.dataplane.base import DesiredBinding, VirtualRouterPlane  # noqa: E402
from ha.dataplane.icmp import drop_all_filter as _drop_all_filter  # noqa: E402
from ha.dataplane.intents import Encapsulation, EnsureTunnel, ProxyArp, SetHomeRoute  # noqa: E402
from ha.dataplane.ipip import IpipPlane  # noqa: E402
from ha.dataplane.tun import TunPlane  # noqa: E402
from ha.netns import NetnsThread  # noqa: E402

GENERATOR = r"""
import os, socket, sys, time
sys.path.insert(0, {root!r})
from ha.netns import NetnsThread
ns, dst, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = NetnsThread(ns).socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"m" * 36  # 20 IP + 8 UDP + 36 = 64 bytes
addr = (dst, 9)
send = s.sendto
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(1000):
        try:
            send(payload, addr)
        except OSError:
            pass
    n += 1000
print(n)
"""


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


UDP_PORT = 4500  # the "NAT mapping" of the UDP runs: the CoA itself, this port


async def tunnel_to(plane: TunPlane | IpipPlane, topo: Topology, udp: bool) -> list[socket.socket]:
    """Program one binding (IP-in-IP, or RFC 3519 UDP to COA1:UDP_PORT) and a silent sink at the CoA."""
    mn = NetnsThread(topo.mn)
    try:
        if udp:
            ha = NetnsThread(topo.ha)
            try:
                registration = ha.socket(socket.AF_INET, socket.SOCK_DGRAM)
            finally:
                ha.close()
            registration.bind(("0.0.0.0", 434))
            _drop_all_filter(registration)
            plane.attach_udp_socket(registration)
            sink = mn.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound: no port-unreachable either
            sink.bind((str(COA1), UDP_PORT))
            _drop_all_filter(sink)
            intents = [
                EnsureTunnel(COA1, Encapsulation.IP_IN_UDP),
                SetHomeRoute(HOA, (COA1,), udp_port=UDP_PORT),
                ProxyArp(HOA, True),
            ]
            await plane.apply(intents)
            return [sink, registration]
        sink = mn.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP)  # no protocol-unreachable
        _drop_all_filter(sink)
        await plane.apply([EnsureTunnel(COA1), SetHomeRoute(HOA, (COA1,)), ProxyArp(HOA, True)])
        return [sink]
    finally:
        mn.close()


async def measure_pps(
    topo: Topology, *, burst: int, seconds: float, udp: bool = False, backend: str = "tun"
) -> tuple[float, float, int]:
    """(pps wall, pps per CPU-second of the HA process, packets sent by the generator).

    ``backend="ipip"`` (with ``udp``): the ``ipip`` backend's own UDP-tunnel TUN (``mip-udp``) reader.
    """
    vr = VirtualRouterPlane(name="b", netns=topo.ha, ha_address=HA_ADDR, home_interface="home0")
    plane: TunPlane | IpipPlane = IpipPlane(vr) if backend == "ipip" else TunPlane(vr, burst=burst)
    await plane.start()
    sockets: list[socket.socket] = []
    try:
        sockets = await tunnel_to(plane, topo, udp)
        gen = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            GENERATOR.format(root=str(ROOT)),
            topo.cn,
            str(HOA),
            str(seconds + 1.0),
            stdout=subprocess.PIPE,
        )
        await asyncio.sleep(0.5)  # warm up
        out0, t0, c0 = plane.tunnels()[0].out_packets, time.perf_counter(), cpu()
        await asyncio.sleep(seconds)
        out1, t1, c1 = plane.tunnels()[0].out_packets, time.perf_counter(), cpu()
        stdout, _ = await gen.communicate()
        sent = int(stdout.decode().strip() or 0)
        return (out1 - out0) / (t1 - t0), (out1 - out0) / max(c1 - c0, 1e-9), sent
    finally:
        for sock in sockets:
            sock.close()
        await plane.stop(flush=True)


async def measure_drain(
    topo: Topology, *, burst: int, packets: int, udp: bool = False
) -> tuple[float, float, int]:
    """Queue ``packets`` in the TUN while the reader is paused, then time the drain alone.

    The generator does not compete for the CPU while the HA works, so this is the encapsulator's own
    rate.  Returns (pps wall, pps per HA CPU-second, packets drained).
    """
    vr = VirtualRouterPlane(name="b", netns=topo.ha, ha_address=HA_ADDR, home_interface="home0")
    plane = TunPlane(vr, burst=burst, txqlen=packets + 1000)
    await plane.start()
    sockets: list[socket.socket] = []
    try:
        sockets = await tunnel_to(plane, topo, udp)
        cn = NetnsThread(topo.cn)
        udp = cn.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(b"m" * 36, (str(HOA), 9))  # resolve ARP first
        await asyncio.sleep(0.2)
        plane.pause_reading()
        payload, dest = b"m" * 36, (str(HOA), 9)
        for i in range(packets):
            udp.sendto(payload, dest)
            if i % 2000 == 1999:
                await asyncio.sleep(0.002)  # let softirq move them into the TUN queue
        await asyncio.sleep(0.3)
        udp.close()
        cn.close()
        out0, t0, c0 = plane.tunnels()[0].out_packets, time.perf_counter(), cpu()
        plane.resume_reading()
        last, t_last = out0, t0
        while True:
            await asyncio.sleep(0.005)
            now = plane.tunnels()[0].out_packets
            if now == last:
                if time.perf_counter() - t_last > 0.2:
                    break
                continue
            last, t_last = now, time.perf_counter()
        c1 = cpu()
        drained = last - out0
        return drained / (t_last - t0), drained / max(c1 - c0, 1e-9), drained
    finally:
        for sock in sockets:
            sock.close()
        await plane.stop(flush=True)


def homes(n: int, base: str = "10.64.0.0") -> list[IPv4Address]:
    start = IPv4Address(base)
    return [start + i for i in range(n)]


def binding_intents(addrs: list[IPv4Address], coa: IPv4Address) -> list:
    intents: list = [EnsureTunnel(coa)]
    for h in addrs:
        intents += [SetHomeRoute(h, (coa,)), ProxyArp(h, True)]
    return intents


def fresh_ns() -> str:
    name = f"mb-{os.getpid():x}{uuid.uuid4().hex[:6]}"
    subprocess.run(f"ip netns add {name}", shell=True, check=True)
    cmds = [
        "link set lo up",
        "link add home0 type veth peer name peer0",
        f"addr add {HA_ADDR}/8 dev home0",
        "link set home0 up",
        "link set peer0 up",
    ]
    for cmd in cmds:
        subprocess.run(f"ip -n {name} {cmd}", shell=True, check=True)
    return name


def drop_ns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


async def programming_rate(n: int, *, mode: str = "entry") -> float:
    ns = fresh_ns()
    try:
        vr = VirtualRouterPlane(
            name="b", netns=ns, ha_address=HA_ADDR, home_interface="home0", proxy_arp_mode=mode
        )
        plane = TunPlane(vr)
        await plane.start()
        intents = binding_intents(homes(n), COA1)
        t0 = time.perf_counter()
        await plane.apply(intents)
        elapsed = time.perf_counter() - t0
        await plane.stop(flush=True)
        return n / elapsed
    finally:
        drop_ns(ns)


async def one_by_one_rate(n: int, preload: int) -> float:
    """Registrations as the engine sends them: one ``apply`` per binding, each with its own CoA.

    ``preload`` bindings are programmed first (batched) so the per-registration cost is seen at scale.
    """
    ns = fresh_ns()
    try:
        vr = VirtualRouterPlane(
            name="b", netns=ns, ha_address=HA_ADDR, home_interface="home0", proxy_arp_mode="interface"
        )
        plane = TunPlane(vr)
        await plane.start()
        await plane.apply(binding_intents(homes(preload, "10.32.0.0"), IPv4Address("192.0.2.200")))
        coas = [IPv4Address("172.16.0.0") + i for i in range(n)]
        t0 = time.perf_counter()
        for h, coa in zip(homes(n), coas, strict=True):
            await plane.apply([EnsureTunnel(coa), SetHomeRoute(h, (coa,)), ProxyArp(h, True)])
        elapsed = time.perf_counter() - t0
        await plane.stop(flush=True)
        return n / elapsed
    finally:
        drop_ns(ns)


def pyroute2_baseline(n: int) -> float:
    """One pyroute2 call per route and one per proxy entry: the 'keyword API' way."""
    ns = fresh_ns()
    try:
        with NetnsThread(ns) as t:

            def run() -> float:
                with IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname="home0")[0]
                    t0 = time.perf_counter()
                    for h in homes(n):
                        ipr.route("replace", dst=f"{h}/32", oif=idx, table=434, proto=245)
                        ipr.neigh("add", dst=str(h), ifindex=idx, flags=0x08, state=0x80)
                    return n / (time.perf_counter() - t0)

            return t.call(run)
    finally:
        drop_ns(ns)


async def resync_time(n: int, *, mode: str = "entry") -> tuple[float, int, int]:
    """Restart with ``n`` bindings in the kernel; resync to a desired set with 10% replaced."""
    ns = fresh_ns()
    try:
        vr = VirtualRouterPlane(
            name="b", netns=ns, ha_address=HA_ADDR, home_interface="home0", proxy_arp_mode=mode
        )
        old = TunPlane(vr)
        await old.start()
        await old.apply(binding_intents(homes(n), COA1))
        await old.stop(flush=False)  # like a crash: proxies and the rule stay, routes die with the TUN
        keep = homes(n)[n // 10 :]
        new = homes(n // 10, "10.128.0.0")
        desired = [DesiredBinding(h, (COA1,)) for h in keep + new]
        plane = TunPlane(vr)
        await plane.start()
        t0 = time.perf_counter()
        await plane.resync(desired)
        elapsed = time.perf_counter() - t0
        out = subprocess.run(
            f"ip -n {ns} neigh show proxy | wc -l", shell=True, capture_output=True, text=True
        )
        rts = subprocess.run(
            f"ip -n {ns} route show table 434 proto 245 | wc -l", shell=True, capture_output=True, text=True
        )
        await plane.stop(flush=True)
        return elapsed, int(rts.stdout), int(out.stdout)
    finally:
        drop_ns(ns)


async def udp_figures(args: argparse.Namespace) -> None:
    """RFC 3519 IP-in-UDP beside IP-in-IP, same run, burst=256, both ways (generator and drain)."""
    results: dict[tuple[str, bool], tuple[float, float]] = {}
    for udp in (False, True):
        for way in ("generator", "drain"):
            topo = Topology()
            topo.create()
            try:
                if way == "generator":
                    pps, per_cpu, _ = await measure_pps(topo, burst=256, seconds=args.seconds, udp=udp)
                else:
                    pps, per_cpu, _ = await measure_drain(topo, burst=256, packets=args.drain, udp=udp)
            finally:
                topo.destroy()
            results[(way, udp)] = (pps, per_cpu)
    topo = Topology()
    topo.create()
    try:  # the ipip backend carries UDP tunnels through its own TUN reader (mip-udp)
        mip_udp = await measure_pps(topo, burst=256, seconds=args.seconds, udp=True, backend="ipip")
    finally:
        topo.destroy()
    for way in ("generator", "drain"):
        (ipip_pps, ipip_cpu), (udp_pps, udp_cpu) = results[(way, False)], results[(way, True)]
        print(
            f"tun 64B {way}: IP-in-UDP (RFC 3519) {udp_pps:,.0f} pps wall, {udp_cpu:,.0f} pps per HA "
            f"CPU-second | IP-in-IP {ipip_pps:,.0f} pps wall, {ipip_cpu:,.0f} per CPU-second | "
            f"ratio {udp_cpu / ipip_cpu:.2f}; target >= 100k per CPU-second"
        )
    ipip_pps, ipip_cpu = results[("generator", False)]
    print(
        f"ipip backend's mip-udp 64B generator: IP-in-UDP {mip_udp[0]:,.0f} pps wall, {mip_udp[1]:,.0f} pps "
        f"per HA CPU-second | tun IP-in-IP {ipip_cpu:,.0f} per CPU-second | ratio {mip_udp[1] / ipip_cpu:.2f}"
    )


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="pps measuring window")
    ap.add_argument("--skip-pps", action="store_true")
    ap.add_argument("--pps-only", action="store_true")
    ap.add_argument("--udp-only", action="store_true", help="only the RFC 3519 figures beside IP-in-IP")
    ap.add_argument("--drain", type=int, default=100_000, help="packets queued for the drain measurement")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (namespaces)", file=sys.stderr)
        return 2
    print(f"# mipha data plane bench — {os.cpu_count()} CPUs, kernel {os.uname().release}")
    if not args.skip_pps:
        await udp_figures(args)
    if args.udp_only:
        return 0
    if not args.skip_pps:
        for burst, label in ((1, "baseline burst=1"), (256, "burst=256")):
            topo = Topology()
            topo.create()
            try:
                pps, per_cpu, sent = await measure_pps(topo, burst=burst, seconds=args.seconds)
            finally:
                topo.destroy()
            print(
                f"tun 64B encapsulation [{label}]: {pps:,.0f} pps wall, {per_cpu:,.0f} pps per HA CPU-second "
                f"(generator sent {sent / (args.seconds + 1):,.0f} pps)"
            )
            if burst == 1:
                base = per_cpu
        print(f"tun pps ratio burst/baseline (per CPU-second): {per_cpu / base:.2f}x; target 150k per core")
        for burst, label in ((1, "baseline burst=1"), (256, "burst=256")):
            topo = Topology()
            topo.create()
            try:
                pps, per_cpu, drained = await measure_drain(topo, burst=burst, packets=args.drain)
            finally:
                topo.destroy()
            print(
                f"tun 64B drain of a queued backlog [{label}]: {pps:,.0f} pps wall, "
                f"{per_cpu:,.0f} pps per HA CPU-second ({drained:,} packets)"
            )
            if burst == 1:
                base = pps
        print(f"tun drain ratio burst/baseline (wall): {pps / base:.2f}x; target 150k per core")
    if args.pps_only:
        return 0
    base10k = pyroute2_baseline(10_000)
    print(f"bindings/s baseline pyroute2 one call per route + one per proxy (10k): {base10k:,.0f}")
    for n in (10_000, 100_000):
        rate = await programming_rate(n)
        print(
            f"bindings/s batched, route + proxy entry ({n // 1000}k): {rate:,.0f}"
            f"  ({rate / base10k:.1f}x baseline)"
        )
    for n in (10_000, 100_000):
        rate = await programming_rate(n, mode="interface")
        print(
            f"bindings/s batched, route only, proxy_arp_mode=interface ({n // 1000}k): {rate:,.0f}  "
            f"({rate / base10k:.1f}x baseline)"
        )
    for preload in (0, 100_000):
        rate = await one_by_one_rate(2_000, preload)
        print(
            f"registrations/s, one apply() each, distinct CoAs, {preload // 1000}k bindings already"
            f" programmed (interface mode): {rate:,.0f}"
        )
    for mode in ("entry", "interface"):
        elapsed, routes, proxies = await resync_time(100_000, mode=mode)
        print(
            f"resync 100k after restart (10% replaced), proxy_arp_mode={mode}: {elapsed:.2f}s"
            f" -> {routes} routes, {proxies} proxy entries"
        )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
