"""The server over real SSH, driven by real clients: ncclient, netconf-console2, OpenSSH `ssh -s netconf`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lxml import etree
from nc_server import ADMIN, MIPHA_NS, OPERATOR, connect
from ncclient.operations.rpc import RPCError
from ncclient.transport.errors import AuthenticationError

NS = {"nc": "urn:ietf:params:xml:ns:netconf:base:1.0", "m": MIPHA_NS}
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"


def vr(body: str) -> str:
    return (
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><virtual-routers xmlns="{MIPHA_NS}">'
        f"<virtual-router><name>default</name>{body}</virtual-router></virtual-routers></config>"
    )


HA = "<router-id>10.0.0.1</router-id><home-agent><address>10.0.0.1</address></home-agent>"


def mn(name: str, addr: str, spi: int | None = None) -> str:
    sa = f"<security-association><spi>{spi}</spi><key>{KEY}</key></security-association>" if spi else ""
    return f"<mobile-node><name>{name}</name><home-address>{addr}</home-address>{sa}</mobile-node>"


def mn_names(reply) -> list[str]:
    root = etree.fromstring(reply.xml.encode())
    return [e.text for e in root.iterfind(".//m:mobile-node/m:name", NS)]


# -- ncclient ----------------------------------------------------------------------------------------------
def test_ncclient_edit_get_config_and_filters(nc):
    nc.edit_config(target="running", config=vr(HA + mn("a", "10.0.0.5") + mn("b", "10.0.0.6")))
    assert mn_names(nc.get_config("running")) == ["a", "b"]
    flt = f'<virtual-routers xmlns="{MIPHA_NS}"><virtual-router><mobile-node><name>b</name></mobile-node></virtual-router></virtual-routers>'
    r = nc.get_config("running", filter=("subtree", flt))
    assert mn_names(r) == ["b"]
    r = nc.get_config(
        "running",
        filter=("xpath", ({"m": MIPHA_NS}, "/m:virtual-routers/m:virtual-router/m:mobile-node[m:name='a']")),
    )
    assert mn_names(r) == ["a"]
    root = etree.fromstring(r.xml.encode())
    assert root.findtext(".//m:virtual-router/m:name", namespaces=NS) == "default"  # ancestor list key kept
    assert root.find(".//m:home-agent", NS) is None


def test_ncclient_rpc_error_fields(nc):
    with pytest.raises(RPCError) as ei:
        nc.edit_config(target="running", config=vr("<bogus/>"))
    err = ei.value
    assert err.tag == "unknown-element" and err.type == "application" and err.severity == "error"
    assert err.path == "/mipha:virtual-routers/mipha:virtual-router[mipha:name='default']"


def test_ncclient_parallel_sessions_with_locks(server, nc):
    other = connect(server)
    try:
        with nc.locked("running"):
            with pytest.raises(RPCError) as ei:
                other.lock("running")
            assert ei.value.tag == "lock-denied"
            assert ei.value.info and f"<session-id>{nc.session_id}</session-id>" in ei.value.info.replace(
                " ", ""
            )
            with pytest.raises(RPCError) as ei:
                other.edit_config(target="running", config=vr(HA))
            assert ei.value.tag == "in-use"
        other.lock("running")
        other.unlock("running")
        # concurrent editors in threads: all edits land, none is lost
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                m = connect(server)
                for j in range(5):
                    m.edit_config(target="running", config=vr(HA + mn(f"t{i}-{j}", f"10.0.{i + 1}.{j + 1}")))
                m.close_session()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert len(mn_names(nc.get_config("running"))) == 20
    finally:
        other.close_session()


def test_ncclient_candidate_confirmed_commit_timeout(server, nc):
    nc.edit_config(target="running", config=vr(HA + mn("a", "10.0.0.5")))
    nc.edit_config(target="candidate", config=vr(mn("b", "10.0.0.6")))
    nc.commit(confirmed=True, timeout="5")  # long enough to read running back on a loaded box
    assert mn_names(nc.get_config("running")) == ["a", "b"]
    import time

    deadline = time.monotonic() + 60
    while mn_names(nc.get_config("running")) != ["a"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mn_names(nc.get_config("running")) == ["a"]


def test_ncclient_kill_session(server, nc):
    victim = connect(server)
    victim.lock("candidate")
    nc.kill_session(victim.session_id)
    nc.lock("candidate")  # the victim's lock is gone
    nc.unlock("candidate")
    with pytest.raises(RPCError) as ei:
        nc.kill_session(nc.session_id)
    assert ei.value.tag == "invalid-value"


def test_ncclient_get_schema_and_monitoring(nc):
    r = nc.get_schema("mipha-home-agent")
    assert "module mipha-home-agent" in r.data
    r = nc.get(
        filter=(
            "subtree",
            '<netconf-state xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"><sessions/></netconf-state>',
        )
    )
    root = etree.fromstring(r.xml.encode())
    mon = {"mon": "urn:ietf:params:xml:ns:yang:ietf-netconf-monitoring"}
    ids = [e.text for e in root.iterfind(".//mon:session/mon:session-id", mon)]
    assert str(nc.session_id) in ids
    assert root.findtext(".//mon:session/mon:username", namespaces=mon) == "admin"
    r = nc.get(filter=("subtree", '<yang-library xmlns="urn:ietf:params:xml:ns:yang:ietf-yang-library"/>'))
    assert b"mipha-home-agent" in r.xml.encode()


def test_ncclient_notifications(server, nc):
    nc.create_subscription()
    other = connect(server)
    other.edit_config(target="running", config=vr(HA))
    other.close_session()
    kinds = []
    for _ in range(3):
        n = nc.take_notification(timeout=10)
        assert n is not None
        kinds.append(etree.QName(etree.fromstring(n.notification_xml.encode())[1]).localname)
    assert kinds == ["netconf-session-start", "netconf-config-change", "netconf-session-end"]


def test_ncclient_replay_from_log(server, nc):
    nc.edit_config(target="running", config=vr(HA))
    sub = connect(server)
    try:
        sub.create_subscription(
            start_time="2000-01-01T00:00:00Z",
            filter=(
                "subtree",
                '<netconf-config-change xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-notifications"/>',
            ),
        )
        n = sub.take_notification(timeout=10)
        body = etree.fromstring(n.notification_xml.encode())[1]
        assert etree.QName(body).localname == "netconf-config-change"
        assert body.findtext("{urn:ietf:params:xml:ns:yang:ietf-netconf-notifications}datastore") == "running"
        n = sub.take_notification(timeout=10)
        assert etree.QName(etree.fromstring(n.notification_xml.encode())[1]).localname == "replayComplete"
    finally:
        sub.close_session()


def test_ncclient_keys_hidden_from_operator(server, nc):
    nc.edit_config(target="running", config=vr(HA + mn("a", "10.0.0.5", spi=300)))
    op = connect(server, OPERATOR)
    try:
        xml = op.get_config("running").xml
        assert "<spi>300</spi>" in xml and KEY not in xml and "<key>" not in xml
        with pytest.raises(RPCError) as ei:
            op.edit_config(target="running", config=vr(HA + mn("a", "10.0.0.5", spi=301)))
        assert ei.value.tag == "access-denied"
    finally:
        op.close_session()
    assert KEY in nc.get_config("running").xml


def test_ncclient_wrong_password_refused(server):
    with pytest.raises(AuthenticationError):
        connect(server, (ADMIN[0], "wrong"))


def test_ncclient_public_key_login(server, client_key):
    from ncclient import manager

    m = manager.connect(
        host="127.0.0.1",
        port=server.port,
        username="admin",
        key_filename=str(client_key[0]),
        hostkey_verify=False,
        allow_agent=False,
        look_for_keys=False,
        timeout=30,
    )
    assert m.connected
    m.close_session()


# -- netconf-console2 ----------------------------------------------------------------------------------------
def _console(server, *args: str, user=ADMIN) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("netconf-console2")
    cmd = [str(exe), "--host", "127.0.0.1", "--port", str(server.port), "-u", user[0], "-p", user[1], *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_netconf_console2_edit_get_lock_commit(server, tmp_path):
    f = tmp_path / "cfg.xml"
    f.write_text(vr(HA + mn("nc2", "10.0.0.8")).split(">", 1)[1].rsplit("<", 1)[0])  # the content of <config>
    r = _console(server, "--db", "candidate", "--edit-config", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    r = _console(server, "--commit")
    assert r.returncode == 0 and '<ok xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"/>' in r.stdout, (
        r.stdout + r.stderr
    )
    r = _console(
        server,
        "--get-config",
        "-x",
        "/m:virtual-routers/m:virtual-router/m:mobile-node/m:name",
        "-N",
        f"m={MIPHA_NS}",
    )
    assert r.returncode == 0, r.stderr
    assert "<name>nc2</name>" in r.stdout
    r = _console(server, "--get-config", "--with-defaults", "report-all")
    assert "<udp-port>434</udp-port>" in r.stdout
    r = _console(server, "--get-schema", "ietf-netconf-with-defaults")
    assert "module ietf-netconf-with-defaults" in r.stdout
    r = _console(server, "--kill-session", "999999")
    assert "invalid-value" in r.stdout + r.stderr


# -- OpenSSH client ----------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_openssh_subsystem(server, client_key):
    hello = b'<?xml version="1.0"?><hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><capabilities><capability>urn:ietf:params:netconf:base:1.0</capability></capabilities></hello>]]>]]>'
    rpcs = (
        b'<rpc message-id="1" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><get-config><source><running/></source></get-config></rpc>]]>]]>'
        b'<rpc message-id="2" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><close-session/></rpc>]]>]]>'
    )
    cmd = [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(client_key[0]),
        "-p",
        str(server.port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "admin@127.0.0.1",
        "-s",
        "netconf",
    ]
    p = subprocess.run(
        cmd, input=hello + rpcs, capture_output=True, timeout=60, env={**os.environ, "SSH_AUTH_SOCK": ""}
    )
    assert p.returncode == 0, p.stderr
    msgs = [m.strip() for m in p.stdout.split(b"]]>]]>") if m.strip()]
    assert etree.QName(etree.fromstring(msgs[0])).localname == "hello"
    assert (
        msgs[1]
        == b'<rpc-reply xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="1"><data xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"></data></rpc-reply>'
    )
    assert (
        msgs[2]
        == b'<rpc-reply xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="2"><ok/></rpc-reply>'
    )


# -- scrapli-netconf (system ssh transport with a pty) and netconf-client ------------------------------------
def test_scrapli_netconf(server):
    from scrapli_netconf.driver import NetconfDriver

    dev = {
        "host": "127.0.0.1",
        "port": server.port,
        "auth_username": ADMIN[0],
        "auth_password": ADMIN[1],
        "auth_strict_key": False,
        "timeout_ops": 30,
        "ssh_config_file": False,
    }
    with NetconfDriver(**dev) as conn:
        body = vr(HA + mn("scr", "10.0.0.9")).replace(' xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"', "")
        r = conn.edit_config(config=body, target="candidate")
        assert not r.failed, r.result
        assert not conn.commit().failed
        flt = f'<virtual-routers xmlns="{MIPHA_NS}"><virtual-router><mobile-node><name>scr</name></mobile-node></virtual-router></virtual-routers>'
        r = conn.get_config(source="running", filter_=flt, filter_type="subtree")
        root = etree.fromstring(r.result.encode())
        assert [e.text for e in root.iterfind(".//m:mobile-node/m:name", NS)] == ["scr"]
        assert not conn.lock(target="running").failed
        r = conn.lock(target="running")
        assert r.failed and "lock-denied" in r.result
        assert not conn.unlock(target="running").failed


def test_netconf_client(server):
    from netconf_client.connect import connect_ssh
    from netconf_client.error import RpcError as NcRpcError
    from netconf_client.ncclient import Manager

    with connect_ssh(host="127.0.0.1", port=server.port, username=ADMIN[0], password=ADMIN[1]) as session:
        mgr = Manager(session, timeout=30)
        mgr.edit_config(target="running", config=vr(HA + mn("ncc", "10.0.0.10")))
        data = etree.fromstring(mgr.get_config(source="running").data_xml)
        assert [e.text for e in data.iterfind(".//m:mobile-node/m:name", NS)] == ["ncc"]
        with pytest.raises(NcRpcError) as ei:
            mgr.edit_config(target="running", config=vr(mn("dup", "10.0.0.10")))
        assert ei.value.tag == "operation-failed"
        assert b"<error-app-tag>data-not-unique</error-app-tag>" in ei.value.reply_raw
        mgr.validate(source="running")
