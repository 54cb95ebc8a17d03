"""RFC 6241 operations, in-process: exact replies and rpc-errors for each operation and option."""

from __future__ import annotations

import pytest
from lxml import etree
from nc_harness import HA, KEY, NS, Bare, Harness, cfg, edit, errors, mn, vr

M = NS["m"]


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


@pytest.fixture
def c(h):
    return h.client()


def running(c) -> str:
    d = c.data("<get-config><source><running/></source></get-config>")
    return etree.tostring(d).decode()


def names(c, source: str = "running") -> list[str]:
    d = c.data(f"<get-config><source><{source}/></source></get-config>")
    return [e.text for e in d.iterfind(".//m:mobile-node/m:name", NS)]


# -- hello --------------------------------------------------------------------------------------------
def test_hello_has_session_id_and_capabilities(c):
    caps = [x.text for x in c.hello.iterfind(".//nc:capability", NS)]
    assert c.hello.findtext("nc:session-id", namespaces=NS) == str(c.sess.id)
    for cap in (
        "urn:ietf:params:netconf:base:1.1",
        "urn:ietf:params:netconf:capability:candidate:1.0",
        "urn:ietf:params:netconf:capability:confirmed-commit:1.1",
        "urn:ietf:params:netconf:capability:validate:1.1",
        "urn:ietf:params:netconf:capability:xpath:1.0",
        "urn:ietf:params:netconf:capability:rollback-on-error:1.0",
        "urn:ietf:params:netconf:capability:notification:1.0",
    ):
        assert cap in caps
    # running is persistent (journal), the device does not boot from startup: no RFC 6241 §8.7 :startup
    assert not any(":capability:startup:" in x for x in caps)
    assert any(x.startswith(f"{M}?module=mipha-home-agent&revision=") for x in caps)
    assert any("with-defaults:1.0?basic-mode=explicit" in x for x in caps)


def test_bad_hello_closes_session(h):
    c = h.client()  # a normal client first, to prove others are unaffected
    bad = Bare(h)
    bad.sess.data_received(
        b"<hello xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'><capabilities/></hello>]]>]]>"
    )
    assert bad.closed
    assert h.core.stats.in_bad_hellos == 1
    c.ok(edit(vr(HA)))


def test_hello_with_session_id_closes_session(h):
    bad = Bare(h)
    bad.sess.data_received(
        b"<hello xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'><capabilities><capability>"
        b"urn:ietf:params:netconf:base:1.0</capability></capabilities><session-id>4</session-id></hello>]]>]]>"
    )
    assert bad.closed


def test_leading_whitespace_before_hello_is_fine(h):
    ok = Bare(h)
    ok.sess.data_received(
        b"\n  <?xml version='1.0'?><hello xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'><capabilities><capability>"
        b"urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>]]>]]>"
    )
    assert not ok.closed and ok.sess.hello_done and not ok.sess.framer.chunked


# -- rpc envelope errors --------------------------------------------------------------------------------
def test_missing_message_id(c):
    r = c.rpc("<get/>", attrs="")
    assert errors(r) == [
        {
            "error-type": "rpc",
            "error-tag": "missing-attribute",
            "error-severity": "error",
            "error-message": "rpc without message-id",
            "info": {"bad-attribute": "message-id", "bad-element": "rpc"},
        }
    ]


def test_malformed_xml(c):
    c.send(b"<rpc message-id='1' xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'><get></rpc>")
    r = etree.fromstring(c._next())
    e = errors(r)[0]
    assert (e["error-type"], e["error-tag"]) == ("rpc", "malformed-message")
    c.ok(edit(vr(HA)))  # the session survives


def test_reply_copies_rpc_attributes(c):
    r = c.rpc(
        "<get-config><source><running/></source></get-config>",
        attrs='message-id="x7" xmlns:e="urn:e" e:a="b"',
    )
    assert r.get("message-id") == "x7" and r.get("{urn:e}a") == "b"


def test_unknown_operation(c):
    e = errors(c.rpc('<frobnicate xmlns="urn:x"/>'))[0]
    assert e["error-tag"] == "operation-not-supported" and e["error-type"] == "protocol"


# -- edit-config ----------------------------------------------------------------------------------------
def test_merge_then_get_config_exact(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    assert running(c) == (
        '<data xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="urn:mipha:yang:mipha-home-agent">'
        "<virtual-router><name>default</name><router-id>10.0.0.1</router-id><home-agent><address>10.0.0.1</address>"
        "</home-agent><mobile-node><name>a</name><home-address>10.0.0.5</home-address></mobile-node></virtual-router>"
        "</virtual-routers></data>"
    )


def test_create_existing_is_data_exists_with_path(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    body = (
        f'<edit-config><target><running/></target><config><m:virtual-routers xmlns:m="{M}">'
        '<m:virtual-router><m:name>default</m:name><m:mobile-node nc:operation="create" '
        'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"><m:name>a</m:name>'
        "<m:home-address>10.0.0.6</m:home-address></m:mobile-node></m:virtual-router></m:virtual-routers></config>"
        "</edit-config>"
    )
    r = c.rpc(body)
    e = errors(r)[0]
    assert e["error-tag"] == "data-exists"
    assert (
        e["error-path"] == "/m:virtual-routers/m:virtual-router[m:name='default']/m:mobile-node[m:name='a']"
    )
    path_el = r.find(".//nc:error-path", NS)
    assert path_el.nsmap["m"] == M  # the prefix in error-path resolves to the request's namespace


def test_delete_missing_is_data_missing_remove_is_ok(c):
    c.ok(edit(vr(HA)))
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    e = errors(c.rpc(edit(vr(f'<mobile-node nc:operation="delete" {nc}><name>zz</name></mobile-node>'))))[0]
    assert e["error-tag"] == "data-missing"
    assert (
        e["error-path"]
        == "/mipha:virtual-routers/mipha:virtual-router[mipha:name='default']/mipha:mobile-node[mipha:name='zz']"
    )
    c.ok(edit(vr(f'<mobile-node nc:operation="remove" {nc}><name>zz</name></mobile-node>')))


def test_delete_existing(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5") + mn("b", "10.0.0.6"))))
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    c.ok(edit(vr(f'<mobile-node nc:operation="delete" {nc}><name>a</name></mobile-node>')))
    assert names(c) == ["b"]


def test_replace_list_entry_drops_unlisted_children(c):
    c.ok(
        edit(
            vr(
                HA
                + "<mobile-node><name>a</name><home-address>10.0.0.5</home-address><nai>a@x</nai></mobile-node>"
            )
        )
    )
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    c.ok(
        edit(
            vr(
                f'<mobile-node nc:operation="replace" {nc}><name>a</name><home-address>10.0.0.7</home-address></mobile-node>'
            )
        )
    )
    d = c.data("<get-config><source><running/></source></get-config>")
    node = d.find(".//m:mobile-node", NS)
    assert node.findtext("m:home-address", namespaces=NS) == "10.0.0.7"
    assert node.find("m:nai", NS) is None


def test_default_operation_replace_replaces_everything(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    c.ok(edit(vr(HA + mn("b", "10.0.0.6")), extra="<default-operation>replace</default-operation>"))
    assert names(c) == ["b"]


def test_default_operation_none_does_not_create(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    # merge of a leaf under none: nothing created for a missing entry
    c.ok(edit(vr(mn("b", "10.0.0.6")), extra="<default-operation>none</default-operation>"))
    assert names(c) == ["a"]
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    c.ok(
        edit(
            vr(f'<mobile-node><name>a</name><nai nc:operation="merge" {nc}>a@x</nai></mobile-node>'),
            extra="<default-operation>none</default-operation>",
        )
    )
    d = c.data("<get-config><source><running/></source></get-config>")
    assert d.findtext(".//m:mobile-node/m:nai", namespaces=NS) == "a@x"


def test_bad_operation_attribute(c):
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    e = errors(c.rpc(edit(vr(f'<mobile-node nc:operation="frob" {nc}><name>a</name></mobile-node>'))))[0]
    assert e["error-tag"] == "bad-attribute"
    assert e["info"] == {"bad-attribute": "operation", "bad-element": "mobile-node"}


def test_unknown_element(c):
    e = errors(c.rpc(edit(vr("<bogus>1</bogus>"))))[0]
    assert e["error-tag"] == "unknown-element" and e["info"] == {"bad-element": "bogus"}
    assert e["error-path"] == "/mipha:virtual-routers/mipha:virtual-router[mipha:name='default']"


def test_state_data_in_edit_rejected(c):
    e = errors(c.rpc(edit(vr("<home-agent><bindings/></home-agent>"))))[0]
    assert e["error-tag"] == "invalid-value"


def test_list_entry_without_key(c):
    e = errors(c.rpc(edit(vr("<mobile-node><home-address>10.0.0.5</home-address></mobile-node>"))))[0]
    assert e["error-tag"] == "missing-element" and e["info"] == {"bad-element": "name"}


def test_validation_error_reaches_client_and_datastore_unchanged(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    before = running(c)
    r = c.rpc(edit(vr(mn("b", "10.0.0.5"))))  # duplicate home-address: unique violation
    e = errors(r)[0]
    assert e["error-tag"] == "operation-failed" and e["error-app-tag"] == "data-not-unique"
    assert running(c) == before


def test_must_violation_app_tag(c):
    r = c.rpc(edit(vr("<mobile-node><name>x</name></mobile-node>")))
    tags = {(e["error-tag"], e.get("error-app-tag")) for e in errors(r)}
    assert ("operation-failed", "home-address-assignment") in tags


def test_error_option_stop_vs_continue_vs_rollback(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    body = vr(
        f'<mobile-node nc:operation="create" {nc}><name>a</name><home-address>10.0.0.9</home-address></mobile-node>'
        + mn("b", "10.0.0.6")
        + f'<mobile-node nc:operation="delete" {nc}><name>zz</name></mobile-node>'
    )
    r = c.rpc(edit(body, extra="<error-option>stop-on-error</error-option>"))
    assert [e["error-tag"] for e in errors(r)] == ["data-exists"]
    assert names(c) == ["a"]
    r = c.rpc(edit(body, extra="<error-option>rollback-on-error</error-option>"))
    assert [e["error-tag"] for e in errors(r)] == ["data-exists"]
    assert names(c) == ["a"]
    r = c.rpc(edit(body, extra="<error-option>continue-on-error</error-option>"))
    assert [e["error-tag"] for e in errors(r)] == ["data-exists", "data-missing"]
    assert names(c) == ["a", "b"]  # the good part was applied


def test_test_option_test_only_does_not_apply(c):
    c.ok(edit(vr(HA), extra="<test-option>test-only</test-option>"))
    assert names(c) == [] and len(c.data("<get-config><source><running/></source></get-config>")) == 0
    e = errors(
        c.rpc(
            edit(
                vr("<mobile-node><name>x</name></mobile-node>"), extra="<test-option>test-only</test-option>"
            )
        )
    )
    assert e  # invalid: must violation reported without applying


def test_test_option_set_on_candidate_skips_validation(c):
    c.ok(
        edit(
            vr("<mobile-node><name>x</name></mobile-node>"),
            target="candidate",
            extra="<test-option>set</test-option>",
        )
    )
    assert names(c, "candidate") == ["x"]
    r = c.rpc(edit(vr("<mobile-node><name>y</name></mobile-node>"), target="candidate"))
    assert errors(r)  # test-then-set validates
    assert errors(c.rpc("<commit/>"))  # and commit validates the whole candidate


def test_bad_enums_in_edit_parameters(c):
    for extra, el in (
        ("<default-operation>frob</default-operation>", "default-operation"),
        ("<test-option>frob</test-option>", "test-option"),
        ("<error-option>frob</error-option>", "error-option"),
    ):
        e = errors(c.rpc(edit(vr(HA), extra=extra)))[0]
        assert e["error-tag"] == "invalid-value" and e["info"] == {"bad-element": el}


def test_missing_target_and_config(c):
    assert errors(c.rpc("<edit-config><config/></edit-config>"))[0]["info"] == {"bad-element": "target"}
    assert errors(c.rpc("<edit-config><target><running/></target></edit-config>"))[0]["info"] == {
        "bad-element": "config"
    }


# -- candidate / commit / discard / validate ------------------------------------------------------------
def test_candidate_commit_and_discard(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5")), target="candidate"))
    assert names(c) == [] and names(c, "candidate") == ["a"]
    c.ok("<commit/>")
    assert names(c) == ["a"]
    c.ok(edit(vr(mn("b", "10.0.0.6")), target="candidate"))
    c.ok("<discard-changes/>")
    assert names(c, "candidate") == ["a"]


def test_validate_sources(c):
    c.ok("<validate><source><running/></source></validate>")
    c.ok(f"<validate><source>{cfg(vr(HA))}</source></validate>")
    e = errors(
        c.rpc(f"<validate><source>{cfg(vr('<mobile-node><name>x</name></mobile-node>'))}</source></validate>")
    )
    assert e and e[0]["error-tag"] == "operation-failed"
    c.ok(
        edit(
            vr("<mobile-node><name>x</name></mobile-node>"),
            target="candidate",
            extra="<test-option>set</test-option>",
        )
    )
    assert errors(c.rpc("<validate><source><candidate/></source></validate>"))


# -- copy-config / delete-config / startup ----------------------------------------------------------------
def test_copy_config_running_to_startup_and_back(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    c.ok("<copy-config><target><startup/></target><source><running/></source></copy-config>")
    assert names(c, "startup") == ["a"]
    assert (h.state_dir / "startup.xml").exists()
    c.ok(edit(vr(mn("b", "10.0.0.6"))))
    c.ok("<copy-config><target><running/></target><source><startup/></source></copy-config>")
    assert names(c) == ["a"]
    c.ok("<delete-config><target><startup/></target></delete-config>")
    assert names(c, "startup") == [] and not (h.state_dir / "startup.xml").exists()


def test_copy_config_inline_and_errors(c):
    c.ok(
        f"<copy-config><target><candidate/></target><source>{cfg(vr(HA + mn('z', '10.0.0.9')))}</source></copy-config>"
    )
    assert names(c, "candidate") == ["z"]
    e = errors(c.rpc("<copy-config><target><running/></target><source><running/></source></copy-config>"))[0]
    assert e["error-tag"] == "invalid-value"
    e = errors(
        c.rpc("<copy-config><target><running/></target><source><url>file:///x</url></source></copy-config>")
    )[0]
    assert e["error-tag"] == "operation-not-supported"


def test_delete_config_running_refused(c):
    e = errors(c.rpc("<delete-config><target><running/></target></delete-config>"))[0]
    assert e["error-tag"] == "operation-not-supported"


# -- locks ---------------------------------------------------------------------------------------------------
def test_lock_denied_carries_holder_session_id(h, c):
    c2 = h.client()
    c.ok("<lock><target><running/></target></lock>")
    r = c2.rpc("<lock><target><running/></target></lock>")
    assert errors(r) == [
        {
            "error-type": "protocol",
            "error-tag": "lock-denied",
            "error-severity": "error",
            "error-message": f"running is already locked by session {c.sess.id}",
            "info": {"session-id": str(c.sess.id)},
        }
    ]
    e = errors(c2.rpc(edit(vr(HA))))[0]
    assert e["error-tag"] == "in-use" and e["info"] == {"session-id": str(c.sess.id)}
    e = errors(c2.rpc("<unlock><target><running/></target></unlock>"))[0]
    assert e["error-tag"] == "operation-failed"
    c.ok("<unlock><target><running/></target></unlock>")
    c2.ok("<lock><target><running/></target></lock>")


def test_lock_released_when_session_ends(h, c):
    c2 = h.client()
    c.ok("<lock><target><candidate/></target></lock>")
    c.ok(edit(vr(HA), target="candidate"))
    c.ok("<close-session/>")
    assert c.closed
    c2.ok("<lock><target><candidate/></target></lock>")
    assert names(c2, "candidate") == []  # the lock holder's uncommitted changes were discarded


def test_candidate_lock_refused_with_others_uncommitted_changes(h, c):
    c2 = h.client()
    c.ok(edit(vr(HA), target="candidate"))
    e = errors(c2.rpc("<lock><target><candidate/></target></lock>"))[0]
    assert e["error-tag"] == "lock-denied" and e["info"] == {"session-id": "0"}
    c.ok("<lock><target><candidate/></target></lock>")  # its own changes do not block the editor


# -- sessions ----------------------------------------------------------------------------------------------
def test_kill_session(h, c):
    c2 = h.client()
    c2.ok("<lock><target><running/></target></lock>")
    e = errors(c.rpc(f"<kill-session><session-id>{c.sess.id}</session-id></kill-session>"))[0]
    assert e["error-tag"] == "invalid-value" and e["info"] == {"bad-element": "session-id"}
    assert (
        errors(c.rpc("<kill-session><session-id>999</session-id></kill-session>"))[0]["error-tag"]
        == "invalid-value"
    )
    c.ok(f"<kill-session><session-id>{c2.sess.id}</session-id></kill-session>")
    assert c2.closed and c2.sess.id not in h.core.sessions
    c.ok("<lock><target><running/></target></lock>")


def test_close_session(h, c):
    c.ok("<close-session/>")
    assert c.closed and c.sess.id not in h.core.sessions


# -- confirmed commit --------------------------------------------------------------------------------------
def test_confirmed_commit_timeout_rolls_back(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    c.ok(edit(vr(mn("b", "10.0.0.6")), target="candidate"))
    c.ok("<commit><confirmed/><confirm-timeout>1</confirm-timeout></commit>")
    assert names(c) == ["a", "b"]
    h.advance(1.3)
    assert names(c) == ["a"]
    assert names(c, "candidate") == ["a"]


def test_confirmed_commit_confirmed_and_extended(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5")), target="candidate"))
    c.ok("<commit><confirmed/><confirm-timeout>1</confirm-timeout></commit>")
    c.ok("<commit><confirmed/><confirm-timeout>60</confirm-timeout></commit>")  # extend
    h.advance(1.3)
    assert names(c) == ["a"]
    c.ok("<commit/>")  # confirm
    assert h.core.pending is None


def test_confirmed_commit_rolled_back_on_session_loss(h, c):
    c2 = h.client()
    c.ok(edit(vr(HA + mn("a", "10.0.0.5")), target="candidate"))
    c.ok("<commit><confirmed/></commit>")
    e = errors(c2.rpc("<commit/>"))[0]
    assert e["error-tag"] == "in-use"
    c.sess.connection_lost()
    assert names(c2) == []


def test_persistent_confirmed_commit_and_cancel(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5")), target="candidate"))
    c.ok("<commit><confirmed/><persist>tok1</persist></commit>")
    c.sess.connection_lost()  # survives the session
    c2 = h.client()
    assert names(c2) == ["a"]
    e = errors(c2.rpc("<cancel-commit><persist-id>nope</persist-id></cancel-commit>"))[0]
    assert e["error-tag"] == "invalid-value"
    c2.ok("<cancel-commit><persist-id>tok1</persist-id></cancel-commit>")
    assert names(c2) == []
    assert errors(c2.rpc("<cancel-commit/>"))[0]["error-tag"] == "invalid-value"


def test_persistent_confirmed_commit_confirmed_by_other_session(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5")), target="candidate"))
    c.ok("<commit><confirmed/><persist>p</persist></commit>")
    c2 = h.client()
    assert errors(c2.rpc("<commit/>"))[0]["error-tag"] == "invalid-value"
    c2.ok("<commit><persist-id>p</persist-id></commit>")
    c.sess.connection_lost()
    h.advance(0.01)
    assert names(c2) == ["a"]


# -- NACM default-deny-all -------------------------------------------------------------------------------
def test_keys_invisible_and_unwritable_for_non_superuser(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5", spi=256))))
    # writes are denied by default (RFC 8341 write-default): permit them, keys stay default-deny-all
    c.ok(
        edit(
            '<nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm"><write-default>permit</write-default></nacm>'
        )
    )
    op = h.client("operator", frozenset({"operators"}))
    d = etree.tostring(op.data("<get-config><source><running/></source></get-config>")).decode()
    assert "<spi>256</spi>" in d and "key" not in d and KEY not in d
    d = etree.tostring(op.data("<get/>")).decode()
    assert KEY not in d
    # a content-match filter on the key must not reveal it either
    f = f'<filter><virtual-routers xmlns="{M}"><virtual-router><mobile-node><security-association><key>{KEY}</key></security-association></mobile-node></virtual-router></virtual-routers></filter>'
    assert len(op.data(f"<get-config><source><running/></source>{f}</get-config>")) == 0
    x = f'<filter type="xpath" xmlns:m="{M}" select="//m:key"/>'
    assert len(op.data(f"<get-config><source><running/></source>{x}</get-config>")) == 0
    r = op.rpc(
        edit(
            vr(
                "<mobile-node><name>a</name><security-association><spi>256</spi><key>ff:ff</key></security-association></mobile-node>"
            )
        )
    )
    assert errors(r)[0]["error-tag"] == "access-denied"
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    r = op.rpc(edit(vr(f'<mobile-node nc:operation="delete" {nc}><name>a</name></mobile-node>')))
    assert errors(r)[0]["error-tag"] == "access-denied"  # deleting would delete a key
    op.ok(edit(vr("<mobile-node><name>a</name><nai>a@x</nai></mobile-node>")))  # other leaves are fine
    assert KEY in etree.tostring(c.data("<get-config><source><running/></source></get-config>")).decode()
    e = errors(op.rpc("<copy-config><target><startup/></target><source><running/></source></copy-config>"))[0]
    assert e["error-tag"] == "access-denied"


# -- with-defaults ------------------------------------------------------------------------------------------
def _ha(c, mode: str | None) -> str:
    wd = (
        f'<with-defaults xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults">{mode}</with-defaults>'
        if mode
        else ""
    )
    d = c.data(f"<get-config><source><running/></source>{wd}</get-config>")
    return etree.tostring(d.find(".//m:home-agent", NS)).decode()


def test_with_defaults_modes(c):
    c.ok(
        edit(
            vr(
                "<router-id>10.0.0.1</router-id><home-agent><address>10.0.0.1</address><udp-port>434</udp-port><max-lifetime>600</max-lifetime></home-agent>"
            )
        )
    )
    explicit = _ha(c, None)
    assert "<udp-port>434</udp-port>" in explicit and "replay-tolerance" not in explicit
    assert _ha(c, "explicit") == explicit
    trim = _ha(c, "trim")
    assert "udp-port" not in trim and "<max-lifetime>600</max-lifetime>" in trim
    allm = _ha(c, "report-all")
    assert (
        "<replay-tolerance>7</replay-tolerance>" in allm and "<encapsulation>ip-in-ip</encapsulation>" in allm
    )
    assert "<max-lifetime>600</max-lifetime>" in allm and "default=" not in allm
    tagged = _ha(c, "report-all-tagged")
    assert 'wd:default="true">7</replay-tolerance>' in tagged or 'default="true">7<' in tagged
    assert 'default="true">434</udp-port>' in tagged  # explicitly set to its default: tagged too
    assert 'default="true">600' not in tagged
    assert "urn:ietf:params:xml:ns:netconf:default:1.0" in tagged
    e = errors(
        c.rpc(
            '<get-config><source><running/></source><with-defaults xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults">frob</with-defaults></get-config>'
        )
    )[0]
    assert e["error-tag"] == "invalid-value"


def test_list_keys_stored_first(c):
    c.ok(
        edit(vr("<mobile-node><home-address>10.0.0.5</home-address><name>x</name></mobile-node>", name="v2"))
    )
    d = c.data("<get-config><source><running/></source></get-config>")
    entry = d.find(".//m:mobile-node", NS)
    assert [etree.QName(e).localname for e in entry] == ["name", "home-address"]


def test_continue_on_error_reports_edit_and_validation_errors(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    body = vr(
        f'<mobile-node nc:operation="delete" {nc}><name>zz</name></mobile-node>'
        "<mobile-node><name>bad</name></mobile-node>"  # no home-address nor pool: must violation
    )
    r = c.rpc(edit(body, extra="<error-option>continue-on-error</error-option>"))
    tags = [(e["error-tag"], e.get("error-app-tag")) for e in errors(r)]
    assert tags[0] == ("data-missing", None)
    assert ("operation-failed", "home-address-assignment") in tags[1:]
    assert names(c) == ["a"]  # the result was invalid: nothing applied


def test_pre_hello_garbage_is_bounded(h):
    from server.protocol import HELLO_LIMIT

    c = Bare(h)
    c.sess.data_received(b"x" * (HELLO_LIMIT + 10))
    assert c.closed and c.sess.id not in h.core.sessions


def test_writes_refused_while_another_session_holds_the_lock(h, c):
    c2 = h.client()
    c.ok(edit(vr(HA), target="candidate"))
    c.ok("<lock><target><candidate/></target></lock>")
    for body in (
        "<discard-changes/>",
        "<commit/>",
        edit(vr(HA), target="candidate"),
        f"<copy-config><target><candidate/></target><source>{cfg(vr(HA))}</source></copy-config>",
    ):
        e = errors(c2.rpc(body))[0]
        assert (e["error-tag"], e["info"]) == ("in-use", {"session-id": str(c.sess.id)}), body
    c.ok("<unlock><target><candidate/></target></lock>".replace("</lock>", "</unlock>"))
    c.ok("<lock><target><startup/></target></lock>")
    e = errors(c2.rpc("<copy-config><target><startup/></target><source><running/></source></copy-config>"))[0]
    assert e["error-tag"] == "in-use"
    assert (
        errors(c2.rpc("<delete-config><target><startup/></target></delete-config>"))[0]["error-tag"]
        == "in-use"
    )


def test_edit_config_on_startup_not_supported(c):
    e = errors(c.rpc(edit(vr(HA), target="startup")))[0]
    assert (e["error-type"], e["error-tag"]) == ("protocol", "operation-not-supported")


def test_get_with_filter_and_defaults(c):
    c.ok(edit(vr(HA)))
    wd = '<with-defaults xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-with-defaults">report-all</with-defaults>'
    f = f'<filter><virtual-routers xmlns="{M}"><virtual-router><home-agent><udp-port/></home-agent></virtual-router></virtual-routers></filter>'
    d = c.data(f"<get>{f}{wd}</get>")
    assert etree.tostring(d[0]).decode() == (
        f'<virtual-routers xmlns="{M}"><virtual-router><name>default</name><home-agent><udp-port>434</udp-port>'
        "</home-agent></virtual-router></virtual-routers>"
    )
    assert len(d) == 1  # the filter kept monitoring / yang-library out


def test_wd_default_attribute_in_edit(c):
    wd = 'xmlns:wd="urn:ietf:params:xml:ns:netconf:default:1.0"'
    c.ok(
        edit(
            vr(
                "<router-id>10.0.0.1</router-id><home-agent><address>10.0.0.1</address><udp-port>4343</udp-port></home-agent>"
            )
        )
    )
    c.ok(edit(vr(f'<home-agent><udp-port wd:default="true" {wd}>434</udp-port></home-agent>')))
    d = c.data("<get-config><source><running/></source></get-config>")
    assert d.find(".//m:udp-port", NS) is None  # back to its default, not stored explicitly
    e = errors(c.rpc(edit(vr(f'<home-agent><udp-port wd:default="true" {wd}>999</udp-port></home-agent>'))))[
        0
    ]
    assert e["error-tag"] == "invalid-value"
    c.ok(
        edit(
            vr(
                f'<router-id>10.0.0.2</router-id><home-agent><max-lifetime wd:default="true" {wd}>36000</max-lifetime></home-agent>',
                name="new",
            )
        )
    )
    d = c.data("<get-config><source><running/></source></get-config>")
    assert b"default=" not in etree.tostring(d)


def test_non_superuser_cannot_kill_or_delete_config(h, c):
    op = h.client("operator", frozenset({"operators"}))
    e = errors(op.rpc(f"<kill-session><session-id>{c.sess.id}</session-id></kill-session>"))[0]
    assert (e["error-type"], e["error-tag"]) == ("protocol", "access-denied")
    e = errors(op.rpc("<delete-config><target><startup/></target></delete-config>"))[0]
    assert e["error-tag"] == "access-denied"
    assert c.sess.id in h.core.sessions


def test_stored_data_carries_no_request_envelope_namespaces(c):
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    c.ok(
        edit(
            vr(
                HA
                + f'<mobile-node nc:operation="create" {nc}><name>a</name><home-address>10.0.0.5</home-address></mobile-node>'
            )
        )
    )
    c.ok(edit(vr(f'<mobile-node><name>a</name><nai nc:operation="create" {nc}>a@x</nai></mobile-node>')))
    assert "xmlns:nc" not in running(c)


def test_cancel_commit_of_another_sessions_confirmed_commit(h, c):
    c2 = h.client()
    c.ok(edit(vr(HA), target="candidate"))
    c.ok("<commit><confirmed/></commit>")
    e = errors(c2.rpc("<cancel-commit/>"))[0]
    assert e["error-tag"] == "in-use" and e["info"] == {"session-id": str(c.sess.id)}
    c.ok("<cancel-commit/>")
    assert len(c.data("<get-config><source><running/></source></get-config>")) == 0


def test_get_data_xpath_and_candidate(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5") + mn("b", "10.0.0.6")), target="candidate"))
    nmda = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
    r = c.rpc(
        f'<get-data xmlns="{nmda}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores">'
        f"<datastore>ds:candidate</datastore><xpath-filter xmlns:q='{M}'>/q:virtual-routers/q:virtual-router/q:mobile-node[q:name='b']</xpath-filter>"
        "</get-data>"
    )
    d = r.find(f"{{{nmda}}}data")
    assert [e.text for e in d.iterfind(".//m:mobile-node/m:name", NS)] == ["b"]


def test_get_schema_version_and_format(c):
    ns = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
    d = c.rpc(
        f"<get-schema xmlns='{ns}'><identifier>ietf-netconf-with-defaults</identifier><version>2011-06-01</version><format>yang</format></get-schema>"
    )
    assert "module ietf-netconf-with-defaults" in d.findtext(f"{{{ns}}}data")
    e = errors(
        c.rpc(
            f"<get-schema xmlns='{ns}'><identifier>ietf-netconf-with-defaults</identifier><version>1999-01-01</version></get-schema>"
        )
    )[0]
    assert e["error-tag"] == "invalid-value"
    e = errors(
        c.rpc(
            f"<get-schema xmlns='{ns}'><identifier>mipha-home-agent</identifier><format>yin</format></get-schema>"
        )
    )[0]
    assert e["error-tag"] == "invalid-value"


def test_validation_error_path_uses_request_prefixes(c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))  # stored with the default namespace
    body = (
        f'<edit-config><target><running/></target><config><h:virtual-routers xmlns:h="{M}">'
        "<h:virtual-router><h:name>default</h:name><h:mobile-node><h:name>b</h:name>"
        "<h:home-address>10.0.0.5</h:home-address></h:mobile-node></h:virtual-router></h:virtual-routers></config></edit-config>"
    )
    r = c.rpc(body)
    e = errors(r)[0]
    assert e["error-app-tag"] == "data-not-unique"
    assert e["error-path"].startswith("/h:virtual-routers/h:virtual-router[h:name='default']/h:mobile-node[")
    assert r.find(".//nc:error-path", NS).nsmap["h"] == M


def test_leaf_list_operations(c):
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    c.ok(edit(vr(HA.replace("</home-agent>", "<care-of-access>192.0.2.0/24</care-of-access></home-agent>"))))
    c.ok(edit(vr("<home-agent><care-of-access>198.51.100.0/24</care-of-access></home-agent>")))

    def coa() -> list[str]:
        d = c.data("<get-config><source><running/></source></get-config>")
        return [e.text for e in d.iterfind(".//m:care-of-access", NS)]

    assert coa() == ["192.0.2.0/24", "198.51.100.0/24"]
    e = errors(
        c.rpc(
            edit(
                vr(
                    f'<home-agent><care-of-access nc:operation="create" {nc}>192.0.2.0/24</care-of-access></home-agent>'
                )
            )
        )
    )[0]
    assert e["error-tag"] == "data-exists"
    assert e["error-path"].endswith("/mipha:care-of-access[.='192.0.2.0/24']")
    c.ok(
        edit(
            vr(
                f'<home-agent><care-of-access nc:operation="delete" {nc}>192.0.2.0/24</care-of-access></home-agent>'
            )
        )
    )
    assert coa() == ["198.51.100.0/24"]
    e = errors(
        c.rpc(
            edit(
                vr(
                    f'<home-agent><care-of-access nc:operation="delete" {nc}>192.0.2.0/24</care-of-access></home-agent>'
                )
            )
        )
    )[0]
    assert e["error-tag"] == "data-missing"


def test_replace_leaf_and_presence_container(c):
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    c.ok(edit(vr(HA.replace("</home-agent>", "<udp-port>4000</udp-port></home-agent>"))))
    c.ok(edit(vr(f'<home-agent><udp-port nc:operation="replace" {nc}>5000</udp-port></home-agent>')))
    d = c.data("<get-config><source><running/></source></get-config>")
    assert d.findtext(".//m:udp-port", namespaces=NS) == "5000"
    c.ok(edit(vr(f'<home-agent nc:operation="delete" {nc}/>')))
    d = c.data("<get-config><source><running/></source></get-config>")
    assert d.find(".//m:home-agent", NS) is None and d.findtext(".//m:router-id", namespaces=NS) == "10.0.0.1"


def test_deleting_a_list_key_leaf_is_refused(c):
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    e = errors(c.rpc(edit(vr(f'<mobile-node><name nc:operation="delete" {nc}>a</name></mobile-node>'))))[0]
    assert e["error-tag"] == "invalid-value"


# -- edit-data (RFC 8526) -------------------------------------------------------------------------------
NMDA = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"


def edit_data(ds: str, inner: str, extra: str = "") -> str:
    return (
        f'<edit-data xmlns="{NMDA}" xmlns:ds="{DS}"><datastore>{ds}</datastore>{extra}'
        f"<config>{vr(inner)}</config></edit-data>"
    )


def test_edit_data_running_and_candidate(c):
    c.ok(edit_data("ds:running", HA + mn("a", "10.0.0.5")))
    assert [e.text for e in c.data(GET_RUNNING_NAMES).iterfind(".//m:mobile-node/m:name", NS)] == ["a"]
    c.ok(edit_data("ds:candidate", mn("b", "10.0.0.6")))
    assert [e.text for e in c.data(GET_RUNNING_NAMES).iterfind(".//m:mobile-node/m:name", NS)] == ["a"]
    c.ok("<commit/>")
    assert [e.text for e in c.data(GET_RUNNING_NAMES).iterfind(".//m:mobile-node/m:name", NS)] == ["a", "b"]
    c.ok(edit_data("ds:running", HA + mn("z", "10.0.0.9"), "<default-operation>replace</default-operation>"))
    assert [e.text for e in c.data(GET_RUNNING_NAMES).iterfind(".//m:mobile-node/m:name", NS)] == ["z"]


def test_edit_data_errors_are_edit_configs(c):
    c.ok(edit_data("ds:running", HA + mn("a", "10.0.0.5")))
    bad = errors(c.rpc(edit_data("ds:running", mn("b", "10.0.0.5"))))
    same = errors(c.rpc(edit(vr(mn("b", "10.0.0.5")))))
    assert bad == same and bad[0]["error-app-tag"] == "data-not-unique"
    e = errors(c.rpc(edit_data("ds:operational", HA)))[0]
    assert e["error-tag"] == "operation-not-supported"
    e = errors(c.rpc(edit_data("ds:nowhere", HA)))[0]
    assert e["error-tag"] == "invalid-value" and e["info"] == {"bad-element": "datastore"}
    e = errors(c.rpc(f'<edit-data xmlns="{NMDA}"><config/></edit-data>'))[0]
    assert e["error-tag"] == "missing-element" and e["info"] == {"bad-element": "datastore"}


GET_RUNNING_NAMES = "<get-config><source><running/></source></get-config>"
