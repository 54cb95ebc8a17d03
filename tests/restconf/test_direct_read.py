"""Direct reads (server/restconf/direct.py) with the real binding provider (mipha/state.py) behind a
real RESTCONF server, the real curl as the client: the binding table streamed as the provider writes
it (chunked) is byte for byte the generic path's reply (libyang's conversion, taken with a query
parameter the direct path leaves to it), by key too; what it cannot honour goes the generic way."""

from __future__ import annotations

import json
import sys
from ipaddress import IPv4Address
from pathlib import Path

from lxml import etree
from rc_server import NS, OPERATOR, M, curl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
from test_state_json import BASE, N, odd_router

from mipha.state import HomeAgentStateProvider

JSON = "application/yang-data+json"
XML = "application/yang-data+xml"
VR1 = f"/restconf/data/{M}:virtual-routers/virtual-router=vr1"
BINDINGS = f"{VR1}/home-agent/bindings"
GENERIC = "depth=65535"  # no cut at all, but a parameter only the generic path honours


def serve_bindings(rc) -> None:
    body = {f"{M}:virtual-router": [{"name": "vr1", "home-agent": {"address": "192.0.2.1"}}]}
    assert curl(rc, "PUT", VR1, json.dumps(body), ctype=JSON).status == 201
    vr = odd_router()
    rc.call(rc.handle.core.providers.append, HomeAgentStateProvider(lambda: [vr]))


def direct(reply) -> bool:
    """Streamed as written (the direct path) rather than encoded whole (the generic one)."""
    return reply.headers.get("transfer-encoding") == "chunked" and "content-length" not in reply.headers


def c14n(body: bytes) -> list[bytes]:
    root = etree.fromstring(b"<x>" + body + b"</x>")
    return [etree.tostring(el, method="c14n") for el in root]


def test_binding_table_streamed_is_the_generic_reply_byte_for_byte(rc) -> None:
    serve_bindings(rc)
    fast = curl(rc, "GET", BINDINGS)
    slow = curl(rc, "GET", f"{BINDINGS}?{GENERIC}")
    assert fast.status == slow.status == 200
    assert direct(fast) and not direct(slow)
    assert fast.body == slow.body
    assert len(fast.json()[f"{M}:bindings"]["binding"]) == N
    ops = curl(rc, "GET", f"/restconf/ds/ietf-datastores:operational/{M}:virtual-routers/virtual-router=vr1"
               "/home-agent/bindings?content=nonconfig")  # fmt: skip
    assert direct(ops) and ops.body == fast.body
    xml_fast = curl(rc, "GET", BINDINGS, accept=XML)
    xml_slow = curl(rc, "GET", f"{BINDINGS}?{GENERIC}", accept=XML)
    assert direct(xml_fast) and not direct(xml_slow)
    assert c14n(xml_fast.body) == c14n(xml_slow.body)


def test_one_binding_by_key_and_missing_ones(rc) -> None:
    serve_bindings(rc)
    for i in (3, 5, N // 2 + 5):  # AAA-learnt, UDP-tunnelled, its own care-of address
        home = str(IPv4Address(BASE + i + 1))
        coa = (
            "198.51.100.7"
            if i % 5
            else ("198.51.100.8" if i < N // 2 else str(IPv4Address(BASE + 2**20 + i)))
        )
        path = f"{BINDINGS}/binding={home},{coa}"
        fast, slow = curl(rc, "GET", path), curl(rc, "GET", f"{path}?{GENERIC}")
        assert fast.status == slow.status == 200 and direct(fast)
        assert fast.body == slow.body
        (entry,) = fast.json()[f"{M}:binding"]
        assert entry["home-address"] == home and entry["care-of-address"] == coa
        xml = curl(rc, "GET", path, accept=XML)
        assert direct(xml) and c14n(xml.body) == c14n(curl(rc, "GET", f"{path}?{GENERIC}", accept=XML).body)
    home = str(IPv4Address(BASE + 4))
    for missing in (f"{home},198.51.100.99", "10.255.0.1,198.51.100.7", "not-an-address,198.51.100.7"):
        for accept in (JSON, XML):
            r = curl(rc, "GET", f"{BINDINGS}/binding={missing}", accept=accept)
            assert r.status == 404, (missing, r.body)
            assert r.status == curl(rc, "GET", f"{BINDINGS}/binding={missing}?{GENERIC}").status
    unknown = f"/restconf/data/{M}:virtual-routers/virtual-router=nope/home-agent/bindings"
    assert curl(rc, "GET", unknown).status == curl(rc, "GET", f"{unknown}?{GENERIC}").status


def test_query_parameters_the_direct_path_cannot_honour(rc) -> None:
    serve_bindings(rc)
    home = str(IPv4Address(BASE + 2))
    fields = curl(rc, "GET", f"{BINDINGS}?fields=binding(home-address;care-of-address;flags)")
    assert fields.status == 200 and not direct(fields)
    entries = fields.json()[f"{M}:bindings"]["binding"]
    assert len(entries) == N and set(entries[1]) == {"home-address", "care-of-address", "flags"}
    depth = curl(rc, "GET", f"{BINDINGS}?depth=1")
    assert depth.status == 200 and not direct(depth) and depth.json() == {f"{M}:bindings": {}}
    config = curl(rc, "GET", f"{BINDINGS}?content=config")
    assert not direct(config) and config.status == 404
    tagged = curl(rc, "GET", f"{BINDINGS}/binding={home},198.51.100.7?with-defaults=report-all-tagged")
    assert tagged.status == 200 and not direct(tagged)
    assert tagged.json()[f"{M}:binding"][0]["home-address"] == home
    assert curl(rc, "GET", f"{BINDINGS}?depth=0").status == 400
    assert curl(rc, "GET", f"{BINDINGS}?bogus=1").status == 400


def test_nacm_rules_below_the_resource_take_the_generic_path(rc) -> None:
    """A rule hiding the NAI from operators: their read is pruned (the generic path), the admin's
    is direct and has it."""
    nacm = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
    path = "/m:virtual-routers/m:virtual-router/m:home-agent/m:bindings/m:binding/m:nai"
    policy = (
        f'<nacm xmlns="{nacm}"><rule-list><name>ops</name><group>operators</group><rule><name>no-nai</name>'
        f'<path xmlns:m="{NS}">{path}</path><access-operations>read</access-operations>'
        "<action>deny</action></rule></rule-list></nacm>"
    )
    r = curl(rc, "PATCH", "/restconf/data/ietf-netconf-acm:nacm", policy, ctype=XML)
    assert r.status == 204, r.body
    serve_bindings(rc)
    operator = curl(rc, "GET", BINDINGS, user=OPERATOR)
    assert operator.status == 200 and not direct(operator)
    assert b'"nai"' not in operator.body and len(operator.json()[f"{M}:bindings"]["binding"]) == N
    admin = curl(rc, "GET", BINDINGS)
    assert direct(admin) and b'"nai"' in admin.body
    stats = curl(rc, "GET", f"{VR1}/home-agent/statistics", user=OPERATOR)  # not a raw list: generic
    assert not direct(stats)
