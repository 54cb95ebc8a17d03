"""AAA figures: first registrations through a real FreeRADIUS, cached renewals, FreeRADIUS's own ceiling.

In a network namespace it creates: FreeRADIUS 3.2 (tests/aaa/raddb plus N generated subscribers,
Framed-Pool + ERX key), `mipha run` configured over NETCONF with `authentication aaa`, and
`mipha mn load` from inside the namespace.  Printed beside each other, same run:

* FreeRADIUS's ceiling: a bare asyncio loop of Access-Requests (mipha's codec, 256 in flight);
* first registrations, each needing an Access-Request (rate, p50/p99);
* renewals of the same, now cached AAA nodes (no RADIUS), beside renewals of as many configured nodes;
* configured nodes' renewals while RADIUS does not answer at all and AAA registrations keep arriving;
* memory per cached AAA subscriber (in-process engine: tracemalloc and RSS, beyond the binding).

    .venv/bin/python bench/aaa.py [--count 5000] [--rate 2500]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "daemon"))
sys.path.insert(0, str(ROOT / "tests" / "aaa"))
sys.path.insert(0, str(ROOT))
from daemon_harness import MIPHA, NS, Daemon, free_port  # noqa: E402
from freeradius import FreeRadius  # noqa: E402

from ha.aaa import radius  # noqa: E402
from ha.transport import open_udp_socket  # noqa: E402

HA = "10.77.255.1"
SECRET = "bench-secret"
KEY = "bench-mn-ha-key-0123456789"


def users(count: int) -> str:
    return "".join(
        f'bench{i}@example.net\tCleartext-Password := "lookup-pass"\n'
        f'\tFramed-Pool = "bench-pool",\n\tERX-Mobile-IP-SPI = 256,\n\tERX-Mobile-IP-Key = "{KEY}"\n\n'
        for i in range(1, count + 1)
    )


def config(netns: str, configured: int) -> str:
    key = ":".join(f"{b:02x}" for b in KEY.encode())
    nodes = "".join(
        f"<mobile-node><name>c{i}</name><home-address>{ipaddress.IPv4Address('10.91.0.1') + i}</home-address>"
        f"<security-association><spi>256</spi><key>{key}</key></security-association></mobile-node>"
        for i in range(configured)
    )
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>bench</name><netns>{netns}</netns>
  <home-agent><address>{HA}</address><max-lifetime>3600</max-lifetime>
    <authentication>local-then-aaa</authentication></home-agent>{nodes}
  <aaa><server><address>127.0.0.1</address><secret>{SECRET}</secret></server>
    <lookup-password>lookup-pass</lookup-password><accounting>false</accounting></aaa>
  <address-pool><name>bench-pool</name><range><start>10.90.0.1</start><end>10.90.255.254</end></range></address-pool>
</virtual-router></virtual-routers></config>"""


async def radius_ceiling(netns: str, count: int) -> dict:
    """Access-Requests to FreeRADIUS as fast as a bare loop sends them (256 in flight)."""
    sock = open_udp_socket("127.0.0.1", 0, netns)
    loop = asyncio.get_running_loop()
    waiting: dict[int, tuple[asyncio.Future, float]] = {}
    latencies: list[float] = []

    def readable() -> None:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            entry = waiting.pop(data[1], None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(None)
                latencies.append(time.perf_counter() - entry[1])

    loop.add_reader(sock.fileno(), readable)
    free = asyncio.Queue()
    for i in range(256):
        free.put_nowait(i)

    async def one(i: int) -> None:
        ident = await free.get()
        attributes = radius.attribute(radius.Attr.USER_NAME, f"bench{i % count + 1}@example.net".encode())
        data = radius.access_request(
            ident, os.urandom(16), SECRET.encode(), attributes, password=b"lookup-pass"
        )
        future = loop.create_future()
        waiting[ident] = (future, time.perf_counter())
        sock.sendto(data, ("127.0.0.1", 1812))
        try:
            await asyncio.wait_for(future, 2)
        except TimeoutError:
            waiting.pop(ident, None)
        free.put_nowait(ident)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - start
    loop.remove_reader(sock.fileno())
    sock.close()
    latencies.sort()
    return {
        "answers": len(latencies),
        "rate": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2),
    }


def load(
    netns: str, count: int, rate: float, duration: float, *, first: int = 1, static: bool = False
) -> dict:
    return json.loads(_load(netns, count, rate, duration, first=first, static=static).communicate()[0])


def _load(
    netns: str, count: int, rate: float, duration: float, *, first: int, static: bool
) -> subprocess.Popen:
    nodes = ["--home-start", "10.91.0.1"] if static else ["--nai-pattern", "bench{i}@example.net"]
    command = [
        "ip", "netns", "exec", netns, MIPHA, "mn", "--ha", HA, "--key", KEY.encode().hex(), "--spi", "256",
        "--lifetime", "3600", "--timeout", "3", "--retries", "0", "--json", "load", "--count", str(count),
        *nodes, "--first-index", str(first),
        "--coa", "10.88.0.1", "--rate", str(rate), "--duration", str(duration), "--window", "1024",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def memory_per_subscriber(count: int) -> dict:
    """Engine memory of ``count`` AAA subscribers with one binding each, minus the same engine with
    ``count`` configured pool nodes bound: what the AAA cache costs beyond the binding."""
    import gc
    import tracemalloc
    from ipaddress import IPv4Address

    from ha.aaa.config import AaaConfig, AaaServer
    from ha.aaa.profile import AaaProfile
    from ha.engine.aaa import AaaAccepted
    from ha.engine.config import AddressPool, HomeAgentConfig, MobileNode, VirtualRouterConfig
    from ha.engine.home_agent import HomeAgent
    from ha.mn.session import UNSPECIFIED, MobileNodeSession
    from ha.protocol import SecurityAssociation
    from ha.protocol.constants import AuthAlgorithm

    pool = AddressPool("p", ((IPv4Address("10.0.0.1"), IPv4Address("10.3.255.254")),))
    sa = SecurityAssociation(256, KEY.encode())

    def build(aaa: bool) -> tuple[int, int]:
        nodes = [
            MobileNode(f"n{i}", address_pool="p", nai=f"n{i}@x", security_associations=[sa])
            for i in range(0 if aaa else count)
        ]
        config = VirtualRouterConfig(
            "m",
            home_agent=HomeAgentConfig(IPv4Address(HA), authentication="aaa" if aaa else "local"),
            address_pools=[pool],
            mobile_nodes=nodes,
            aaa=AaaConfig(servers=(AaaServer(IPv4Address("127.0.0.1"), b"s"),), cache_size=count + 1),
        )
        sessions = [
            MobileNodeSession(IPv4Address(HA), UNSPECIFIED, IPv4Address("10.88.0.1"), sa, nai=f"n{i}@x")
            for i in range(count)
        ]
        datagrams = [m.build(m.next_identification(time.time())) for m in sessions]
        del sessions
        gc.collect()
        tracemalloc.start()
        rss0 = _rss()
        engine = HomeAgent(config)
        for i, data in enumerate(datagrams):
            engine.handle_datagram(data, source=("10.88.0.1", 434), received_on=IPv4Address(HA), now=1.0,
                                   wallclock=time.time())  # fmt: skip
            if aaa:
                engine.drain_aaa_lookups()
                profile = AaaProfile(f"n{i}@x", 256, KEY.encode(), AuthAlgorithm.HMAC_MD5, None, "p", None,
                                     "erx", "framed-pool")  # fmt: skip
                engine.handle_aaa_answer(f"n{i}@x", AaaAccepted(profile), now=1.0, wallclock=time.time())
            engine.drain_intents()
            engine.drain_events()
        assert engine.binding_count == count, engine.binding_count
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        rss = _rss() - rss0
        tracemalloc.stop()
        del engine, nodes, config
        return traced, rss

    aaa_traced, aaa_rss = build(True)
    local_traced, local_rss = build(False)
    return {
        "subscribers": count,
        "traced_bytes_each": round((aaa_traced - local_traced) / count),
        "rss_bytes_each": round((aaa_rss - local_rss) / count),
        "configured_node_and_binding_traced_bytes_each": round(local_traced / count),
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2500)
    args = parser.parse_args()
    netns = f"mipha-bench-aaa-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    radiusd = daemon = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", netns, "addr", "add", f"{HA}/32", "dev", "lo"], check=True)
        tmp = Path(tempfile.mkdtemp(prefix="mipha-bench-aaa-"))
        radiusd = FreeRadius(tmp / "raddb", secret=SECRET, netns=netns)
        radiusd.append_users(users(args.count))
        radiusd.start()
        ceiling = asyncio.run(radius_ceiling(netns, args.count))
        daemon = Daemon(tmp, free_port())
        daemon.start()
        with daemon.connect() as m:
            m.edit_config(target="running", config=config(netns, args.count))
        n, duration = args.count, args.count / args.rate
        first = load(netns, n, args.rate, duration)
        load(netns, n, 0, 3.0, static=True)  # configured nodes' first registrations (not measured)
        cached = load(netns, n, 0, 3.0)
        configured = load(netns, n, 0, 3.0, static=True)
        radiusd.stop()  # RADIUS silent: new AAA nodes keep arriving, their look-ups time out
        waiting = _load(netns, n, 500, 4.0, first=n + 1, static=False)
        time.sleep(0.5)
        silent = load(netns, n, 0, 3.0, static=True)
        waiting_report = json.loads(waiting.communicate()[0])
        memory = memory_per_subscriber(20000)
        figures = {
            "freeradius_ceiling": ceiling,
            "first_registrations": first,
            "cached_aaa_renewals": cached,
            "configured_renewals": configured,
            "configured_renewals_radius_silent": silent,
            "aaa_registrations_while_silent": waiting_report,
            "memory": memory,
        }
        print(json.dumps(figures, indent=1))
        print(
            f"FreeRADIUS alone (bare loop, 256 in flight): {ceiling['rate']:.0f} Access-Requests/s, "
            f"p99 {ceiling['p99_ms']} ms\n"
            f"first registrations via RADIUS: {first['rate']:.0f}/s offered {args.rate:.0f}/s, "
            f"accepted {first['accepted']}/{first['transactions']}, p50 {first['latency_ms']['p50']} ms, "
            f"p99 {first['latency_ms']['p99']} ms\n"
            f"renewals, unpaced: cached AAA {cached['rate']:.0f}/s vs configured {configured['rate']:.0f}/s "
            f"({cached['rate'] / configured['rate']:.0%})\n"
            f"configured renewals while RADIUS is silent: {silent['rate']:.0f}/s "
            f"({silent['rate'] / configured['rate']:.0%} of normal); meanwhile AAA registrations answered "
            f"{waiting_report['codes']}\n"
            f"memory per cached AAA subscriber beyond the binding: {memory['traced_bytes_each']} B traced, "
            f"{memory['rss_bytes_each']} B RSS"
        )
    finally:
        if daemon is not None:
            daemon.stop()
        if radiusd is not None:
            radiusd.stop()
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


if __name__ == "__main__":
    main()
