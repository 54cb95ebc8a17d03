"""The RESTCONF HTTPS server (aiohttp): routing, authentication, content negotiation, conditional
requests and error rendering; the methods themselves are in handlers.py / patch.py / streams.py.

`await start_restconf(core, config)` next to the NETCONF listener, on the same core: same users,
datastores, locks, NACM and event log.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from server.auth import User, verify_password
from server.errors import RpcError
from server.nacm import Principal
from server.restconf import codec, direct, handlers
from server.restconf.errors import RESTCONF_NS, HttpError, http_error, not_found, render_json, render_xml
from server.restconf.patch import yang_patch
from server.restconf.session import RestconfSession, Versions
from server.restconf.streams import RCMON_NS, MonitoringProvider, serve_stream
from server.restconf.subscribed import RPCS, Subscribed
from server.restconf.tls import server_context
from server.restconf.uri import Target, parse_api_path
from server.schema import SchemaNode

if TYPE_CHECKING:
    from server.config import ServerConfig
    from server.core import NetconfCore

log = logging.getLogger(__name__)
ROOT = "/restconf"
#: modules the core must load for RESTCONF (ietf-restconf-monitoring's state is served; RFC 8650's
#: uri of a subscription), and the features RESTCONF adds (RFC 8650: JSON encoded subscriptions)
RESTCONF_MODULES = ("ietf-restconf-monitoring", "ietf-restconf-subscribed-notifications")
RESTCONF_FEATURES = {"ietf-subscribed-notifications": ("encode-json",)}
YANG_LIBRARY_VERSION = "2019-01-04"
#: successful Basic credentials are remembered this long (scrypt costs ~50 ms per check)
AUTH_CACHE_SECONDS = 60.0
#: replies whose data is larger are encoded (libyang) in a worker thread, off the event loop
OFFLOAD_BYTES = 256 * 1024
#: a direct read (server/restconf/direct.py) is written in chunks of about this size, the event loop
#: running between them
STREAM_CHUNK = 256 * 1024
#: api-paths whose resolution is remembered (a client's requests mostly name the same few resources)
TARGET_CACHE = 1024
_XRD = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b"<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
    b"  <Link rel='restconf' href='/restconf'/>\n</XRD>\n"
)
_WRITES = ("POST", "PUT", "PATCH", "DELETE")


def with_restconf(config: ServerConfig) -> None:
    """Add what RESTCONF needs of the core to its configuration (before the core is built)."""
    config.extra_modules = (*config.extra_modules, *RESTCONF_MODULES)
    features = dict(config.features)
    for module, extra in RESTCONF_FEATURES.items():
        features[module] = (
            *features.get(module, ()),
            *(f for f in extra if f not in features.get(module, ())),
        )
    config.features = features


@dataclass
class RestconfConfig:
    """Listen address, TLS material, users and limits of the RESTCONF server."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    users: list[User] = field(default_factory=list)
    cert: Path | None = None  # default: <state_dir>/restconf-cert.pem, generated on first start
    key: Path | None = None  # default: <state_dir>/restconf-key.pem
    client_ca: Path | None = None  # client certificates signed by it log in as their CN
    max_body: int = 64 * 1024 * 1024
    auth_fail_delay: float = 1.0

    @property
    def cert_path(self) -> Path:
        return self.cert or self.state_dir / "restconf-cert.pem"

    @property
    def key_path(self) -> Path:
        return self.key or self.state_dir / "restconf-key.pem"


@dataclass
class RestconfHandle:
    runner: web.AppRunner
    host: str
    port: int
    cert: Path

    restconf: Restconf

    async def close(self) -> None:
        for queue in list(self.restconf.streams):
            queue.put_nowait(None)  # open event streams end now, not at the shutdown timeout
        for sub in list(self.restconf.subscribed.by_id.values()):
            sub.end()
        await self.runner.cleanup()


class Restconf:
    """The request handlers over one core."""

    def __init__(self, core: NetconfCore, config: RestconfConfig) -> None:
        self.core, self.config = core, config
        self.users = {u.name: u for u in config.users}
        self.versions = Versions(core)
        self._auth_cache: dict[tuple[str, bytes], float] = {}
        self._targets: dict[str, Target] = {}  # api-path → its resolution (the schema never changes)
        self.streams: set[asyncio.Queue] = set()
        self.subscribed = Subscribed(f"https://{config.host}:{config.port}")  # the port: start_restconf

    # -- authentication --------------------------------------------------------------------------------
    async def principal(self, request: web.Request) -> Principal:
        user = self._client_cert_user(request)
        if user is not None:
            return Principal(user.name, user.groups)
        header = request.headers.get("Authorization", "")
        scheme, _, cred = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                name, sep, password = base64.b64decode(cred.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                name, sep, password = "", "", ""
            user = self.users.get(name) if sep else None
            if user is not None and user.password_hash and await self._verify(user, password):
                return Principal(user.name, user.groups)
        if header:
            await asyncio.sleep(self.config.auth_fail_delay)
        raise HttpError(
            401,
            [RpcError("access-denied", "authentication required", type="protocol")],
            {"WWW-Authenticate": 'Basic realm="restconf", charset="UTF-8"'},
        )

    async def _verify(self, user: User, password: str) -> bool:
        key = (user.name, hashlib.sha256(f"{user.password_hash}\0{password}".encode()).digest())
        now = time.monotonic()
        if self._auth_cache.get(key, 0.0) > now:
            return True
        ok = await asyncio.get_running_loop().run_in_executor(
            None, verify_password, password, user.password_hash or ""
        )
        if ok:
            if len(self._auth_cache) > 1000:
                self._auth_cache = {k: t for k, t in self._auth_cache.items() if t > now}
            self._auth_cache[key] = now + AUTH_CACHE_SECONDS
        return ok

    def _client_cert_user(self, request: web.Request) -> User | None:
        if self.config.client_ca is None or request.transport is None:
            return None
        ssl_obj = request.transport.get_extra_info("ssl_object")
        cert = ssl_obj.getpeercert() if ssl_obj is not None else None
        if not cert:
            return None
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName" and v in self.users:
                    return self.users[v]
        return None

    # -- dispatch ---------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            principal = await self.principal(request)
            sess = RestconfSession(self.core, principal, request.remote)
            return await self.route(request, sess)
        except HttpError as err:
            return self.error_response(err, request)
        except web.HTTPRequestEntityTooLarge:
            return self.error_response(
                http_error(413, "too-big", f"the body exceeds {self.config.max_body} bytes"), request
            )
        except RpcError as err:
            return self.error_response(HttpError.of(err), request)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception:  # a bug: logged, answered as RFC 8040 says (500 operation-failed)
            log.exception("RESTCONF %s %s failed", request.method, request.path)
            return self.error_response(http_error(500, "operation-failed", "internal error"), request)

    def error_response(self, err: HttpError, request: web.Request) -> web.Response:
        try:
            fmt = codec.reply_format(request.headers.get("Accept"))
        except HttpError:
            fmt = "json"
        if not err.errors:
            return web.Response(status=err.status, headers=err.headers)
        body = render_json(err.errors, self.core.schema) if fmt == "json" else render_xml(err.errors)
        return web.Response(
            status=err.status, body=body, headers={"Content-Type": codec.content_type(fmt), **err.headers}
        )

    async def route(self, request: web.Request, sess: RestconfSession) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        rest = raw[len(ROOT) :]
        if rest in ("", "/"):
            return self.top(request)
        head, _, tail = rest[1:].partition("/")
        if head == "data":
            return await self.data(request, sess, "data", tail)
        if head == "ds":
            store, _, tail = tail.partition("/")
            store = unquote(store)
            name = store.removeprefix("ietf-datastores:")
            if not store.startswith("ietf-datastores:") or name not in handlers.STORES or name == "data":
                raise not_found(f"no datastore {store}")
            return await self.data(request, sess, name, tail)
        if head == "operations":
            return await self.operations(request, sess, tail)
        if head == "yang-library-version" and not tail:
            self._only(request, "GET", "HEAD")
            return self.reply(
                request,
                {
                    "json": b'{"ietf-restconf:yang-library-version":"%s"}',
                    "xml": b'<yang-library-version xmlns="urn:ietf:params:xml:ns:yang:'
                    b'ietf-restconf">%s</yang-library-version>',
                },
                YANG_LIBRARY_VERSION.encode(),
            )
        if head == "subscriptions":
            self._only(request, "GET")
            return await self.subscribed.serve(request, sess, tail)
        if head == "streams":
            self._only(request, "GET", "HEAD")
            stream, _, enc = tail.partition("/")
            return await serve_stream(request, sess, stream, enc, self.streams)
        raise not_found(f"no resource {request.path}")

    def _only(self, request: web.Request, *methods: str) -> None:
        if request.method == "OPTIONS":
            raise HttpError(200, (), {"Allow": ", ".join((*methods, "OPTIONS"))})
        if request.method not in methods:
            raise HttpError(
                405,
                [
                    RpcError(
                        "operation-not-supported", f"{request.method} is not allowed here", type="protocol"
                    )
                ],
                {"Allow": ", ".join((*methods, "OPTIONS"))},
            )

    def reply(self, request: web.Request, templates: dict[str, bytes], value: bytes) -> web.Response:
        fmt = codec.reply_format(request.headers.get("Accept"))
        return web.Response(body=templates[fmt] % value, headers={"Content-Type": codec.content_type(fmt)})

    def top(self, request: web.Request) -> web.Response:
        self._only(request, "GET", "HEAD")
        return self.reply(
            request,
            {
                "json": b'{"ietf-restconf:restconf":{"data":{},"operations":{},"yang-library-version":"%s"}}',
                "xml": b'<restconf xmlns="urn:ietf:params:xml:ns:yang:ietf-restconf"><data/><operations/>'
                b"<yang-library-version>%s</yang-library-version></restconf>",
            },
            YANG_LIBRARY_VERSION.encode(),
        )

    # -- data resources ---------------------------------------------------------------------------------
    async def data(
        self, request: web.Request, sess: RestconfSession, store: str, path: str
    ) -> web.StreamResponse:
        action = handlers.action_at(self.core.schema, path) if request.method in ("POST", "OPTIONS") else None
        if action is not None:
            return await self.action(request, sess, store, *action)
        target = self._targets.get(path)
        if target is None:
            target = parse_api_path(self.core.schema, path)
            if len(self._targets) >= TARGET_CACHE:
                self._targets.clear()
            self._targets[path] = target
        writable = store in ("data", "running", "candidate")
        allowed = ("GET", "HEAD", *(_WRITES if writable else ()))
        self._only(request, *allowed)
        if request.method in ("GET", "HEAD"):
            return await self.get(request, sess, store, target)
        if target.node is not None and not target.node.config:
            raise http_error(405, "operation-not-supported", f"{target.node.name} is not configuration")
        if request.method == "PATCH" and codec.media_type(request.headers.get("Content-Type")).startswith(
            "application/yang-patch"
        ):
            return await self.patch(request, sess, store, target)
        return await self.write(request, sess, store, target)

    async def action(
        self, request: web.Request, sess: RestconfSession, store: str, target: Target, node: SchemaNode
    ) -> web.Response:
        """POST to an action's resource (RFC 8040 §3.6): 200 with the output, 204 without one."""
        self._only(request, "POST")
        if store not in ("data", "operational"):  # RFC 8527 §3.1: actions on the operational datastore
            raise http_error(405, "operation-not-supported", f"no actions in the {store} datastore")
        _no_params(request, ())
        body = await request.read()
        in_fmt = codec.body_format(request.headers.get("Content-Type")) if body.strip() else "json"
        out_fmt = codec.reply_format(request.headers.get("Accept"), default=in_fmt)
        out = await handlers.invoke_action(sess, target, node, body, in_fmt, out_fmt)
        if out is None:
            return web.Response(status=204)
        return web.Response(body=out, headers={"Content-Type": codec.content_type(out_fmt)})

    async def get(
        self, request: web.Request, sess: RestconfSession, store: str, target: Target
    ) -> web.StreamResponse:
        fmt = codec.reply_format(request.headers.get("Accept"))
        tagged = store in ("data", "running", "candidate", "startup")
        headers = {"Content-Type": codec.content_type(fmt)}
        if tagged:
            name = "running" if store == "data" else store
            etag, modified = self.versions.etag(name), self.versions.modified[name]
            headers |= self.versions.headers(name)
            if _none_match(request, etag) or _not_modified_since(request, modified):
                return web.Response(status=304, headers=headers)
        if request.method == "GET":
            parts = direct.read(sess, store, target, request.query, fmt)
            if parts is not None:
                return await _stream(request, headers, parts)
        size, encode = handlers.read(sess, store, target, request.query, fmt)
        if size > OFFLOAD_BYTES:  # libyang encodes in a worker thread: the event loop goes on meanwhile
            body = await asyncio.get_running_loop().run_in_executor(None, encode)
        else:
            body = encode()
        return web.Response(body=body, headers=headers)

    def _preconditions(self, request: web.Request, store: str) -> None:
        name = "running" if store == "data" else store
        etag, modified = self.versions.etag(name), self.versions.modified[name]
        match = request.headers.get("If-Match")
        if match is not None and match.strip() != "*" and etag not in [m.strip() for m in match.split(",")]:
            raise http_error(412, "operation-failed", "If-Match: the datastore changed", type="protocol")
        if _none_match(request, etag):
            raise http_error(412, "operation-failed", "If-None-Match: the datastore is unchanged")
        since = _http_date(request.headers.get("If-Unmodified-Since"))
        if since is not None and modified > since:
            raise http_error(412, "operation-failed", "If-Unmodified-Since: the datastore changed")

    async def write(
        self, request: web.Request, sess: RestconfSession, store: str, target: Target
    ) -> web.Response:
        """POST (create a child), PUT (create or replace), PATCH (merge), DELETE: one edit-config
        each, run with the preconditions and the existence check in the same transaction."""
        method, schema = request.method, self.core.schema
        _no_params(request, ("insert", "point") if method in ("POST", "PUT") else ())
        if method == "DELETE":
            if not target.steps:
                raise http_error(405, "operation-not-supported", "DELETE of a whole datastore")
            async with self.core.txn_lock:
                self._preconditions(request, store)
                if not handlers.exists(sess, store, target):
                    raise not_found()
                await handlers.run_edit(sess, store, handlers.delete_config(schema, target))
            return self._done(204, store)
        body = await request.read()
        fmt = codec.body_format(request.headers.get("Content-Type"))
        if method == "POST":
            return await self._create(request, sess, store, target, body, fmt)
        parent = Target(target.steps[:-1])
        nodes = handlers.body_nodes(sess, parent, body, fmt)
        handlers.check_body_is_target(nodes, target, schema)
        insert = handlers.insert_point(request.query, target, schema) if method == "PUT" else None
        async with self.core.txn_lock:
            self._preconditions(request, store)
            existed = handlers.exists(sess, store, target)
            if method == "PATCH":
                if not existed:
                    raise not_found()
                config = handlers.config_for(schema, parent, nodes, "merge")
                await handlers.run_edit(sess, store, config)
                return self._done(204, store)
            if not target.steps:  # the whole datastore: default-operation replace
                await handlers.run_edit(
                    sess, store, handlers.config_for(schema, target, nodes, None), "replace"
                )
                return self._done(204, store)
            config = handlers.config_for(schema, parent, nodes, "replace", insert)
            await handlers.run_edit(sess, store, config)
        return self._done(204 if existed else 201, store)

    async def _create(
        self, request: web.Request, sess: RestconfSession, store: str, target: Target, body: bytes, fmt: str
    ) -> web.Response:
        schema = self.core.schema
        nodes = handlers.body_nodes(sess, target, body, fmt)
        created = handlers.child_target(target, nodes, schema)
        insert = handlers.insert_point(request.query, created, schema)
        async with self.core.txn_lock:
            self._preconditions(request, store)
            if not handlers.exists(sess, store, target):
                raise not_found()
            if handlers.exists(sess, store, created):
                name = created.node.name if created.node else "the resource"
                raise http_error(409, "data-exists", f"{name} already exists", type="application")
            await handlers.run_edit(sess, store, handlers.config_for(schema, target, nodes, "create", insert))
        resp = self._done(201, store)
        prefix = f"{ROOT}/data" if store == "data" else f"{ROOT}/ds/ietf-datastores:{store}"
        resp.headers["Location"] = f"{request.scheme}://{request.host}{prefix}/{created.uri()}"
        return resp

    def _done(self, status: int, store: str) -> web.Response:
        return web.Response(
            status=status, headers=self.versions.headers("running" if store == "data" else store)
        )

    async def patch(
        self, request: web.Request, sess: RestconfSession, store: str, target: Target
    ) -> web.Response:
        _no_params(request, ())
        fmt = codec.body_format(request.headers.get("Content-Type"), patch=True)
        body = await request.read()
        out_fmt = codec.reply_format(request.headers.get("Accept"))
        async with self.core.txn_lock:
            self._preconditions(request, store)
            if not handlers.exists(sess, store, target):
                raise not_found()
            status, reply = await yang_patch(sess, store, target, body, fmt, out_fmt)
        return web.Response(status=status, body=reply, headers={"Content-Type": codec.content_type(out_fmt)})

    # -- operations ---------------------------------------------------------------------------------------
    async def operations(self, request: web.Request, sess: RestconfSession, tail: str) -> web.Response:
        if not tail:
            self._only(request, "GET", "HEAD")
            fmt = codec.reply_format(request.headers.get("Accept"))
            names = sorted({*handlers.rpc_names(sess), *((m, ns, n) for (m, n), ns in RPCS.items())})
            if fmt == "json":
                inner = ",".join(f'"{m}:{n}":[null]' for m, _ns, n in names)
                body = ('{"ietf-restconf:operations":{' + inner + "}}").encode()
            else:
                inner = "".join(f'<{n} xmlns="{ns}"/>' for _m, ns, n in names)
                body = f'<operations xmlns="{RESTCONF_NS}">{inner}</operations>'.encode()
            return web.Response(body=body, headers={"Content-Type": codec.content_type(fmt)})
        self._only(request, "POST")
        module, sep, name = tail.partition(":")
        if not sep or "/" in name:
            raise not_found(f"no operation {tail}")
        body = await request.read()
        in_fmt = codec.body_format(request.headers.get("Content-Type")) if body.strip() else "json"
        out_fmt = codec.reply_format(request.headers.get("Accept"), default=in_fmt)
        if (module, name) in RPCS:
            out = await self._subscription_rpc(sess, module, name, body, in_fmt, out_fmt)
        else:
            out = await handlers.invoke(sess, module, name, body, in_fmt, out_fmt)
        if out is None:
            return web.Response(status=204)
        return web.Response(body=out, headers={"Content-Type": codec.content_type(out_fmt)})

    async def _subscription_rpc(
        self, sess: RestconfSession, module: str, name: str, body: bytes, fmt: str, out_fmt: str
    ) -> bytes | None:
        """RFC 8650: establish-, modify-, delete-, kill-subscription and resync-subscription."""
        ns = RPCS[(module, name)]
        if not self.core.nacm.may_call(sess.principal, (ns, name)):
            raise http_error(403, "access-denied", f"{name} is not allowed for this user")
        rpc = handlers.rpc_input(sess, module, ns, name, body, fmt)
        try:
            out = await self.subscribed.invoke(sess, module, name, rpc, fmt)
        except RpcError as err:
            raise HttpError.of(err) from None
        if out is None:
            return None
        if out_fmt == "json":
            return codec.rpc_output_to_json(self.core.schema.ctx, module, ns, name, out)
        return b'<output xmlns="%s">%s</output>' % (ns.encode(), out)


async def _stream(request: web.Request, headers: dict[str, str], parts: direct.Parts) -> web.StreamResponse:
    """A direct read's parts, produced as they are written (chunked): each provider page is written
    only once the one before is on its way, and the event loop runs in between."""
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)
    chunk: list[bytes] = []
    size = 0
    for part in parts:
        chunk.append(part)
        size += len(part)
        if size >= STREAM_CHUNK:
            await resp.write(b"".join(chunk))
            chunk, size = [], 0
            await asyncio.sleep(0)  # registrations and other sessions go on between chunks
    if chunk:
        await resp.write(b"".join(chunk))
    await resp.write_eof()
    return resp


def _none_match(request: web.Request, etag: str) -> bool:
    value = request.headers.get("If-None-Match")
    return value is not None and (value.strip() == "*" or etag in [m.strip() for m in value.split(",")])


def _http_date(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _not_modified_since(request: web.Request, modified: dt.datetime) -> bool:
    if "If-None-Match" in request.headers:
        return False  # RFC 9110 §13.1.3: If-None-Match takes precedence
    since = _http_date(request.headers.get("If-Modified-Since"))
    return since is not None and modified <= since


def _no_params(request: web.Request, allowed: tuple[str, ...]) -> None:
    for name in request.query:
        if name not in allowed:
            raise http_error(
                400,
                "invalid-value",
                f"query parameter {name} is not allowed here",
                info=(("bad-attribute", name),),
            )


async def host_meta(request: web.Request) -> web.Response:
    return web.Response(body=_XRD, headers={"Content-Type": "application/xrd+xml"})


async def start_restconf(core: NetconfCore, config: RestconfConfig) -> RestconfHandle:
    """Listen with TLS; register ietf-restconf-monitoring's state when the module is loaded."""
    ssl_ctx = server_context(config.cert_path, config.key_path, config.host, config.client_ca)
    rc = Restconf(core, config)
    app = web.Application(client_max_size=config.max_body)
    app.router.add_get("/.well-known/host-meta", host_meta)
    app.router.add_route("*", ROOT, rc.handle)
    app.router.add_route("*", ROOT + "/{tail:.*}", rc.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_ctx)
    await site.start()
    sockets = getattr(site._server, "sockets", None)
    port = sockets[0].getsockname()[1] if sockets else config.port
    host = f"[{config.host}]" if ":" in config.host else config.host
    rc.subscribed.base = f"https://{host}:{port}"
    if core.schema.root(RCMON_NS, "restconf-state") is not None:
        core.providers.append(MonitoringProvider(core.events, f"https://{host}:{port}"))
    log.info("RESTCONF server listening on https://%s:%d%s", config.host, port, ROOT)
    return RestconfHandle(runner, config.host, port, config.cert_path, rc)
