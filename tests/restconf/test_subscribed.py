"""RFC 8650: dynamic subscriptions over RESTCONF, against a real server over TLS: establish-subscription
with curl (JSON and XML), its `uri`, the events read as Server-Sent Events by a raw TLS client (and by
curl), push-update / push-change-update in RFC 7951 JSON, NACM on what is pushed, modify and delete,
the subscription's end with its GET, and the errors."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from base64 import b64encode
from urllib.parse import urlsplit

import pytest
from nc_server import connect
from ncclient.operations.rpc import RPCError
from ncclient.xml_ import to_ele
from rc_server import ADMIN, CURL, OPERATOR, M, curl

OPS = "/restconf/operations/ietf-subscribed-notifications"
JSON = "application/yang-data+json"
XML = "application/yang-data+xml"
VR = f"/restconf/data/{M}:virtual-routers/virtual-router=default"
KEY = "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff"
SN = "ietf-subscribed-notifications"
YP = "ietf-yang-push"


class SseClient:
    """A raw HTTP/1.1 client over TLS (ssl + socket, verifying the server's certificate) reading one
    text/event-stream response event by event."""

    def __init__(self, srv, uri: str, user: tuple[str, str] = ADMIN) -> None:
        parts = urlsplit(uri)
        ctx = ssl.create_default_context(cafile=str(srv.cert))
        raw = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock = ctx.wrap_socket(raw, server_hostname=parts.hostname)
        cred = b64encode(f"{user[0]}:{user[1]}".encode()).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Basic {cred}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self.buf = b""
        head = self._until(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        self.body = b""

    def _until(self, mark: bytes) -> bytes:
        while mark not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        out, _, self.buf = self.buf.partition(mark)
        return out

    def _chunk(self) -> bytes:
        size = int(self._until(b"\r\n"), 16)
        if size == 0:
            raise EOFError
        while len(self.buf) < size + 2:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data
        out, self.buf = self.buf[:size], self.buf[size + 2 :]
        return out

    def event(self, timeout: float = 30) -> str:
        """The next event's data (the `data:` lines joined)."""
        self.sock.settimeout(timeout)
        while b"\n\n" not in self.body:
            self.body += self._chunk() if self.chunked else self._raw()
        event, _, self.body = self.body.partition(b"\n\n")
        return "\n".join(line[6:] for line in event.decode().split("\n") if line.startswith("data: "))

    def _raw(self) -> bytes:
        data, self.buf = self.buf, b""
        return data or self.sock.recv(65536)

    def ended(self, timeout: float = 30) -> bool:
        """Does the stream end (the server closes it) before `timeout`?"""
        try:
            while True:
                self.event(timeout)
        except (EOFError, ConnectionError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def establish(srv, body: dict, user=ADMIN) -> dict:
    r = curl(
        srv, "POST", f"{OPS}:establish-subscription", json.dumps({f"{SN}:input": body}), ctype=JSON, user=user
    )
    assert r.status == 200, r.body
    return r.json()[f"{SN}:output"]


def seed(srv) -> None:
    body = {f"{M}:virtual-router": [{"name": "default", "home-agent": {"address": "192.0.2.1"}}]}
    assert curl(srv, "PUT", VR, json.dumps(body), ctype=JSON).status == 201


def subscriptions(srv) -> list:
    r = curl(srv, "GET", f"/restconf/data/{SN}:subscriptions")
    return r.json()[f"{SN}:subscriptions"].get("subscription", []) if r.status == 200 else []


def notification(data: str) -> tuple[str, dict]:
    """(name, content) of an RFC 8040 §6.4 JSON event."""
    n = json.loads(data)["ietf-restconf:notification"]
    assert "eventTime" in n
    ((name, content),) = [(k, v) for k, v in n.items() if k != "eventTime"]
    return name, content


def test_on_change_push_in_json_over_sse(rc):
    seed(rc)
    out = establish(rc, {f"{YP}:datastore": "ietf-datastores:running", f"{YP}:on-change": {}})
    sid, uri = out["id"], out["ietf-restconf-subscribed-notifications:uri"]
    assert uri == f"{rc.base}/restconf/subscriptions/{sid}"
    sse = SseClient(rc, uri)
    try:
        assert sse.status == 200
        name, content = notification(sse.event())  # sync-on-start: the whole selection
        assert name == f"{YP}:push-update" and content["id"] == sid
        vr = content["datastore-contents"][f"{M}:virtual-routers"]["virtual-router"][0]
        assert vr["home-agent"]["address"] == "192.0.2.1"
        mn = {f"{M}:mobile-node": [{"name": "mn1", "home-address": "10.0.0.1"}]}
        assert curl(rc, "POST", VR, json.dumps(mn), ctype=JSON).status == 201
        name, content = notification(sse.event())
        assert name == f"{YP}:push-change-update" and content["id"] == sid
        (edit,) = content["datastore-changes"]["yang-patch"]["edit"]
        assert edit["operation"] == "create"
        assert edit["target"].endswith("/virtual-router=default/mobile-node=mn1")
        assert edit["value"][f"{M}:mobile-node"][0]["home-address"] == "10.0.0.1"
        # delete-subscription by its owner: subscription-terminated, then the stream ends
        r = curl(
            rc, "POST", f"{OPS}:delete-subscription", json.dumps({f"{SN}:input": {"id": sid}}), ctype=JSON
        )
        assert r.status == 204, r.body
        name, content = notification(sse.event())
        assert name == f"{SN}:subscription-terminated" and content["reason"] == f"{SN}:no-such-subscription"
        assert sse.ended()
    finally:
        sse.close()
    assert curl(rc, "GET", uri.removeprefix(rc.base)).status == 404


def test_periodic_in_xml_read_by_curl_ends_with_its_get(rc):
    seed(rc)
    body = (
        f'<input xmlns="urn:ietf:params:xml:ns:yang:{SN}" xmlns:ds="urn:ietf:params:xml:ns:yang:ietf-datastores">'
        f'<datastore xmlns="urn:ietf:params:xml:ns:yang:{YP}">ds:running</datastore>'
        f'<periodic xmlns="urn:ietf:params:xml:ns:yang:{YP}"><period>20</period></periodic></input>'
    )
    r = curl(rc, "POST", f"{OPS}:establish-subscription", body, ctype=XML, accept=XML)
    assert r.status == 200, r.body
    assert b"<uri" in r.body and b"ietf-restconf-subscribed-notifications" in r.body
    path = "/restconf/subscriptions/" + r.body.split(b"/restconf/subscriptions/")[1].split(b"<")[0].decode()
    # curl reads the stream for a while (every 200 ms an update, XML since the request was), then leaves
    proc = subprocess.run(
        [CURL, "-sS", "-N", "--cacert", str(rc.cert), "-u", "{}:{}".format(*ADMIN), "--max-time", "2",
         "-H", "Accept: text/event-stream", rc.base + path],
        capture_output=True, timeout=30,
    )  # fmt: skip
    events = [e for e in proc.stdout.split(b"\n\n") if e.strip()]
    assert len(events) >= 3, proc.stdout
    assert all(b"<push-update" in e and b"192.0.2.1" in e for e in events)
    deadline = time.monotonic() + 10  # its GET ended: so did the subscription
    while subscriptions(rc):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert curl(rc, "GET", path).status == 404


def test_pushed_data_is_nacm_filtered(rc):
    seed(rc)
    out = establish(
        rc,
        {f"{YP}:datastore": "ietf-datastores:running", f"{YP}:on-change": {"sync-on-start": False}},
        user=OPERATOR,
    )
    sse = SseClient(rc, out["ietf-restconf-subscribed-notifications:uri"], user=OPERATOR)
    try:
        mn = {
            f"{M}:mobile-node": [
                {
                    "name": "mn1",
                    "home-address": "10.0.0.1",
                    "security-association": [{"spi": 300, "key": KEY}],
                }
            ]
        }
        assert curl(rc, "POST", VR, json.dumps(mn), ctype=JSON).status == 201
        data = sse.event()
        name, _content = notification(data)
        assert name == f"{YP}:push-change-update"
        assert '"spi"' in data and KEY not in data and '"key"' not in data  # nacm:default-deny-all
    finally:
        sse.close()


def test_modify_and_ownership(rc):
    seed(rc)
    out = establish(rc, {f"{YP}:datastore": "ietf-datastores:running", f"{YP}:periodic": {"period": 500}})
    sid = out["id"]
    # the events are the owner's: another user neither reads, modifies nor deletes them
    assert curl(rc, "GET", f"/restconf/subscriptions/{sid}", user=OPERATOR).status == 404
    for op in ("modify", "delete"):
        body = {f"{SN}:input": {"id": sid, **({f"{YP}:periodic": {"period": 100}} if op == "modify" else {})}}
        r = curl(rc, "POST", f"{OPS}:{op}-subscription", json.dumps(body), ctype=JSON, user=OPERATOR)
        assert r.status == 400, r.body
        assert r.json()["ietf-restconf:errors"]["error"][0]["error-app-tag"] == f"{SN}:no-such-subscription"
    sse = SseClient(rc, out["ietf-restconf-subscribed-notifications:uri"])
    try:
        assert SseClient(rc, out["ietf-restconf-subscribed-notifications:uri"]).status == 409  # read once
        assert notification(sse.event())[0] == f"{YP}:push-update"
        body = {f"{SN}:input": {"id": sid, f"{YP}:periodic": {"period": 100}}}
        assert curl(rc, "POST", f"{OPS}:modify-subscription", json.dumps(body), ctype=JSON).status == 204
        name = ""
        while name != f"{SN}:subscription-modified":
            name, content = notification(sse.event())
        assert content[f"{YP}:periodic"]["period"] == 100
        assert content["encoding"] == f"{SN}:encode-json"
        assert content["ietf-restconf-subscribed-notifications:uri"].endswith(
            f"/restconf/subscriptions/{sid}"
        )
        (sub,) = subscriptions(rc)
        assert sub["id"] == sid and sub["ietf-restconf-subscribed-notifications:uri"].endswith(str(sid))
        assert sub["receivers"]["receiver"][0]["name"].startswith("restconf-admin-")
    finally:
        sse.close()


def test_errors(rc):
    r = curl(
        rc,
        "POST",
        f"{OPS}:establish-subscription",
        json.dumps(
            {
                f"{SN}:input": {
                    "stream": "NETCONF",
                    "encoding": "ietf-subscribed-notifications:encode-xml",
                    "bogus": 1,
                }
            }
        ),
        ctype=JSON,
    )
    assert r.status == 400 and r.json()["ietf-restconf:errors"]["error"][0]["error-tag"] == "unknown-element"
    r = curl(
        rc,
        "POST",
        f"{OPS}:establish-subscription",
        json.dumps({f"{SN}:input": {"stream": "nosuch"}}),
        ctype=JSON,
    )
    assert r.status == 400
    assert r.json()["ietf-restconf:errors"]["error"][0]["error-app-tag"] == f"{SN}:stream-unavailable"
    assert curl(rc, "GET", "/restconf/subscriptions/12345").status == 404
    assert curl(rc, "POST", "/restconf/subscriptions/1").status == 405
    # NETCONF sessions get XML only: encode-json is RESTCONF's (advertised, refused over NETCONF)
    with connect(rc) as m:
        with pytest.raises(RPCError) as err:
            m.dispatch(
                to_ele(
                    f'<establish-subscription xmlns="urn:ietf:params:xml:ns:yang:{SN}" '
                    f'xmlns:sn="urn:ietf:params:xml:ns:yang:{SN}"><stream>NETCONF</stream>'
                    "<encoding>sn:encode-json</encoding></establish-subscription>"
                )
            )
        assert err.value.app_tag == f"{SN}:encoding-unsupported"
        lib = m.get(
            filter=("subtree", '<yang-library xmlns="urn:ietf:params:xml:ns:yang:ietf-yang-library"/>')
        ).xml
        assert "encode-json" in lib and "ietf-restconf-subscribed-notifications" in lib


def test_stream_subscription_over_restconf(rc):
    out = establish(rc, {"stream": "NETCONF"}, user=OPERATOR)
    sse = SseClient(rc, out["ietf-restconf-subscribed-notifications:uri"], user=OPERATOR)
    try:
        seed(rc)  # a config change: netconf-config-change on the stream
        name, _content = notification(sse.event())
        assert name == "ietf-netconf-notifications:netconf-config-change"
    finally:
        sse.close()


def test_json_xpath_filter_with_module_names(rc):
    seed(rc)
    mn = {f"{M}:mobile-node": [{"name": "mn1", "home-address": "10.0.0.1"}]}
    assert curl(rc, "POST", VR, json.dumps(mn), ctype=JSON).status == 201
    xpath = f"/{M}:virtual-routers/virtual-router/home-agent"  # RFC 7951: module names as prefixes
    out = establish(
        rc,
        {
            f"{YP}:datastore": "ietf-datastores:running",
            f"{YP}:datastore-xpath-filter": xpath,
            f"{YP}:periodic": {"period": 1000},
        },
    )
    sse = SseClient(rc, out["ietf-restconf-subscribed-notifications:uri"])
    try:
        name, content = notification(sse.event())
        assert name == f"{YP}:push-update"
        (vr,) = content["datastore-contents"][f"{M}:virtual-routers"]["virtual-router"]
        assert vr["home-agent"]["address"] == "192.0.2.1" and "mobile-node" not in vr
    finally:
        sse.close()


def test_unread_subscriptions_end_and_a_user_holds_a_bounded_number(rc, monkeypatch):
    from server.restconf import subscribed

    monkeypatch.setattr(subscribed, "CONNECT_SECONDS", 10.0)  # > the three establishes below, loaded
    monkeypatch.setattr(subscribed, "MAX_PER_USER", 2)
    body = {"stream": "NETCONF"}
    first, _second = establish(rc, body), establish(rc, body)
    r = curl(rc, "POST", f"{OPS}:establish-subscription", json.dumps({f"{SN}:input": body}), ctype=JSON)
    assert r.status == 409, r.body  # resource-denied
    assert r.json()["ietf-restconf:errors"]["error"][0]["error-app-tag"] == f"{SN}:insufficient-resources"
    assert establish(rc, body, user=OPERATOR)["id"]  # another user's are counted apart
    deadline = time.monotonic() + 40  # nobody GETs their events: they end
    while subscriptions(rc):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert curl(rc, "GET", f"/restconf/subscriptions/{first['id']}").status == 404
    assert establish(rc, body)["id"]  # room again
