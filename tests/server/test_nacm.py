"""RFC 8341 NACM: each access type, §3.4 order, path rules with list keys, default-deny-write/all,
the counters, denied edits leaving nothing changed, and the RFC's Appendix A examples (adapted to the
modules this server implements: mipha-home-agent stands in for the RFC's "acme" examples)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree
from nc_harness import HA, KEY, Harness, M, edit, errors, mn, vr
from nc_server import OPERATOR, connect
from ncclient.operations.rpc import RPCError

from server.config import REPO_YANG, ServerConfig

N = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
NCN = "urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"
MON = "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"
T = "urn:mipha:test:nacm"

# RFC 8341 A.1: three groups
GROUPS = """<groups>
  <group><name>admin</name><user-name>admin</user-name><user-name>andy</user-name></group>
  <group><name>limited</name><user-name>wilma</user-name><user-name>bam-bam</user-name></group>
  <group><name>guest</name><user-name>guest</user-name><user-name>guest@example.com</user-name></group>
</groups>"""


def nacm(body: str, extra: str = "") -> str:
    return edit(
        f'<nacm xmlns="{N}" xmlns:n="{N}" xmlns:m="{M}" xmlns:ncm="{MON}" xmlns:nt="{T}">{extra}{body}</nacm>'
    )


def rule(name: str, action: str, ops: str = "*", module: str | None = None, **kind) -> str:
    out = f"<rule><name>{name}</name>"
    if module is not None:
        out += f"<module-name>{module}</module-name>"
    for leaf, value in kind.items():
        out += f"<{leaf.replace('_', '-')}>{value}</{leaf.replace('_', '-')}>"
    return out + f"<access-operations>{ops}</access-operations><action>{action}</action></rule>"


def rule_list(name: str, groups: list[str], *rules: str) -> str:
    gs = "".join(f"<group>{g}</group>" for g in groups)
    return f"<rule-list><name>{name}</name>{gs}{''.join(rules)}</rule-list>"


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.close()


@pytest.fixture
def c(h):
    return h.client()


def user(h, name: str, *groups: str):
    """A session of a user whose transport gives it `groups` (the bootstrap's `groups = [...]`)."""
    return h.client(name, frozenset(groups))


def counters(c) -> dict[str, int]:
    d = c.data(f'<get><filter><nacm xmlns="{N}"/></filter></get>')
    top = d.find(f"{{{N}}}nacm")
    return {
        k: int(top.findtext(f"{{{N}}}{k}"))
        for k in ("denied-operations", "denied-data-writes", "denied-notifications")
    }


def running(c) -> bytes:
    return etree.tostring(c.data("<get-config><source><running/></source></get-config>"))


def names(d) -> list[str]:
    return [e.text for e in d.iterfind(f".//{{{M}}}virtual-router/{{{M}}}name")]


# -- defaults and exec ---------------------------------------------------------------------------------------
def test_rfc_defaults_read_permit_write_deny_exec_permit(h, c):
    c.ok(edit(vr(HA)))
    u = user(h, "joe")
    assert names(u.data("<get-config><source><running/></source></get-config>")) == ["default"]
    e = errors(u.rpc(edit(vr("<router-id>10.9.9.9</router-id>"))))[0]
    assert (e["error-type"], e["error-tag"]) == ("application", "access-denied")
    assert (
        e["error-path"] == "/mipha:virtual-routers/mipha:virtual-router[mipha:name='default']/mipha:router-id"
    )
    assert b"10.0.0.1" in running(c)
    assert counters(c)["denied-data-writes"] == 1
    # /nacm itself is default-deny-all: invisible and unwritable without a rule
    c.ok(nacm("<read-default>permit</read-default>"))
    assert (
        u.data(f'<get-config><source><running/></source><filter><nacm xmlns="{N}"/></filter></get-config>')
        is not None
    )
    assert len(u.data(f'<get><filter><nacm xmlns="{N}"/></filter></get>')) == 0
    assert errors(u.rpc(nacm("<enable-nacm>false</enable-nacm>")))[0]["error-tag"] == "access-denied"


def test_superuser_is_the_recovery_session_and_enable_nacm_false(h, c):
    c.ok(nacm("<read-default>deny</read-default><exec-default>deny</exec-default>"))
    assert len(running(c)) > 0 and b"nacm" in running(c)  # the superuser group bypasses every rule
    u = user(h, "joe")
    assert errors(u.rpc("<get/>"))[0]["error-tag"] == "access-denied"
    u.ok("<close-session/>")  # close-session is always permitted
    c.ok(nacm("<enable-nacm>false</enable-nacm>"))
    u2 = user(h, "joe")
    u2.ok(edit(vr(HA)))  # NACM off: everything permitted
    assert KEY not in running(u2).decode()


def test_exec_rules_and_denied_operations_counter(h, c):
    """RFC 8341 A.3: protocol operation rules."""
    c.ok(
        nacm(
            GROUPS
            + rule_list(
                "guest-limited-acl",
                ["limited", "guest"],
                rule("deny-kill-session", "deny", "exec", "ietf-netconf", rpc_name="kill-session"),
                rule("deny-delete-config", "deny", "exec", "ietf-netconf", rpc_name="delete-config"),
            )
            + rule_list(
                "limited-acl",
                ["limited"],
                rule("permit-edit-config", "permit", "exec", "ietf-netconf", rpc_name="edit-config"),
            )
            + rule_list("admin-acl", ["admin"], rule("permit-all", "permit", "*", "*")),
            "<exec-default>deny</exec-default>",
        )
    )
    wilma, guest, andy = user(h, "wilma"), user(h, "guest"), user(h, "andy")
    before = counters(c)["denied-operations"]
    for who in (wilma, guest):
        e = errors(who.rpc(f"<kill-session><session-id>{c.sess.id}</session-id></kill-session>"))[0]
        assert (e["error-type"], e["error-tag"]) == ("protocol", "access-denied")
    # limited may call edit-config (the data written is checked separately: write-default deny)
    e = errors(wilma.rpc(edit(vr(HA))))[0]
    assert e["error-type"] == "application" and e["error-tag"] == "access-denied"
    e = errors(guest.rpc(edit(vr(HA))))[0]
    assert e["error-type"] == "protocol"  # exec-default deny: the rpc itself
    assert errors(guest.rpc("<get/>"))[0]["error-tag"] == "access-denied"
    assert (
        errors(wilma.rpc("<get-config><source><running/></source></get-config>"))[0]["error-tag"]
        == "access-denied"
    )
    andy.ok(edit(vr(HA)))  # admin-acl permit-all (andy is not in the superuser group)
    andy.ok(f"<kill-session><session-id>{guest.sess.id}</session-id></kill-session>")
    assert counters(c)["denied-operations"] == before + 5


def test_module_rules_rfc_a2(h, c):
    """RFC 8341 A.2: module rules (guest may not read ietf-netconf-monitoring, limited may)."""
    c.ok(
        nacm(
            GROUPS
            + rule_list("guest-acl", ["guest"], rule("deny-ncm", "deny", "*", "ietf-netconf-monitoring"))
            + rule_list(
                "limited-acl",
                ["limited"],
                rule("permit-ncm", "permit", "read", "ietf-netconf-monitoring"),
                rule("permit-exec", "permit", "exec", "*"),
            )
            + rule_list("admin-acl", ["admin"], rule("permit-all", "permit", "*", "*")),
            "<read-default>deny</read-default><exec-default>deny</exec-default>",
        )
    )
    c.ok(edit(vr(HA)))
    flt = f'<filter><netconf-state xmlns="{MON}"><sessions/></netconf-state></filter>'
    guest, wilma = user(h, "guest"), user(h, "wilma")
    assert errors(guest.rpc("<get/>"))[0]["error-tag"] == "access-denied"  # exec-default deny
    got = wilma.data(f"<get>{flt}</get>")
    assert got.find(f".//{{{MON}}}session") is not None
    d = wilma.data("<get/>")  # read-default deny: only monitoring data is readable
    assert {etree.QName(r).namespace for r in d} == {MON}


# -- data node rules -----------------------------------------------------------------------------------------
A4 = (
    GROUPS
    + rule_list("guest-acl", ["guest"], rule("deny-nacm", "deny", "*", "*", path="/n:nacm"))
    + rule_list(
        "limited-acl",
        ["limited"],
        rule(
            "permit-mn-config",
            "permit",
            "read create update delete",
            "mipha-home-agent",
            path="/m:virtual-routers/m:virtual-router/m:mobile-node",
        ),
    )
    + rule_list(
        "guest-limited-acl",
        ["limited", "guest"],
        rule(
            "permit-dummy-router",
            "permit",
            "read update",
            "mipha-home-agent",
            path="/m:virtual-routers/m:virtual-router[m:name='dummy']",
        ),
        rule("deny-routers", "deny", "*", "mipha-home-agent", path="/m:virtual-routers/m:virtual-router"),
    )
    + rule_list("admin-acl", ["admin"], rule("permit-vr", "permit", "*", "*", path="/m:virtual-routers"))
)


def test_data_node_rules_rfc_a4_with_list_keys(h, c):
    """RFC 8341 A.4: deny /nacm to guest; limited writes mobile nodes; the entry keyed 'dummy' is
    readable and updatable (not creatable or deletable) by limited and guest."""
    c.ok(edit(vr(HA, "dummy") + vr(HA + mn("a", "10.0.0.5"), "vr2")))
    c.ok(nacm(A4, "<read-default>permit</read-default>"))
    guest, wilma, andy = user(h, "guest"), user(h, "wilma"), user(h, "andy")
    assert names(guest.data("<get-config><source><running/></source></get-config>")) == ["dummy"]
    assert guest.data(f'<get><filter><nacm xmlns="{N}"/></filter></get>').find(f"{{{N}}}nacm") is None
    # wilma: mobile-node rule first (any router), then only the dummy router
    # a read-denied entry hides its whole subtree (its mobile nodes would reveal its key)
    d = wilma.data("<get-config><source><running/></source></get-config>")
    assert names(d) == ["dummy"]
    # update of the dummy entry: permitted; create or delete of it: denied
    guest.ok(edit(vr("<router-id>10.0.0.7</router-id>", "dummy")))
    e = errors(guest.rpc(edit(vr(HA, "new"))))[0]
    assert e["error-tag"] == "access-denied" and "new" in e["error-path"]
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    e = errors(
        guest.rpc(
            edit(
                f'<virtual-routers xmlns="{M}"><virtual-router nc:operation="delete" {nc}><name>dummy</name></virtual-router></virtual-routers>'
            )
        )
    )[0]
    assert e["error-tag"] == "access-denied"
    assert (
        errors(guest.rpc(edit(vr("<router-id>10.0.0.9</router-id>", "vr2"))))[0]["error-tag"]
        == "access-denied"
    )
    wilma.ok(edit(vr(mn("b", "10.0.0.6"), "vr2")))  # a mobile node under any router
    assert (
        errors(wilma.rpc(edit(vr("<router-id>10.0.0.9</router-id>", "vr2"))))[0]["error-tag"]
        == "access-denied"
    )
    andy.ok(edit(vr(HA, "new")))
    out = running(c).decode()
    assert (
        "10.0.0.7" in out and "<name>b</name>" in out and "<name>new</name>" in out and "10.0.0.9" not in out
    )


def test_path_rule_on_one_mobile_node_and_keys_of_lists(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5", spi=256) + mn("b", "10.0.0.6", spi=257))))
    c.ok(
        nacm(
            rule_list(
                "ops",
                ["operators"],
                rule(
                    "hide-b",
                    "deny",
                    "read",
                    path="/m:virtual-routers/m:virtual-router[m:name='default']/m:mobile-node[m:name='b']",
                ),
                rule(
                    "hide-names",
                    "deny",
                    "read",
                    path="/m:virtual-routers/m:virtual-router/m:foreign-agent/m:address",
                ),
            )
        )
    )
    op = user(h, "op", "operators")
    d = op.data("<get-config><source><running/></source></get-config>")
    assert [e.text for e in d.iter(f"{{{M}}}name")] == ["default", "a"]
    assert KEY not in etree.tostring(d).decode()  # no rule matches the key: default-deny-all
    # a content-match filter on the hidden entry's leaf does not reveal it
    probe = f'<filter><virtual-routers xmlns="{M}"><virtual-router><mobile-node><home-address>10.0.0.6</home-address></mobile-node></virtual-router></virtual-routers></filter>'
    assert len(op.data(f"<get-config><source><running/></source>{probe}</get-config>")) == 0
    xp = f'<filter type="xpath" xmlns:m="{M}" select="//m:mobile-node[m:name=\'b\']"/>'
    assert len(op.data(f"<get>{xp}</get>")) == 0
    # get-data sees the same
    d = op.rpc(
        '<get-data xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-nmda" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores"><datastore>ds:running</datastore></get-data>'
    )
    assert [e.text for e in d.iter(f"{{{M}}}name")] == ["default", "a"]


def test_explicit_rule_overrides_default_deny_all(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5", spi=256))))
    keypath = "/m:virtual-routers/m:virtual-router/m:mobile-node/m:security-association/m:key"
    c.ok(nacm(rule_list("sec", ["security"], rule("keys", "permit", "read update", path=keypath))))
    sec, op = user(h, "sec", "security"), user(h, "op", "operators")
    assert KEY in etree.tostring(sec.data("<get-config><source><running/></source></get-config>")).decode()
    assert KEY not in etree.tostring(op.data("<get-config><source><running/></source></get-config>")).decode()
    new = "ff:" * 15 + "ff"
    sec.ok(
        edit(
            vr(
                "<mobile-node><name>a</name><security-association><spi>256</spi>"
                f"<key>{new}</key></security-association></mobile-node>"
            )
        )
    )
    assert new in running(c).decode()


def test_rule_order_first_match_wins(h, c):
    c.ok(edit(vr(HA)))
    deny = rule_list("l1", ["g1"], rule("d", "deny", "read", "mipha-home-agent"))
    permit = rule_list("l2", ["g1", "g2"], rule("p", "permit", "read", "mipha-home-agent"))
    c.ok(nacm(deny + permit, "<read-default>deny</read-default>"))
    assert len(user(h, "u", "g1").data("<get-config><source><running/></source></get-config>")) == 0
    assert names(user(h, "u", "g2").data("<get-config><source><running/></source></get-config>")) == [
        "default"
    ]
    # the same rules, permit list first (replace the rule-lists; `ordered-by user` keeps request order)
    c.ok(
        edit(
            f'<nacm xmlns="{N}" xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" nc:operation="replace">'
            f"<read-default>deny</read-default>{permit}{deny}</nacm>"
        )
    )
    assert names(user(h, "u", "g1").data("<get-config><source><running/></source></get-config>")) == [
        "default"
    ]
    # inside one rule-list, rules in order too
    c.ok(
        edit(
            f'<nacm xmlns="{N}" xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0" nc:operation="replace">'
            + rule_list("l", ["g3"], rule("d", "deny", "read", "*"), rule("p", "permit", "read", "*"))
            + "</nacm>"
        )
    )
    assert len(user(h, "u", "g3").data("<get-config><source><running/></source></get-config>")) == 0


def test_groups_from_nacm_and_external_groups(h, c):
    c.ok(edit(vr(HA)))
    c.ok(
        nacm(
            GROUPS
            + rule_list("l", ["limited"], rule("w", "permit", "create update delete", "mipha-home-agent"))
        )
    )
    user(h, "wilma").ok(edit(vr("<router-id>10.0.0.2</router-id>")))  # /nacm/groups membership
    user(h, "fred", "limited").ok(edit(vr("<router-id>10.0.0.3</router-id>")))  # transport group
    c.ok(nacm("<enable-external-groups>false</enable-external-groups>"))
    assert (
        errors(user(h, "fred", "limited").rpc(edit(vr("<router-id>10.0.0.4</router-id>"))))[0]["error-tag"]
        == "access-denied"
    )
    user(h, "bam-bam").ok(edit(vr("<router-id>10.0.0.5</router-id>")))


def test_a_denied_edit_changes_nothing(h, c):
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    c.ok(
        nacm(
            rule_list(
                "l",
                ["ops"],
                rule(
                    "w", "permit", "create update", path="/m:virtual-routers/m:virtual-router/m:mobile-node"
                ),
            )
        )
    )
    before = running(c)
    op = user(h, "op", "ops")
    # one permitted change (a mobile node) and one denied one (the router-id) in the same edit
    e = errors(op.rpc(edit(vr("<router-id>10.0.0.9</router-id>" + mn("b", "10.0.0.6")))))
    assert e[0]["error-tag"] == "access-denied"
    assert running(c) == before
    # candidate too
    e = errors(op.rpc(edit(vr("<router-id>10.0.0.9</router-id>"), target="candidate")))
    assert e[0]["error-tag"] == "access-denied"
    assert etree.tostring(c.data("<get-config><source><candidate/></source></get-config>")) == before
    # delete is not among the permitted operations
    nc = 'xmlns:nc="urn:ietf:params:xml:ns:netconf:base:1.0"'
    e = errors(op.rpc(edit(vr(f'<mobile-node nc:operation="delete" {nc}><name>a</name></mobile-node>'))))
    assert e[0]["error-tag"] == "access-denied"
    op.ok(edit(vr(mn("b", "10.0.0.6"))))
    assert running(c) != before
    # copy-config into running is a write of every difference
    e = errors(op.rpc("<copy-config><target><running/></target><source><config/></source></copy-config>"))
    assert e[0]["error-tag"] == "access-denied"
    assert counters(c)["denied-data-writes"] == 4


# -- nacm:default-deny-write / default-deny-all on data ---------------------------------------------------------
TEST_MODULE = """module nacm-test {
  yang-version 1.1;
  namespace "urn:mipha:test:nacm";
  prefix nt;
  import ietf-netconf-acm { prefix nacm; }
  container settings {
    leaf motd { type string; }
    leaf banner { nacm:default-deny-write; type string; }
    container secret { nacm:default-deny-all; leaf token { type string; } }
  }
}
"""


@pytest.fixture
def ht(tmp_path):
    yang = tmp_path / "yang"
    shutil.copytree(REPO_YANG, yang)
    (yang / "nacm-test.yang").write_text(TEST_MODULE)
    harness = Harness(yang_dir=yang, extra_modules=(*ServerConfig.extra_modules, "nacm-test"))  # type: ignore[misc]
    yield harness
    harness.close()


def settings(body: str) -> str:
    return edit(f'<settings xmlns="{T}">{body}</settings>')


def test_default_deny_write_and_all_on_data(ht):
    c = ht.client()
    c.ok(settings("<motd>hi</motd><banner>b</banner><secret><token>s3</token></secret>"))
    c.ok(nacm("<write-default>permit</write-default>"))
    u = user(ht, "joe")
    d = etree.tostring(u.data("<get-config><source><running/></source></get-config>")).decode()
    assert "<banner>b</banner>" in d and "s3" not in d and "secret" not in d  # deny-all: not readable
    u.ok(settings("<motd>hello</motd>"))
    assert errors(u.rpc(settings("<banner>x</banner>")))[0]["error-tag"] == "access-denied"  # deny-write
    assert errors(u.rpc(settings("<secret><token>x</token></secret>")))[0]["error-tag"] == "access-denied"
    # an explicit rule wins over the extension (RFC 8341 §3.4.5: rules first, then the defaults)
    c.ok(
        nacm(
            rule_list(
                "w",
                ["writers"],
                rule("b", "permit", "update", path="/nt:settings/nt:banner"),
                rule("s", "permit", "*", "nacm-test", path="/nt:settings/nt:secret"),
            )
        )
    )
    w = user(ht, "w", "writers")
    w.ok(settings("<banner>y</banner>"))
    assert "s3" in etree.tostring(w.data("<get-config><source><running/></source></get-config>")).decode()


def test_path_prefixes_from_the_xml_scope(h, c):
    """The path's prefixes are those bound where the <path> leaf is (here `q`, not the module's)."""
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    r = (
        '<rule-list><name>l</name><group>g</group><rule><name>r</name><path xmlns:q="urn:mipha:yang:mipha-home-agent">'
        "/q:virtual-routers/q:virtual-router/q:mobile-node[q:name='a']</path>"
        "<access-operations>read</access-operations><action>deny</action></rule></rule-list>"
    )
    c.ok(nacm(r))
    d = user(h, "u", "g").data("<get-config><source><running/></source></get-config>")
    assert d.find(f".//{{{M}}}mobile-node") is None and names(d) == ["default"]


# -- notifications -------------------------------------------------------------------------------------------
def test_notification_rules_live_and_replay(h, c):
    """RFC 8341 A.5-style: a notification rule drops config-change events for one group."""
    c.ok(
        nacm(
            rule_list(
                "l",
                ["guests"],
                rule(
                    "no-cc",
                    "deny",
                    "read",
                    "ietf-netconf-notifications",
                    notification_name="netconf-config-change",
                ),
            )
        )
    )
    guest, ops = user(h, "g", "guests"), user(h, "o", "ops")
    for s in (guest, ops):
        s.ok('<create-subscription xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0"/>')
    h.advance(0.01)
    guest.pending(), ops.pending()
    before = counters(c)["denied-notifications"]
    c.ok(edit(vr(HA)))
    h.advance(0.01)

    def kinds(s):
        return [etree.QName(n[1]).localname for n in s.pending()]

    assert "netconf-config-change" in kinds(ops)
    assert "netconf-config-change" not in kinds(guest)
    assert counters(c)["denied-notifications"] == before + 1
    late = user(h, "g2", "guests")
    late.ok(
        '<create-subscription xmlns="urn:ietf:params:xml:ns:netconf:notification:1.0">'
        "<startTime>2000-01-01T00:00:00Z</startTime></create-subscription>"
    )
    h.advance(0.01)
    got = kinds(late)
    assert "netconf-config-change" not in got and "replayComplete" in got and "netconf-session-start" in got


def test_policy_compiled_once_per_change(h, c):
    c.ok(nacm(rule_list("l", ["g"], rule("r", "deny", "read", "mipha-home-agent"))))
    u = user(h, "u", "g")
    u.data("<get/>")
    n = h.core.nacm.compilations
    for _ in range(5):
        u.data("<get/>")
    c.ok(edit(vr(HA)))  # a change elsewhere: same /nacm, not recompiled
    u.data("<get/>")
    assert h.core.nacm.compilations == n
    c.ok(nacm("<read-default>deny</read-default>"))
    u.data("<get/>")
    assert h.core.nacm.compilations == n + 1


# -- real SSH sessions ---------------------------------------------------------------------------------------
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nacm-operators.xml"


def test_operators_example_over_ncclient_and_netconf_console2(server):
    admin = connect(server)
    try:
        admin.edit_config(
            target="running",
            config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{M}"><virtual-router><name>default</name>{HA}{mn("a", "10.0.0.5", spi=300)}</virtual-router></virtual-routers></config>',
        )
        admin.edit_config(target="running", config=EXAMPLE.read_text())
        op = connect(server, OPERATOR)
        try:
            xml = op.get_config("running").xml
            assert "<spi>300</spi>" in xml and KEY not in xml
            with pytest.raises(RPCError) as ei:
                op.edit_config(
                    target="running",
                    config=f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{M}"><virtual-router><name>default</name><router-id>10.0.0.9</router-id></virtual-router></virtual-routers></config>',
                )
            assert ei.value.tag == "access-denied"
            with pytest.raises(RPCError) as ei:
                op.lock("running")
            assert ei.value.tag == "access-denied"
        finally:
            op.close_session()
        assert "10.0.0.9" not in admin.get_config("running").xml
    finally:
        admin.close_session()
    exe = Path(sys.executable).with_name("netconf-console2")
    base = [str(exe), "--host", "127.0.0.1", "--port", str(server.port), "-u", OPERATOR[0], "-p", OPERATOR[1]]
    r = subprocess.run(
        [*base, "--get-config"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 0 and "<spi>300</spi>" in r.stdout and KEY not in r.stdout, r.stderr
    r = subprocess.run(
        [*base, "--kill-session", "1"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert "access-denied" in r.stdout + r.stderr


def test_operators_example_monitor_and_operators(h, c):
    """examples/nacm-operators.xml: clear-bindings for operators only; monitor reads; others nothing.
    (A plain server has no clear-bindings: the daemon's handler is stood in by one that answers ok.)"""
    h.core.register_rpc(M, "clear-bindings", lambda sess, op: None)
    c.ok(edit(vr(HA + mn("a", "10.0.0.5", spi=256))))
    body = EXAMPLE.read_text().split("<config", 1)[1].split(">", 1)[1].rsplit("</config>", 1)[0]
    c.ok(edit(body))
    clear = f'<clear-bindings xmlns="{M}"><virtual-router>default</virtual-router></clear-bindings>'
    op, mon, noc, nobody = user(h, "o", "operators"), user(h, "grafana"), user(h, "noc1"), user(h, "x")
    for s in (op, mon, noc):
        d = etree.tostring(s.data("<get/>")).decode()
        assert "<spi>256</spi>" in d and KEY not in d and "rule-list" not in d
        assert "denied-operations" not in d  # /nacm state is hidden too
    op.ok(clear)
    noc.ok(clear)
    assert errors(mon.rpc(clear))[0]["error-tag"] == "access-denied"
    for s in (op, mon):
        assert errors(s.rpc(edit(vr("<router-id>10.0.0.9</router-id>"))))[0]["error-tag"] == "access-denied"
        assert errors(s.rpc("<lock><target><running/></target></lock>"))[0]["error-tag"] == "access-denied"
    assert errors(nobody.rpc("<get/>"))[0]["error-tag"] == "access-denied"


# -- raw pre-serialised state ----------------------------------------------------------------------------------
def test_raw_state_left_alone_or_opened_by_the_rules(tmp_path):
    """Bindings handed over as raw bytes go out untouched when readable as a whole, and are parsed
    and filtered when a rule reaches inside them (a binding's lifetime, one router, and a list key:
    an entry whose key is unreadable is left out whole)."""
    from test_state_merge import RawProvider
    from test_state_merge import running as state_running

    h = Harness(providers=[RawProvider()])
    try:
        h.core.ds.running = state_running()
        c = h.client()
        base = "/m:virtual-routers/m:virtual-router/m:home-agent/m:bindings/m:binding"
        flt = f'<filter><virtual-routers xmlns="{M}"><virtual-router><home-agent><bindings/></home-agent></virtual-router></virtual-routers></filter>'
        whole = etree.tostring(c.data(f"<get>{flt}</get>"))
        assert whole.count(b"<lifetime-granted>") == 3
        u = user(h, "u", "g")
        assert etree.tostring(u.data(f"<get>{flt}</get>")) == whole  # read-default permit: untouched
        c.ok(
            nacm(
                rule_list(
                    "l",
                    ["g"],
                    rule("life", "deny", "read", path=f"{base}/m:lifetime-granted"),
                    rule("one", "deny", "read", path="/m:virtual-routers/m:virtual-router[m:name='blue']"),
                )
            )
        )
        d = u.data(f"<get>{flt}</get>")
        assert d.find(f".//{{{M}}}lifetime-granted") is None
        assert sorted(e.text for e in d.iter(f"{{{M}}}home-address")) == ["10.0.0.5", "10.0.0.6"]
        c.ok(nacm(rule_list("k", ["g"], rule("coa", "deny", "read", path=f"{base}/m:care-of-address"))))
        u2 = user(h, "u2", "g")
        assert u2.data(f"<get>{flt}</get>").find(f".//{{{M}}}binding") is None
    finally:
        h.close()


def test_path_prefixes_survive_edits_into_an_existing_nacm(h, c):
    """A rule path written with another prefix than the stored tree binds to the same namespace (new
    rule, changed path) is stored with the stored tree's prefix, so it still resolves."""
    c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
    c.ok(
        nacm(
            rule_list(
                "l", ["g"], rule("r", "deny", "read", path="/m:virtual-routers/m:virtual-router/m:router-id")
            )
        )
    )
    changed = (
        f'<nacm xmlns="{N}" xmlns:q="{M}"><rule-list><name>l</name><rule><name>r</name>'
        "<path>/q:virtual-routers/q:virtual-router/q:mobile-node</path></rule></rule-list></nacm>"
    )
    c.ok(edit(changed))
    added = (
        f'<nacm xmlns="{N}" xmlns:z="{M}"><rule-list><name>l</name><rule><name>r2</name>'
        "<path>/z:virtual-routers/z:virtual-router/z:home-agent</path><access-operations>read</access-operations>"
        "<action>deny</action></rule></rule-list></nacm>"
    )
    c.ok(edit(added))
    d = user(h, "u", "g").data("<get-config><source><running/></source></get-config>")
    assert d.find(f".//{{{M}}}mobile-node") is None and d.find(f".//{{{M}}}home-agent") is None
    assert d.find(f".//{{{M}}}router-id") is not None
