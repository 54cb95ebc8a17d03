"""An HTTPS-notif receiver (draft-ietf-netconf-https-notif) for tests: aiohttp on loopback in its own
thread, TLS with a certificate from a test CA, client certificates required; it answers
GET <path>/capabilities and records every POST <path>/relay-notification (with the CLOCK_MONOTONIC time
its body was read). It can be stopped and started again on the same port (a receiver that goes away and
comes back). ``configured_subscription`` is the configuration of an on-change subscription of the
binding table delivered to such a receiver."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

CAP = "urn:ietf:capability:https-notif-receiver:encoding:"
HNT = "urn:ietf:params:xml:ns:yang:ietf-https-notif-transport"
SN = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
SNR = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notif-receivers"
HN = "urn:mipha:yang:mipha-https-notif"
YP = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
DS = "urn:ietf:params:xml:ns:yang:ietf-datastores"
HA_NS = "urn:mipha:yang:mipha-home-agent"


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool, ip: str | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key) -> None:
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, the receiver's certificate (127.0.0.1) and mipha's client certificate, each PEM with key."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out = {"ca": d / "ca.pem"}
    for name, ip in (("receiver", "127.0.0.1"), ("mipha", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(d / f"{name}.pem", _cert(name, key, "test-ca", ca_key, ca=False, ip=ip), key)
        out[name] = d / f"{name}.pem"
    return out


def configured_subscription(pki: dict[str, Path], port: int, sid: int = 1) -> str:
    """A <config> with the receiver instance ``collector`` (127.0.0.1:``port``, ``pki``'s CA and mipha's
    client certificate) and subscription ``sid``: on-change (sync-on-start false) of the operational
    binding table, over HTTPS to that receiver."""
    return (
        f'<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0"><subscriptions xmlns="{SN}">'
        f'<receiver-instances xmlns="{SNR}"><receiver-instance><name>collector</name>'
        f'<https-receiver xmlns="{HN}"><remote-address>127.0.0.1</remote-address>'
        f"<remote-port>{port}</remote-port><path>/collector</path><ca-certificate>{pki['ca']}</ca-certificate>"
        f"<client-certificate>{pki['mipha']}</client-certificate></https-receiver></receiver-instance>"
        f'</receiver-instances><subscription><id>{sid}</id><transport xmlns:hn="{HN}">hn:https</transport>'
        f'<datastore xmlns="{YP}" xmlns:ds="{DS}">ds:operational</datastore>'
        f'<datastore-subtree-filter xmlns="{YP}"><virtual-routers xmlns="{HA_NS}"><virtual-router><home-agent>'
        "<bindings/></home-agent></virtual-router></virtual-routers></datastore-subtree-filter>"
        f'<on-change xmlns="{YP}"><sync-on-start>false</sync-on-start></on-change>'
        "<receivers><receiver><name>r1</name>"
        f'<receiver-instance-ref xmlns="{SNR}">collector</receiver-instance-ref></receiver></receivers>'
        "</subscription></subscriptions></config>"
    )


@dataclass
class Post:
    ctype: str
    body: bytes
    client: str  # the common name of the client certificate
    at: float = 0.0  # time.perf_counter() when its body had been read

    def xml(self) -> etree._Element:
        return etree.fromstring(self.body)

    def json(self):
        return json.loads(self.body)

    def kind(self) -> str:
        """The notification's event: its local name (XML) or member name without module (JSON)."""
        if "json" in self.ctype:
            note = self.json()["ietf-restconf:notification"]
            return next(k for k in note if k != "eventTime").split(":")[-1]
        return etree.QName(self.xml()[1]).localname


class Receiver:
    """`encodings`: what GET capabilities offers ("xml", "json")."""

    def __init__(self, pki: dict[str, Path], path: str = "/collector", encodings=("xml", "json")) -> None:
        self.pki, self.path, self.encodings = pki, path.rstrip("/"), encodings
        self.arrived = 0  # POSTs that reached the handler (answered or held)
        self.refuse = False  # answer notifications 400 (and keep none)
        self.posts: list[Post] = []
        self.capability_reads = 0
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.gate = asyncio.Event()
        self.gate.set()
        self.thread = threading.Thread(target=self.loop.run_forever, name="notif-receiver", daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.start()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def start(self) -> None:
        self._run(self._start())

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get(self.path + "/capabilities", self._capabilities)
        app.router.add_post(self.path + "/relay-notification", self._relay)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki["ca"]))
        ctx.load_cert_chain(str(self.pki["receiver"]))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=ctx, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def hold(self) -> None:
        """Answer no POST until `release` (a collector that stopped reading)."""
        self.loop.call_soon_threadsafe(self.gate.clear)

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.gate.set)

    def stop(self) -> None:
        """Close the listener and every connection (the port stays this receiver's)."""
        if self.runner is not None:
            self._run(self.runner.cleanup())
            self.runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _capabilities(self, request: web.Request) -> web.Response:
        self.capability_reads += 1
        caps = [CAP + e for e in self.encodings]
        if "json" in request.headers.get("Accept", "").split(",")[0]:
            body = json.dumps(
                {"ietf-https-notif-transport:receiver-capabilities": {"receiver-capability": caps}}
            )
            return web.Response(body=body.encode(), content_type="application/json")
        inner = "".join(f"<receiver-capability>{c}</receiver-capability>" for c in caps)
        return web.Response(
            body=f'<receiver-capabilities xmlns="{HNT}">{inner}</receiver-capabilities>'.encode(),
            content_type="application/xml",
        )

    async def _relay(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = ""
        for rdn in (peer or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        body = await request.read()
        at = time.perf_counter()
        self.arrived += 1
        await self.gate.wait()
        if self.refuse:
            return web.Response(status=400)
        with self.lock:
            self.posts.append(Post(request.headers.get("Content-Type", ""), body, cn, at))
        return web.Response(status=204)

    def wait(self, pred, timeout: float = 20.0, what: str = "") -> list[Post]:
        """Poll until pred(posts) holds; returns the posts so far."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                posts = list(self.posts)
            if pred(posts):
                return posts
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: {what} not seen in {timeout} s: {[p.kind() for p in posts]}")
            time.sleep(0.02)

    def wait_kind(self, kind: str, count: int = 1, timeout: float = 20.0) -> list[Post]:
        """Poll until `count` notifications of `kind` arrived; returns those."""
        posts = self.wait(lambda ps: sum(p.kind() == kind for p in ps) >= count, timeout, kind)
        return [p for p in posts if p.kind() == kind]
