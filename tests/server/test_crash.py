"""kill -9 of a real server process at any moment loses no acknowledged commit (running's journal)."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from nc_rawclient import RawClient

HERE = Path(__file__).resolve().parent
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
M = "urn:mipha:yang:mipha-home-agent"
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"


def start(state: Path, compact_at: int) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "NETCONF_JOURNAL_MIN_COMPACT": str(compact_at)}
    child = subprocess.Popen(
        [sys.executable, str(HERE / "nc_child.py"), str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=HERE.parent.parent,
    )
    line = child.stdout.readline()
    if not line.strip().isdigit():
        child.kill()
        raise AssertionError(f"server did not start: {child.stderr.read().decode()[-2000:]}")
    return child, int(line)


def node(i: int) -> str:
    return (
        f"<mobile-node><name>n{i}</name><home-address>10.{i >> 16}.{(i >> 8) & 255}.{i & 255}</home-address>"
        f"<security-association><spi>{256 + i}</spi><key>{KEY}</key></security-association></mobile-node>"
    )


def edit(target: str, body: str) -> str:
    return (
        f"<edit-config><target><{target}/></target><config><virtual-routers xmlns='{M}'><virtual-router>"
        f"<name>vr</name>{body}</virtual-router></virtual-routers></config></edit-config>"
    )


def delete(i: int) -> str:
    return edit(
        "running", f"<mobile-node xmlns:nc='{NC}' nc:operation='delete'><name>n{i}</name></mobile-node>"
    )


def names(c: RawClient) -> set[str]:
    reply = c.rpc("<get-config><source><running/></source></get-config>").decode()
    return set(re.findall(r"<name>(n\d+)</name>", reply))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_kill_9_at_any_moment_loses_no_acknowledged_commit(tmp_path, seed):
    """Commits stream in (running edits, candidate + commit, deletions) while the server compacts its
    journal now and then; it is SIGKILLed at a random moment, restarted, and holds exactly the
    acknowledged state (the one commit in flight may or may not have landed)."""
    rnd = random.Random(seed)
    state = tmp_path / "state"
    expected: set[str] = set()
    compacted: list[int] = []
    for life in range(2):
        child, port = start(state, compact_at=rnd.choice([2000, 20000, 200000]))
        try:
            c = RawClient(port, "admin", "crash-test")
            assert names(c) == expected  # everything acknowledged before the last kill
            # the kill comes at a random moment once this life has acknowledged a few commits (a
            # timer from the start may fire before any on a loaded box, which proves nothing)
            killer = threading.Timer(rnd.uniform(0.0, 1.2), os.kill, (child.pid, signal.SIGKILL))
            acknowledged = 0
            in_flight: tuple[str, str] | None = None
            i = 1000 * (life + 1) * seed
            try:
                while True:
                    i += 1
                    kind = rnd.random()
                    if kind < 0.15 and expected:
                        victim = rnd.choice(sorted(expected))
                        in_flight = ("-", victim)
                        reply = c.rpc(delete(int(victim[1:])))
                    elif kind < 0.5:
                        in_flight = ("+", f"n{i}")
                        assert b"<ok/>" in c.rpc(edit("candidate", node(i)))
                        reply = c.rpc("<commit/>")
                    else:
                        in_flight = ("+", f"n{i}")
                        reply = c.rpc(edit("running", node(i)))
                    assert b"<ok/>" in reply, reply
                    (expected.add if in_flight[0] == "+" else expected.discard)(in_flight[1])
                    in_flight = None
                    acknowledged += 1
                    if killer.ident is None and acknowledged >= 8 and len(expected) > 6:
                        killer.start()
            except Exception:  # the connection dies with the server
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    raise AssertionError("the session failed while the server lives") from None
            killer.join()
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
        child, port = start(state, compact_at=200000)
        try:
            got = names(RawClient(port, "admin", "crash-test"))
        finally:
            child.kill()
            child.wait()
        if in_flight is not None and got != expected:
            # the commit in flight was made durable before the kill, its <ok/> lost
            op, name = in_flight
            (expected.add if op == "+" else expected.discard)(name)
        assert got == expected
        assert len(expected) > 5
        head = (state / "running.xml").read_bytes()[:40]
        compacted.append(int(re.search(rb"journal-seq (\d+)", head).group(1)))
    # the journal was compacted (the snapshot holds more than the first commit) in this run
    assert max(compacted) > 1, compacted
