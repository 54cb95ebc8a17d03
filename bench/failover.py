"""Hot standby under load (issue 15): registration rate and latency with replication, etcd leader
loss, and kill -9 failover.

    .venv/bin/python bench/failover.py                 # 2,000 nodes (about 2-3 minutes, root)
    .venv/bin/python bench/failover.py --nodes 500     # smaller
    .venv/bin/python bench/failover.py --etcd-rounds 0 --compare any-member --compare tmpfs
    .venv/bin/python bench/failover.py --etcd-rounds 0 --leader-first   # the first endpoint's member leads

Topology: ``tests/redundancy/pair.py`` (two home-agent namespaces on one home link behind a router,
mobile nodes on the transit side), a 3-member etcd cluster on loopback (``etcd_cluster.py``, the lab's
heartbeat 50 ms / election timeout 500 ms unless ``--etcd-heartbeat-ms`` / ``--etcd-election-ms``), both
started here and stopped by PID.

1. **Rate.** ``mipha mn load`` (unpaced, window 256) against one daemon without ``[redundancy]`` —
   the baseline — then against the active daemon of a pair: registrations/s and latency p50/p99,
   same nodes, same run.  Unpaced, latency is window / rate (a closed loop).
2. **Latency at a fixed rate.** The same, paced at ``--paced`` registrations/s (default 5,000): the
   latency a registration sees at that load, replicated or not.  For the replicated phase, where the
   time went, read from /metrics before and after it: the active daemon's replication stages
   (``mipha_replication_seconds``), each etcd member's WAL fdatasync, backend commit and server-side
   Txn time (the members run with ``--metrics=extensive``), the CPU of every process and per
   replicated change, and which members serve watches (the standby's).
   ``--compare any-member``: the same phase once more with ``leader-route = false`` (the first
   endpoint's member a follower); ``--compare tmpfs``: with a second etcd cluster whose data is on
   /dev/shm — a lab figure showing what the disk costs, never a configuration to run (a member on
   tmpfs loses its log on a host reboot).
3. **etcd leader loss.** ``--nodes`` nodes renew every second; etcd's Raft leader is SIGKILLed
   (``--etcd-rounds`` times, restarted in between); printed: how long a probe node (a fresh
   registration every 20 ms, no retransmission) got no acceptance, beside etcd's own election time
   (from the members' logs) — and that the home agent did not fail over.
4. **Failover.** ``--nodes`` mobile nodes renew continuously (each 1 s after its previous answer,
   ``failover_load.py``) and a correspondent sends UDP to one home address every 20 ms; the active
   daemon is SIGKILLed; printed: how long until registrations are answered again (the probe) and
   until the stream reaches the care-of address through the tunnel again, how many nodes were
   acknowledged before the kill and how many of them the new active's op state lacks (the target
   is 0), and how long the new active's takeover itself took (its log).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "redundancy"))
sys.path.insert(0, str(ROOT / "tests"))

from etcd_cluster import EtcdCluster  # noqa: E402
from etcd_cluster import Member as EtcdMember  # noqa: E402
from pair import COA, HA, HOME_START, PairDaemon, Topology  # noqa: E402
from promstat import cpu_seconds, scrape, summary  # noqa: E402
from test_failover_daemons import Load, Traffic, bound_homes, redundancy  # noqa: E402

from ha.mn.session import MobileNodeSession  # noqa: E402
from ha.netns import run_in_netns  # noqa: E402
from ha.protocol import SecurityAssociation  # noqa: E402
from ha.protocol.constants import AuthAlgorithm, ReplayProtection  # noqa: E402
from mipha.lab_redundant import ETCD_ELECTION_MS, ETCD_HEARTBEAT_MS  # noqa: E402

KEY_HEX = "00112233445566778899aabbccddeeff"
KEY = bytes.fromhex(KEY_HEX)


def load(topo: Topology, nodes: int, duration: float, rate: float = 0, window: int = 256) -> dict:
    command = [
        "ip", "netns", "exec", topo.mn, sys.executable, "-m", "mipha.cli", "mn",
        "--ha", HA, "--spi", "256", "--key", KEY_HEX, "--bind", COA, "--lifetime", "1800", "--json",
        "load", "--count", str(nodes), "--home-start", HOME_START, "--coa", COA,
        "--rate", str(rate), "--window", str(window), "--duration", str(duration),
    ]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=duration + 120, check=False
    )
    if not out.stdout.strip():
        raise RuntimeError(f"mipha mn load printed nothing: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def line(label: str, report: dict) -> str:
    lat = report["latency_ms"]
    if not report["replies"]:
        return f"  {label:<40} no replies: {report}"
    return (
        f"  {label:<40} {report['rate']:>9,.0f} /s   p50 {lat['p50']:>6} ms   p99 {lat['p99']:>7} ms"
        f"   accepted {report['accepted']:,}/{report['transactions']:,} codes {report['codes']}"
    )


class Probe:
    """One more mobile node sending a fresh registration every 20 ms (never a retransmission) from
    the mobile node's namespace; the times of its accepted replies show when the home agent answers."""

    def __init__(self, topo: Topology, index: int) -> None:
        self.accepted: list[float] = []
        self.sock = run_in_netns(topo.mn, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((COA, 0))
        self.sock.settimeout(0.02)
        sa = SecurityAssociation(256, KEY, AuthAlgorithm.HMAC_MD5, ReplayProtection.TIMESTAMP)
        self.session = MobileNodeSession(
            home_agent=IPv4Address(HA), home_address=IPv4Address(HOME_START) + index,
            care_of_address=IPv4Address(COA), sa=sa, lifetime=1800,
        )  # fmt: skip
        self.sent: dict[int, int] = {}
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            identification = self.session.next_identification(time.time())
            self.sent[identification & 0xFFFF_FFFF] = identification
            with contextlib.suppress(OSError):
                self.sock.sendto(self.session.build(identification), (HA, 434))
            deadline = time.monotonic() + 0.02
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(2048)
                except (TimeoutError, OSError):
                    break
                token = MobileNodeSession.reply_token(data)
                sent = self.sent.pop(token, None) if token is not None else None
                if sent is None:
                    continue
                outcome = self.session.check_reply(data, sent, time.time())
                if outcome is not None and outcome.authenticated and outcome.code == 0:
                    self.accepted.append(time.time())

    def gap_after(self, since: float, window: float = 6.0) -> float:
        """The longest time without an acceptance from just before ``since`` until ``window`` seconds
        after it (inf when none came after it)."""
        times = [t for t in self.accepted if since - 0.5 <= t <= since + window]
        if not times or times[-1] <= since:
            return float("inf")
        return max(b - a for a, b in itertools.pairwise(times))

    def stop(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def takeover_seconds(daemon: PairDaemon) -> str:
    """The new active's takeover from its log: total, and per phase."""
    text = daemon.log.read_text()[daemon.offset :]
    found = re.findall(r"takeover ([0-9.]+) s; (read[^:]+): ([0-9./]+) s", text)  # not a resumption
    if not found:
        return "?"
    total, names, steps = found[-1]
    return f"{float(total):.3f} s ({names} {steps} s)"


def rates(
    topo: Topology, nodes: int, duration: float, paced: float, watch: Watch | None = None
) -> dict[str, dict]:
    load(topo, nodes, 2)  # first registrations: every node bound
    unpaced = load(topo, nodes, duration)
    if watch is not None:
        watch.begin()
    return {"unpaced": unpaced, "paced": load(topo, nodes, duration, rate=paced, window=4096)}


class Watch:
    """Where the replicated paced phase's time goes: the active daemon's replication stages (its
    /metrics), each etcd member's WAL fdatasync, backend commit and server-side Txn handling (their
    /metrics, ``--metrics extensive``), and the CPU every process used, read before and after."""

    def __init__(self, etcd: EtcdCluster, active: PairDaemon, standby: PairDaemon) -> None:
        self.etcd, self.active, self.standby = etcd, active, standby
        self.urls = {"daemon": f"http://127.0.0.1:{active.metrics_port}/metrics"}
        self.urls |= {m.name: f"http://127.0.0.1:{m.client_port}/metrics" for m in etcd.members}

    def _pids(self) -> dict[str, int]:
        pids = {"active daemon": self.active.proc.pid, "standby daemon": self.standby.proc.pid}  # type: ignore[union-attr]
        return pids | {f"etcd {m.name}": m.proc.pid for m in self.etcd.members if m.proc is not None}

    def _cpu(self) -> dict[str, float]:
        cpu = {name: cpu_seconds(pid) for name, pid in self._pids().items()}
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cpu | {"load generator": children.ru_utime + children.ru_stime}

    def begin(self) -> None:
        self.leader = self.etcd.leader().name
        self.watched = [m.name for m in self.etcd.members if watchers(m)]  # the standby's watch
        self.before = {name: scrape(url) for name, url in self.urls.items()}
        self.cpu_before, self.started = self._cpu(), time.monotonic()

    def report(self, brief: bool = False) -> list[str]:
        """Read after the load of the phase ended (the generator's CPU is known once it exited);
        ``brief``: the replies' total wait and the etcd leader's figures only."""
        wall = time.monotonic() - self.started
        cpu = {k: v - self.cpu_before.get(k, 0.0) for k, v in self._cpu().items()}
        after = {name: scrape(url) for name, url in self.urls.items()}
        diff = {name: after[name].minus(self.before[name]) for name in after}
        out = [
            f"  where the replicated paced phase's time went (etcd's Raft leader: {self.leader};"
            f" watches served by {', '.join(self.watched) or 'none'}):"
        ]
        for stage in ("total",) if brief else ("queued", "etcd", "ordered", "total"):
            counts = diff["daemon"].find("mipha_replication_seconds", stage=stage)
            out.append(f"    replication {stage:<8} {summary(counts)}")
        counters = diff["daemon"].counters
        sent = {
            k: counters.get(f"mipha_replication_{k}", 0)
            for k in ("transactions", "retries", "epoch_moves", "resent")
        }
        out.append(
            f"    replication transactions {sent['transactions']:,.0f}, sent again {sent['retries']:,.0f}"
            f" (epoch moved {sent['epoch_moves']:,.0f}, refused by a moved epoch {sent['resent']:,.0f})"
        )
        for m in self.etcd.members:
            if brief and m.name != self.leader:
                continue
            d = diff[m.name]
            role = "leader  " if m.name == self.leader else "follower"
            wal = d.find("etcd_disk_wal_fsync_duration_seconds")
            out.append(f"    etcd {m.name} {role} WAL fdatasync     {summary(wal)}")
            out.append(f"    etcd {m.name} {role} backend commit    "
                       f"{summary(d.find('etcd_disk_backend_commit_duration_seconds'))}")  # fmt: skip
            txn = d.find("grpc_server_handling_seconds", grpc_method="Txn")
            if max(txn.values(), default=0):
                out.append(f"    etcd {m.name} {role} Txn (server side) {summary(txn)}")
        if brief:
            return out
        shares = ", ".join(f"{name} {100 * used / wall:.0f} %" for name, used in cpu.items())
        out.append(f"    CPU over {wall:.1f} s (of one core): {shares}")
        changes = max(diff["daemon"].find("mipha_replication_seconds", stage="total").values(), default=0)
        if changes:
            etcd = {m.name: cpu.get(f"etcd {m.name}", 0.0) for m in self.etcd.members}
            per = 1e6 / changes
            out.append(
                f"    CPU per replicated change: etcd {sum(etcd.values()) * per:.0f} µs"
                f" (leader {etcd.get(self.leader, 0.0) * per:.0f} µs), active daemon"
                f" {cpu['active daemon'] * per:.0f} µs, standby {cpu['standby daemon'] * per:.0f} µs"
                f" ({changes:,.0f} changes)"
            )
        return out


def variant(
    base: Path,
    topo: Topology,
    etcd: EtcdCluster,
    name: str,
    nodes: int,
    duration: float,
    paced: float,
    **pair: bool,
) -> tuple[dict, list[str]]:
    """The replicated paced phase with another pair (``pair``: PairDaemon settings) or etcd cluster,
    both started here and stopped after it; returns the load's report and the brief breakdown."""
    a = PairDaemon(base, f"a-{name}", topo.a, etcd.endpoints, nodes + 1, **pair)
    b = PairDaemon(base, f"b-{name}", topo.b, etcd.endpoints, nodes + 1, **pair)
    try:
        a.start()
        a.wait_log("redundancy: active", 120)
        b.start()
        b.wait_log("mipha running", 120)
        load(topo, nodes, 2)
        watch = Watch(etcd, a, b)
        watch.begin()
        report = load(topo, nodes, duration, rate=paced, window=4096)
        return report, watch.report(brief=True)
    finally:
        b.stop()
        a.stop()  # resigns: the next pair's first member takes over at once


def move_leader_off(etcd: EtcdCluster, member: EtcdMember) -> None:
    """Make another member etcd's Raft leader if ``member`` is (``etcdctl move-leader``)."""
    if etcd.leader() is member:
        move_leader_to(etcd, next(m for m in etcd.members if m is not member))


def move_leader_to(etcd: EtcdCluster, target: EtcdMember) -> None:
    """Make ``target`` etcd's Raft leader (``etcdctl move-leader``), if it is not."""
    leader = etcd.leader()
    if leader is target:
        return
    status = json.loads(etcd.ctl("endpoint", "status", "-w", "json"))
    ids = {int(e["Endpoint"].rsplit(":", 1)[1]): e["Status"]["header"]["member_id"] for e in status}
    etcd.ctl("move-leader", format(ids[target.client_port], "x"), endpoints=[leader.endpoint])


def watchers(m: EtcdMember) -> int:
    """Watches the member serves (etcd's own gauge)."""
    text = urllib.request.urlopen(f"{m.endpoint}/metrics", timeout=5).read().decode()
    found = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def etcd_leader_loss(etcd: EtcdCluster, topo: Topology, a: PairDaemon, nodes: int, rounds: int) -> None:
    print(
        f"etcd leader SIGKILLed while {nodes:,} nodes renew every second (probe: one registration / 20 ms):"
    )
    renew = Load(topo.mn, duration=8 * rounds + 4, interval=1.0, nodes=nodes)
    probe = Probe(topo, nodes)
    try:
        time.sleep(2)
        for _ in range(rounds):
            victim = etcd.leader()
            killed = time.time()
            etcd.kill(victim)
            time.sleep(5)
            elected = etcd.elected_after(killed)
            gap = probe.gap_after(killed)
            election = elected - killed if elected else float("nan")
            print(f"  registrations paused {gap:.2f} s; etcd elected a new leader after {election:.2f} s"
                  f" (pause beyond etcd's election: {gap - election:.2f} s)")  # fmt: skip
            etcd.start_member(victim)
            etcd.wait_healthy()
            time.sleep(2)
        state = redundancy(a)
        print(f"  home agent failed over: {'no' if state['role'] == ['active'] else state}")
    finally:
        probe.stop()
        renew.stop()


def run(
    nodes: int,
    duration: float,
    paced: float,
    timing: tuple[int, int],
    rounds: int,
    flags: list[str],
    compare: list[str],
    leader_first: bool = False,
) -> None:
    with tempfile.TemporaryDirectory(prefix="mipha-failover-") as tmp:
        base = Path(tmp)
        etcd = EtcdCluster(base / "etcd", heartbeat_ms=timing[0], election_ms=timing[1], extra=flags)
        etcd.base.mkdir()
        topo = Topology()
        daemons: list[PairDaemon] = []
        try:
            etcd.start()
            topo.build()
            # A single box owns the address on its home interface; the pair moves it there itself.
            subprocess.run(["ip", "-n", topo.a, "addr", "add", f"{HA}/16", "dev", "home0"], check=True)
            single = PairDaemon(base, "single", topo.a, [], nodes + 1)
            daemons.append(single)
            single.start()
            single.wait_log("mipha running", 120)
            baseline = rates(topo, nodes, duration, paced)
            single.stop()
            daemons.remove(single)
            subprocess.run(["ip", "-n", topo.a, "addr", "del", f"{HA}/16", "dev", "home0"], check=True)
            variants = {}
            if leader_first:  # where the standby's watch went before it looked for a follower
                move_leader_to(etcd, etcd.members[0])
            if "any-member" in compare:
                # the channel's member (the first endpoint) a follower, as for 2 of 3 leaders
                move_leader_off(etcd, etcd.members[0])
                variants[f"{paced:,.0f}/s, replicated, leader-route = false"] = variant(
                    base, topo, etcd, "any", nodes, duration, paced, leader_route=False
                )
            if "tmpfs" in compare:
                with tempfile.TemporaryDirectory(prefix="mipha-failover-", dir="/dev/shm") as shm:
                    lab = EtcdCluster(Path(shm) / "etcd", heartbeat_ms=timing[0], election_ms=timing[1],
                                      extra=flags)  # fmt: skip
                    with lab.running():
                        variants[f"{paced:,.0f}/s, replicated, etcd on tmpfs (LAB ONLY)"] = variant(
                            base, topo, lab, "tmpfs", nodes, duration, paced
                        )
            a = PairDaemon(base, "a", topo.a, etcd.endpoints, nodes + 1)
            b = PairDaemon(base, "b", topo.b, etcd.endpoints, nodes + 1)
            daemons += [a, b]
            a.start()
            a.wait_log("redundancy: active", 120)
            b.start()
            b.wait_log("mipha running", 120)
            watch = Watch(etcd, a, b)
            replicated = rates(topo, nodes, duration, paced, watch)
            print(f"etcd: heartbeat {timing[0]} ms, election timeout {timing[1]} ms {' '.join(flags)};"
                  f" load average {os.getloadavg()[0]:.1f} (1 min)")  # fmt: skip
            print(f"registrations, {nodes:,} nodes renewing ({duration:.0f} s each, 3 etcd members on"
                  " the same 2 cores):")  # fmt: skip
            print(line("unpaced, without [redundancy] (baseline)", baseline["unpaced"]))
            print(line("unpaced, active of a pair, replicated", replicated["unpaced"]))
            ratio = replicated["unpaced"]["rate"] / max(baseline["unpaced"]["rate"], 1)
            print(f"  ratio: {ratio:.2f}")
            print(line(f"{paced:,.0f}/s, without [redundancy] (baseline)", baseline["paced"]))
            print(line(f"{paced:,.0f}/s, active of a pair, replicated", replicated["paced"]))
            print("\n".join(watch.report()))
            for label, (report, breakdown) in variants.items():
                print(line(label, report))
                print("\n".join(breakdown))
            if rounds:
                etcd_leader_loss(etcd, topo, a, nodes, rounds)
            renew = Load(topo.mn, duration=12, interval=1.0, nodes=nodes)
            probe = Probe(topo, nodes)
            time.sleep(3)
            traffic = Traffic(topo, HOME_START)
            time.sleep(2)
            killed = a.kill9()
            acked = {home for t, home in renew.acks() if t < killed}
            renew.wait(120)
            gap = probe.gap_after(killed)
            probe.stop()
            traffic.stop()
            resumed = [t for t in traffic.arrivals if t > killed + 0.1]
            flow = resumed[0] - killed if resumed else float("inf")
            missing = acked - bound_homes(b)
            print(f"kill -9 of the active daemon, {nodes:,} nodes renewing every second (lease-ttl 2 s):")
            print(f"  registrations answered again after {gap:.2f} s (target <= 3 s)")
            print(f"  UDP to {HOME_START} tunnelled again after {flow:.2f} s (target <= 3 s)")
            print(f"  the new active's takeover: {takeover_seconds(b)}")
            print(f"  nodes acknowledged before the kill: {len(acked):,}; missing at the new active: "
                  f"{len(missing)} (target 0)")  # fmt: skip
            renew.stop()
        finally:
            for d in daemons:
                d.stop()
            topo.destroy()
            etcd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--paced", type=float, default=5000.0, help="registrations/s of the paced runs")
    parser.add_argument(
        "--etcd-heartbeat-ms", type=int, default=ETCD_HEARTBEAT_MS, help="etcd's --heartbeat-interval"
    )
    parser.add_argument(
        "--etcd-election-ms", type=int, default=ETCD_ELECTION_MS, help="etcd's --election-timeout"
    )
    parser.add_argument("--etcd-rounds", type=int, default=3, help="etcd leader kills (0: none)")
    parser.add_argument("--etcd-flag", action="append", default=[], help="one more etcd flag (repeatable)")
    parser.add_argument(
        "--compare", action="append", default=[], choices=["any-member", "tmpfs"],
        help="one more replicated paced phase: leader-route = false, or etcd's data on tmpfs (lab only)",
    )  # fmt: skip
    parser.add_argument(
        "--leader-first", action="store_true",
        help="make the first endpoint's etcd member the Raft leader for the replicated phases",
    )  # fmt: skip
    args = parser.parse_args()
    timing = (args.etcd_heartbeat_ms, args.etcd_election_ms)
    flags = ["--metrics=extensive", *args.etcd_flag]  # the server-side Txn histogram
    run(
        args.nodes, args.duration, args.paced, timing, args.etcd_rounds, flags, args.compare,
        args.leader_first,
    )  # fmt: skip


if __name__ == "__main__":
    main()
