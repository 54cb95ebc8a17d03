"""Configuration at scale (issue 10): what one change costs with 0, 1k, 10k and 100k mobile nodes configured.

``mipha run`` (data plane ``none``, virtual router ``default`` with its home agent on 127.0.0.1) in a child
process, driven by a raw NETCONF client (paramiko + our framing), times to the last byte of the reply.
For each configured size, on a fresh daemon:

1. bulk: edit-config of the N mobile nodes (one HMAC-MD5 SA each) into the candidate, then commit;
2. one node added through candidate + commit (edit-config + commit, median of --rounds);
3. one node added straight into running, and one deleted (medians);
4. commits per second, one node each, one session (for --rate-seconds, at most --rate-commits);
5. get-config of everything (median of 3), and the daemon's RSS (VmRSS) idle after the load, after the
   single changes (N + rounds nodes configured) and at the end (the commits/s run added nodes too).

First, in this process: the engine side's memory per configured mobile node (tracemalloc, 20k nodes):
the typed objects the glue builds and what the engine adds (its indexes), beside the lxml tree of the
same entries (RSS growth of parsing them: what one datastore copy costs); then what one accepted
registration of each node adds (binding, node state, table indexes, the association's MD5 states).

The same run with an empty configuration (the virtual router, no mobile node) is the baseline every
single-change figure is printed beside; the table at the end sets them against the issue's targets.

    .venv/bin/python bench/config_scale.py                    # 0, 1k, 10k, 100k (about 2 minutes)
    .venv/bin/python bench/config_scale.py --sizes 0,10000    # a quicker look
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

from e2e import KEY_HEX, KEY_YANG, PASSWORD, USER, Daemon, check_ok, free_port, timed_rpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "server"))

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
M = "urn:mipha:yang:mipha-home-agent"
FIRST = int(IPv4Address("10.64.0.0"))  # bulk home addresses; single changes use 10.200.0.0 up
EXTRA = int(IPv4Address("10.200.0.0"))
SA = f"<security-association><spi>256</spi><key>{KEY_YANG}</key></security-association>"
TARGETS = {  # the targets at 100k
    "candidate": 0.015,
    "running": 0.010,
    "bulk": 3.0,
    "get-config": 0.2,
    "rss": 300e6,
    "rss per node": 2500,
    "rate": 100.0,
}


def node(name: str, address: int) -> str:
    home = IPv4Address(address)
    return f"<mobile-node><name>{name}</name><home-address>{home}</home-address>{SA}</mobile-node>"


def edit(target: str, body: str) -> bytes:
    return (
        f"<edit-config><target><{target}/></target><config xmlns='{NC}'><virtual-routers xmlns='{M}'>"
        f"<virtual-router><name>default</name>{body}</virtual-router></virtual-routers></config></edit-config>"
    ).encode()


def delete(name: str) -> str:
    return f"<mobile-node xmlns:nc='{NC}' nc:operation='delete'><name>{name}</name></mobile-node>"


class Run:
    """One daemon with N nodes configured, and the figures measured against it."""

    def __init__(self, client, daemon: Daemon, size: int) -> None:
        self.client, self.daemon, self.size = client, daemon, size
        self.figures: dict[str, float] = {}
        self.serial = 0
        self.configured = size  # mobile nodes configured now

    def rpc(self, body: bytes) -> float:
        self.serial += 1
        elapsed, reply = timed_rpc(self.client, body, str(self.serial))
        check_ok(reply)
        return elapsed

    def load(self) -> None:
        port = free_port()  # UDP: the TCP probe's port is as good a guess as any
        ha = f"<home-agent><address>127.0.0.1</address><udp-port>{port}</udp-port></home-agent>"
        body = ha + "".join(node(f"mn{i}", FIRST + i) for i in range(self.size))
        cpu0 = self.cpu()
        t_edit = self.rpc(edit("candidate", body))
        cpu1 = self.cpu()
        t_commit = self.rpc(b"<commit/>")
        self.figures.update({"bulk edit": t_edit, "bulk commit": t_commit, "bulk": t_edit + t_commit})
        self.figures.update({"bulk edit cpu": cpu1 - cpu0, "bulk commit cpu": self.cpu() - cpu1})

    def cpu(self) -> float:
        """The daemon's CPU seconds (all threads): what a loaded box distorts least."""
        return sum(self.daemon.cpu_seconds())

    def fresh(self) -> tuple[str, int]:
        self.serial += 1
        return f"x{self.serial}", EXTRA + self.serial

    def singles(self, rounds: int) -> None:
        via_candidate, added, deleted = [], [], []
        for _ in range(rounds):
            name, address = self.fresh()
            started = time.perf_counter()
            self.rpc(edit("candidate", node(name, address)))
            self.rpc(b"<commit/>")
            via_candidate.append(time.perf_counter() - started)
            name, address = self.fresh()
            added.append(self.rpc(edit("running", node(name, address))))
            deleted.append(self.rpc(edit("running", delete(name))))
            self.configured += 1
        self.figures.update(
            {
                "candidate": statistics.median(via_candidate),
                "running add": statistics.median(added),
                "running delete": statistics.median(deleted),
            }
        )

    def rate(self, seconds: float, most: int) -> None:
        done = 0
        started = time.perf_counter()
        while done < most and time.perf_counter() - started < seconds:
            name, address = self.fresh()
            self.rpc(edit("candidate", node(name, address)))
            self.rpc(b"<commit/>")
            done += 1
            self.configured += 1
        self.figures["rate"] = done / (time.perf_counter() - started)

    def get_config(self) -> None:
        cpu0 = self.cpu()
        times = [self.rpc_reply(b"<get-config><source><running/></source></get-config>") for _ in range(3)]
        self.figures["get-config"] = statistics.median(times)
        self.figures["get-config cpu"] = (self.cpu() - cpu0) / 3

    def rpc_reply(self, body: bytes) -> float:
        self.serial += 1
        elapsed, reply = timed_rpc(self.client, body, str(self.serial))
        if b"<rpc-error" in reply:
            raise RuntimeError(reply[:800])
        return elapsed

    def memory(self, figure: str = "rss") -> None:
        time.sleep(3.0)  # idle: the daemon trims its heap every 2 s
        self.figures[figure] = self.daemon.memory()["VmRSS"]
        self.figures[f"{figure} nodes"] = self.configured


def measure(size: int, rounds: int, rate_seconds: float, rate_commits: int) -> dict[str, float]:
    from nc_rawclient import RawClient

    with tempfile.TemporaryDirectory(prefix="mipha-config-scale-") as tmp:
        daemon = Daemon(Path(tmp), backend="none")
        daemon.start()
        try:
            idle = daemon.memory()["VmRSS"]
            client = RawClient(daemon.port, USER, PASSWORD)
            try:
                run = Run(client, daemon, size)
                run.load()
                run.memory()
                run.singles(rounds)
                run.memory("rss after singles")
                run.rate(rate_seconds, rate_commits)
                run.get_config()
                run.memory("rss at the end")
                run.figures["idle rss"] = idle
            finally:
                client.close()
        finally:
            daemon.stop()
    gc.collect()
    return run.figures


def engine_memory(nodes: int = 20_000) -> None:
    """Bytes per mobile node: typed objects (glue), engine indexes, and one lxml copy of the entries."""
    import tracemalloc

    from lxml import etree

    from ha.engine.home_agent import HomeAgent
    from mipha.yang_config import virtual_router

    def rss() -> int:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) * 1024

    body = "".join(node(f"mn{i}", FIRST + i) for i in range(nodes))
    document = (
        f"<virtual-routers xmlns='{M}'><virtual-router><name>default</name><home-agent>"
        f"<address>127.0.0.1</address></home-agent>{body}</virtual-router></virtual-routers>"
    ).encode()
    before = rss()
    root = etree.fromstring(document)
    tree = (rss() - before) / nodes
    tracemalloc.start()
    config, _ = virtual_router(root[0])
    built = tracemalloc.get_traced_memory()[0]
    engine = HomeAgent(config)
    del config  # what stays is what the engine holds
    gc.collect()
    total = tracemalloc.get_traced_memory()[0]
    before_bindings = tracemalloc.take_snapshot()
    register_each(engine, nodes)
    gc.collect()
    grown = tracemalloc.take_snapshot().compare_to(before_bindings, "filename")
    tracemalloc.stop()
    states = sum(d.size_diff for d in grown if d.traceback[0].filename.endswith("ha/protocol/auth.py"))
    per_binding = sum(d.size_diff for d in grown) / nodes
    assert len(engine.config.mobile_nodes) == nodes
    print(f"\n## Engine side, per configured mobile node ({nodes:,} nodes, one SA each)")
    print(f"  typed objects (MobileNode, SA, addresses)   {built / nodes:6.0f} B")
    print(f"  engine indexes on top                       {(total - built) / nodes:6.0f} B")
    print(f"  together                                    {total / nodes:6.0f} B")
    print(f"  one lxml copy of the same entries (RSS)     {tree:6.0f} B   (the datastore's share, per copy)")
    print(f"## Engine side, per binding (each of those nodes registered once)   {per_binding:6.0f} B")
    md5 = states / nodes
    print(f"  of which its association's MD5 states       {md5:6.0f} B   (kept from its first request on)")


def register_each(engine, nodes: int) -> None:  # type: ignore[no-untyped-def]
    """One accepted registration per configured node (HMAC-MD5, timestamps), through the engine."""
    from ha import protocol as p

    sa = p.SecurityAssociation(256, bytes.fromhex(KEY_HEX))
    ha, coa, wall = IPv4Address("127.0.0.1"), IPv4Address("192.0.2.10"), time.time()
    for i in range(nodes):
        home, ident = IPv4Address(FIRST + i), p.ntp_timestamp(wall)
        auth = (p.MobileHomeAuth(256),)
        request = p.RegistrationRequest(p.RequestFlags.NONE, 600, home, ha, coa, ident, auth)
        data = p.push_registration_request(request, sign={p.ExtensionType.MN_HA_AUTH: sa})
        reply = engine.handle_datagram(data, source=(str(coa), 434), received_on=ha, now=1.0, wallclock=wall)
        assert reply is not None and reply.data[1] == 0, reply
        if i % 4096 == 0:
            engine.drain_intents()
            engine.drain_events()
    engine.drain_intents()
    engine.drain_events()
    engine._peers.clear()  # the one request source's cache entry: not per binding


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.1f} ms"


def single_changes(results: dict[int, dict[str, float]], base: dict[str, float] | None) -> None:
    print("\n## One change, by configured size (medians; x = ratio to the empty configuration)")
    heads = ("candidate+commit", "running add", "running delete")
    print(f"  {'configured':>10}" + "".join(f"  {h:>20}" for h in heads) + f"  {'commits/s':>9}")
    for size, f in results.items():
        cells = []
        for key in ("candidate", "running add", "running delete"):
            ratio = f" {f[key] / base[key]:5.1f}x" if base else ""
            cells.append(f"{ms(f[key])}{ratio}")
        print(f"  {size:>10,}" + "".join(f"  {c:>20}" for c in cells) + f"  {f['rate']:9.0f}")
    steps = [size for size in results if size]
    if len(steps) > 1:  # flat is the goal
        for key in ("candidate", "running add", "running delete"):
            chain = " -> ".join(f"{ms(results[n][key]).strip()} ({n:,})" for n in steps)
            print(f"  growth of {key}: {chain}; {results[steps[-1]][key] / results[steps[0]][key]:.1f}x")


def bulk(results: dict[int, dict[str, float]], base: dict[str, float] | None) -> None:
    print("\n## Bulk load, read back")
    for size, f in results.items():
        print(
            f"  {size:>7,}: edit {f['bulk edit']:6.2f} s + commit {f['bulk commit']:6.2f} s"
            f" = {f['bulk']:6.2f} s (daemon CPU {f['bulk edit cpu']:.2f} + {f['bulk commit cpu']:.2f} s);"
            f" get-config {f['get-config']:6.3f} s (CPU {f['get-config cpu']:.3f} s)"
        )
    print("\n## Daemon RSS, idle (VmRSS 3 s after the last request), and per configured node over empty")
    for size, f in results.items():
        cells = []
        for key, when in (("rss", "after the load"), ("rss after singles", "after the single changes"),
                          ("rss at the end", "at the end")):  # fmt: skip
            count = int(f[f"{key} nodes"])
            per = f", {(f[key] - base[key]) / count:,.0f} B/node" if base and f is not base else ""
            cells.append(f"{when} {f[key] / 1e6:4.0f} MB ({count:,} nodes{per})")
        print(f"  {size:>7,}: " + "; ".join(cells))


def targets(f: dict[str, float], base: dict[str, float], top: int) -> None:
    candidate, add, remove = f["candidate"], f["running add"], f["running delete"]

    def rss(key: str) -> tuple[str, str, str, bool]:
        """RSS beside its bytes per configured node over the empty daemon at the same step."""
        per = (f[key] - base[key]) / f[f"{key} nodes"]
        met = f[key] <= TARGETS["rss"] and per <= TARGETS["rss per node"]
        return f"{f[key] / 1e6:8.0f} MB", f"{per:,.0f} B/node", "<= 300 MB, 2.5 KB/node", met

    rows = [
        ("one node added, candidate + commit", ms(candidate), f"{candidate / base['candidate']:.1f}x empty",
         "<= 15 ms, <= 3x empty", candidate <= TARGETS["candidate"] and candidate <= 3 * base["candidate"]),
        ("one node added straight in running", ms(add), "", "<= 10 ms", add <= TARGETS["running"]),
        ("one node deleted straight in running", ms(remove), "", "<= 10 ms", remove <= TARGETS["running"]),
        ("bulk: into candidate + commit", f"{f['bulk']:8.2f} s", "Netopeer2 3.6 s", "<= 3.0 s",
         f["bulk"] <= TARGETS["bulk"]),
        ("get-config of everything", f"{f['get-config']:8.3f} s", "", "<= 0.2 s",
         f["get-config"] <= TARGETS["get-config"]),
        ("daemon RSS, idle after the load", *rss("rss")),
        ("daemon RSS, idle after single commits", *rss("rss after singles")),
        (f"daemon RSS, idle, {int(f['rss at the end nodes']):,} nodes", *rss("rss at the end")),
        ("commits/s, one node each", f"{f['rate']:8.0f}/s", f"{base['rate']:.0f}/s empty", ">= 100/s",
         f["rate"] >= TARGETS["rate"]),
    ]  # fmt: skip
    print(f"\n## The issue's targets, {top:,} mobile nodes configured")
    for name, value, beside, target, met in rows:
        print(f"  {name:40} {value:>12}  {beside:16} target {target:22} {'met' if met else 'NOT met'}")


def report(results: dict[int, dict[str, float]]) -> None:
    base = results.get(0)
    single_changes(results, base)
    bulk(results, base)
    top = max(results)
    if top >= 100_000 and base is not None:
        targets(results[top], base, top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="0,1000,10000,100000", help="configured mobile nodes, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=21, help="single changes per figure (median)")
    parser.add_argument("--rate-seconds", type=float, default=5.0, help="longest commits/s measurement")
    parser.add_argument("--rate-commits", type=int, default=500, help="most commits in the commits/s figure")
    args = parser.parse_args()
    engine_memory()
    results: dict[int, dict[str, float]] = {}
    for size in sorted(int(s) for s in args.sizes.split(",")):
        print(f"  measuring with {size:,} mobile nodes configured ...", flush=True)
        results[size] = measure(size, args.rounds, args.rate_seconds, args.rate_commits)
    report(results)


if __name__ == "__main__":
    main()
