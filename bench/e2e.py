"""The whole product under load (issue 6): ``mipha run`` with the tun data plane, driven over NETCONF and UDP.

    .venv/bin/python bench/e2e.py                          # 100,000 bindings (2-3 minutes, root)
    .venv/bin/python bench/e2e.py --proxy-arp interface    # <proxy-arp>interface</proxy-arp>
    .venv/bin/python bench/e2e.py --nodes 20000            # smaller, for a smoke run

Topology (namespaces with unique names, removed whatever happens)::

    hl ──hl0══home0 10.64.0.1/15── ha ──tr0 192.0.2.1/24══mn0 192.0.2.10/24── mn
       home link peer   (HA address, table 434)          transit        care-of address, load generator

1. The daemon starts with ``--dataplane tun`` (the kernel is programmed: one host route in table 434
   and one proxy-ARP neighbour entry per binding: ``proxy-arp`` per-address, the YANG default).
   Over NETCONF (raw SSH client) a virtual router with N static mobile nodes (consecutive home
   addresses in 10.64.0.0/15, one HMAC-MD5 SA each) is written into the candidate and committed;
   both times are printed.
2. ``mipha mn load`` runs in the mobile node's namespace, unpaced, in rounds over disjoint home
   address ranges so that every request is a *first* registration (each one adds a route and a
   proxy entry); after each round the bench waits until the kernel holds a route per binding
   (``ip route show table 434``) and, per-address, a proxy-ARP entry per binding (``ip neigh show
   proxy``), so the rate counts bindings actually programmed.  Baseline: the same load against a
   bare UDP echo loop in the HA namespace (same path, same client).  Beside the wall-clock rates, the
   daemon's CPU time per registration (user and system, all threads): the machine's other load does
   not move it.
3. ``<get>`` with a subtree filter selecting every binding, until the last byte of the reply (median,
   min and max of 5, and the daemon's CPU time per read); and a ``<get>`` of one binding by key
   (push-down).  Beside them: ``<get-config>`` of the N mobile nodes
   from the same server (same size class, no operational state) and the Netopeer2 figure of the issue.
4. Daemon memory (``/proc/PID/status`` VmRSS / VmHWM) with the configuration loaded, before any
   binding, and at N bindings: bytes per binding.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "server"))
sys.path.insert(0, str(ROOT / "tests"))

from free_ports import free_port  # noqa: E402

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
M = "urn:mipha:yang:mipha-home-agent"
KEY_HEX = "00112233445566778899aabbccddeeff"
KEY_YANG = ":".join(KEY_HEX[i : i + 2] for i in range(0, 32, 2))
USER, PASSWORD = "admin", "bench-secret"
HA_ADDR = IPv4Address("10.64.0.1")
HOME_PREFIX = "10.64.0.0/15"  # 131,072 addresses: room for 100k static home addresses
HOME_START = IPv4Address("10.64.1.0")
TRANSIT_HA = IPv4Address("192.0.2.1")
COA = IPv4Address("192.0.2.10")
VR = "bench"
ECHO_PORT = 4340
NETOPEER2_GET_100K = 0.7  # s, the target: Netopeer2 reading back 100k config entries here
RATE_TARGET = 10_000  # registrations/s through the whole daemon, the target
NETOPEER2_EDIT_100K = "(Netopeer2: edit-config of 100k into running 3.6 s, bench/netconf.py)"


def sh(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done.stdout


def stop_child(proc: subprocess.Popen, timeout: float) -> None:
    """End a child we started, by PID: SIGTERM, then SIGKILL if it has not gone within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- topology --------------------------------------------------------------------------------------


@dataclass
class Topology:
    """Home link peer, home agent and mobile node namespaces; :meth:`destroy` removes all three."""

    tag: str = field(default_factory=lambda: f"{os.getpid():x}{uuid.uuid4().hex[:6]}")

    @property
    def hl(self) -> str:
        return f"mb-hl-{self.tag}"

    @property
    def ha(self) -> str:
        return f"mb-ha-{self.tag}"

    @property
    def mn(self) -> str:
        return f"mb-mn-{self.tag}"

    def create(self) -> None:
        for ns in (self.hl, self.ha, self.mn):
            sh(["ip", "netns", "add", ns])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh(
            [
                "ip",
                "-n",
                self.hl,
                "link",
                "add",
                "hl0",
                "type",
                "veth",
                "peer",
                "name",
                "home0",
                "netns",
                self.ha,
            ]
        )
        sh(
            [
                "ip",
                "-n",
                self.ha,
                "link",
                "add",
                "tr0",
                "type",
                "veth",
                "peer",
                "name",
                "mn0",
                "netns",
                self.mn,
            ]
        )
        for ns, dev, addr in (
            (self.hl, "hl0", "10.64.255.254/15"),
            (self.ha, "home0", f"{HA_ADDR}/15"),
            (self.ha, "tr0", f"{TRANSIT_HA}/24"),
            (self.mn, "mn0", f"{COA}/24"),
        ):
            sh(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            sh(["ip", "-n", ns, "link", "set", dev, "up"])
        sh(["ip", "-n", self.mn, "route", "add", HOME_PREFIX, "via", str(TRANSIT_HA)])

    def destroy(self) -> None:
        for ns in (self.hl, self.ha, self.mn):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    def routes(self) -> int:
        """Host routes in mipha's table: what the kernel actually forwards."""
        done = subprocess.run(
            ["ip", "-n", self.ha, "route", "show", "table", "434"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode and "does not exist" not in done.stderr:  # no table yet = no route
            raise RuntimeError(f"ip route show table 434: {done.stderr.strip()}")
        return unique_lines(done.stdout)

    def proxies(self) -> int:
        """Proxy-ARP entries (per-address mode)."""
        return unique_lines(sh(["ip", "-n", self.ha, "neigh", "show", "proxy"]))


def unique_lines(dump: str) -> int:
    """Distinct lines of a dump: a netlink dump taken while entries are being inserted can list one
    entry twice (the proxy table's chains shift under it), so only distinct lines count."""
    return len({line for line in dump.splitlines() if line.strip()})


# -- the daemon ------------------------------------------------------------------------------------


class Daemon:
    """``mipha run`` as a child process with a temporary bootstrap file and state directory."""

    def __init__(self, tmp: Path, backend: str = "tun") -> None:
        from server.auth import hash_password

        self.tmp = tmp
        self.port = free_port()
        self.log = tmp / "daemon.log"
        (tmp / "mipha.toml").write_text(
            f"""[netconf]
listen = "127.0.0.1:{self.port}"
max-message-size = {256 * 1024 * 1024}
[[user]]
name = "{USER}"
password-hash = "{hash_password(PASSWORD, n_log2=10)}"
groups = ["admin"]
[state]
dir = "{tmp / "state"}"
[dataplane]
backend = "{backend}"
"""
        )
        self.proc: subprocess.Popen | None = None
        self.stop_seconds = 0.0

    def start(self) -> None:
        command = [sys.executable, "-m", "mipha.cli", "run", "--config", str(self.tmp / "mipha.toml"),
                   "--log-level", "warning"]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("daemon exited:\n" + self.log.read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("daemon did not listen:\n" + self.log.read_text())

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU time of the daemon, all threads (``/proc/PID/stat``); system time
        includes what the kernel spends on its netlink messages."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM in bytes."""
        assert self.proc is not None
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
        return out

    def stop(self) -> float:
        """SIGTERM (the daemon removes its kernel objects); returns how long the stop took."""
        if self.proc is None:
            return 0.0
        started = time.perf_counter()
        stop_child(self.proc, 60)
        return time.perf_counter() - started


# -- NETCONF ---------------------------------------------------------------------------------------


def config_xml(nodes: int, ha_ns: str, proxy_arp: str) -> bytes:
    """One virtual router with ``nodes`` static mobile nodes, built as a string (20 MB at 100k)."""
    first = int(HOME_START)
    parts = [
        f'<config xmlns="{NC}"><virtual-routers xmlns="{M}"><virtual-router><name>{VR}</name>'
        f"<netns>{ha_ns}</netns><router-id>{HA_ADDR}</router-id>"
        f"<home-agent><address>{HA_ADDR}</address><home-interface>home0</home-interface>"
        f"<max-lifetime>1800</max-lifetime><proxy-arp>{proxy_arp}</proxy-arp></home-agent>"
    ]
    sa = f"<security-association><spi>256</spi><key>{KEY_YANG}</key></security-association>"
    parts.extend(
        f"<mobile-node><name>mn{i}</name><home-address>{IPv4Address(first + i)}</home-address>{sa}"
        "</mobile-node>"
        for i in range(nodes)
    )
    parts.append("</virtual-router></virtual-routers></config>")
    return "".join(parts).encode()


def rpc(body: bytes, mid: str) -> bytes:
    return b'<rpc xmlns="%s" message-id="%s">%s</rpc>' % (NC.encode(), mid.encode(), body)


def bindings_filter(home: IPv4Address | None = None) -> bytes:
    key = f"<binding><home-address>{home}</home-address></binding>" if home is not None else ""
    return (
        f'<get><filter type="subtree"><virtual-routers xmlns="{M}"><virtual-router><name>{VR}</name>'
        f"<home-agent><bindings>{key}</bindings></home-agent></virtual-router></virtual-routers></filter></get>"
    ).encode()


def check_ok(reply: bytes) -> None:
    if b"<ok/>" not in reply:
        raise RuntimeError(f"unexpected reply: {reply[:800]!r}")


def timed_rpc(client, body: bytes, mid: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    client.send(rpc(body, mid))
    reply = client.recv()
    return time.perf_counter() - started, reply


# -- load ------------------------------------------------------------------------------------------


def echo(address: str, port: int) -> None:
    """Child process (in the HA namespace): the bare Python UDP echo loop of bench/registration.py."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((address, port))
    print(port, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, peer = recvfrom(2048)
        sendto(b"\x03" + data[1:12] + data[16:], peer)


def load(
    topo: Topology,
    *,
    count: int,
    start: IPv4Address,
    port: int,
    duration: float,
    window: int,
    rate: float = 0.0,
) -> dict:
    """One ``mipha mn load`` run in the mobile node's namespace (unpaced when ``rate`` is 0); its summary."""
    command = [
        "ip", "netns", "exec", topo.mn, sys.executable, "-m", "mipha.cli", "mn",
        "--ha", str(HA_ADDR), "--port", str(port), "--spi", "256", "--key", KEY_HEX, "--bind", str(COA),
        "--lifetime", "1800", "--json",
        "load", "--count", str(count), "--home-start", str(start), "--coa", str(COA),
        "--rate", str(rate), "--window", str(window), "--duration", str(duration),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    try:
        out, err = proc.communicate(timeout=duration + 120)
    except subprocess.TimeoutExpired:
        proc.kill()  # by PID: the process we started
        proc.communicate()
        raise RuntimeError("mipha mn load did not finish") from None
    if not out.strip():
        raise RuntimeError(f"mipha mn load printed nothing: {err[-2000:]}")
    return json.loads(out)


@dataclass
class Round:
    """One load round of first registrations."""

    first: int  # bindings present before the round
    new: int  # bindings it added (its first registrations)
    report: dict
    paced: bool  # a tail round: offered load, not a capacity figure
    kernel_lag: float  # after the last reply, until the kernel held a route (and proxy entry) per binding
    routes: int
    cpu: float  # daemon CPU seconds over the round and the kernel catch-up (user + system)
    system: float  # the system part

    @property
    def accepted(self) -> int:
        return int(self.report["accepted"])

    @property
    def renewals(self) -> int:
        return self.accepted - self.new

    @property
    def elapsed(self) -> float:
        return float(self.report["elapsed"])


def wait_kernel(topo: Topology, expected: int, proxies: bool, timeout: float = 60.0) -> tuple[float, int]:
    """Poll until table 434 holds ``expected`` routes and, with ``proxies``, as many proxy-ARP entries;
    (seconds waited, routes seen)."""
    started = time.perf_counter()
    while True:
        routes = topo.routes()
        done = routes >= expected and (not proxies or topo.proxies() >= expected)
        if done or time.perf_counter() - started > timeout:
            return time.perf_counter() - started, routes
        time.sleep(0.05)


def register_all(
    topo: Topology, daemon: Daemon, nodes: int, window: int, first_duration: float, proxies: bool
) -> list[Round]:
    """Bind every node, in unpaced rounds sized so that they do not wrap around to renewals.

    ``run_load`` launches nodes in order and reuses one only after every other was launched, so a round
    whose sending stops before its last node never repeats a node.  Each round's duration is sized from
    the previous round's rate to stop at 75 % of its node range; the remainder goes to the next round,
    and the last half second of work to one round paced at half the measured rate (which may renew a
    few nodes: it offers 2 % more than the remainder so that its last tick does not fall short).  A
    round that wraps anyway reports its renewals.
    """
    rounds: list[Round] = []
    bound = 0
    estimate = 25_000.0  # registrations/s assumed for sizing the first round
    while bound < nodes and len(rounds) < 30:
        remaining = nodes - bound
        paced = bool(rounds) and remaining <= estimate / 2
        if paced:
            duration = remaining / (estimate / 2)
            rate = (remaining * 1.02 + 2) / duration  # the 1 ms ticker's last tick may fall short
        else:
            duration, rate = min(first_duration, 0.75 * remaining / estimate), 0.0
        cpu_before = daemon.cpu_seconds()
        report = load(
            topo,
            count=remaining,
            start=HOME_START + bound,
            port=434,
            duration=duration,
            window=window,
            rate=rate,
        )
        if report["accepted"] < report["transactions"]:
            raise RuntimeError(f"not every registration was accepted: {report}")
        previous = bound
        bound += min(remaining, int(report["accepted"]))
        lag, routes = wait_kernel(topo, bound, proxies)
        user, system = (
            after - before for after, before in zip(daemon.cpu_seconds(), cpu_before, strict=True)
        )
        rounds.append(Round(previous, bound - previous, report, paced, lag, routes, user + system, system))
        if not paced and report["elapsed"] > 0:
            estimate = max(1000.0, report["accepted"] / report["elapsed"])
    return rounds


@contextlib.contextmanager
def daemon_in_topology() -> Iterator[tuple[Topology, Daemon]]:
    """Fresh namespaces, state directory and daemon; everything ended and removed on the way out."""
    topo = Topology()
    tmp = tempfile.TemporaryDirectory(prefix="mipha-e2e-")
    daemon = Daemon(Path(tmp.name))
    try:
        topo.create()
        daemon.start()
        yield topo, daemon
    except BaseException:
        if daemon.log.exists():
            tail = [line[:300] for line in daemon.log.read_text().splitlines()[-8:]]
            print("daemon log (last lines, cut at 300 characters):\n" + "\n".join(tail))
        raise
    finally:
        daemon.stop_seconds = daemon.stop()
        topo.destroy()
        tmp.cleanup()


def configure(client, nodes: int, ha_ns: str, proxy_arp: str = "per-address") -> tuple[float, float]:
    """edit-config of ``nodes`` mobile nodes into the candidate, then commit: (edit s, commit s)."""
    document = config_xml(nodes, ha_ns, proxy_arp)
    edit = b"<edit-config><target><candidate/></target>%s</edit-config>" % document
    t_edit, reply = timed_rpc(client, edit, "edit")
    check_ok(reply)
    t_commit, reply = timed_rpc(client, b"<commit/>", "commit")
    check_ok(reply)
    return t_edit, t_commit


def latency(report: dict) -> str:
    lat = report["latency_ms"]
    return f"p50 {lat['p50']:7.1f} ms  p99 {lat['p99']:7.1f} ms"


# -- report ----------------------------------------------------------------------------------------


def print_registrations(baseline: dict, rounds: list[Round], window: int) -> None:
    """Per round: wall-clock rate, latency, kernel catch-up, and the daemon's CPU per registration (the
    last does not depend on what else the machine runs: 1 / it is what one free core would sustain)."""
    echo_rate = baseline["rate"]
    print(f"\n## 2. First registrations through the daemon (mipha mn load, window {window})")
    print(f"  bare UDP echo in the HA namespace (baseline)   {echo_rate:9,.0f} /s   {latency(baseline)}")
    for r in rounds:
        span = f"{r.first:>7,} -> {r.first + r.new:>7,}"
        rate = r.accepted / r.elapsed if r.elapsed else 0.0
        if r.paced:
            print(f"  bindings {span}   tail, paced at {rate:,.0f} /s (not a capacity figure)")
            continue
        programmed = r.new / (r.elapsed + r.kernel_lag)
        renewals = f"  ({r.renewals} renewals)" if r.renewals else ""
        print(
            f"  bindings {span}   {rate:7,.0f} /s   {latency(r.report)}   "
            f"kernel <= +{r.kernel_lag * 1000:4.0f} ms -> {programmed:7,.0f} /s programmed   "
            f"daemon CPU {r.cpu / max(1, r.accepted) * 1e6:4.0f} us each "
            f"(system {r.system / max(1, r.accepted) * 1e6:4.0f}){renewals}"
        )
    measured = [r for r in rounds if not r.paced]
    new = sum(r.new for r in measured)
    wall = sum(r.elapsed + r.kernel_lag for r in measured)
    rate = new / wall if wall else 0.0
    cpu = sum(r.cpu for r in measured)
    per_cpu = sum(r.accepted for r in measured) / cpu if cpu else 0.0
    verdict = "met" if rate >= RATE_TARGET else "NOT met"
    print(
        f"  unpaced rounds, kernel programmed: {rate:7,.0f} /s over {new:,} bindings   ratio to echo "
        f"{rate / echo_rate:.3f}   target >= {RATE_TARGET:,}/s {verdict}"
    )
    print(f"  per daemon CPU second (all threads): {per_cpu:7,.0f} registrations")


def count_bindings(reply: bytes) -> int:
    """``binding`` elements in a reply (with or without their own namespace declaration)."""
    return len(BINDING_TAG.findall(reply))


def measure_gets(client, daemon: Daemon, nodes: int) -> dict[str, float]:
    """Times (s) and sizes (bytes) of the three reads: the big ones 5 times (median, min, max, and
    the daemon's CPU seconds per read: the box's other load moves the wall clock, hardly that),
    the small one 20 times."""
    out: dict[str, float] = {}
    times, cpu = [], []
    for i in range(5):
        before = sum(daemon.cpu_seconds())
        took, reply = timed_rpc(client, bindings_filter(), f"g{i}")
        cpu.append(sum(daemon.cpu_seconds()) - before)
        times.append(took)
        out["all_bytes"], out["all_count"] = len(reply), count_bindings(reply)
        del reply
    out["all"], out["all_min"], out["all_max"] = statistics.median(times), min(times), max(times)
    out["all_cpu"] = statistics.median(cpu)
    home = HOME_START + nodes // 2
    times = []
    for i in range(20):
        took, reply = timed_rpc(client, bindings_filter(home), f"o{i}")
        times.append(took)
        out["one_count"] = count_bindings(reply) if f">{home}<".encode() in reply else 0
    out["one"] = statistics.median(times)
    times = []
    for i in range(5):
        took, reply = timed_rpc(client, b"<get-config><source><running/></source></get-config>", f"c{i}")
        times.append(took)
        out["config_bytes"] = len(reply)
        del reply
    out["config"] = statistics.median(times)
    return out


def print_gets(gets: dict[str, float], bindings: int) -> None:
    """The figures; a reply that does not hold what was asked for is flagged, its time is no figure."""
    verdict = "met" if gets["all"] <= NETOPEER2_GET_100K else "NOT met"
    if gets["all_count"] != bindings:
        verdict = f"INVALID: the reply holds {gets['all_count']:,.0f} bindings, expected {bindings:,}"
    print("\n## 3. NETCONF until the last byte (raw SSH client, median of 5; the one-binding get of 20)")
    print(
        f"  <get> all bindings ({gets['all_count']:,.0f}, {mb(gets['all_bytes'])})   {gets['all']:7.3f} s   "
        f"target <= {NETOPEER2_GET_100K} s (Netopeer2, 100k config entries): ratio "
        f"{gets['all'] / NETOPEER2_GET_100K:.2f} {verdict}"
    )
    print(
        f"      min {gets['all_min']:.3f} s, max {gets['all_max']:.3f} s; daemon CPU per <get> "
        f"{gets['all_cpu']:.2f} s (the reply is streamed: written while it is produced)"
    )
    print(
        f"  <get-config> of the mobile nodes ({mb(gets['config_bytes'])}, same server)   "
        f"{gets['config']:7.3f} s"
    )
    wrong = "" if gets["one_count"] == 1 else f"   INVALID: the reply holds {gets['one_count']:.0f} bindings"
    print(f"  <get> one binding by key (push-down, median of 20)   {gets['one'] * 1000:7.2f} ms{wrong}")


def print_memory(points: list[tuple[str, dict[str, int]]], bindings: int) -> None:
    print("\n## 4. Daemon memory, VmRSS / VmHWM")
    for label, m in points:
        print(f"  {label:<28} {mb(m['VmRSS']):>9} / {mb(m['VmHWM'])}")
    growth = dict(points)
    per = (growth["bindings"]["VmRSS"] - growth["configured, no binding"]["VmRSS"]) / max(1, bindings)
    print(f"  RSS growth per binding       {per:7.0f} B")


def run(nodes: int, window: int, duration: float, proxy_arp: str) -> None:
    """N bindings: configuration, registrations beside the echo baseline, the gets, memory."""
    from nc_rawclient import RawClient

    print(f"\n## {nodes:,} bindings, home-agent proxy-arp {proxy_arp}")
    with daemon_in_topology() as (topo, daemon):
        memory = [("idle", daemon.memory())]
        client = RawClient(daemon.port, USER, PASSWORD)
        try:
            t_edit, t_commit = configure(client, nodes, topo.ha, proxy_arp)
            memory.append(("configured, no binding", daemon.memory()))
            print(f"\n## 1. Configuration over NETCONF ({nodes:,} static mobile nodes, one SA each)")
            print(f"  edit-config into candidate     {t_edit:7.3f} s")
            print(f"  commit (validate + VR start)   {t_commit:7.3f} s")
            print(f"  together                       {t_edit + t_commit:7.3f} s   {NETOPEER2_EDIT_100K}")

            baseline = echo_baseline(topo, nodes, duration, window)
            rounds = register_all(topo, daemon, nodes, window, duration, proxy_arp == "per-address")
            memory.append(("bindings", daemon.memory()))
            bound = sum(r.new for r in rounds)
            print_registrations(baseline, rounds, window)
            routes, proxies = topo.routes(), topo.proxies()
            print(
                f"  kernel: {routes:,} routes in table 434, {proxies:,} proxy-ARP entries "
                f"({bound:,} bindings)"
            )

            print_gets(measure_gets(client, daemon, nodes), bound)
            memory.append(("after the <get>s", daemon.memory()))
            print_memory(memory, bound)
            late_routes, late_proxies = topo.routes(), topo.proxies()
            if (late_routes, late_proxies) != (routes, proxies):
                print(
                    f"\n  kernel after the <get>s: {late_routes:,} routes, {late_proxies:,} proxy-ARP entries"
                )
        finally:
            client.close()
    print(
        f"\n  daemon stop (SIGTERM, {nodes:,} routes and proxy entries removed): {daemon.stop_seconds:.1f} s"
    )


def echo_baseline(topo: Topology, nodes: int, duration: float, window: int) -> dict:
    """The same load against the bare UDP echo loop, run in the HA namespace on the HA address."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", topo.ha, sys.executable, __file__, "--echo", str(HA_ADDR), str(ECHO_PORT)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return load(topo, count=nodes, start=HOME_START, port=ECHO_PORT, duration=duration, window=window)
    finally:
        stop_child(proc, 10)


BINDING_TAG = re.compile(rb"<binding[\s>]")


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000, help="mobile nodes and bindings")
    parser.add_argument("--window", type=int, default=1024, help="requests in flight")
    parser.add_argument("--duration", type=float, default=3.0, help="longest load round (s)")
    parser.add_argument(
        "--proxy-arp",
        choices=("per-address", "interface"),
        default="per-address",
        help="home-agent proxy-arp",
    )
    parser.add_argument("--echo", nargs=2, metavar=("ADDRESS", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo:
        return echo(args.echo[0], int(args.echo[1]))
    if os.geteuid() != 0:
        raise SystemExit("bench/e2e.py needs root (network namespaces)")
    loadavg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# mipha end to end, tun data plane ({os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"load average {loadavg})"
    )
    run(args.nodes, args.window, args.duration, args.proxy_arp)


if __name__ == "__main__":
    main()
