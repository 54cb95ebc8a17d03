"""`mipha show` against a daemon holding N bindings (root: the daemon makes a network namespace).

A `mipha run` (tun data plane) with one virtual router of N static mobile nodes, all registered by
`mipha mn load` from the router's namespace. Figures, medians of --rounds runs:

1. the whole command, `mipha show bindings --home-address A` (one binding out of N, the filter pushed
   down to the engine's index), beside `mipha show pools` (same process start, SSH and NETCONF
   session, a reply of a few hundred bytes): the difference is what the one binding costs;
2. inside one NETCONF session (ncclient), the `<get>` the command sends for one binding, beside a
   `<get>` of the statistics;
3. `mipha show bindings --summary` (every binding's keys: the whole table read).

    .venv/bin/python bench/show.py [--nodes 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))
sys.path.insert(0, str(ROOT / "tests"))

from daemon_harness import MIPHA, NS, SA, Daemon, mn_command, router_config  # noqa: E402
from free_ports import free_port  # noqa: E402

from mipha.show import bindings_filter  # noqa: E402

FIRST = IPv4Address("10.64.0.10")


def configuration(vr: str, netns: str, n: int) -> str:
    nodes = "".join(
        f"<mobile-node><name>mn{i}</name><home-address>{FIRST + i}</home-address>{SA}</mobile-node>"
        for i in range(n)
    )
    return router_config(vr, netns, nodes, f"<max-bindings>{n + 10}</max-bindings>")


def timed(cmd: list[str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - t)
        assert out.returncode == 0, out.stderr
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.nodes
    tag = uuid.uuid4().hex[:6]
    vr, netns = f"bs{tag}", f"mipha-bs-{tag}"
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp), free_port())
        try:
            daemon.start()
            with daemon.connect() as m:
                t = time.perf_counter()
                m.edit_config(target="running", config=configuration(vr, netns, n))
                print(f"configured {n} mobile nodes in {time.perf_counter() - t:.1f} s")
            t = time.perf_counter()
            mn = mn_command(netns, "--retries", "3", "load", "--count", str(n), "--home-start", str(FIRST))
            mn += [
                "--coa",
                "198.51.100.9",
                "--rate",
                "0",
                "--window",
                "512",
                "--duration",
                str(5 + n // 3000),
            ]
            load = subprocess.run(mn, capture_output=True, text=True, timeout=1200)
            assert load.returncode == 0, load.stderr[-2000:]
            print(f"mipha mn load ({time.perf_counter() - t:.1f} s): {load.stdout.strip()[-400:]}")
            client = Path(tmp) / "client.toml"
            client.write_text(
                f'port = {daemon.port}\nuser = "admin"\npassword = "e2e-secret"\nhost-key-check = false\n'
            )
            client.chmod(0o600)
            one = str(FIRST + n // 2)
            cmd_one = [MIPHA, "show", "bindings", "--home-address", one, "--client-config", str(client)]
            check = subprocess.run(cmd_one, capture_output=True, text=True, timeout=60)
            assert one in check.stdout and len(check.stdout.splitlines()) == 2, check.stdout + check.stderr
            rows = []
            rows.append(("mipha show pools (baseline: start + SSH + tiny get)", timed(
                [MIPHA, "show", "pools", "--client-config", str(client)], args.rounds)))  # fmt: skip
            rows.append((f"mipha show bindings --home-address (1 of {n})", timed(cmd_one, args.rounds)))
            summary = [MIPHA, "show", "bindings", "--summary", "--client-config", str(client)]
            rows.append(
                (f"mipha show bindings --summary (all {n})", timed(summary, max(1, args.rounds // 2)))
            )
            with daemon.connect() as m:
                flt_one = bindings_filter(vr, one, None, ["mobile-node", "lifetime-remaining"])
                flt_stats = (
                    f'<virtual-routers xmlns="{NS}"><virtual-router><name>{vr}</name>'
                    "<home-agent><statistics/></home-agent></virtual-router></virtual-routers>"
                )
                for label, flt in (
                    ("<get> of the statistics (baseline)", flt_stats),
                    ("<get> of one binding by key", flt_one),
                ):
                    times = []
                    for _ in range(max(args.rounds, 5)):
                        t = time.perf_counter()
                        m.get(filter=("subtree", flt))
                        times.append(time.perf_counter() - t)
                    rows.append((f"in one session: {label}", statistics.median(times)))
            load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"median wall time (load average {load_avg})")
            for what, secs in rows:
                print(f"  {what:<62} {secs * 1000:9.1f} ms")
        finally:
            daemon.stop()
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, check=False)


if __name__ == "__main__":
    main()
