"""Hot standby of two real `mipha run` daemons on one home link, with a real 3-member etcd cluster.

Mobile nodes renew continuously from their namespace (``failover_load.py``); the active daemon is
SIGKILLed; the standby must take over the home agent address and every binding acknowledged before
the kill (read back from its NETCONF op state), and answer registrations again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from etcd_cluster import EtcdCluster
from lxml import etree
from pair import COA, HA, HOME_START, NS, PairDaemon, Topology
from prometheus_client.parser import text_string_to_metric_families

from ha.netns import run_in_netns

pytestmark = [pytest.mark.netns, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
NODES = 100
TTL = 2


class Load:
    """failover_load.py in the mobile node's namespace; its lines with arrival times."""

    def __init__(self, mn_ns: str, duration: float, interval: float, nodes: int = NODES) -> None:
        self.lines: list[list[str]] = []
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", mn_ns, sys.executable, str(HERE / "failover_load.py"), HA, COA,
             HOME_START, str(nodes), str(interval), str(duration)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.split())

    def acks(self) -> list[tuple[float, str]]:
        return [(float(w[1]), w[2]) for w in list(self.lines) if w and w[0] == "ACK"]

    def wait(self, timeout: float) -> None:
        self.proc.wait(timeout=timeout)
        self.reader.join(5)

    def finish(self, timeout: float) -> None:
        """End the run now (SIGUSR1: each node completes its transaction) and wait for it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGUSR1)  # ip netns exec execs python: this is its PID
        self.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # by PID (ip netns exec execs python)
            self.proc.wait(timeout=10)


class Traffic:
    """A correspondent sending UDP to one home address every 20 ms; the mobile node's raw IP-in-IP
    socket records when each tunnelled copy arrives (outer destination = the care-of address)."""

    def __init__(self, topo: Topology, home: str) -> None:
        self.home = home
        self.arrivals: list[float] = []
        self.sender = run_in_netns(topo.cn, socket.socket, socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver = run_in_netns(
            topo.mn, socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_IPIP
        )
        self.receiver.settimeout(0.1)
        self.running = True
        self.threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._recv, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        while self.running:
            with contextlib.suppress(OSError):
                self.sender.sendto(b"through the tunnel", (self.home, 9))
            time.sleep(0.02)

    def _recv(self) -> None:
        while self.running:
            try:
                packet = self.receiver.recv(2048)
            except (TimeoutError, OSError):
                continue
            inner = packet[(packet[0] & 0x0F) * 4 :]
            if len(inner) >= 20 and socket.inet_ntoa(inner[16:20]) == self.home:
                self.arrivals.append(time.time())

    def stop(self) -> None:
        self.running = False
        for t in self.threads:
            t.join(2)
        self.sender.close()
        self.receiver.close()


def get(daemon: PairDaemon, subtree: str) -> etree._Element:
    with daemon.connect() as m:
        reply = m.get(filter=("subtree", subtree))
    return etree.fromstring(reply.xml.encode())


def bound_homes(daemon: PairDaemon) -> set[str]:
    tree = get(daemon, f'<virtual-routers xmlns="{NS}"><virtual-router><name>home</name><home-agent>'
                       "<bindings/></home-agent></virtual-router></virtual-routers>")  # fmt: skip
    return {el.text for el in tree.iter(f"{{{NS}}}home-address")}


def redundancy(daemon: PairDaemon) -> dict[str, list[str]]:
    tree = get(daemon, f'<redundancy xmlns="{NS}"/>')
    found: dict[str, list[str]] = {}
    for el in tree.iter():
        if isinstance(el.tag, str) and el.tag.startswith(f"{{{NS}}}") and len(el) == 0:
            found.setdefault(etree.QName(el).localname, []).append(el.text or "")
    return found


def wait_redundancy(daemon: PairDaemon, check, timeout: float = 30) -> dict[str, list[str]]:
    """The daemon's redundancy state once ``check(state)`` holds (or the last one read at the deadline):
    a member learns the leader, its peers and the group's configuration in its campaign rounds, after
    the daemon already runs and logged so."""
    deadline = time.monotonic() + timeout
    while True:
        state = redundancy(daemon)
        if check(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def kernel_state(ns: str) -> dict[str, int]:
    """mipha's objects in a home agent's namespace: routes in its table, its policy rule, proxy ARP."""

    def count(*args: str) -> int:
        out = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=False)
        return len([line for line in out.stdout.splitlines() if line.strip()])  # no table yet: 0

    return {
        "routes": count("-4", "route", "show", "table", "434", "proto", "245"),
        "rule": count("-4", "rule", "show", "pref", "434"),
        "proxies": count("-4", "neigh", "show", "proxy", "dev", "home0"),
    }


def wait_kernel(ns: str, expected: dict[str, int], timeout: float = 30) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        state = kernel_state(ns)
        if state == expected or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def replication_stages(daemon: PairDaemon) -> dict[str, float]:
    """Observations of each replication stage on the daemon's /metrics (``mipha_replication_seconds``)."""
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        sample.labels["stage"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "mipha_replication_seconds"
        for sample in family.samples
        if sample.name.endswith("_count")
    }


def test_kill9_of_the_active_daemon_under_load(etcd: EtcdCluster, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces)")
    topo = Topology()
    daemons: list[PairDaemon] = []
    load = None
    traffic = None
    try:
        topo.build()
        a = PairDaemon(tmp_path, "a", topo.a, etcd.endpoints, NODES, TTL)
        b = PairDaemon(tmp_path, "b", topo.b, etcd.endpoints, NODES, TTL)
        daemons += [a, b]
        a.start()
        a.wait_log("redundancy: active", 60)
        b.start()
        b.wait_log("mipha running", 60)
        state = wait_redundancy(b, lambda s: "leader" in s and "configuration-agrees" in s)
        assert state["role"] == ["standby"] and state["leader"] == ["a"], state
        assert state["configuration-agrees"] == ["true"], state
        assert wait_redundancy(a, lambda s: s.get("role") == ["active"])["role"] == ["active"]
        # The load runs until the test ends it, once registrations and traffic went on after the kill
        # (the steps before the kill may take long on a loaded box: a fixed duration could end first).
        load = Load(topo.mn, duration=240, interval=0.25)
        time.sleep(3)
        traffic = Traffic(topo, HOME_START)
        # The standby's kernel is warm: every route in mipha's table, but neither the rule that would
        # send its own traffic there nor proxy ARP on the shared home link (the active's job).
        warm = wait_kernel(topo.b, {"routes": NODES, "rule": 0, "proxies": 0})
        assert warm == {"routes": NODES, "rule": 0, "proxies": 0}, f"standby kernel: {warm}"
        assert kernel_state(topo.a) == {"routes": NODES, "rule": 1, "proxies": NODES}
        time.sleep(1)
        acks = len(load.acks())
        stages = replication_stages(a)  # every acknowledged change went through all of them
        assert stages["total"] >= acks and all(stages[s] for s in ("queued", "etcd", "ordered")), stages
        killed = a.kill9()
        acked_before = {home for t, home in load.acks() if t < killed}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            [t for t, _ in load.acks() if t > killed] and [t for t in traffic.arrivals if t > killed + 0.1]
        ):
            time.sleep(0.1)
        time.sleep(3)  # the nodes go on renewing with the new active a little longer
        load.finish(60)
        after = sorted(t for t, _ in load.acks() if t > killed)
        assert after, f"no registration answered after the kill: {load.lines[-20:]}"
        gap = after[0] - killed
        lost_homes = {w[2] for w in load.lines if w and w[0] == "LOST"}
        print(f"{len(acked_before)} nodes acknowledged before the kill; registrations answered again "
              f"{gap:.2f}s after it; transactions without any reply: {len(lost_homes)}")  # fmt: skip
        assert len(acked_before) == NODES, "not every node registered before the kill"
        traffic.stop()
        through_a = [t for t in traffic.arrivals if t < killed]
        through_b = [t for t in traffic.arrivals if t > killed + 0.1]
        assert through_a, "no traffic reached the care-of address through the first active"
        assert through_b, "traffic to the home address did not resume through the new active"
        print(f"traffic to {HOME_START} through the tunnel again {through_b[0] - killed:.2f}s after the kill")
        state = wait_redundancy(b, lambda s: s.get("role") == ["active"])
        assert state["role"] == ["active"] and state["leader"] == ["b"], state
        active = wait_kernel(topo.b, {"routes": NODES, "rule": 1, "proxies": NODES})
        assert active == {"routes": NODES, "rule": 1, "proxies": NODES}, f"new active's kernel: {active}"
        missing = acked_before - bound_homes(b)
        assert not missing, f"acknowledged bindings lost in the failover: {sorted(missing)}"
        homes = {str(IPv4Address(HOME_START) + i) for i in range(NODES)}
        assert bound_homes(b) == homes
        for d in (a, b):  # etcd holds the bindings: no member journals them on its own disk
            journal = d.dir / "state" / "bindings.journal"
            assert journal.exists() and not journal.read_text().strip(), f"{d.node} journaled bindings"
        # The killed member comes back (as a supervisor would restart it): it joins as the standby.
        a.start()
        a.wait_log("mipha running", 60)
        state = wait_redundancy(a, lambda s: "leader" in s and sorted(s.get("peer", [])) == ["a", "b"])
        assert state["role"] == ["standby"] and state["leader"] == ["b"], state
        assert sorted(state["peer"]) == ["a", "b"]
        assert bound_homes(a) == set()
        rejoined = wait_kernel(topo.a, {"routes": NODES, "rule": 0, "proxies": 0})
        assert rejoined == {"routes": NODES, "rule": 0, "proxies": 0}, f"restarted standby: {rejoined}"
    finally:
        if load is not None:
            load.stop()
        if traffic is not None and traffic.running:
            traffic.stop()
        for d in daemons:
            d.stop()
        topo.destroy()


def test_a_standby_whose_configuration_differs_does_not_take_over(etcd: EtcdCluster, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (network namespaces)")
    topo = Topology()
    daemons: list[PairDaemon] = []
    try:
        topo.build()
        a = PairDaemon(tmp_path, "a", topo.a, etcd.endpoints, 10, TTL)
        b = PairDaemon(tmp_path, "b", topo.b, etcd.endpoints, 11, TTL)  # one mobile node more
        daemons += [a, b]
        a.start()
        a.wait_log("redundancy: active", 60)
        b.start()
        b.wait_log("takeover blocked", 60)
        state = redundancy(b)
        assert state["role"] == ["standby"] and state["configuration-agrees"] == ["false"], state
        assert "configuration differs" in state["reason"][0]
        assert wait_redundancy(a, lambda s: "configuration-agrees" in s)["configuration-agrees"] == ["true"]
        killed = a.kill9()
        time.sleep(TTL + 2)  # the lease has expired: b would have taken over by now
        state = redundancy(b)
        assert state["role"] == ["standby"], f"a standby with another configuration took over: {state}"
        assert "leader" not in state, state
        print(f"b still standby {time.time() - killed:.1f}s after the kill: {state['reason'][0]}")
    finally:
        for d in daemons:
            d.stop()
        topo.destroy()
