"""Hot standby takeover with N bindings: a warm standby kernel against a cold one (issue 15).

    .venv/bin/python bench/takeover.py                       # 1,000 and 10,000 bindings (root, ~3 min)
    .venv/bin/python bench/takeover.py --nodes 1000 5000

For each N, twice — ``warm-kernel = false`` (the baseline: the standby's data plane is empty and the
takeover programs every tunnel, route and proxy entry) and ``warm-kernel = true`` (the standby keeps
tunnels and the routes in mipha's table programmed from the group's bindings; the takeover adds the
policy rule, proxy ARP, the address and gratuitous ARP) — two ``mipha run`` daemons of
``tests/redundancy/pair.py`` and a 3-member etcd cluster: N nodes register, the active daemon is
SIGKILLed, and the bench prints the new active's takeover (from its log: catch-up read, engine,
data plane, address) and how long after the kill a probe node's registration was accepted again
(lease-ttl 2 s included).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "redundancy"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from etcd_cluster import EtcdCluster  # noqa: E402
from failover import Probe, load, takeover_seconds  # noqa: E402
from pair import PairDaemon, Topology  # noqa: E402
from test_failover_daemons import kernel_state, wait_kernel  # noqa: E402


def once(base: Path, etcd: EtcdCluster, nodes: int, warm: bool) -> str:
    topo = Topology()
    daemons: list[PairDaemon] = []
    tag = f"{nodes}-{'warm' if warm else 'cold'}"
    try:
        topo.build()
        a = PairDaemon(base, f"a-{tag}", topo.a, etcd.endpoints, nodes + 1, warm=warm)
        b = PairDaemon(base, f"b-{tag}", topo.b, etcd.endpoints, nodes + 1, warm=warm)
        daemons += [a, b]
        a.start()
        a.wait_log("redundancy: active", 300)
        b.start()
        b.wait_log("mipha running", 300)
        report = load(topo, nodes, max(3.0, nodes / 2000))
        bound = report["accepted"]
        standby = wait_kernel(topo.b, {"routes": nodes if warm else 0, "rule": 0, "proxies": 0}, 120)
        probe = Probe(topo, nodes)
        time.sleep(1)
        killed = a.kill9()
        b.wait_log("takeover", 120)
        deadline = time.monotonic() + 60
        while probe.gap_after(killed) == float("inf") and time.monotonic() < deadline:  # none yet
            time.sleep(0.05)
        gap = probe.gap_after(killed)
        probe.stop()
        after = kernel_state(topo.b)
        return (
            f"  {nodes:>6,} bindings, {'warm' if warm else 'cold'} standby kernel"
            f" (standby held {standby['routes']:,} routes):"
            f" takeover {takeover_seconds(b)}; answered again {gap:.2f} s after the kill;"
            f" new active: {after['routes']:,} routes, {after['proxies']:,} proxy entries"
            f" ({bound:,} registrations accepted before)"
        )
    finally:
        for d in daemons:
            d.stop()
        topo.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mipha-takeover-") as tmp:
        base = Path(tmp)
        print("kill -9 of the active daemon (lease-ttl 2 s; 3 etcd members on the same 2 cores):")
        for nodes in args.nodes:
            for warm in (False, True):
                with EtcdCluster(base / f"etcd-{nodes}-{warm}").running() as etcd:
                    print(once(base, etcd, nodes, warm), flush=True)


if __name__ == "__main__":
    main()
