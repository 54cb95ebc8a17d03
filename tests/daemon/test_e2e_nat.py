"""RFC 3519 end to end: a mobile node behind a real nftables masquerade NAT, the daemon with the tun backend.

Topology (namespaces with unique names, removed afterwards)::

    cn ──cn0 10.1.0.10/24══home0 10.1.0.1/24── ha ──wan0 192.0.2.1/24══out0 192.0.2.2/24── nat
                                                                                          in0 172.16.0.1/24
                                                                                            ║
                                                           mn ── mn0 172.16.0.10/24 (private CoA)

The home agent has no route to 172.16.0.0/24: only the UDP tunnel to the NAT mapping can reach the
node.  ``nat`` masquerades with ``random`` ports, so a conntrack flush gives the node a new mapping.
tshark captures the transit link on the home agent's side for the whole test and must decode every
UDP/434 datagram as Mobile IP, without "malformed".
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree
from ncclient import manager

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "dataplane"))

from daemon_harness import KEY_HEX, KEY_YANG, MIPHA, NS, Daemon  # noqa: E402
from dataplane_scenario import sh  # noqa: E402
from free_ports import free_port  # noqa: E402
from mip_capture import Capture, statistics  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

HA = "10.1.0.1"
CN = "10.1.0.10"
HOME = "10.1.0.100"
NAT_PUBLIC = "192.0.2.2"
COA = "172.16.0.10"


@dataclass
class NatTopology:
    tag: str

    @property
    def names(self) -> dict[str, str]:
        return {role: f"mx-{role}-{self.tag}" for role in ("cn", "ha", "nat", "mn")}

    def create(self) -> None:
        n = self.names
        for ns in n.values():
            sh(f"ip netns add {ns}")
            sh(f"ip -n {ns} link set lo up")
        sh(f"ip -n {n['cn']} link add cn0 type veth peer name home0 netns {n['ha']}")
        sh(f"ip -n {n['ha']} link add wan0 type veth peer name out0 netns {n['nat']}")
        sh(f"ip -n {n['nat']} link add in0 type veth peer name mn0 netns {n['mn']}")
        for role, dev, addr in (
            ("cn", "cn0", f"{CN}/24"),
            ("ha", "home0", f"{HA}/24"),
            ("ha", "wan0", "192.0.2.1/24"),
            ("nat", "out0", f"{NAT_PUBLIC}/24"),
            ("nat", "in0", "172.16.0.1/24"),
            ("mn", "mn0", f"{COA}/24"),
        ):
            sh(f"ip -n {n[role]} addr add {addr} dev {dev}")
            sh(f"ip netns exec {n[role]} ethtool -K {dev} tx off tso off gso off")
            sh(f"ip -n {n[role]} link set {dev} up")
        sh(f"ip -n {n['cn']} route add default via {HA}")
        sh(f"ip -n {n['mn']} route add default via 172.16.0.1")
        sh(f"ip -n {n['nat']} route add 10.1.0.0/24 via 192.0.2.1")
        sh(f"ip netns exec {n['nat']} sysctl -qw net.ipv4.ip_forward=1")
        rules = (
            "table ip mipha_nat {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n"
            '  oifname "out0" masquerade random\n }\n}\n'
        )
        subprocess.run(
            ["ip", "netns", "exec", n["nat"], "nft", "-f", "-"], input=rules, text=True, check=True
        )

    def destroy(self) -> None:
        for ns in self.names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
def topo() -> Iterator[NatTopology]:
    t = NatTopology(f"{os.getpid():x}{os.urandom(3).hex()}")
    try:
        t.create()
        yield t
    finally:
        t.destroy()


def vr_config(topo: NatTopology, *, enabled: bool = True) -> str:
    return f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>nat</name><netns>{topo.names["ha"]}</netns>
  <home-agent><address>{HA}</address><home-interface>home0</home-interface><max-lifetime>600</max-lifetime>
    <nat-traversal><enabled>{"true" if enabled else "false"}</enabled>
      <keepalive-interval>1</keepalive-interval></nat-traversal></home-agent>
  <mobile-node><name>mn1</name><home-address>{HOME}</home-address>
    <security-association><spi>256</spi><key>{KEY_YANG}</key></security-association></mobile-node>
</virtual-router></virtual-routers></config>"""


def bindings(m: manager.Manager) -> list[dict[str, str]]:
    flt = f'<virtual-routers xmlns="{NS}"><virtual-router><name>nat</name><home-agent><bindings/></home-agent></virtual-router></virtual-routers>'
    data = etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())
    return [{etree.QName(c).localname: c.text for c in b} for b in data.findall(f".//{{{NS}}}binding")]


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def ping(ns: str, target: str, *, source: str | None = None, count: int = 3) -> bool:
    cmd = ["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2"]
    if source:
        cmd += ["-I", source]
    return subprocess.run([*cmd, target], capture_output=True, timeout=60).returncode == 0


def endpoint(topo: NatTopology, lifetime: int, *extra: str) -> subprocess.Popen[str]:
    """``mipha mn ... udp-endpoint`` for the node behind the NAT (its sockets live in the mn namespace)."""
    cmd = [MIPHA, "mn", "--ha", HA, "--spi", "256", "--key", KEY_HEX, "--flags", "T", "--json",
           "--lifetime", str(lifetime),
           "udp-endpoint", "--home", HOME, "--coa", COA, "--netns", topo.names["mn"], *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if "udp tunnel up" not in line:
        proc.kill()
        raise AssertionError(f"endpoint did not come up: {line!r} {proc.stdout.read()}")
    assert "UDP tunnel code 0" in line, line
    return proc


def one_shot(topo: NatTopology) -> dict:
    out = subprocess.run(
        ["ip", "netns", "exec", topo.names["mn"], MIPHA, "mn", "--ha", HA, "--spi", "256", "--key", KEY_HEX,
         "--udp-tunnel", "--flags", "DT", "--json", "register", "--home", HOME, "--coa", COA],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.mark.parametrize("backend", ["tun", "ipip"])
def test_mobile_node_behind_nftables_nat(topo: NatTopology, tmp_path: Path, backend: str) -> None:
    """Both backends carry the UDP tunnel in userspace (``ipip`` needs no kernel tunnel device for it)."""
    daemon = Daemon(tmp_path, free_port(), backend=backend)
    capture: Capture | None = None
    node: subprocess.Popen[str] | None = None
    n = topo.names
    try:
        daemon.start()
        with daemon.connect() as m:
            m.edit_config(target="running", config=vr_config(topo))
            assert f"data plane {backend}" in daemon.log.read_text(), daemon.log.read_text()
            capture = Capture(n["ha"], tmp_path / "nat.pcap", interface="wan0")

            # Register through the NAT: the binding tunnels in UDP to the NAT mapping.
            node = endpoint(topo, 60, "--renew", "1")
            (b,) = bindings(m)
            assert (b["care-of-address"], b["source-address"]) == (COA, NAT_PUBLIC)
            assert (b["udp-tunnel"], b["nat-address"], b["encapsulation"]) == ("true", NAT_PUBLIC, "ip-in-ip")
            first_port = b["nat-port"]

            # Both ways: the correspondent reaches the home address, the node reaches the correspondent.
            assert ping(n["cn"], HOME), "correspondent -> home address through the UDP tunnel"
            assert ping(n["mn"], CN, source=HOME), "home address -> correspondent through the UDP tunnel"

            # The NAT forgets the mapping: the next renewal comes from a new port and is re-learnt.
            subprocess.run(
                ["ip", "netns", "exec", n["nat"], "conntrack", "-F"], capture_output=True, check=True
            )
            moved = wait_for(
                lambda: [x for x in bindings(m) if x.get("nat-port") not in (None, first_port)],
                20,
                "new mapping",
            )
            assert moved[0]["nat-address"] == NAT_PUBLIC
            assert ping(n["cn"], HOME), "after the mapping moved, traffic follows it"

            # Keepalives (the HA announced 1 s) are answered through the tunnel; stop deregisters.
            time.sleep(2.5)
            node.send_signal(signal.SIGTERM)
            out, _ = node.communicate(timeout=30)
            stats = json.loads(out.strip().splitlines()[-1])
            assert stats["keepalive_replies"] >= 2 and stats["keepalives_sent"] >= stats["keepalive_replies"]
            assert bindings(m) == []
            assert int(statistics(m, "nat")["udp-tunnel-accepted"]) >= 3

            # Disabled: a node behind the NAT that asks for UDP tunnelling gets 142.
            m.edit_config(target="running", config=vr_config(topo, enabled=False))
            step = one_shot(topo)["steps"][0]
            assert step["code"] == 142 and step["authenticated"], step
            assert bindings(m) == []

            # Enabled again, then the node dies without deregistering: the binding expires normally.
            m.edit_config(target="running", config=vr_config(topo))
            node = endpoint(topo, 3, "--renew", "600", "--keepalive", "600")
            assert len(bindings(m)) == 1
            node.kill()
            node.wait(timeout=10)
            wait_for(lambda: bindings(m) == [], 15, "expiry")
            assert not ping(n["cn"], HOME, count=1)

        capture.stop()
        rows = capture.decode()
        assert rows, "nothing captured"
        assert all(r["_ws.malformed"] == "" for r in rows), [r for r in rows if r["_ws.malformed"]]
        assert all(r["mip.type"] for r in rows), [r for r in rows if not r["mip.type"]]
        types = {r["mip.type"] for r in rows}
        assert {"1", "3", "4"} <= types, types
        assert any(r["mip.code"] == "142" for r in rows)
        accepted = [
            r for r in rows if r["mip.type"] == "3" and r["mip.code"] == "0" and "44" in r["mip.ext.type"]
        ]
        assert accepted and all(r["mip.ext.type"].split(",")[0] == "44" for r in accepted)
    finally:
        if node is not None and node.poll() is None:
            node.kill()
            node.wait(timeout=10)
        if capture is not None:
            capture.stop()
        daemon.stop()
