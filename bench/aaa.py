"""AAA figures: first registrations through a real FreeRADIUS, cached renewals, FreeRADIUS's own ceiling.

In a network namespace it creates: FreeRADIUS 3.2 (mipha/data/radius plus N generated subscribers,
Framed-Pool + ERX key), `mipha run` configured over NETCONF with `authentication local-then-aaa` and
N configured NAI nodes (pool addresses too: the same request shape), and `mipha mn load` from inside
the namespace.  Printed beside each other, same run:

* FreeRADIUS's ceiling: a bare asyncio loop of Access-Requests (mipha's codec, 256 in flight);
* first registrations, each needing an Access-Request, beside configured nodes' and a signing echo's
  (a bare Python loop answering 0, nothing decided: this box's and this generator's floor) at the
  same rate, in ``--first-rounds`` rounds (clear-bindings between), each with the run-queue wait of
  the home agent's loop (how long the box kept it from a CPU);
* renewals of the now cached AAA nodes (no RADIUS) beside the configured nodes' (interleaved rounds);
* configured nodes' renewals while RADIUS is SIGSTOPped (silent, no ICMP) and new AAA registrations
  keep arriving (their look-ups time out, or — FreeRADIUS answering Status-Server, as configured — are
  denied at once once the server is found dead), each silent round beside the normal round just
  before it: RADIUS answering, the same rate of new AAA registrations arriving (subscribers it
  accepts), and — with Status-Server — only once the home agent uses the server again (a probe
  answered); median and spread of the per-round ratios, wall-clock and per HA CPU second;
* the engine's own CPU time per configured renewal and per new AAA registration (looked up, or denied
  at once when no server can be asked), in-process: the share the AAA traffic can take at all;
* memory per cached AAA subscriber beyond the binding (in-process engines in forked children:
  tracemalloc, and RSS without tracemalloc).

Wall-clock rates on a shared machine are bounded by the load generator as much as by the home agent:
each run also reports replies per second of the home agent's own CPU time (``per_ha_cpu_second``).
The last line (``summary:``) holds the run's figures and per-round ratio medians as JSON, to set
several runs beside each other.

    .venv/bin/python bench/aaa.py [--count 5000] [--rate 2500] [--rounds 5] [--round-seconds 2]
                                  [--first-rounds 3] [--silent-rate 200] [--no-status-server]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "daemon"))
sys.path.insert(0, str(ROOT / "tests" / "aaa"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from aaa_lab import aaa_lab  # noqa: E402
from daemon_harness import MIPHA, NS  # noqa: E402

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
        f"<mobile-node><name>c{i}</name><nai>local{i}@example.net</nai><address-pool>local-pool</address-pool>"
        f"<security-association><spi>256</spi><key>{key}</key></security-association></mobile-node>"
        for i in range(1, configured + 1)
    )
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>bench</name><netns>{netns}</netns>
  <home-agent><address>{HA}</address><max-lifetime>3600</max-lifetime>
    <authentication>local-then-aaa</authentication></home-agent>{nodes}
  <aaa><server><address>127.0.0.1</address><secret>{SECRET}</secret></server>
    <lookup-password>lookup-pass</lookup-password><timeout>1000</timeout><retries>1</retries>
    <accounting>false</accounting></aaa>
  <address-pool><name>bench-pool</name><range><start>10.90.0.1</start><end>10.90.255.254</end></range></address-pool>
  <address-pool><name>local-pool</name><range><start>10.91.0.1</start><end>10.91.255.254</end></range></address-pool>
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


#: The home agent's process id, to read its CPU time (set once the daemon runs).
HA_PID = 0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread (the home agent's event loop) has waited for a CPU while
    runnable (/proc/PID/schedstat, second field): what a busy box takes from it."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def load(
    netns: str,
    count: int,
    rate: float,
    duration: float,
    *,
    first: int = 1,
    static: bool = False,
    port: int | None = None,
) -> dict:
    """One ``mipha mn load`` run; ``per_ha_cpu_second``: replies per second of the home agent's CPU, the
    figure a busy shared machine distorts least (its wall-clock rate is there too).  ``port``: to the
    signing echo there instead of the home agent."""
    before = _cpu_seconds(HA_PID) if HA_PID else 0.0
    waited = _runqueue_wait(HA_PID) if HA_PID else 0.0
    generator = _load(netns, count, rate, duration, first=first, static=static, port=port)
    report = json.loads(generator.communicate()[0])
    if port is not None:
        return report
    if HA_PID:
        used = _cpu_seconds(HA_PID) - before
        report["ha_cpu_s"] = round(used, 3)
        report["ha_runqueue_wait_s"] = round(_runqueue_wait(HA_PID) - waited, 3)
        report["per_ha_cpu_second"] = round(report["replies"] / used) if used > 0 else None
        replies = report["replies"]
        report["ha_cpu_us_per_reply"] = round(used / replies * 1e6, 1) if replies else None  # 10 ms ticks
    return report


def _load(
    netns: str, count: int, rate: float, duration: float, *, first: int, static: bool, port: int | None = None
) -> subprocess.Popen:
    nodes = ["--nai-pattern", "local{i}@example.net" if static else "bench{i}@example.net"]
    where = [] if port is None else ["--port", str(port)]
    command = [
        "ip", "netns", "exec", netns, MIPHA, "mn", "--ha", HA, "--key", KEY.encode().hex(), "--spi", "256",
        "--lifetime", "3600", "--timeout", "3", "--retries", "0", *where, "--json", "load",
        "--count", str(count), *nodes, "--first-index", str(first),
        "--coa", "10.88.0.1", "--rate", str(rate), "--duration", str(duration), "--window", "1024",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def engine_costs(count: int = 20000) -> dict:
    """In-process engine CPU time (not wall-clock: a busy box stretches that) per datagram: a configured
    node's renewal beside a cached AAA node's (the same shape: a fixed home address and the NAI; the
    smallest of three alternate runs each) and beside a configured node's without NAI (MN-HA alone:
    the layout the codec, the node look-up and the decision take by short cuts; AAA nodes must name
    their NAI), a new AAA registration becoming a look-up, one denied at once (no server reachable)."""
    from ipaddress import IPv4Address

    from ha.aaa.config import AaaConfig, AaaServer
    from ha.aaa.profile import AaaProfile
    from ha.engine.aaa import AaaAccepted
    from ha.engine.config import AddressPool, HomeAgentConfig, MobileNode, VirtualRouterConfig
    from ha.engine.home_agent import HomeAgent
    from ha.mn.session import UNSPECIFIED, MobileNodeSession
    from ha.protocol import SecurityAssociation
    from ha.protocol.constants import AuthAlgorithm

    ha_address, coa = IPv4Address(HA), IPv4Address("10.88.0.1")
    sa = SecurityAssociation(256, KEY.encode())

    def engine() -> HomeAgent:
        home = IPv4Address("10.91.0.1")
        local = MobileNode("c1", home_address=home, nai="c1@x", security_associations=[sa])
        return HomeAgent(VirtualRouterConfig(
            "m", home_agent=HomeAgentConfig(ha_address, authentication="local-then-aaa"),
            address_pools=[AddressPool("p", ((IPv4Address("10.0.0.1"), IPv4Address("10.3.255.254")),))],
            mobile_nodes=[local],
            aaa=AaaConfig(servers=(AaaServer(IPv4Address("127.0.0.1"), b"s"),), max_pending=count + 1),
        ))  # fmt: skip

    def timed(ha: HomeAgent, datagrams: list[bytes], wall: float) -> float:
        started, source = time.process_time(), ("10.88.0.1", 434)
        for data in datagrams:
            ha.handle_datagram(data, source=source, received_on=ha_address, now=1.0, wallclock=wall)
            ha.drain_intents()
            ha.drain_events()
        return (time.process_time() - started) / len(datagrams) * 1e6

    wall = time.time()
    local = MobileNodeSession(ha_address, IPv4Address("10.91.0.1"), coa, sa, nai="c1@x")
    renewals = [local.build(local.next_identification(wall + i * 1e-4)) for i in range(count)]
    cached = MobileNodeSession(ha_address, IPv4Address("10.92.0.1"), coa, sa, nai="a1@x")
    first = cached.build(cached.next_identification(wall))
    cached_renewals = [cached.build(cached.next_identification(wall + (i + 1) * 1e-4)) for i in range(count)]
    profile = AaaProfile("a1@x", 256, KEY.encode(), AuthAlgorithm.HMAC_MD5, IPv4Address("10.92.0.1"), None,
                         None, "erx", "framed-ip-address")  # fmt: skip

    def subscribed() -> HomeAgent:
        ha = engine()
        ha.handle_datagram(first, source=("10.88.0.1", 434), received_on=ha_address, now=1.0, wallclock=wall)
        assert ha.drain_aaa_lookups()
        assert ha.handle_aaa_answer("a1@x", AaaAccepted(profile), now=1.0, wallclock=wall) is not None
        assert ha.binding_count == 1
        return ha

    bare = MobileNodeSession(ha_address, IPv4Address("10.91.0.1"), coa, sa)  # no NAI: MN-HA alone
    bare_renewals = [bare.build(bare.next_identification(wall + i * 1e-4)) for i in range(count)]
    configured_us, cached_us, bare_us = [], [], []
    for _ in range(3):
        configured_us.append(timed(engine(), renewals, wall + 2))
        cached_us.append(timed(subscribed(), cached_renewals, wall + 2))
        bare_us.append(timed(engine(), bare_renewals, wall + 2))
    nodes = [MobileNodeSession(ha_address, UNSPECIFIED, coa, sa, nai=f"n{i}@x") for i in range(count)]
    firsts = [m.build(m.next_identification(wall)) for m in nodes]
    looked_up, denied = engine(), engine()
    denied.set_aaa_unreachable("bench")
    return {
        "renewal_us": round(min(configured_us), 1),
        "cached_renewal_us": round(min(cached_us), 1),
        "renewal_without_nai_us": round(min(bare_us), 1),
        "aaa_lookup_us": round(timed(looked_up, firsts, wall), 1),
        "aaa_denied_unreachable_us": round(timed(denied, firsts, wall), 1),
    }


def memory_per_subscriber(count: int) -> dict:
    """What the AAA cache costs beyond the binding: engine memory of ``count`` AAA subscribers with one
    binding each, less what ``count`` bindings cost — an engine of ``count`` configured pool nodes
    bound, less the same engine before any registration (its nodes' own entries are a configured
    node's cost, not the binding's) — less the empty AAA engine.  Every bound node has renewed once
    in place, so both engines hold a renewal cache entry per node (a renewing node's cost, configured
    or AAA: ``renewal_entry_traced_bytes_each``, from one more build without the renewals)."""
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

    def build(aaa: bool, trace: bool, register: bool = True, renew: bool = True) -> tuple[int, int]:
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
        wall = time.time()  # one instant for every request and decision: timestamps all fresh
        datagrams = [m.build(m.next_identification(wall)) for m in sessions]
        # the next Identification of each (1 ms later: newer whatever its low 16 bits) from the address the
        # pool gives it, in order (0.0.0.0 from one care-of address would be one cache key for every node)
        first = int(IPv4Address("10.0.0.1"))
        renewals = [
            m.build(m.next_identification(wall + 0.001), home_address=IPv4Address(first + i))
            for i, m in enumerate(sessions)
        ]
        renewals = renewals if register and renew else []
        del sessions
        gc.collect()
        if trace:
            tracemalloc.start()
        rss0 = _rss()
        engine = HomeAgent(config)
        for i, data in enumerate(datagrams if register else ()):
            engine.handle_datagram(data, source=("10.88.0.1", 434), received_on=IPv4Address(HA), now=1.0,
                                   wallclock=wall)  # fmt: skip
            if aaa:
                engine.drain_aaa_lookups()
                profile = AaaProfile(f"n{i}@x", 256, KEY.encode(), AuthAlgorithm.HMAC_MD5, None, "p", None,
                                     "erx", "framed-pool")  # fmt: skip
                engine.handle_aaa_answer(f"n{i}@x", AaaAccepted(profile), now=1.0, wallclock=wall)
            engine.drain_intents()
            engine.drain_events()
        for data in renewals:  # renewed in place: remembered by the renewal cache
            engine.handle_datagram(data, source=("10.88.0.1", 434), received_on=IPv4Address(HA), now=1.0,
                                   wallclock=wall)  # fmt: skip
        assert engine.binding_count == (count if register else 0), engine.binding_count
        # each renewal remembered, and the first registrations too: home 0.0.0.0 from one care-of
        # address, one key for all of them
        assert len(engine._renewals or ()) in (len(renewals), len(renewals) + 1), "renewals not remembered"
        gc.collect()
        rss = _rss() - rss0
        traced = tracemalloc.get_traced_memory()[0] if trace else 0
        tracemalloc.stop()
        del engine, nodes, config, renewals
        return traced, rss

    def forked(aaa: bool, trace: bool, register: bool = True, renew: bool = True) -> tuple[int, int]:
        """``build`` in a child process: RSS growth is not hidden by memory an earlier build freed."""
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            os.write(write, json.dumps(build(aaa, trace, register, renew)).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            result = json.loads(f.read())
        os.waitpid(pid, 0)
        return result[0], result[1]

    traced = [forked(aaa, True, register)[0] for aaa, register in _MEMORY_BUILDS]
    rss = [forked(aaa, False, register)[1] for aaa, register in _MEMORY_BUILDS]  # tracemalloc would inflate

    def beyond(figures: list[int]) -> int:
        aaa, local, configured, empty = figures
        return round((aaa - empty - (local - configured)) / count)

    return {
        "subscribers": count,
        "traced_bytes_each": beyond(traced),
        "rss_bytes_each": beyond(rss),
        "binding_traced_bytes_each": round((traced[1] - traced[2]) / count),
        "configured_node_entries_traced_bytes_each": round(traced[2] / count),
        "renewal_entry_traced_bytes_each": round((traced[1] - forked(False, True, True, False)[0]) / count),
    }


#: (AAA engine, registrations made): subscribers bound, configured nodes bound, configured nodes
#: unregistered, the AAA engine empty.
_MEMORY_BUILDS = ((True, True), (False, True), (False, False), (True, False))


def signing_echo() -> None:
    """Child process (in the bench's namespace): the floor this box and the load generator give a
    Python server — a blocking loop answering every request 0 with its NAI echoed and an HMAC-MD5
    MN-HA authenticator (what ``mipha mn load`` needs to count it accepted), nothing decided or kept."""
    from ha.protocol import SecurityAssociation

    sign = SecurityAssociation(256, KEY.encode()).authenticator
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((HA, 0))
    print(sock.getsockname()[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, peer = recvfrom(2048)
        if len(data) < 46:
            continue
        covered = b"\x03\x00" + data[2:12] + data[16:-22] + b"\x20\x14" + data[-20:-16]
        sendto(covered + sign(covered), peer)


def _clear_bindings(m, timeout: float = 30.0) -> None:
    """clear-bindings of the bench's router, until no binding and no AAA subscriber is left."""
    from lxml import etree

    rpc = f'<clear-bindings xmlns="{NS}"><virtual-router>bench</virtual-router></clear-bindings>'
    m.dispatch(etree.fromstring(rpc))
    counts = (
        f"<virtual-routers xmlns='{NS}'><virtual-router><name>bench</name><home-agent><statistics><bindings/>"
        "</statistics></home-agent><aaa><statistics><cached-subscribers/></statistics></aaa></virtual-router>"
        "</virtual-routers>"
    )
    deadline = time.monotonic() + timeout
    while True:
        root = etree.fromstring(m.get(filter=("subtree", counts)).data_xml.encode())
        left = [int(e.text or 0) for e in root.iter(f"{{{NS}}}bindings", f"{{{NS}}}cached-subscribers")]
        if len(left) == 2 and not any(left):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"bindings / subscribers left after clear-bindings: {left}")
        time.sleep(0.2)


def _with_registrations(
    netns: str, first: int, count: int, args: argparse.Namespace, rounds: list[dict], n: int
) -> dict:
    """One round of configured renewals (appended to ``rounds``) while ``args.silent_rate`` first
    registrations/s of NAIs ``bench<first>``... arrive, from half a second before it; their report."""
    waiting = _load(netns, count, args.silent_rate, args.round_seconds + 0.5, first=first, static=False)
    time.sleep(0.5)
    rounds.append(load(netns, n, 0, args.round_seconds, static=True))
    return json.loads(waiting.communicate()[0])


def _codes(reports: list[dict]) -> dict[str, int]:
    codes: dict[str, int] = {}
    for report in reports:
        for code, count in report["codes"].items():
            codes[code] = codes.get(code, 0) + count
    return codes


def _wait_for_probe_answer(m, answers: int, timeout: float = 30.0) -> None:
    """Until the RADIUS server has answered more Status-Server probes than ``answers`` (counted while
    it was silent): the home agent found it dead and uses it again from that answer on."""
    deadline = time.monotonic() + timeout
    while _server_statistics(m).get("status-server-answers", 0) <= answers:
        if time.monotonic() > deadline:
            raise RuntimeError("the RADIUS server did not answer a Status-Server probe")
        time.sleep(0.1)


def _server_statistics(m) -> dict[str, int]:
    from lxml import etree

    q = f"{{{NS}}}"
    stats = f"<virtual-routers xmlns='{NS}'><virtual-router><aaa><server><statistics/></server></aaa>"
    reply = m.get(filter=("subtree", stats + "</virtual-router></virtual-routers>"))
    root = etree.fromstring(reply.data_xml.encode())
    element = next(root.iter(q + "statistics"), None)
    if element is None:
        return {}
    return {etree.QName(c).localname: int(c.text) for c in element if c.text and c.text.isdigit()}


def _ratios(over: list[dict], under: list[dict], key: str) -> list[float]:
    """Each round of ``over`` divided by its interleaved round of ``under``, sorted."""
    return sorted(a[key] / b[key] for a, b in zip(over, under, strict=True) if a[key] and b[key])


def _spread(ratios: list[float]) -> str:
    """median (min..max)"""
    if not ratios:
        return "-"
    return f"median {statistics.median(ratios):.0%} ({ratios[0]:.0%}..{ratios[-1]:.0%})"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-seconds", type=float, default=2.0, help="length of each renewal round")
    parser.add_argument(
        "--first-rounds",
        type=int,
        default=3,
        help="rounds of first registrations (AAA, configured, signing echo in turn; clear-bindings between)",
    )
    parser.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--silent-rate", type=float, default=200, help="AAA registrations/s while RADIUS is silent"
    )
    parser.add_argument(
        "--no-status-server",
        action="store_true",
        help="FreeRADIUS ignores Status-Server: a silent server is found out by timeouts alone",
    )
    args = parser.parse_args()
    if args.echo:
        return signing_echo()
    loadavg_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="mipha-bench-aaa-"))
    per_round = math.ceil(args.silent_rate * (args.round_seconds + 0.5))
    subscribers = users(args.count + args.rounds * per_round)  # + normal rounds' newcomers
    with contextlib.ExitStack() as cleanup:  # last in, first ended: the echo, then the lab
        lab = cleanup.enter_context(
            aaa_lab(tmp, name="bench-aaa", secret=SECRET, addresses=(f"{HA}/32",), users=subscribers,
                    status_server=not args.no_status_server)
        )  # fmt: skip
        netns, radiusd = lab.netns, lab.radiusd
        assert radiusd.proc is not None
        ceiling = asyncio.run(radius_ceiling(netns, args.count))
        daemon = lab.start_daemon(config(netns, args.count))
        global HA_PID
        assert daemon.proc is not None
        HA_PID = daemon.proc.pid
        n, duration = args.count, args.count / args.rate
        per_round = math.ceil(args.silent_rate * (args.round_seconds + 0.5))
        echo = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, __file__, "--echo"],
            stdout=subprocess.PIPE,
            text=True,
        )
        cleanup.callback(_end, echo)
        assert echo.stdout is not None
        echo_port = int(echo.stdout.readline())
        firsts: list[dict] = []  # each round: RADIUS, configured nodes, the signing echo, same rate
        for r in range(args.first_rounds):
            if r:  # the same NAIs again: first registrations, looked up anew (the subscribers went)
                with daemon.connect() as m:
                    _clear_bindings(m)
            firsts.append(
                {
                    "load_average": os.getloadavg()[0],
                    "aaa": load(netns, n, args.rate, duration),
                    "configured": load(netns, n, args.rate, duration, static=True),
                    "echo": load(netns, n, args.rate, duration, port=echo_port),
                }
            )
        first = firsts[-1]["aaa"]
        rounds = args.rounds
        cached, configured = [], []
        for _ in range(rounds):  # interleaved: a busy shared machine drifts less between the two
            cached.append(load(netns, n, 0, args.round_seconds))
            configured.append(load(netns, n, 0, args.round_seconds, static=True))
        normal, silent, normal_aaa, waiting_reports = [], [], [], []
        silenced: int | None = None  # Status-Server answers counted while RADIUS was silent and failed
        with daemon.connect() as m:
            for r in range(rounds):  # interleaved: each silent round beside the normal one just before it
                if silenced is not None:  # found dead in the silent round: in use again after a probe
                    _wait_for_probe_answer(m, silenced)
                # normal: RADIUS answers the same arrival of first registrations (subscribers it accepts)
                normal_aaa.append(
                    _with_registrations(netns, n + 1 + r * per_round, per_round, args, normal, n)
                )
                before = _server_statistics(m)
                os.kill(radiusd.proc.pid, signal.SIGSTOP)  # silent (no ICMP either)
                unknown = n + 1 + (rounds + r) * per_round  # NAIs nobody asked for (nor answers)
                waiting_reports.append(_with_registrations(netns, unknown, per_round, args, silent, n))
                after = _server_statistics(m)
                failed = after.get("timeouts", 0) > before.get("timeouts", 0) and not args.no_status_server
                silenced = after.get("status-server-answers", 0) if failed else None
                os.kill(radiusd.proc.pid, signal.SIGCONT)
        codes, normal_codes = _codes(waiting_reports), _codes(normal_aaa)
        memory = memory_per_subscriber(20000)
        costs = engine_costs()

        def med(reports: list[dict], key: str = "rate") -> float:
            return statistics.median(r[key] for r in reports)

        def p99s(kind: str) -> list[float]:
            return [f[kind]["latency_ms"]["p99"] for f in firsts]

        def rates(kind: str) -> list[float]:
            return [f[kind]["rate"] for f in firsts]

        def waits(kind: str) -> list[float]:
            return [f[kind]["ha_runqueue_wait_s"] for f in firsts]

        def cpu_us(kind: str) -> list[float]:
            return [f[kind]["ha_cpu_us_per_reply"] for f in firsts]

        cpu = "per_ha_cpu_second"
        ratios = {
            "cached_vs_configured_rate": _ratios(cached, configured, "rate"),
            "cached_vs_configured_per_ha_cpu": _ratios(cached, configured, cpu),
            "silent_vs_normal_rate": _ratios(silent, normal, "rate"),
            "silent_vs_normal_per_ha_cpu": _ratios(silent, normal, cpu),
        }
        summary = {
            "load_average": [loadavg_before, os.getloadavg()],
            "freeradius_ceiling_rate": ceiling["rate"],
            "first_rate": statistics.median(rates("aaa")),
            "first_p99_ms": p99s("aaa"),
            "first_configured_rate": statistics.median(rates("configured")),
            "first_configured_p99_ms": p99s("configured"),
            "first_echo_p99_ms": p99s("echo"),
            "first_ha_runqueue_wait_s": waits("aaa"),
            "first_configured_ha_runqueue_wait_s": waits("configured"),
            "first_ha_cpu_us": cpu_us("aaa"),
            "first_configured_ha_cpu_us": cpu_us("configured"),
            "first_load_average": [round(f["load_average"], 2) for f in firsts],
            **{name: round(statistics.median(r), 3) if r else None for name, r in ratios.items()},
            "memory_traced_bytes": memory["traced_bytes_each"],
            "memory_rss_bytes": memory["rss_bytes_each"],
            "renewal_entry_traced_bytes": memory["renewal_entry_traced_bytes_each"],
        }
        figures = {
            "freeradius_ceiling": ceiling,
            "first_registrations": firsts,
            "renewals_cached_aaa": cached,
            "renewals_configured": configured,
            "renewals_configured_normal_interleaved": normal,
            "renewals_configured_radius_silent": silent,
            "aaa_registrations_while_normal": normal_aaa,
            "aaa_registrations_while_silent": waiting_reports,
            "memory": memory,
            "engine_costs": costs,
            "ratios_per_round": ratios,
        }
        print(json.dumps(figures, indent=1))
        silence = "ignored" if args.no_status_server else "answered before"
        print(
            f"load average before/after: {loadavg_before[0]:.2f} / {os.getloadavg()[0]:.2f}\n"
            f"FreeRADIUS alone (bare loop, 256 in flight): {ceiling['rate']:.0f} Access-Requests/s, "
            f"p99 {ceiling['p99_ms']} ms\n"
            f"first registrations, offered {args.rate:.0f}/s, {len(firsts)} rounds of RADIUS / configured "
            f"nodes / the signing echo in turn (load average {summary['first_load_average']}): "
            f"via RADIUS {rates('aaa')}/s, p99 {p99s('aaa')} ms (last round: accepted "
            f"{first['accepted']}/{first['transactions']}, p50 {first['latency_ms']['p50']} ms); configured "
            f"nodes {rates('configured')}/s, p99 {p99s('configured')} ms; signing echo {rates('echo')}/s, "
            f"p99 {p99s('echo')} ms; the home agent's loop waited for a CPU {waits('aaa')} s (RADIUS "
            f"rounds), {waits('configured')} s (configured); the home agent's CPU per first registration "
            f"{cpu_us('aaa')} µs via RADIUS, {cpu_us('configured')} µs configured\n"
            f"renewals, unpaced, {rounds} interleaved rounds: cached AAA {med(cached):.0f}/s vs configured "
            f"{med(configured):.0f}/s, per round {_spread(ratios['cached_vs_configured_rate'])}; per HA "
            f"CPU second {med(cached, cpu):.0f} vs {med(configured, cpu):.0f}, per round "
            f"{_spread(ratios['cached_vs_configured_per_ha_cpu'])}\n"
            f"configured renewals while RADIUS is silent (Status-Server {silence}), {rounds} rounds each "
            f"beside a normal one (RADIUS answering), {args.silent_rate:.0f} first AAA registrations/s "
            f"arriving in both: {med(silent):.0f}/s vs {med(normal):.0f}/s, per round "
            f"{_spread(ratios['silent_vs_normal_rate'])}; per HA CPU second {med(silent, cpu):.0f} vs "
            f"{med(normal, cpu):.0f}, per round {_spread(ratios['silent_vs_normal_per_ha_cpu'])}; "
            f"the AAA registrations got {codes} (silent), {normal_codes} (normal)\n"
            f"engine CPU in-process: a configured renewal {costs['renewal_us']} µs, a cached AAA node's "
            f"{costs['cached_renewal_us']} µs (a configured node's without NAI, MN-HA alone: "
            f"{costs['renewal_without_nai_us']} µs), a new AAA registration "
            f"becoming a look-up {costs['aaa_lookup_us']} µs, one denied at once (no server reachable) "
            f"{costs['aaa_denied_unreachable_us']} µs\n"
            f"memory per cached AAA subscriber beyond the binding: {memory['traced_bytes_each']} B traced, "
            f"{memory['rss_bytes_each']} B RSS (its renewal cache entry, as any renewing node's, "
            f"configured or AAA: {memory['renewal_entry_traced_bytes_each']} B traced)\n"
            f"summary: {json.dumps(summary)}"
        )


def _end(child: subprocess.Popen) -> None:
    child.terminate()
    child.wait(timeout=10)


if __name__ == "__main__":
    main()
