"""Hot standby under load (issue 15): registration rate with replication, and kill -9 failover.

    .venv/bin/python bench/failover.py                 # 2,000 nodes (about 1-2 minutes, root)
    .venv/bin/python bench/failover.py --nodes 500     # smaller

Topology: ``tests/redundancy/pair.py`` (two home-agent namespaces on one home link behind a router,
mobile nodes on the transit side), a 3-member etcd cluster on loopback (``etcd_cluster.py``), both
started here and stopped by PID.

1. **Rate.** ``mipha mn load`` (unpaced, window 256) against one daemon without ``[redundancy]`` —
   the baseline — then against the active daemon of a pair: registrations/s and latency p50/p99,
   same nodes, same run.
2. **Failover.** ``--nodes`` mobile nodes renew continuously (each 1 s after its previous answer,
   ``failover_load.py``) and a correspondent sends UDP to one home address every 20 ms; the active
   daemon is SIGKILLed; printed: how long until registrations are answered again and until the stream
   reaches the care-of address through the tunnel again, how many nodes were acknowledged before the
   kill and how many of them the new active's op state lacks (the target is 0).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "redundancy"))

from etcd_cluster import EtcdCluster  # noqa: E402
from pair import COA, HA, HOME_START, PairDaemon, Topology  # noqa: E402
from test_failover_daemons import Load, Traffic, bound_homes  # noqa: E402

KEY_HEX = "00112233445566778899aabbccddeeff"


def load(topo: Topology, nodes: int, duration: float) -> dict:
    command = [
        "ip", "netns", "exec", topo.mn, sys.executable, "-m", "mipha.cli", "mn",
        "--ha", HA, "--spi", "256", "--key", KEY_HEX, "--bind", COA, "--lifetime", "1800", "--json",
        "load", "--count", str(nodes), "--home-start", HOME_START, "--coa", COA,
        "--rate", "0", "--window", "256", "--duration", str(duration),
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
        return f"  {label:<34} no replies: {report}"
    return (
        f"  {label:<34} {report['rate']:>9,.0f} /s   p50 {lat['p50']:>6} ms   p99 {lat['p99']:>7} ms"
        f"   accepted {report['accepted']:,}/{report['transactions']:,} codes {report['codes']}"
    )


def run(nodes: int, duration: float) -> None:
    with tempfile.TemporaryDirectory(prefix="mipha-failover-") as tmp:
        base = Path(tmp)
        etcd = EtcdCluster(base / "etcd")
        etcd.base.mkdir()
        topo = Topology()
        daemons: list[PairDaemon] = []
        try:
            etcd.start()
            topo.build()
            # A single box owns the address on its home interface; the pair moves it there itself.
            subprocess.run(["ip", "-n", topo.a, "addr", "add", f"{HA}/16", "dev", "home0"], check=True)
            single = PairDaemon(base, "single", topo.a, [], nodes)
            daemons.append(single)
            single.start()
            single.wait_log("mipha running", 120)
            load(topo, nodes, 2)  # first registrations: every node bound
            baseline = load(topo, nodes, duration)
            single.stop()
            daemons.remove(single)
            subprocess.run(["ip", "-n", topo.a, "addr", "del", f"{HA}/16", "dev", "home0"], check=True)
            a = PairDaemon(base, "a", topo.a, etcd.endpoints, nodes)
            b = PairDaemon(base, "b", topo.b, etcd.endpoints, nodes)
            daemons += [a, b]
            a.start()
            a.wait_log("redundancy: active", 120)
            b.start()
            b.wait_log("mipha running", 120)
            load(topo, nodes, 2)
            replicated = load(topo, nodes, duration)
            print(f"registrations, {nodes:,} nodes renewing unpaced ({duration:.0f} s each, 3 etcd members on"
                  " the same 2 cores):")  # fmt: skip
            print(line("without [redundancy] (baseline)", baseline))
            print(line("active of a pair, replicated", replicated))
            print(f"  ratio: {replicated['rate'] / max(baseline['rate'], 1):.2f}")
            renew = Load(topo.mn, duration=12, interval=1.0, nodes=nodes)
            time.sleep(3)
            traffic = Traffic(topo, HOME_START)
            time.sleep(2)
            killed = a.kill9()
            acked = {home for t, home in renew.acks() if t < killed}
            renew.wait(120)
            after = sorted(t for t, _ in renew.acks() if t > killed)
            gap = after[0] - killed if after else float("inf")
            traffic.stop()
            resumed = [t for t in traffic.arrivals if t > killed + 0.1]
            flow = resumed[0] - killed if resumed else float("inf")
            missing = acked - bound_homes(b)
            print(f"kill -9 of the active daemon, {nodes:,} nodes renewing every second:")
            print(f"  registrations answered again after {gap:.2f} s (target <= 3 s)")
            print(f"  UDP to {HOME_START} tunnelled again after {flow:.2f} s (target <= 3 s)")
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
    args = parser.parse_args()
    run(args.nodes, args.duration)


if __name__ == "__main__":
    main()
