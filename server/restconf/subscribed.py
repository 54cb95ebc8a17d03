"""RFC 8650: dynamic subscriptions (RFC 8639, YANG-Push RFC 8641) over RESTCONF.

`POST {+restconf}/operations/ietf-subscribed-notifications:establish-subscription` establishes one
through the same `server.subscriptions.Subscriptions` NETCONF sessions use (filters, NACM, periodic
and on-change jobs, the state notifications); its output carries RFC 8650's `uri`
(ietf-restconf-subscribed-notifications), `{+restconf}/subscriptions/<id>`, where the same user reads
the events as Server-Sent Events (RFC 8040 §6.4), in the subscription's encoding: `encode-json`
(the default for a JSON request) or `encode-xml`. modify-, delete- and resync-subscription act on the
user's own RESTCONF subscriptions, kill-subscription (NACM permitting) on any.

A subscription's receiver is a `Subscriber`: the "session" the subscription belongs to. Events queue
there from the start (after the reply); the subscription ends when its event stream's GET ends,
when no GET comes within CONNECT_SECONDS, or when the client stops reading (QUEUE_LIMIT events
queued). One GET at a time reads a subscription; a user holds at most MAX_PER_USER of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lxml import etree

from server.errors import RpcError
from server.restconf import codec
from server.restconf.errors import http_error, not_found
from server.restconf.session import RestconfSession, as_netconf
from server.restconf.streams import QUEUE_LIMIT, _encode, _sse
from server.restconf.uri import parse_api_path
from server.schema import Schema
from server.subscription_input import SN_NS, YP_NS, sub_error
from server.subscriptions import MAX_PER_SESSION, RSN_NS

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)
#: the rpcs of RFC 8639 / 8641 served under {+restconf}/operations: (module, name) → namespace
RPCS = {
    ("ietf-subscribed-notifications", "establish-subscription"): SN_NS,
    ("ietf-subscribed-notifications", "modify-subscription"): SN_NS,
    ("ietf-subscribed-notifications", "delete-subscription"): SN_NS,
    ("ietf-subscribed-notifications", "kill-subscription"): SN_NS,
    ("ietf-yang-push", "resync-subscription"): YP_NS,
}
#: a subscription whose event stream nobody GETs this long after it was established ends
CONNECT_SECONDS = 60.0
#: subscriptions one user may hold over RESTCONF at a time
MAX_PER_USER = MAX_PER_SESSION
#: while its stream is idle, how often a GET looks whether the subscription still exists
IDLE_CHECK_SECONDS = 1.0


@dataclass(eq=False)
class Subscriber(RestconfSession):
    """The receiver of one RESTCONF subscription (what a NETCONF session is to its subscriptions)."""

    encodings: tuple[str, ...] = ("encode-json", "encode-xml")
    uri: str = ""
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    reading: bool = False  # a GET is streaming the events
    timer: asyncio.TimerHandle | None = None

    @property
    def receiver_name(self) -> str:
        return f"restconf-{self.principal.user}-{self.id}"

    def send_notification(self, payload: bytes) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            log.warning("RESTCONF subscription of %s: client not reading; ending it", self.principal.user)
            self.end()
            return
        self.queue.put_nowait(payload)

    def end(self) -> None:
        """The subscription goes (its GET, if any, ends after what is queued)."""
        if not self.closed:
            self.closed = True
            self.core.subscriptions.session_ended(as_netconf(self))
            if self.timer is not None:
                self.timer.cancel()
            self.queue.put_nowait(None)


class Subscribed:
    """The RESTCONF subscriptions of one server; `base`: its https://host:port."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.by_id: dict[int, Subscriber] = {}

    async def invoke(
        self, sess: RestconfSession, module: str, name: str, rpc: etree._Element, fmt: str
    ) -> bytes | None:
        """One of RPCS (NACM's exec check done by the caller); the output's XML content, or None."""
        subs = sess.core.subscriptions
        if name == "establish-subscription":
            return self._establish(sess, rpc, fmt)
        handler = subs.handlers()[(RPCS[(module, name)], name)]
        target = sess
        if name != "kill-subscription":  # one's own subscription: its receiver is the session that owns it
            owner = self._own(sess, rpc, module)
            target = owner if owner is not None else sess  # not one's own: the handler's own error
        result = handler(as_netconf(target), rpc)
        return result

    def _establish(self, sess: RestconfSession, rpc: etree._Element, fmt: str) -> bytes:
        core = sess.core
        for sid in [sid for sid in self.by_id if sid not in core.subscriptions.all]:  # ended meanwhile
            self.by_id.pop(sid).end()
        mine = sum(1 for s in self.by_id.values() if s.principal.user == sess.principal.user)
        if mine >= MAX_PER_USER:  # what a NETCONF session may hold, per user here
            raise sub_error(
                "insufficient-resources",
                f"at most {MAX_PER_USER} RESTCONF subscriptions per user",
                (SN_NS, "establish-subscription-stream-error-info"),
            )
        order = ("encode-json", "encode-xml") if fmt == "json" else ("encode-xml", "encode-json")
        sub = Subscriber(core, sess.principal, sess.source_host, encodings=order)
        out = core.subscriptions.establish(as_netconf(sub), rpc)
        sid = int(etree.fromstring(b"<x>%s</x>" % out).findtext(f"{{{SN_NS}}}id") or "0")
        sub.uri = f"{self.base}/restconf/subscriptions/{sid}"
        self.by_id[sid] = sub
        sub.timer = asyncio.get_running_loop().call_later(CONNECT_SECONDS, self._unread, sid)
        return out + f'<uri xmlns="{RSN_NS}">{sub.uri}</uri>'.encode()

    def _unread(self, sid: int) -> None:
        sub = self.by_id.get(sid)
        if sub is not None and not sub.reading:
            log.info(
                "RESTCONF subscription %d: no GET of its events in %.0f s; ending it", sid, CONNECT_SECONDS
            )
            self.by_id.pop(sid, None)
            sub.end()

    def _own(self, sess: RestconfSession, rpc: etree._Element, module: str) -> Subscriber | None:
        ns = RPCS[(module, "resync-subscription" if module == "ietf-yang-push" else "delete-subscription")]
        text = (rpc.findtext(f"{{{ns}}}id") or "").strip()
        sub = self.by_id.get(int(text)) if text.isdigit() else None
        if sub is None or sub.closed or sub.principal.user != sess.principal.user:
            return None
        return sub

    async def serve(self, request: web.Request, sess: RestconfSession, tail: str) -> web.StreamResponse:
        """GET {+restconf}/subscriptions/<id>: the subscription's events, until it ends."""
        from aiohttp import web

        sub = self.by_id.get(int(tail)) if tail.isdigit() else None
        if sub is None or sub.closed or sub.principal.user != sess.principal.user:
            raise not_found(f"no subscription {tail} of yours")
        accept = codec.media_type(request.headers.get("Accept"))
        if accept not in ("", "*/*", "text/event-stream"):
            raise http_error(406, "invalid-value", "a subscription's events are text/event-stream")
        if request.query:
            raise http_error(400, "invalid-value", "a subscription's event stream takes no query parameters")
        if sub.reading:
            raise http_error(409, "in-use", "this subscription's events are being read already")
        sub.reading = True
        if sub.timer is not None:
            sub.timer.cancel()
        enc = "json" if _encoding(sub) == "encode-json" else "xml"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            with contextlib.suppress(ConnectionError):  # the client left: the subscription goes
                await self._pump(sub, resp, enc)
        finally:
            self.by_id.pop(sub_id(sub), None)
            sub.end()
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    async def _pump(self, sub: Subscriber, resp: web.StreamResponse, enc: str) -> None:
        sid, subs = sub_id(sub), sub.core.subscriptions
        while True:
            try:
                payload = await asyncio.wait_for(sub.queue.get(), IDLE_CHECK_SECONDS)
            except TimeoutError:
                if sid not in subs.all:  # ended without a word (its stop-time)
                    return
                continue
            if payload is None:
                return
            await resp.write(_sse(encode_event(sub.core.schema, payload, enc)))
            if b"<subscription-terminated" in payload or (sid not in subs.all and sub.queue.empty()):
                return


def encode_event(schema: Schema, payload: bytes, enc: str) -> bytes:
    """One event in the subscription's encoding (RFC 8040 §6.4). In JSON, each YANG Patch edit's
    `value` of a push-change-update is encoded with its target's ancestors around it, so that
    libyang knows its schema node (a list entry is an array, a number a number: RFC 7951)."""
    out = _encode(schema.ctx, payload, enc)
    if enc != "json" or b"<push-change-update" not in payload:
        return out
    values = _values(schema, etree.fromstring(payload))
    if not values:
        return out
    doc = json.loads(out)
    for edit in _edits(doc):
        if edit.get("edit-id") in values:
            edit["value"] = values[edit["edit-id"]]
    return json.dumps(doc).encode()


def _values(schema: Schema, note: etree._Element) -> dict[str, Any]:
    out = {}
    for edit in note.iter(f"{{{YP_NS}}}edit"):
        value, target = edit.find(f"{{{YP_NS}}}value"), edit.findtext(f"{{{YP_NS}}}target")
        if value is None or not len(value) or not target:
            continue
        try:
            where = parse_api_path(schema, target)
        except RpcError:
            continue
        holder = etree.Element("holder")
        parent = where.chain(holder)
        parent.extend(copy.deepcopy(c) for c in value)
        inner = b"".join(etree.tostring(c) for c in holder)
        printed = codec.print_json(schema.ctx, inner, where.xpath(schema))
        if printed is not None:
            out[edit.findtext(f"{{{YP_NS}}}edit-id") or ""] = json.loads(printed)
    return out


def _edits(obj: Any) -> list[dict]:
    """The YANG Patch edits anywhere in a decoded event."""
    if isinstance(obj, dict):
        if isinstance(obj.get("edit"), list):
            return [e for e in obj["edit"] if isinstance(e, dict)]
        return [e for v in obj.values() for e in _edits(v)]
    return []


def sub_id(sub: Subscriber) -> int:
    return int(sub.uri.rsplit("/", 1)[1]) if sub.uri else 0


def _encoding(sub: Subscriber) -> str:
    dyn = sub.core.subscriptions.all.get(sub_id(sub))
    return (dyn.request.encoding if dyn is not None else None) or sub.encodings[0]
