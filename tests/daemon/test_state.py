"""Operational state: YANG-shaped XML from the engine, with the request's filter pushed down."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from ipaddress import IPv4Address

from lxml import etree

from ha.dataplane.base import TunnelCounters
from ha.engine.config import HomeAgentConfig, MobileNode, SecurityAssociation, VirtualRouterConfig
from ha.engine.home_agent import HomeAgent
from mipha.journal import BindingRecord
from mipha.state import HomeAgentStateProvider
from server.operational import StateRequest
from server.rawstate import RawSplices
from server.validation import Validator

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
    """What the server does with raw parts (server/rawstate.py), parsed back for checks."""
    splices = RawSplices.claim([top], request.raw)
    return etree.fromstring(b"".join(splices.splice(etree.tostring(top))))


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
    assert top.find(f".//{{{NS}}}home-agent/{{{NS}}}bindings") is None  # (statistics/bindings is the gauge)
    assert top.find(f".//{{{NS}}}statistics") is not None


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


@dataclass
class TunnelRouter(FakeRouter):
    interfaces: dict[IPv4Address, str | None]

    def tunnels(self):
        return [TunnelCounters(coa, name, 1) for coa, name in self.interfaces.items()]


def varied_router() -> TunnelRouter:
    """Bindings that differ in every way a leaf can: NAI or not (one needing escaping), flags,
    infinite lifetime, fractional and whole registration times, GRE, two care-of addresses (one
    with a tunnel interface), a care-of address per node past the writer's shared-text cache."""
    sa = SecurityAssociation(256, bytes(16))
    nodes = [
        MobileNode(
            f"mn{i}",
            home_address=IPv4Address(BASE + i + 1),
            nai=None if i % 3 else (f"user{i}&co@example.net" if i % 2 else f"user{i}@example.net"),
            security_associations=[sa],
        )
        for i in range(N)
    ]
    config = VirtualRouterConfig(
        "vr1", home_agent=HomeAgentConfig(IPv4Address("192.0.2.1")), mobile_nodes=nodes
    )
    engine = HomeAgent(config)
    wallclock = 1_800_000_000.0
    for i in range(N):
        coa = (
            "198.51.100.7"
            if i % 5
            else ("198.51.100.8" if i < N // 2 else str(IPv4Address(BASE + 2**20 + i)))
        )
        record = BindingRecord(
            vr="vr1",
            home_address=str(IPv4Address(BASE + i + 1)),
            care_of_address=coa,
            mobile_node=f"mn{i}",
            source_address=coa,
            source_port=434 + i % 7,
            lifetime=0xFFFF if i % 11 == 0 else 600 + i % 13,
            registered_at=wallclock - 30 - (0 if i % 4 == 0 else i * 0.000137),
            identification=(0xE000_0000 << 32) + i,
            flags=(i * 37) & 0xFF,
            encapsulation="gre" if i % 6 == 0 else "ip-in-ip",
        )
        assert engine.restore_binding(record, now=100.0, wallclock=wallclock)
    return TunnelRouter(
        "vr1", engine, {IPv4Address("198.51.100.7"): "mip-c6336407", IPv4Address("198.51.100.8"): None}
    )


_LETTERS = (("S", 0x80), ("B", 0x40), ("D", 0x20), ("M", 0x10), ("G", 0x08), ("T", 0x02))


def expected_leaves(info, interfaces) -> dict[str, str]:
    """The YANG leaves of one binding computed from the engine's BindingInfo, independently of the
    provider's writer (ipaddress, datetime, the RFC 5944 flag letters)."""
    leaves = {
        "home-address": str(info.home_address),
        "care-of-address": str(info.care_of_address),
        "mobile-node": info.mobile_node,
        "nai": info.nai,
        "source-address": str(info.source_address),
        "lifetime-granted": str(info.lifetime_granted),
        "lifetime-remaining": str(info.lifetime_remaining),
        "identification": str(info.identification),
        "flags": " ".join(letter for letter, bit in _LETTERS if int(info.flags) & bit),
        "encapsulation": info.encapsulation,
        "tunnel-interface": interfaces.get(info.care_of_address),
    }
    return {k: v for k, v in leaves.items() if v is not None}


def test_raw_writer_matches_the_engine_leaf_by_leaf() -> None:
    vr = varied_router()
    request = raw_request()
    (top,) = HomeAgentStateProvider(lambda: [vr]).get_state(request)
    assert request.raw, "no filter: bindings are written as raw bytes"
    written = list(splice(top, request).iter(f"{{{NS}}}binding"))
    infos = vr.engine.bindings_after(None, N + 1, now=vr.now())
    assert len(written) == len(infos) == N
    for el, info in zip(written, infos, strict=True):
        got = {etree.QName(c).localname: c.text or "" for c in el}
        stamp = got.pop("registered-at")
        assert got == expected_leaves(info, vr.interfaces)
        assert list(got)[:2] == ["home-address", "care-of-address"], "keys first"
        when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs(when.timestamp() - info.registered_at) < 1e-6 and stamp.endswith("Z")


def yang_binding_leaves() -> list[str]:
    """The leaves of bindings/binding as the YANG module defines them (not the provider's list)."""
    ctx = Validator().ctx
    path = "/".join(
        f"mipha-home-agent:{n}"
        for n in ("virtual-routers", "virtual-router", "home-agent", "bindings", "binding")
    )
    return [child.name() for child in next(ctx.find_path(f"/{path}")).children()]


def test_every_writer_path_writes_the_same_binding() -> None:
    """The template (no selection), the per-leaf writer (every leaf selected by name) and the element
    path (an XPath filter: the server filters elements) agree byte for byte (canonical XML)."""
    vr = varied_router()

    def bindings(request: StateRequest) -> list[bytes]:
        (top,) = HomeAgentStateProvider(lambda: [vr]).get_state(request)
        out = splice(top, request) if request.raw else top
        return [etree.tostring(b, method="c14n") for b in out.iter(f"{{{NS}}}binding")]

    every_leaf = "".join(f"<{leaf}/>" for leaf in yang_binding_leaves())
    selected = bindings(
        subtree(
            f'<virtual-routers xmlns="{NS}"><virtual-router><home-agent><bindings><binding>{every_leaf}'
            "</binding></bindings></home-agent></virtual-router></virtual-routers>"
        )
    )
    template = bindings(raw_request())
    elements = bindings(StateRequest(xpath="/m:virtual-routers", nsmap=(("m", NS),)))
    assert len(template) == N and template == selected == elements


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


def test_a_key_no_address_can_equal_matches_no_binding() -> None:
    """RFC 6241 §6.2.5: a content match selects the entries whose leaf equals it; a home or care-of
    address that is not an address (or not canonical) equals none, so the exact raw path has none."""
    vr = router()
    home = str(IPv4Address(BASE + 42))
    for key in ("<home-address>not-an-address</home-address>", "<home-address>010.0.0.42</home-address>",
                f"<home-address>{home}</home-address><care-of-address>bogus</care-of-address>"):  # fmt: skip
        request = subtree(
            f'<virtual-routers xmlns="{NS}"><virtual-router><home-agent><bindings><binding>{key}</binding>'
            "</bindings></home-agent></virtual-router></virtual-routers>"
        )
        (top,) = HomeAgentStateProvider(lambda: [vr]).get_state(request)
        assert list(splice(top, request).iter(f"{{{NS}}}binding")) == [], key


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


def test_a_streamed_walk_survives_changes_between_pages() -> None:
    """The bindings of a whole-table <get> are written while the reply goes out, with registrations
    running between pages: every page resumes after the previous page's last key, so the result
    stays in key order without duplicates and holds nothing removed ahead of the walk."""
    vr = router()
    request = raw_request()
    provider = HomeAgentStateProvider(lambda: [vr])
    (_top,) = provider.get_state(request)
    (pages,) = request.raw.values()
    first = next(pages)  # one page written, the rest not produced yet
    assert provider.last_bindings_built == first.count(b"<binding ") < N
    engine = vr.engine
    gone = [IPv4Address(BASE + N - 10 + i) for i in range(5)]  # ahead of the walk
    for home in gone:
        assert engine.clear_bindings(home_address=home) == 1
    assert engine.clear_bindings(home_address=IPv4Address(BASE + 1)) == 1  # behind it: already written
    rest = b"".join(pages)
    written = etree.fromstring(b'<bindings xmlns="%s">%s%s</bindings>' % (NS.encode(), first, rest))
    homes = [IPv4Address(b.findtext(f"{{{NS}}}home-address")) for b in written]
    assert homes == sorted(set(homes)) and len(homes) == N - len(gone)
    assert not set(gone) & set(homes) and IPv4Address(BASE + 1) in homes


@dataclass
class RouterWithTransport(FakeRouter):
    transport: object = None


def _receive_path(monkeypatch, fastpath_env: str, trace: bool = False) -> dict[str, str]:
    """``home-agent/receive-path`` of a router whose transport reads real loopback sockets, as the
    state provider writes it (checked against the YANG by libyang)."""
    from ha.transport import HomeAgentTransport, open_udp_socket

    monkeypatch.setenv("MIPHA_FASTPATH", fastpath_env)
    config = VirtualRouterConfig("vr1", home_agent=HomeAgentConfig(IPv4Address("127.0.0.1"), udp_port=0))
    engine = HomeAgent(config)
    sock = open_udp_socket("0.0.0.0", 0)
    unicast = open_udp_socket("127.0.0.1", sock.getsockname()[1], pktinfo=False)
    transport = HomeAgentTransport(engine, sock, unicast=unicast)
    if trace:
        transport.trace = lambda *_: None
    try:
        provider = HomeAgentStateProvider(lambda: [RouterWithTransport("vr1", engine, transport)])
        (top,) = provider.get_state(
            subtree(
                f'<virtual-routers xmlns="{NS}"><virtual-router><home-agent><receive-path/></home-agent>'
                "</virtual-router></virtual-routers>"
            )
        )
    finally:
        transport.close()
    xml = etree.tostring(top).decode()
    assert Validator().ctx.parse_data_mem(xml, "xml", parse_only=True, strict=True) is not None
    path = top.find(f".//{{{NS}}}home-agent/{{{NS}}}receive-path")
    assert path is not None and top.find(f".//{{{NS}}}statistics") is None  # only what was asked
    return {etree.QName(leaf).localname: leaf.text for leaf in path}


def test_receive_path_says_which_path_runs_and_why(monkeypatch) -> None:
    """The operator sees in the state (and ``mipha show statistics``) whether C answers renewals, and
    why not: MIPHA_FASTPATH=0, a per-node trace (which needs every datagram on the Python path)."""
    c = _receive_path(monkeypatch, "1")
    assert c["path"] == "c" and c["reason"].startswith("C path") and c["renewals-answered-in-c"] == "0"
    python = _receive_path(monkeypatch, "0")
    assert python["path"] == "python" and python["reason"] == "Python path: MIPHA_FASTPATH=0"
    traced = _receive_path(monkeypatch, "1", trace=True)
    assert traced["path"] == "python" and "trace" in traced["reason"]
