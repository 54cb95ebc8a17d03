"""The RADIUS side of one virtual router: Access-Requests, accounting and Disconnect-Requests (asyncio).

The engine asks for look-ups (``HomeAgent.drain_aaa_lookups``) and never waits: :class:`AaaClient`
sends each as an Access-Request (``ha.aaa.radius`` builds and checks the bytes), retransmits it
``retries`` times every ``timeout``, then fails over to the next server in configuration order; a
server that timed out is tried last for a backoff that doubles per failure (1 s up to 60 s).  An answer
is checked (Response Authenticator and the Message-Authenticator that answers must carry) before it is
read; a bad one is dropped and counted and the request keeps waiting.  The outcome goes back to the
engine with ``handle_aaa_answer``; its reply is journaled (``VirtualRouter.flush``) then sent.

Accounting (RFC 2866) follows the engine's binding events for AAA-learnt nodes; Disconnect-Requests
(RFC 5176) arrive on ``disconnect-port`` and clear the binding they name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from ha.aaa import radius
from ha.aaa.config import AaaConfig, AaaServer
from ha.aaa.profile import AnswerUnusable, profile_from_accept
from ha.aaa.radius import AcctStatus, Attr, Code, ErrorCause, TerminateCause
from ha.engine.aaa import AAA_NODE_PREFIX, AaaAccepted, AaaLookup, AaaOutcome, AaaRejected, AaaUnavailable
from ha.engine.events import BindingCreated, BindingRemoved, RemovalReason
from ha.engine.home_agent import HomeAgent, Outgoing
from ha.transport import open_udp_socket

if TYPE_CHECKING:
    from ha.transport import HomeAgentTransport

log = logging.getLogger(__name__)

_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 60.0
_BACKOFF_STEPS = 7  # 1 s * 2**6 > 60 s: failures beyond change nothing
#: Identifiers per socket are 256 (RFC 2865 §3): more sockets for more look-ups in flight.
_MAX_SOCKETS = 32
_CAUSES = {
    RemovalReason.DEREGISTERED: TerminateCause.USER_REQUEST,
    RemovalReason.EXPIRED: TerminateCause.SESSION_TIMEOUT,
    RemovalReason.CLEARED: TerminateCause.ADMIN_RESET,
    RemovalReason.REPLACED: TerminateCause.NAS_REQUEST,
}


class ServerState:
    """One configured server's counters and health (YANG ``aaa/server/statistics``)."""

    def __init__(self, server: AaaServer) -> None:
        self.server = server
        self.requests = self.accepts = self.rejects = self.timeouts = 0
        self.bad_authenticators = self.unusable_accepts = 0
        self.accounting_requests = self.accounting_responses = self.disconnect_requests = 0
        self.rtt_last_ms: int | None = None
        self.rtt_average_ms: float | None = None
        self.failures = 0
        self.avoid_until = 0.0

    def answered(self, rtt: float) -> None:
        ms = rtt * 1000
        self.rtt_last_ms = round(ms)
        self.rtt_average_ms = (
            ms if self.rtt_average_ms is None else self.rtt_average_ms + (ms - self.rtt_average_ms) / 8
        )
        self.failures = 0
        self.avoid_until = 0.0

    def failed(self, now: float) -> None:
        """A request timed out: avoid this server for 1 s, doubling per further failure, up to 60 s."""
        self.failures = min(self.failures + 1, _BACKOFF_STEPS)
        self.avoid_until = now + min(_BACKOFF_FIRST * 2 ** (self.failures - 1), _BACKOFF_MAX)


@dataclass(slots=True)
class _Exchange:
    """One request in flight: to which server, with which bytes, how many tries left."""

    kind: str  # "auth" | "acct"
    nai: str
    lookup: AaaLookup | None
    build: Callable[[int, bytes], tuple[bytes, bytes]]  # (identifier, secret) -> (datagram, authenticator)
    order: list[int]  # server indexes still to try, current first
    tries: int = 0
    data: bytes = b""
    authenticator: bytes = b""
    slot: tuple[int, int] | None = None  # (socket index, identifier)
    sent_at: float = 0.0
    timer: asyncio.TimerHandle | None = None


class AaaClient:
    """RADIUS for one virtual router (see the module docstring)."""

    def __init__(
        self,
        *,
        engine: Callable[[], HomeAgent | None],
        config: Callable[[], AaaConfig | None],
        nas_address: IPv4Address,
        netns: str | None,
        flush: Callable[[], asyncio.Future | None],  # a future: the replies wait for replication
        transport: Callable[[], HomeAgentTransport | None],
    ) -> None:
        self._engine = engine
        self._config = config
        self.nas_address = nas_address
        self.netns = netns
        self._flush = flush
        self._transport = transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sockets: list[socket.socket] = []
        self._free: list[list[int]] = []  # free identifiers per socket
        self._inflight: dict[tuple[int, int], _Exchange] = {}
        self.servers: dict[IPv4Address, ServerState] = {}
        self._sessions: dict[str, list] = {}  # node name -> [session id, start wallclock, nai, home, coas]
        self._disconnect: socket.socket | None = None
        self._disconnect_port = 0
        self._replies: list[Outgoing] = []
        self._send_scheduled = False

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.reconfigure()
        engine = self._engine()
        if engine is not None:  # bindings restored from the journal: their sessions go on
            for name, subscriber in engine.subscribers():
                home = engine.assigned_address(name) or subscriber.home_address
                coas = {b.care_of_address for b in engine.bindings_of(home)} if home is not None else set()
                self._sessions[name] = [
                    subscriber.session_id,
                    subscriber.session_start,
                    subscriber.nai,
                    home,
                    coas,
                ]

    def close(self) -> None:
        for exchange in self._inflight.values():
            if exchange.timer is not None:
                exchange.timer.cancel()
        self._inflight.clear()
        loop = self._loop
        for sock in [*self._sockets, *([self._disconnect] if self._disconnect else [])]:
            if loop is not None:
                with contextlib.suppress(Exception):
                    loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets, self._free, self._disconnect = [], [], None

    def reconfigure(self) -> None:
        """Follow ``aaa`` changes: server list (counters kept per address), the Disconnect port."""
        config = self._config()
        servers = config.servers if config is not None else ()
        self.servers = {s.address: self._state_for(s) for s in servers}
        port = config.disconnect_port if config is not None and servers else 0
        if port != self._disconnect_port:
            if self._disconnect is not None:
                assert self._loop is not None
                self._loop.remove_reader(self._disconnect.fileno())
                self._disconnect.close()
                self._disconnect = None
            self._disconnect_port = port
            if port:
                try:
                    self._disconnect = open_udp_socket("0.0.0.0", port, self.netns)
                except OSError as exc:
                    log.error("AAA: cannot listen for Disconnect-Requests on UDP %d: %s", port, exc)
                    self._disconnect_port = 0
                else:
                    assert self._loop is not None
                    self._loop.add_reader(self._disconnect.fileno(), self._on_disconnect)

    def _state_for(self, server: AaaServer) -> ServerState:
        state = self.servers.get(server.address)
        if state is None:
            return ServerState(server)
        state.server = server
        return state

    # -- look-ups -------------------------------------------------------------------------------------

    def submit(self, lookups: list[AaaLookup]) -> None:
        """Start an Access-Request per look-up (the engine asked for each NAI at most once)."""
        config = self._config()
        for lookup in lookups:
            if config is None or not config.servers:
                self._deliver(lookup.nai, AaaUnavailable("no RADIUS server is configured"))
                continue
            self._start(
                _Exchange("auth", lookup.nai, lookup, self._access_builder(lookup, config), self._order())
            )
        self._send_replies()

    def _access_builder(
        self, lookup: AaaLookup, config: AaaConfig
    ) -> Callable[[int, bytes], tuple[bytes, bytes]]:
        attributes = radius.attribute(Attr.USER_NAME, lookup.nai.encode()) + radius.attribute(
            Attr.NAS_IP_ADDRESS, self.nas_address.packed
        )
        if lookup.home_address is not None:
            attributes += radius.attribute(Attr.FRAMED_IP_ADDRESS, lookup.home_address.packed)
        chap = lookup.chap
        if chap is not None:
            attributes += radius.attribute(Attr.CHAP_PASSWORD, chap.chap_password)
            attributes += radius.attribute(Attr.CHAP_CHALLENGE, chap.chap_challenge)
        password = None if chap is not None else (config.lookup_password or b"")

        def build(identifier: int, secret: bytes) -> tuple[bytes, bytes]:
            authenticator = os.urandom(16)
            return radius.access_request(identifier, authenticator, secret, attributes, password=password), (
                authenticator
            )

        return build

    def _order(self) -> list[int]:
        """Servers in configuration order, those in backoff after the others (soonest back first)."""
        now = time.monotonic()
        states = list(self.servers.values())
        ready = [i for i, s in enumerate(states) if s.avoid_until <= now]
        waiting = sorted(
            (i for i, s in enumerate(states) if s.avoid_until > now), key=lambda i: states[i].avoid_until
        )
        return ready + waiting

    def _server(self, exchange: _Exchange) -> ServerState | None:
        states = list(self.servers.values())
        while exchange.order:
            index = exchange.order[0]
            if index < len(states):
                return states[index]
            exchange.order.pop(0)
        return None

    def _start(self, exchange: _Exchange) -> None:
        """Send to the exchange's current server with a fresh identifier and authenticator."""
        state = self._server(exchange)
        if state is None:
            self._give_up(exchange, "no RADIUS server answered")
            return
        slot = self._allocate()
        if slot is None:
            self._give_up(exchange, "too many RADIUS requests in flight")
            return
        exchange.slot = slot
        exchange.tries = 0
        exchange.data, exchange.authenticator = exchange.build(slot[1], state.server.secret)
        self._inflight[slot] = exchange
        self._transmit(exchange, state)

    def _transmit(self, exchange: _Exchange, state: ServerState) -> None:
        assert exchange.slot is not None and self._loop is not None
        config = self._config()
        timeout = (config.timeout_ms if config is not None else 2000) / 1000
        server = state.server
        port = server.auth_port if exchange.kind == "auth" else server.acct_port
        if exchange.kind == "auth":
            state.requests += 1
        else:
            state.accounting_requests += 1
        exchange.sent_at = time.monotonic()
        try:
            self._sockets[exchange.slot[0]].sendto(exchange.data, (str(server.address), port))
        except OSError as exc:
            log.debug("RADIUS send to %s failed: %s", server.address, exc)
        exchange.timer = self._loop.call_later(timeout, self._timed_out, exchange)

    def _timed_out(self, exchange: _Exchange) -> None:
        exchange.timer = None
        state = self._server(exchange)
        config = self._config()
        retries = config.retries if config is not None else 2
        if state is not None and exchange.tries < retries:
            exchange.tries += 1
            self._transmit(exchange, state)  # RFC 5080 §2.2.1: same identifier and authenticator
            return
        if state is not None:
            if exchange.kind == "auth":
                state.timeouts += 1
            state.failed(time.monotonic())
        self._release(exchange)
        exchange.order.pop(0)
        self._start(exchange)
        if self._replies and not self._send_scheduled:  # timers fire one by one: one flush per loop turn
            self._send_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._send_replies)

    def _give_up(self, exchange: _Exchange, reason: str) -> None:
        if exchange.kind == "auth":
            self._deliver(exchange.nai, AaaUnavailable(reason))
        else:
            log.warning("RADIUS accounting for %s lost: %s", exchange.nai, reason)

    def _allocate(self) -> tuple[int, int] | None:
        for index, free in enumerate(self._free):
            if free:
                return index, free.pop()
        if len(self._sockets) >= _MAX_SOCKETS:
            return None
        sock = open_udp_socket("0.0.0.0", 0, self.netns)
        index = len(self._sockets)
        self._sockets.append(sock)
        self._free.append(list(range(255, -1, -1)))
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._on_answers, index)
        return index, self._free[index].pop()

    def _release(self, exchange: _Exchange) -> None:
        if exchange.timer is not None:
            exchange.timer.cancel()
            exchange.timer = None
        slot = exchange.slot
        if slot is not None and self._inflight.get(slot) is exchange:
            del self._inflight[slot]
            self._free[slot[0]].append(slot[1])
        exchange.slot = None

    def _on_answers(self, index: int) -> None:
        sock = self._sockets[index] if index < len(self._sockets) else None
        if sock is None:
            return
        for _ in range(256):
            try:
                data, source = sock.recvfrom(radius.MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            self._answer(index, data, source)
        self._send_replies()

    def _answer(self, index: int, data: bytes, source: tuple[str, int]) -> None:
        if len(data) < 2:
            return
        exchange = self._inflight.get((index, data[1]))
        if exchange is None:
            return  # late (already answered or given up): nothing waits for it
        state = self._server(exchange)
        if state is None or source[0] != str(state.server.address):
            return
        try:
            packet = radius.parse(data)
        except radius.RadiusError:
            state.bad_authenticators += 1
            return
        auth = exchange.kind == "auth"
        if not radius.verify_answer(
            packet, state.server.secret, exchange.authenticator, require_message_authenticator=auth
        ):
            state.bad_authenticators += 1  # dropped; the request keeps waiting (RFC 2865 §3)
            return
        state.answered(time.monotonic() - exchange.sent_at)
        self._release(exchange)
        if not auth:
            if packet.code == Code.ACCOUNTING_RESPONSE:
                state.accounting_responses += 1
            return
        self._deliver(exchange.nai, self._outcome(packet, state, exchange))

    def _outcome(self, packet: radius.Packet, state: ServerState, exchange: _Exchange) -> AaaOutcome:
        where = str(state.server.address)
        if packet.code == Code.ACCESS_ACCEPT:
            state.accepts += 1
            engine = self._engine()
            pools = frozenset(engine.config.address_pools) if engine is not None else frozenset()
            try:
                profile = profile_from_accept(
                    packet,
                    nai=exchange.nai,
                    secret=state.server.secret,
                    request_authenticator=exchange.authenticator,
                    pools=pools,
                )
            except AnswerUnusable as exc:
                state.unusable_accepts += 1
                log.warning(
                    "RADIUS %s accepted %s without what a registration needs: %s", where, exchange.nai, exc
                )
                return AaaRejected(f"Access-Accept from {where} unusable: {exc}")
            return AaaAccepted(profile, where)
        if packet.code == Code.ACCESS_REJECT:
            state.rejects += 1
            return AaaRejected(f"Access-Reject from {where}")
        state.rejects += 1
        return AaaRejected(f"RADIUS code {packet.code} from {where}")

    def _deliver(self, nai: str, outcome: AaaOutcome) -> None:
        engine = self._engine()
        if engine is None or self._loop is None:
            return
        outgoing = engine.handle_aaa_answer(nai, outcome, now=self._loop.time(), wallclock=time.time())
        if outgoing is not None:
            self._replies.append(outgoing)

    def _send_replies(self) -> None:
        """Journal and program what the answers changed, then send their replies (never the reverse)."""
        self._send_scheduled = False
        if not self._replies:
            return
        replies, self._replies = self._replies, []
        try:
            replicated = self._flush()
        except Exception:
            log.exception("AAA: flush failed; %d replies not sent", len(replies))
            return
        transport = self._transport()
        if transport is not None:
            if isinstance(replicated, asyncio.Future):  # hot standby: after etcd has the bindings
                transport.send_after(replicated, replies)
            else:
                transport.send_replies(replies)

    # -- accounting (RFC 2866) --------------------------------------------------------------------------

    def account(self, events: list) -> None:
        """Start / Interim-Update / Stop for AAA-learnt nodes' binding events."""
        config = self._config()
        engine = self._engine()
        if config is None or engine is None:
            return
        for event in events:
            name = getattr(event, "mobile_node", "")
            if not name.startswith(AAA_NODE_PREFIX):
                continue
            if type(event) is BindingCreated:
                session = self._sessions.get(name)
                if session is None:
                    subscriber = engine.subscriber(name)
                    if subscriber is None:
                        continue
                    session = [
                        subscriber.session_id,
                        time.time(),
                        subscriber.nai,
                        event.home_address,
                        set(),
                    ]
                    self._sessions[name] = session
                    status = AcctStatus.START
                else:
                    status = AcctStatus.INTERIM_UPDATE
                session[3] = event.home_address
                session[4].add(event.care_of_address)
                if config.accounting:
                    self._accounting(session, status, event.care_of_address, None)
            elif type(event) is BindingRemoved:
                session = self._sessions.get(name)
                if session is None:
                    continue
                session[4].discard(event.care_of_address)
                if event.reason is RemovalReason.REPLACED:
                    continue  # the handover's new binding sends the Interim-Update
                if session[4]:
                    if config.accounting:
                        self._accounting(session, AcctStatus.INTERIM_UPDATE, min(session[4]), None)
                    continue
                del self._sessions[name]
                if config.accounting:
                    self._accounting(session, AcctStatus.STOP, event.care_of_address, _CAUSES[event.reason])

    def _accounting(
        self, session: list, status: AcctStatus, care_of: IPv4Address, cause: TerminateCause | None
    ) -> None:
        session_id, start, nai, home, _coas = session
        now = time.time()
        attributes = (
            radius.attribute(Attr.ACCT_STATUS_TYPE, radius.u32(status))
            + radius.attribute(Attr.ACCT_SESSION_ID, session_id.encode())
            + radius.attribute(Attr.USER_NAME, nai.encode())
            + radius.attribute(Attr.NAS_IP_ADDRESS, self.nas_address.packed)
            + radius.attribute(Attr.FRAMED_IP_ADDRESS, home.packed)
            + radius.attribute(Attr.CALLING_STATION_ID, str(care_of).encode())
            + radius.attribute(Attr.ACCT_AUTHENTIC, radius.u32(1))
            + radius.attribute(Attr.EVENT_TIMESTAMP, radius.u32(int(now)))
        )
        if status != AcctStatus.START:
            attributes += radius.attribute(Attr.ACCT_SESSION_TIME, radius.u32(max(0, int(now - start))))
        if cause is not None:
            attributes += radius.attribute(Attr.ACCT_TERMINATE_CAUSE, radius.u32(cause))

        def build(identifier: int, secret: bytes) -> tuple[bytes, bytes]:
            data = radius.accounting_request(identifier, secret, attributes)
            return data, data[4:20]

        self._start(_Exchange("acct", nai, None, build, self._order()))

    # -- Disconnect-Request (RFC 5176) ------------------------------------------------------------------

    def _on_disconnect(self) -> None:
        sock = self._disconnect
        if sock is None:
            return
        for _ in range(64):
            try:
                data, source = sock.recvfrom(radius.MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            answer = self._disconnect_answer(data, source)
            if answer is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(answer, source)

    def _disconnect_answer(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        try:
            state = self.servers.get(IPv4Address(source[0]))
            packet = radius.parse(data)
        except (ValueError, radius.RadiusError):
            return None
        if state is None or packet.code != Code.DISCONNECT_REQUEST:
            return None  # RFC 5176 §5.1: only from a configured client, silently discarded otherwise
        secret = state.server.secret
        if not radius.verify_request(packet, secret):
            state.bad_authenticators += 1
            return None
        state.disconnect_requests += 1
        nak = Code.DISCONNECT_NAK

        def reply(code: int, cause: ErrorCause | None = None) -> bytes:
            extra = radius.attribute(Attr.ERROR_CAUSE, radius.u32(cause)) if cause is not None else b""
            return radius.answer(code, packet, secret, extra)

        nas = packet.get(Attr.NAS_IP_ADDRESS)
        if nas is not None and nas != self.nas_address.packed:
            return reply(nak, ErrorCause.NAS_IDENTIFICATION_MISMATCH)
        user = packet.get(Attr.USER_NAME)
        framed = packet.get(Attr.FRAMED_IP_ADDRESS)
        if user is None and framed is None:
            return reply(nak, ErrorCause.MISSING_ATTRIBUTE)
        engine = self._engine()
        if engine is None:
            return reply(nak, ErrorCause.SESSION_CONTEXT_NOT_FOUND)
        try:
            home = IPv4Address(framed) if framed is not None else None
            nai = user.decode("utf-8") if user is not None else None
        except (ValueError, UnicodeDecodeError):
            return reply(nak, ErrorCause.INVALID_REQUEST)
        cleared = (
            engine.clear_bindings(nai=nai, home_address=home)
            if nai is not None
            else engine.clear_bindings(home_address=home)
        )
        if not cleared:
            return reply(nak, ErrorCause.SESSION_CONTEXT_NOT_FOUND)
        log.info("Disconnect-Request from %s cleared %d binding(s) of %s", source[0], cleared, nai or home)
        self._flush()
        transport = self._transport()
        if transport is not None:
            transport.poke()
        return reply(Code.DISCONNECT_ACK)

    # -- operational state ------------------------------------------------------------------------------

    def server_states(self) -> list[ServerState]:
        return list(self.servers.values())
