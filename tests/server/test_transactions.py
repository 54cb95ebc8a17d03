"""Config subscribers (validate → prepare → abort|apply), operational providers, get-data, notifications."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree
from nc_harness import HA, NS, Harness, edit, errors, mn, vr

from server.errors import RpcError
from server.operational import StateRequest
from server.subscribers import Transaction

M = NS["m"]
NOTIF = "urn:ietf:params:xml:ns:netconf:notification:1.0"


class Recorder:
    """A subscriber that logs every phase and can refuse in one of them."""

    def __init__(self, name: str, log: list, refuse_in: str | None = None) -> None:
        self.name, self.log, self.refuse_in = name, log, refuse_in

    def _step(self, phase: str, txn: Transaction) -> None:
        self.log.append((self.name, phase))
        if phase == self.refuse_in:
            raise RpcError("resource-denied", f"{self.name} refuses in {phase}", app_tag="no-room")

    def validate(self, txn):
        self._step("validate", txn)

    def prepare(self, txn):
        self._step("prepare", txn)

    def abort(self, txn):
        self._step("abort", txn)

    def apply(self, txn):
        self.log.append((self.name, "apply", [(c.op, c.path) for c in txn.diff]))


def test_subscribers_run_in_order_and_see_the_diff():
    log: list = []
    h = Harness(subscribers=[Recorder("a", log), Recorder("b", log)])
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("x", "10.0.0.5"))))
        assert log[:4] == [("a", "validate"), ("b", "validate"), ("a", "prepare"), ("b", "prepare")]
        assert log[4][:2] == ("a", "apply")
        assert ("created", "/mipha-home-agent:virtual-routers") in log[4][2]
        log.clear()
        c.ok(edit(vr(mn("x", "10.0.0.7"))))
        assert log[4][2] == [
            (
                "modified",
                "/mipha-home-agent:virtual-routers/mipha-home-agent:virtual-router[name='default']/mipha-home-agent:mobile-node[name='x']/mipha-home-agent:home-address",
            )
        ]
    finally:
        h.close()


class Keep:
    """Keeps each applied transaction's diff as plain tuples (the elements are live nodes)."""

    def __init__(self) -> None:
        self.diffs: list[list[tuple]] = []

    def validate(self, txn): ...
    def prepare(self, txn): ...
    def abort(self, txn): ...

    def apply(self, txn):
        self.diffs.append([(c.op, c.schema_path, c.keys, c.name, c.old_value, c.new_value) for c in txn.diff])


def test_diff_carries_schema_path_keys_and_values():
    keep = Keep()
    h = Harness(subscribers=[keep])
    P = "/mipha-home-agent:virtual-routers/mipha-home-agent:virtual-router"
    MN = P + "/mipha-home-agent:mobile-node"
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("x", "10.0.0.5"))))
        c.ok(edit(vr(mn("x", "10.0.0.7") + mn("y", "10.0.0.8"))))
        assert sorted(keep.diffs[1]) == [
            ("created", MN, (("default",), ("y",)), "mobile-node", None, None),
            (
                "modified",
                MN + "/mipha-home-agent:home-address",
                (("default",), ("x",)),
                "home-address",
                "10.0.0.5",
                "10.0.0.7",
            ),
        ]
        c.ok(
            edit(vr(f'<mobile-node xmlns:nc="{NS["nc"]}" nc:operation="delete"><name>y</name></mobile-node>'))
        )
        assert keep.diffs[2] == [("deleted", MN, (("default",), ("y",)), "mobile-node", None, None)]
    finally:
        h.close()


def test_refusal_in_prepare_aborts_prepared_only_and_keeps_datastore():
    log: list = []
    h = Harness(subscribers=[Recorder("a", log), Recorder("b", log, refuse_in="prepare"), Recorder("c", log)])
    try:
        c = h.client()
        r = c.rpc(edit(vr(HA)))
        assert errors(r) == [
            {
                "error-type": "application",
                "error-tag": "resource-denied",
                "error-severity": "error",
                "error-app-tag": "no-room",
                "error-message": "b refuses in prepare",
            }
        ]
        assert log == [
            ("a", "validate"),
            ("b", "validate"),
            ("c", "validate"),
            ("a", "prepare"),
            ("b", "prepare"),
            ("a", "abort"),
        ]
        assert len(h.core.ds.running) == 0
        assert not (h.state_dir / "running.xml").exists()
    finally:
        h.close()


def test_refusal_in_validate_prepares_nothing():
    log: list = []
    h = Harness(subscribers=[Recorder("a", log, refuse_in="validate"), Recorder("b", log)])
    try:
        c = h.client()
        assert errors(c.rpc(edit(vr(HA))))[0]["error-tag"] == "resource-denied"
        assert log == [("a", "validate")]
    finally:
        h.close()


def test_unexpected_subscriber_exception_is_operation_failed():
    class Broken(Recorder):
        def prepare(self, txn):
            raise ValueError("boom")

    h = Harness(subscribers=[Broken("x", [])])
    try:
        e = errors(h.client().rpc(edit(vr(HA))))[0]
        assert e["error-tag"] == "operation-failed" and "boom" in e["error-message"]
    finally:
        h.close()


class Bindings:
    """An operational provider: one binding under VR default, keyed filter pushed down."""

    roots = frozenset({(M, "virtual-routers")})

    def __init__(self) -> None:
        self.requests: list[StateRequest] = []

    def get_state(self, request: StateRequest) -> list[etree._Element]:
        self.requests.append(request)
        return [
            etree.fromstring(
                f'<virtual-routers xmlns="{M}"><virtual-router><name>default</name><home-agent><bindings><binding>'
                "<home-address>10.0.0.5</home-address><care-of-address>192.0.2.1</care-of-address><lifetime-granted>600</lifetime-granted>"
                "</binding></bindings></home-agent></virtual-router></virtual-routers>"
            )
        ]


def test_get_merges_state_and_passes_filter_to_provider():
    prov = Bindings()
    h = Harness(providers=[prov])
    try:
        c = h.client()
        c.ok(edit(vr(HA)))
        flt = f'<filter type="subtree"><virtual-routers xmlns="{M}"><virtual-router><home-agent><bindings/></home-agent></virtual-router></virtual-routers></filter>'
        d = c.data(f"<get>{flt}</get>")
        assert d.findtext(".//m:binding/m:care-of-address", namespaces=NS) == "192.0.2.1"
        assert d.find(".//m:home-agent/m:address", NS) is None
        assert prov.requests[-1].subtree is not None
        cfg = c.data("<get-config><source><running/></source></get-config>")
        assert cfg.find(".//m:bindings", NS) is None  # state never leaks into get-config
        # get-data on the operational datastore, config-filter=false keeps only state (and keys)
        nmda = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
        r = c.rpc(
            f'<get-data xmlns="{nmda}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores"><datastore>ds:operational</datastore><config-filter>false</config-filter></get-data>'
        )
        d = r.find(f"{{{nmda}}}data")
        assert d.findtext(".//m:binding/m:home-address", namespaces=NS) == "10.0.0.5"
        assert d.find(".//m:home-agent/m:address", NS) is None
        assert d.findtext(".//m:virtual-router/m:name", namespaces=NS) == "default"
        r = c.rpc(
            f'<get-data xmlns="{nmda}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores"><datastore>ds:running</datastore></get-data>'
        )
        assert r.find(f"{{{nmda}}}data").find(".//m:bindings", NS) is None
        r = c.rpc(
            f'<get-data xmlns="{nmda}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores"><datastore>ds:nope</datastore></get-data>'
        )
        assert errors(r)[0]["error-tag"] == "invalid-value"
    finally:
        h.close()


def test_monitoring_statistics_and_locks():
    h = Harness()
    try:
        c = h.client()
        c.rpc("<frob xmlns='urn:x'/>")
        c.ok("<lock><target><running/></target></lock>")
        d = c.data(
            "<get><filter><netconf-state xmlns='urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring'/></filter></get>"
        )
        mon = {"n": "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"}
        assert d.findtext(
            ".//n:datastore[n:name='running']/n:locks/n:global-lock/n:locked-by-session", namespaces=mon
        ) == str(c.sess.id)
        assert d.findtext(".//n:statistics/n:out-rpc-errors", namespaces=mon) == "1"
        assert d.findtext(".//n:session/n:in-rpcs", namespaces=mon) == "3"
        assert d.find(".//n:schema[n:identifier='mipha-home-agent']", mon) is not None
        r = c.rpc(
            "<get-schema xmlns='urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring'><identifier>nope</identifier></get-schema>"
        )
        assert errors(r)[0]["error-tag"] == "invalid-value"
    finally:
        h.close()


def test_subscription_replay_stop_time_and_errors():
    h = Harness()
    try:
        c = h.client()
        c.ok(edit(vr(HA)))
        sub = h.client()
        notif = "urn:ietf:params:xml:ns:netconf:notification:1.0"
        future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
        r = sub.rpc(
            f"<create-subscription xmlns='{notif}'><startTime>{future}</startTime></create-subscription>"
        )
        assert errors(r)[0]["error-tag"] == "bad-element"
        r = sub.rpc(
            f"<create-subscription xmlns='{notif}'><stopTime>2020-01-01T00:00:00Z</stopTime></create-subscription>"
        )
        assert errors(r)[0]["error-tag"] == "missing-element"
        r = sub.rpc(f"<create-subscription xmlns='{notif}'><stream>OTHER</stream></create-subscription>")
        assert errors(r)[0]["error-tag"] == "invalid-value"
        now = dt.datetime.now(dt.UTC).isoformat()
        sub.ok(
            f"<create-subscription xmlns='{notif}'><startTime>2000-01-01T00:00:00Z</startTime><stopTime>{now}</stopTime></create-subscription>"
        )
        h.advance(0.01)
        names = [etree.QName(n[1]).localname for n in sub.pending()]
        assert names[:3] == ["netconf-session-start", "netconf-config-change", "netconf-session-start"]
        assert names[-2:] == ["replayComplete", "notificationComplete"]
        assert (
            errors(sub.rpc(f"<create-subscription xmlns='{notif}'/>")) == []
        )  # the finished one can be replaced
    finally:
        h.close()


def test_notification_given_as_a_builder_is_built_once_and_only_when_needed():
    """The daemon publishes binding events as builders: nothing is built while nobody listens; a
    replay and a live subscriber share one build; the event time is the time of publication."""
    h = Harness()
    builds: list[str] = []

    def binding_created() -> etree._Element:
        builds.append("built")
        event = etree.Element(f"{{{M}}}binding-created")
        etree.SubElement(event, f"{{{M}}}virtual-router").text = "vr1"
        return event

    try:
        notif = "urn:ietf:params:xml:ns:netconf:notification:1.0"
        before = dt.datetime.now(dt.UTC)
        h.core.publish(binding_created)
        assert builds == []
        a, b = h.client(), h.client()
        a.ok(
            f"<create-subscription xmlns='{notif}'><startTime>2000-01-01T00:00:00Z</startTime></create-subscription>"
        )
        b.ok(
            f"<create-subscription xmlns='{notif}'><startTime>2000-01-01T00:00:00Z</startTime></create-subscription>"
        )
        h.advance(0.01)
        for sub in (a, b):
            (n,) = [n for n in sub.pending() if etree.QName(n[1]).localname == "binding-created"]
            assert n.findtext(f"{{{M}}}binding-created/{{{M}}}virtual-router") == "vr1"
            sent = dt.datetime.fromisoformat(n.findtext(f"{{{NOTIF}}}eventTime").replace("Z", "+00:00"))
            assert before <= sent <= dt.datetime.now(dt.UTC)
        assert builds == ["built"]
        h.core.publish(lambda: 1 / 0)  # a broken builder loses its event, nothing else
        h.advance(0.01)
        assert a.pending() == [] and not a.closed
        h.core.publish(binding_created)
        h.advance(0.01)
        assert [etree.QName(n[1]).localname for n in a.pending()] == ["binding-created"]
    finally:
        h.close()


def test_confirmed_commit_notifications():
    h = Harness()
    try:
        c = h.client()
        listener = h.client()
        listener.ok("<create-subscription xmlns='urn:ietf:params:xml:ns:netconf:notification:1.0'/>")
        h.advance(0.01)
        c.ok(edit(vr(HA), target="candidate"))
        c.ok("<commit><confirmed/><confirm-timeout>1</confirm-timeout></commit>")
        h.advance(1.3)
        ncn = "{urn:ietf:params:xml:ns:yang:ietf-netconf-notifications}"
        events = [n[1] for n in listener.pending()]
        cc = [e.findtext(f"{ncn}confirm-event") for e in events if e.tag == f"{ncn}netconf-confirmed-commit"]
        assert cc == ["start", "timeout"]
    finally:
        h.close()


@pytest.mark.parametrize("user,groups", [("admin", {"admin"})])
def test_get_with_xpath_over_state(user, groups):
    h = Harness(providers=[Bindings()])
    try:
        c = h.client(user, frozenset(groups))
        c.ok(edit(vr(HA)))
        d = c.data(f"<get><filter type='xpath' xmlns:q='{M}' select='//q:binding/q:lifetime-granted'/></get>")
        assert d.findtext(".//m:binding/m:lifetime-granted", namespaces=NS) == "600"
        assert d.findtext(".//m:binding/m:home-address", namespaces=NS) == "10.0.0.5"  # list keys kept
        assert d.find(".//m:router-id", NS) is None
    finally:
        h.close()


def test_provider_skipped_when_filter_excludes_its_roots():
    prov = Bindings()
    h = Harness(providers=[prov])
    try:
        c = h.client()
        c.data(
            "<get><filter><netconf-state xmlns='urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring'/></filter></get>"
        )
        assert prov.requests == []
        c.data("<get/>")
        assert len(prov.requests) == 1
    finally:
        h.close()


def test_registered_yang_rpc():
    h = Harness()
    try:
        calls = []

        def clear_bindings(sess, op):
            calls.append((sess.principal.user, op.findtext(f"{{{M}}}virtual-router")))
            out = etree.Element(f"{{{M}}}cleared")
            out.text = "3"
            return out

        h.core.register_rpc(M, "clear-bindings", clear_bindings)
        with pytest.raises(ValueError):
            h.core.register_rpc(M, "clear-bindings", clear_bindings)
        c = h.client()
        r = c.rpc(f"<clear-bindings xmlns='{M}'><virtual-router>default</virtual-router></clear-bindings>")
        assert r.findtext("m:cleared", namespaces=NS) == "3"
        assert calls == [("admin", "default")]
    finally:
        h.close()


def test_boot_from_startup_when_running_absent(tmp_path):
    h = Harness(state_dir=tmp_path)
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("s", "10.0.0.5"))))
        c.ok("<copy-config><target><startup/></target><source><running/></source></copy-config>")
    finally:
        h.close()
    (tmp_path / "running.xml").unlink()
    h = Harness(state_dir=tmp_path)
    try:
        d = h.client().data("<get-config><source><running/></source></get-config>")
        assert [e.text for e in d.iterfind(".//m:mobile-node/m:name", NS)] == ["s"]
    finally:
        h.close()


def test_yang_library_content_id_matches_capability():
    h = Harness()
    try:
        c = h.client()
        cap = next(x.text for x in c.hello.iterfind(".//nc:capability", NS) if "yang-library:1.1" in x.text)
        d = c.data(
            "<get><filter><yang-library xmlns='urn:ietf:params:xml:ns:yang:ietf-yang-library'/></filter></get>"
        )
        yl = {"yl": "urn:ietf:params:xml:ns:yang:ietf-yang-library"}
        cid = d.findtext(".//yl:yang-library/yl:content-id", namespaces=yl)
        assert cap.endswith(f"content-id={cid}") and cid == h.core.schema.content_id
        assert d.find(".//yl:module[yl:name='mipha-home-agent']", yl) is not None
    finally:
        h.close()


def test_unconfirmed_commit_reverted_after_restart(tmp_path):
    h = Harness(state_dir=tmp_path)
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("kept", "10.0.0.5"))))
        c.ok(edit(vr(mn("unconfirmed", "10.0.0.6")), target="candidate"))
        c.ok("<commit><confirmed/><persist>x</persist></commit>")
        assert (tmp_path / "rollback.xml").exists()
    finally:
        h.close()  # the server stops before anyone confirms
    h = Harness(state_dir=tmp_path)
    try:
        d = h.client().data("<get-config><source><running/></source></get-config>")
        assert [e.text for e in d.iterfind(".//m:mobile-node/m:name", NS)] == ["kept"]
        assert not (tmp_path / "rollback.xml").exists()
    finally:
        h.close()


def test_confirmed_then_confirmed_leaves_no_rollback_file(tmp_path):
    h = Harness(state_dir=tmp_path)
    try:
        c = h.client()
        c.ok(edit(vr(HA), target="candidate"))
        c.ok("<commit><confirmed/></commit>")
        c.ok("<commit/>")
        assert not (tmp_path / "rollback.xml").exists()
    finally:
        h.close()


def test_invalid_persisted_running_is_kept_aside(tmp_path):
    bad = (
        '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="urn:mipha:yang:mipha-home-agent">'
        "<virtual-router><name>x</name><mobile-node><name>m</name></mobile-node></virtual-router></virtual-routers></config>"
    )
    (tmp_path / "running.xml").write_text(bad)
    h = Harness(state_dir=tmp_path)
    try:
        assert len(h.core.ds.running) == 0
        kept = list(tmp_path.glob("running.invalid-*.xml"))
        assert len(kept) == 1 and kept[0].read_text() == bad
    finally:
        h.close()


def test_seed_only_on_first_start(tmp_path):
    doc = (
        '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
        + vr(HA + mn("seeded", "10.0.0.5"))
        + "</config>"
    ).encode()
    log: list = []
    h = Harness(state_dir=tmp_path, subscribers=[Recorder("engine", log)])
    try:
        assert h.core.seed(doc) is True
        assert log == []  # seed only installs it; replay_running brings the subscribers up
        assert (tmp_path / "startup.xml").exists() and (tmp_path / "running.xml").exists()
        h.loop.run_until_complete(h.core.replay_running())
        assert [e[:2] for e in log] == [("engine", "validate"), ("engine", "prepare"), ("engine", "apply")]
        assert ("created", "/mipha-home-agent:virtual-routers") in log[2][2]
    finally:
        h.close()
    h = Harness(state_dir=tmp_path)
    try:
        assert h.core.seed(doc.replace(b"seeded", b"other")) is False
        d = h.client().data("<get-config><source><running/></source></get-config>")
        assert [e.text for e in d.iterfind(".//m:mobile-node/m:name", NS)] == ["seeded"]
    finally:
        h.close()
    h = Harness(state_dir=tmp_path / "fresh")
    try:
        with pytest.raises(RpcError):
            h.core.seed(
                b'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
                + vr("<mobile-node><name>x</name></mobile-node>").encode()
                + b"</config>"
            )
        assert len(h.core.ds.running) == 0
    finally:
        h.close()


def test_get_data_max_depth_and_with_origin():
    h = Harness()
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
        nmda = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
        head = f'<get-data xmlns="{nmda}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores"><datastore>ds:running</datastore>'
        d = c.rpc(head + "<max-depth>2</max-depth></get-data>").find(f"{{{nmda}}}data")
        assert (
            etree.tostring(d[0]).decode()
            == f'<virtual-routers xmlns="{M}"><virtual-router/></virtual-routers>'
        )
        d = c.rpc(head + "<max-depth>unbounded</max-depth></get-data>").find(f"{{{nmda}}}data")
        assert d.find(".//m:mobile-node/m:home-address", NS) is not None
        assert errors(c.rpc(head + "<max-depth>0</max-depth></get-data>"))[0]["error-tag"] == "invalid-value"
        assert errors(c.rpc(head + "<with-origin/></get-data>"))[0]["error-tag"] == "operation-not-supported"
        # the datastore itself was not cut
        assert (
            c.data("<get-config><source><running/></source></get-config>").find(".//m:home-address", NS)
            is not None
        )
    finally:
        h.close()
