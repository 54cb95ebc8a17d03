"""Operational state: YANG-shaped XML from the engine, with the request's filter pushed down."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from lxml import etree

from ha.engine.config import HomeAgentConfig, MobileNode, SecurityAssociation, VirtualRouterConfig
from ha.engine.home_agent import HomeAgent
from mipha.journal import BindingRecord
from mipha.state import HomeAgentStateProvider
from server.operational import StateRequest

NS = "urn:mipha:yang:mipha-home-agent"
N = 3000
BASE = int(IPv4Address("10.0.0.0"))


@dataclass
class FakeRouter:
    name: str
    engine: HomeAgent

    def tunnels(self):
        return []

    def now(self) -> float:
        return 100.0

    def discontinuity_time(self) -> float:
        return 0.0


def router() -> FakeRouter:
    sa = SecurityAssociation(256, bytes(16))
    nodes = [
        MobileNode(f"mn{i}", home_address=IPv4Address(BASE + i + 1), security_associations=[sa])
        for i in range(N)
    ]
    config = VirtualRouterConfig(
        "vr1", home_agent=HomeAgentConfig(IPv4Address("192.0.2.1")), mobile_nodes=nodes
    )
    engine = HomeAgent(config)
    for i in range(N):
        record = BindingRecord(
            vr="vr1",
            home_address=str(IPv4Address(BASE + i + 1)),
            care_of_address="198.51.100.7",
            mobile_node=f"mn{i}",
            source_address="198.51.100.7",
            source_port=434,
            lifetime=600,
            registered_at=1_000_000.0,
            identification=i,
            flags=0x02,
            encapsulation="ip-in-ip",
        )
        assert engine.restore_binding(record, now=100.0, wallclock=1_000_000.0)
    return FakeRouter("vr1", engine)


def subtree(xml: str) -> StateRequest:
    return StateRequest(
        subtree=etree.fromstring(f'<filter xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">{xml}</filter>')
    )


def raw_request(**kw) -> StateRequest:
    return StateRequest(**kw)


def splice(top: etree._Element, request: StateRequest) -> etree._Element:
    """What the server does with raw parts: replace each token by its bytes, parse back for checks."""
    data = etree.tostring(top)
    for key, raw in request.raw.items():
        data = data.replace(f"@@mipha-raw:{key}@@".encode(), raw)
    return etree.fromstring(data)


def test_full_walk_returns_every_binding_in_key_order() -> None:
    provider = HomeAgentStateProvider(lambda: [router()])
    request = StateRequest()
    (top,) = provider.get_state(request)
    top = splice(top, request)
    homes = [b.findtext(f"{{{NS}}}home-address") for b in top.iter(f"{{{NS}}}binding")]
    assert len(homes) == N == provider.last_bindings_built
    assert homes == sorted(homes, key=lambda a: int(IPv4Address(a)))
    stats = top.find(f".//{{{NS}}}statistics")
    assert stats is not None and stats.findtext(f"{{{NS}}}accepted") == "0"


def test_one_binding_by_key_builds_one() -> None:
    provider = HomeAgentStateProvider(lambda: [router()])
    home = str(IPv4Address(BASE + 1234))
    request = subtree(
        f'<virtual-routers xmlns="{NS}"><virtual-router><name>vr1</name><home-agent><bindings><binding>'
        f"<home-address>{home}</home-address></binding></bindings></home-agent></virtual-router></virtual-routers>"
    )
    (top,) = provider.get_state(request)
    top = splice(top, request)
    assert provider.last_bindings_built == 1
    (b,) = top.iter(f"{{{NS}}}binding")
    assert b.findtext(f"{{{NS}}}home-address") == home
    assert b.findtext(f"{{{NS}}}lifetime-remaining") == "600"
    assert b.findtext(f"{{{NS}}}flags") == "T"
    assert b.findtext(f"{{{NS}}}registered-at") == "1970-01-12T13:46:40Z"


def test_statistics_only_never_touches_bindings() -> None:
    provider = HomeAgentStateProvider(lambda: [router()])
    (top,) = provider.get_state(
        subtree(
            f'<virtual-routers xmlns="{NS}"><virtual-router><home-agent><statistics/></home-agent></virtual-router></virtual-routers>'
        )
    )
    assert provider.last_bindings_built == 0
    assert top.find(f".//{{{NS}}}bindings") is None and top.find(f".//{{{NS}}}statistics") is not None


def test_other_modules_filter_builds_nothing_and_unknown_router_nothing() -> None:
    provider = HomeAgentStateProvider(lambda: [router()])
    assert (
        provider.get_state(
            subtree('<netconf-state xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"/>')
        )
        == []
    )
    assert (
        provider.get_state(
            subtree(
                f'<virtual-routers xmlns="{NS}"><virtual-router><name>nope</name></virtual-router></virtual-routers>'
            )
        )
        == []
    )


def test_xpath_key_predicate_is_pushed_down() -> None:
    provider = HomeAgentStateProvider(lambda: [router()])
    home = str(IPv4Address(BASE + 7))
    provider.get_state(
        StateRequest(
            xpath=f"/m:virtual-routers/m:virtual-router[m:name='vr1']/m:home-agent/m:bindings/m:binding[m:home-address='{home}']",
            nsmap=(("m", NS),),
        )
    )
    assert provider.last_bindings_built == 1


def test_raw_bytes_equal_the_element_path() -> None:
    vr = router()
    # an XPath filter is never exact for the provider: it builds elements (the server filters them)
    slow = HomeAgentStateProvider(lambda: [vr]).get_state(
        StateRequest(xpath="/m:virtual-routers", nsmap=(("m", NS),))
    )[0]
    request = raw_request()
    (fast,) = HomeAgentStateProvider(lambda: [vr]).get_state(request)
    assert request.raw, "no filter: bindings are written as raw bytes"
    spliced = splice(fast, request)
    a = [etree.tostring(b, method="c14n") for b in slow.iter(f"{{{NS}}}binding")]
    b = [etree.tostring(b, method="c14n") for b in spliced.iter(f"{{{NS}}}binding")]
    assert len(a) == N and a == b


def test_raw_honours_leaf_selection_and_key_match() -> None:
    vr = router()
    home = str(IPv4Address(BASE + 42))
    request = raw_request(
        subtree=etree.fromstring(
            f'<filter xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}"><virtual-router>'
            f"<home-agent><bindings><binding><home-address>{home}</home-address><flags/></binding></bindings>"
            "</home-agent></virtual-router></virtual-routers></filter>"
        )
    )
    (top,) = HomeAgentStateProvider(lambda: [vr]).get_state(request)
    (b,) = splice(top, request).iter(f"{{{NS}}}binding")
    assert [etree.QName(c).localname for c in b] == ["home-address", "care-of-address", "flags"]


def test_non_key_content_match_falls_back_to_elements() -> None:
    vr = router()
    request = raw_request(
        subtree=etree.fromstring(
            f'<filter xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}"><virtual-router>'
            "<home-agent><bindings><binding><mobile-node>mn7</mobile-node></binding></bindings>"
            "</home-agent></virtual-router></virtual-routers></filter>"
        )
    )
    (top,) = HomeAgentStateProvider(lambda: [vr]).get_state(request)
    assert request.raw == {} and len(list(top.iter(f"{{{NS}}}binding"))) == N  # the server filters these
