"""YANG 1.1 actions (RFC 7950 §7.15) over NETCONF (ncclient's dispatch of a raw <action>) and RESTCONF
(RFC 8040 §3.6, curl), with RFC 8639's reset of a configured subscription's receiver as the action, on
a real server pushing to a real HTTPS receiver (tests/restconf/notif_receiver.py):

- reset moves the receiver to connecting (held there while the receiver does not answer), then it is
  active again after a new capabilities read and subscription-started; counters kept; the output
  time is when it happened; the producer runs again; a disconnected receiver is reached again;
- every error of RFC 7950 §7.15.2 / RFC 6241 with its exact error-tag, error-type, error-path /
  bad-element; an action whose feature is off is operation-not-supported;
- NACM (RFC 8341): exec on the action and read on its ancestors, path rules with keys;
- RESTCONF: JSON and XML input and output, 409 data-missing, 403, 204 for an action without output;
- the registry: handlers by schema path, refused for a path that is no action or twice.
"""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree
from nc_server import connect, make_config
from ncclient.operations.rpc import RPCError
from notif_receiver import Receiver
from rc_server import OPERATOR, RestconfServer, curl
from test_configured import SN, Q, config, instance, on_change_sub, poll, receiver_state, vr

from server.configured import RESET_PATH

YANG1 = "urn:ietf:params:xml:ns:yang:1"
NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
RESET_URI = (
    "/restconf/data/ietf-subscribed-notifications:subscriptions/subscription={}/receivers/receiver={}/reset"
)
JSON = "application/yang-data+json"
XML = "application/yang-data+xml"


def action(inner: str) -> etree._Element:
    return etree.fromstring(f'<action xmlns="{YANG1}">{inner}</action>')


def reset_at(sid: object, name: str, extra: str = "") -> str:
    return (
        f'<subscriptions xmlns="{SN}"><subscription><id>{sid}</id><receivers><receiver>'
        f"<name>{name}</name><reset>{extra}</reset></receiver></receivers></subscription></subscriptions>"
    )


def when(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def subscribe(m, pki, receiver, sid: int = 100) -> None:
    m.edit_config(target="running", config=vr("base"))
    m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(sid)))
    receiver.wait_kind("subscription-started")
    m.edit_config(target="running", config=vr("blue"))
    receiver.wait_kind("push-change-update")
    poll(lambda: receiver_state(m, sid), lambda s: s.get("sent-event-records") == "1")


def failure(m, inner: str) -> RPCError:
    with pytest.raises(RPCError) as err:
        m.dispatch(action(inner))
    return err.value


def test_netconf_reset_goes_to_connecting_then_active_with_a_new_subscription_started(rc, pki, receiver):
    with connect(rc) as m:
        subscribe(m, pki, receiver)
        reads = receiver.capability_reads
        receiver.hold()  # the new subscription-started waits for an answer: the receiver stays connecting
        before = dt.datetime.now(dt.UTC)
        reply = etree.fromstring(m.dispatch(action(reset_at(100, "r1"))).xml.encode())
        after = dt.datetime.now(dt.UTC)
        (time_el,) = reply.findall(f"{{{SN}}}time")
        assert before <= when(time_el.text) <= after, time_el.text
        state = receiver_state(m, 100)
        assert state["state"] == "connecting", state
        assert state["sent-event-records"] == "1" and state["dropped-event-records"] == "0", state
        receiver.release()
        started = receiver.wait_kind("subscription-started", 2)
        assert started[-1].xml().findtext(".//sn:id", namespaces=Q) == "100"
        assert receiver.capability_reads == reads + 1  # the connection process started over
        state = poll(lambda: receiver_state(m, 100), lambda s: s.get("state") == "active")
        assert state["sent-event-records"] == "1", state  # counters kept
        m.edit_config(target="running", config=vr("green"))  # the producer runs again
        (edit,) = receiver.wait_kind("push-change-update", 2)[-1].xml().iterfind(".//yp:edit", Q)
        assert edit.findtext("yp:target", namespaces=Q).endswith("virtual-router=green")
        poll(lambda: receiver_state(m, 100), lambda s: s.get("sent-event-records") == "2")


def test_reset_reaches_a_disconnected_receiver_again(rc, pki):
    receiver = Receiver(pki, encodings=("cbor",))
    try:
        with connect(rc) as m:
            m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(6)))
            poll(lambda: receiver_state(m, 6), lambda s: s.get("state") == "disconnected")
            receiver.encodings = ("xml",)  # the collector was fixed: without reset nobody would know
            m.dispatch(action(reset_at(6, "r1")))
            (started,) = receiver.wait_kind("subscription-started")
            assert started.xml().findtext(".//sn:id", namespaces=Q) == "6"
            poll(lambda: receiver_state(m, 6), lambda s: s.get("state") == "active")
    finally:
        receiver.close()


ERRORS = {
    "no-receiver": (
        reset_at(100, "nobody"),
        ("data-missing", "application"),
        "/sn:subscriptions/sn:subscription[sn:id='100']/sn:receivers/sn:receiver[sn:name='nobody']",
        None,
    ),
    "no-subscription": (
        reset_at(999, "r1"),
        ("data-missing", "application"),
        "/sn:subscriptions/sn:subscription[sn:id='999']",
        None,
    ),
    "not-an-action": (
        f'<subscriptions xmlns="{SN}"><subscription><id>100</id><purpose/></subscription></subscriptions>',
        ("bad-element", "application"),
        None,
        "purpose",
    ),
    "unknown-node": (
        f'<subscriptions xmlns="{SN}"><subscription><id>100</id><receivers><receiver><name>r1</name>'
        "<restart/></receiver></receivers></subscription></subscriptions>",
        ("unknown-element", "application"),
        None,
        "restart",
    ),
    "two-actions": (
        f'<subscriptions xmlns="{SN}"><subscription><id>100</id><receivers><receiver><name>r1</name><reset/>'
        "</receiver><receiver><name>r2</name><reset/></receiver></receivers></subscription></subscriptions>",
        ("bad-element", "protocol"),
        None,
        "receiver",
    ),
    "no-key": (
        f'<subscriptions xmlns="{SN}"><subscription><receivers><receiver><name>r1</name><reset/></receiver>'
        "</receivers></subscription></subscriptions>",
        ("missing-element", "application"),
        "/sn:subscriptions/sn:subscription",
        "id",
    ),
    "empty": ("", ("missing-element", "protocol"), None, "action"),
    "ends-before-an-action": (
        f'<subscriptions xmlns="{SN}"><subscription><id>100</id></subscription></subscriptions>',
        ("missing-element", "application"),
        None,
        "subscription",
    ),
    "input-it-does-not-have": (
        reset_at(100, "r1", "<force/>"),
        ("unknown-element", "application"),
        None,
        None,
    ),
    "bad-key-value": (reset_at("seven", "r1"), ("invalid-value", "application"), None, None),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_netconf_action_errors(rc, pki, receiver, case):
    inner, (tag, etype), path, bad = ERRORS[case]
    with connect(rc) as m:
        m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(100)))
        err = failure(m, inner)
        assert (err.tag, err.type) == (tag, etype), (err.tag, err.type, err.message)
        if path is not None:
            assert err.path.strip() == path, err.path
            assert err.xml.find("{*}error-path").nsmap["sn"] == SN
        if bad is not None:
            assert err.xml.findtext(".//{*}error-info/{*}bad-element") == bad


def test_an_action_whose_feature_is_off_is_operation_not_supported(tmp_path, rc_hashes, rc_pub):
    cfg = make_config(tmp_path / "state", tmp_path / "hostkey", rc_hashes, rc_pub)
    cfg.features = {
        **cfg.features,
        "ietf-subscribed-notifications": ("encode-xml", "replay", "subtree", "xpath"),
    }
    srv = RestconfServer(cfg)
    try:
        assert RESET_PATH not in srv.handle.core.actions.handlers
        with connect(srv) as m:
            err = failure(m, reset_at(1, "r1"))
            assert (err.tag, err.type) == ("operation-not-supported", "protocol"), err.message
            assert err.xml.findtext(".//{*}bad-element") == "reset"
            err = failure(
                m,
                f'<subscriptions xmlns="{SN}"><subscription><id>1</id><nothing/></subscription></subscriptions>',
            )
            assert err.tag == "unknown-element"
    finally:
        srv.stop()


def nacm(rules: str) -> str:
    return (
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0">'
        f'<nacm xmlns="{NACM_NS}" xmlns:sn="{SN}">'
        f'<rule-list nc:operation="replace"><name>ops</name><group>operators</group>{rules}</rule-list></nacm></config>'
    )


def rule(name: str, path: str, ops: str, act: str) -> str:
    return (
        f"<rule><name>{name}</name><path>{path}</path><access-operations>{ops}</access-operations>"
        f"<action>{act}</action></rule>"
    )


RECEIVER = "/sn:subscriptions/sn:subscription/sn:receivers/sn:receiver"


def test_nacm_needs_exec_on_the_action_and_read_on_its_ancestors(rc, pki, receiver):
    with connect(rc) as admin:
        subscribe(admin, pki, receiver)
        with connect(rc, OPERATOR) as op:
            op.dispatch(action(reset_at(100, "r1")))  # exec-default and read-default permit
            admin.edit_config(
                target="running", config=nacm(rule("no-reset", RECEIVER + "/sn:reset", "exec", "deny"))
            )
            err = failure(op, reset_at(100, "r1"))
            assert (err.tag, err.type) == ("access-denied", "application"), err.message
            assert err.path.strip() == (
                "/sn:subscriptions/sn:subscription[sn:id='100']/sn:receivers/sn:receiver[sn:name='r1']/sn:reset"
            )
            err = failure(op, reset_at(100, "nobody"))  # denied before anything is looked up
            assert err.tag == "access-denied"
            admin.edit_config(
                target="running",
                config=nacm(
                    rule("reset-ok", RECEIVER + "/sn:reset", "exec", "permit")
                    + rule("hide-100", "/sn:subscriptions/sn:subscription[sn:id='100']", "read", "deny")
                ),
            )
            err = failure(op, reset_at(100, "r1"))
            assert (err.tag, err.type) == ("access-denied", "application"), err.message
            assert err.path.strip() == "/sn:subscriptions/sn:subscription[sn:id='100']"
            err = failure(op, reset_at(101, "r1"))  # another entry is readable: the instance decides
            assert err.tag == "data-missing", err.message
            counters = admin.get(filter=("subtree", f'<nacm xmlns="{NACM_NS}"/>')).data_ele
            assert int(counters.findtext(f".//{{{NACM_NS}}}denied-operations")) >= 3
            no_actions = (
                "<rule><name>no-actions</name><rpc-name>action</rpc-name>"
                "<access-operations>exec</access-operations><action>deny</action></rule>"
            )
            admin.edit_config(target="running", config=nacm(no_actions))  # the <action> operation itself
            err = failure(op, reset_at(100, "r1"))
            assert (err.tag, err.type) == ("access-denied", "protocol"), err.message
    got = curl(rc, "POST", RESET_URI.format(100, "r1"), user=OPERATOR, accept=JSON)
    assert got.status == 403, got.body


def test_restconf_reset_json_and_xml(rc, pki, receiver):
    with connect(rc) as m:
        subscribe(m, pki, receiver)
    before = dt.datetime.now(dt.UTC)
    got = curl(rc, "POST", RESET_URI.format(100, "r1"), accept=JSON)
    assert got.status == 200, got.body
    assert got.headers["content-type"].startswith(JSON)
    (member,) = got.json()
    assert member == "ietf-subscribed-notifications:output"
    assert before <= when(got.json()[member]["time"]) <= dt.datetime.now(dt.UTC)
    receiver.wait_kind("subscription-started", 2)

    body = '{"ietf-subscribed-notifications:input": {}}'
    got = curl(rc, "POST", RESET_URI.format(100, "r1"), body, ctype=JSON, accept=JSON)
    assert got.status == 200 and "time" in got.json()["ietf-subscribed-notifications:output"], got.body
    receiver.wait_kind("subscription-started", 3)

    got = curl(rc, "POST", RESET_URI.format(100, "r1"), f'<input xmlns="{SN}"/>', ctype=XML, accept=XML)
    assert got.status == 200, got.body
    out = etree.fromstring(got.body)
    assert out.tag == f"{{{SN}}}output"
    assert before <= when(out.findtext(f"{{{SN}}}time")) <= dt.datetime.now(dt.UTC)
    receiver.wait_kind("subscription-started", 4)


def test_restconf_action_errors(rc, pki, receiver):
    with connect(rc) as m:
        m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(100)))
    got = curl(rc, "POST", RESET_URI.format(100, "nobody"), accept=JSON)
    assert got.status == 409, got.body  # RFC 8040 §7: data-missing
    (err,) = got.json()["ietf-restconf:errors"]["error"]
    assert (err["error-tag"], err["error-type"]) == ("data-missing", "application")
    sn = "ietf-subscribed-notifications:"  # the server's error-path: every step module-qualified
    assert err["error-path"] == (
        f"/{sn}subscriptions/{sn}subscription[{sn}id='100']/{sn}receivers/{sn}receiver[{sn}name='nobody']"
    )
    got = curl(
        rc,
        "POST",
        RESET_URI.format(100, "r1"),
        '{"ietf-subscribed-notifications:input": {"force": true}}',
        ctype=JSON,
    )
    assert got.status == 400, got.body
    assert got.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "unknown-element"
    got = curl(rc, "POST", RESET_URI.format(100, "r1"), f'<output xmlns="{SN}"/>', ctype=XML, accept=XML)
    assert got.status == 400, got.body
    got = curl(rc, "POST", RESET_URI.format("x", "r1"), accept=JSON)
    assert (
        got.status == 400 and got.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "invalid-value"
    )
    got = curl(rc, "POST", RESET_URI.format(100, "r1").replace("/data/", "/ds/ietf-datastores:running/"))
    assert got.status == 405, got.body
    got = curl(rc, "POST", RESET_URI.format(100, "r1"), user=OPERATOR, accept=JSON)
    assert got.status == 200, got.body  # NACM defaults permit exec and read
    with connect(rc) as m:
        m.edit_config(target="running", config=nacm(rule("no-reset", RECEIVER + "/sn:reset", "exec", "deny")))
    got = curl(rc, "POST", RESET_URI.format(100, "r1"), user=OPERATOR, accept=JSON)
    assert got.status == 403, got.body
    assert got.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "access-denied"


def test_the_registry_serves_any_handler_and_answers_ok_or_204_without_output(rc, pki, receiver):
    core = rc.handle.core
    seen = []
    with pytest.raises(ValueError):
        core.register_action(RESET_PATH, lambda sess, req: None)  # reset has its handler
    with pytest.raises(ValueError):
        core.register_action("/ietf-subscribed-notifications:subscriptions/subscription", lambda s, r: None)
    original = core.actions.handlers[RESET_PATH]
    core.actions.handlers[RESET_PATH] = lambda sess, req: seen.append(req.keys("receiver")) or None
    try:
        with connect(rc) as m:
            m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(100)))
            reply = m.dispatch(action(reset_at("0100", "r1")))  # canonical key values reach the handler
            assert etree.fromstring(reply.xml.encode()).find("{*}ok") is not None
        got = curl(rc, "POST", RESET_URI.format(100, "r1"))
        assert got.status == 204 and got.body == b"", got.body
        assert seen == [("r1",), ("r1",)]
    finally:
        core.actions.handlers[RESET_PATH] = original
