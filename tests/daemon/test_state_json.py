"""The binding table's JSON writer (mipha/state_json.py) against libyang: for the same bindings, the
provider's JSON entries are byte for byte what libyang prints from the provider's XML (the generic
RESTCONF path), in several time zones (libyang prints date-and-time in the local one)."""

from __future__ import annotations

import os
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from lxml import etree

from ha.aaa.config import AaaConfig, AaaServer
from ha.aaa.profile import AaaProfile
from ha.engine.aaa import AAA_NODE_PREFIX, Subscriber
from ha.engine.bindings import UDP_TUNNEL
from ha.engine.config import HomeAgentConfig, MobileNode, SecurityAssociation, VirtualRouterConfig
from ha.engine.home_agent import HomeAgent
from ha.protocol.constants import AuthAlgorithm
from mipha.journal import BindingRecord
from mipha.state import HomeAgentStateProvider
from mipha.state_json import json_string
from server.operational import RawJson, StateRequest
from server.validation import Validator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_state import NS, TunnelRouter, splice

N = 2600  # past two pages of the provider's walk (1024)
BASE = int(IPv4Address("10.0.0.0"))
#: names and NAIs libyang must escape, or print as they are (UTF-8, XML's own specials)
ODD = ('quote"d', "back\\slash", "tab\there", "caf\u00e9-\u6771\u4eac", "a&b<c>d", "plain")
BINDINGS = "/mipha-home-agent:virtual-routers/virtual-router[name='vr1']/home-agent/bindings"


def odd_router() -> TunnelRouter:
    """Bindings differing in every way a leaf can: odd names and NAIs, UDP-tunnelled (RFC 3519 leaves),
    AAA-learnt (the AAA leaves), GRE, infinite lifetimes, whole and fractional times, all flags, a
    care-of address per node past the writer's caches, a tunnel interface with a quote in its name."""
    sa = SecurityAssociation(256, bytes(16))
    nodes = [
        MobileNode(
            f"mn{i}-{ODD[i % len(ODD)]}",
            home_address=IPv4Address(BASE + i + 1),
            nai=None if i % 3 else f"u{i}-{ODD[i % len(ODD)]}@example.net",
            security_associations=[sa],
        )
        for i in range(N)
    ]
    aaa = AaaConfig(servers=(AaaServer(IPv4Address("127.0.0.1"), b"s"),), cache_size=N)
    config = VirtualRouterConfig(
        "vr1", home_agent=HomeAgentConfig(IPv4Address("192.0.2.1")), mobile_nodes=nodes, aaa=aaa
    )
    engine = HomeAgent(config)
    wallclock = 1_800_000_000.0
    for i in range(N):
        coa = (
            "198.51.100.7"
            if i % 5
            else ("198.51.100.8" if i < N // 2 else str(IPv4Address(BASE + 2**20 + i)))
        )
        home, name, subscriber = str(IPv4Address(BASE + i + 1)), nodes[i].name, None
        if i % 7 == 3:  # an AAA-learnt node instead
            nai = f"r{i}-{ODD[i % len(ODD)]}@radius.example"
            name = AAA_NODE_PREFIX + nai
            profile = AaaProfile(
                nai, 300, bytes(16), AuthAlgorithm.HMAC_MD5, IPv4Address(home), None, None, "erx",
                "framed-ip-address",
            )  # fmt: skip
            subscriber = Subscriber(profile, 0xABC000 + i, wallclock - 100).to_dict()
        record = BindingRecord(
            vr="vr1",
            home_address=home,
            care_of_address=coa,
            mobile_node=name,
            source_address="203.0.113.9" if i % 4 == 1 else coa,
            source_port=4500 + i % 7,
            lifetime=0xFFFF if i % 11 == 0 else 600 + i % 13,
            registered_at=wallclock - 30 - (0 if i % 4 == 0 else i * 0.000137),
            identification=(0xE000_0000 << 32) + i,
            flags=((i * 37) & 0xFF) | (UDP_TUNNEL if i % 4 == 1 else 0),
            encapsulation="gre" if i % 6 == 0 else "ip-in-ip",
            aaa=subscriber,
        )
        assert engine.restore_binding(record, now=100.0, wallclock=wallclock), i
    interfaces = {IPv4Address("198.51.100.7"): 'mip-"c6336407', IPv4Address("198.51.100.8"): None}
    return TunnelRouter("vr1", engine, interfaces)


@pytest.fixture(params=["UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Chatham"])
def zone(request):
    """The process's time zone (C's too: libyang's printer reads it), restored after."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def libyang_json(xml: bytes, path: str) -> str:
    """What the generic RESTCONF path sends: libyang's print of the node at `path`."""
    tree = Validator().ctx.parse_data_mem(xml.decode(), "xml", parse_only=True, strict=True)
    try:
        nodes = list(tree.find_all(path))
        assert len(nodes) == 1, path
        return nodes[0].print_mem("json", pretty=False, keep_empty_containers=True)
    finally:
        tree.free()


def entries(request: StateRequest) -> bytes:
    (content,) = request.raw.values()
    assert isinstance(content, RawJson) and content.name == (NS, "binding")
    return b"".join(content.parts)


def test_json_entries_are_what_libyang_prints_from_the_xml(zone) -> None:
    vr = odd_router()
    provider = HomeAgentStateProvider(lambda: [vr])
    xml_request = StateRequest()
    (top,) = provider.get_state(xml_request)
    xml = etree.tostring(splice(top, xml_request))
    want = libyang_json(xml, BINDINGS)
    json_request = StateRequest(json=True)
    provider.get_state(json_request)
    got = b'{"mipha-home-agent:bindings":{"binding":[' + entries(json_request) + b"]}}"
    assert provider.last_bindings_built == N
    assert got.decode() == want
    for leaf in ("udp-tunnel", "nat-port", "acct-session-id", "key-source", "tunnel-interface", "nai"):
        assert f'"{leaf}":' in want, leaf  # every optional leaf was compared
    assert '\\"' in want and "\\u0009" in want and "\\\\" in want and "\u6771" in want


def test_one_binding_by_key_in_json(zone) -> None:
    """A key pushed down: one entry, as libyang prints the list entry alone."""
    vr = odd_router()
    provider = HomeAgentStateProvider(lambda: [vr])
    for i in (3, 5, 10):  # an AAA node, a UDP-tunnelled one, another care-of address
        home = str(IPv4Address(BASE + i + 1))
        flt = etree.fromstring(
            f'<filter xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}">'
            f"<virtual-router><name>vr1</name><home-agent><bindings><binding><home-address>{home}"
            "</home-address></binding></bindings></home-agent></virtual-router></virtual-routers></filter>"
        )
        xml_request = StateRequest(subtree=flt)
        (top,) = provider.get_state(xml_request)
        xml = etree.tostring(splice(top, xml_request))
        want = libyang_json(xml, f"{BINDINGS}/binding[home-address='{home}']")
        json_request = StateRequest(subtree=flt, json=True)
        provider.get_state(json_request)
        assert provider.last_bindings_built == 1
        assert (b'{"mipha-home-agent:binding":[' + entries(json_request) + b"]}").decode() == want


def test_leaf_selection_is_left_to_the_xml_writer() -> None:
    """A filter selecting leaves (not what RESTCONF sends) keeps the XML: the server filters it."""
    vr = odd_router()
    flt = etree.fromstring(
        f'<filter xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}">'
        "<virtual-router><home-agent><bindings><binding><mobile-node/></binding></bindings></home-agent>"
        "</virtual-router></virtual-routers></filter>"
    )
    request = StateRequest(subtree=flt, json=True)
    HomeAgentStateProvider(lambda: [vr]).get_state(request)
    (content,) = request.raw.values()
    assert not isinstance(content, RawJson)


def test_json_string_escapes_as_libyang() -> None:
    ctx = Validator().ctx
    for text in (*ODD, "", "cr\rlf\n", "slash/", "\u2028"):  # (libyang refuses other controls)
        name = json_string(text)
        entry = f'{{"home-address":"10.0.0.1","care-of-address":"10.0.0.2","mobile-node":{name}}}'
        doc = (
            '{"mipha-home-agent:virtual-routers":{"virtual-router":[{"name":"v","home-agent":'
            f'{{"bindings":{{"binding":[{entry}]}}}}}}]}}}}'
        )
        tree = ctx.parse_data_mem(doc, "json", parse_only=True, strict=True)
        try:
            assert tree.print_mem("json", pretty=False) == doc, text
        finally:
            tree.free()
