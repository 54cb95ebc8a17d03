"""One NETCONF session, transport-agnostic: hello exchange, framing, RPC dispatch, replies.

The SSH layer (session.py) feeds bytes in and gives two callables out (`write`, `close`); it is
testable without a socket. Every RpcError raised by a handler is turned into <rpc-error> here and
only here.

One RPC at a time per session, replies in request order. A handler that returns a plain value is
answered inline inside `data_received` (the small get-config round trip costs no task); one that
returns an awaitable (configuration changes, async YANG rpcs) is finished by a task, and the
messages that arrive meanwhile wait in `_backlog` until it is done. When the session ends, that
task is cancelled (RFC 6241 §7.9: its operation is stopped) and the backlog is dropped.

A reply whose body is a generator of parts (a <get> of every binding) is streamed by a task the
same way: each part is framed and written, then the event loop runs (and `drain`, from the
transport, waits while the channel's buffer is full) before the next part is produced, so that
producing the reply overlaps with sending it and memory stays at a few parts.  Notifications
due meanwhile are held and follow the reply: messages never interleave.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from lxml import etree

from server.errors import RpcError
from server.framing import NEED_DATA, Framer, FramingError
from server.monitoring import Counters
from server.nacm import Principal
from server.xmlns import NC_BASE_10, NC_BASE_11, NC_NS
from server.xmlparse import parse_message

if TYPE_CHECKING:
    from server.core import NetconfCore
    from server.notifications import Subscription
    from server.operations import Parts

log = logging.getLogger(__name__)
_RPC = f"{{{NC_NS}}}rpc"
_HELLO = f"{{{NC_NS}}}hello"
_OK = b"<ok/>"
HELLO_LIMIT = 1024 * 1024
#: notifications held while a reply streams, in bytes, before the session is dropped (a client
#: that stopped reading in the middle of a large reply must not make the server hold its events forever)
HELD_LIMIT = 64 * 1024 * 1024
#: replies given as parts are joined into one chunk up to this size (cheaper than a write per part)
COALESCE_LIMIT = 256 * 1024


class NetconfSession:
    """State of one client session; `write`/`close` come from the transport.  `write` gets one whole
    framed message: bytes, or a list of bytes written one after the other."""

    def __init__(
        self,
        core: NetconfCore,
        principal: Principal,
        source_host: str | None,
        write: Callable[[bytes | list[bytes]], None],
        close: Callable[[], None],
        drain: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.core = core
        self.principal = principal
        self.source_host = source_host
        self._write = write
        self._close = close
        self._drain = drain
        # until the client's <hello> arrives, accept at most HELLO_LIMIT bytes (no 64 MB pre-hello buffer)
        self.framer = Framer(min(HELLO_LIMIT, core.max_message_size))
        self.id = core.new_session_id()
        self.login_time = dt.datetime.now(dt.UTC)
        self.counters = Counters()
        self.subscription: Subscription | None = None
        self.hello_done = False
        self.close_after_reply = False
        self.closed = False
        self._busy: asyncio.Task | None = None  # the task finishing the current RPC, if any
        self._backlog: deque[bytes] = deque()  # RPCs received while it runs, in order
        self._held: list[bytes | list[bytes]] | None = None  # messages due while a reply streams
        self._held_bytes = 0
        self._eof = False  # the client sent EOF: end the session once the pending RPCs are answered

    # -- transport events ----------------------------------------------------------------------------
    def start(self) -> None:
        """Register with the core and send our <hello> (both sides send theirs at once)."""
        self.core.register(self)
        self._write(self.framer.frame(self.core.hello_bytes(self.id)))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.framer.receive_data(data)
        while not self.closed:
            try:
                msg = self.framer.next_message()
            except FramingError as exc:
                log.warning("session %d: framing error: %s", self.id, exc)
                if self.hello_done:
                    self._send_error_reply(None, RpcError("malformed-message", str(exc), type="rpc"))
                self.terminate("other")
                return
            if msg is NEED_DATA:
                return
            if not self.hello_done:
                self._handle_hello(msg)
            elif self._busy is not None:
                self._backlog.append(msg)
            else:
                self._handle_rpc(msg)

    def eof_received(self) -> bool:
        """The client will send nothing more (SSH EOF; `ssh -s netconf < rpcs.xml` does this right
        after its last RPC). RPCs already received are still answered, then the session ends.
        True while replies are pending (the transport keeps its sending half open)."""
        if self._busy is None and not self._backlog:
            self.connection_lost()
            return False
        if self.framer.mid_message:
            log.info("session %d: peer sent EOF mid-message", self.id)
        self._eof = True
        return True

    def connection_lost(self) -> None:
        """The transport went away (possibly mid-message): drop buffers and clean up once."""
        if self.framer.mid_message:
            log.info("session %d: peer disconnected mid-message", self.id)
        self.framer = Framer(0)
        self.terminate("dropped")

    def terminate(self, reason: str, killed_by: int | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        self._backlog.clear()
        busy, self._busy = self._busy, None
        if busy is not None and busy is not asyncio.current_task(self.core.event_loop()):
            busy.cancel()  # stops its operation; a transaction aborts and releases the lock
        self.core.unregister(self, reason, killed_by)
        try:
            self._close()
        except Exception:
            log.debug("close failed", exc_info=True)

    def flow_paused(self) -> None:
        """The transport's buffer is over its high-water mark: the client does not keep up."""
        self.core.subscriptions.suspend(self)

    def flow_resumed(self) -> None:
        self.core.subscriptions.resume(self)

    def send_notification(self, payload: bytes) -> None:
        if not self.closed:
            self.counters.out_notifications += 1
            self.core.stats.totals.out_notifications += 1
            self._send(self.framer.frame(payload))

    def _send(self, message: bytes | list[bytes]) -> None:
        """Write one whole framed message, or hold it while a streamed reply is being written."""
        if self._held is None:
            self._write(message)
            return
        self._held.append(message)
        self._held_bytes += len(message) if isinstance(message, bytes) else sum(map(len, message))
        if self._held_bytes > HELD_LIMIT and not self.closed:
            log.warning("session %d: client is not reading (%d bytes held); closing", self.id, HELD_LIMIT)
            self.core.event_loop().call_soon(self.terminate, "dropped")

    # -- hello ---------------------------------------------------------------------------------------
    def _handle_hello(self, msg: bytes) -> None:
        try:
            root = parse_message(msg)
        except RpcError:
            root = None
        caps: set[str] = set()
        if root is not None and root.tag == _HELLO:
            caps = {(c.text or "").strip() for c in root.iter(f"{{{NC_NS}}}capability")}
        if (
            root is None
            or root.tag != _HELLO
            or root.find(f"{{{NC_NS}}}session-id") is not None
            or not (caps & {NC_BASE_10, NC_BASE_11})
        ):
            log.warning("session %d: bad hello, closing", self.id)
            self.core.stats.in_bad_hellos += 1
            self.terminate("bad-hello")
            return
        self.hello_done = True
        self.framer.max_message_size = self.core.max_message_size
        if NC_BASE_11 in caps:
            self.framer.use_chunked()

    # -- rpc -----------------------------------------------------------------------------------------
    def _handle_rpc(self, msg: bytes) -> None:
        self.counters.in_rpcs += 1
        self.core.stats.totals.in_rpcs += 1
        try:
            root = parse_message(msg)
        except RpcError as err:
            self._bad_rpc()
            self._send_error_reply(None, err)
            return
        if root.tag != _RPC:
            self._bad_rpc()
            self._send_error_reply(
                None,
                RpcError(
                    "unknown-element",
                    f"expected <rpc>, got {root.tag}",
                    type="rpc",
                    info=(("bad-element", etree.QName(root).localname),),
                ),
            )
            return
        if root.get("message-id") is None:
            self._bad_rpc()
            self._send_error_reply(
                root,
                RpcError(
                    "missing-attribute",
                    "rpc without message-id",
                    type="rpc",
                    info=(("bad-attribute", "message-id"), ("bad-element", "rpc")),
                ),
            )
            return
        ops = [c for c in root if isinstance(c.tag, str)]
        if len(ops) != 1:
            self._bad_rpc()
            self._send_error_reply(
                root,
                RpcError(
                    "malformed-message" if ops else "missing-element",
                    "an <rpc> holds exactly one operation",
                    type="rpc",
                    info=() if ops else (("bad-element", "rpc"),),
                ),
            )
            return
        op = ops[0]
        handler = self.core.rpc_handlers.get(_split(op.tag))
        try:
            if handler is None:
                raise RpcError(
                    "operation-not-supported",
                    f"unknown operation {op.tag}",
                    type="protocol",
                    info=(("bad-element", etree.QName(op).localname),),
                )
            if not self.core.nacm.may_call(self.principal, _split(op.tag)):
                raise RpcError(
                    "access-denied",
                    f"{etree.QName(op).localname} is not allowed for this user",
                    type="protocol",
                )
            result = handler(self, op)
        except Exception as exc:
            self._send_failure(root, op, exc)
            return
        if inspect.isawaitable(result):
            self._busy = self.core.event_loop().create_task(
                self._finish(root, op, result), name=f"netconf session {self.id} rpc"
            )
            return
        self._send_result(root, result)

    async def _finish(self, root: etree._Element, op: etree._Element, pending: Awaitable) -> None:
        """Await a handler's result, reply, then handle what arrived meanwhile (in order)."""
        try:
            result = await pending
        except asyncio.CancelledError:
            if not self.closed:  # cancelled by someone else than terminate(): still answer
                self._send_failure(root, op, RpcError("operation-failed", "operation cancelled"))
                self._resume()
            raise
        except Exception as exc:
            self._send_failure(root, op, exc)
        else:
            self._send_result(root, result)
        self._resume()

    def _resume(self) -> None:
        """The current RPC is answered: process the backlog until empty or another RPC suspends."""
        if asyncio.current_task() is self._busy:
            self._busy = None
        while self._backlog and not self.closed and self._busy is None:
            self._handle_rpc(self._backlog.popleft())
        if self._eof and self._busy is None and not self._backlog:
            self.terminate("dropped")

    def _send_result(self, root: etree._Element, result: etree._Element | bytes | Parts | None) -> None:
        if self.closed:
            return  # killed or lost while the RPC ran: nobody to answer
        if result is None:
            body: bytes | list[bytes] = _OK
        elif isinstance(result, bytes | list):
            body = result
        elif isinstance(result, etree._Element):
            body = etree.tostring(result)
        else:  # parts produced while they are written
            self._held, self._held_bytes = [], 0
            self._busy = self.core.event_loop().create_task(
                self._stream_reply(root, result), name=f"netconf session {self.id} reply"
            )
            return
        self._send_reply(root, body)
        if self.close_after_reply:
            self.terminate("closed")

    async def _stream_reply(self, rpc: etree._Element, parts: Iterator[bytes]) -> None:
        """Write a reply part by part as `parts` produces them (see the module docstring)."""
        head, tail = reply_envelope(rpc)
        framer = self.framer
        try:
            for part in itertools.chain((head,), parts, (tail,)):
                if part:
                    self._write(framer.frame_chunk(part))
                    await asyncio.sleep(0)  # window adjustments come in, other sessions run
                    if self._drain is not None:
                        await self._drain()
                if self.closed:
                    return
            self._write(framer.end_of_message())
        except Exception:
            log.exception("session %d: a reply failed half written; closing the session", self.id)
            self.terminate("other")
            return
        finally:  # ended early (session gone, cancelled): the producer stops now, not at collection
            close = getattr(parts, "close", None)
            if close is not None:
                close()
        held, self._held = self._held or [], None
        for message in held:
            self._write(message)
        if self.close_after_reply:
            self.terminate("closed")
            return
        self._resume()

    def _send_failure(self, root: etree._Element, op: etree._Element, exc: BaseException) -> None:
        if self.closed:
            return
        if not isinstance(exc, RpcError):
            log.error("session %d: %s failed", self.id, op.tag, exc_info=exc)
            exc = RpcError("operation-failed", f"internal error: {type(exc).__name__}")
        self._send_error_reply(root, exc)

    def _bad_rpc(self) -> None:
        self.counters.in_bad_rpcs += 1
        self.core.stats.totals.in_bad_rpcs += 1

    def _send_reply(self, rpc: etree._Element | None, body: bytes | list[bytes]) -> None:
        if isinstance(body, list) and sum(map(len, body)) <= COALESCE_LIMIT:
            body = b"".join(body)  # a small reply: one chunk, one SSH packet, not one per part
        if isinstance(body, bytes):
            self._send(self.framer.frame(reply_bytes(rpc, body)))
        else:  # a large reply: framed and written part by part, never joined into one byte string
            head, tail = reply_envelope(rpc)
            self._send(self.framer.frame_parts([head, *body, tail]))

    def _send_error_reply(self, rpc: etree._Element | None, err: RpcError) -> None:
        errs = err.all()
        self.counters.out_rpc_errors += 1
        self.core.stats.totals.out_rpc_errors += 1
        self._send_reply(rpc, b"".join(etree.tostring(e.to_xml()) for e in errs))


def _split(tag: str) -> tuple[str, str]:
    ns, _, name = tag[1:].partition("}") if tag[:1] == "{" else ("", "", tag)
    return ns, name


def reply_envelope(rpc: etree._Element | None) -> tuple[bytes, bytes]:
    """The start and end tags of an <rpc-reply> carrying every attribute of the <rpc> (RFC 6241 §4.2)."""
    if rpc is None:
        reply = etree.Element(f"{{{NC_NS}}}rpc-reply", nsmap={None: NC_NS})
    else:  # in the rpc's own document: the client's attribute names stay out of this thread's dictionary
        reply = rpc.makeelement(f"{{{NC_NS}}}rpc-reply", nsmap={None: NC_NS})
        for k, v in rpc.attrib.items():
            reply.set(k, v)
    head = etree.tostring(reply)
    assert head.endswith(b"/>")
    return head[:-2] + b">", b"</rpc-reply>"


def reply_bytes(rpc: etree._Element | None, body: bytes) -> bytes:
    """<rpc-reply> around `body`, as one message."""
    head, tail = reply_envelope(rpc)
    return b"".join((head, body, tail))
