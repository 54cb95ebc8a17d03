"""Registration benchmarks of the home-agent engine, each with a baseline measured in the same run.

    .venv/bin/python bench/registration.py            # everything (about 3-4 minutes on 2 cores)
    .venv/bin/python bench/registration.py --quick    # smaller numbers, for a smoke run
    .venv/bin/python bench/registration.py --in-process   # section 1 only (about 15 s)

1. In-process decisions/s with HMAC-MD5 (``HomeAgent.handle_datagram`` on prepared datagrams, CPU
   time, median of several fresh engines): first registrations and renewals; baseline: one bare
   ``hmac.digest`` of the same bytes.  (The engine computes two authenticators per decision, the
   request's and the reply's, from precomputed HMAC pads; ``bench/registration_protocol.py`` has the
   protocol path alone against two bare HMACs.)
2. End to end over UDP loopback: the home agent (engine + ``ha.transport``) in one process, ``mipha mn
   load`` in another; baseline: a bare Python UDP echo loop (recvfrom / sendto, reshaping the request
   into a reply) driven by the same ``mipha mn load``.  Rates, p50/p99 latency and the ratio.
3. Memory per binding: RSS growth of a fresh process registering N bindings (default 1,000,000), and
   ``tracemalloc`` growth at 100,000 bindings (Python-level objects, no allocator slack).
4. Expiry lateness: bindings with 3-5 s lifetimes expire through the transport's ``loop.call_at``
   timer; how late each removal happened relative to its due time.

``--metrics`` runs only section 5: the UDP load of section 2 against the home agent with and
without the Prometheus endpoint (mipha/metrics.py) scraped every second, alternating, three runs
each: rates, timeouts (= lost requests) and scrape times.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hmac
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import tracemalloc
from ipaddress import IPv4Address

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ha.engine.config import HomeAgentConfig, MobileNode, VirtualRouterConfig  # noqa: E402
from ha.engine.events import BindingRemoved  # noqa: E402
from ha.engine.home_agent import HomeAgent  # noqa: E402
from ha.protocol import (  # noqa: E402
    ExtensionType,
    MobileHomeAuth,
    RegistrationRequest,
    RequestFlags,
    SecurityAssociation,
    UdpTunnelRequest,
    push_registration_request,
)
from ha.protocol.replay import ntp_timestamp  # noqa: E402
from ha.transport import HomeAgentTransport, open_udp_socket  # noqa: E402

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
SA = SecurityAssociation(256, KEY)
HA = IPv4Address("127.0.0.1")
BASE = IPv4Address("10.0.0.0")
COA = IPv4Address("203.0.113.5")
_IDENT = struct.Struct("!Q")
_ADDR = struct.Struct("!I")


def vr_config(count: int) -> VirtualRouterConfig:
    nodes = [MobileNode(f"mn{i}", home_address=BASE + i, security_associations=[SA]) for i in range(count)]
    return VirtualRouterConfig(
        "default", home_agent=HomeAgentConfig(address=HA, max_lifetime=0xFFFF), mobile_nodes=nodes
    )


class RequestFactory:
    """Signed requests for node i: one template from the protocol codec, re-signed per request."""

    def __init__(self, lifetime: int = 600, *, udp_tunnel: bool = False) -> None:
        extensions = (UdpTunnelRequest(), MobileHomeAuth(256)) if udp_tunnel else (MobileHomeAuth(256),)
        request = RegistrationRequest(RequestFlags.NONE, lifetime, BASE, HA, COA, 0, extensions)
        self.template = bytearray(push_registration_request(request, sign={ExtensionType.MN_HA_AUTH: SA}))
        self.covered = len(self.template) - 16
        self.counter = 0

    def build(self, index: int, wallclock: float, lifetime: int | None = None) -> bytes:
        buffer = self.template
        self.counter += 1
        _ADDR.pack_into(buffer, 4, int(BASE) + index)
        if lifetime is not None:
            struct.pack_into("!H", buffer, 2, lifetime)
        _IDENT.pack_into(buffer, 16, (ntp_timestamp(wallclock) & ~0xFFFFF) | (self.counter & 0xFFFFF))
        with memoryview(buffer) as view:
            signature = SA.authenticator(view[: self.covered])
        buffer[self.covered :] = signature
        return bytes(buffer)


# --- 1. in-process decisions -----------------------------------------------------------------------


def bench_in_process(
    nodes: int, renewal_rounds: int, repeat: int, *, udp_tunnel: bool = False
) -> dict[str, float]:
    """Median decisions per CPU second over ``repeat`` fresh engines (CPU time: the box is shared).

    Each engine takes one batch of first registrations (``nodes`` mobile nodes, each creating a
    binding with its intents and events) and then ``renewal_rounds`` batches of renewals (the same
    nodes, newer timestamps).  Every request must be accepted, or no figure is printed.

    ``udp_tunnel``: every request carries an RFC 3519 UDP Tunnel Request and comes from a NAT (a source
    address other than its care-of address), so every acceptance is a UDP tunnel with a Tunnel Reply.
    """
    factory = RequestFactory(udp_tunnel=udp_tunnel)
    wall = time.time()
    batches = [[factory.build(i, wall + r * 0.001) for i in range(nodes)] for r in range(1 + renewal_rounds)]
    source = ("198.51.100.99", 4500) if udp_tunnel else ("203.0.113.5", 434)
    rates: dict[str, list[float]] = {"first registrations": [], "renewals": []}
    for _ in range(repeat):
        engine = HomeAgent(vr_config(nodes))
        handle = engine.handle_datagram
        for index, batch in enumerate(batches):
            gc.collect()  # set-up garbage (the configuration, the previous engine) is not the engine's work
            started = time.process_time()
            for data in batch:
                handle(data, source=source, received_on=HA, now=100.0, wallclock=wall)
            engine.drain_intents()
            while engine.next_event() is not None:
                pass
            rate = len(batch) / (time.process_time() - started)
            rates["first registrations" if index == 0 else "renewals"].append(rate)
        assert engine.statistics.accepted == nodes * len(batches), engine.statistics.as_dict()
        assert engine.statistics.udp_tunnel_accepted == (nodes * len(batches) if udp_tunnel else 0)
        assert engine.statistics.replies_sent == nodes * len(batches)
    results = {label: statistics.median(values) for label, values in rates.items()}
    flat = [d for batch in batches for d in batch]
    hmac_rates = []
    for _ in range(repeat):
        started = time.process_time()
        for data in flat:
            hmac.digest(KEY, data[:-16], "md5")
        hmac_rates.append(len(flat) / (time.process_time() - started))
    results["bare hmac.digest"] = statistics.median(hmac_rates)
    return results


# --- 2. end to end over UDP ------------------------------------------------------------------------


def serve(nodes: int, metrics: bool = False) -> None:
    """Child process: a home agent on 127.0.0.1:<ephemeral>; prints the port, runs until SIGTERM.
    With `metrics`, also the Prometheus endpoint (its port printed after the UDP port)."""
    engine = HomeAgent(vr_config(nodes))
    sock = open_udp_socket("127.0.0.1", 0)

    async def main() -> None:
        transport = HomeAgentTransport(engine, sock, on_output=engine.drain_intents)
        transport.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        endpoint = await _metrics_endpoint(engine) if metrics else None
        print(sock.getsockname()[1], endpoint.port if endpoint else "", flush=True)
        await stop.wait()
        transport.close()
        print(json.dumps(engine.statistics.as_dict() | {"errors": transport.errors}, default=str), flush=True)

    asyncio.run(main())


async def _metrics_endpoint(engine: HomeAgent):
    """mipha/metrics.py's endpoint over this one engine (the daemon's collector, a one-router view)."""
    from types import SimpleNamespace

    from mipha.metrics import Latency
    from mipha.metrics import serve as serve_metrics

    router = SimpleNamespace(name="bench", engine=engine, plane_errors=0, tunnels=list)
    view = SimpleNamespace(
        routers={"bench": router},
        journal_latency=Latency(),
        commit_latency=Latency(),
        server=None,
        metrics_port=0,
    )
    view.runner = await serve_metrics(view, "127.0.0.1", 0)
    view.port = view.metrics_port
    return view


def echo() -> None:
    """Child process: the bare Python UDP echo loop (request reshaped into a reply layout)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, peer = recvfrom(2048)
        sendto(b"\x03" + data[1:12] + data[16:], peer)


def _spawn(mode: str, *extra: str) -> tuple[subprocess.Popen[str], int]:
    child = subprocess.Popen(
        [sys.executable, __file__, mode, *extra], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    assert child.stdout is not None
    first = child.stdout.readline().split()
    child.metrics_port = int(first[1]) if len(first) > 1 else None  # type: ignore[attr-defined]
    return child, int(first[0])


def _stop(child: subprocess.Popen[str]) -> None:
    """End a child we started: SIGTERM, then SIGKILL if it does not go within 10 s."""
    child.terminate()
    try:
        child.wait(10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _load(port: int, nodes: int, duration: float, window: int, *extra: str) -> dict:
    command = [
        sys.executable, "-m", "mipha.cli", "mn", "--ha", str(HA), "--port", str(port), "--key", KEY.hex(),
        "--bind", "127.0.0.1", "--retries", "0", "--timeout", "2", "--json", *extra,
        "load", "--count", str(nodes), "--home-start", str(BASE), "--coa", str(COA),
        "--rate", "0", "--window", str(window), "--duration", str(duration),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=duration + 120)
    return json.loads(done.stdout)


def bench_udp(nodes: int, duration: float, window: int) -> dict[str, dict]:
    results = {}
    child, port = _spawn("--echo")
    try:
        results["bare UDP echo"] = _load(port, nodes, duration, window)
    finally:
        _stop(child)
    # The requests come from 127.0.0.1, not from their care-of address: with the UDP Tunnel Request
    # (RFC 3519) every one is a node behind a NAT, granted UDP tunnelling.
    for label, extra in (("home agent", ()), ("HA, RFC 3519", ("--udp-tunnel",))):
        child, port = _spawn("--serve", str(nodes))
        try:
            results[label] = _load(port, nodes, duration, window, *extra)
        finally:
            child.terminate()
            assert child.stdout is not None
            stats = json.loads(child.stdout.read().strip().splitlines()[-1])
            _stop(child)
        results[label]["server"] = stats
    return results


def bench_metrics(nodes: int, duration: float, window: int, rounds: int = 3) -> dict[str, list]:
    """Section 5: the same load with and without the endpoint scraped every second, alternating."""
    import threading
    import urllib.request

    results: dict[str, list] = {"without endpoint": [], "endpoint scraped every 1 s": []}
    for _ in range(rounds):
        for label, extra in (("without endpoint", ()), ("endpoint scraped every 1 s", ("--with-metrics",))):
            child, port = _spawn("--serve", str(nodes), *extra)
            scrapes: list[float] = []
            stop = threading.Event()

            def scraper(mport=child.metrics_port, stop=stop, scrapes=scrapes) -> None:
                while mport and not stop.wait(1.0):
                    t = time.perf_counter()
                    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
                        r.read()
                    scrapes.append(time.perf_counter() - t)

            thread = threading.Thread(target=scraper, daemon=True)
            thread.start()
            try:
                r = _load(port, nodes, duration, window)
            finally:
                stop.set()
                thread.join(10)
                _stop(child)
            r["scrapes"] = scrapes
            results[label].append(r)
    return results


# --- 3. memory -------------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(count: int, trace: bool) -> None:
    """Child process: register ``count`` bindings; print bytes per binding (RSS, or tracemalloc)."""
    engine = HomeAgent(vr_config(count))
    factory = RequestFactory()
    wall = time.time()
    source = ("203.0.113.5", 434)
    gc.collect()
    if trace:
        tracemalloc.start()
    rss_before, traced_before = _rss(), tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    for i in range(count):
        engine.handle_datagram(
            factory.build(i, wall), source=source, received_on=HA, now=100.0, wallclock=wall
        )
        if i % 4096 == 0:
            engine.drain_intents()
            while engine.next_event() is not None:
                pass
    engine.drain_intents()
    while engine.next_event() is not None:
        pass
    engine._peers.clear()
    gc.collect()
    elapsed = time.perf_counter() - started
    assert engine.binding_count == count
    delta = (tracemalloc.get_traced_memory()[0] - traced_before) if trace else (_rss() - rss_before)
    print(json.dumps({"bindings": count, "bytes_per_binding": delta / count, "seconds": elapsed}))


def bench_memory(count: int, traced: int) -> dict[str, dict]:
    out = {}
    for label, n, mode in (("rss", count, "--memory"), ("tracemalloc", traced, "--memory-traced")):
        done = subprocess.run(
            [sys.executable, __file__, mode, str(n)], capture_output=True, text=True, timeout=3600, cwd=ROOT
        )
        out[label] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# --- 4. expiry lateness ----------------------------------------------------------------------------


async def _expiry(count: int) -> list[float]:
    engine = HomeAgent(vr_config(count))
    factory = RequestFactory()
    sock = open_udp_socket("127.0.0.1", 0)
    lateness: list[float] = []
    due: dict[IPv4Address, float] = {}
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()

    def on_output() -> None:
        engine.drain_intents()
        now = loop.time()
        while (event := engine.next_event()) is not None:
            if isinstance(event, BindingRemoved):
                lateness.append(now - due.pop(event.home_address))
        if not due:
            finished.set()

    transport = HomeAgentTransport(engine, sock, on_output=on_output)
    transport.start()
    wall = time.time()
    for i in range(count):
        lifetime = 3 + (i * 7919) % 3  # 3, 4 or 5 seconds, interleaved
        now = loop.time()
        engine.handle_datagram(
            factory.build(i, wall, lifetime),
            source=("203.0.113.5", 434),
            received_on=HA,
            now=now,
            wallclock=wall,
        )
        due[BASE + i] = now + lifetime
        if i % 64 == 0:
            await asyncio.sleep(0)
    on_output()
    transport.poke()
    await asyncio.wait_for(finished.wait(), 30)
    transport.close()
    return lateness


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- report ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    parser.add_argument("--no-memory", action="store_true", help="sections 1 and 2 only")
    parser.add_argument("--in-process", action="store_true", help="only the in-process decisions (section 1)")
    parser.add_argument("--serve", type=int, metavar="NODES", help=argparse.SUPPRESS)
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--memory-traced", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--bindings", type=int, default=1_000_000, help="bindings for the memory figure")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of UDP load per run")
    parser.add_argument("--metrics", action="store_true", help="only section 5: cost of the metrics endpoint")
    parser.add_argument("--with-metrics", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        return serve(args.serve, metrics=args.with_metrics)
    if args.echo:
        return echo()
    if args.memory is not None:
        return memory(args.memory, trace=False)
    if args.memory_traced is not None:
        return memory(args.memory_traced, trace=True)

    quick = args.quick
    nodes = 2_000 if quick else 20_000
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    python = sys.version.split()[0]
    print(f"# mipha registration benchmark ({os.cpu_count()} CPUs, Python {python}, load average {load})")

    if args.metrics:
        runs = bench_metrics(nodes, 1.0 if quick else args.duration, 256)
        print("\n## 5. UDP load with and without the metrics endpoint (alternating runs, window 256)")
        for label, rs in runs.items():
            rates = ", ".join(f"{r['rate']:,.0f}" for r in rs)
            lost = sum(r["timeouts"] for r in rs)
            scr = [x for r in rs for x in r["scrapes"]]
            extra = f"  {len(scr)} scrapes, median {statistics.median(scr) * 1000:.1f} ms" if scr else ""
            print(f"  {label:28s} rates {rates} /s  median {statistics.median(r['rate'] for r in rs):,.0f}/s"
                  f"  timeouts {lost}{extra}")  # fmt: skip
        return

    decisions = bench_in_process(nodes, 2 if quick else 4, 3 if quick else 5)
    base = decisions["bare hmac.digest"]
    print("\n## 1. In-process decisions (HMAC-MD5), target >= 100,000/s (median per CPU second)")
    for label, rate in decisions.items():
        print(f"  {label:22s} {rate:12,.0f} /s   ratio to bare HMAC {rate / base:6.3f}")
    nat = bench_in_process(nodes, 2 if quick else 4, 3 if quick else 5, udp_tunnel=True)
    print("  with the RFC 3519 UDP Tunnel Request, from behind a NAT (target: within 10 % of without)")
    for label in ("first registrations", "renewals"):
        rate = nat[label]
        print(f"  {label:22s} {rate:12,.0f} /s   ratio to without {rate / decisions[label]:6.3f}")
    if args.in_process:
        return

    udp = bench_udp(nodes, 1.0 if quick else args.duration, 256)
    echo_rate = udp["bare UDP echo"]["rate"]
    print("\n## 2. End to end over UDP loopback (mipha mn load, window 256)")
    print("  target >= 25,000/s and >= 60 % of the bare echo loop")
    for label, r in udp.items():
        lat = r["latency_ms"]
        print(
            f"  {label:14s} {r['rate']:10,.0f} /s  p50 {lat['p50']} ms  p99 {lat['p99']} ms  "
            f"replies {r['replies']} timeouts {r['timeouts']} ratio to echo {r['rate'] / echo_rate:5.3f}"
        )
    for label in ("home agent", "HA, RFC 3519"):
        server = udp[label]["server"]
        print(
            f"  server ({label}): accepted {server['accepted']}, "
            f"UDP tunnels {server['udp-tunnel-accepted']}, denied {server['denied']}, "
            f"errors {server['errors']}"
        )
    nat_ratio = udp["HA, RFC 3519"]["rate"] / udp["home agent"]["rate"]
    print(f"  RFC 3519 rate / plain rate: {nat_ratio:5.3f} (target >= 0.90)")
    if args.no_memory:
        return

    count = 50_000 if quick else args.bindings
    traced = 20_000 if quick else 100_000
    mem = bench_memory(count, traced)
    print("\n## 3. Memory per binding, target <= 600 bytes")
    rss, traced_mem = mem["rss"], mem["tracemalloc"]
    print(f"  RSS growth at {rss['bindings']:,} bindings:          {rss['bytes_per_binding']:7.1f} B")
    traced_per = traced_mem["bytes_per_binding"]
    print(f"  tracemalloc growth at {traced_mem['bindings']:,} bindings: {traced_per:7.1f} B")
    print(f"  (registering {count:,} bindings took {rss['seconds']:.1f} s: {count / rss['seconds']:,.0f}/s)")

    lateness = asyncio.run(_expiry(2_000 if quick else 20_000))
    print(f"\n## 4. Expiry lateness over {len(lateness):,} bindings (3-5 s lifetimes, loop.call_at timer)")
    print(
        f"  p50 {_pct(lateness, 50) * 1000:.2f} ms  p99 {_pct(lateness, 99) * 1000:.2f} ms  "
        f"max {max(lateness) * 1000:.2f} ms  early {sum(1 for x in lateness if x < 0)}"
    )


if __name__ == "__main__":
    main()
