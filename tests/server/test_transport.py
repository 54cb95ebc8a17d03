"""SSH transport and framing end to end with a raw client: big messages, abrupt disconnects, hostile XML."""

from __future__ import annotations

import logging
import time

import pytest
from lxml import etree
from nc_rawclient import RawClient
from nc_server import ADMIN, MIPHA_NS, connect

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
NS = {"nc": NC, "m": MIPHA_NS}
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"


def _wait(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def big_edit(n: int) -> bytes:
    mns = "".join(
        f"<mobile-node><name>mn{i}</name><home-address>10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}</home-address>"
        f"<security-association><spi>{256 + i}</spi><key>{KEY}</key></security-association></mobile-node>"
        for i in range(1, n + 1)
    )
    return (
        f'<rpc xmlns="{NC}" message-id="big"><edit-config><target><running/></target><config>'
        f'<virtual-routers xmlns="{MIPHA_NS}"><virtual-router><name>default</name>{mns}</virtual-router></virtual-routers>'
        "</config></edit-config></rpc>"
    ).encode()


@pytest.fixture
def raw(server):
    c = RawClient(server.port, *ADMIN)
    yield c
    c.close()


def test_hello_over_the_wire(raw):
    hello = etree.fromstring(raw.hello)
    assert hello.tag == f"{{{NC}}}hello"
    assert hello.findtext("nc:session-id", namespaces=NS).isdigit()
    caps = {c.text for c in hello.iterfind(".//nc:capability", NS)}
    assert "urn:ietf:params:netconf:base:1.1" in caps and "urn:ietf:params:netconf:base:1.0" in caps


def test_base_10_session(server):
    c = RawClient(server.port, *ADMIN, chunked=False)
    try:
        assert c.rpc("<get-config><source><running/></source></get-config>") == (
            b'<rpc-reply xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="1">'
            b'<data xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"></data></rpc-reply>'
        )
    finally:
        c.close()


def test_15mb_edit_config(server, raw):
    msg = big_edit(80_000)
    assert len(msg) > 15_000_000
    # send in many chunks, as a real 1.1 client with a small chunk size would
    step = 64 * 1024
    raw.send_raw(
        b"".join(b"\n#%d\n%s" % (len(msg[i : i + step]), msg[i : i + step]) for i in range(0, len(msg), step))
        + b"\n##\n"
    )
    reply = raw.recv()
    assert (
        reply
        == b'<rpc-reply xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="big"><ok/></rpc-reply>'
    )
    assert (
        server.call(
            lambda: sum(
                1 for _ in next(iter(server.handle.core.ds.running)).iter(f"{{{MIPHA_NS}}}mobile-node")
            )
        )
        == 80_000
    )


def test_disconnect_mid_chunk_leaves_server_idle(server):
    core = server.handle.core
    c = RawClient(server.port, *ADMIN)
    sid = int(etree.fromstring(c.hello).findtext("nc:session-id", namespaces=NS))
    c.send_raw(b"\n#1000000\n<rpc xmlns='" + NC.encode() + b"' message-id='1'><get-config>")
    c.close()
    assert _wait(lambda: server.call(lambda: sid not in core.sessions))
    # no busy loop left behind: the process burns (almost) no CPU while idle
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(1.0)
    busy = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    assert busy < 0.5
    # and the server still serves
    m = connect(server)
    m.close_session()


def test_malformed_and_missing_message_id_over_the_wire(raw):
    raw.send(b"<rpc message-id='1' xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'><get>")
    r = etree.fromstring(raw.recv())
    assert r.findtext(".//nc:error-tag", namespaces=NS) == "malformed-message"
    r = etree.fromstring(raw.rpc("<get/>").replace(b'message-id="1"', b""))  # reply for a valid rpc
    raw.send(b"<rpc xmlns='urn:ietf:params:xml:ns:netconf:base:1.0'><get/></rpc>")
    r = etree.fromstring(raw.recv())
    assert r.findtext(".//nc:error-tag", namespaces=NS) == "missing-attribute"
    assert r.findtext(".//nc:bad-attribute", namespaces=NS) == "message-id"


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE rpc [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<rpc message-id="1" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><edit-config><target><running/></target><config><virtual-routers xmlns="urn:mipha:yang:mipha-home-agent"><virtual-router><name>&xxe;</name></virtual-router></virtual-routers></config></edit-config></rpc>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;"><!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;"><!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<rpc message-id="1" xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><get-config><source><running/></source><filter><virtual-routers xmlns="urn:mipha:yang:mipha-home-agent"><virtual-router><name>&lol9;</name></virtual-router></virtual-routers></filter></get-config></rpc>"""


@pytest.mark.parametrize("payload", [XXE, LAUGHS], ids=["xxe", "billion-laughs"])
def test_hostile_xml_rejected(server, raw, payload):
    raw.send(payload)
    r = etree.fromstring(raw.recv())
    assert r.findtext(".//nc:error-tag", namespaces=NS) == "malformed-message"
    assert b"root:" not in etree.tostring(r)
    assert server.call(lambda: len(server.handle.core.ds.running)) == 0
    assert raw.rpc("<get-config><source><running/></source></get-config>", mid="2").endswith(
        b'<data xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"></data></rpc-reply>'
    )


def test_message_size_limit_closes_session(server_factory):
    srv = server_factory(max_message_size=10_000)
    c = RawClient(srv.port, *ADMIN)
    try:
        c.send(
            b"<rpc xmlns='urn:ietf:params:xml:ns:netconf:base:1.0' message-id='1'><get/>"
            + b" " * 20_000
            + b"</rpc>"
        )
        r = etree.fromstring(c.recv())
        assert r.findtext(".//nc:error-tag", namespaces=NS) == "malformed-message"
        with pytest.raises((EOFError, OSError)):
            c.recv()
    finally:
        c.close()


def test_failed_login_logged_and_slowed(server, caplog):
    from ncclient.transport.errors import AuthenticationError

    caplog.set_level(logging.WARNING, logger="server.session")
    with pytest.raises(AuthenticationError):
        connect(server, ("admin", "nope"))
    assert any("failed password login for 'admin'" in r.getMessage() for r in caplog.records)


def test_host_key_kept_across_restarts(server_factory, tmp_path, host_key_path):
    a = server_factory(state_dir=tmp_path / "s1")
    assert host_key_path.exists() and host_key_path.stat().st_mode & 0o077 == 0
    first = RawClient(a.port, *ADMIN)
    fp1 = first.transport.get_remote_server_key().get_fingerprint()
    first.close()
    b = server_factory(state_dir=tmp_path / "s2")
    second = RawClient(b.port, *ADMIN)
    assert second.transport.get_remote_server_key().get_fingerprint() == fp1  # same configured key file
    second.close()


def test_running_persisted_and_reloaded(server_factory, tmp_path):
    state = tmp_path / "state"
    a = server_factory(state_dir=state)
    m = connect(a)
    m.edit_config(
        target="running",
        config=f'<config xmlns="{NC}"><virtual-routers xmlns="{MIPHA_NS}"><virtual-router><name>keep</name></virtual-router></virtual-routers></config>',
    )
    m.close_session()
    a.stop()
    assert (state / "running.xml").exists()
    assert not list(state.glob(".running.*.tmp"))
    b = server_factory(state_dir=state)
    m = connect(b)
    assert "<name>keep</name>" in m.get_config("running").xml
    m.close_session()


def test_session_limit(server_factory):
    srv = server_factory(max_sessions=1)
    first = RawClient(srv.port, *ADMIN)
    try:
        with pytest.raises(Exception):  # noqa: B017 - paramiko raises ChannelException or SSHException
            RawClient(srv.port, *ADMIN)
    finally:
        first.close()
    assert _wait(lambda: srv.call(lambda: len(srv.handle.core.sessions)) == 0)
    RawClient(srv.port, *ADMIN).close()  # a slot is free again
