"""Registration benchmarks of the home-agent engine, each with a baseline measured in the same run.

    .venv/bin/python bench/registration.py            # everything (about 3-4 minutes on 2 cores)
    .venv/bin/python bench/registration.py --quick    # smaller numbers, for a smoke run
    .venv/bin/python bench/registration.py --in-process   # section 1 only (about 15 s)
    .venv/bin/python bench/registration.py --udp      # section 2 only (about 40 s; root: namespaces)
    .venv/bin/python bench/registration.py --instructions  # valgrind instructions per renewal (~90 s)

1. In-process decisions/s with HMAC-MD5 (``HomeAgent.handle_datagram`` on prepared datagrams, CPU
   time, median of several fresh engines): first registrations and renewals; baseline: one bare
   ``hmac.digest`` of the same bytes.  (The engine computes two authenticators per decision, the
   request's and the reply's, from precomputed HMAC pads; ``bench/registration_protocol.py`` has the
   protocol path alone against two bare HMACs.)
2. End to end over UDP, the home agent in one network namespace and the load in another (joined by a
   veth pair; ``--loopback`` or no root: 127.0.0.1): the daemon's receive path (``mipha.runtime``'s
   virtual router: ``ha.transport``, the engine, the binding journal, data plane ``none``) against a
   blocking Python UDP echo loop (recvfrom / sendto, reshaping the request into a reply) on the same
   address, both driven by the same pre-signed load generator: unpaced (``--window`` in flight) for
   the rate, then paced at half the home agent's rate for the latency.  Rates, p50/p99 latency, the
   ratio, and each server's CPU time per request (the box is shared: the CPU figure says what a
   whole core would do).
3. Memory per binding: RSS growth of a fresh process registering N bindings (default 1,000,000), and
   ``tracemalloc`` growth at 100,000 bindings (Python-level objects, no allocator slack), every node
   sharing one association; then the RSS growth with each node's own association, as configured nodes
   have (its two MD5 states are kept once it authenticated a request).
4. Expiry lateness: bindings with 3-5 s lifetimes expire through the transport's ``loop.call_at``
   timer; how late each removal happened relative to its due time.

``--metrics`` runs only section 5: the UDP load of section 2 against the home agent with and
without the Prometheus endpoint (mipha/metrics.py) scraped every second, alternating, three runs
each: rates, lost requests and scrape times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import hmac
import json
import logging
import os
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
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


def vr_config(count: int, *, own_associations: bool = False) -> VirtualRouterConfig:
    """``count`` nodes sharing one association, or each with its own (same key), as configured nodes
    are: then every node's association keeps its own MD5 states once it authenticated a request."""
    nodes = [
        MobileNode(
            f"mn{i}",
            home_address=BASE + i,
            security_associations=[SecurityAssociation(256, KEY) if own_associations else SA],
        )
        for i in range(count)
    ]
    return VirtualRouterConfig(
        "default", home_agent=HomeAgentConfig(address=HA, max_lifetime=0xFFFF), mobile_nodes=nodes
    )


class RequestFactory:
    """Signed requests for node i: one template from the protocol codec, re-signed per request."""

    def __init__(self, lifetime: int = 600, ha: IPv4Address = HA, *, udp_tunnel: bool = False) -> None:
        extensions = (UdpTunnelRequest(), MobileHomeAuth(256)) if udp_tunnel else (MobileHomeAuth(256),)
        request = RegistrationRequest(RequestFlags.NONE, lifetime, BASE, ha, COA, 0, extensions)
        self.template = bytearray(push_registration_request(request, sign={ExtensionType.MN_HA_AUTH: SA}))
        self.covered = len(self.template) - 16
        self.counter = 0

    def build(
        self,
        index: int,
        wallclock: float = 0.0,
        lifetime: int | None = None,
        identification: int | None = None,
    ) -> bytes:
        buffer = self.template
        self.counter += 1
        _ADDR.pack_into(buffer, 4, int(BASE) + index)
        if lifetime is not None:
            struct.pack_into("!H", buffer, 2, lifetime)
        if identification is None:
            identification = (ntp_timestamp(wallclock) & ~0xFFFFF) | (self.counter & 0xFFFFF)
        _IDENT.pack_into(buffer, 16, identification)
        with memoryview(buffer) as view:
            signature = SA.authenticator(view[: self.covered])
        buffer[self.covered :] = signature
        return bytes(buffer)


# --- 1. in-process decisions -----------------------------------------------------------------------


def bench_in_process(nodes: int, renewal_rounds: int, repeat: int) -> dict[str, dict[str, float]]:
    """Median decisions per CPU second over ``repeat`` fresh engines (CPU time: the box is shared).

    Each engine takes one batch of first registrations (``nodes`` mobile nodes, each creating a
    binding with its intents and events) and then ``renewal_rounds`` batches of renewals (the same
    nodes, newer timestamps).  Every request must be accepted, or no figure is printed.

    Two loads, their engines alternating (so both see the same box): ``"plain"``, and ``"udp tunnel"``,
    where every request carries an RFC 3519 UDP Tunnel Request and comes from a NAT (a source address
    other than its care-of address), so every acceptance is a UDP tunnel with a Tunnel Reply.
    """
    wall = time.time()
    loads = {}
    for label, udp_tunnel in (("plain", False), ("udp tunnel", True)):
        factory = RequestFactory(udp_tunnel=udp_tunnel)
        batches = [
            [factory.build(i, wall + r * 0.001) for i in range(nodes)] for r in range(1 + renewal_rounds)
        ]
        source = ("198.51.100.99", 4500) if udp_tunnel else ("203.0.113.5", 434)
        loads[label] = (batches, source, udp_tunnel)
    rates: dict[str, dict[str, list[float]]] = {
        label: {"first registrations": [], "renewals": []} for label in loads
    }
    for _ in range(repeat):
        for label, (batches, source, udp_tunnel) in loads.items():
            for kind, rate in _one_engine(nodes, batches, source, udp_tunnel, wall):
                rates[label][kind].append(rate)
    results = {label: {k: statistics.median(v) for k, v in r.items()} for label, r in rates.items()}
    flat = [d for batch in loads["plain"][0] for d in batch]
    hmac_rates = []
    for _ in range(repeat):
        started = time.process_time()
        for data in flat:
            hmac.digest(KEY, data[:-16], "md5")
        hmac_rates.append(len(flat) / (time.process_time() - started))
    results["plain"]["bare hmac.digest"] = statistics.median(hmac_rates)
    return results


def _one_engine(
    nodes: int, batches: list[list[bytes]], source: tuple[str, int], udp_tunnel: bool, wall: float
) -> Iterator[tuple[str, float]]:
    """A fresh engine through ``batches``: ``(kind, decisions per CPU second)`` per batch."""
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
        yield (
            ("first registrations" if index == 0 else "renewals"),
            len(batch) / (time.process_time() - started),
        )
    assert engine.statistics.accepted == nodes * len(batches), engine.statistics.as_dict()
    assert engine.statistics.udp_tunnel_accepted == (nodes * len(batches) if udp_tunnel else 0)
    assert engine.statistics.replies_sent == nodes * len(batches)


# --- 1b. instructions per renewal under valgrind (deterministic, unlike CPU time on a shared box) ---

_CALLGRIND_NODES, _CALLGRIND_ROUNDS = 2_000, 5


def renewal_load(udp_tunnel: bool, renew: bool) -> None:
    """The process valgrind counts: 2,000 first registrations, then (``renew``) 5 rounds of renewals."""
    gc.disable()
    factory, wall = RequestFactory(udp_tunnel=udp_tunnel), 1.78e9
    batches = [
        [factory.build(i, wall + r * 0.001) for i in range(_CALLGRIND_NODES)]
        for r in range(1 + _CALLGRIND_ROUNDS)
    ]
    source = ("198.51.100.99", 4500) if udp_tunnel else ("203.0.113.5", 434)
    handle = HomeAgent(vr_config(_CALLGRIND_NODES)).handle_datagram
    for batch in batches if renew else batches[:1]:
        for data in batch:
            handle(data, source=source, received_on=HA, now=100.0, wallclock=wall)


def bench_instructions() -> None:
    """valgrind (callgrind) instructions per renewal, with and without the UDP Tunnel Request: the
    whole process minus the same process stopping after its first registrations."""
    print("# instructions per renewal under valgrind --tool=callgrind (2,000 nodes x 5 rounds, GC off)")
    counts = {}
    for kind in ("plain", "udp"):
        totals = []
        for renew in ("1", "0"):
            done = subprocess.run(
                ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                 os.path.abspath(__file__), "--renewal-load", kind, renew],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            totals.append(int(done.stderr.split("Collected : ")[1].split()[0]))
        counts[kind] = (totals[0] - totals[1]) / (_CALLGRIND_NODES * _CALLGRIND_ROUNDS)
    print(f"  without the extension   {counts['plain']:10,.0f}")
    print(f"  with the UDP Tunnel Request, from behind a NAT {counts['udp']:10,.0f}"
          f"   ratio {counts['plain'] / counts['udp']:.3f} (target >= 0.90)")  # fmt: skip


# --- 2. end to end over UDP, across two namespaces ----------------------------------------------
#
# The home agent runs in one namespace, the load generator in another, joined by a veth pair (as a
# mobile node's requests arrive on a router).  The load generator is built to outrun both servers:
# requests are signed before the clock starts, sent without blocking and their replies drained per
# wakeup, so the figures measure the servers.  The baseline is a blocking Python echo loop
# (recvfrom / sendto, the request reshaped into a reply) on the same address, driven the same way.

NS_HA = IPv4Address("10.99.0.1")
NS_MN = IPv4Address("10.99.0.2")
UDP_PORT = 434


class Namespaces:
    """Two namespaces with unique names joined by a veth pair; :meth:`destroy` removes them."""

    def __init__(self) -> None:
        tag = f"{os.getpid():x}"
        self.ha, self.mn = f"mrb-ha-{tag}", f"mrb-mn-{tag}"

    def create(self) -> None:
        for ns in (self.ha, self.mn):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.ha, "link", "add", "ha0", "type", "veth", "peer", "name", "mn0", "netns", self.mn)
        for ns, dev, address in ((self.ha, "ha0", NS_HA), (self.mn, "mn0", NS_MN)):
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def destroy(self) -> None:
        for ns in (self.ha, self.mn):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def serve(nodes: int, address: str, port: int, journal_dir: str, metrics: bool = False) -> None:
    """Child process (in the HA namespace): the daemon's receive path — one virtual router
    (mipha.runtime: engine, ha.transport, the binding journal, data plane backend ``none``).
    With ``metrics``, also the Prometheus endpoint on 127.0.0.1 (its port printed after the UDP port)."""
    from mipha.journal import BindingJournal
    from mipha.runtime import VirtualRouter

    logging.basicConfig(level=logging.ERROR)
    # The load generator signs every request before its clock starts, which takes seconds on a loaded
    # box: the largest replay tolerance keeps them fresh (the check costs the same whatever the value).
    ha = HomeAgentConfig(
        address=IPv4Address(address), udp_port=port, max_lifetime=0xFFFF, replay_tolerance=255
    )
    config = dataclasses.replace(vr_config(nodes), home_agent=ha)
    journal = BindingJournal(os.path.join(journal_dir, "bindings.journal"))
    journal.load()
    journal.open()

    async def main() -> None:
        router = VirtualRouter(config, backend="none", journal=journal)
        await router.start()
        gc.freeze()  # as the daemon does once configured (mipha/daemon.py)
        gc.set_threshold(10_000, 10, 10)
        pauses: list[tuple[int, float]] = []
        began = [0.0]

        def on_gc(phase: str, info: dict) -> None:
            if phase == "start":
                began[0] = time.perf_counter()
            else:
                pauses.append((info["generation"], time.perf_counter() - began[0]))

        gc.callbacks.append(on_gc)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        cpu = time.process_time()
        endpoint = await _metrics_endpoint(router) if metrics else None
        print(port, endpoint.metrics_port if endpoint else "", flush=True)
        await stop.wait()
        cpu = time.process_time() - cpu
        engine, transport = router.engine, router.transport
        stats = engine.statistics.as_dict() | {"errors": transport.errors, "journal_writes": journal.writes}
        stats |= {"cpu_seconds": cpu, "received": transport.received, "bursts": transport.bursts}
        stats |= {
            "gc_full": sum(1 for g, _ in pauses if g == 2),
            "gc_max_ms": max((p for _, p in pauses), default=0) * 1e3,
        }
        await router.stop()
        print(json.dumps(stats, default=str), flush=True)

    asyncio.run(main())
    journal.close()


async def _metrics_endpoint(router: object):
    """mipha/metrics.py's endpoint over this one router (the daemon's collector, a one-router view)."""
    from types import SimpleNamespace

    from mipha.metrics import Latency
    from mipha.metrics import serve as serve_metrics

    view = SimpleNamespace(
        routers={router.name: router},
        journal_latency=Latency(),
        commit_latency=Latency(),
        server=None,
        metrics_port=0,
    )
    view.runner = await serve_metrics(view, "127.0.0.1", 0)
    return view


def echo(address: str, port: int) -> None:
    """Child process: the bare Python UDP echo loop (request reshaped into a reply layout)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((address, port))
    print(sock.getsockname()[1], flush=True)
    cpu = time.process_time()

    def stop(*_: object) -> None:
        print(json.dumps({"cpu_seconds": time.process_time() - cpu}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, peer = recvfrom(2048)
        sendto(b"\x03" + data[1:12] + data[16:], peer)


def load_generator(
    address: str, port: int, nodes: int, duration: float, window: int, rate: float, udp_tunnel: bool = False
) -> None:
    """Child process (in the mobile nodes' namespace): closed loop of ``window`` registrations in
    flight (``rate`` 0) or an open loop paced at ``rate``/s; prints rate, latency and reply codes.

    Requests are signed before the clock starts (node i of round r: Identification = NTP seconds in the
    high half, the running request number in the low half, so every node's requests are newer than its
    last); a reply's Identification names its request, whose send time gives the latency."""
    wall = time.time()
    ha = IPv4Address(address)
    factory = RequestFactory(ha=ha, udp_tunnel=udp_tunnel)
    total = min(int(duration * (rate or 160_000) * 1.1) + window, 1_000_000)
    high = ntp_timestamp(wall + 2) & ~0xFFFFFFFF  # the run ends within the server's tolerance (255 s)
    requests = [factory.build(i % nodes, identification=high | i) for i in range(total)]
    sent_at = array("d", bytes(8 * total))
    latencies = array("d")
    codes: Counter[int] = Counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((str(NS_MN) if address == str(NS_HA) else "127.0.0.1", 0))
    sock.setblocking(False)
    sock.connect((address, port))
    send, recv = sock.send, sock.recv
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    clock = time.perf_counter
    sent = replies = in_flight = 0
    cpu = time.process_time()
    start = last_reply = clock()
    end = start + duration
    while True:
        now = clock()
        if now < end and sent < total:
            due = window - in_flight if rate <= 0 else min(int(rate * (now - start)) + 1 - sent, 256)
            for _ in range(min(due, total - sent)):
                try:
                    send(requests[sent])
                except BlockingIOError:
                    break
                sent_at[sent] = now
                sent += 1
                in_flight += 1
        elif replies >= sent or now - last_reply > 2.0:
            break
        if not poller.poll(1 if rate > 0 else 10):
            if rate <= 0 and now - last_reply > 1.0:
                in_flight = 0  # a second without a reply: count the window lost, keep the loop going
            continue
        now = clock()
        while True:
            try:
                data = recv(2048)
            except BlockingIOError:
                break
            index = int.from_bytes(data[16:20], "big")  # the low half of the reply's Identification
            if index < sent:
                latencies.append(now - sent_at[index])
            codes[data[1]] += 1
            replies += 1
            in_flight -= 1
        in_flight = max(in_flight, 0)  # late replies of a window counted lost
        last_reply = now
    elapsed = last_reply - start
    ordered = sorted(latencies)
    pct = {p: round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 3) for p in (50, 99)}
    report = {"sent": sent, "replies": replies, "rate": replies / elapsed, "lost": sent - replies}
    report |= {"p50_ms": pct[50], "p99_ms": pct[99], "codes": dict(codes), "requests_built": total}
    report |= {"cpu_busy": (time.process_time() - cpu) / max(elapsed, 1e-9)}  # of one core: 1.0 = saturated
    print(json.dumps(report))


class Server:
    report: dict | None = None
    metrics_port: int | None = None


class Children:
    """The server and load processes of one run; stops what it started, by PID."""

    def __init__(self, ns: Namespaces | None) -> None:
        self.ns = ns
        self.port = UDP_PORT

    def _command(self, side: str, *args: str) -> list[str]:
        command = [sys.executable, __file__, *args]
        if self.ns is None:
            return command
        return ["ip", "netns", "exec", self.ns.ha if side == "ha" else self.ns.mn, *command]

    @contextlib.contextmanager
    def running(self, *args: str) -> Iterator[Server]:
        """A server child for the duration of the block; its last output line is its report."""
        child = subprocess.Popen(
            self._command("ha", *args), stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, cwd=ROOT
        )
        assert child.stdout is not None
        server = Server()
        try:
            first = child.stdout.readline().split()  # the server is listening
            server.metrics_port = int(first[1]) if len(first) > 1 else None
            yield server
        finally:
            child.terminate()
            try:
                out = child.communicate(timeout=30)[0].strip().splitlines()
            except subprocess.TimeoutExpired:
                child.kill()
                out = child.communicate()[0].strip().splitlines()
            if out and out[-1].startswith("{"):
                server.report = json.loads(out[-1])

    def load(self, nodes: int, duration: float, window: int, rate: float = 0, tunnel: bool = False) -> dict:
        address = str(NS_HA) if self.ns is not None else "127.0.0.1"
        args = ("--load", address, str(self.port), str(nodes), str(duration), str(window), str(rate))
        args += (str(int(tunnel)),)
        done = subprocess.run(
            self._command("mn", *args), capture_output=True, text=True, cwd=ROOT, timeout=duration + 120
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_udp(nodes: int, duration: float, window: int, use_namespaces: bool) -> dict[str, dict]:
    """Echo and home agent unpaced (capacity), then both paced at half the home agent's rate."""
    ns = Namespaces() if use_namespaces else None
    journal_dir = tempfile.mkdtemp(prefix="mipha-bench-")
    results: dict[str, dict] = {}
    try:
        if ns is not None:
            ns.create()
        children = Children(ns)
        address = str(NS_HA) if ns is not None else "127.0.0.1"
        children.port = UDP_PORT if ns is not None else _free_port()
        echo_args = ("--echo", address, str(children.port))
        with children.running(*echo_args) as server:
            results["bare UDP echo"] = children.load(nodes, duration, window)
        results["bare UDP echo"]["server"] = server.report | {"received": results["bare UDP echo"]["replies"]}
        with children.running("--serve", str(nodes), address, str(children.port), journal_dir) as server:
            results["home agent"] = children.load(nodes, duration, window)
            half = results["home agent"]["rate"] / 2
            results["home agent, half load"] = children.load(nodes, duration, window, half)
        results["home agent"]["server"] = server.report
        # The requests come from the load generator's address, not from their care-of address: with the
        # UDP Tunnel Request (RFC 3519) every one is a node behind a NAT, granted UDP tunnelling.
        with children.running("--serve", str(nodes), address, str(children.port), journal_dir) as server:
            results["HA, RFC 3519"] = children.load(nodes, duration, window, tunnel=True)
        results["HA, RFC 3519"]["server"] = server.report
        with children.running(*echo_args):
            results["bare UDP echo, same pace"] = children.load(nodes, duration, window, half)
    finally:
        if ns is not None:
            ns.destroy()
        shutil.rmtree(journal_dir, ignore_errors=True)
    return results


def print_udp(udp: dict[str, dict], window: int, use_namespaces: bool) -> None:
    where = "across two namespaces (veth)" if use_namespaces else "over loopback"
    print(f"\n## 2. End to end over UDP {where}: the daemon's receive path vs a blocking echo loop")
    print(f"  unpaced: {window} in flight; paced: half the home agent's rate.  Target >= 50 % of the echo")
    print("  loop's rate, p99 < 5 ms at half load")
    echo_rate = udp["bare UDP echo"]["rate"]
    for label, r in udp.items():
        print(
            f"  {label:26s} {r['rate']:9,.0f} /s  p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  "
            f"replies {r['replies']:,} lost {r['lost']}  ratio to echo {r['rate'] / echo_rate:5.3f}"
        )
    for label in ("home agent", "HA, RFC 3519"):
        server = udp[label]["server"]
        print(
            f"  server ({label}): accepted {server['accepted']}, "
            f"UDP tunnels {server.get('udp-tunnel-accepted')}, denied {server['denied']}"
        )
    busy = ", ".join(f"{label} {udp[label]['cpu_busy']:.2f}" for label in ("bare UDP echo", "home agent"))
    print(f"  load generator CPU, share of one core during the unpaced runs (1.00 = its limit): {busy}")
    nat_ratio = udp["HA, RFC 3519"]["rate"] / udp["home agent"]["rate"]
    print(f"  RFC 3519 rate / plain rate: {nat_ratio:5.3f} (target >= 0.90)")
    server = udp["home agent"]["server"]
    print(
        f"  server: accepted {server['accepted']}, denied {server['denied']}, errors {server['errors']}, "
        f"journal writes {server['journal_writes']}, {server['received'] / max(1, server['bursts']):.1f} "
        f"requests per wake-up, {server['gc_full']} full collections, "
        f"longest collection {server['gc_max_ms']:.1f} ms"
    )
    per_cpu = {
        label: udp[label]["server"]["received"] / udp[label]["server"]["cpu_seconds"]
        for label in ("bare UDP echo", "home agent")
    }
    print("  server CPU (the box is shared: what each server would do with a whole core):")
    for label, rate in per_cpu.items():
        print(
            f"  {label:26s} {1e6 / rate:6.1f} us per request = {rate:9,.0f} /CPU-s  "
            f"ratio to echo {rate / per_cpu['bare UDP echo']:5.3f}"
        )


def bench_receive_cpu(nodes: int, rounds: int = 4) -> dict[str, float]:
    """CPU per request of the receive path, in one process, less exposed to a shared box than the
    wall-clock rates: a client socket queues a batch of requests on the home agent's socket, then the
    transport drains it (one ``_burst`` per wake-up, as the event loop would call it) through the engine
    and the runtime's flush with its journal.  Both transport paths (the unicast socket, the wildcard
    socket with IP_PKTINFO) and, as the baseline, a bare recvfrom / sendto loop over the same datagrams.
    Renewals (every round after the first), microseconds per request, median of the rounds."""
    from mipha.journal import BindingJournal
    from mipha.runtime import VirtualRouter

    factory = RequestFactory()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    chunk = 2000  # what the socket buffers hold without a drop

    def drain_client() -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                client.recv(2048)

    def timed(port: int, consume: Callable[[int], None]) -> list[float]:
        per_round = []
        for _ in range(rounds):
            spent = 0.0
            for start in range(0, nodes, chunk):  # signed just before sending: fresh timestamps
                batch = [factory.build(i, time.time()) for i in range(start, min(start + chunk, nodes))]
                for data in batch:
                    client.sendto(data, ("127.0.0.1", port))
                started = time.process_time()
                consume(len(batch))
                spent += time.process_time() - started
                drain_client()
            per_round.append(spent / nodes * 1e6)
        return per_round

    async def transport_path(unicast: bool) -> list[float]:
        journal_dir = tempfile.mkdtemp(prefix="mipha-bench-")
        journal = BindingJournal(os.path.join(journal_dir, "bindings.journal"))
        journal.load()
        journal.open()
        router = VirtualRouter(vr_config(nodes), backend="none", journal=journal)
        engine = router.engine = HomeAgent(router.config)
        engine.track_changes()
        sock = open_udp_socket("0.0.0.0", 0)
        port = sock.getsockname()[1]
        fast = open_udp_socket("127.0.0.1", port, pktinfo=False) if unicast else None
        transport = HomeAgentTransport(engine, sock, unicast=fast, on_output=router.flush)
        transport._loop = asyncio.get_running_loop()
        receive = transport._receive_unicast if unicast else transport._receive_any

        def consume(count: int) -> None:
            goal = transport.received + count
            while transport.received < goal:
                transport._burst(receive)

        try:
            gc.collect()
            return timed(port, consume)
        finally:
            assert engine.statistics.accepted == nodes * rounds, engine.statistics.as_dict()
            transport.close()
            journal.close()
            shutil.rmtree(journal_dir, ignore_errors=True)

    def bare() -> list[float]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        sock.bind(("127.0.0.1", 0))
        recvfrom, sendto = sock.recvfrom, sock.sendto

        def consume(count: int) -> None:
            for _ in range(count):
                data, peer = recvfrom(2048)
                sendto(b"\x03" + data[1:12] + data[16:], peer)

        try:
            return timed(sock.getsockname()[1], consume)
        finally:
            sock.close()

    results = {
        "transport, unicast socket": asyncio.run(transport_path(True)),
        "transport, wildcard socket": asyncio.run(transport_path(False)),
        "bare recvfrom/sendto": bare(),
    }
    client.close()
    return {label: statistics.median(values[1:]) for label, values in results.items()}


def bench_metrics(nodes: int, duration: float, window: int, use_namespaces: bool, rounds: int = 3) -> dict:
    """Section 5: the same load with and without the endpoint scraped every second, alternating."""
    import threading

    ns = Namespaces() if use_namespaces else None
    journal_dir = tempfile.mkdtemp(prefix="mipha-bench-")
    results: dict[str, list] = {"without endpoint": [], "endpoint scraped every 1 s": []}
    try:
        if ns is not None:
            ns.create()
        children = Children(ns)
        address = str(NS_HA) if ns is not None else "127.0.0.1"
        children.port = UDP_PORT if ns is not None else _free_port()
        for _ in range(rounds):
            for label, extra in (
                ("without endpoint", ()),
                ("endpoint scraped every 1 s", ("--with-metrics",)),
            ):
                serve_args = ("--serve", str(nodes), address, str(children.port), journal_dir, *extra)
                scrapes: list[float] = []
                stop = threading.Event()
                with children.running(*serve_args) as server:
                    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
                    curl = ["curl", "-sf", "-o", "/dev/null", url]  # on the HA namespace's loopback
                    if ns is not None:
                        curl = ["ip", "netns", "exec", ns.ha, *curl]

                    def scraper(active=server.metrics_port, curl=curl, stop=stop, scrapes=scrapes) -> None:
                        while active and not stop.wait(1.0):
                            started = time.perf_counter()
                            subprocess.run(curl, check=False, timeout=10)
                            scrapes.append(time.perf_counter() - started)

                    thread = threading.Thread(target=scraper, daemon=True)
                    thread.start()
                    try:
                        r = children.load(nodes, duration, window)
                    finally:
                        stop.set()
                        thread.join(10)
                r["scrapes"] = scrapes
                results[label].append(r)
    finally:
        if ns is not None:
            ns.destroy()
        shutil.rmtree(journal_dir, ignore_errors=True)
    return results


# --- 3. memory -------------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory(count: int, trace: bool, own_associations: bool = False) -> None:
    """Child process: register ``count`` bindings; print bytes per binding (RSS, or tracemalloc)."""
    engine = HomeAgent(vr_config(count, own_associations=own_associations))
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
    for label, n, mode in (
        ("rss", count, "--memory"),
        ("tracemalloc", traced, "--memory-traced"),
        ("own associations", count, "--memory-own"),
    ):
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
    parser.add_argument("--in-process", action="store_true", help="only the in-process decisions (section 1)")
    parser.add_argument("--udp", action="store_true", help="only the UDP figures (section 2)")
    parser.add_argument("--loopback", action="store_true", help="section 2 on 127.0.0.1 (no namespaces)")
    parser.add_argument("--window", type=int, default=256, help="registrations in flight (section 2)")
    parser.add_argument(
        "--serve", nargs=4, metavar=("NODES", "ADDRESS", "PORT", "DIR"), help=argparse.SUPPRESS
    )
    parser.add_argument("--echo", nargs=2, metavar=("ADDRESS", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--metrics", action="store_true", help="only section 5: cost of the metrics endpoint")
    parser.add_argument("--with-metrics", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=7, help=argparse.SUPPRESS)
    parser.add_argument("--no-memory", action="store_true", help="sections 1 and 2 only")
    parser.add_argument(
        "--instructions", action="store_true", help="instructions per renewal under valgrind (section 1b)"
    )
    parser.add_argument("--renewal-load", nargs=2, metavar=("KIND", "HANDLE"), help=argparse.SUPPRESS)
    parser.add_argument("--memory", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--memory-traced", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--memory-own", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--bindings", type=int, default=1_000_000, help="bindings for the memory figure")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of UDP load per run")
    args = parser.parse_args()
    if args.serve is not None:
        nodes_, address, port, journal_dir = args.serve
        return serve(int(nodes_), address, int(port), journal_dir, metrics=args.with_metrics)
    if args.echo is not None:
        return echo(args.echo[0], int(args.echo[1]))
    if args.load is not None:
        address, port, nodes_, duration, window, rate, tunnel = args.load
        return load_generator(
            address, int(port), int(nodes_), float(duration), int(window), float(rate), tunnel == "1"
        )
    if args.renewal_load is not None:
        return renewal_load(args.renewal_load[0] == "udp", args.renewal_load[1] == "1")
    if args.instructions:
        return bench_instructions()
    if args.memory is not None:
        return memory(args.memory, trace=False)
    if args.memory_traced is not None:
        return memory(args.memory_traced, trace=True)
    if args.memory_own is not None:
        return memory(args.memory_own, trace=False, own_associations=True)

    quick = args.quick
    nodes = 2_000 if quick else 20_000
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    python = sys.version.split()[0]
    print(f"# mipha registration benchmark ({os.cpu_count()} CPUs, Python {python}, load average {load})")

    if args.metrics:
        use_namespaces = os.geteuid() == 0 and not args.loopback
        runs = bench_metrics(nodes, 1.0 if quick else args.duration, args.window, use_namespaces)
        print(
            f"\n## 5. UDP load with and without the metrics endpoint (alternating runs, window {args.window})"
        )
        for label, rs in runs.items():
            rates = ", ".join(f"{r['rate']:,.0f}" for r in rs)
            lost = sum(r["lost"] for r in rs)
            scr = [x for r in rs for x in r["scrapes"]]
            extra = f"  {len(scr)} scrapes, median {statistics.median(scr) * 1000:.1f} ms" if scr else ""
            print(f"  {label:28s} rates {rates} /s  median {statistics.median(r['rate'] for r in rs):,.0f}/s"
                  f"  lost {lost}{extra}")  # fmt: skip
        return

    if not args.udp:
        both = bench_in_process(nodes, 2 if quick else 4, 3 if quick else 5)
        decisions, nat = both["plain"], both["udp tunnel"]
        base = decisions["bare hmac.digest"]
        print("\n## 1. In-process decisions (HMAC-MD5), target >= 100,000/s (median per CPU second)")
        for label, rate in decisions.items():
            print(f"  {label:22s} {rate:12,.0f} /s   ratio to bare HMAC {rate / base:6.3f}")
        print("  with the RFC 3519 UDP Tunnel Request, from behind a NAT (engines alternating with the")
        print("  plain ones above; target: within 10 % of without)")
        for label in ("first registrations", "renewals"):
            rate = nat[label]
            print(f"  {label:22s} {rate:12,.0f} /s   ratio to without {rate / decisions[label]:6.3f}")
        if args.in_process:
            return

    receive = bench_receive_cpu(nodes)
    print("\n## 2. The receive path in one process: CPU per renewal (datagrams queued, then drained)")
    print("  engine + runtime flush with the journal; baseline: a bare recvfrom/sendto loop")
    for label, cost in receive.items():
        print(f"  {label:28s} {cost:6.2f} us   ratio to bare {receive['bare recvfrom/sendto'] / cost:5.3f}")

    use_namespaces = os.geteuid() == 0 and not args.loopback
    udp = bench_udp(nodes, 1.0 if quick else args.duration, args.window, use_namespaces)
    print_udp(udp, args.window, use_namespaces)
    if args.udp or args.no_memory:
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
    own = mem["own associations"]["bytes_per_binding"]
    print(f"  RSS growth, each node with its own association: {own:7.1f} B (its MD5 states kept)")

    lateness = asyncio.run(_expiry(2_000 if quick else 20_000))
    print(f"\n## 4. Expiry lateness over {len(lateness):,} bindings (3-5 s lifetimes, loop.call_at timer)")
    print(
        f"  p50 {_pct(lateness, 50) * 1000:.2f} ms  p99 {_pct(lateness, 99) * 1000:.2f} ms  "
        f"max {max(lateness) * 1000:.2f} ms  early {sum(1 for x in lateness if x < 0)}"
    )


if __name__ == "__main__":
    main()
