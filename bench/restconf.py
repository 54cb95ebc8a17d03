"""RESTCONF cost beside the NETCONF path, measured in the same run on the same core.

One virtual router with N configured mobile nodes and N bindings (bench/state_get.py's data and its
fake provider handing the bindings over as raw bytes, imported), a RESTCONF server on loopback (TLS,
Basic auth) in a server thread, and a client on one persistent HTTPS connection (http.client):

1. GET of one binding by key (JSON) vs NETCONF <get> of it in-process (the server's side only);
2. GET of all N bindings in JSON until the last byte vs NETCONF <get> of them in-process (XML);
3. PATCH (merge) of one new mobile node into the N configured vs NETCONF <edit-config> of one node,
   each undone after (DELETE / edit-config delete), in-process for NETCONF.

Figures are medians of --rounds runs (wall time: the box may be shared; ratios are what matter).

    .venv/bin/python bench/restconf.py [--nodes 100000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from state_get import NC, FakeBindings, M, home, running

from server.app import build_core
from server.auth import User, hash_password
from server.config import ServerConfig
from server.nacm import Principal
from server.operations import op_edit_config, op_get
from server.restconf.app import RestconfConfig, start_restconf

MOD = "mipha-home-agent"
CURL = shutil.which("curl") or "curl"
JSON = "application/yang-data+json"
VR = f"/restconf/data/{MOD}:virtual-routers/virtual-router=default"


class Loop:
    """The server's event loop in a thread; `run` executes a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=600)


def median_ms(fn, rounds: int) -> tuple[float, float]:
    """Median wall ms of `fn`, and the mean CPU ms of this process (the server's) per call."""
    times = []
    cpu = time.process_time()
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, (time.process_time() - cpu) * 1000 / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    n, rounds = args.nodes, args.rounds
    srv = Loop()
    with tempfile.TemporaryDirectory() as tmp:
        users = [User("admin", hash_password("bench", n_log2=10), (), frozenset({"admin"}))]

        async def setup():
            core = build_core(ServerConfig(state_dir=Path(tmp)), None, [], [FakeBindings(n, True)])
            core.ds.running = running(n)
            handle = await start_restconf(core, RestconfConfig(state_dir=Path(tmp), port=0, users=users))
            return core, handle

        core, handle = srv.run(setup())
        sess = SimpleNamespace(
            core=core, principal=Principal("admin", frozenset({"admin"})), id=1, source_host=None
        )
        base = f"https://127.0.0.1:{handle.port}"

        def curl_ms(
            transfers: list[tuple[str, str, bytes | None]], accept: str = JSON
        ) -> tuple[float, float]:
            """The real curl on one connection (reused across transfers, `--next`): median ms until
            the last byte of each transfer (%{time_total})."""
            cmd = [CURL]
            for k, (method, path, body) in enumerate(transfers):
                if k:
                    cmd.append("--next")
                cmd += ["-sS", "--cacert", str(handle.cert), "-u", "admin:bench", "-o", "/dev/null"]
                cmd += ["-X", method, "-H", f"Accept: {accept}", "-w", "%{http_code} %{time_total}\\n"]
                if body is not None:
                    cmd += ["-H", "Content-Type: application/yang-data+json", "--data-binary", body.decode()]
                cmd.append(base + path)
            cpu = time.process_time()  # the server thread's: curl is another process
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
            cpu = (time.process_time() - cpu) * 1000 / len(transfers)
            codes, times = zip(*(line.split() for line in out.splitlines()), strict=True)
            assert all(c.startswith("2") for c in codes), codes
            return statistics.median(float(t) for t in times) * 1000, cpu

        def nc_get(flt: str) -> int:
            op = etree.fromstring(f'<get xmlns="{NC}"><filter type="subtree">{flt}</filter></get>')

            async def go():
                return sum(map(len, op_get(sess, op)))

            return srv.run(go())

        def nc_edit(body: str) -> None:
            op = etree.fromstring(
                f'<edit-config xmlns="{NC}"><target><running/></target><config>'
                f'<virtual-routers xmlns="{M}"><virtual-router><name>default</name>{body}'
                "</virtual-router></virtual-routers></config></edit-config>"
            )
            srv.run(op_edit_config(sess, op))

        key = n // 2
        one_path = f"{VR}/home-agent/bindings/binding={home(key)},192.0.2.10"
        one_flt = (
            f'<virtual-routers xmlns="{M}"><virtual-router><name>default</name><home-agent><bindings>'
            f"<binding><home-address>{home(key)}</home-address><care-of-address>192.0.2.10</care-of-address>"
            "</binding></bindings></home-agent></virtual-router></virtual-routers>"
        )
        all_flt = (
            f'<virtual-routers xmlns="{M}"><virtual-router><home-agent><bindings/></home-agent>'
            "</virtual-router></virtual-routers>"
        )
        rows = [
            (
                "GET one binding by key (JSON, curl, HTTPS)",
                curl_ms([("GET", one_path, None)] * rounds),
                "NETCONF <get> of it, in-process",
                median_ms(lambda: nc_get(one_flt), rounds),
            )
        ]
        few = max(1, rounds // 5)
        rows.append(
            (
                f"GET all {n} bindings, JSON, until the last byte",
                curl_ms([("GET", f"{VR}/home-agent/bindings", None)] * few),
                "NETCONF <get> of them, XML, in-process",
                median_ms(lambda: nc_get(all_flt), few),
            )
        )
        rows.append(
            (
                f"GET all {n} bindings, XML, until the last byte",
                curl_ms(
                    [("GET", f"{VR}/home-agent/bindings", None)] * few, accept="application/yang-data+xml"
                ),
                "NETCONF <get> of them, XML, in-process",
                median_ms(lambda: nc_get(all_flt), few),
            )
        )
        node = (
            '{"%s:virtual-router":[{"name":"default",'
            '"mobile-node":[{"name":"b%d","home-address":"10.200.%d.%d"}]}]}'
        )
        patches = [("PATCH", VR, (node % (MOD, i, i >> 8 & 255, i & 255)).encode()) for i in range(rounds)]
        counter = iter(range(10**6))

        def nc_add() -> None:
            i = next(counter)
            a = f"10.201.{i >> 8 & 255}.{i & 255}"
            nc_edit(f"<mobile-node><name>n{i}</name><home-address>{a}</home-address></mobile-node>")

        nc_add()  # the first commit of a state directory writes the journal's snapshot: not measured
        rows.append(
            (
                f"PATCH one mobile node into {n} configured",
                curl_ms(patches),
                "NETCONF <edit-config> of one, in-process",
                median_ms(nc_add, rounds),
            )
        )
        print("wall: median ms until the last byte; CPU: the server process's ms per request")
        print(
            f"{'RESTCONF':<50} {'wall':>9} {'CPU':>9}   {'same run, NETCONF path':<42} {'wall':>9} {'CPU':>9}"
        )
        for what, (t, c), base, (tb, cb) in rows:
            print(f"{what:<50} {t:9.2f} {c:9.2f}   {base:<42} {tb:9.2f} {cb:9.2f}")
        srv.run(handle.close())
        core.close()


if __name__ == "__main__":
    main()
