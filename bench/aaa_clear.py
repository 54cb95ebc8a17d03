"""Registration latency while the operator acts on many bindings: configured nodes renewing at a steady
rate (``mipha mn load``, 1,000/s) while a ``clear-bindings`` of the whole virtual router (10,000 AAA
bindings through FreeRADIUS plus the 5,000 configured nodes' own) runs, then while an
``<edit-config>`` adds 5,000 mobile nodes; beside a quiet round of the same renewals.  The setting of
``bench/aaa.py`` (one virtual router in a namespace, FreeRADIUS 3.2 on loopback).  Each line: the
operation's own time (the rpc-reply), the renewals' p50 / p90 / p99 / max latency, the load average.

    .venv/bin/python bench/aaa_clear.py [--aaa 10000] [--configured 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aaa as bench
from aaa_lab import aaa_lab
from daemon_harness import NS
from lxml import etree


def nodes(first: int, count: int) -> str:
    key = ":".join(f"{b:02x}" for b in bench.KEY.encode())
    body = "".join(
        f"<mobile-node><name>e{i}</name><nai>edit{i}@example.net</nai><address-pool>local-pool</address-pool>"
        f"<security-association><spi>256</spi><key>{key}</key></security-association></mobile-node>"
        for i in range(first, first + count)
    )
    return (
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}">'
        f"<virtual-router><name>bench</name>{body}</virtual-router></virtual-routers></config>"
    )


def during(netns: str, configured: int, action) -> str:
    """Renewals of the configured nodes for 3 s at 1,000/s, ``action`` run after the first second."""
    renewing = bench._load(netns, configured, 1000, 3.0, first=1, static=True)
    time.sleep(1.0)
    started = time.perf_counter()
    action()
    took = time.perf_counter() - started
    latency = json.loads(renewing.communicate()[0])["latency_ms"]
    return (
        f"{took * 1000:.0f} ms; renewals p50 / p90 / p99 / max {latency['p50']} / {latency['p90']} / "
        f"{latency['p99']} / {latency['max']} ms (load average {os.getloadavg()[0]:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--aaa", type=int, default=10000)
    parser.add_argument("--configured", type=int, default=5000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mipha-bench-clear-"))
    with aaa_lab(
        tmp,
        name="bench-clear",
        secret=bench.SECRET,
        addresses=(f"{bench.HA}/32",),
        users=bench.users(args.aaa),
    ) as lab:
        netns = lab.netns
        daemon = lab.start_daemon(bench.config(netns, args.configured))
        assert daemon.proc is not None
        bench.HA_PID = daemon.proc.pid
        bench.load(netns, args.configured, 2500, args.configured / 2500, static=True)
        aaa = bench.load(netns, args.aaa, 2500, args.aaa / 2500)
        print(f"bound: {args.configured} configured nodes, {aaa['accepted']} AAA nodes", flush=True)
        rpc = etree.fromstring(
            f'<clear-bindings xmlns="{NS}"><virtual-router>bench</virtual-router></clear-bindings>'
        )
        with daemon.connect() as m:
            print("quiet:", during(netns, args.configured, lambda: None), flush=True)
            print("clear-bindings:", during(netns, args.configured, lambda: m.dispatch(rpc)), flush=True)
            edit = nodes(1, 5000)
            print(
                "edit-config of 5,000 nodes:",
                during(netns, args.configured, lambda: m.edit_config(target="running", config=edit)),
                flush=True,
            )


if __name__ == "__main__":
    main()
