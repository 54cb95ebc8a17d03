"""Leadership, fencing and replication against a real 3-member etcd cluster (Debian etcd-server).

The members run as child processes (``member_proc.py``) so that one can be SIGKILLed like a crashed
daemon; each prints a line per replicated binding only after etcd confirmed it (what a reply waits
for in the daemon), so "acknowledged" is exactly what a mobile node would have been told.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from etcd_cluster import EtcdCluster

from mipha.journal import BindingRecord
from mipha.redundancy import Fenced, Member, Mirror, RedundancyConfig, RedundancyError, config_from

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
TTL = 2


class Proc:
    """A member_proc.py child; its stdout lines are collected with their arrival time."""

    def __init__(self, node: str, etcd: EtcdCluster, *, netns: str | None = None, via: str = "") -> None:
        self.node = node
        self.lines: list[tuple[float, list[str]]] = []
        endpoints = [f"http://{via}:{m.client_port}" for m in etcd.members] if via else etcd.endpoints
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(HERE / "member_proc.py"), node, str(TTL), *endpoints],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a line cut short by kill -9 acknowledged nothing
                self.lines.append((time.time(), line.split()))

    def words(self, kind: str) -> list[list[str]]:
        return [w for _, w in list(self.lines) if w and w[0] == kind]

    def acked(self) -> list[tuple[float, str]]:
        return [(float(w[1]), w[2]) for w in self.words("ACK")]

    def wait_for(self, kind: str, timeout: float, count: int = 1) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.words(kind)
            if len(found) >= count:
                return found[count - 1]
            assert self.proc.poll() is None, f"{self.node} exited: {self.lines[-20:]}"
            time.sleep(0.02)
        raise AssertionError(f"{self.node}: no {kind} within {timeout}s; last lines {self.lines[-10:]}")

    def wait_for_all(self, kind: str, timeout: float, match) -> list[list[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [w for w in self.words(kind) if match(w)]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(
            f"{self.node}: no matching {kind} within {timeout}s; last lines {self.lines[-10:]}"
        )

    def kill9(self) -> float:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return time.time()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def stored_homes(etcd: EtcdCluster) -> set[str]:
    out = etcd.ctl("get", "--prefix", "/mipha/test/bindings/", "--print-value-only")
    return {json.loads(line)["home_address"] for line in out.splitlines() if line.strip()}


def test_kill9_of_the_active_member_loses_no_acknowledged_binding(etcd: EtcdCluster) -> None:
    a = Proc("a", etcd)
    b = None
    try:
        a.wait_for("ACTIVE", 15)
        b = Proc("b", etcd)
        time.sleep(0.5)
        assert not b.words("ACTIVE"), "two actives: b became active while a held the lease"
        while len(a.acked()) < 300:
            a.wait_for("ACK", 10, count=len(a.acked()) + 1)
        killed = a.kill9()
        acked = a.acked()
        took_over = float(b.wait_for("ACTIVE", 10)[1])
        print(f"acknowledged before the kill: {len(acked)}; standby active {took_over - killed:.2f}s after")
        # (how long it took is a figure for bench/failover.py; here: it happened, after the lease)
        assert max(t for t, _ in acked) < took_over, "a acknowledged after b became active"
        missing = {home for _, home in acked} - stored_homes(etcd)
        assert not missing, f"acknowledged but not in etcd: {sorted(missing)[:10]}"
        b.wait_for("ACK", 5)  # and the new active replicates
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_etcd_member_loss_causes_no_failover(etcd: EtcdCluster) -> None:
    a = Proc("a", etcd)
    b = None
    try:
        a.wait_for("ACTIVE", 15)
        b = Proc("b", etcd)
        a.wait_for("ACK", 10, count=100)
        for which in ("follower", "leader"):
            raft_leader = etcd.leader()
            victim = (
                raft_leader
                if which == "leader"
                else next(m for m in etcd.members if m is not raft_leader and etcd.alive(m))
            )
            before = len(a.acked())
            killed = time.time()
            etcd.kill(victim)
            resumed = float(a.wait_for("ACK", 10, count=before + 50)[1])
            pause = max(0.0, resumed - killed)
            elected = etcd.elected_after(killed) if which == "leader" else None
            election = f"; etcd elected a new leader after {elected - killed:.2f}s" if elected else ""
            print(f"etcd {which} {victim.name} killed: registrations paused at most {pause:.2f}s{election}")
            if which == "follower":
                etcd.start_member(victim)
                etcd.wait_healthy()
        lost = [w for w in a.words("STANDBY") if not w[2].startswith("suspended")]
        assert not lost, f"the home agent failed over: {lost}"
        assert not b.words("ACTIVE")
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_a_deposed_leader_cannot_replicate_and_steps_down(etcd: EtcdCluster) -> None:
    eps = tuple(("127.0.0.1", m.client_port) for m in etcd.members)

    async def scenario() -> None:
        events: list[tuple[str, str]] = []

        def member(node: str) -> Member:
            async def on_active(token: int) -> None:
                events.append((node, "active"))

            async def on_standby(reason: str) -> None:
                events.append((node, "standby"))

            return Member(
                RedundancyConfig(eps, "test", node, TTL), on_active=on_active, on_standby=on_standby
            )

        a, b = member("a"), member("b")
        await a.start()
        for _ in range(400):
            if a.token:
                break
            await asyncio.sleep(0.05)
        assert a.token, "a did not become active"
        await b.start()
        record = BindingRecord(
            "vr", "10.1.0.1", "192.0.2.1", "mn", "192.0.2.1", 434, 60, time.time(), 1, 0, "ipip"
        )
        await a.replicator.submit([record])
        # An operator (or a split brain) takes the leader key away: b wins the next round.
        await a.client.delete(a.leader_key)
        for _ in range(400):
            if b.token:
                break
            await asyncio.sleep(0.05)
        assert (b.token and b.token != a.token) or not a.token
        late = BindingRecord(
            "vr", "10.1.0.2", "192.0.2.1", "mn", "192.0.2.1", 434, 60, time.time(), 1, 0, "ipip"
        )
        with pytest.raises(Fenced):
            await a.replicator.submit([late])
        assert a.token == 0
        for _ in range(400):  # the step down runs in its own task
            if ("a", "standby") in events:
                break
            await asyncio.sleep(0.05)
        assert ("a", "standby") in events
        assert await b.client.get(b"/mipha/test/bindings/vr/10.1.0.2/192.0.2.1") is None
        assert await b.client.get(b"/mipha/test/bindings/vr/10.1.0.1/192.0.2.1") is not None
        await a.stop()
        await b.stop()

    asyncio.run(asyncio.wait_for(scenario(), 120))


def etcd_watchers(etcd: EtcdCluster) -> int:
    """Watchers the members hold (etcd's own gauge, from their /metrics)."""
    total = 0
    for m in etcd.members:
        text = urllib.request.urlopen(f"{m.endpoint}/metrics", timeout=5).read().decode()
        found = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
        assert found, "etcd exports no watcher gauge"
        total += int(float(found.group(1)))
    return total


def test_a_stopped_mirror_leaves_no_watch_behind(etcd: EtcdCluster) -> None:
    """An active member stops its mirror: the watch must end in etcd too, or the member keeps
    receiving (and queueing, unread) every one of its own writes."""
    eps = tuple(("127.0.0.1", m.client_port) for m in etcd.members)

    async def nothing(_: object) -> None:
        return None

    async def watchers_become(expected: int) -> None:
        deadline = time.monotonic() + 10
        while (found := await asyncio.to_thread(etcd_watchers, etcd)) != expected:
            assert time.monotonic() < deadline, f"etcd holds {found} watchers, expected {expected}"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        before = await asyncio.to_thread(etcd_watchers, etcd)
        member = Member(RedundancyConfig(eps, "test", "a", TTL), on_active=nothing, on_standby=nothing)
        await member.client.connect()
        mirror = Mirror(member)
        for _ in range(2):  # following again after a stop (a member stepping down) works the same
            mirror.start()
            await watchers_become(before + 1)
            record = BindingRecord(
                "vr", "10.1.0.1", "192.0.2.1", "mn", "192.0.2.1", 434, 60, time.time(), 1, 0, "ipip"
            )
            await member.client.put(b"/mipha/test/bindings/vr/10.1.0.1/192.0.2.1", record.to_json().encode())
            await mirror.stop()
            await watchers_become(before)
        await member.client.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def watched_by(etcd: EtcdCluster) -> dict[str, int]:
    """Watchers each member serves (etcd's own gauge), by member name."""
    found = {}
    for m in etcd.members:
        text = urllib.request.urlopen(f"{m.endpoint}/metrics", timeout=5).read().decode()
        gauge = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
        assert gauge, "etcd exports no watcher gauge"
        found[m.name] = int(float(gauge.group(1)))
    return found


def test_the_standbys_watch_is_served_by_a_follower(etcd: EtcdCluster) -> None:
    """Every member feeds its watchers as it applies a write; on etcd's Raft leader that apply is on
    the way of every replication transaction's answer.  So the standby watches through a follower,
    and through another one once the one it watched became the leader (``etcdctl move-leader``)."""
    from test_replication_order import move_leader

    eps = tuple(("127.0.0.1", m.client_port) for m in etcd.members)

    async def nothing(_: object) -> None:
        return None

    async def watch_on_a_follower(other_than: str = "") -> str:
        deadline = time.monotonic() + 15
        while True:
            leader = (await asyncio.to_thread(etcd.leader)).name
            found = await asyncio.to_thread(watched_by, etcd)
            serving = [name for name, n in found.items() if n]
            if len(serving) == 1 and found[serving[0]] == 1 and serving[0] not in (leader, other_than):
                return serving[0]
            assert time.monotonic() < deadline, f"watchers {found}, etcd's leader {leader}"
            await asyncio.sleep(0.1)

    async def mirrored(member: Member, mirror: Mirror, home: str) -> None:
        key = f"/mipha/test/bindings/vr/{home}/192.0.2.1".encode()
        record = BindingRecord("vr", home, "192.0.2.1", "mn", "192.0.2.1", 434, 60, time.time(), 1, 0, "ipip")
        await member.client.put(key, record.to_json().encode())
        deadline = time.monotonic() + 10
        while key not in mirror.records:
            assert time.monotonic() < deadline, f"the mirror did not see {home}"
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        member = Member(RedundancyConfig(eps, "test", "b", TTL), on_active=nothing, on_standby=nothing)
        await member.client.connect()
        mirror = Mirror(member)
        mirror.start()
        first = await watch_on_a_follower()
        await mirrored(member, mirror, "10.1.0.1")
        target = next(m for m in etcd.members if m.name == first)
        await asyncio.to_thread(move_leader, etcd, target)
        assert (await asyncio.to_thread(etcd.leader)).name == first
        second = await watch_on_a_follower(other_than=first)
        await mirrored(member, mirror, "10.1.0.2")
        print(f"watched by {first}, then by {second} once {first} led")
        await mirror.stop()
        await member.replicator.route.close()
        await member.client.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_redundancy_section_is_checked() -> None:
    good = config_from({"etcd": ["http://127.0.0.1:2379"], "group": "g", "node": "n"}, "[redundancy]")
    assert good.etcd == (("127.0.0.1", 2379),) and good.lease_ttl == 2 and good.root == "/mipha/g/"
    for bad, words in [
        ({"etcd": [], "group": "g", "node": "n"}, "etcd must be"),
        ({"etcd": ["ftp://127.0.0.1:2379"], "group": "g", "node": "n"}, "expected http://HOST:PORT"),
        ({"etcd": ["http://127.0.0.1"], "group": "g", "node": "n"}, "expected http://HOST:PORT"),
        ({"etcd": ["http://127.0.0.1:1"], "group": "a/b", "node": "n"}, "group must be"),
        ({"etcd": ["http://127.0.0.1:1"], "group": "g", "node": "n", "lease-ttl": 0}, "lease-ttl"),
    ]:
        with pytest.raises(RedundancyError, match=words):
            config_from(bad, "[redundancy]")


@pytest.fixture
def partitionable(tmp_path: Path):
    """A namespace linked to this one by a veth pair (both ends made here), and an etcd cluster that
    also listens on the near end: a member in the namespace can be cut off by taking the link down."""
    tag = f"{os.getpid() % 10000}{uuid.uuid4().hex[:4]}"
    ns, near, far = f"mip-rp{tag}", f"mrpn{tag}", f"mrpf{tag}"
    # a /30 in this (the root) namespace: not one a concurrent run or a killed one's leftover link holds
    held = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    octet = next(o for o in ((os.getpid() + i) % 250 for i in range(250)) if f" 10.254.{o}." not in held)
    here, there = f"10.254.{octet}.1", f"10.254.{octet}.2"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", ns)
    cluster = None
    try:
        ip("link", "add", near, "type", "veth", "peer", "name", far)
        ip("link", "set", far, "netns", ns)
        ip("addr", "add", f"{here}/30", "dev", near)
        ip("link", "set", near, "up")
        ip("-n", ns, "addr", "add", f"{there}/30", "dev", far)
        ip("-n", ns, "link", "set", far, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        cluster = EtcdCluster(tmp_path / "etcd", listen_also=[here])
        cluster.base.mkdir()
        cluster.start()
        yield cluster, ns, here, lambda up: ip("link", "set", near, "up" if up else "down")
    finally:
        if cluster is not None:
            cluster.stop()
        subprocess.run(["ip", "link", "del", near], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.netns
def test_a_partitioned_leader_stops_answering_before_the_other_takes_over(partitionable) -> None:
    etcd, ns, here, link = partitionable
    a = Proc("a", etcd, netns=ns, via=here)
    b = None
    try:
        a.wait_for("ACTIVE", 15)
        b = Proc("b", etcd)
        a.wait_for("ACK", 10, count=200)
        cut = time.time()
        link(False)
        # (the lines may come late on a loaded box: the times they carry are what is checked)
        standby = a.wait_for("STANDBY", TTL + 20)
        stopped, fence = float(standby[1]), float(standby[3])
        took_over = float(b.wait_for("ACTIVE", TTL + 20)[1])
        last_ack = max(t for t, _ in a.acked())
        print(
            f"partitioned leader fenced {fence - cut:.2f}s (said so {stopped - cut:.2f}s) after the cut; other active after "
            f"{took_over - cut:.2f}s; last acknowledgement by the old leader {last_ack - cut:.2f}s after the cut"
        )
        # Member.active is false from the fence on, by the clock (the STANDBY callback itself may run
        # late on a loaded box): the fence must fall within the lease, and before the other took over
        assert fence - cut <= TTL, "the partitioned leader kept answering past its lease"
        assert fence < took_over and last_ack < took_over, (
            "two actives: the old leader answered after the takeover"
        )
        missing = {home for _, home in a.acked()} - stored_homes(etcd)
        assert not missing
        link(True)  # healed: the old leader finds its lease gone and stays standby
        reasons = [w[2] for w in a.wait_for_all("STANDBY", 10, lambda w: not w[2].startswith("suspended"))]
        assert reasons
        time.sleep(1)
        assert len(a.words("ACTIVE")) == 1, "the old leader became active again while the other holds the key"
        b.wait_for("ACK", 5)
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_bootstrap_redundancy_section() -> None:
    from mipha.bootstrap import BootstrapError, from_dict

    base = Path("/tmp")
    assert from_dict({}, base=base).redundancy is None  # off by default: the single box is unchanged
    boot = from_dict(
        {"redundancy": {"etcd": ["http://127.0.0.1:2379"], "group": "g", "node": "a", "lease-ttl": 3}},
        base=base,
    )
    assert boot.redundancy.node == "a" and boot.redundancy.lease_ttl == 3
    assert boot.redundancy.warm_kernel  # the standby keeps its kernel state warm unless told not to
    cold = {"etcd": ["http://127.0.0.1:2379"], "group": "g", "node": "a", "warm-kernel": False}
    assert not from_dict({"redundancy": cold}, base=base).redundancy.warm_kernel
    with pytest.raises(BootstrapError, match="warm-kernel"):
        from_dict({"redundancy": {**cold, "warm-kernel": "no"}}, base=base)
    assert boot.redundancy.leader_route  # replication goes to etcd's Raft leader unless told not to
    assert not from_dict({"redundancy": {**cold, "leader-route": False}}, base=base).redundancy.leader_route
    with pytest.raises(BootstrapError, match="leader-route"):
        from_dict({"redundancy": {**cold, "leader-route": 1}}, base=base)
    with pytest.raises(BootstrapError, match="unknown key"):
        from_dict(
            {"redundancy": {"etcd": ["http://127.0.0.1:2379"], "group": "g", "node": "a", "ttl": 3}},
            base=base,
        )
    with pytest.raises(BootstrapError, match="node is required"):
        from_dict({"redundancy": {"etcd": ["http://127.0.0.1:2379"], "group": "g"}}, base=base)
    with pytest.raises(BootstrapError, match="expected http://HOST:PORT"):
        from_dict({"redundancy": {"etcd": ["127.0.0.1:2379"], "group": "g", "node": "a"}}, base=base)
