"""RFC 8040 §6: the NETCONF event stream over Server-Sent Events, and ietf-restconf-monitoring.

A stream request is a subscription to the core's event log (server/notifications.py), the one the
NETCONF <create-subscription> uses: the same replay buffer (start-time / stop-time), the same NACM
check per event (may_receive) and XPath filtering (`filter`, module names as prefixes, §4.8.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING

from lxml import etree

from server import notifications as ev
from server.errors import RpcError
from server.operational import StateRequest
from server.restconf import codec
from server.restconf.errors import HttpError, http_error

if TYPE_CHECKING:
    from aiohttp import web

    from server.restconf.session import RestconfSession

log = logging.getLogger(__name__)
RCMON_NS = "urn:ietf:params:xml:ns:yang:ietf-restconf-monitoring"
ENCODINGS = ("xml", "json")
#: events queued for a client that does not read, before its stream is ended
QUEUE_LIMIT = 10_000
CAPABILITIES = (
    "urn:ietf:params:restconf:capability:defaults:1.0?basic-mode=explicit",
    "urn:ietf:params:restconf:capability:depth:1.0",
    "urn:ietf:params:restconf:capability:fields:1.0",
    "urn:ietf:params:restconf:capability:with-defaults:1.0",
    "urn:ietf:params:restconf:capability:filter:1.0",
    "urn:ietf:params:restconf:capability:replay:1.0",
    "urn:ietf:params:restconf:capability:yang-patch:1.0",
)


class MonitoringProvider:
    """ietf-restconf-monitoring's restconf-state, served like any operational state (so NETCONF
    <get> shows it too); `base` is the server's https://host:port."""

    roots = frozenset({(RCMON_NS, "restconf-state")})

    def __init__(self, events: ev.EventLog, base: str) -> None:
        self.events, self.base = events, base

    def get_state(self, request: StateRequest) -> list[etree._Element]:
        def sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
            el = etree.SubElement(parent, f"{{{RCMON_NS}}}{name}")
            el.text = text
            return el

        top = etree.Element(f"{{{RCMON_NS}}}restconf-state", nsmap={None: RCMON_NS})
        caps = sub(top, "capabilities")
        for c in CAPABILITIES:
            sub(caps, "capability", c)
        stream = sub(sub(top, "streams"), "stream")
        sub(stream, "name", ev.STREAM)
        sub(stream, "description", "default NETCONF event stream")
        sub(stream, "replay-support", "true")
        sub(stream, "replay-log-creation-time", ev.format_time(self.events.replay_start))
        for enc in ENCODINGS:
            access = sub(stream, "access")
            sub(access, "encoding", enc)
            sub(access, "location", f"{self.base}/restconf/streams/{ev.STREAM}/{enc}")
        return [top]


def _time(query, name: str) -> dt.datetime | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return ev.parse_time(text, name)
    except RpcError:
        raise http_error(400, "invalid-value", f"bad {name}", info=(("bad-attribute", name),)) from None


def _sse(data: bytes) -> bytes:
    return b"".join(b"data: " + line + b"\n" for line in data.splitlines()) + b"\n"


async def serve_stream(
    request: web.Request, sess: RestconfSession, stream: str, enc: str, active: set[asyncio.Queue]
) -> web.StreamResponse:
    """One SSE response until stop-time, the client leaving or the server closing (`active`: the
    queues of the open streams, a None in one ends it)."""
    from aiohttp import web

    if stream != ev.STREAM or enc not in ENCODINGS:
        raise http_error(404, "invalid-value", f"no stream {stream}/{enc}")
    accept = codec.media_type(request.headers.get("Accept"))
    if accept not in ("", "*/*", "text/event-stream"):
        raise http_error(406, "invalid-value", "a stream is text/event-stream")
    query = request.query
    for name in query:
        if name not in ("start-time", "stop-time", "filter"):
            raise http_error(400, "invalid-value", f"query parameter {name} is not allowed on a stream")
    core = sess.core
    start, stop, now = _time(query, "start-time"), _time(query, "stop-time"), ev.utcnow()
    if stop is not None and start is None:
        raise http_error(400, "invalid-value", "stop-time needs start-time")
    if start is not None and start > now:
        raise http_error(400, "invalid-value", "start-time is in the future")
    if start is not None and stop is not None and stop < start:
        raise http_error(400, "invalid-value", "stop-time is before start-time")
    xpath = None
    if "filter" in query:
        nsmap = {m: ns for m, ns in core.schema.module_to_ns.items() if "." not in m}
        xpath = (query["filter"], nsmap)
        try:  # a bad expression is the request's error, not a silent empty stream
            etree.XPath(query["filter"], namespaces=nsmap)
        except etree.XPathSyntaxError as exc:
            raise http_error(400, "invalid-value", f"bad filter: {exc}") from None
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def send(payload: bytes) -> None:
        if queue.qsize() >= QUEUE_LIMIT:
            log.warning("RESTCONF stream of %s: client not reading; ending it", sess.principal.user)
            sub.cancel()
            queue.put_nowait(None)
            return
        queue.put_nowait(payload)

    sub = ev.Subscription(
        core.events,
        send,
        core.schema,
        xpath=xpath,
        start=start,
        stop=stop,
        allow=lambda body: core.nacm.may_receive(sess.principal, body),
    )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    timer = None
    active.add(queue)
    try:
        sub.begin(now)
        if sub.stop is not None and sub.active:
            timer = asyncio.get_running_loop().call_later(
                max((sub.stop - ev.utcnow()).total_seconds(), 0), lambda: sub.finish(ev.utcnow())
            )
        while True:
            payload = await queue.get()
            if payload is None:
                break
            await resp.write(_sse(_encode(core.schema.ctx, payload, enc)))
            if b"notificationComplete" in payload and b"<notificationComplete" in payload:
                break
    finally:
        active.discard(queue)
        sub.cancel()
        if timer is not None:
            timer.cancel()
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp


def _encode(ctx, payload: bytes, enc: str) -> bytes:
    if enc == "xml":
        return payload
    n = etree.fromstring(payload)
    time_el, body = n[0], n[1]
    return codec.notification_to_json(ctx, time_el.text or "", etree.tostring(body))


__all__ = ["HttpError", "MonitoringProvider", "serve_stream"]
