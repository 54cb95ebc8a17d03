"""RESTCONF cost beside the NETCONF path, measured in the same run on the same core.

One virtual router with N configured mobile nodes (bench/state_get.py's data, imported) and N bindings
in a real engine behind the daemon's own state provider (mipha/state.py: raw XML pages for NETCONF,
JSON pages for RESTCONF), a RESTCONF server on loopback (TLS, Basic auth) in a server thread, and the
real curl as the client on one persistent HTTPS connection:

1. GET of one binding by key (JSON) vs NETCONF <get> of it in-process (the server's side only);
2. GET of all N bindings in JSON (and XML) until the last byte vs NETCONF <get> of them in-process (XML);
   both direct reads (server/restconf/direct.py), and again through the generic path (libyang's
   conversion of the <get-data> reply, taken with `?depth=65535`);
3. PATCH (merge) of one new mobile node into the N configured vs NETCONF <edit-config> of one node,
   a new node each time, in-process (the edit path alone) and over SSH from a raw client in another
   process (the NETCONF path whole: SSH, framing, parse, edit, reply; the like of HTTPS + curl).

Figures are medians of --rounds runs (wall time: the box may be shared; ratios are what matter).

    .venv/bin/python bench/restconf.py [--nodes 100000] [--rounds 20] [--only get|patch]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from state_get import NC, M, home, running

from ha.engine.config import HomeAgentConfig, MobileNode, SecurityAssociation, VirtualRouterConfig
from ha.engine.home_agent import HomeAgent
from mipha.journal import BindingRecord
from mipha.state import HomeAgentStateProvider
from server.app import start_server
from server.auth import User, hash_password
from server.config import ServerConfig
from server.nacm import Principal
from server.operations import op_edit_config, op_get
from server.restconf.app import RestconfConfig, start_restconf

ROOT = Path(__file__).resolve().parents[1]
MOD = "mipha-home-agent"
CURL = shutil.which("curl") or "curl"
JSON = "application/yang-data+json"
VR = f"/restconf/data/{MOD}:virtual-routers/virtual-router=default"


class Router:
    """One virtual router's engine with N bindings, as the state provider reads it."""

    def __init__(self, n: int) -> None:
        sa = SecurityAssociation(256, bytes(16))
        nodes = [
            MobileNode(f"mn{i}", home_address=IPv4Address(home(i)), security_associations=[sa])
            for i in range(n)
        ]
        config = VirtualRouterConfig(
            "default", home_agent=HomeAgentConfig(IPv4Address("10.64.0.1")), mobile_nodes=nodes
        )
        self.name, self.engine, wall = "default", HomeAgent(config), time.time()
        for i in range(n):
            record = BindingRecord(
                "default", home(i), "192.0.2.10", f"mn{i}", "192.0.2.10", 434, 600, wall - i * 0.001,
                i + 1, 0x80, "ip-in-ip",
            )  # fmt: skip
            assert self.engine.restore_binding(record, now=time.monotonic(), wallclock=wall)

    def tunnels(self) -> list:
        return []

    def now(self) -> float:
        return time.monotonic()

    def discontinuity_time(self) -> float:
        return 0.0


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


#: a raw NETCONF client (paramiko + the server's framing) in another process: K edit-configs of one new
#: mobile node each on one session, printing each round trip's ms
SSH_CLIENT = """
import sys, time
from nc_rawclient import RawClient
port, k = int(sys.argv[1]), int(sys.argv[2])
c = RawClient(port, "admin", "bench")
for i in range(k):
    body = ('<edit-config><target><running/></target><config><virtual-routers xmlns="%s"><virtual-router>'
            '<name>default</name><mobile-node><name>s%d</name><home-address>10.202.%d.%d</home-address>'
            '</mobile-node></virtual-router></virtual-routers></config></edit-config>'
            % (sys.argv[3], i, i >> 8 & 255, i & 255))
    t = time.perf_counter()
    assert b"<ok/>" in c.rpc(body, str(i))
    print((time.perf_counter() - t) * 1000)
c.close()
"""


def ssh_edits(port: int, rounds: int) -> tuple[float, float]:
    """Median ms of an edit-config over SSH (session setup not counted) and the server's CPU ms per
    edit (the setup's share measured apart, with no edit, and taken off)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "server")])}

    def run(k: int) -> tuple[list[float], float]:
        cpu = time.process_time()
        out = subprocess.run(
            [sys.executable, "-c", SSH_CLIENT, str(port), str(k), M],
            capture_output=True, text=True, check=True, timeout=600, env=env,
        ).stdout  # fmt: skip
        return [float(x) for x in out.split()], (time.process_time() - cpu) * 1000

    _, setup = run(0)
    times, cpu = run(rounds)
    return statistics.median(times), (cpu - setup) / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--only", choices=("all", "get", "patch"), default="all", help="which rows to measure")
    args = ap.parse_args()
    n, rounds = args.nodes, args.rounds
    srv = Loop()
    router = Router(n)
    with tempfile.TemporaryDirectory() as tmp:
        users = [User("admin", hash_password("bench", n_log2=10), (), frozenset({"admin"}))]

        async def setup():
            provider = HomeAgentStateProvider(lambda: [router])
            nc = await start_server(
                ServerConfig(state_dir=Path(tmp), port=0, users=users), providers=[provider]
            )
            nc.core.ds.running = running(n)
            handle = await start_restconf(nc.core, RestconfConfig(state_dir=Path(tmp), port=0, users=users))
            return nc, handle

        nc, handle = srv.run(setup())
        core = nc.core
        sess = SimpleNamespace(
            core=core, principal=Principal("admin", frozenset({"admin"})), id=1, source_host=None
        )
        base = f"https://127.0.0.1:{handle.port}"

        def curl_run(transfers: list[tuple[str, str, bytes | None]], accept: str) -> tuple[list[str], float]:
            """The real curl on one connection (reused across transfers, `--next`): each transfer's
            status and time until its last byte (%{time_total}), and this process's CPU ms meanwhile
            (the server's: curl is another process)."""
            cmd = [CURL]
            for k, (method, path, body) in enumerate(transfers):
                if k:
                    cmd.append("--next")
                cmd += ["-sS", "--cacert", str(handle.cert), "-u", "admin:bench", "-o", "/dev/null"]
                cmd += ["-X", method, "-H", f"Accept: {accept}", "-w", "%{http_code} %{time_total}\\n"]
                if body is not None:
                    cmd += ["-H", "Content-Type: application/yang-data+json", "--data-binary", body.decode()]
                cmd.append(base + path)
            cpu = time.process_time()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
            return out.splitlines(), (time.process_time() - cpu) * 1000

        # the connection's share (TLS handshake, ~5 ms of the server's CPU), taken off every run as the
        # SSH session's is: one run of one trivial request
        _, connection = curl_run([("GET", "/restconf/yang-library-version", None)], JSON)

        def curl_ms(
            transfers: list[tuple[str, str, bytes | None]], accept: str = JSON
        ) -> tuple[float, float]:
            """Median ms until the last byte of each transfer, the server's CPU ms per transfer."""
            lines, cpu = curl_run(transfers, accept)
            codes, times = zip(*(line.split() for line in lines), strict=True)
            assert all(c.startswith("2") for c in codes), codes
            return statistics.median(float(t) for t in times) * 1000, max(0.0, cpu - connection) / len(
                transfers
            )

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
        rows: list = []
        if args.only != "patch":
            rows += [
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
            generic = "?depth=65535"  # a parameter only the generic path (libyang's conversion) honours
            rows.append(
                (
                    "GET one binding by key, generic path (JSON)",
                    curl_ms([("GET", one_path + generic, None)] * rounds),
                    "NETCONF <get> of it, in-process",
                    median_ms(lambda: nc_get(one_flt), rounds),
                )
            )
            rows.append(
                (
                    f"GET all {n} bindings, generic path (JSON)",
                    curl_ms([("GET", f"{VR}/home-agent/bindings{generic}", None)] * few),
                    "NETCONF <get> of them, XML, in-process",
                    median_ms(lambda: nc_get(all_flt), few),
                )
            )
        if args.only != "get":
            node = (
                '{"%s:virtual-router":[{"name":"default",'
                '"mobile-node":[{"name":"b%d","home-address":"10.200.%d.%d"}]}]}'
            )
            patches = [
                ("PATCH", VR, (node % (MOD, i, i >> 8 & 255, i & 255)).encode()) for i in range(rounds)
            ]
            counter = iter(range(10**6))

            def nc_add() -> None:
                i = next(counter)
                a = f"10.201.{i >> 8 & 255}.{i & 255}"
                nc_edit(f"<mobile-node><name>n{i}</name><home-address>{a}</home-address></mobile-node>")

            nc_add()  # the first commit of a state directory writes the journal's snapshot: not measured
            patched = curl_ms(patches)
            rows.append(
                (
                    f"PATCH one mobile node into {n} configured",
                    patched,
                    "NETCONF <edit-config> of one, in-process",
                    median_ms(nc_add, rounds),
                )
            )
            rows.append(
                (
                    "(the same PATCH figures)",
                    patched,
                    "NETCONF <edit-config> of one over SSH",
                    ssh_edits(nc.port, rounds),
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
