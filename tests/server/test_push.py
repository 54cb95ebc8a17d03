"""RFC 8639 / RFC 8641 dynamic subscriptions on in-process sessions: rpcs, errors, on-change of
configuration with NACM, periodic timing, and the same over real SSH with the raw client."""

from __future__ import annotations

import itertools
import time

import libyang
import pytest
from lxml import etree
from nc_harness import HA, NS, Harness, edit, errors, mn, vr
from nc_rawclient import RawClient
from nc_server import ADMIN

from server.xmlns import NC_NS

SN = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
YP = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
Q = {"sn": SN, "yp": YP, "m": NS["m"], "n": "urn:ietf:params:xml:ns:netconf:notification:1.0"}


def establish(inner: str) -> str:
    return f'<establish-subscription xmlns="{SN}" xmlns:yp="{YP}" xmlns:ds="{DS}">{inner}</establish-subscription>'


def on_change(datastore: str = "running", extra: str = "", damp: int = 0, sync: bool = False) -> str:
    return establish(
        f"<yp:datastore>ds:{datastore}</yp:datastore>{extra}<yp:on-change>"
        f"<yp:dampening-period>{damp}</yp:dampening-period>"
        f"<yp:sync-on-start>{str(sync).lower()}</yp:sync-on-start></yp:on-change>"
    )


def periodic(period: int, extra: str = "", datastore: str = "operational") -> str:
    return establish(
        f"<yp:datastore>ds:{datastore}</yp:datastore>{extra}<yp:periodic><yp:period>{period}</yp:period></yp:periodic>"
    )


def sub_id(reply: etree._Element) -> int:
    el = reply.find("sn:id", Q)
    assert el is not None, etree.tostring(reply).decode()
    return int(el.text)


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


def call(client, body: str) -> etree._Element:
    """The reply to one rpc; notifications that come first are kept for `wait_for`."""
    client.send_rpc(body)
    held = client.__dict__.setdefault("held", [])
    while True:
        msg = client.reply()
        if msg.tag == f"{{{NC_NS}}}rpc-reply":
            return msg
        held.append(msg)


def ok(client, body: str) -> None:
    reply = call(client, body)
    assert reply.find(f"{{{NC_NS}}}ok") is not None, etree.tostring(reply).decode()


def wait_for(h: Harness, client, name: str, limit: float = 30.0) -> list[etree._Element]:
    """Run the loop until `client` got a notification holding `name`; returns what arrived."""
    got: list[etree._Element] = client.__dict__.pop("held", [])

    def seen() -> bool:
        got.extend(client.pending())
        return any(n.find(f".//{{*}}{name}") is not None for n in got)

    h.run_until(seen, limit)
    return got


def edits(notes: list[etree._Element]) -> list[tuple[str, str, etree._Element | None]]:
    out = []
    for n in notes:
        for e in n.iterfind(".//yp:edit", Q):
            value = e.find("yp:value", Q)
            out.append(
                (
                    e.findtext("yp:operation", namespaces=Q),
                    e.findtext("yp:target", namespaces=Q),
                    value[0] if value is not None and len(value) else None,
                )
            )
    return out


def test_capabilities_advertise_only_implemented_features(h) -> None:
    caps = [c for c in h.core.capabilities if "ietf-subscribed-notifications" in c or "ietf-yang-push" in c]
    assert any("features=configured,encode-json,encode-xml,replay,subtree,xpath" in c for c in caps), caps
    assert any(c.endswith("module=ietf-yang-push&revision=2019-09-09&features=on-change") for c in caps), caps
    assert not any(f in c for c in caps for f in ("dscp", "qos", "interface-designation", "supports-vrf"))


def test_on_change_of_configuration_is_a_yang_patch_and_keys_reach_only_those_who_may_read_them(h) -> None:
    admin, oper = h.client(), h.client("oper", frozenset({"oper"}))
    a = sub_id(call(admin, on_change()))
    o = sub_id(call(oper, on_change()))
    ok(admin, edit(vr(HA + mn("mn-a", "10.0.0.5", 300))))
    for client, sid, key_seen in ((admin, a, True), (oper, o, False)):
        notes = wait_for(h, client, "push-change-update")
        (note,) = [n for n in notes if n.find(".//yp:push-change-update", Q) is not None]
        assert note.findtext(".//yp:id", namespaces=Q) == str(sid)
        ((op, target, value),) = edits([note])
        assert (op, target) == ("create", "/mipha-home-agent:virtual-routers")
        assert value.find(".//m:mobile-node/m:home-address", Q).text == "10.0.0.5"
        assert (value.find(".//m:security-association/m:key", Q) is not None) is key_seen
    ok(admin, edit(vr(mn("mn-a", "10.0.0.6"))))
    (change,) = edits(wait_for(h, admin, "push-change-update"))
    assert change[:2] == (
        "replace",
        "/mipha-home-agent:virtual-routers/virtual-router=default/mobile-node=mn-a/home-address",
    )
    assert change[2].text == "10.0.0.6"
    ok(
        admin,
        edit(
            vr(
                '<mobile-node xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" nc:operation="delete"><name>mn-a</name></mobile-node>'
            )
        ),
    )
    for client in (admin, oper):
        deleted = [e for e in edits(wait_for(h, client, "push-change-update")) if e[0] == "delete"]
        assert [t for _, t, _ in deleted] == [
            "/mipha-home-agent:virtual-routers/virtual-router=default/mobile-node=mn-a"
        ]


def test_a_rule_on_one_list_entry_hides_its_leaf_changes_and_leaves_the_rest_whole(h) -> None:
    """Changes a reader's rules do not touch go out whole (no tree built to prune); a change under an
    entry that a key-specific rule hides, or holding a default-deny-all leaf, does not reach it."""
    admin, oper = h.client(), h.client("oper", frozenset({"oper"}))
    ok(admin, edit(vr(HA + mn("shown", "10.0.0.5") + mn("hidden", "10.0.0.6"))))
    hide = (
        '<nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm" xmlns:m="urn:mipha:yang:mipha-home-agent">'
        "<rule-list><name>ops</name><group>oper</group><rule><name>hide</name>"
        "<path>/m:virtual-routers/m:virtual-router[m:name='default']/m:mobile-node[m:name='hidden']</path>"
        "<access-operations>read</access-operations><action>deny</action></rule></rule-list></nacm>"
    )
    ok(admin, edit(hide))
    a, o = sub_id(call(admin, on_change())), sub_id(call(oper, on_change()))
    ok(admin, edit(vr(mn("hidden", "10.0.0.16"))))
    ok(admin, edit(vr(mn("shown", "10.0.0.15"))))
    ok(admin, edit(vr(mn("new", "10.0.0.17", spi=300))))
    base = "/mipha-home-agent:virtual-routers/virtual-router=default/mobile-node="
    for client, sid, want in (
        (
            admin,
            a,
            [
                ("replace", base + "hidden/home-address"),
                ("replace", base + "shown/home-address"),
                ("create", base + "new"),
            ],
        ),
        (oper, o, [("replace", base + "shown/home-address"), ("create", base + "new")]),
    ):
        got: list[tuple] = []
        deadline = time.monotonic() + 10
        while len(got) < len(want) and time.monotonic() < deadline:
            notes = [
                n
                for n in wait_for(h, client, "push-change-update")
                if n.findtext(".//yp:id", namespaces=Q) == str(sid)
            ]
            got += edits(notes)
        assert [(op, target) for op, target, _ in got] == want
        created = got[-1][2]
        assert created.findtext(".//m:home-address", namespaces=Q) == "10.0.0.17"
        assert (created.find(".//m:security-association/m:key", Q) is not None) is (client is admin)


def test_subtree_filter_selects_what_is_pushed(h) -> None:
    c = h.client()
    flt = f'<yp:datastore-subtree-filter><virtual-routers xmlns="{NS["m"]}"><virtual-router><mobile-node><name>watched</name></mobile-node></virtual-router></virtual-routers></yp:datastore-subtree-filter>'
    sub_id(call(c, on_change(extra=flt)))
    ok(c, edit(vr(HA + mn("other", "10.0.0.7"))))
    ok(c, edit(vr(mn("watched", "10.0.0.8"))))
    notes = wait_for(h, c, "push-change-update")
    changes = edits(notes)
    assert [t for _, t, _ in changes] == [
        "/mipha-home-agent:virtual-routers/virtual-router=default/mobile-node=watched"
    ], changes


def test_dampening_coalesces_a_burst_into_one_update(h) -> None:
    c = h.client()
    sub_id(call(c, on_change(damp=50)))  # 0.5 s
    ok(c, edit(vr(HA)))
    first = wait_for(h, c, "push-change-update")
    started = h.loop.time()
    for i in range(5):
        ok(c, edit(vr(f"<router-id>10.0.0.{i + 10}</router-id>")))
    got = wait_for(h, c, "push-change-update")
    assert h.loop.time() - started >= 0.45
    updates = [n for n in got if n.find(".//yp:push-change-update", Q) is not None]
    assert len(updates) == 1 and len(first) >= 1
    ((_op, target, value),) = edits(updates)
    assert target.endswith("/router-id") and value.text == "10.0.0.14"


def test_periodic_updates_keep_their_period(h) -> None:
    c = h.client()
    sid = sub_id(
        call(
            c,
            periodic(
                20, f'<yp:datastore-xpath-filter xmlns:sn="{SN}">/sn:streams</yp:datastore-xpath-filter>'
            ),
        )
    )
    times: list[float] = []

    def collect() -> bool:
        for n in c.pending():
            if n.findtext(".//yp:push-update/yp:id", namespaces=Q) == str(sid):
                assert n.find(".//yp:datastore-contents/sn:streams/sn:stream", Q) is not None
                times.append(h.loop.time())
        return len(times) >= 6

    h.run_until(collect, 10)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.05 <= g <= 0.6 for g in gaps), gaps  # one late wakeup on a loaded box is not a wrong period
    assert 0.19 <= (times[-1] - times[0]) / (len(times) - 1) <= 0.25, gaps


def test_errors_carry_the_identity_and_hints(h) -> None:
    c = h.client()
    (e,) = errors(call(c, periodic(0)))
    assert e["error-tag"] == "invalid-value" and e["error-app-tag"] == "ietf-yang-push:period-unsupported"
    reply = call(c, periodic(5))
    info = reply.find(".//yp:establish-subscription-datastore-error-info", Q)
    assert info.findtext("yp:reason", namespaces=Q) == "yp:period-unsupported"
    assert info.findtext("yp:period-hint", namespaces=Q) == "10"
    (e,) = errors(
        call(
            c,
            on_change(
                "operational",
                '<yp:datastore-subtree-filter><netconf-state xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"/></yp:datastore-subtree-filter>',
            ),
        )
    )
    assert e["error-app-tag"] == "ietf-yang-push:on-change-unsupported"
    (e,) = errors(call(c, on_change("candidate")))
    assert e["error-app-tag"] == "ietf-yang-push:datastore-not-subscribable"
    (e,) = errors(call(c, periodic(100, "<yp:datastore-xpath-filter>/m:[</yp:datastore-xpath-filter>")))
    assert e["error-app-tag"] == "ietf-subscribed-notifications:filter-unsupported"
    (e,) = errors(
        call(c, establish(f'<stream>nope</stream><encoding xmlns:sn="{SN}">sn:encode-xml</encoding>'))
    )
    assert e["error-app-tag"] == "ietf-subscribed-notifications:stream-unavailable"
    (e,) = errors(
        call(c, establish(f'<stream>NETCONF</stream><encoding xmlns:sn="{SN}">sn:encode-json</encoding>'))
    )
    assert e["error-app-tag"] == "ietf-subscribed-notifications:encoding-unsupported"
    for rpc in ("delete-subscription", "kill-subscription"):
        reply = call(c, f'<{rpc} xmlns="{SN}"><id>999</id></{rpc}>')
        (e,) = errors(reply)
        assert e["error-app-tag"] == "ietf-subscribed-notifications:no-such-subscription"
        assert (
            reply.find(".//sn:delete-subscription-error-info/sn:reason", Q).text == "sn:no-such-subscription"
        )


def test_modify_delete_kill_and_session_end(h) -> None:
    owner, other = h.client(), h.client()
    oper = h.client("oper", frozenset({"oper"}))
    sid = sub_id(call(owner, periodic(100)))
    sid2 = sub_id(call(owner, establish("<stream>NETCONF</stream>")))
    (e,) = errors(call(other, f'<delete-subscription xmlns="{SN}"><id>{sid}</id></delete-subscription>'))
    assert e["error-app-tag"] == "ietf-subscribed-notifications:no-such-subscription"
    ok(
        owner,
        f'<modify-subscription xmlns="{SN}" xmlns:yp="{YP}"><id>{sid}</id><yp:periodic><yp:period>30</yp:period></yp:periodic></modify-subscription>',
    )
    got = wait_for(h, owner, "subscription-modified")
    mod = next(n for n in got if n.find(".//sn:subscription-modified", Q) is not None)
    assert mod.findtext(".//yp:period", namespaces=Q) == "30"
    (e,) = errors(call(oper, f'<kill-subscription xmlns="{SN}"><id>{sid2}</id></kill-subscription>'))
    assert e["error-tag"] == "access-denied"  # kill-subscription is nacm:default-deny-all
    ok(other, f'<kill-subscription xmlns="{SN}"><id>{sid2}</id></kill-subscription>')
    got = wait_for(h, owner, "subscription-terminated")
    term = next(n for n in got if n.find(".//sn:subscription-terminated", Q) is not None)
    assert term.findtext(".//sn:id", namespaces=Q) == str(sid2)
    assert term.findtext(".//sn:reason", namespaces=Q) == "sn:no-such-subscription"
    assert set(h.core.subscriptions.all) == {sid}
    ok(owner, "<close-session/>")
    assert h.core.subscriptions.all == {} and h.core.feed.jobs == []


def test_a_client_that_does_not_keep_up_is_suspended_then_resynchronised(h) -> None:
    c = h.client()
    sid = sub_id(call(c, on_change()))
    c.sess.flow_paused()  # what the SSH channel reports above its high-water mark
    suspended = wait_for(h, c, "subscription-suspended")[-1]
    assert suspended.findtext(".//sn:reason", namespaces=Q) == "sn:unsupportable-volume"
    ok(h.client(), edit(vr(HA)))  # a change while suspended: not sent
    listing = call(h.client(), f'<get><filter><subscriptions xmlns="{SN}"/></filter></get>')
    assert listing.findtext(".//sn:receiver/sn:state", namespaces=Q) == "suspended"
    assert not [n for n in c.pending() if n.find(".//yp:push-change-update", Q) is not None]
    c.sess.flow_resumed()
    got = wait_for(h, c, "push-update")
    kinds = [etree.QName(n[1]).localname for n in got]
    assert kinds == ["subscription-resumed", "push-update"], kinds
    assert got[-1].findtext(".//yp:id", namespaces=Q) == str(sid)
    assert got[-1].find(".//yp:datastore-contents/m:virtual-routers", Q) is not None  # the whole selection


def test_stream_subscription_with_replay_and_filter(h) -> None:
    c = h.client()
    h.client().ok("<close-session/>")  # a netconf-session-end in the log
    start = "2000-01-01T00:00:00Z"
    flt = '<stream-subtree-filter><netconf-session-end xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"/></stream-subtree-filter>'
    reply = call(c, establish(f"<stream>NETCONF</stream>{flt}<replay-start-time>{start}</replay-start-time>"))
    sid = sub_id(reply)
    assert reply.find("sn:replay-start-time-revision", Q) is not None
    got = wait_for(h, c, "replay-completed")
    kinds = [etree.QName(n[1]).localname for n in got]
    assert kinds == ["netconf-session-end", "replay-completed"], kinds
    assert got[-1].findtext(".//sn:id", namespaces=Q) == str(sid)


def test_a_configured_subscription_without_transport_is_refused(h) -> None:
    """Configured subscriptions are tests/server/test_configured.py's; one without a transport (RFC 8639:
    mandatory in configuration) loses nothing."""
    c = h.client()
    body = (
        f'<subscriptions xmlns="{SN}"><subscription><id>7</id><stream>NETCONF</stream>'
        "<receivers><receiver><name>r</name></receiver></receivers></subscription></subscriptions>"
    )
    (e,) = errors(call(c, edit(body)))
    assert (e["error-tag"], e["error-app-tag"]) == ("data-missing", "missing-element"), e
    assert e["error-path"] == "/sn:subscriptions/sn:subscription[sn:id='7']", e
    assert h.core.ds.running.find(f"{{{SN}}}subscriptions") is None


def test_over_ssh_with_the_raw_client(server) -> None:
    """The same exchange on a real SSH session: reply first, then push-update, periodic timing."""
    client = RawClient(server.port, *ADMIN)
    try:
        reply = etree.fromstring(
            client.rpc(
                periodic(
                    25, f'<yp:datastore-xpath-filter xmlns:sn="{SN}">/sn:streams</yp:datastore-xpath-filter>'
                )
            )
        )
        sid = sub_id(reply)
        stamps = []
        while len(stamps) < 9:  # 8 periods: one late wake-up on a loaded box moves the mean little
            note = etree.fromstring(client.recv())
            assert note.tag == f"{{{Q['n']}}}notification"
            assert note.findtext(".//yp:push-update/yp:id", namespaces=Q) == str(sid)
            stamps.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert 0.2 <= sum(gaps) / len(gaps) <= 0.35, gaps
        reply = etree.fromstring(
            client.rpc(f'<delete-subscription xmlns="{SN}"><id>{sid}</id></delete-subscription>', "2")
        )
        while reply.tag != f"{{{NC_NS}}}rpc-reply":  # updates already on the way come first
            reply = etree.fromstring(client.recv())
        assert reply.find(f"{{{NC_NS}}}ok") is not None
    finally:
        client.close()


def test_every_notification_sent_validates_against_the_modules(h) -> None:
    """push-update, push-change-update (YANG Patch) and the subscription state notifications parse as
    YANG notifications of ietf-yang-push / ietf-subscribed-notifications (libyang)."""
    c = h.client()
    sid = sub_id(call(c, on_change(sync=True, damp=10)))
    ok(c, edit(vr(HA + mn("v", "10.0.0.9", 300))))
    ok(c, edit(vr(mn("v", "10.0.0.10"))))
    ok(
        c,
        f'<modify-subscription xmlns="{SN}" xmlns:yp="{YP}"><id>{sid}</id><yp:on-change><yp:dampening-period>0</yp:dampening-period></yp:on-change></modify-subscription>',
    )
    c.sess.flow_paused()
    c.sess.flow_resumed()
    replayed = sub_id(
        call(
            c,
            establish("<stream>NETCONF</stream><replay-start-time>2000-01-01T00:00:00Z</replay-start-time>"),
        )
    )
    ok(c, f'<delete-subscription xmlns="{SN}"><id>{replayed}</id></delete-subscription>')
    got = wait_for(h, c, "subscription-terminated")
    kinds = {etree.QName(n[1]).localname for n in got}
    assert kinds >= {
        "push-update",
        "push-change-update",
        "subscription-modified",
        "subscription-suspended",
        "subscription-resumed",
        "replay-completed",
        "subscription-terminated",
    }, kinds
    ctx = h.core.schema.ctx
    for note in got:
        node = ctx.parse_op_mem("xml", etree.tostring(note).decode(), dtype=libyang.DataType.NOTIF_NETCONF)
        node.free()


def test_xpath_filter_and_excluded_changes(h) -> None:
    c = h.client()
    ok(c, edit(vr(HA + mn("x", "10.0.0.20") + mn("y", "10.0.0.21"))))
    xpath = (
        f'<yp:datastore-xpath-filter xmlns:m="{NS["m"]}">'
        "/m:virtual-routers/m:virtual-router/m:mobile-node[m:name='x']/m:home-address</yp:datastore-xpath-filter>"
    )
    body = on_change(extra=xpath).replace(
        "</yp:on-change>", "<yp:excluded-change>delete</yp:excluded-change></yp:on-change>"
    )
    sub_id(call(c, body))
    ok(c, edit(vr(mn("y", "10.0.0.31"))))  # not selected
    ok(c, edit(vr(mn("x", "10.0.0.30"))))
    (change,) = edits(wait_for(h, c, "push-change-update"))
    assert change[:2] == (
        "replace",
        "/mipha-home-agent:virtual-routers/virtual-router=default/mobile-node=x/home-address",
    )
    ok(
        c,
        edit(
            vr(
                '<mobile-node xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" nc:operation="delete"><name>x</name></mobile-node>'
            )
        ),
    )
    ok(c, edit(vr(mn("x", "10.0.0.40"))))  # created again: a create, the delete before it excluded
    changes = edits(wait_for(h, c, "push-change-update"))
    assert [op for op, _, _ in changes] == ["create"], changes


def test_streams_and_subscriptions_state_parses_against_the_modules(h) -> None:
    c = h.client()
    sub_id(
        call(
            c,
            periodic(
                100, f'<yp:datastore-xpath-filter xmlns:sn="{SN}">/sn:streams</yp:datastore-xpath-filter>'
            ),
        )
    )
    sub_id(call(c, on_change(damp=10)))
    flt = '<stream-subtree-filter><netconf-session-end xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"/></stream-subtree-filter>'
    sub_id(call(c, establish(f"<stream>NETCONF</stream>{flt}")))
    data = call(c, f'<get><filter><subscriptions xmlns="{SN}"/><streams xmlns="{SN}"/></filter></get>')[0]
    assert len(data.findall(".//sn:subscription", Q)) == 3
    for root in data:
        node = h.core.schema.ctx.parse_data_mem(
            etree.tostring(root).decode(), "xml", strict=True, parse_only=True
        )
        node.free()
