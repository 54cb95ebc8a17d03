"""Configured subscriptions (RFC 8639 §2.5, RFC 8641) pushed over HTTPS (draft-ietf-netconf-https-notif)
to a real receiver: aiohttp over TLS on loopback with a test CA, requiring mipha's client certificate.

- committed with ncclient: subscription-started, then push-change-update of configuration changes;
  the receiver goes away (suspended, events dropped and counted) and comes back
  (subscription-suspended, -resumed, then the whole selection); a change of its terms:
  subscription-modified; deleting it: subscription-terminated;
- committed with curl over RESTCONF, JSON encoded (the receiver's capabilities choose): subscription-started
  and the NETCONF stream's events;
- a slow receiver gets the on-change edits made meanwhile in one update (they wait, coalesced, while a
  POST is answered); a stream's events overflow its queue (suspended, dropped, resumed); a notification the receiver refuses
  (4xx) is dropped and the next goes; a receiver without a common encoding
  is disconnected; one whose certificate the configured CA does not sign gets nothing;
- pushed data is read with the receiver instance's NACM rights;
- bad configuration is refused with the standard error and changes nothing; NACM guards the writes.
"""

from __future__ import annotations

import json
import time

import pytest
from lxml import etree
from nc_server import connect
from ncclient.operations.rpc import RPCError
from notif_receiver import Receiver, make_pki
from rc_server import NS, OPERATOR, curl
from test_restconf import JSON, seed

SN = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
SNR = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notif-receivers"
HN = "urn:mipha:yang:mipha-https-notif"
YP = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
Q = {"sn": SN, "snr": SNR, "hn": HN, "yp": YP, "m": NS}
SUBS = "/restconf/data/ietf-subscribed-notifications:subscriptions"


def instance(pki, port: int, name: str = "collector", ca: str | None = None) -> str:
    return (
        f'<receiver-instances xmlns="{SNR}"><receiver-instance><name>{name}</name>'
        f'<https-receiver xmlns="{HN}"><remote-address>127.0.0.1</remote-address>'
        f"<remote-port>{port}</remote-port><path>/collector</path>"
        f"<ca-certificate>{ca or pki['ca']}</ca-certificate>"
        f"<client-certificate>{pki['mipha']}</client-certificate></https-receiver>"
        "</receiver-instance></receiver-instances>"
    )


def on_change_sub(sid: int, ref: str = "collector", period: str = "") -> str:
    trigger = (
        f"<yp:periodic><yp:period>{period}</yp:period></yp:periodic>"
        if period
        else "<yp:on-change><yp:sync-on-start>false</yp:sync-on-start></yp:on-change>"
    )
    return (
        f'<subscription xmlns:yp="{YP}"><id>{sid}</id>'
        f'<transport xmlns:hn="{HN}">hn:https</transport><yp:datastore xmlns:ds="{DS}">ds:running</yp:datastore>'
        f'<yp:datastore-xpath-filter xmlns:m="{NS}">/m:virtual-routers</yp:datastore-xpath-filter>'
        f"{trigger}<purpose>tests</purpose><receivers><receiver><name>r1</name>"
        f'<receiver-instance-ref xmlns="{SNR}">{ref}</receiver-instance-ref></receiver></receivers></subscription>'
    )


def config(inner: str) -> str:
    return f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><subscriptions xmlns="{SN}">{inner}</subscriptions></config>'


def vr(name: str) -> str:
    return (
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{NS}">'
        f"<virtual-router><name>{name}</name><home-agent><address>192.0.2.1</address></home-agent>"
        "</virtual-router></virtual-routers></config>"
    )


def receiver_state(m, sid: int) -> dict[str, str]:
    flt = f'<subscriptions xmlns="{SN}"><subscription><id>{sid}</id></subscription></subscriptions>'
    data = m.get(filter=("subtree", flt)).data_ele
    r = data.find(".//sn:subscription/sn:receivers/sn:receiver", Q)
    if r is None:
        return {}
    out = {etree.QName(c).localname: (c.text or "") for c in r}
    out["configured"] = data.findtext(".//sn:configured-subscription-state", namespaces=Q) or ""
    return out


def poll(fn, pred, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if pred(value):
            return value
        assert time.monotonic() < deadline, value
        time.sleep(0.05)


def test_netconf_configured_subscription_over_https_survives_the_receiver_going_away(rc, pki, receiver):
    with connect(rc) as m:
        m.edit_config(target="running", config=vr("base"))
        m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(100)))
        (started,) = receiver.wait_kind("subscription-started")
        assert receiver.capability_reads >= 1
        assert started.client == "mipha" and started.ctype == "application/xml"  # mipha's certificate
        body = started.xml()
        assert body.findtext(".//sn:id", namespaces=Q) == "100"
        assert body.findtext(".//sn:purpose", namespaces=Q) == "tests"
        assert body.find(".//sn:subscription-started/yp:on-change", Q) is not None
        assert body.findtext(".//sn:transport", namespaces=Q).endswith(":https")

        m.edit_config(target="running", config=vr("blue"))
        posts = receiver.wait_kind("push-change-update")
        (edit,) = posts[-1].xml().iterfind(".//yp:edit", Q)
        assert edit.findtext("yp:operation", namespaces=Q) == "create"
        assert edit.findtext("yp:target", namespaces=Q).endswith("virtual-router=blue")
        state = poll(lambda: receiver_state(m, 100), lambda s: s.get("sent-event-records") == "1")
        assert state["state"] == "active" and state["configured"] == "valid", state
        assert state["excluded-event-records"] == "0" and state["dropped-event-records"] == "0", state

        receiver.stop()  # the collector goes away: the next event cannot be delivered
        m.edit_config(target="running", config=vr("green"))
        state = poll(lambda: receiver_state(m, 100), lambda s: s.get("state") == "suspended")
        assert int(state["dropped-event-records"]) >= 1, state
        m.edit_config(target="running", config=vr("red"))  # while suspended: not produced
        receiver.start()  # back on the same port: told what happened, then the whole selection
        receiver.wait_kind("push-update")
        posts = receiver.posts
        kinds = [p.kind() for p in posts]
        assert kinds[-3:] == ["subscription-suspended", "subscription-resumed", "push-update"], kinds
        suspended = posts[-3].xml()
        assert suspended.findtext(".//sn:reason", namespaces=Q) == "sn:unsupportable-volume"
        names = {n.text for n in posts[-1].xml().iterfind(".//m:virtual-router/m:name", Q)}
        assert names == {"base", "blue", "green", "red"}, names
        # (active again once subscription-resumed went out; the push-update counts as sent once the
        # receiver answered its POST, which may be after the receiver recorded it)
        state = poll(
            lambda: receiver_state(m, 100),
            lambda s: s.get("state") == "active" and int(s.get("sent-event-records") or 0) >= 2,
        )
        assert state["sent-event-records"] == "2", state  # the first update and the whole selection

        m.edit_config(
            target="running",
            config=config("<subscription><id>100</id><purpose>audit</purpose></subscription>"),
        )
        (modified,) = receiver.wait_kind("subscription-modified")
        assert modified.xml().findtext(".//sn:purpose", namespaces=Q) == "audit"
        assert modified.xml().find(".//sn:subscription-modified/yp:datastore-xpath-filter", Q) is not None
        m.edit_config(target="running", config=vr("white"))  # the new producer pushes
        (edit,) = receiver.wait_kind("push-change-update", 2)[-1].xml().iterfind(".//yp:edit", Q)
        assert edit.findtext("yp:target", namespaces=Q).endswith("virtual-router=white")

        delete = '<subscription xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" nc:operation="delete"><id>100</id></subscription>'
        m.edit_config(target="running", config=config(delete))
        (term,) = receiver.wait_kind("subscription-terminated")
        assert term.xml().findtext(".//sn:reason", namespaces=Q) == "sn:no-such-subscription"
        assert receiver_state(m, 100) == {}


@pytest.mark.parametrize("configured", [False, True], ids=["capabilities-choose", "encode-json"])
def test_restconf_configured_stream_subscription_in_json(rc, pki, configured):
    """Without an encoding the receiver's capabilities choose (this one takes JSON only); a configured
    encode-json wins over the XML a receiver offers first."""
    receiver = Receiver(pki, encodings=("xml", "json") if configured else ("json",))
    try:
        _restconf_json(rc, pki, receiver, configured)
    finally:
        receiver.close()


def _restconf_json(rc, pki, receiver, configured: bool):
    body = {
        "ietf-subscribed-notifications:subscriptions": {
            "ietf-subscribed-notif-receivers:receiver-instances": {
                "receiver-instance": [
                    {
                        "name": "collector",
                        "mipha-https-notif:https-receiver": {
                            "remote-address": "127.0.0.1",
                            "remote-port": receiver.port,
                            "path": "/collector",
                            "ca-certificate": str(pki["ca"]),
                            "client-certificate": str(pki["mipha"]),
                        },
                    }
                ]
            },
            "subscription": [
                {
                    "id": 7,
                    "transport": "mipha-https-notif:https",
                    "stream": "NETCONF",
                    "receivers": {
                        "receiver": [
                            {
                                "name": "r",
                                "ietf-subscribed-notif-receivers:receiver-instance-ref": "collector",
                            }
                        ]
                    },
                }
            ],
        }
    }
    if configured:  # RFC 7951: an identity of the leaf's own module needs no module name
        body["ietf-subscribed-notifications:subscriptions"]["subscription"][0]["encoding"] = "encode-json"
    r = curl(rc, "PUT", SUBS, json.dumps(body), ctype=JSON)
    assert r.status in (201, 204), r.body
    (started,) = receiver.wait_kind("subscription-started")
    assert started.ctype == "application/json"
    note = started.json()["ietf-restconf:notification"]
    assert note["ietf-subscribed-notifications:subscription-started"]["id"] == 7
    seed(rc)  # a configuration change: the NETCONF stream's netconf-config-change
    (change,) = receiver.wait_kind("netconf-config-change")
    event = change.json()["ietf-restconf:notification"]["ietf-netconf-notifications:netconf-config-change"]
    assert event["changed-by"]["username"] == "admin"

    def receiver_row() -> dict:
        r = curl(rc, "GET", SUBS + "/subscription=7/receivers", accept=JSON)
        (row,) = r.json()["ietf-subscribed-notifications:receivers"]["receiver"]
        return row

    # counted as sent once the receiver answered the POST, which may be after the receiver recorded it
    row = poll(receiver_row, lambda row: int(row.get("sent-event-records") or 0) >= 1)
    assert row["state"] == "active" and row["sent-event-records"] == "1", row


def test_bad_configuration_is_refused_and_changes_nothing(rc, pki, receiver):
    with connect(rc) as m:
        before = etree.tostring(m.get_config(source="running").data_ele)
        with pytest.raises(RPCError) as err:
            m.edit_config(
                target="running", config=config(instance(pki, receiver.port) + on_change_sub(1, "nope"))
            )
        e = err.value
        assert (e.tag, e.app_tag) == ("data-missing", "instance-required"), e.xml
        assert e.path.strip() == (
            "/sn:subscriptions/sn:subscription[sn:id='1']/sn:receivers/sn:receiver[sn:name='r1']"
            "/snr:receiver-instance-ref"
        )
        with pytest.raises(RPCError) as err:
            bad = instance(pki, receiver.port) + on_change_sub(2, period="5")
            m.edit_config(target="running", config=config(bad))
        e = err.value
        assert (e.tag, e.app_tag) == ("invalid-value", "ietf-yang-push:period-unsupported"), e.xml
        assert e.path.strip() == "/sn:subscriptions/sn:subscription[sn:id='2']"
        assert etree.tostring(m.get_config(source="running").data_ele) == before
    with connect(rc, OPERATOR) as m, pytest.raises(RPCError) as err:  # NACM: write-default deny
        m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(4)))
    assert err.value.tag == "access-denied", err.value.xml
    r = curl(
        rc,
        "PUT",
        SUBS,
        json.dumps(
            {
                "ietf-subscribed-notifications:subscriptions": {
                    "subscription": [
                        {"id": 3, "stream": "NETCONF", "receivers": {"receiver": [{"name": "r"}]}}
                    ]
                }
            }
        ),
        ctype=JSON,
    )
    (e,) = r.json()["ietf-restconf:errors"]["error"]
    assert r.status == 409 and e["error-tag"] == "data-missing", r.body  # no transport
    assert receiver.posts == []


def test_a_receiver_whose_certificate_the_ca_does_not_sign_gets_nothing(rc, pki, receiver, tmp_path):
    other = make_pki(tmp_path / "other")
    with connect(rc) as m:
        m.edit_config(
            target="running",
            config=config(instance(pki, receiver.port, ca=str(other["ca"])) + on_change_sub(9)),
        )
        time.sleep(1.0)  # several attempts (backoff from 0.1 s): none may reach the receiver
        assert receiver.posts == [] and receiver.capability_reads == 0
        assert receiver_state(m, 9)["state"] == "connecting"


def stream_sub(sid: int, ref: str = "collector") -> str:
    return (
        f'<subscription><id>{sid}</id><transport xmlns:hn="{HN}">hn:https</transport><stream>NETCONF</stream>'
        f"<receivers><receiver><name>r1</name>"
        f'<receiver-instance-ref xmlns="{SNR}">{ref}</receiver-instance-ref></receiver></receivers></subscription>'
    )


def patch_targets(post) -> list[str]:
    return [t.text or "" for t in post.xml().iter(f"{{{YP}}}target")]


def test_a_slow_receiver_gets_the_changes_made_meanwhile_in_one_update(rc, pki, monkeypatch):
    """On-change edits wait (coalesced per target) while a POST is answered, and go in one
    push-change-update when it is: nothing queues up behind a slow receiver, nothing is dropped,
    even with a queue of 2 that 3 separate updates would overflow."""
    from server import https_notif

    monkeypatch.setattr(https_notif, "QUEUE_LIMIT", 2)
    receiver = Receiver(pki)
    try:
        with connect(rc) as m:
            m.edit_config(target="running", config=vr("base"))
            m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(5)))
            receiver.wait_kind("subscription-started")
            receiver.hold()
            m.edit_config(target="running", config=vr("a"))
            receiver.wait(lambda _: receiver.arrived == 2, what="the update of a, held")
            for name in ("b", "c", "d"):
                m.edit_config(target="running", config=vr(name))
            time.sleep(0.3)  # what would have queued and overflowed had the edits not waited
            assert receiver_state(m, 5)["state"] == "active"
            receiver.release()
            first, second = receiver.wait_kind("push-change-update", 2)
            assert [p.kind() for p in receiver.posts] == ["subscription-started", *["push-change-update"] * 2]
            assert [t.rsplit("=", 1)[-1] for t in patch_targets(first)] == ["a"]
            assert sorted(t.rsplit("=", 1)[-1] for t in patch_targets(second)) == ["b", "c", "d"]
            state = poll(lambda: receiver_state(m, 5), lambda s: s.get("sent-event-records") == "2")
            assert state["dropped-event-records"] == "0" and state["state"] == "active", state
    finally:
        receiver.close()


def test_a_slow_receiver_is_suspended_when_its_queue_overflows(rc, pki, monkeypatch):
    """Stream events queue while a POST is answered; past the queue's limit they are dropped and
    counted, the receiver hears subscription-suspended, then -resumed, and later events flow again."""
    from server import https_notif

    monkeypatch.setattr(https_notif, "QUEUE_LIMIT", 2)
    receiver = Receiver(pki)
    try:
        with connect(rc) as m:
            m.edit_config(target="running", config=config(instance(pki, receiver.port) + stream_sub(5)))
            receiver.wait_kind("subscription-started")
            receiver.hold()
            m.edit_config(target="running", config=vr("a"))  # each edit: one netconf-config-change
            receiver.wait(lambda _: receiver.arrived == 2, what="the event of a, held")
            for name in ("b", "c", "d"):  # b queues behind a, c overflows, d is not produced (paused)
                m.edit_config(target="running", config=vr(name))
            state = poll(lambda: receiver_state(m, 5), lambda s: s.get("state") == "suspended")
            assert state["dropped-event-records"] == "2", state  # b and c; a, in flight, is answered later
            receiver.release()
            receiver.wait_kind("subscription-resumed")
            m.edit_config(target="running", config=vr("e"))
            receiver.wait_kind("netconf-config-change", 2)
            kinds = [p.kind() for p in receiver.posts]
            assert kinds == [
                "subscription-started",
                "netconf-config-change",
                "subscription-suspended",
                "subscription-resumed",
                "netconf-config-change",
            ], kinds
            state = poll(lambda: receiver_state(m, 5), lambda s: s.get("sent-event-records") == "2")
            assert state["dropped-event-records"] == "2" and state["state"] == "active", state
    finally:
        receiver.close()


def test_a_receiver_without_a_common_encoding_is_disconnected(rc, pki):
    receiver = Receiver(pki, encodings=("cbor",))
    try:
        with connect(rc) as m:
            m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(6)))
            state = poll(lambda: receiver_state(m, 6), lambda s: s.get("state") == "disconnected")
            assert state["sent-event-records"] == "0", state
        assert receiver.capability_reads == 1 and receiver.posts == []
    finally:
        receiver.close()


def test_pushed_data_is_read_with_the_receiver_instance_nacm_rights(rc, pki, receiver):
    """The receiver instance's name is the NACM user the data is read as: a rule for it hides a subtree."""
    nacm = (
        '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm">'
        "<groups><group><name>collectors</name><user-name>collector</user-name></group></groups>"
        "<rule-list><name>collectors</name><group>collectors</group><rule><name>no-home-agent</name>"
        f'<path xmlns:m="{NS}">/m:virtual-routers/m:virtual-router/m:home-agent</path>'
        "<access-operations>read</access-operations><action>deny</action></rule></rule-list></nacm></config>"
    )
    with connect(rc) as m:
        m.edit_config(target="running", config=nacm)
        m.edit_config(target="running", config=vr("base"))
        m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(8)))
        receiver.wait_kind("subscription-started")
        m.edit_config(target="running", config=vr("blue"))
        (update,) = receiver.wait_kind("push-change-update")
        value = update.xml().find(".//yp:value/m:virtual-router", Q)
        assert value.findtext("m:name", namespaces=Q) == "blue"
        assert value.find("m:home-agent", Q) is None, etree.tostring(value)


def test_a_commit_elsewhere_does_not_copy_running(rc, pki, receiver, monkeypatch):
    """With configured subscriptions in place, a commit that touches neither /sn:subscriptions nor
    /sn:filters is told apart by its recorded changes: the old running (a copy of 100k mobile nodes
    in production) is never built for it."""
    ds = rc.handle.core.ds
    built = []
    original = ds._old_of
    monkeypatch.setattr(ds, "_old_of", lambda log: built.append(1) or original(log))
    with connect(rc) as m:
        m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(11)))
        receiver.wait_kind("subscription-started")
        m.edit_config(target="running", config=vr("blue"))
        receiver.wait_kind("push-change-update")
    assert built == []


def test_a_notification_the_receiver_refuses_is_dropped_and_the_next_goes(rc, pki, receiver):
    with connect(rc) as m:
        m.edit_config(target="running", config=vr("base"))
        m.edit_config(target="running", config=config(instance(pki, receiver.port) + on_change_sub(12)))
        receiver.wait_kind("subscription-started")
        receiver.refuse = True
        m.edit_config(target="running", config=vr("blue"))
        state = poll(lambda: receiver_state(m, 12), lambda s: s.get("dropped-event-records") == "1")
        assert state["state"] == "active" and state["sent-event-records"] == "0", state
        receiver.refuse = False
        m.edit_config(target="running", config=vr("green"))
        (update,) = receiver.wait_kind("push-change-update")
        (edit,) = update.xml().iterfind(".//yp:edit", Q)
        assert edit.findtext("yp:target", namespaces=Q).endswith("virtual-router=green")
