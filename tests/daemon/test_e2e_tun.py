"""The whole product, end to end, with the ``tun`` data plane on this kernel.

configure over NETCONF → a simulated mobile node registers over UDP from its namespace → the binding
appears in <get> with the right fields → a ping from the correspondent reaches the mobile node through
the tunnel and comes back through the reverse tunnel → binding-created was notified → clear-bindings
over NETCONF → binding gone, kernel clean, binding-removed notified → register again, kill -9 the
daemon, restart it: the binding and the traffic are back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from ncclient import manager

from ha.netns import NetnsThread

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "dataplane"))

from daemon_harness import KEY_HEX, KEY_YANG, MIPHA, NS, Daemon, config  # noqa: E402
from dataplane_scenario import (  # noqa: E402
    COA1,
    HA_ADDR,
    HOA,
    MobileNode,
    Topology,
    kernel_objects,
)
from free_ports import free_port  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def register(topo: Topology) -> dict:
    out = subprocess.run(
        ["ip", "netns", "exec", topo.mn, MIPHA, "mn", "--ha", str(HA_ADDR), "--spi", "256", "--key", KEY_HEX,
         "--flags", "T", "--json", "register", "--home", str(HOA), "--coa", str(COA1)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def bindings(m: manager.Manager) -> list[etree._Element]:
    flt = f'<virtual-routers xmlns="{NS}"><virtual-router><name>e2e</name><home-agent><bindings/></home-agent></virtual-router></virtual-routers>'
    data = etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())
    return data.findall(f".//{{{NS}}}binding")


def ping(topo: Topology, count: int = 3) -> bool:
    res = subprocess.run(
        ["ip", "netns", "exec", topo.cn, "ping", "-c", str(count), "-i", "0.2", "-W", "2", str(HOA)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return res.returncode == 0


def notification(m: manager.Manager, name: str, timeout: float = 10) -> etree._Element:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = m.take_notification(block=True, timeout=max(0.1, deadline - time.monotonic()))
        if n is None:
            continue
        body = etree.fromstring(n.notification_xml.encode())
        found = body.find(f".//{{{NS}}}{name}")
        if found is not None:
            return found
    raise AssertionError(f"no {name} notification within {timeout} s")


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology.built() as t:
        yield t


def test_configure_register_forward_notify_clear_kill9_restart(topo: Topology, tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, free_port())
    mn_thread = NetnsThread(topo.mn)
    mobile = MobileNode(mn_thread)
    try:
        daemon.start()
        with daemon.connect() as m, daemon.connect() as listener:
            listener.create_subscription()
            m.edit_config(target="running", config=config(topo.ha))

            assert not ping(topo, 1), "no binding yet: nothing may intercept the home address"
            reply = register(topo)
            assert reply["ok"] and reply["steps"][0]["code"] == 0 and reply["steps"][0]["authenticated"]

            (b,) = bindings(m)
            field = {etree.QName(c).localname: c.text for c in b}
            assert field["home-address"] == str(HOA) and field["care-of-address"] == str(COA1)
            assert field["mobile-node"] == "mn1" and field["source-address"] == str(COA1)
            assert field["lifetime-granted"] == "600" and 0 < int(field["lifetime-remaining"]) <= 600
            assert field["flags"] == "T" and field["encapsulation"] == "ip-in-ip"

            created = notification(listener, "binding-created")
            assert created.findtext(f"{{{NS}}}home-address") == str(HOA)
            assert created.findtext(f"{{{NS}}}virtual-router") == "e2e"

            assert ping(topo), "the correspondent's ping must go through the tunnel and come back"
            assert any(inner[16:20] == HOA.packed for _, inner in mobile.inner()), "arrived inside IP-in-IP"

            rpc = etree.fromstring(
                f'<clear-bindings xmlns="{NS}"><virtual-router>e2e</virtual-router></clear-bindings>'
            )
            cleared = etree.fromstring(m.dispatch(rpc).xml.encode())
            assert cleared.findtext(f".//{{{NS}}}cleared") == "1"
            assert bindings(m) == []
            objects = kernel_objects(topo.ha)
            assert objects["routes"] == [] and objects["proxies"] == [], objects
            removed = notification(listener, "binding-removed")
            assert removed.findtext(f"{{{NS}}}reason") == "cleared"
            assert not ping(topo, 1), "cleared: the home address is no longer intercepted"

            register(topo)
            assert len(bindings(m)) == 1
        daemon.kill9()

        daemon.start()
        with daemon.connect() as m:
            (b,) = bindings(m)
            assert b.findtext(f"{{{NS}}}home-address") == str(HOA)
            assert b.findtext(f"{{{NS}}}care-of-address") == str(COA1)
            assert ping(topo), "after kill -9 and restart the binding forwards again"
        daemon.stop()
        objects = kernel_objects(topo.ha)
        assert objects["routes"] == [] and objects["proxies"] == [] and objects["rules"] == [], objects
    finally:
        daemon.stop()
        mobile.close()
        mn_thread.close()


def rpc_error(exc: BaseException) -> etree._Element:
    """The <rpc-error> element ncclient raised about."""
    xml = getattr(exc, "xml", None)
    assert xml is not None, exc
    return xml if isinstance(xml, etree._Element) else etree.fromstring(xml)


def test_refusals_leave_running_and_kernel_untouched(topo: Topology, tmp_path: Path) -> None:
    """The kernel refuses (HA address not local), the engine refuses (pool shrinking below a bound
    address): the client gets the error with the node's path, running and the kernel stay as before;
    removing a mobile node removes its binding and its kernel state."""
    from ncclient.operations.rpc import RPCError

    daemon = Daemon(tmp_path, free_port())
    try:
        daemon.start()
        with daemon.connect() as m:
            bad = config(topo.ha).replace(f"<address>{HA_ADDR}</address>", "<address>10.9.9.9</address>")
            with pytest.raises(RPCError) as info:
                m.edit_config(target="running", config=bad)
            err = rpc_error(info.value)
            nc = "{urn:ietf:params:xml:ns:netconf:base:1.0}"
            assert err.findtext(f"{nc}error-tag") == "operation-failed"
            path = err.findtext(f"{nc}error-path")
            assert path.endswith("mipha:home-agent/mipha:address"), path
            assert "10.9.9.9" in err.findtext(f"{nc}error-message")
            running = m.get_config(source="running").data_xml
            assert "virtual-router" not in running

            pool_cfg = f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">
<virtual-routers xmlns="{NS}"><virtual-router><name>e2e</name><netns>{topo.ha}</netns>
  <home-agent><address>{HA_ADDR}</address><home-interface>home0</home-interface></home-agent>
  <address-pool><name>p</name><range><start>10.1.0.100</start><end>10.1.0.110</end></range></address-pool>
  <mobile-node><name>mn1</name><nai>mn1@e2e</nai><address-pool>p</address-pool>
    <security-association><spi>256</spi><key>{KEY_YANG}</key></security-association></mobile-node>
</virtual-router></virtual-routers></config>"""
            m.edit_config(target="running", config=pool_cfg)
            out = subprocess.run(
                ["ip", "netns", "exec", topo.mn, MIPHA, "mn", "--ha", str(HA_ADDR), "--spi", "256", "--key",
                 KEY_HEX, "--json", "register", "--home", "0.0.0.0", "--nai", "mn1@e2e", "--coa", str(COA1)],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            step = json.loads(out.stdout)["steps"][0]
            assert step["code"] == 0 and step["home_address"] == "10.1.0.100", out.stdout

            shrink = pool_cfg.replace("<start>10.1.0.100</start>", "<start>10.1.0.105</start>")
            with pytest.raises(RPCError) as info:
                m.edit_config(target="running", config=shrink, default_operation="replace")
            err = rpc_error(info.value)
            assert err.findtext(f"{nc}error-app-tag") == "pool-address-in-use"
            assert "10.1.0.100" in err.findtext(f"{nc}error-message")
            assert "<start>10.1.0.100</start>" in m.get_config(source="running").data_xml
            assert len(bindings(m)) == 1
            assert kernel_objects(topo.ha)["routes"], "the binding's route must still be there"

            remove = f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"
 xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}"><virtual-router>
 <name>e2e</name><mobile-node nc:operation="delete"><name>mn1</name></mobile-node>
</virtual-router></virtual-routers></config>"""
            m.edit_config(target="running", config=remove)
            assert bindings(m) == []
            deadline = time.monotonic() + 5
            while kernel_objects(topo.ha)["routes"] and time.monotonic() < deadline:
                time.sleep(0.05)
            objects = kernel_objects(topo.ha)
            assert objects["routes"] == [] and objects["proxies"] == [], objects
    finally:
        daemon.stop()


def test_proxy_arp_interface_mode_and_live_switch(topo: Topology, tmp_path: Path) -> None:
    """proxy-arp interface: proxy_arp=1 on the home interface, no per-address entries, traffic flows;
    switching back to per-address rebuilds the router and keeps the binding."""
    daemon = Daemon(tmp_path, free_port())
    mn_thread = NetnsThread(topo.mn)
    mobile = MobileNode(mn_thread)
    sysctl = ["ip", "netns", "exec", topo.ha, "cat", "/proc/sys/net/ipv4/conf/home0/proxy_arp"]
    try:
        daemon.start()
        with daemon.connect() as m:
            cfg = config(topo.ha).replace("<max-lifetime>", "<proxy-arp>interface</proxy-arp><max-lifetime>")
            m.edit_config(target="running", config=cfg)
            register(topo)
            assert subprocess.run(sysctl, capture_output=True, text=True).stdout.strip() == "1"
            assert kernel_objects(topo.ha)["proxies"] == []
            assert ping(topo)
            m.edit_config(target="running", config=config(topo.ha), default_operation="replace")
            assert len(bindings(m)) == 1, "the rebuilt router keeps its bindings"
            assert subprocess.run(sysctl, capture_output=True, text=True).stdout.strip() == "0"
            assert len(kernel_objects(topo.ha)["proxies"]) == 1
            assert ping(topo)
    finally:
        daemon.stop()
        mobile.close()
        mn_thread.close()
