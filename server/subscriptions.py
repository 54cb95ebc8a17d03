"""RFC 8639 dynamic subscriptions over NETCONF (RFC 8640), to stream NETCONF or (RFC 8641) to a datastore.

`Subscriptions` holds every dynamic subscription of the server: the rpcs establish-, modify-, delete-,
kill- and resync-subscription, the subscription state notifications (subscription-modified,
-terminated, -suspended and -resumed while the session's transport cannot keep up, replay-completed)
and the operational state /sn:streams and /sn:subscriptions.
A stream subscription is one more receiver of the core's EventLog; a datastore subscription is a
server/push.py job. A subscription lives as long as its session (RFC 8639 §2.4: dynamic).
Subscription state notifications are not filtered by NACM (they concern the receiver's own subscription).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from lxml import etree

from server import notifications as ev
from server.errors import RpcError
from server.filters import xpath_filter
from server.operations import _operational, read_pipeline
from server.push import (
    FlowControlled,
    Job,
    OnChange,
    Periodic,
    Reader,
    Selection,
    notification,
    onchange_supported,
    scopes_of,
)
from server.subscription_input import SN, SN_NS, YP, YP_NS, Request, read_request, sub_error
from server.tree import Forest
from server.xmlns import DS_NS

if TYPE_CHECKING:
    from server.core import NetconfCore
    from server.protocol import NetconfSession

#: shortest period of a periodic subscription, centiseconds (the hint of period-unsupported)
MIN_PERIOD = 10
MAX_PER_SESSION = 32
STREAMS = {ev.STREAM: "the default NETCONF event stream: every notification of the server"}
_EST_DS = (YP_NS, "establish-subscription-datastore-error-info")
_EST_STREAM = (SN_NS, "establish-subscription-stream-error-info")
_MOD_DS = (YP_NS, "modify-subscription-datastore-error-info")
_MOD_STREAM = (SN_NS, "modify-subscription-stream-error-info")
_DELETE = (SN_NS, "delete-subscription-error-info")
RSN_NS = "urn:ietf:params:xml:ns:yang:ietf-restconf-subscribed-notifications"


class StreamReceiver:
    """A stream subscription's receiver on the EventLog: the selector decides, counters count."""

    def __init__(self, selector: ev.EventSelector, send: Callable[[bytes], None]) -> None:
        self.selector, self.send = selector, send
        self.sent = self.excluded = 0

    def offer(self, event: ev.Event) -> None:
        body = ev.event_body(event)
        if body is not None and self.selector.wants(body):
            self.send(event.to_bytes())
            self.sent += 1
        else:
            self.excluded += 1


@dataclass
class Dynamic:
    """One dynamic subscription."""

    id: int
    sess: NetconfSession
    request: Request
    stream: StreamReceiver | None = None
    job: Job | None = None
    stop_timer: asyncio.TimerHandle | None = None
    suspended: bool = False

    @property
    def sent(self) -> int:
        return self.stream.sent if self.stream is not None else (self.job.sent if self.job else 0)


class Subscriptions:
    """Every dynamic subscription of one server (create once per NetconfCore)."""

    def __init__(self, core: NetconfCore) -> None:
        self.core = core
        self.all: dict[int, Dynamic] = {}
        self._ids = itertools.count(1)
        #: the ids of configured subscriptions (server/configured.py): never given to a dynamic one
        self.configured_ids: set[int] = set()
        #: /sn:subscriptions entries of the configured subscriptions' state (server/configured.py)
        self.configured_state: Callable[[], list[str]] = list

    def handlers(self) -> dict[tuple[str, str], Callable]:
        return {
            (SN_NS, "establish-subscription"): self.establish,
            (SN_NS, "modify-subscription"): self.modify,
            (SN_NS, "delete-subscription"): self.delete,
            (SN_NS, "kill-subscription"): self.kill,
            (YP_NS, "resync-subscription"): self.resync,
        }

    # -- rpcs -----------------------------------------------------------------------------------------
    def establish(self, sess: NetconfSession, op: etree._Element) -> bytes:
        errors = _EST_STREAM if op.find(SN + "stream") is not None else _EST_DS
        req = read_request(op, self.core.ds.running, errors)
        if req.stream is None and req.datastore is None:
            raise RpcError(
                "missing-element",
                "give a stream or a datastore",
                type="application",
                info=(("bad-element", "stream"),),
            )
        offered = getattr(sess, "encodings", ("encode-xml",))  # RESTCONF's subscribers offer JSON too
        if req.encoding is None:
            req.encoding = offered[0]
        elif req.encoding not in offered:
            raise sub_error("encoding-unsupported", f"this transport does not offer {req.encoding}", errors)
        if sum(1 for d in self.all.values() if d.sess is sess) >= MAX_PER_SESSION:
            raise sub_error(
                "insufficient-resources", f"at most {MAX_PER_SESSION} subscriptions per session", errors
            )
        sid = next(self._ids)
        while sid in self.configured_ids:
            sid = next(self._ids)
        dyn = Dynamic(sid, sess, req)
        revised = self.check(dyn, errors)
        self.all[dyn.id] = dyn
        loop = self.core.event_loop()
        loop.call_soon(self._start, dyn)  # after the reply
        self._arm_stop(dyn)
        out = f'<id xmlns="{SN_NS}">{dyn.id}</id>'
        if revised is not None:
            rev = ev.format_time(revised)
            out += f'<replay-start-time-revision xmlns="{SN_NS}">{rev}</replay-start-time-revision>'
        return out.encode()

    def modify(self, sess: NetconfSession, op: etree._Element) -> None:
        dyn = self._own(sess, op, _MOD_DS)
        errors = _MOD_STREAM if dyn.stream is not None else _MOD_DS
        req = read_request(op, self.core.ds.running, errors)
        old = dyn.request
        if req.replay_start is not None or (req.stream or old.stream) != old.stream:
            raise RpcError(
                "invalid-value", "the stream and replay-start-time cannot be modified", type="application"
            )
        if (req.datastore or old.datastore) != old.datastore:
            raise RpcError("invalid-value", "the datastore cannot be modified", type="application")
        if (req.periodic and not old.periodic) or (req.on_change and not old.on_change):
            raise RpcError("invalid-value", "the update trigger cannot change kind", type="application")
        merged = _modified(old, req)
        probe = Dynamic(dyn.id, sess, merged)
        self.check(probe, errors)
        self._replace(dyn, merged, probe)
        self._state_notification(dyn, "subscription-modified", self._policy(dyn) + _uri_xml(dyn))
        return None

    def delete(self, sess: NetconfSession, op: etree._Element) -> None:
        dyn = self._own(sess, op, _DELETE)
        self.terminate(dyn, "no-such-subscription")
        return None

    def kill(self, sess: NetconfSession, op: etree._Element) -> None:
        dyn = self.all.get(_id(op))
        if dyn is None:
            raise sub_error("no-such-subscription", "no such subscription", _DELETE)
        self.terminate(dyn, "no-such-subscription")
        return None

    def resync(self, sess: NetconfSession, op: etree._Element) -> None:
        dyn = self.all.get(_id(op, YP))
        if dyn is None or dyn.sess is not sess or not isinstance(dyn.job, OnChange):
            raise sub_error(
                "no-such-subscription-resync",
                "no on-change subscription with this id here",
                (YP_NS, "resync-subscription-error"),
            )
        self.core.event_loop().call_soon(dyn.job.push_update)
        return None

    # -- life cycle ---------------------------------------------------------------------------------------
    def terminate(self, dyn: Dynamic, reason: str) -> None:
        """End a subscription and tell its receiver why (subscription-terminated)."""
        self._stop(dyn)
        self._state_notification(
            dyn, "subscription-terminated", f'<reason xmlns:sn="{SN_NS}">sn:{reason}</reason>'
        )

    def suspend(self, sess: NetconfSession) -> None:
        """The session's client does not read fast enough: its subscriptions stop producing (RFC 8639
        §2.4.5 subscription-suspended, reason unsupportable-volume) until `resume`."""
        for dyn in [d for d in self.all.values() if d.sess is sess and not d.suspended]:
            self._pause(dyn)
            dyn.suspended = True
            self._state_notification(
                dyn,
                "subscription-suspended",
                f'<reason xmlns:sn="{SN_NS}">sn:unsupportable-volume</reason>',
                soon=False,
            )

    def resume(self, sess: NetconfSession) -> None:
        for dyn in [d for d in self.all.values() if d.sess is sess and d.suspended]:
            self.resume_one(dyn)

    def resume_one(self, dyn: Dynamic) -> None:
        """subscription-resumed; an on-change subscription then sends the whole selection (what changed
        meanwhile was not sent), a periodic one goes on at its next period."""
        dyn.suspended = False
        self._state_notification(dyn, "subscription-resumed", "", soon=False)
        if dyn.stream is not None:
            self.core.events.attach(dyn.stream)
        elif isinstance(dyn.job, OnChange):
            self.core.feed.jobs.append(dyn.job)
            dyn.job.push_update()
        elif dyn.job is not None:
            dyn.job.start()

    def pause(self, dyn: Dynamic) -> None:
        """Stop producing for `dyn` (its stream receiver detached, its job stopped)."""
        self._pause(dyn)

    def _pause(self, dyn: Dynamic) -> None:
        if dyn.stream is not None:
            self.core.events.detach(dyn.stream)
        if dyn.job is not None:
            dyn.job.stop()
            if isinstance(dyn.job, OnChange) and dyn.job in self.core.feed.jobs:
                self.core.feed.jobs.remove(dyn.job)

    def session_ended(self, sess: NetconfSession) -> None:
        for dyn in [d for d in self.all.values() if d.sess is sess]:
            self._stop(dyn)

    def _stop(self, dyn: Dynamic) -> None:
        self.all.pop(dyn.id, None)
        self._pause(dyn)
        if dyn.stop_timer is not None:
            dyn.stop_timer.cancel()

    def _own(self, sess: NetconfSession, op: etree._Element, errors: tuple[str, str]) -> Dynamic:
        dyn = self.all.get(_id(op))
        if dyn is None or dyn.sess is not sess:
            raise sub_error("no-such-subscription", "no subscription with this id in this session", errors)
        return dyn

    def _arm_stop(self, dyn: Dynamic) -> None:
        if dyn.stop_timer is not None:
            dyn.stop_timer.cancel()
            dyn.stop_timer = None
        stop = dyn.request.stop_time
        if stop is not None:
            delay = max(0.0, (stop - ev.utcnow()).total_seconds())
            dyn.stop_timer = self.core.event_loop().call_later(delay, self._stop, dyn)

    def _start(self, dyn: Dynamic) -> None:
        if dyn.id in self.all:
            self.start(dyn)

    def start(self, dyn: Dynamic) -> None:
        """Start producing for `dyn`: its replay and stream receiver, or its job (sync-on-start)."""
        if dyn.sess.closed:
            return
        if dyn.stream is not None:
            self._start_stream(dyn)
        elif dyn.job is not None:
            dyn.job.start()
            if isinstance(dyn.job, OnChange):
                self.core.feed.jobs.append(dyn.job)

    def check(self, dyn: Dynamic, errors: tuple[str, str]) -> dt.datetime | None:
        """Validate a subscription's terms and build its stream receiver or job (not started); the
        revised replay start of a stream subscription, if any."""
        if dyn.request.stream is not None:
            return self._check_stream(dyn)
        self._check_datastore(dyn, errors)
        return None

    # -- stream subscriptions -------------------------------------------------------------------------------
    def _check_stream(self, dyn: Dynamic) -> dt.datetime | None:
        """Validate a stream subscription and build its receiver; the revised replay start, if any."""
        req = dyn.request
        errors = _EST_STREAM
        if req.stream not in STREAMS:
            raise sub_error("stream-unavailable", f"no stream {req.stream}", errors)
        if req.periodic or req.on_change:
            raise RpcError("invalid-value", "periodic and on-change need a datastore", type="application")
        selector = self._selector(dyn, errors)
        dyn.stream = StreamReceiver(selector, dyn.sess.send_notification)
        start = req.replay_start
        if start is None:
            return None
        now = ev.utcnow()
        if start >= now or (req.stop_time is not None and req.stop_time <= start):
            raise RpcError(
                "invalid-value",
                "replay-start-time must be in the past and before stop-time",
                type="application",
                info=(("bad-element", "replay-start-time"),),
            )
        first = self.core.events.replay_start
        return first if start < first else None

    def _selector(self, dyn: Dynamic, errors: tuple[str, str]) -> ev.EventSelector:
        f = dyn.request.filter_el
        xpath = (f.get("select") or "", dict(f.nsmap)) if f is not None and f.get("type") == "xpath" else None
        sub = f if f is not None and xpath is None else None
        selector = ev.EventSelector(
            self.core.schema,
            filter_el=sub,
            xpath=xpath,
            allow=lambda body: self.core.nacm.may_receive(dyn.sess.principal, body),
        )
        try:
            if xpath is not None:
                xpath_filter(Forest(), xpath[0], xpath[1], self.core.schema)  # compiles it
        except RpcError as err:
            raise sub_error(
                "filter-unsupported", err.message, errors, (("filter-failure-hint", err.message),)
            ) from None
        return selector

    def _start_stream(self, dyn: Dynamic) -> None:
        assert dyn.stream is not None
        req, log = dyn.request, self.core.events
        if req.replay_start is not None:
            for event in log.since(req.replay_start, req.stop_time):
                dyn.stream.offer(event)
            self._state_notification(dyn, "replay-completed", "", soon=False)  # before live events
        log.attach(dyn.stream)

    # -- datastore subscriptions --------------------------------------------------------------------------
    def _check_datastore(self, dyn: Dynamic, errors: tuple[str, str]) -> None:
        req = dyn.request
        if req.replay_start is not None:
            raise sub_error("replay-unsupported", "replay is for streams", errors)
        if req.periodic == req.on_change:
            raise RpcError(
                "missing-element",
                "give one of periodic, on-change",
                type="application",
                info=(("bad-element", "periodic"),),
            )
        selection = self._selection(req, errors)
        read = self._reader(dyn.sess, selection)
        if req.periodic:
            assert req.period is not None
            if req.period < MIN_PERIOD:
                raise sub_error(
                    "period-unsupported",
                    f"the shortest period is {MIN_PERIOD} centiseconds",
                    errors,
                    (("period-hint", str(MIN_PERIOD)),),
                )
            dyn.job = Periodic(dyn.id, dyn.sess.send_notification, read, req.period, req.anchor)
            return None
        if not onchange_supported(selection.scopes, self.core.feed.capable, self.core.schema):
            raise sub_error(
                "on-change-unsupported", "the selection holds no node with on-change support", errors
            )
        dyn.job = OnChange(
            dyn.id,
            dyn.sess.send_notification,
            read,
            selection=selection,
            schema=self.core.schema,
            reader=Reader(self.core.nacm, dyn.sess.principal),
            dampening=req.dampening or 0,
            sync_on_start=req.sync_on_start,
            excluded=req.excluded,
            flow=dyn.sess if isinstance(dyn.sess, FlowControlled) else None,
        )
        return None

    def _selection(self, req: Request, errors: tuple[str, str]) -> Selection:
        assert req.datastore is not None
        selection = Selection(req.datastore, req.filter_el, scopes_of(req.filter_el, self.core.schema))
        try:
            selection.select(Forest(), self.core.schema)
        except RpcError as err:
            raise sub_error(
                "filter-unsupported", err.message, errors, (("filter-failure-hint", err.message),)
            ) from None
        return selection

    def _reader(self, sess: NetconfSession, selection: Selection) -> Callable[[], bytes]:
        """The selection's contents as this session may read them (children of datastore-contents)."""

        def read() -> bytes:
            core = sess.core
            with core.ds.reading("running") as running:
                if selection.datastore == "operational":
                    data, owned, raw = _operational(sess, selection.filter_el, "explicit")
                    parts = read_pipeline(sess, data, selection.filter_el, "explicit", owned=owned, raw=raw)
                else:
                    parts = read_pipeline(sess, running, selection.filter_el, "explicit", config_only=True)
                body = b"".join(parts)
            return _inner(body)

        return read

    def _replace(self, dyn: Dynamic, req: Request, probe: Dynamic) -> None:
        """Swap in a modified subscription's receiver or job (same id, same session, no resync)."""
        self._stop(dyn)
        dyn.request, dyn.stream, dyn.job = req, probe.stream, probe.job
        dyn.suspended = False  # a modified subscription is active again (RFC 8639 §2.4.2)
        self.all[dyn.id] = dyn
        self._arm_stop(dyn)
        if dyn.stream is not None:
            self.core.events.attach(dyn.stream)
        elif isinstance(dyn.job, Periodic):
            dyn.job.start()
        elif isinstance(dyn.job, OnChange):
            self.core.feed.jobs.append(dyn.job)

    # -- notifications and state --------------------------------------------------------------------------
    def state_notification(self, dyn: Dynamic, name: str, inner: str = "") -> None:
        """Send a subscription state notification to `dyn`'s receiver now."""
        self._state_notification(dyn, name, inner, soon=False)

    def _state_notification(self, dyn: Dynamic, name: str, inner: str, *, soon: bool = True) -> None:
        """`soon`: after the current message is answered (the reply to modify or delete comes first)."""
        message = notification(f'<{name} xmlns="{SN_NS}"><id>{dyn.id}</id>{inner}</{name}>'.encode())
        if soon:
            self.core.event_loop().call_soon(dyn.sess.send_notification, message)
        else:
            dyn.sess.send_notification(message)

    def policy(self, dyn: Dynamic) -> str:
        """The subscription's terms (subscription-started, -modified, /sn:subscriptions)."""
        return self._policy(dyn)

    def _policy(self, dyn: Dynamic) -> str:
        """The subscription's terms, as subscription-modified and /sn:subscriptions carry them."""
        req = dyn.request
        out = []
        if req.stream is not None:
            out.append(f"<stream>{req.stream}</stream>")
            out.append(_filter_xml(req.filter_el, "stream", SN_NS))
        else:
            out.append(f'<datastore xmlns="{YP_NS}" xmlns:ds="{DS_NS}">ds:{req.datastore}</datastore>')
            out.append(_filter_xml(req.filter_el, "datastore", YP_NS))
        if req.stop_time is not None:
            out.append(f"<stop-time>{ev.format_time(req.stop_time)}</stop-time>")
        out.append(f'<encoding xmlns:sn="{SN_NS}">sn:{req.encoding or "encode-xml"}</encoding>')
        out.append(_trigger_xml(req))
        return "".join(out)

    def state(self) -> list[etree._Element]:
        """/sn:streams and /sn:subscriptions (operational state)."""
        log = self.core.events
        streams = [f'<streams xmlns="{SN_NS}">']
        for name, text in STREAMS.items():
            streams.append(f"<stream><name>{name}</name><description>{text}</description><replay-support/>")
            streams.append(
                f"<replay-log-creation-time>{ev.format_time(log.created)}</replay-log-creation-time>"
            )
            if log.aged:
                streams.append(
                    f"<replay-log-aged-time>{ev.format_time(log.replay_start)}</replay-log-aged-time>"
                )
            streams.append("</stream>")
        streams.append("</streams>")
        subs = [f'<subscriptions xmlns="{SN_NS}">']
        for dyn in self.all.values():
            excluded = dyn.stream.excluded if dyn.stream is not None else 0
            receiver = getattr(dyn.sess, "receiver_name", None) or f"netconf-session-{dyn.sess.id}"
            subs.append(
                f"<subscription><id>{dyn.id}</id>{self._policy(dyn)}{_uri_xml(dyn)}<receivers><receiver>"
                f"<name>{receiver}</name><sent-event-records>{dyn.sent}</sent-event-records>"
                f"<excluded-event-records>{excluded}</excluded-event-records>"
                f"<state>{'suspended' if dyn.suspended else 'active'}</state>"
                "</receiver></receivers></subscription>"
            )
        subs.extend(self.configured_state())
        subs.append("</subscriptions>")
        return [etree.fromstring("".join(streams)), etree.fromstring("".join(subs))]


def _uri_xml(dyn: Dynamic) -> str:
    """RFC 8650's `uri` of a subscription made over RESTCONF (where its events are read)."""
    uri = getattr(dyn.sess, "uri", None)
    return f'<uri xmlns="{RSN_NS}">{escape(uri)}</uri>' if uri else ""


def _id(op: etree._Element, ns: str = SN) -> int:
    text = (op.findtext(ns + "id") or "").strip()
    if not text.isdigit():
        raise RpcError(
            "missing-element" if not text else "invalid-value",
            "the subscription id (uint32)",
            type="application",
            info=(("bad-element", "id"),),
        )
    return int(text)


def _modified(old: Request, new: Request) -> Request:
    """The old terms with what modify-subscription gives (filter, stop-time, period/anchor, dampening)."""
    out = Request(**{k: getattr(old, k) for k in old.__dataclass_fields__})
    if new.filter_given:
        out.filter_el, out.filter_given = new.filter_el, True
    if new.stop_time is not None:
        out.stop_time = new.stop_time
    if new.period is not None:
        out.period, out.anchor = new.period, new.anchor
    if new.dampening is not None:
        out.dampening = new.dampening
    out.replay_start = None
    return out


def _inner(data: bytes) -> bytes:
    """The children of a serialised <data> element."""
    if data.endswith(b"/>") and data.count(b"<") == 1:
        return b""
    start = data.index(b">") + 1
    return data[start : data.rindex(b"</")]


def _filter_xml(filter_el: etree._Element | None, kind: str, ns: str) -> str:
    if filter_el is None:
        return ""
    if filter_el.get("type") == "xpath":
        decl = "".join(f' xmlns:{p}="{u}"' for p, u in filter_el.nsmap.items() if p)
        select = escape(filter_el.get("select") or "")
        return f'<{kind}-xpath-filter xmlns="{ns}"{decl}>{select}</{kind}-xpath-filter>'
    inner = "".join(etree.tostring(_clean(c), encoding=str) for c in filter_el)
    return f'<{kind}-subtree-filter xmlns="{ns}">{inner}</{kind}-subtree-filter>'


def _trigger_xml(req: Request) -> str:
    if req.periodic:
        anchor = f"<anchor-time>{ev.format_time(req.anchor)}</anchor-time>" if req.anchor else ""
        return f'<periodic xmlns="{YP_NS}"><period>{req.period}</period>{anchor}</periodic>'
    if req.on_change:
        damp = f"<dampening-period>{req.dampening or 0}</dampening-period>"
        return f'<on-change xmlns="{YP_NS}">{damp}</on-change>'
    return ""


def _clean(el: etree._Element) -> etree._Element:
    """A copy without the namespace declarations it does not use."""
    out = etree.fromstring(etree.tostring(el))
    etree.cleanup_namespaces(out)
    return out
