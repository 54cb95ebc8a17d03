"""The RADIUS side of one virtual router: Access-Requests, accounting and Disconnect-Requests (asyncio).

The engine asks for look-ups (``HomeAgent.drain_aaa_lookups``) and never waits: :class:`AaaClient`
sends each as an Access-Request (``ha.aaa.radius`` builds and checks the bytes), retransmits it
``retries`` times every ``timeout``, then fails over to the next server in configuration order; a
server that timed out is tried last for a backoff that doubles per failure (1 s up to 60 s) and is
probed with Status-Server (RFC 5997) meanwhile: an answer brings it back at once, and a server that
has answered Status-Server once is not used again after a failure until it answers a probe.  An answer
is checked (Response Authenticator and the Message-Authenticator that answers must carry) before it is
read; a bad one is dropped and counted and the request keeps waiting.  The outcome goes back to the
engine with ``handle_aaa_answer``; its reply is journaled (``VirtualRouter.flush``) then sent.

Retransmission deadlines sit in one heap served by one loop timer with a coarse granularity
(:data:`_TICK`): requests timing out together are retransmitted or given up in one wake-up, their
denials flushed once — a silent server costs the registrations of everyone else next to nothing.
Answers are taken in batches at least :data:`_COALESCE` apart (the first after a pause at once), the
answering socket unwatched in between: under load one wake-up and one flush serve many answers.

Accounting (RFC 2866) follows the engine's binding events for AAA-learnt nodes; a retransmitted
Accounting-Request carries the seconds it has waited in Acct-Delay-Time (§5.2), hence a new identifier
(RFC 5080 §2.2.1).  Disconnect-Requests (RFC 5176) arrive on ``disconnect-port`` and clear the binding
they name; CoA-Requests are answered CoA-NAK, Error-Cause 406 (Unsupported Extension).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
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
#: A server out of use until it answers Status-Server is probed at least this often.
_PROBE_MAX = 10.0
#: Identifiers per socket are 256 (RFC 2865 §3): more sockets for more look-ups in flight.
_MAX_SOCKETS = 32
#: Deadlines closer than this are served in one wake-up (at most a quarter of the timeout).
_TICK = 0.05
#: Answers are decided, journaled and their replies sent in batches at least this far apart (the
#: first after a pause at once): under load one event-loop wake-up and one flush serve many.
_COALESCE = 0.002
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
        self.coa_requests = self.status_server_probes = self.status_server_answers = 0
        self.rtt_last_ms: int | None = None
        self.rtt_average_ms: float | None = None
        self.failures = 0
        self.avoid_until = 0.0
        self.status_server = False  # it answered Status-Server: after a failure, used again on an answer
        self.probe: asyncio.Handle | _Exchange | None = None  # the next probe, or the one in flight
        self.host = str(server.address)  # what recvfrom says an answer came from
        self.auth_destination = (self.host, server.auth_port)
        self.acct_destination = (self.host, server.acct_port)

    def answered(self, rtt: float) -> None:
        ms = rtt * 1000
        self.rtt_last_ms = round(ms)
        self.rtt_average_ms = (
            ms if self.rtt_average_ms is None else self.rtt_average_ms + (ms - self.rtt_average_ms) / 8
        )
        self.failures = 0
        self.avoid_until = 0.0

    def failed(self, now: float) -> float:
        """A request timed out: avoid this server for 1 s, doubling per further failure, up to 60 s (a
        server that answers Status-Server: until it answers a probe).  Returns the backoff."""
        self.failures = min(self.failures + 1, _BACKOFF_STEPS)
        delay = min(_BACKOFF_FIRST * 2 ** (self.failures - 1), _BACKOFF_MAX)
        self.avoid_until = math.inf if self.status_server else now + delay
        return delay

    def configure(self, server: AaaServer) -> None:
        self.server = server
        self.auth_destination = (self.host, server.auth_port)
        self.acct_destination = (self.host, server.acct_port)


@dataclass(slots=True)
class _Exchange:
    """One request in flight: to which server, with which bytes, how many tries left."""

    kind: str  # "auth" | "acct" | "status"
    nai: str
    lookup: AaaLookup | None
    # (identifier, secret, seconds waited so far) -> (datagram, authenticator)
    build: Callable[[int, bytes, int], tuple[bytes, bytes]]
    order: list[int]  # server indexes still to try, current first
    tries: int = 0
    data: bytes = b""
    authenticator: bytes = b""
    slot: tuple[int, int] | None = None  # (socket index, identifier)
    sent_at: float = 0.0
    created: float = 0.0
    deadline: int = 0  # the sequence number of its live entry in the deadline heap (0: none)


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
        self._states: list[ServerState] = []  # in configuration order: what _Exchange.order indexes
        self._nas_attribute = radius.attribute(Attr.NAS_IP_ADDRESS, nas_address.packed)
        self._sessions: dict[str, list] = {}  # node name -> [session id, start wallclock, nai, home, coas]
        self._following = False  # whether sessions are followed (``accounting`` configured true)
        self._random, self._random_at = b"", 0  # Request Authenticators to come (_random16)
        self._disconnect: socket.socket | None = None
        self._disconnect_port = 0
        self._replies: list[Outgoing] = []
        self._deadlines: list[tuple[float, int, _Exchange]] = []  # (when, sequence, exchange): a heap
        self._sequence = itertools.count(1)
        self._tick: asyncio.TimerHandle | None = None
        self._tick_at = math.inf
        self._ticking = False
        self._inbox: list[tuple[int, bytes, tuple[str, int]]] = []  # answers read, to decide together
        self._held: list[int] = []  # sockets unwatched until the next batch (_on_answers)
        self._inbox_due: asyncio.TimerHandle | None = None  # the next batch (None: at the next answer)
        self._answered_at = -math.inf  # when the last batch was decided

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.reconfigure()

    def _adopt_sessions(self) -> None:
        """Accounting sessions of the bindings the engine holds (restored from the journal, or bound
        while accounting was off): their Interim-Updates and Stops go on from here."""
        engine = self._engine()
        if engine is None:
            return
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
        if self._tick is not None:
            self._tick.cancel()
            self._tick, self._tick_at = None, math.inf
        self._deadlines.clear()
        self._inbox.clear()
        self._held.clear()
        if self._inbox_due is not None:
            self._inbox_due.cancel()
            self._inbox_due = None
        for state in self.servers.values():
            self._stop_probing(state)
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
        accounting = config is not None and config.accounting
        if accounting and not self._following:
            self._adopt_sessions()
        elif not accounting:
            self._sessions.clear()
        self._following = accounting
        previous = self.servers
        self.servers = {s.address: self._state_for(s) for s in servers}
        self._states = list(self.servers.values())
        for address, state in previous.items():
            if address not in self.servers:
                self._stop_probing(state)
        self._reachability()
        for address, state in self.servers.items():
            if address not in previous and state.probe is None and self._loop is not None:
                # one Status-Server as it is configured: learn whether it answers them (RFC 5997 §4)
                state.probe = self._loop.call_soon(self._probe, state)
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
        state.configure(server)
        return state

    # -- look-ups -------------------------------------------------------------------------------------

    def submit(self, lookups: list[AaaLookup]) -> None:
        """Start an Access-Request per look-up (the engine asked for each NAI at most once)."""
        self._reachability()  # a rebuilt engine learns it here
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
    ) -> Callable[[int, bytes, int], tuple[bytes, bytes]]:
        attributes = radius.attribute(Attr.USER_NAME, lookup.nai.encode()) + self._nas_attribute
        if lookup.home_address is not None:
            attributes += radius.attribute(Attr.FRAMED_IP_ADDRESS, lookup.home_address.packed)
        chap = lookup.chap
        if chap is not None:
            attributes += radius.attribute(Attr.CHAP_PASSWORD, chap.chap_password)
            attributes += radius.attribute(Attr.CHAP_CHALLENGE, chap.chap_challenge)
        password = None if chap is not None else (config.lookup_password or b"")

        def build(identifier: int, secret: bytes, _waited: int) -> tuple[bytes, bytes]:
            authenticator = self._random16()
            return radius.access_request(identifier, authenticator, secret, attributes, password=password), (
                authenticator
            )

        return build

    def _random16(self) -> bytes:
        """A Request Authenticator: 16 octets of the OS's CSPRNG (RFC 2865 §3: unpredictable and
        unique over the secret's lifetime), read 4 KB at a time rather than by one syscall each."""
        at = self._random_at
        if at + 16 > len(self._random):
            self._random, at = os.urandom(4096), 0
        self._random_at = at + 16
        return self._random[at : at + 16]

    def _order(self) -> list[int]:
        """Servers in configuration order, those in backoff after the others (soonest back first);
        not those waiting for an answer to Status-Server."""
        now = time.monotonic()
        states = self._states
        ready = [i for i, s in enumerate(states) if s.avoid_until <= now]
        if len(ready) == len(states):
            return ready
        waiting = sorted(
            (i for i, s in enumerate(states) if now < s.avoid_until < math.inf),
            key=lambda i: states[i].avoid_until,
        )
        return ready + waiting

    def _server(self, exchange: _Exchange) -> ServerState | None:
        states = self._states
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
        now = time.monotonic()
        if not exchange.created:
            exchange.created = now
        exchange.data, exchange.authenticator = exchange.build(
            slot[1], state.server.secret, int(now - exchange.created)
        )
        self._inflight[slot] = exchange
        self._transmit(exchange, state, now)

    def _transmit(self, exchange: _Exchange, state: ServerState, now: float) -> None:
        assert exchange.slot is not None and self._loop is not None
        config = self._config()
        timeout = (config.timeout_ms if config is not None else 2000) / 1000
        kind = exchange.kind
        if kind == "auth":
            state.requests += 1
        elif kind == "acct":
            state.accounting_requests += 1
        else:
            state.status_server_probes += 1
        destination = state.acct_destination if kind == "acct" else state.auth_destination
        exchange.sent_at = now
        try:
            self._sockets[exchange.slot[0]].sendto(exchange.data, destination)
        except OSError as exc:
            log.debug("RADIUS send to %s failed: %s", destination[0], exc)
        self._expect(exchange, now + timeout, min(_TICK, timeout / 4))

    # -- deadlines: one heap, one loop timer --------------------------------------------------------------

    def _expect(self, exchange: _Exchange, when: float, granularity: float) -> None:
        sequence = exchange.deadline = next(self._sequence)
        heapq.heappush(self._deadlines, (when, sequence, exchange))
        if not self._ticking and when + granularity < self._tick_at:  # else an armed tick serves it
            self._arm(when + granularity)

    def _arm(self, at: float) -> None:
        assert self._loop is not None
        if self._tick is not None:
            self._tick.cancel()
        self._tick_at = at
        self._tick = self._loop.call_at(at, self._on_tick)

    def _on_tick(self) -> None:
        """Every exchange whose deadline has passed: retransmitted, failed over or given up; their
        denials journaled and sent together."""
        self._tick, self._tick_at = None, math.inf
        deadlines = self._deadlines
        now = time.monotonic()
        config = self._config()
        retries = config.retries if config is not None else 2
        granularity = min(_TICK, (config.timeout_ms if config is not None else 2000) / 4000)
        self._ticking = True
        try:
            while deadlines and deadlines[0][0] <= now + granularity / 2:
                _, sequence, exchange = heapq.heappop(deadlines)
                if exchange.deadline == sequence:  # else answered or sent again since
                    exchange.deadline = 0
                    self._timed_out(exchange, retries, now)
        finally:
            self._ticking = False
        if deadlines:
            self._arm(max(deadlines[0][0], now) + granularity)
        if self._replies:
            self._send_replies()

    def _timed_out(self, exchange: _Exchange, retries: int, now: float) -> None:
        state = self._server(exchange)
        if state is not None and exchange.tries < retries:
            exchange.tries += 1
            if exchange.kind == "acct":  # Acct-Delay-Time changed: a new identifier (RFC 5080 §2.2.1)
                self._renumber(exchange, state, now)
            else:
                self._transmit(exchange, state, now)  # RFC 5080 §2.2.1: same identifier and authenticator
            return
        if exchange.kind == "status":
            self._release(exchange)
            if state is not None:
                state.probe = None
                if state.status_server:  # still dead: probe again after a longer backoff
                    self._server_failed(state, now)
            return  # a server that never answered Status-Server comes back by its timed backoff alone
        if state is not None:
            if exchange.kind == "auth":
                state.timeouts += 1
            self._server_failed(state, now)
        self._release(exchange)
        exchange.order.pop(0)
        self._start(exchange)

    def _renumber(self, exchange: _Exchange, state: ServerState, now: float) -> None:
        """Rebuild ``exchange`` with a fresh identifier (taken before the old one is freed: never the
        same) and the seconds it has waited; with no identifier free, send the same bytes again."""
        slot = self._allocate()
        if slot is not None:
            assert exchange.slot is not None
            self._release(exchange)
            exchange.slot = slot
            self._inflight[slot] = exchange
            exchange.data, exchange.authenticator = exchange.build(
                slot[1], state.server.secret, int(now - exchange.created)
            )
        self._transmit(exchange, state, now)

    # -- Status-Server (RFC 5997) -------------------------------------------------------------------------

    def _server_failed(self, state: ServerState, now: float) -> None:
        """Back off from ``state`` and probe it with Status-Server when the backoff ends."""
        delay = state.failed(now)
        if state.probe is None and self._loop is not None:
            wait = min(delay, _PROBE_MAX) if state.status_server else delay
            state.probe = self._loop.call_later(wait, self._probe, state)
        if state.status_server:  # it may have been the last server that could be asked
            self._reachability()

    def _reachability(self) -> None:
        """Tell the engine whether any server can be asked: when each one failed and waits for a
        Status-Server answer, new registrations are denied 130 in their own burst, not looked up."""
        engine = self._engine()
        if engine is None:
            return
        states = self.servers.values()
        dead = bool(states) and all(s.avoid_until == math.inf for s in states)
        engine.set_aaa_unreachable(
            "every RADIUS server failed and has not answered Status-Server since" if dead else None
        )

    def _probe(self, state: ServerState) -> None:
        state.probe = None
        if self.servers.get(state.server.address) is not state:
            return  # removed meanwhile
        index = self._states.index(state)

        def build(identifier: int, secret: bytes, _waited: int) -> tuple[bytes, bytes]:
            authenticator = self._random16()
            nas = radius.attribute(Attr.NAS_IP_ADDRESS, self.nas_address.packed)
            return radius.access_request(identifier, authenticator, secret, nas, code=Code.STATUS_SERVER), (
                authenticator
            )

        exchange = _Exchange("status", "", None, build, [index])
        state.probe = exchange
        self._start(exchange)
        if exchange.slot is None:  # no identifier free: the next failure schedules another probe
            state.probe = None

    def _stop_probing(self, state: ServerState) -> None:
        probe, state.probe = state.probe, None
        if isinstance(probe, asyncio.Handle):
            probe.cancel()
        elif probe is not None:
            self._release(probe)

    def _give_up(self, exchange: _Exchange, reason: str) -> None:
        if exchange.kind == "auth":
            self._deliver(exchange.nai, AaaUnavailable(reason))
        elif exchange.kind == "acct":
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
        exchange.deadline = 0  # its heap entry is stale from now on
        slot = exchange.slot
        if slot is not None and self._inflight.get(slot) is exchange:
            del self._inflight[slot]
            self._free[slot[0]].append(slot[1])
        exchange.slot = None

    def _on_answers(self, index: int) -> None:
        """Answers arrived on socket ``index``: decided now, or — within :data:`_COALESCE` of the last
        batch — with the next batch, this socket left unwatched until then (no wake-up per answer)."""
        loop = self._loop
        if index >= len(self._sockets) or loop is None:
            return
        if self._inbox_due is None and loop.time() - self._answered_at >= _COALESCE:
            self._read_answers(index)
            self._answer_inbox()
            return
        loop.remove_reader(self._sockets[index].fileno())
        self._held.append(index)
        if self._inbox_due is None:
            self._inbox_due = loop.call_at(self._answered_at + _COALESCE, self._answer_held)

    def _answer_held(self) -> None:
        assert self._loop is not None
        self._inbox_due = None
        held, self._held = self._held, []
        for index in held:
            if index < len(self._sockets):
                self._loop.add_reader(self._sockets[index].fileno(), self._on_answers, index)
                self._read_answers(index)
        self._answer_inbox()

    def _read_answers(self, index: int) -> None:
        sock, inbox = self._sockets[index], self._inbox
        for _ in range(256):
            try:
                data, source = sock.recvfrom(radius.MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            inbox.append((index, data, source))

    def _answer_inbox(self) -> None:
        """Decide the answers read, then journal once and send their replies."""
        inbox, self._inbox = self._inbox, []
        assert self._loop is not None
        self._answered_at = self._loop.time()
        for index, data, source in inbox:
            self._answer(index, data, source)
        self._send_replies()

    def _answer(self, index: int, data: bytes, source: tuple[str, int]) -> None:
        if len(data) < 2:
            return
        exchange = self._inflight.get((index, data[1]))
        if exchange is None:
            return  # late (already answered or given up): nothing waits for it
        state = self._server(exchange)
        if state is None or source[0] != state.host:
            return
        try:
            packet = radius.parse(data)
        except radius.RadiusError:
            state.bad_authenticators += 1
            return
        kind = exchange.kind
        if not radius.verify_answer(
            packet, state.server.secret, exchange.authenticator, require_message_authenticator=kind != "acct"
        ):
            state.bad_authenticators += 1  # dropped; the request keeps waiting (RFC 2865 §3)
            return
        was_failed = state.failures > 0
        state.answered(time.monotonic() - exchange.sent_at)
        self._release(exchange)
        if kind == "status":
            state.probe = None
            state.status_server_answers += 1
            state.status_server = True
            if was_failed:
                log.info("RADIUS server %s answers Status-Server: in use again", state.server.address)
                self._reachability()
            return
        if kind == "acct":
            if packet.code == Code.ACCOUNTING_RESPONSE:
                state.accounting_responses += 1
            return
        if isinstance(state.probe, asyncio.Handle):  # it answers: no probe needed
            self._stop_probing(state)
        if was_failed:
            self._reachability()
        self._deliver(exchange.nai, self._outcome(packet, state, exchange))

    def _outcome(self, packet: radius.Packet, state: ServerState, exchange: _Exchange) -> AaaOutcome:
        where = str(state.server.address)
        if packet.code == Code.ACCESS_ACCEPT:
            state.accepts += 1
            engine = self._engine()
            pools = engine.config.address_pools if engine is not None else {}
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
        """Start / Interim-Update / Stop for AAA-learnt nodes' binding events (none followed while
        ``accounting`` is false: turned on, the sessions of the bindings held then are adopted)."""
        config = self._config()
        engine = self._engine()
        if config is None or engine is None or not self._following:
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
                self._accounting(session, status, event.care_of_address, None)
            elif type(event) is BindingRemoved:
                session = self._sessions.get(name)
                if session is None:
                    continue
                session[4].discard(event.care_of_address)
                if event.reason is RemovalReason.REPLACED:
                    continue  # the handover's new binding sends the Interim-Update
                if session[4]:
                    self._accounting(session, AcctStatus.INTERIM_UPDATE, min(session[4]), None)
                    continue
                del self._sessions[name]
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

        def build(identifier: int, secret: bytes, waited: int) -> tuple[bytes, bytes]:
            delay = radius.attribute(Attr.ACCT_DELAY_TIME, radius.u32(waited))  # RFC 2866 §5.2
            data = radius.accounting_request(identifier, secret, attributes + delay)
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
        if state is None or packet.code not in (Code.DISCONNECT_REQUEST, Code.COA_REQUEST):
            return None  # RFC 5176 §5.1: only from a configured client, silently discarded otherwise
        secret = state.server.secret
        if not radius.verify_request(packet, secret):
            state.bad_authenticators += 1
            return None

        def reply(code: int, cause: ErrorCause | None = None) -> bytes:
            extra = radius.attribute(Attr.ERROR_CAUSE, radius.u32(cause)) if cause is not None else b""
            return radius.answer(code, packet, secret, extra)

        if packet.code == Code.COA_REQUEST:
            # A binding's authorization is its registration (key, address, lifetime); nothing in it is
            # changed behind the mobile node's back.  RFC 5176 §3.5: 406 = no support for this extension.
            state.coa_requests += 1
            return reply(Code.COA_NAK, ErrorCause.UNSUPPORTED_EXTENSION)
        state.disconnect_requests += 1
        nak = Code.DISCONNECT_NAK

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

    async def accounting_room(self) -> None:
        """Until fewer than half the identifiers are in flight: a clear of many AAA bindings
        (``VirtualRouter.clear_all``) waits here between pages, so its Accounting-Stops find an
        identifier instead of being lost (each exchange ends: answered, or given up after its tries)."""
        while len(self._inflight) >= _MAX_SOCKETS * 128 and self._loop is not None:
            await asyncio.sleep(_TICK)

    # -- operational state ------------------------------------------------------------------------------

    def server_states(self) -> list[ServerState]:
        return list(self.servers.values())
