"""The server's side of configuration at scale, in-process (no SSH, no application subscribers).

A NetconfCore with a state directory (persistence included) and N configured mobile nodes (one SA
each, one virtual router). Figures, each the median of --rounds runs, CPU time of the handler until
its reply exists, beside the same figure on an empty configuration measured in the same run:

1. one mobile node added through edit-config candidate + commit;
2. one mobile node added / deleted straight in running; one added by a confirmed commit, then that
   commit cancelled (the rollback is the inverse of the commit, not a copy of running);
3. commits per second, one node each (edit-config candidate + commit, back to back);
4. the bulk load: N nodes edit-config into candidate, then commit (once);
5. get-config of the N nodes;
6. the datastore's memory per configured node: RSS growth (after gc and malloc_trim) with the N nodes
   and their indexes, after the single changes.

    .venv/bin/python bench/config_server.py [--nodes 100000] [--rounds 21]

The end-to-end daemon figures (raw NETCONF client, the application behind) are bench/config_scale.py.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.app import build_core
from server.config import ServerConfig
from server.nacm import Principal
from server.operations import op_cancel_commit, op_commit, op_edit_config, op_get_config

M = "urn:mipha:yang:mipha-home-agent"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"
HEAD = (
    f'<config xmlns="{NC}"><virtual-routers xmlns="{M}"><virtual-router><name>default</name>'
    "<router-id>10.64.0.1</router-id><home-agent><address>10.64.0.1</address></home-agent>"
)
TAIL = "</virtual-router></virtual-routers></config>"


def home(i: int) -> str:
    return f"10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def node(i: int) -> str:
    return (
        f"<mobile-node><name>mn{i}</name><home-address>{home(i)}</home-address><security-association>"
        f"<spi>{256 + i}</spi><key>{KEY}</key></security-association></mobile-node>"
    )


def edit(target: str, body: str) -> etree._Element:
    return etree.fromstring(
        f'<edit-config xmlns="{NC}"><target><{target}/></target>{HEAD}{body}{TAIL}</edit-config>'
    )


def delete(i: int) -> etree._Element:
    body = f'<mobile-node xmlns:nc="{NC}" nc:operation="delete"><name>mn{i}</name></mobile-node>'
    return edit("running", body)


COMMIT = etree.fromstring(f'<commit xmlns="{NC}"/>')
CONFIRMED = etree.fromstring(f'<commit xmlns="{NC}"><confirmed/><persist>bench</persist></commit>')
CANCEL = etree.fromstring(f'<cancel-commit xmlns="{NC}"><persist-id>bench</persist-id></cancel-commit>')
GET_CONFIG = etree.fromstring(f'<get-config xmlns="{NC}"><source><running/></source></get-config>')


class Bench:
    def __init__(self, state_dir: Path) -> None:
        self.core = build_core(ServerConfig(state_dir=state_dir), None, [], [])
        self.sess = SimpleNamespace(
            core=self.core,
            id=1,
            principal=Principal("admin", frozenset({"admin"})),
            source_host=None,
            closed=False,
        )
        self.loop = asyncio.new_event_loop()
        self.core.loop = self.loop
        self.next = 10_000_000

    def run(self, coro) -> None:
        self.loop.run_until_complete(coro)

    def timed(self, fn, rounds: int) -> float:
        out = []
        for _ in range(rounds):
            t0 = time.process_time()
            fn()
            out.append(time.process_time() - t0)
        return statistics.median(out)

    def fresh(self) -> int:
        self.next += 1
        return self.next

    def add_via_candidate(self) -> None:
        self.run(op_edit_config(self.sess, edit("candidate", node(self.fresh()))))
        self.run(op_commit(self.sess, COMMIT))

    def add_running(self) -> None:
        self.run(op_edit_config(self.sess, edit("running", node(self.fresh()))))

    def delete_running(self) -> None:
        self.run(op_edit_config(self.sess, delete(self.next)))
        self.next -= 1

    def confirmed_and_cancelled(self) -> None:
        """One node added by a confirmed commit, then the commit cancelled (rolled back)."""
        self.run(op_edit_config(self.sess, edit("candidate", node(self.fresh()))))
        self.run(op_commit(self.sess, CONFIRMED))
        self.run(op_cancel_commit(self.sess, CANCEL))

    def single_figures(self, rounds: int) -> dict[str, float]:
        return {
            "candidate+commit": self.timed(self.add_via_candidate, rounds),
            "running add": self.timed(self.add_running, rounds),
            "running delete": self.timed(self.delete_running, rounds),
            "confirmed+cancel": self.timed(self.confirmed_and_cancelled, rounds),
        }

    def commits_per_second(self, seconds: float = 3.0) -> float:
        t0, n = time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            self.add_via_candidate()
            n += 1
        return n / (time.monotonic() - t0)


def rss_kb() -> int:
    """VmRSS after a full collection and malloc_trim (freed heap given back: what stays is held)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args()
    n = args.nodes
    with tempfile.TemporaryDirectory() as tmp0, tempfile.TemporaryDirectory() as tmp1:
        empty = Bench(Path(tmp0))
        base_empty = empty.single_figures(args.rounds)
        cps_empty = empty.commits_per_second()

        b = Bench(Path(tmp1))
        gc.collect()
        rss0 = rss_kb()
        bulk = edit("candidate", "".join(node(i) for i in range(n)))
        t0 = time.monotonic()
        b.run(op_edit_config(b.sess, bulk))
        t_edit = time.monotonic() - t0
        b.run(op_commit(b.sess, COMMIT))
        t_bulk = time.monotonic() - t0
        del bulk
        scale = b.single_figures(args.rounds)
        rss1 = rss_kb()  # with the indexes the single changes built
        cps = b.commits_per_second()
        t_get = b.timed(lambda: op_get_config(b.sess, GET_CONFIG), 5)
        print(f"server in-process, {n} mobile nodes configured (one SA each), state dir on disk")
        print(f"{'figure (median CPU)':<34} {'empty':>10} {f'{n} nodes':>12} {'ratio':>7}")
        for k in base_empty:
            e, s = base_empty[k] * 1e3, scale[k] * 1e3
            print(f"one node, {k:<24} {e:>8.2f}ms {s:>10.2f}ms {s / e:>6.1f}x")
        print(f"{'commits/s, one node each':<34} {cps_empty:>10.0f} {cps:>12.0f}")
        t_commit = t_bulk - t_edit
        print(
            f"bulk {n} into candidate: edit-config {t_edit:.2f} s + commit {t_commit:.2f} s"
            f" = {t_bulk:.2f} s (wall)"
        )
        print(f"get-config of {n}: {t_get * 1e3:.0f} ms")
        grow, peak = (rss1 - rss0) / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"RSS growth with {n} nodes: {grow:.0f} MB ({grow * 1024 * 1024 / n:.0f} B/node);"
            f" peak RSS {peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
