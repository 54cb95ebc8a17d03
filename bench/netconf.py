"""NETCONF server figures (issue 5), each printed beside Netopeer2 2.4 + sysrepo 3.7 on this kind of machine.

The server runs in a child process (so its peak RSS is its own), on a free loopback port, with the real
YANG module and validator. Figures:

1. RPC round trip of a small <get-config>: raw client (paramiko channel + our framing) and ncclient
   (TICK = 0.001). Netopeer2: 0.48 ms raw, 1.8 ms ncclient.
2. edit-config of 10k mobile nodes (each with one security association) into running, and into the
   candidate followed by <commit>. Netopeer2: 0.32 s / 0.35 s.
3. The same with 100k into running, plus the server's peak RSS (VmHWM). Netopeer2: 3.6 s, 553 MB.
4. get-config of the 100k entries until the last byte, raw client. Netopeer2: 0.66 s.
5. Receive time of a 1.5 MB vs a 15 MB request (a get-config whose subtree filter is that large, so
   parse + framing dominate); the ratio must stay <= 12 (linear receive).

Run: ``.venv/bin/python bench/netconf.py [--quick]`` (``--quick``: 1k/10k instead of 10k/100k).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "server"))

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
M = "urn:mipha:yang:mipha-home-agent"
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"
USER, PASSWORD = "admin", "bench-secret"


# -- the server child ----------------------------------------------------------------------------------
def serve(state_dir: str) -> None:
    import asyncio

    from server.app import start_server
    from server.auth import User, hash_password
    from server.config import ServerConfig

    async def main() -> None:
        cfg = ServerConfig(
            state_dir=Path(state_dir),
            port=0,
            users=[User(USER, hash_password(PASSWORD, n_log2=10), (), frozenset({"admin"}))],
            max_message_size=256 * 1024 * 1024,
        )
        handle = await start_server(cfg)
        print(handle.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(
            None, sys.stdin.read
        )  # until the parent closes stdin
        handle.close()

    asyncio.run(main())


class Child:
    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", self.tmp.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.proc.stdout.readline())

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


# -- payloads ----------------------------------------------------------------------------------------------
def mobile_nodes(n: int) -> str:
    return "".join(
        f"<mobile-node><name>mn{i}</name>"
        f"<home-address>10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}</home-address>"
        f"<security-association><spi>{256 + i}</spi><key>{KEY}</key></security-association></mobile-node>"
        for i in range(1, n + 1)
    )


def edit_rpc(n: int, target: str, mid: str) -> bytes:
    return (
        f'<rpc xmlns="{NC}" message-id="{mid}"><edit-config><target><{target}/></target><config>'
        f'<virtual-routers xmlns="{M}"><virtual-router><name>default</name>{mobile_nodes(n)}</virtual-router>'
        "</virtual-routers></config></edit-config></rpc>"
    ).encode()


def filter_rpc(size: int, mid: str) -> bytes:
    one = f'<virtual-routers xmlns="{M}"><virtual-router><name>vr-000000</name></virtual-router>'
    one += "</virtual-routers>"
    count = max(1, size // len(one))
    body = "".join(one.replace("000000", f"{i:06d}") for i in range(count))
    return (
        f'<rpc xmlns="{NC}" message-id="{mid}"><get-config><source><running/></source>'
        f'<filter type="subtree">{body}</filter></get-config></rpc>'
    ).encode()


# -- measurements ------------------------------------------------------------------------------------------
def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def check_ok(reply: bytes) -> None:
    if b"<ok/>" not in reply:
        raise SystemExit(f"unexpected reply: {reply[:500]!r}")


def line(label: str, ours: str, theirs: str, verdict: str = "") -> None:
    print(f"{label:<58} {ours:>14}   Netopeer2 {theirs:>10}   {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=500)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    from nc_rawclient import RawClient
    from ncclient import manager
    from ncclient.transport import session as nc_session

    nc_session.TICK = 0.001
    small, big = (1_000, 10_000) if args.quick else (10_000, 100_000)

    print(f"mipha NETCONF server, python {sys.version.split()[0]}, {os.cpu_count()} cores")
    # 1. small round trips
    child = Child()
    try:
        raw = RawClient(child.port, USER, PASSWORD)
        req = (
            b'<rpc xmlns="%s" message-id="1"><get-config><source><running/></source></get-config></rpc>'
            % NC.encode()
        )
        for _ in range(50):
            raw.send(req)
            raw.recv()
        samples = []
        for _ in range(args.rounds):
            t = time.perf_counter()
            raw.send(req)
            raw.recv()
            samples.append(time.perf_counter() - t)
        raw_ms = statistics.median(samples) * 1000
        line(
            "RPC round trip, small get-config, raw client (median)",
            f"{raw_ms:.3f} ms",
            "0.48 ms",
            f"ratio {raw_ms / 0.48:.2f}x (goal <= 2x)",
        )
        m = manager.connect(
            host="127.0.0.1",
            port=child.port,
            username=USER,
            password=PASSWORD,
            hostkey_verify=False,
            allow_agent=False,
            look_for_keys=False,
            timeout=60,
        )
        for _ in range(20):
            m.get_config("running")
        samples = [timed(lambda: m.get_config("running")) for _ in range(max(50, args.rounds // 5))]
        ncc_ms = statistics.median(samples) * 1000
        line(
            "RPC round trip, small get-config, ncclient (median)",
            f"{ncc_ms:.3f} ms",
            "1.8 ms",
            f"ratio {ncc_ms / 1.8:.2f}x",
        )
        m.close_session()

        # 5. linear receive (running is still empty: parse + framing dominate)
        def recv_time(n_bytes: int) -> float:
            req = filter_rpc(n_bytes, "f")
            raw.send(req)  # warm once
            raw.recv()
            return min(timed(lambda: (raw.send(req), raw.recv())) for _ in range(5))

        t1, t2 = recv_time(1_500_000), recv_time(15_000_000)
        line("receive time, 1.5 MB request", f"{t1 * 1000:.1f} ms", "-")
        line(
            "receive time, 15 MB request", f"{t2 * 1000:.1f} ms", "-", f"ratio {t2 / t1:.1f} (must be <= 12)"
        )

        # 2. 10k into running, then 10k into candidate + commit (on a clean server each time)
        msg = edit_rpc(small, "running", "e1")
        t = timed(lambda: (raw.send(msg), check_ok(raw.recv())))
        line(
            f"edit-config {small // 1000}k mobile nodes into running",
            f"{t:.3f} s",
            "0.32 s" if small == 10_000 else "-",
            f"({len(msg) / 1e6:.1f} MB request)",
        )
        raw.close()
    finally:
        child.stop()
    child = Child()
    try:
        raw = RawClient(child.port, USER, PASSWORD)
        msg = edit_rpc(small, "candidate", "e2")
        commit = b'<rpc xmlns="%s" message-id="c"><commit/></rpc>' % NC.encode()
        t = timed(lambda: (raw.send(msg), check_ok(raw.recv()), raw.send(commit), check_ok(raw.recv())))
        line(
            f"edit-config {small // 1000}k into candidate + commit",
            f"{t:.3f} s",
            "0.35 s" if small == 10_000 else "-",
        )
        raw.close()
    finally:
        child.stop()

    # 3. + 4. 100k into running, peak RSS, get-config of everything
    child = Child()
    try:
        raw = RawClient(child.port, USER, PASSWORD)
        base_rss = child.peak_rss_mb()
        msg = edit_rpc(big, "running", "e3")
        t = timed(lambda: (raw.send(msg), check_ok(raw.recv())))
        line(
            f"edit-config {big // 1000}k mobile nodes into running",
            f"{t:.3f} s",
            "3.6 s" if big == 100_000 else "-",
            f"({len(msg) / 1e6:.1f} MB request)",
        )
        line(
            "  server peak RSS (VmHWM) after it",
            f"{child.peak_rss_mb():.0f} MB",
            "553 MB",
            f"(idle server: {base_rss:.0f} MB)",
        )
        msg = b""  # free the 20 MB request before measuring the reply
        get = (
            b'<rpc xmlns="%s" message-id="g"><get-config><source><running/></source></get-config></rpc>'
            % NC.encode()
        )
        size = 0

        def fetch() -> None:
            nonlocal size
            raw.send(get)
            size = len(raw.recv())

        t = timed(fetch)
        line(
            f"get-config of {big // 1000}k entries until the last byte, raw",
            f"{t:.3f} s",
            "0.66 s" if big == 100_000 else "-",
            f"({size / 1e6:.1f} MB reply)",
        )

        raw.close()
    finally:
        child.stop()


if __name__ == "__main__":
    main()
