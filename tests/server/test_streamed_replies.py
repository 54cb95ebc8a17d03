"""Replies streamed while they are produced: a provider's generator of raw parts (a <get> of every
binding) is written part by part, overlapping production with sending, paced by the channel, with
notifications and later replies held until the reply is whole (server/protocol.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import time

import pytest
from lxml import etree
from nc_harness import NS, Harness, idle
from nc_rawclient import RawClient
from nc_server import ADMIN, ServerThread, connect, make_config

from server import protocol
from server.operational import StateRequest, raw_placeholder
from server.tree import Forest

M = NS["m"]
NOTIF = "urn:ietf:params:xml:ns:netconf:notification:1.0"
GET_ALL = (
    f'<get><filter type="subtree"><virtual-routers xmlns="{M}"><virtual-router><home-agent><bindings/>'
    "</home-agent></virtual-router></virtual-routers></filter></get>"
)
GET_RUNNING = "<get-config><source><running/></source></get-config>"


def page(index: int, per_page: int) -> bytes:
    return b"".join(
        b'<binding xmlns="%s"><home-address>10.%d.%d.%d</home-address><care-of-address>192.0.2.1'
        b"</care-of-address><lifetime-granted>600</lifetime-granted></binding>"
        % (M.encode(), index >> 8, index & 255, n)
        for n in range(per_page)
    )


class StreamingProvider:
    """Bindings as a generator of pages; records how far production got and whether it was closed."""

    roots = frozenset({(M, "virtual-routers")})

    def __init__(self, pages: int, per_page: int = 10, on_page=None) -> None:
        self.pages, self.per_page, self.on_page = pages, per_page, on_page
        self.produced = 0
        self.closed = False

    def get_state(self, request: StateRequest) -> list[etree._Element]:
        request.raw["b"] = self._produce()
        return [
            etree.fromstring(
                f'<virtual-routers xmlns="{M}"><virtual-router><name>default</name><home-agent><bindings>'
                f"{raw_placeholder('b')}</bindings></home-agent></virtual-router></virtual-routers>"
            )
        ]

    def _produce(self):
        try:
            for i in range(self.pages):
                if self.on_page is not None:
                    self.on_page(i)
                self.produced += 1
                yield page(i, self.per_page)
        finally:
            self.closed = True


def running() -> Forest:
    return Forest(
        [
            etree.fromstring(
                f'<virtual-routers xmlns="{M}"><virtual-router><name>default</name>'
                "<router-id>10.0.0.1</router-id></virtual-router></virtual-routers>"
            )
        ]
    )


def harness(provider: StreamingProvider) -> Harness:
    h = Harness(providers=[provider])
    h.core.ds.running = running()
    return h


def homes(reply: etree._Element) -> list[str]:
    return [b.findtext(f"{{{M}}}home-address") for b in reply.iter(f"{{{M}}}binding")]


def test_reply_is_written_while_produced_and_nothing_interleaves_with_it():
    seen_mid_message: list[bool] = []
    h: Harness

    def on_page(i: int) -> None:
        if i == 20:
            # pages 0..19 are already on the wire, the reply is not whole yet
            seen_mid_message.append(a.out.mid_message and not a.inbox)
            event = etree.Element(f"{{{M}}}binding-created")
            etree.SubElement(event, f"{{{M}}}virtual-router").text = "default"
            h.core.publish(event)

    provider = StreamingProvider(pages=50, on_page=on_page)
    h = harness(provider)
    try:
        a = h.client()
        a.ok(f"<create-subscription xmlns='{NOTIF}'/>")
        a.send_rpc(GET_ALL)
        a.send_rpc(GET_RUNNING)  # arrives while the reply streams: answered after it
        first, second, third = a.reply(), a.reply(), a.reply()
        assert seen_mid_message == [True]
        assert first.get("message-id") == "2" and len(homes(first)) == 50 * 10
        assert homes(first)[:2] == ["10.0.0.0", "10.0.0.1"] and homes(first)[-1] == "10.0.49.9"
        assert etree.QName(second).localname == "notification"
        assert second.find(f"{{{M}}}binding-created") is not None
        assert third.get("message-id") == "3" and third.find("nc:data", NS) is not None
        assert provider.produced == 50 and provider.closed and idle(h)
    finally:
        h.close()


def test_small_replies_go_out_as_one_chunk_large_ones_part_by_part():
    """Parts are joined when small (one chunk, one SSH packet: the round trip of a small get-config
    is 0.27-0.31 ms with this, 0.41 ms with a write per part) and never joined when large."""
    h = harness(StreamingProvider(pages=1))
    try:
        a = h.client()
        writes: list = []
        real = a.sess._write
        a.sess._write = lambda data: (writes.append(data), real(data))
        a.data(GET_RUNNING)
        assert len(writes) == 1 and isinstance(writes[0], bytes)
        assert len(re.findall(rb"\n#\d+\n", writes[0])) == 1
        writes.clear()
        big = [b"<x/>" * 50_000, b"<y/>" * 50_000]  # 400 KB
        a.sess._send_reply(None, big)
        assert len(writes) == 1 and isinstance(writes[0], list) and len(writes[0]) == 5  # head, 2, tail, end
    finally:
        h.close()


def test_get_data_streams_in_the_nmda_data_element():
    h = harness(StreamingProvider(pages=30))
    try:
        nmda = "urn:ietf:params:xml:ns:yang:ietf-netconf-nmda"
        r = h.client().rpc(
            f'<get-data xmlns="{nmda}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores">'
            "<datastore>ds:operational</datastore><config-filter>false</config-filter></get-data>"
        )
        (data,) = r
        assert data.tag == f"{{{nmda}}}data" and len(homes(data)) == 300
    finally:
        h.close()


@pytest.mark.parametrize("how", ["connection lost", "kill-session"])
def test_session_gone_mid_stream_stops_production(how):
    provider = StreamingProvider(pages=10_000)
    h = harness(provider)
    try:
        victim, other = h.client(), h.client()
        victim.send_rpc(GET_ALL)
        victim.send_rpc(GET_RUNNING)  # queued behind the stream: dropped with the session
        h.run_until(lambda: provider.produced >= 5)
        if how == "kill-session":
            other.ok(f"<kill-session><session-id>{victim.sess.id}</session-id></kill-session>")
        else:
            victim.sess.connection_lost()
        h.run_until(lambda: idle(h))
        assert victim.closed and provider.closed and provider.produced < 10_000
        assert victim.sess._busy is None and not victim.sess._backlog
        assert other.data(GET_RUNNING).find(f"{{{M}}}virtual-routers") is not None
    finally:
        h.close()


def test_provider_failing_mid_stream_closes_only_that_session(caplog):
    def on_page(i: int) -> None:
        if i == 7:
            raise RuntimeError("provider bug")

    h = harness(StreamingProvider(pages=50, on_page=on_page))
    try:
        victim, other = h.client(), h.client()
        victim.send_rpc(GET_ALL)
        with caplog.at_level(logging.ERROR, logger="server.protocol"):
            h.run_until(lambda: victim.closed)
        assert not victim.inbox  # no half reply was ever parsed as a message
        assert "failed half written" in caplog.text
        assert other.data(GET_RUNNING).find(f"{{{M}}}virtual-routers") is not None
        assert idle(h)
    finally:
        h.close()


def test_notifications_held_for_a_stalled_stream_are_bounded(monkeypatch, caplog):
    """A client that stops reading mid-reply stalls the stream; the notifications held for it are
    bounded (HELD_LIMIT): past it the session is dropped instead of growing the server forever."""
    monkeypatch.setattr(protocol, "HELD_LIMIT", 10_000)
    h = harness(StreamingProvider(pages=20))
    try:
        a = h.client()
        a.ok(f"<create-subscription xmlns='{NOTIF}'/>")
        stalled = asyncio.Event()

        async def never_drains() -> None:
            stalled.set()
            await asyncio.Future()

        a.sess._drain = never_drains
        a.send_rpc(GET_ALL)
        h.run_until(stalled.is_set)
        event = etree.Element(f"{{{M}}}binding-created")
        etree.SubElement(event, f"{{{M}}}virtual-router").text = "x" * 1000
        with caplog.at_level(logging.WARNING, logger="server.protocol"):
            for _ in range(5):
                h.core.publish(event)
            assert not a.closed  # ~5 KB held: under the limit
            for _ in range(10):
                h.core.publish(event)
            h.run_until(lambda: a.closed)
        assert "client is not reading" in caplog.text
        assert idle(h)
    finally:
        h.close()


def test_eof_after_rpcs_answers_them_then_ends_the_session():
    """SSH EOF right behind the last RPC (a piped script): what was received is still answered, in
    order, then the session ends; an idle session ends at once."""
    h = harness(StreamingProvider(pages=20))
    try:
        a = h.client()
        a.send_rpc(GET_ALL)
        a.send_rpc(GET_RUNNING)
        assert a.sess.eof_received() is True  # replies pending: our half of the channel stays open
        first, second = a.reply(), a.reply()
        assert len(homes(first)) == 200 and second.find("nc:data", NS) is not None
        h.run_until(lambda: a.closed)
        b = h.client()
        assert b.sess.eof_received() is False and b.closed
        assert idle(h)
    finally:
        h.close()


def wait_stalled(srv, provider, timeout: float = 60) -> int:
    """Pages produced once production started and then made no progress for 1 s (or at the deadline):
    a loaded box may take more than a second to fill the window."""
    deadline = time.monotonic() + timeout
    held, since = srv.call(lambda: provider.produced), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = srv.call(lambda: provider.produced)
        if now != held:
            held, since = now, time.monotonic()
        elif held >= 2 and time.monotonic() - since >= 1.0:
            break
    return held


def test_over_ssh_production_waits_for_a_client_that_does_not_read(
    tmp_path, host_key_path, password_hashes, client_key
):
    """100 pages of ~0.5 MB: while the client reads nothing, the server produces only what the SSH
    window and the channel's write buffer hold (a few MB), then the whole reply arrives intact."""
    provider = StreamingProvider(pages=100, per_page=3000)
    size = len(page(0, 3000))
    srv = ServerThread(
        make_config(tmp_path / "state", host_key_path, password_hashes, client_key[1]), providers=[provider]
    )
    try:
        srv.call(lambda: setattr(srv.handle.core.ds, "running", running()))
        c = RawClient(srv.port, *ADMIN)
        try:
            c.send(
                f'<rpc xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="1">{GET_ALL}</rpc>'.encode()
            )
            held = wait_stalled(srv, provider)
            assert 2 <= held <= 30, f"{held} pages of {size} bytes produced for a client that reads nothing"
            reply = etree.fromstring(c.recv())
            assert provider.produced == 100 and len(homes(reply)) == 100 * 3000
        finally:
            c.close()
    finally:
        srv.stop()


@pytest.fixture
def streaming(tmp_path, host_key_path, password_hashes, client_key):
    provider = StreamingProvider(pages=40, per_page=500)
    srv = ServerThread(
        make_config(tmp_path / "state", host_key_path, password_hashes, client_key[1]), providers=[provider]
    )
    srv.call(lambda: setattr(srv.handle.core.ds, "running", running()))
    yield srv
    srv.stop()


SUBTREE = GET_ALL.split('<filter type="subtree">', 1)[1].split("</filter>", 1)[0]


def test_streamed_reply_read_by_ncclient_and_netconf_client(streaming):
    """40 chunks of base:1.1 framing, read by two independent client implementations."""
    with connect(streaming) as m:
        reply = m.get(filter=("subtree", SUBTREE))
        assert len(homes(etree.fromstring(reply.xml.encode()))) == 40 * 500
        assert m.get_config(source="running").ok  # the session goes on after the stream

    from netconf_client.connect import connect_ssh
    from netconf_client.ncclient import Manager

    with connect_ssh(host="127.0.0.1", port=streaming.port, username=ADMIN[0], password=ADMIN[1]) as session:
        data = etree.fromstring(Manager(session, timeout=30).get(filter=SUBTREE).data_xml)
        assert len(homes(data)) == 40 * 500


@pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH client not installed")
def test_streamed_reply_in_base_10_framing_with_openssh(streaming, client_key):
    """base:1.0: the parts go out as they are and ]]>]]> ends the reply; the close-session sent right
    behind the <get> waits for the stream and is answered after it."""
    nc = b"urn:ietf:params:xml:ns:netconf:base:1.0"
    hello = (
        b'<hello xmlns="%s"><capabilities><capability>urn:ietf:params:netconf:base:1.0</capability>'
        b"</capabilities></hello>]]>]]>" % nc
    )
    rpcs = (
        b'<rpc message-id="1" xmlns="%s">%s</rpc>]]>]]><rpc message-id="2" xmlns="%s"><close-session/></rpc>]]>]]>'
        % (
            nc,
            GET_ALL.encode(),
            nc,
        )
    )
    cmd = ["ssh", "-F", "/dev/null", "-i", str(client_key[0]), "-p", str(streaming.port)]
    for option in (
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "LogLevel=ERROR",
    ):
        cmd += ["-o", option]
    cmd += ["admin@127.0.0.1", "-s", "netconf"]
    p = subprocess.run(
        cmd, input=hello + rpcs, capture_output=True, timeout=60, env={**os.environ, "SSH_AUTH_SOCK": ""}
    )
    assert p.returncode == 0, p.stderr
    msgs = [m.strip() for m in p.stdout.split(b"]]>]]>") if m.strip()]
    assert len(msgs) == 3
    reply, ok = etree.fromstring(msgs[1]), etree.fromstring(msgs[2])
    assert reply.get("message-id") == "1" and len(homes(reply)) == 40 * 500
    assert ok.get("message-id") == "2" and ok.find("nc:ok", NS) is not None
