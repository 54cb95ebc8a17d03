"""Ordered-by user lists: RESTCONF insert/point (RFC 8040 §4.8.5/6), YANG Patch insert/move
(RFC 8072) and the NETCONF yang:insert attributes (RFC 7950 §7.8.6) they become, on the RADIUS
server list (`aaa/server`, ordered-by user: servers are tried in order)."""

from __future__ import annotations

import json

import pytest
from nc_server import connect
from ncclient.operations.rpc import RPCError
from rc_server import NS, M, curl
from test_restconf import JSON, VR, seed

AAA = f"{VR}/aaa"


def server(address: str) -> str:
    return json.dumps({f"{M}:server": [{"address": address, "secret": f"s-{address}"}]})


def order(rc) -> list[str]:
    got = curl(rc, "GET", f"{AAA}?fields=server(address)").json()
    return [s["address"] for s in got[f"{M}:aaa"]["server"]]


def test_insert_and_point_place_entries(rc):
    seed(rc)
    for a in ("192.0.2.51", "192.0.2.52"):
        assert curl(rc, "POST", AAA, server(a), ctype=JSON).status == 201
    assert curl(rc, "POST", f"{AAA}?insert=first", server("192.0.2.50"), ctype=JSON).status == 201
    assert order(rc) == ["192.0.2.50", "192.0.2.51", "192.0.2.52"]
    point = f"/{M}:virtual-routers/virtual-router=default/aaa/server=192.0.2.51"
    r = curl(rc, "POST", f"{AAA}?insert=after&point={point}", server("192.0.2.60"), ctype=JSON)
    assert r.status == 201, r.body
    assert order(rc) == ["192.0.2.50", "192.0.2.51", "192.0.2.60", "192.0.2.52"]
    # PUT with insert moves an existing entry (and replaces its content)
    r = curl(rc, "PUT", f"{AAA}/server=192.0.2.52?insert=first", server("192.0.2.52"), ctype=JSON)
    assert r.status == 204, r.body
    assert order(rc) == ["192.0.2.52", "192.0.2.50", "192.0.2.51", "192.0.2.60"]


def test_insert_errors(rc):
    seed(rc)
    assert curl(rc, "POST", AAA, server("192.0.2.51"), ctype=JSON).status == 201
    # not an ordered-by user list: 400 invalid-value
    mn = json.dumps({f"{M}:mobile-node": [{"name": "a", "home-address": "10.0.0.1"}]})
    r = curl(rc, "POST", f"{VR}?insert=first", mn, ctype=JSON)
    assert r.status == 400 and r.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "invalid-value"
    assert curl(rc, "POST", f"{AAA}?insert=before", server("192.0.2.9"), ctype=JSON).status == 400
    assert curl(rc, "POST", f"{AAA}?insert=sideways", server("192.0.2.9"), ctype=JSON).status == 400
    missing = f"/{M}:virtual-routers/virtual-router=default/aaa/server=192.0.2.99"
    r = curl(rc, "POST", f"{AAA}?insert=before&point={missing}", server("192.0.2.9"), ctype=JSON)
    err = r.json()["ietf-restconf:errors"]["error"][0]
    assert (
        r.status == 400 and err["error-tag"] == "bad-attribute" and err["error-app-tag"] == "missing-instance"
    )
    assert order(rc) == ["192.0.2.51"]


def test_yang_patch_insert_and_move(rc):
    seed(rc)
    for a in ("192.0.2.51", "192.0.2.52"):
        assert curl(rc, "POST", AAA, server(a), ctype=JSON).status == 201
    patch = {
        "ietf-yang-patch:yang-patch": {
            "patch-id": "order",
            "edit": [
                {
                    "edit-id": "1",
                    "operation": "insert",
                    "target": "/server=192.0.2.50",
                    "where": "before",
                    "point": "/server=192.0.2.52",
                    "value": json.loads(server("192.0.2.50")),
                },
                {"edit-id": "2", "operation": "move", "target": "/server=192.0.2.51", "where": "last"},
            ],
        }
    }
    r = curl(rc, "PATCH", AAA, json.dumps(patch), ctype="application/yang-patch+json")
    assert r.status == 200, r.body
    assert order(rc) == ["192.0.2.50", "192.0.2.52", "192.0.2.51"]


def test_netconf_yang_insert_attributes(rc):
    seed(rc)
    y = "urn:ietf:params:xml:ns:yang:1"

    def edit(body: str) -> None:
        config = (
            f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" xmlns:yang="{y}">'
            f'<virtual-routers xmlns="{NS}"><virtual-router><name>default</name><aaa>'
            f"{body}</aaa></virtual-router></virtual-routers></config>"
        )
        with connect(rc) as m:
            m.edit_config(target="running", config=config)

    def srv(a: str, attrs: str = "") -> str:
        return f"<server {attrs}><address>{a}</address><secret>s</secret></server>"

    edit(srv("192.0.2.1") + srv("192.0.2.2"))
    edit(srv("192.0.2.3", 'yang:insert="first"'))
    edit(srv("192.0.2.4", 'yang:insert="after" yang:key="[address=\'192.0.2.3\']"'))
    assert order(rc) == ["192.0.2.3", "192.0.2.4", "192.0.2.1", "192.0.2.2"]
    edit(srv("192.0.2.3", 'yang:insert="last"'))  # a move of an existing entry
    assert order(rc) == ["192.0.2.4", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    edit(srv("192.0.2.3", 'yang:insert="last"'))  # already there: nothing moves
    assert order(rc) == ["192.0.2.4", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    with pytest.raises(RPCError) as err:
        edit(srv("192.0.2.1", 'yang:insert="before" yang:key="[address=\'192.0.2.99\']"'))
    assert err.value.tag == "bad-attribute"
    assert order(rc) == ["192.0.2.4", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
