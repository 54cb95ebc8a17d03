"""The HTTPS transport of configured subscriptions (draft-ietf-netconf-https-notif).

A `Link` is one receiver of one configured subscription. It connects out: it reads the receiver's
capabilities (`GET <path>/capabilities`: which encodings it takes), then POSTs every notification to
`<path>/relay-notification` over TLS, one at a time and in order, with aiohttp's client (connections
kept alive). For the subscription machinery (server/subscriptions.py) it is the receiver's "session":
jobs and stream receivers call `send_notification`, which only appends to a bounded queue — the
code that produces events (a registration burst) never waits for a receiver. On-change jobs do not
even queue behind a slow receiver: while a notification waits (`congested`), they hold their edits,
coalesced per target, until the link calls them back (`when_idle`) with its queue empty.

The receiver's state (RFC 8639 §2.5.1, leaf `state` of /sn:subscriptions/subscription/receivers):
- connecting: capabilities, then subscription-started, retried with exponential backoff while the
  receiver cannot be reached;
- active: events are queued and delivered;
- suspended: the queue overflowed or a delivery failed: what was queued is dropped (counted), the
  producer is paused, the queue holds only subscription-suspended (reason unsupportable-volume),
  retried with backoff; once the receiver took it, subscription-resumed follows and the link is
  active again (an on-change subscription then sends the whole selection);
- disconnected: the receiver refused (an HTTP 4xx to capabilities or subscription-started, or no
  encoding in common), or a certificate file cannot be read: no more attempts until the
  configuration of the subscription or of its receiver instance changes, or the reset action.

`reset()` (RFC 8639's reset action) returns a receiver in any state to connecting at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import itertools
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lxml import etree

from server.nacm import Principal
from server.push import notification
from server.subscription_input import SN_NS
from server.xmlsafe import new_parser

if TYPE_CHECKING:
    import aiohttp

    from server.core import NetconfCore

log = logging.getLogger(__name__)
#: events queued for one receiver before it is suspended (unsupportable-volume)
QUEUE_LIMIT = 10_000
#: first and longest wait between two attempts to reach a receiver (seconds)
MIN_BACKOFF, MAX_BACKOFF = 0.1, 30.0
#: one request (connect, TLS, POST, answer) at most this long (seconds)
REQUEST_TIMEOUT = 10.0
#: a removed subscription's link delivers subscription-terminated for at most this long (seconds)
TERMINATE_SECONDS = 5.0
CAP_PREFIX = "urn:ietf:capability:https-notif-receiver:encoding:"
#: encoding identity (ietf-subscribed-notifications) → capability suffix and media type
MEDIA = {"encode-xml": ("xml", "application/xml"), "encode-json": ("json", "application/json")}
#: the subscription state notifications (RFC 8639 §2.7): not event records
_STATE_NOTES = tuple(
    f'<{name} xmlns="{SN_NS}"'.encode()
    for name in (
        "subscription-started",
        "subscription-modified",
        "subscription-terminated",
        "subscription-suspended",
        "subscription-resumed",
        "subscription-completed",
        "replay-completed",
    )
)
_ids = itertools.count(1)


@dataclass(frozen=True)
class Endpoint:
    """A receiver instance's https-receiver."""

    host: str
    port: int = 443
    path: str = "/"
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    source: str | None = None  # the subscription's source-address

    def url(self, resource: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{self.path.rstrip('/')}/{resource}"

    def tls(self) -> ssl.SSLContext:
        """Verify the receiver's certificate (chain to `ca`, name = host); present `cert` if set."""
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


class Refused(Exception):
    """The receiver answered, and no retry will change the answer."""


class Unreachable(Exception):
    """No answer (connection, TLS, timeout) or a transient one (5xx, 408, 429)."""


@dataclass(eq=False)
class Link:
    """One receiver of one configured subscription; see the module docstring.

    The owner (server/configured.py) gives the callbacks: `started()` builds subscription-started,
    `on_active` starts the subscription's producer, `on_suspend` pauses it, `on_resume` sends
    subscription-resumed and restarts it. `encode(payload, encoding)` gives a notification's body."""

    core: NetconfCore
    sub_id: int
    name: str
    instance: str
    endpoint: Endpoint
    encoding: str | None  # configured; None: the first the receiver offers (XML preferred)
    started: Callable[[Link], bytes]
    on_active: Callable[[Link], None]
    on_suspend: Callable[[Link], None]
    on_resume: Callable[[Link], None]
    encode: Callable[[bytes, str], bytes]
    state: str = "connecting"
    sent: int = 0
    dropped: int = 0
    closed: bool = False
    queue: collections.deque = field(default_factory=collections.deque)
    id: int = field(default_factory=lambda: next(_ids))
    source_host: str | None = None
    subscription: object | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: list[Callable[[], None]] = field(default_factory=list)  # when_idle's callbacks
    _task: asyncio.Task | None = None
    _http: aiohttp.ClientSession | None = None
    _chosen: str = "encode-xml"
    _flying: bytes | None = None  # the notification being POSTed: its answer decides sent or dropped

    # -- what the subscription machinery sees of a session --------------------------------------------
    @property
    def principal(self) -> Principal:
        """What the receiver may read: NACM's rules for the user named like the receiver instance."""
        return Principal(self.instance)

    @property
    def encodings(self) -> tuple[str, ...]:
        return (self.encoding or self._chosen,)

    @property
    def receiver_name(self) -> str:
        return self.name

    def send_notification(self, payload: bytes) -> None:
        """Queue one notification (never waits). A state notification is always queued."""
        if self.closed:
            return
        state_note = _is_state_note(payload)
        if not state_note and self.state != "active":
            self.dropped += 1
            return
        if not state_note and len(self.queue) >= QUEUE_LIMIT:
            self.dropped += 1
            self._suspend()
            return
        self.queue.append((payload, not state_note))
        self._wake.set()

    # -- flow control (server/push.py FlowControlled) -----------------------------------------------------
    def congested(self) -> bool:
        """A notification waits (or is being POSTed) while the receiver is active: producers hold."""
        return self.state == "active" and bool(self.queue)

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when the queue is next empty with the receiver active."""
        self._idle.append(callback)
        self._wake.set()

    def _release(self) -> None:
        callbacks, self._idle = self._idle, []
        for callback in callbacks:
            callback()

    # -- life cycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"https-notif {self.name}")

    async def stop(self, last: bytes | None = None) -> None:
        """End the link; `last` (subscription-terminated) is delivered first if the receiver is up."""
        if last is not None and self.state in ("active", "suspended"):
            self.queue.clear()
            self.queue.append((last, False))
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), TERMINATE_SECONDS)
        self.closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._http is not None:
            await self._http.close()

    async def reset(self) -> dt.datetime:
        """RFC 8639's reset action: back to connecting at once. The current connection is dropped
        (a request in flight is abandoned), what was queued is dropped (counted), the producer
        stops until subscription-started is delivered again, and the connection process starts
        over without waiting (the backoff starts again from its shortest wait); the counters stay.
        Returns the time the receiver went back to connecting."""
        was, self.state = self.state, "connecting"
        at = dt.datetime.now(dt.UTC)
        self.dropped += sum(1 for payload, event in self.queue if event and payload is not self._flying)
        self.queue.clear()
        if was == "active":
            self.on_suspend(self)
        old, self._task = self._task, None
        if old is not None:
            old.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await old
        self._flying = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if not self.closed:
            self.start()
        return at

    async def _drained(self) -> None:
        while self.queue and self._task is not None and not self._task.done():
            await asyncio.sleep(0.02)

    def _suspend(self) -> None:
        """Stop producing; drop what is queued; tell the receiver (first thing it gets next)."""
        if self.state != "active":
            return
        self.state = "suspended"
        flying = self._flying
        self.dropped += sum(1 for payload, event in self.queue if event and payload is not flying)
        self.queue.clear()
        reason = f'<reason xmlns:sn="{SN_NS}">sn:unsupportable-volume</reason>'
        note = _note(
            f'<subscription-suspended xmlns="{SN_NS}"><id>{self.sub_id}</id>{reason}</subscription-suspended>'
        )
        self.queue.append((note, False))
        self._wake.set()
        self.on_suspend(self)

    async def _run(self) -> None:
        import aiohttp

        try:
            tls = self.endpoint.tls()
        except (OSError, ssl.SSLError) as exc:  # a certificate file missing or unreadable
            log.error("https-notif receiver %s: TLS setup failed (%s); disconnected", self.name, exc)
            self.state = "disconnected"
            return
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        connector = aiohttp.TCPConnector(
            ssl=tls,
            local_addr=(self.endpoint.source, 0) if self.endpoint.source else None,
            limit=1,
        )
        self._http = aiohttp.ClientSession(connector=connector, timeout=timeout)
        backoff = MIN_BACKOFF
        while not self.closed:
            try:
                if self.state == "connecting":
                    await self._connect()
                    backoff = MIN_BACKOFF
                elif self.state == "disconnected":
                    await asyncio.Event().wait()  # until the owner replaces the link
                elif self.queue:
                    await self._deliver()
                    backoff = MIN_BACKOFF
                elif self.state == "suspended":  # subscription-suspended went through
                    self.state = "active"
                    self.on_resume(self)
                elif self._idle and self.state == "active":
                    self._release()  # held on-change edits go out now (they queue one update)
                else:
                    self._wake.clear()
                    await self._wake.wait()
            except Refused as exc:
                log.warning("https-notif receiver %s refused: %s; disconnected", self.name, exc)
                self.state = "disconnected"
                self.on_suspend(self)
            except Unreachable as exc:
                log.info("https-notif receiver %s unreachable (%s); again in %.1f s", self.name, exc, backoff)
                self._suspend()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("https-notif receiver %s", self.name)
                await asyncio.sleep(MAX_BACKOFF)

    async def _connect(self) -> None:
        offered = await self._capabilities()
        mine = [self.encoding] if self.encoding else ["encode-xml", "encode-json"]
        common = [e for e in mine if MEDIA[e][0] in offered]
        if not common:
            raise Refused(f"it takes {sorted(offered)}, the subscription sends {mine}")
        self._chosen = common[0]
        await self._post(self.started(self))
        self.state = "active"
        self.on_active(self)

    async def _capabilities(self) -> set[str]:
        import aiohttp

        assert self._http is not None
        try:
            async with self._http.get(
                self.endpoint.url("capabilities"), headers={"Accept": "application/xml, application/json"}
            ) as resp:
                body = await resp.read()
                _check(resp.status, "capabilities")
                ctype = resp.headers.get("Content-Type", "")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from None
        return {c[len(CAP_PREFIX) :] for c in _capability_list(body, ctype) if c.startswith(CAP_PREFIX)}

    async def _deliver(self) -> None:
        payload, event = self.queue[0]
        self._flying = payload
        try:
            await self._post(payload)
        except Refused as exc:  # this notification only: the receiver still takes the next ones
            log.info("https-notif receiver %s refused a notification (%s); dropped", self.name, exc)
            self.dropped += event
        except Unreachable:
            if not (self.queue and self.queue[0][0] is payload):  # a suspension cleared it meanwhile
                self.dropped += event
            raise
        else:
            self.sent += event
        finally:
            self._flying = None
        if self.queue and self.queue[0][0] is payload:
            self.queue.popleft()

    async def _post(self, payload: bytes) -> None:
        import aiohttp

        assert self._http is not None
        enc = self.encodings[0]
        body = self.encode(payload, enc)
        try:
            async with self._http.post(
                self.endpoint.url("relay-notification"), data=body, headers={"Content-Type": MEDIA[enc][1]}
            ) as resp:
                await resp.read()
                _check(resp.status, "relay-notification")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from None


def _is_state_note(payload: bytes) -> bool:
    at = payload.find(b"</eventTime>")
    return at >= 0 and payload.startswith(_STATE_NOTES, at + len(b"</eventTime>"))


def _check(status: int, what: str) -> None:
    if 200 <= status < 300:
        return
    if status in (408, 429) or status >= 500:
        raise Unreachable(f"{what}: HTTP {status}")
    raise Refused(f"{what}: HTTP {status}")


def _capability_list(body: bytes, ctype: str) -> list[str]:
    """receiver-capabilities/receiver-capability, in XML or JSON (RFC 7951 names, any module prefix)."""
    if "json" in ctype:
        try:
            doc = json.loads(body)
        except ValueError:
            raise Refused("capabilities: not JSON") from None
        caps: object = (
            next((v for k, v in doc.items() if k.endswith("receiver-capabilities")), {})
            if isinstance(doc, dict)
            else {}
        )
        found = caps.get("receiver-capability", []) if isinstance(caps, dict) else []
        return [c for c in found if isinstance(c, str)]
    try:
        root = etree.fromstring(body, new_parser())
    except etree.XMLSyntaxError:
        raise Refused("capabilities: not XML") from None
    return [(e.text or "").strip() for e in root.iter() if etree.QName(e).localname == "receiver-capability"]


def _note(body: str) -> bytes:
    return notification(body.encode())
