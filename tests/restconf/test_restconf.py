"""RESTCONF (RFC 8040 / 8072 / 8527) against a real server over TLS, with the real curl binary as
the client (verifying the generated certificate) and ncclient on the same core for the NETCONF side:
the RFC 8040 Appendix B walk-through on our module, status codes of §7, one transaction path with
NETCONF (same running byte for byte, locks, NACM), bad input changing nothing."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from lxml import etree
from nc_server import connect
from rc_server import ADMIN, CURL, NS, OPERATOR, M, curl

VR = f"/restconf/data/{M}:virtual-routers/virtual-router=default"
JSON = "application/yang-data+json"
XML = "application/yang-data+xml"
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"


def vr_body(address: str = "192.0.2.1") -> str:
    return json.dumps({f"{M}:virtual-router": [{"name": "default", "home-agent": {"address": address}}]})


def mn_body(name: str, home: str, key: str | None = None) -> str:
    node: dict = {"name": name, "home-address": home}
    if key:
        node["security-association"] = [{"spi": 300, "key": key}]
    return json.dumps({f"{M}:mobile-node": [node]})


def running(srv) -> bytes:
    with connect(srv) as m:
        return etree.tostring(m.get_config(source="running").data_ele)


def seed(srv) -> None:
    assert curl(srv, "PUT", VR, vr_body(), ctype=JSON).status == 201


def test_discovery_top_level_and_yang_library_version(rc):
    r = curl(rc, "GET", "/.well-known/host-meta", user=None)
    assert r.status == 200 and b"<Link rel='restconf' href='/restconf'/>" in r.body
    top = curl(rc, "GET", "/restconf").json()["ietf-restconf:restconf"]
    assert top["yang-library-version"] == "2019-01-04"
    r = curl(rc, "GET", "/restconf/yang-library-version", accept=XML)
    assert r.status == 200 and r.headers["content-type"] == XML and b">2019-01-04<" in r.body
    head = curl(rc, "HEAD", "/restconf/data/ietf-netconf-acm:nacm")
    assert head.status == 200 and head.body == b"" and head.headers["etag"]
    opts = curl(rc, "OPTIONS", "/restconf/data")
    assert opts.status == 200 and set(opts.headers["allow"].split(", ")) >= {"GET", "POST", "PUT", "PATCH"}
    assert (
        curl(rc, "OPTIONS", "/restconf/ds/ietf-datastores:operational").headers["allow"]
        == "GET, HEAD, OPTIONS"
    )
    r = curl(rc, "DELETE", "/restconf/operations")
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD, OPTIONS"


def test_authentication_and_tls(rc):
    r = curl(rc, "GET", "/restconf/data", user=None)
    assert r.status == 401 and r.headers["www-authenticate"].startswith("Basic realm=")
    assert r.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "access-denied"
    assert curl(rc, "GET", "/restconf/data", user=("admin", "wrong")).status == 401
    assert curl(rc, "GET", "/restconf/data", user=("nobody", "x")).status == 401
    # without the generated certificate as trust anchor curl refuses the server (exit 60)
    bad = subprocess.run(
        [CURL, "-sS", "-u", "admin:admin-secret", rc.base + "/restconf"], capture_output=True
    )
    assert bad.returncode == 60
    pem = rc.cert.read_text()
    assert "BEGIN CERTIFICATE" in pem and oct(rc.rc_config.key_path.stat().st_mode)[-3:] == "600"


def test_appendix_b_create_retrieve_patch_delete(rc):
    """RFC 8040 B.2 / B.3 on mipha-home-agent: PUT creates (201) then replaces (204), POST creates a
    child with Location (201) and refuses a duplicate (409 data-exists), depth and fields shape the
    reply, PATCH merges (204), DELETE (204) then 404."""
    r = curl(rc, "PUT", VR, vr_body(), ctype=JSON)
    assert r.status == 201 and r.headers["etag"]
    assert curl(rc, "PUT", VR, vr_body("192.0.2.2"), ctype=JSON).status == 204
    r = curl(rc, "POST", VR, mn_body("mn,1/x", "10.0.0.1"), ctype=JSON)
    assert r.status == 201
    assert r.headers["location"].endswith(f"{VR}/mobile-node=mn%2C1%2Fx")
    dup = curl(rc, "POST", VR, mn_body("mn,1/x", "10.0.0.9"), ctype=JSON)
    assert dup.status == 409 and dup.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "data-exists"
    node = curl(rc, "GET", f"{VR}/mobile-node=mn%2C1%2Fx").json()
    assert node == {f"{M}:mobile-node": [{"name": "mn,1/x", "home-address": "10.0.0.1"}]}
    shallow = curl(rc, "GET", f"/restconf/data/{M}:virtual-routers?depth=2").json()
    assert shallow == {f"{M}:virtual-routers": {"virtual-router": [{"name": "default"}]}}
    picked = curl(rc, "GET", f"{VR}?fields=home-agent(address)").json()
    assert picked == {f"{M}:virtual-router": [{"name": "default", "home-agent": {"address": "192.0.2.2"}}]}
    leaf = curl(rc, "GET", f"{VR}/home-agent/address", accept=XML)
    assert leaf.body == f'<address xmlns="{NS}">192.0.2.2</address>'.encode()
    patch = f'<mobile-node xmlns="{NS}"><name>mn,1/x</name><max-lifetime>600</max-lifetime></mobile-node>'
    assert curl(rc, "PATCH", f"{VR}/mobile-node=mn%2C1%2Fx", patch, ctype=XML).status == 204
    got = curl(rc, "GET", f"{VR}/mobile-node=mn%2C1%2Fx").json()[f"{M}:mobile-node"][0]
    assert got["max-lifetime"] == 600 and got["home-address"] == "10.0.0.1"
    assert (
        curl(rc, "PATCH", f"{VR}/mobile-node=nope", patch.replace("mn,1/x", "nope"), ctype=XML).status == 404
    )
    assert curl(rc, "DELETE", f"{VR}/mobile-node=mn%2C1%2Fx").status == 204
    assert curl(rc, "DELETE", f"{VR}/mobile-node=mn%2C1%2Fx").status == 404
    gone = curl(rc, "GET", f"{VR}/mobile-node=mn%2C1%2Fx")
    assert (
        gone.status == 404 and gone.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "invalid-value"
    )


def test_with_defaults_and_content(rc):
    seed(rc)
    explicit = curl(rc, "GET", f"{VR}/home-agent").json()[f"{M}:home-agent"]
    assert "udp-port" not in explicit
    full = curl(rc, "GET", f"{VR}/home-agent?with-defaults=report-all&content=config").json()
    assert full[f"{M}:home-agent"]["udp-port"] == 434
    tagged = curl(rc, "GET", f"{VR}/home-agent/udp-port?with-defaults=report-all-tagged").json()
    assert tagged[f"{M}:udp-port"] == 434 and tagged["@mipha-home-agent:udp-port"]
    tagged_xml = curl(rc, "GET", f"{VR}/home-agent/udp-port?with-defaults=report-all-tagged", accept=XML)
    assert b'wd:default="true"' in tagged_xml.body and b">434</udp-port>" in tagged_xml.body
    assert curl(rc, "GET", f"{VR}?content=bogus").status == 400
    assert curl(rc, "GET", f"{VR}?depth=0").status == 400
    assert curl(rc, "GET", f"{VR}?fields=nosuch").status == 400
    assert curl(rc, "GET", f"{VR}?unknown=1").status == 400


def test_same_change_through_netconf_and_restconf_gives_the_same_running(rc_factory):
    a, b = rc_factory(), rc_factory()
    config = f"""<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}">
      <virtual-router><name>default</name><home-agent><address>192.0.2.1</address></home-agent>
      <mobile-node><name>mn1</name><home-address>10.0.0.1</home-address>
        <security-association><spi>300</spi><key>{KEY}</key></security-association></mobile-node>
      </virtual-router></virtual-routers></config>"""
    config = re.sub(r">\s+<", "><", config)  # the same content, no whitespace text between tags
    with connect(a) as m:
        m.edit_config(target="running", config=config)
    seed(b)
    assert curl(b, "POST", VR, mn_body("mn1", "10.0.0.1", KEY), ctype=JSON).status == 201
    assert running(a) == running(b)


#: RESTCONF writes with JSON bodies, and the same changes as NETCONF <config>s (tests the direct JSON
#: conversion of server/restconf/json_body.py against libyang's, and both against NETCONF)
def _mn(name: str, home: str, **extra) -> dict:
    return {"name": name, "home-address": home, **extra}


JSON_WRITES = [
    ("PUT", VR, {f"{M}:virtual-router": [{"name": "default", "home-agent": {"address": "192.0.2.1"}}]}),
    (
        "PATCH",
        VR,
        {f"{M}:virtual-router": [{"name": "default", "mobile-node": [_mn("b1", "10.200.0.1")]}]},
    ),
    (
        "POST",
        VR,
        {
            f"{M}:mobile-node": [
                _mn("mn1", "10.0.0.1", **{"security-association": [{"spi": 300, "key": KEY}]})
            ]
        },
    ),
    ("PUT", f"{VR}/mobile-node=mn2", {f"{M}:mobile-node": [_mn("mn2", "10.0.0.2")]}),
    ("PATCH", f"{VR}/home-agent", {f"{M}:home-agent": {"proxy-arp": "per-address", "udp-port": 4434}}),
]
NETCONF_WRITES = [
    "<home-agent><address>192.0.2.1</address></home-agent>",
    "<mobile-node><name>b1</name><home-address>10.200.0.1</home-address></mobile-node>",
    f"<mobile-node><name>mn1</name><home-address>10.0.0.1</home-address><security-association><spi>300</spi>"
    f"<key>{KEY}</key></security-association></mobile-node>",
    "<mobile-node><name>mn2</name><home-address>10.0.0.2</home-address></mobile-node>",
    "<home-agent><proxy-arp>per-address</proxy-arp><udp-port>4434</udp-port></home-agent>",
]
#: bad bodies: (method, resource, body, status, error-tag)
JSON_REFUSED = [
    (
        "PATCH",
        VR,
        {f"{M}:virtual-router": [{"name": "default", "mobile-node": [_mn("x", "10.0.0.9", bogus=1)]}]},
        400,
        "unknown-element",
    ),
    ("POST", VR, {f"{M}:mobile-node": [_mn("x", "300.1.1.1")]}, 400, "invalid-value"),
    (
        "POST",
        VR,
        {
            f"{M}:mobile-node": [
                _mn("x", "10.0.0.9", **{"security-association": [{"spi": "300", "key": KEY}]})
            ]
        },
        400,
        "invalid-value",
    ),
    (
        "POST",
        VR,
        {f"{M}:mobile-node": [_mn("x", "10.0.0.9", **{"security-association": [{"spi": 7, "key": KEY}]})]},
        400,
        "invalid-value",
    ),
    ("POST", VR, {f"{M}:mobile-node": [{"home-address": "10.0.0.9"}]}, 400, "missing-element"),
    (
        "POST",
        VR,
        {f"{M}:mobile-node": [_mn("x", "10.0.0.9", **{"assigned-address": "10.0.0.8"})]},
        400,
        "invalid-value",
    ),
    ("PATCH", f"{VR}/home-agent", {f"{M}:home-agent": {"udp-port": 70000}}, 400, "invalid-value"),
    ("PATCH", f"{VR}/home-agent", {f"{M}:home-agent": {"udp-port": "4434"}}, 400, "invalid-value"),
    (
        "PUT",
        f"{VR}/mobile-node=y",
        {f"{M}:mobile-node": [_mn("y", "10.0.0.9"), _mn("y", "10.0.0.9")]},
        400,
        "invalid-value",
    ),
]


def _json_writes(srv) -> list[tuple[int, bytes]]:
    out = [(curl(srv, m, path, json.dumps(body), ctype=JSON).status, b"") for m, path, body in JSON_WRITES]
    for method, path, body, status, tag in JSON_REFUSED:
        r = curl(srv, method, path, json.dumps(body), ctype=JSON)
        assert (r.status, r.json()["ietf-restconf:errors"]["error"][0]["error-tag"]) == (status, tag), (
            body,
            r.body,
        )
        out.append((r.status, r.body))
    return out


def test_json_bodies_direct_and_through_libyang_and_netconf_give_the_same(rc_factory, monkeypatch):
    from server.restconf import handlers

    direct, through_libyang, netconf = rc_factory(), rc_factory(), rc_factory()
    replies = _json_writes(direct)
    assert [status for status, _ in replies[: len(JSON_WRITES)]] == [201, 204, 201, 201, 204]
    monkeypatch.setattr(handlers, "FAST_JSON", False)
    assert _json_writes(through_libyang) == replies  # the same statuses and error bodies
    with connect(netconf) as m:
        for inner in NETCONF_WRITES:
            m.edit_config(
                target="running",
                config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}">'
                f"<virtual-router><name>default</name>{inner}</virtual-router></virtual-routers></config>",
            )
    assert running(direct) == running(through_libyang) == running(netconf)


def test_netconf_lock_is_honoured(rc):
    seed(rc)
    with connect(rc) as m:
        m.lock("running")
        r = curl(rc, "POST", VR, mn_body("mn1", "10.0.0.1"), ctype=JSON)
        assert r.status == 409
        assert r.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "in-use"
        m.unlock("running")
    assert curl(rc, "POST", VR, mn_body("mn1", "10.0.0.1"), ctype=JSON).status == 201


def test_nacm_read_filter_and_write_denial(rc):
    seed(rc)
    assert curl(rc, "POST", VR, mn_body("mn1", "10.0.0.1", KEY), ctype=JSON).status == 201
    # the superuser reads the key; the operator never sees it (nacm:default-deny-all), in any format
    sa = f"{VR}/mobile-node=mn1/security-association=300"
    assert curl(rc, "GET", sa).json()[f"{M}:security-association"][0]["key"] == KEY
    for accept in (JSON, XML):
        r = curl(rc, "GET", f"{VR}/mobile-node=mn1", user=OPERATOR, accept=accept)
        assert r.status == 200 and b"spi" in r.body and b"aa:bb" not in r.body and b"<key" not in r.body
    assert curl(rc, "GET", f"{sa}/key", user=OPERATOR).status == 404
    counter = "/restconf/data/ietf-netconf-acm:nacm/denied-data-writes"
    before = curl(rc, "GET", counter).json()["ietf-netconf-acm:denied-data-writes"]
    r = curl(rc, "POST", VR, mn_body("mn2", "10.0.0.2"), ctype=JSON, user=OPERATOR)
    assert r.status == 403 and r.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "access-denied"
    assert curl(rc, "GET", counter).json()["ietf-netconf-acm:denied-data-writes"] == before + 1
    assert curl(rc, "GET", f"{VR}/mobile-node=mn2").status == 404


def test_bad_input_is_refused_and_changes_nothing(rc):
    seed(rc)
    before, etag = running(rc), curl(rc, "GET", VR).headers["etag"]

    def err(r):
        return r.json()["ietf-restconf:errors"]["error"][0]

    r = curl(rc, "POST", VR, '{"mipha-home-agent:mobile-node": [', ctype=JSON)
    assert r.status == 400 and err(r)["error-tag"] == "malformed-message"
    r = curl(rc, "POST", VR, "<mobile-node xmlns='x'><name>", ctype=XML)
    assert r.status == 400 and err(r)["error-tag"] == "malformed-message"
    r = curl(rc, "POST", VR, json.dumps({f"{M}:mobile-node": [{"name": "m", "bogus": 1}]}), ctype=JSON)
    assert r.status == 400 and err(r)["error-tag"] == "unknown-element"
    r = curl(
        rc,
        "POST",
        VR,
        json.dumps({f"{M}:mobile-node": [{"name": "m", "home-address": "300.1.1.1"}]}),
        ctype=JSON,
    )
    assert r.status == 400 and err(r)["error-tag"] == "invalid-value"
    r = curl(rc, "GET", f"/restconf/data/{M}:virtual-routers/virtual-router=a,b")
    assert r.status == 400 and err(r)["error-tag"] == "invalid-value"
    assert curl(rc, "GET", f"/restconf/data/{M}:virtual-routers/nosuch").status == 400
    r = curl(rc, "PUT", f"{VR}/mobile-node=mn1", mn_body("other", "10.0.0.1"), ctype=JSON)
    assert r.status == 400  # keys in the body differ from the URI's
    assert curl(rc, "POST", VR, mn_body("m", "10.0.0.1"), ctype="text/plain").status == 415
    assert curl(rc, "GET", VR, accept="text/plain").status == 406
    r = curl(rc, "PUT", f"{VR}/home-agent/bindings", "{}", ctype=JSON)
    assert r.status == 405  # state data is not writable
    huge = "x" * (rc.rc_config.max_body + 1)
    r = curl(rc, "POST", VR, huge, ctype=JSON)
    assert r.status == 413 and err(r)["error-tag"] == "too-big"
    # a semantically invalid node (neither home-address nor pool): validation refuses it whole
    r = curl(rc, "POST", VR, json.dumps({f"{M}:mobile-node": [{"name": "m"}]}), ctype=JSON)
    assert r.status in (400, 409) and err(r)["error-type"] == "application"
    assert running(rc) == before and curl(rc, "GET", VR).headers["etag"] == etag


def test_entity_tags_and_preconditions(rc):
    seed(rc)
    r = curl(rc, "GET", VR)
    etag, modified = r.headers["etag"], r.headers["last-modified"]
    assert curl(rc, "GET", VR, headers={"If-None-Match": etag}).status == 304
    assert curl(rc, "GET", VR, headers={"If-Modified-Since": modified}).status == 304
    stale = curl(rc, "POST", VR, mn_body("mn1", "10.0.0.1"), ctype=JSON, headers={"If-Match": '"0-0"'})
    assert stale.status == 412
    ok = curl(rc, "POST", VR, mn_body("mn1", "10.0.0.1"), ctype=JSON, headers={"If-Match": etag})
    assert ok.status == 201 and ok.headers["etag"] != etag
    assert curl(rc, "GET", VR, headers={"If-None-Match": etag}).status == 200


def test_yang_patch_is_one_transaction(rc):
    seed(rc)
    patch = {
        "ietf-yang-patch:yang-patch": {
            "patch-id": "p1",
            "edit": [
                {
                    "edit-id": "e1",
                    "operation": "create",
                    "target": "/mobile-node=a",
                    "value": {f"{M}:mobile-node": [{"name": "a", "home-address": "10.0.0.1"}]},
                },
                {
                    "edit-id": "e2",
                    "operation": "merge",
                    "target": "/mobile-node=b",
                    "value": {f"{M}:mobile-node": [{"name": "b", "home-address": "10.0.0.2"}]},
                },
            ],
        }
    }
    r = curl(rc, "PATCH", VR, json.dumps(patch), ctype="application/yang-patch+json")
    assert r.status == 200, r.body
    assert r.json() == {"ietf-yang-patch:yang-patch-status": {"patch-id": "p1", "ok": [None]}}
    before = running(rc)
    patch["ietf-yang-patch:yang-patch"]["edit"].insert(
        0, {"edit-id": "e0", "operation": "delete", "target": "/mobile-node=b"}
    )
    patch["ietf-yang-patch:yang-patch"]["edit"][2]["target"] = "/mobile-node=c"
    patch["ietf-yang-patch:yang-patch"]["edit"][2]["value"][f"{M}:mobile-node"][0]["name"] = "c"
    r = curl(rc, "PATCH", VR, json.dumps(patch), ctype="application/yang-patch+json")
    assert r.status == 409
    status = r.json()["ietf-yang-patch:yang-patch-status"]
    edit = status["edit-status"]["edit"][0]
    assert edit["edit-id"] == "e1" and edit["errors"]["error"][0]["error-tag"] == "data-exists"
    assert running(rc) == before  # the delete of b before it was undone


def test_operations(rc):
    calls = []

    def clear(sess, rpc):
        calls.append((sess.principal.user, [(etree.QName(c).localname, c.text) for c in rpc]))
        return f'<cleared xmlns="{NS}">3</cleared>'.encode()

    rc.call(rc.handle.core.register_rpc, NS, "clear-bindings", clear)
    ops = curl(rc, "GET", "/restconf/operations").json()["ietf-restconf:operations"]
    subscriptions = {  # RFC 8650
        f"ietf-subscribed-notifications:{n}-subscription": [None]
        for n in ("establish", "modify", "delete", "kill")
    }
    assert ops == {
        f"{M}:clear-bindings": [None],
        "ietf-yang-push:resync-subscription": [None],
        **subscriptions,
    }
    seed(rc)
    body = json.dumps({f"{M}:input": {"virtual-router": "default"}})
    r = curl(rc, "POST", f"/restconf/operations/{M}:clear-bindings", body, ctype=JSON)
    assert r.status == 200 and r.json() == {f"{M}:output": {"cleared": 3}}
    r = curl(
        rc,
        "POST",
        f"/restconf/operations/{M}:clear-bindings",
        f'<input xmlns="{NS}"><virtual-router>default</virtual-router></input>',
        ctype=XML,
        accept=XML,
    )
    assert (
        r.status == 200
        and r.body == f'<output xmlns="{NS}"><cleared xmlns="{NS}">3</cleared></output>'.encode()
    )
    assert calls == [("admin", [("virtual-router", "default")])] * 2
    bad = curl(rc, "POST", f"/restconf/operations/{M}:clear-bindings", '{"x:input": {}}', ctype=JSON)
    assert bad.status == 400
    assert curl(rc, "POST", f"/restconf/operations/{M}:nosuch").status == 404
    assert curl(rc, "GET", f"/restconf/operations/{M}:clear-bindings").status == 405


def test_nmda_datastores(rc):
    seed(rc)
    ds = "/restconf/ds/ietf-datastores"
    r = curl(rc, "GET", f"{ds}:running/{M}:virtual-routers/virtual-router=default/home-agent")
    assert r.json() == {f"{M}:home-agent": {"address": "192.0.2.1"}}
    assert curl(rc, "PUT", f"{ds}:operational/{M}:virtual-routers", "{}", ctype=JSON).status == 405
    body = json.dumps({f"{M}:address": "192.0.2.7"})
    assert (
        curl(
            rc,
            "PUT",
            f"{ds}:candidate/{M}:virtual-routers/virtual-router=default/home-agent/address",
            body,
            ctype=JSON,
        ).status
        == 204
    )
    with connect(rc) as m:
        cand = m.get_config(source="candidate").data_xml
        assert "192.0.2.7" in cand and "192.0.2.7" not in m.get_config(source="running").data_xml
        m.commit()
    assert curl(rc, "GET", f"{VR}/home-agent/address").json() == {f"{M}:address": "192.0.2.7"}
    assert curl(rc, "GET", f"{ds}:bogus").status == 404


def test_monitoring_advertises_the_streams(rc):
    state = curl(rc, "GET", "/restconf/data/ietf-restconf-monitoring:restconf-state").json()
    stream = state["ietf-restconf-monitoring:restconf-state"]["streams"]["stream"][0]
    assert stream["name"] == "NETCONF"
    locations = {a["encoding"]: a["location"] for a in stream["access"]}
    assert locations == {e: f"{rc.base}/restconf/streams/NETCONF/{e}" for e in ("xml", "json")}


def _read_until(proc: subprocess.Popen, needle: bytes, deadline: float) -> list[bytes]:
    lines: list[bytes] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not seen in {b''.join(lines)!r}")


@pytest.mark.parametrize("enc", ["xml", "json"])
def test_event_stream_replays_then_carries_config_changes(rc, enc):
    """An SSE stream with start-time replays the change made before it opened (NETCONF's replay
    buffer), then delivers a live one; each event is one netconf-config-change."""
    seed(rc)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 5))
    assert curl(rc, "POST", VR, mn_body("mn1", "10.0.0.1"), ctype=JSON).status == 201
    url = f"{rc.base}/restconf/streams/NETCONF/{enc}?start-time={since}"
    args = [CURL, "-sS", "-N", "--cacert", str(rc.cert), "-u", "admin:admin-secret"]
    args += ["-H", "Accept: text/event-stream", "--max-time", "30", url]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 25
        replayed = _read_until(proc, b"replayComplete", deadline)
        assert sum(b"netconf-config-change" in line for line in replayed) == 2  # seed + mn1
        assert curl(rc, "POST", VR, mn_body("mn2", "10.0.0.2"), ctype=JSON).status == 201
        live = _read_until(proc, b"netconf-config-change", deadline)
        event_line = next(x for x in live if b"netconf-config-change" in x)
        assert event_line.startswith(b"data: ")
        if enc == "json":
            event = json.loads(event_line[len(b"data: ") :])["ietf-restconf:notification"]
            change = event["ietf-netconf-notifications:netconf-config-change"]
            assert change["changed-by"]["username"] == "admin" and change["datastore"] == "running"
            assert event["eventTime"]
    finally:
        proc.kill()
        proc.wait()


def test_event_stream_refuses_bad_requests(rc):
    base = "/restconf/streams/NETCONF/xml"
    assert curl(rc, "GET", "/restconf/streams/OTHER/xml").status == 404
    assert curl(rc, "GET", base, accept="application/yang-data+json").status == 406
    assert curl(rc, "GET", f"{base}?stop-time=2020-01-01T00:00:00Z").status == 400
    assert curl(rc, "GET", f"{base}?start-time=2999-01-01T00:00:00Z").status == 400
    assert curl(rc, "GET", f"{base}?filter=((").status == 400


def test_large_reply_encoded_in_a_worker_thread(rc):
    """A reply above OFFLOAD_BYTES is encoded off the event loop: same content either way."""
    from server.restconf.app import OFFLOAD_BYTES

    n = OFFLOAD_BYTES // 60
    nodes = "".join(
        f"<mobile-node><name>m{i}</name><home-address>10.{i >> 16}.{i >> 8 & 255}.{i & 255}</home-address>"
        "</mobile-node>"
        for i in range(1, n + 1)
    )
    config = (
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}">'
        f"<virtual-router><name>default</name><home-agent><address>192.0.2.1</address></home-agent>"
        f"{nodes}</virtual-router></virtual-routers></config>"
    )
    with connect(rc) as m:
        m.edit_config(target="running", config=config)
    big = curl(rc, "GET", f"{VR}?content=config")
    assert len(big.body) > OFFLOAD_BYTES // 2
    got = big.json()[f"{M}:virtual-router"][0]["mobile-node"]
    assert len(got) == n and got[-1] == {"name": f"m{n}", "home-address": f"10.0.{n >> 8 & 255}.{n & 255}"}
    xml = curl(rc, "GET", f"{VR}?content=config", accept=XML)
    assert xml.body.count(b"<mobile-node>") == n


def _replayed(rc, user, query: str = "") -> bytes:
    """The events of the stream's replay (everything since the log began), up to replayComplete."""
    url = f"{rc.base}/restconf/streams/NETCONF/xml?start-time=2000-01-01T00:00:00Z{query}"
    args = [CURL, "-sS", "-N", "--cacert", str(rc.cert), "-u", f"{user[0]}:{user[1]}"]
    proc = subprocess.Popen([*args, "--max-time", "30", url], stdout=subprocess.PIPE)
    try:
        return b"".join(_read_until(proc, b"replayComplete", time.monotonic() + 25))
    finally:
        proc.kill()
        proc.wait()


def test_event_stream_is_nacm_filtered_and_filterable(rc):
    """A rule denying netconf-config-change to the operators group (written over RESTCONF) keeps
    those events out of an operator's stream (denied-notifications counts them); the admin's
    stream has them; `filter` selects events by XPath with module names as prefixes."""
    policy = {
        "ietf-netconf-acm:nacm": {
            "rule-list": [
                {
                    "name": "ops",
                    "group": ["operators"],
                    "rule": [
                        {
                            "name": "no-config-change",
                            "module-name": "ietf-netconf-notifications",
                            "notification-name": "netconf-config-change",
                            "access-operations": "*",
                            "action": "deny",
                        }
                    ],
                }
            ]
        }
    }
    r = curl(rc, "PATCH", "/restconf/data/ietf-netconf-acm:nacm", json.dumps(policy), ctype=JSON)
    assert r.status == 204, r.body
    seed(rc)
    admin = _replayed(rc, ADMIN)
    assert admin.count(b"<netconf-config-change") == 2  # the policy and the router
    counter = "/restconf/data/ietf-netconf-acm:nacm/denied-notifications"
    before = int(curl(rc, "GET", counter).json()["ietf-netconf-acm:denied-notifications"])
    operator = _replayed(rc, OPERATOR)
    assert b"netconf-config-change" not in operator and b"replayComplete" in operator
    assert int(curl(rc, "GET", counter).json()["ietf-netconf-acm:denied-notifications"]) >= before + 2
    only_start = _replayed(rc, ADMIN, "&filter=/ietf-netconf-notifications:netconf-session-start")
    assert b"netconf-config-change" not in only_start
    only_change = _replayed(rc, ADMIN, "&filter=/ietf-netconf-notifications:netconf-config-change")
    assert only_change.count(b"<netconf-config-change") == 2
