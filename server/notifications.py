"""RFC 5277 event notifications on stream NETCONF, with a bounded replay log, and RFC 6470 events.

`EventLog` keeps the last N notifications (for start-time replay) and is the one source of stream
NETCONF: every receiver attaches to it (`attach`: anything with `offer(event)`), whatever carries the
events out — RFC 5277 `Subscription` here, RFC 8639 dynamic subscriptions (server/subscriptions.py), an
HTTP event stream. `EventSelector` is what every receiver decides with: NACM, then a subtree or XPath
filter. A `Subscription` belongs to one session: it replays from the log, sends <replayComplete/>, and
ends with <notificationComplete/> at stop-time. Time handling: the caller passes `now` (wall-clock UTC).
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import logging
from collections.abc import Callable
from typing import Protocol

from lxml import etree

from server.errors import RpcError
from server.filters import SubtreeFilter, xpath_filter
from server.schema import Schema
from server.tree import Forest
from server.xmlns import NCN_NS, NCNOTIF_NS, NOTIF_NS

STREAM = "NETCONF"
log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str, field: str) -> dt.datetime:
    s = (text or "").strip()
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise RpcError(
            "bad-element", f"bad date-and-time in {field}", type="protocol", info=(("bad-element", field),)
        ) from None
    if t.tzinfo is None:
        raise RpcError(
            "bad-element", f"{field} needs a time zone", type="protocol", info=(("bad-element", field),)
        )
    return t


class Event:
    """One logged notification. The body (the event element, e.g. <netconf-session-start>) may be
    given as a function that builds it: it is built once, when a subscriber or a replay first needs
    it, so that thousands of binding events per second cost no XML while nobody listens."""

    __slots__ = ("_body", "_make", "time")

    def __init__(self, time: dt.datetime, body: etree._Element | Callable[[], etree._Element]) -> None:
        self.time = time
        if isinstance(body, etree._Element):
            self._body: etree._Element | None = body
            self._make: Callable[[], etree._Element] | None = None
        else:
            self._body, self._make = None, body

    @property
    def body(self) -> etree._Element:
        if self._body is None:
            assert self._make is not None
            self._body, self._make = self._make(), None
        return self._body

    def to_bytes(self) -> bytes:
        return render(self.time, self.body)


def render(time: dt.datetime, body: etree._Element) -> bytes:
    n = etree.Element(f"{{{NOTIF_NS}}}notification", nsmap={None: NOTIF_NS})
    etree.SubElement(n, f"{{{NOTIF_NS}}}eventTime").text = format_time(time)
    n.append(copy.deepcopy(body))  # the logged event stays a root of its own (replay, XPath filters)
    return etree.tostring(n)


class Receiver(Protocol):
    """What attaches to the EventLog: called with every event published while attached."""

    def offer(self, ev: Event) -> None: ...


class EventLog:
    """Bounded replay buffer for stream NETCONF, plus fan-out to live receivers."""

    def __init__(self, size: int = 1000) -> None:
        self.events: collections.deque[Event] = collections.deque(maxlen=size)
        self.subscribers: list[Receiver] = []
        self.created = utcnow()

    @property
    def replay_start(self) -> dt.datetime:
        return self.events[0].time if len(self.events) == self.events.maxlen else self.created

    @property
    def aged(self) -> bool:
        """True once events have been dropped from the log (replay no longer reaches `created`)."""
        return len(self.events) == self.events.maxlen

    def attach(self, receiver: Receiver) -> None:
        if receiver not in self.subscribers:
            self.subscribers.append(receiver)

    def detach(self, receiver: Receiver) -> None:
        if receiver in self.subscribers:
            self.subscribers.remove(receiver)

    def since(self, start: dt.datetime, stop: dt.datetime | None = None) -> list[Event]:
        """The logged events from `start` (to `stop`), for a replay."""
        return [ev for ev in self.events if ev.time >= start and (stop is None or ev.time <= stop)]

    def publish(
        self, body: etree._Element | Callable[[], etree._Element], now: dt.datetime | None = None
    ) -> Event:
        ev = Event(now or utcnow(), body)
        self.events.append(ev)
        for sub in list(self.subscribers):
            sub.offer(ev)
        return ev


class EventSelector:
    """Which events a receiver gets: `allow` (NACM) first, then a subtree or an XPath filter."""

    def __init__(
        self,
        schema: Schema,
        *,
        filter_el: etree._Element | None = None,
        xpath: tuple[str, dict] | None = None,
        allow: Callable[[etree._Element], bool] | None = None,
    ) -> None:
        self.schema, self.filter_el, self.xpath, self.allow = schema, filter_el, xpath, allow

    def wants(self, body: etree._Element) -> bool:
        if self.allow is not None and not self.allow(body):
            return False
        if self.filter_el is None and self.xpath is None:
            return True
        data = Forest([body])
        if self.xpath is not None:
            return len(xpath_filter(data, self.xpath[0], self.xpath[1], self.schema)) > 0
        return len(SubtreeFilter(self.filter_el, self.schema).apply(data)) > 0


def event_body(ev: Event) -> etree._Element | None:
    """The event's body, or None when its builder failed (that event is lost, nothing else)."""
    try:
        return ev.body
    except Exception:
        log.exception("notification of %s could not be built; not sent", format_time(ev.time))
        return None


class Subscription:
    """One session's create-subscription; `send` writes one framed notification to the session."""

    def __init__(
        self,
        log: EventLog,
        send: Callable[[bytes], None],
        schema: Schema,
        *,
        filter_el: etree._Element | None = None,
        xpath: tuple[str, dict] | None = None,
        start: dt.datetime | None = None,
        stop: dt.datetime | None = None,
        allow: Callable[[etree._Element], bool] | None = None,
    ) -> None:
        self.log, self.send, self.schema = log, send, schema
        self.selector = EventSelector(schema, filter_el=filter_el, xpath=xpath, allow=allow)
        self.start, self.stop = start, stop
        self.active = True
        self.sent = 0

    def begin(self, now: dt.datetime) -> None:
        """Replay from the log when start-time was given, then go live (or finish at stop-time)."""
        if self.start is not None:
            for ev in self.log.since(self.start, self.stop):
                self._deliver(ev)
            self.send(render(now, etree.Element(f"{{{NCN_NS}}}replayComplete", nsmap={None: NCN_NS})))
            if self.stop is not None and self.stop <= now:
                self.finish(now)
                return
        self.log.attach(self)

    def offer(self, ev: Event) -> None:
        if not self.active:
            return
        if self.stop is not None and ev.time > self.stop:
            self.finish(ev.time)
            return
        self._deliver(ev)

    def _deliver(self, ev: Event) -> None:
        body = event_body(ev)
        if body is not None and self.selector.wants(body):
            self.send(ev.to_bytes())
            self.sent += 1

    def finish(self, now: dt.datetime) -> None:
        if not self.active:
            return
        self.active = False
        self.log.detach(self)
        self.send(render(now, etree.Element(f"{{{NCN_NS}}}notificationComplete", nsmap={None: NCN_NS})))

    def cancel(self) -> None:
        self.active = False
        self.log.detach(self)


# -- RFC 6470 event bodies -------------------------------------------------------------------------------
def _el(name: str) -> etree._Element:
    return etree.Element(f"{{{NCNOTIF_NS}}}{name}", nsmap={None: NCNOTIF_NS})


def _sub(parent: etree._Element, name: str, text: str) -> None:
    etree.SubElement(parent, f"{{{NCNOTIF_NS}}}{name}").text = text


def _by(parent: etree._Element, user: str, session_id: int, source: str | None) -> etree._Element:
    by = etree.SubElement(parent, f"{{{NCNOTIF_NS}}}changed-by")
    if session_id == 0:
        etree.SubElement(by, f"{{{NCNOTIF_NS}}}server")
        return by
    _sub(by, "username", user)
    _sub(by, "session-id", str(session_id))
    if source:
        _sub(by, "source-host", source)
    return by


def session_start(user: str, session_id: int, source: str | None) -> etree._Element:
    e = _el("netconf-session-start")
    _sub(e, "username", user)
    _sub(e, "session-id", str(session_id))
    if source:
        _sub(e, "source-host", source)
    return e


def session_end(
    user: str, session_id: int, source: str | None, reason: str, killed_by: int | None
) -> etree._Element:
    e = _el("netconf-session-end")
    _sub(e, "username", user)
    _sub(e, "session-id", str(session_id))
    if source:
        _sub(e, "source-host", source)
    if killed_by is not None:
        _sub(e, "killed-by", str(killed_by))
    _sub(e, "termination-reason", reason)
    return e


def config_change(
    datastore: str,
    user: str,
    session_id: int,
    source: str | None,
    edits: list[tuple[str, str]],
    nsmap: dict[str, str],
) -> etree._Element:
    """edits: (instance-identifier, operation) pairs; `nsmap` declares the prefixes the targets use."""
    e = _el("netconf-config-change")
    _by(e, user, session_id, source)
    _sub(e, "datastore", datastore)
    for target, op in edits:
        ed = etree.SubElement(e, f"{{{NCNOTIF_NS}}}edit")
        t = etree.SubElement(ed, f"{{{NCNOTIF_NS}}}target", nsmap=nsmap)
        t.text = target
        _sub(ed, "operation", op)
    return e


def confirmed_commit(
    event: str, user: str, session_id: int, source: str | None, timeout: int | None
) -> etree._Element:
    e = _el("netconf-confirmed-commit")
    if session_id:
        _sub(e, "username", user)
        _sub(e, "session-id", str(session_id))
        if source:
            _sub(e, "source-host", source)
    _sub(e, "confirm-event", event)
    if timeout is not None:
        _sub(e, "timeout", str(timeout))
    return e
