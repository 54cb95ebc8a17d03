"""What an operator sees and does over NETCONF (issue 11): per mobile node statistics, the bindings
gauge, refusals at commit (minimal encapsulation, a replay tolerance RFC 5944 §5.7 advises against),
draining with ``home-agent/enabled`` false, and clear-bindings of one (home, care-of) pair.

A real daemon (``tun`` data plane) in namespaces the test creates, ncclient over SSH, and the
``mipha mn`` simulator registering over UDP from its own namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from ncclient import manager
from ncclient.operations.rpc import RPCError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "dataplane"))

from daemon_harness import KEY_HEX, MIPHA, NS, Daemon, config  # noqa: E402
from dataplane_scenario import COA1, HA_ADDR, HOA, Topology  # noqa: E402
from free_ports import free_port  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
NC = "{urn:ietf:params:xml:ns:netconf:base:1.0}"


@pytest.fixture
def topo() -> Iterator[Topology]:
    with Topology.built() as t:
        yield t


def register(topo: Topology, lifetime: int = 600) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", topo.mn, MIPHA, "mn", "--ha", str(HA_ADDR), "--spi", "256", "--key", KEY_HEX,
         "--timeout", "5", "--retries", "1", "--lifetime", str(lifetime), "--json", "register",
         "--home", str(HOA), "--coa", str(COA1)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads(out.stdout)["steps"][0]["code"]


def state(m: manager.Manager, inner: str) -> etree._Element:
    flt = f'<virtual-routers xmlns="{NS}"><virtual-router><name>e2e</name>{inner}</virtual-router></virtual-routers>'
    return etree.fromstring(m.get(filter=("subtree", flt)).data_xml.encode())


def home_agent_leaf(topo: Topology, leaf: str) -> str:
    return config(topo.ha).replace(
        "<max-lifetime>600</max-lifetime>", f"<max-lifetime>600</max-lifetime>{leaf}"
    )


def refusal(m: manager.Manager, cfg: str) -> etree._Element:
    with pytest.raises(RPCError) as info:
        m.edit_config(target="running", config=cfg)
    xml = info.value.xml
    return xml if isinstance(xml, etree._Element) else etree.fromstring(xml)


def test_operator_state_refusals_drain_and_clear_one_binding(topo: Topology, tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, free_port())
    try:
        daemon.start()
        with daemon.connect() as m:
            # Refused at commit, running untouched: what no data plane builds, what RFC 5944 §5.7 advises against.
            err = refusal(
                m,
                home_agent_leaf(
                    topo, "<encapsulation>ip-in-ip</encapsulation><encapsulation>minimal</encapsulation>"
                ),
            )
            assert err.findtext(f"{NC}error-app-tag") == "encapsulation-unavailable"
            assert "minimal" in err.findtext(f"{NC}error-message")
            err = refusal(m, home_agent_leaf(topo, "<replay-tolerance>2</replay-tolerance>"))
            assert err.findtext(f"{NC}error-app-tag") == "replay-tolerance-too-small"
            assert "5.7" in err.findtext(f"{NC}error-message")
            assert "virtual-router" not in m.get_config(source="running").data_xml

            m.edit_config(target="running", config=config(topo.ha))
            assert register(topo) == 0
            got = state(
                m, "<home-agent><statistics/></home-agent><mobile-node><name>mn1</name></mobile-node>"
            )
            assert got.findtext(f".//{{{NS}}}statistics/{{{NS}}}bindings") == "1"
            node = got.find(f".//{{{NS}}}mobile-node/{{{NS}}}statistics")
            assert node is not None, etree.tostring(got)
            assert (node.findtext(f"{{{NS}}}accepted"), node.findtext(f"{{{NS}}}denied")) == ("1", "0")
            assert node.findtext(f"{{{NS}}}last-reply-code") == "0"
            assert node.findtext(f"{{{NS}}}last-request-time")

            # Drain: renewals are denied 129, the binding stays until cleared.
            m.edit_config(target="running", config=home_agent_leaf(topo, "<enabled>false</enabled>"))
            assert register(topo) == 129
            got = state(m, "<home-agent><statistics/></home-agent>")
            assert got.findtext(f".//{{{NS}}}statistics/{{{NS}}}bindings") == "1"

            # clear-bindings of one (home-address, care-of-address) pair.
            reply = m.dispatch(etree.fromstring(
                f'<clear-bindings xmlns="{NS}"><virtual-router>e2e</virtual-router><binding>'
                f"<home-address>{HOA}</home-address><care-of-address>192.0.2.99</care-of-address>"
                f"</binding></clear-bindings>"
            ))  # fmt: skip
            assert etree.fromstring(reply.xml.encode()).findtext(f".//{{{NS}}}cleared") == "0"
            reply = m.dispatch(etree.fromstring(
                f'<clear-bindings xmlns="{NS}"><virtual-router>e2e</virtual-router><binding>'
                f"<home-address>{HOA}</home-address><care-of-address>{COA1}</care-of-address>"
                f"</binding></clear-bindings>"
            ))  # fmt: skip
            assert etree.fromstring(reply.xml.encode()).findtext(f".//{{{NS}}}cleared") == "1"
            got = state(m, "<home-agent><statistics/></home-agent>")
            assert got.findtext(f".//{{{NS}}}statistics/{{{NS}}}bindings") == "0"
    finally:
        daemon.stop()
