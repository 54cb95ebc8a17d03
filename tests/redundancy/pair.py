"""Two `mipha run` daemons in one redundancy group on a shared home link, for the failover tests.

Topology (namespaces with a unique tag, all removed afterwards)::

    mn ──mn0 198.51.100.7══tr0 .1── r ──br0 10.64.255.254/16 (bridge: the home link)
                                      ├── home0 10.64.255.11 ── a   (10.64.0.1 on lo: HA address)
                                      ├── home0 10.64.255.12 ── b   (10.64.0.1 on lo)
                                      └── cn0   10.64.255.2  ── cn  (correspondent)

Home addresses are 10.64.1.0 onwards (room for 60k nodes).

The router ``r`` reaches the home agent address by ARP on the home link: only the active daemon has
it on ``home0`` (the standby keeps it on ``lo`` only, ``arp_ignore=1``), so ``r`` follows the
active's gratuitous ARP.  Both daemons run in the root namespace (NETCONF and etcd on loopback); their
virtual router lives in ``a`` / ``b``; the data plane is the tun backend (this kernel has no ipip).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Collection
from ipaddress import IPv4Address
from pathlib import Path

from free_ports import free_port
from ncclient import manager
from ncclient.transport import session as nc_session

from server.auth import hash_password

nc_session.TICK = 0.001
NS = "urn:mipha:yang:mipha-home-agent"
HA = "10.64.0.1"
COA = "198.51.100.7"
HOME_START = "10.64.1.0"
KEY_YANG = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"
MIPHA = str(Path(sys.executable).parent / "mipha")
PASSWORD = "redundancy-secret"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def sysctl(ns: str, name: str, value: str) -> None:
    ip("netns", "exec", ns, "sysctl", "-qw", f"{name}={value}")


class Topology:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.r, self.a, self.b, self.cn, self.mn = (f"mrd{tag}{x}" for x in "rabcm")
        self.made: list[str] = []

    def build(self) -> None:
        for ns in (self.r, self.a, self.b, self.cn, self.mn):
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        r = self.r
        ip("-n", r, "link", "add", "br0", "type", "bridge")
        ip("-n", r, "addr", "add", "10.64.255.254/16", "dev", "br0")
        ip("-n", r, "link", "set", "br0", "up")
        sysctl(r, "net.ipv4.ip_forward", "1")
        for ns, port, dev, addr in ((self.a, "pa", "home0", "10.64.255.11"), (self.b, "pb", "home0", "10.64.255.12"),
                                    (self.cn, "pc", "cn0", "10.64.255.2")):  # fmt: skip
            ip("-n", r, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns)
            ip("-n", r, "link", "set", port, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/16", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "route", "add", "default", "via", "10.64.255.254")
        for ns in (self.a, self.b):
            ip("-n", ns, "addr", "add", f"{HA}/32", "dev", "lo")
            sysctl(ns, "net.ipv4.ip_forward", "1")
            sysctl(ns, "net.ipv4.conf.home0.arp_ignore", "1")
        ip("-n", r, "link", "add", "tr0", "type", "veth", "peer", "name", "mn0", "netns", self.mn)
        ip("-n", r, "addr", "add", "198.51.100.1/24", "dev", "tr0")
        ip("-n", r, "link", "set", "tr0", "up")
        ip("-n", self.mn, "addr", "add", f"{COA}/24", "dev", "mn0")
        ip("-n", self.mn, "link", "set", "mn0", "up")
        ip("-n", self.mn, "route", "add", "default", "via", "198.51.100.1")

    def destroy(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made.clear()


def startup_xml(netns: str, nodes: int, nonce: Collection[int] = ()) -> str:
    """``nodes`` mobile nodes mn0.. with consecutive home addresses; those in ``nonce`` use nonces."""
    first = IPv4Address(HOME_START)
    mns = "".join(
        f"<mobile-node><name>mn{i}</name><home-address>{first + i}</home-address>"
        f"<security-association><spi>256</spi><key>{KEY_YANG}</key>"
        + ("<replay-protection>nonce</replay-protection>" if i in nonce else "")
        + "</security-association></mobile-node>"
        for i in range(nodes)
    )
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>home</name><netns>{netns}</netns>
  <router-id>{HA}</router-id>
  <home-agent><address>{HA}</address><home-interface>home0</home-interface>
    <max-lifetime>1800</max-lifetime><max-bindings>100000</max-bindings></home-agent>{mns}
</virtual-router></virtual-routers></config>"""


class PairDaemon:
    """One `mipha run` of the pair; ended only by its PID."""

    def __init__(
        self,
        tmp: Path,
        node: str,
        netns: str,
        etcd: list[str],
        nodes: int,
        ttl: int = 2,
        nonce: Collection[int] = (),
        warm: bool = True,
        leader_route: bool = True,
    ) -> None:
        self.node = node
        self.dir = tmp / node
        self.dir.mkdir()
        self.port = free_port()
        self.metrics_port = free_port()  # the Prometheus endpoint (benchmarks read the replication stages)
        self.log = self.dir / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.offset = 0
        (self.dir / "startup.xml").write_text(startup_xml(netns, nodes, nonce))
        endpoints = ", ".join(f'"{e}"' for e in etcd)
        redundancy = (
            f'[redundancy]\netcd = [{endpoints}]\ngroup = "pair"\nnode = "{node}"\nlease-ttl = {ttl}\n'
            f"warm-kernel = {'true' if warm else 'false'}\n"
            f"leader-route = {'true' if leader_route else 'false'}\n"
            if etcd
            else ""
        )
        (self.dir / "mipha.toml").write_text(
            f"""
[netconf]
listen = "127.0.0.1:{self.port}"
[[user]]
name = "admin"
password-hash = "{hash_password(PASSWORD, n_log2=10)}"
groups = ["admin"]
[state]
dir = "{self.dir / "state"}"
startup = "startup.xml"
[dataplane]
backend = "tun"
[metrics]
listen = "127.0.0.1:{self.metrics_port}"
{redundancy}"""
        )

    def start(self) -> None:
        self.offset = self.log.stat().st_size if self.log.exists() else 0  # wait_log reads this run's lines
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [MIPHA, "run", "--config", str(self.dir / "mipha.toml"), "--log-level", "info"],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.node} exited:\n{self.log.read_text()[-3000:]}")
            if text in self.log.read_text()[self.offset :]:
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.node}: no {text!r} in the log:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> float:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        return time.time()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def connect(self) -> manager.Manager:
        return manager.connect(
            host="127.0.0.1", port=self.port, username="admin", password=PASSWORD, hostkey_verify=False,
            allow_agent=False, look_for_keys=False, timeout=30,
        )  # fmt: skip
