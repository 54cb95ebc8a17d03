"""The asyncio side of ``mipha mn``: one UDP socket, many registrations in flight.

:class:`RegistrationClient` sends requests built by :class:`~ha.mn.session.MobileNodeSession`, matches
replies by the low 32 bits of the Identification, and retransmits with exponential backoff (RFC 5944
§3.6.3: a timestamp retransmission carries a new Identification, a nonce retransmission is resent
unchanged).  An authenticated 133 is answered once more with the resynchronised Identification, as a
real mobile node does.  An unauthenticated reply never ends a transaction: retransmission goes on,
and it is reported (``authenticated: false``) only when no authentic reply came before the retries
ran out, so a forged denial cannot stop a registration.  :func:`run_load` paces N nodes at a target
rate and reports counts by reply code and latency percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ha.protocol.constants import ReplayProtection, ReplyCode

from .session import MobileNodeSession, ReplyOutcome


@dataclass
class _Pending:
    session: MobileNodeSession
    build: Callable[[int], bytes]  # identification -> datagram
    identification: int
    data: bytes
    first_sent: float
    deadline: float
    timeout: float
    attempts: int
    resyncs: int
    future: asyncio.Future[Result] | None = None
    tag: int = -1
    #: The last reply that failed authentication: reported only if no authentic one comes.
    unauthenticated: ReplyOutcome | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one registration transaction (after retransmissions)."""

    outcome: ReplyOutcome | None  # None: no reply at all
    latency: float  # seconds from the first send to the reply
    attempts: int

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"attempts": self.attempts, "latency_ms": round(self.latency * 1000, 3)}
        if self.outcome is None:
            out["code"] = None
        else:
            out.update(
                code=self.outcome.code,
                lifetime=self.outcome.lifetime,
                home_address=str(self.outcome.home_address),
                authenticated=self.outcome.authenticated,
                nai=self.outcome.nai,
            )
            tunnel = self.outcome.udp_tunnel
            if tunnel is not None:
                out["udp_tunnel"] = {
                    "code": tunnel.code,
                    "forced": bool(tunnel.flags & 0x8000),
                    "keepalive_interval": tunnel.keepalive_interval,
                }
        return out


@dataclass
class LoadReport:
    """What :func:`run_load` measured."""

    sent: int = 0
    transactions: int = 0
    replies: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    timeouts: int = 0
    retransmissions: int = 0
    unauthenticated: int = 0
    send_errors: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def accepted(self) -> int:
        return self.codes[0] + self.codes[1]

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]

    def as_dict(self) -> dict[str, object]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "transactions": self.transactions,
            "sent": self.sent,
            "replies": self.replies,
            "accepted": self.accepted,
            "denied": {str(code): n for code, n in sorted(self.codes.items()) if code not in (0, 1)},
            "codes": {str(code): n for code, n in sorted(self.codes.items())},
            "timeouts": self.timeouts,
            "retransmissions": self.retransmissions,
            "unauthenticated": self.unauthenticated,
            "send_errors": self.send_errors,
            "elapsed": round(self.elapsed, 4),
            "rate": round(self.replies / self.elapsed, 1) if self.elapsed > 0 else 0.0,
            "latency_ms": {
                "p50": ms(self.percentile(50)),
                "p90": ms(self.percentile(90)),
                "p99": ms(self.percentile(99)),
                "max": ms(max(self.latencies) if self.latencies else None),
            },
        }


class RegistrationClient:
    """One UDP socket towards one home agent; any number of transactions in flight."""

    def __init__(
        self,
        home_agent: tuple[str, int],
        *,
        bind: tuple[str, int] = ("0.0.0.0", 0),
        timeout: float = 1.0,
        retries: int = 3,
        max_timeout: float = 8.0,
    ) -> None:
        self.home_agent = home_agent
        self.timeout = timeout
        self.retries = retries
        self.max_timeout = max_timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind(bind)
        self.sock.setblocking(False)
        self._pending: dict[int, _Pending] = {}
        self._tokens = itertools.count(secrets.randbits(31) + 1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.on_result: Callable[[Result, int], None] | None = None
        self.stats = LoadReport()

    async def __aenter__(self) -> RegistrationClient:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        self._sweeper = asyncio.create_task(self._sweep())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # --- sending ---------------------------------------------------------------------------------

    def start(
        self,
        session: MobileNodeSession,
        build: Callable[[int], bytes],
        *,
        future: bool = False,
        tag: int = -1,
    ) -> asyncio.Future[Result] | None:
        """Begin a transaction; ``build(identification)`` makes the datagram.

        With ``future`` the result is also delivered through the returned future; ``tag`` is handed
        back to :attr:`on_result` (the load generator passes the node's index).
        """
        loop = self._loop
        assert loop is not None, "use 'async with RegistrationClient(...)'"
        identification = self._fresh_identification(session)
        data = build(identification)
        now = loop.time()
        pending = _Pending(
            session,
            build,
            identification,
            data,
            now,
            now + self.timeout,
            self.timeout,
            1,
            0,
            loop.create_future() if future else None,
            tag,
        )
        self._pending[identification & 0xFFFF_FFFF] = pending
        self._send(data)
        self.stats.transactions += 1
        return pending.future

    def _fresh_identification(self, session: MobileNodeSession) -> int:
        """An identification whose low 32 bits (the reply-matching key) no request in flight uses."""
        while True:
            identification = session.next_identification(time.time(), next(self._tokens))
            if identification & 0xFFFF_FFFF not in self._pending:
                return identification

    async def transact(self, session: MobileNodeSession, build: Callable[[int], bytes]) -> Result:
        """Run one transaction to completion (reply, or retries exhausted)."""
        future = self.start(session, build, future=True)
        assert future is not None
        return await future

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.home_agent)
            self.stats.sent += 1
        except OSError:  # full buffer, ICMP error...: the retransmission timer covers it
            self.stats.send_errors += 1

    def _resend(self, pending: _Pending, *, new_identification: bool) -> None:
        assert self._loop is not None
        if new_identification:
            self._pending.pop(pending.identification & 0xFFFF_FFFF, None)
            pending.identification = self._fresh_identification(pending.session)
            pending.data = pending.build(pending.identification)
            self._pending[pending.identification & 0xFFFF_FFFF] = pending
        pending.attempts += 1
        pending.deadline = self._loop.time() + pending.timeout
        self._send(pending.data)

    # --- receiving -------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._loop is not None
        for _ in range(512):
            try:
                data = self.sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            token = MobileNodeSession.reply_token(data)
            pending = self._pending.get(token) if token is not None else None
            if pending is None:
                continue
            outcome = pending.session.check_reply(data, pending.identification, time.time())
            if outcome is None:
                continue
            self.stats.replies += 1
            if not outcome.authenticated:
                # Anyone on the path can send an unauthenticated denial: it is not the answer while
                # retransmissions may still bring an authentic one (RFC 5944 §3.6.2.1, §3.6.3).
                self.stats.unauthenticated += 1
                pending.unauthenticated = outcome
                continue
            retry = (
                outcome.authenticated
                and outcome.code == ReplyCode.IDENTIFICATION_MISMATCH
                and pending.resyncs == 0
            )
            if retry:  # resynchronised (clock offset or HA nonce): ask again once
                pending.resyncs += 1
                self._resend(pending, new_identification=True)
                continue
            self._finish(pending, outcome)

    def _finish(self, pending: _Pending, outcome: ReplyOutcome | None) -> None:
        assert self._loop is not None
        self._pending.pop(pending.identification & 0xFFFF_FFFF, None)
        result = Result(outcome, self._loop.time() - pending.first_sent, pending.attempts)
        stats = self.stats
        if outcome is None:
            stats.timeouts += 1
        else:
            stats.codes[outcome.code] += 1
            stats.latencies.append(result.latency)
        if pending.future is not None and not pending.future.done():
            pending.future.set_result(result)
        if self.on_result is not None:
            self.on_result(result, pending.tag)

    async def _sweep(self) -> None:
        """Retransmit or give up on transactions past their deadline (checked every 50 ms)."""
        assert self._loop is not None
        while True:
            await asyncio.sleep(0.05)
            now = self._loop.time()
            for pending in [p for p in self._pending.values() if p.deadline <= now]:
                if pending.attempts > self.retries:
                    self._finish(pending, pending.unauthenticated)  # None: no reply at all
                    continue
                pending.timeout = min(pending.timeout * 2, self.max_timeout)
                self.stats.retransmissions += 1
                nonce = pending.session.sa.replay_protection is ReplayProtection.NONCE
                self._resend(pending, new_identification=not nonce)


async def run_load(
    client: RegistrationClient,
    sessions: list[MobileNodeSession],
    *,
    rate: float,
    duration: float,
    window: int = 1024,
    drain: float = 5.0,
) -> LoadReport:
    """Register ``sessions`` round-robin at ``rate`` per second (0 = as fast as ``window`` allows).

    A node never has two requests in flight.  Unpaced, every reply immediately launches the next
    request (a closed loop of ``window`` transactions); paced, a 1 ms ticker launches what is due.
    Sending stops after ``duration`` seconds; outstanding replies are awaited up to ``drain`` seconds.
    ``elapsed`` runs from the first request to the last reply.
    """
    loop = client._loop
    assert loop is not None, "use 'async with RegistrationClient(...)'"
    free = deque(range(len(sessions)))  # FIFO: nodes take turns
    start = loop.time()
    end = start + duration
    sent = 0
    last = start
    done = asyncio.Event()

    def launch(limit: int) -> None:
        nonlocal sent
        while limit > 0 and free and client.in_flight < window:
            index = free.popleft()
            client.start(sessions[index], sessions[index].build, tag=index)
            sent += 1
            limit -= 1

    def on_result(_result: Result, tag: int) -> None:
        nonlocal last
        free.append(tag)
        last = loop.time()
        if last < end:
            if rate <= 0:
                launch(1)
        elif not client._pending:
            done.set()

    client.on_result = on_result
    if rate <= 0:
        launch(window)
        await asyncio.sleep(duration)
    else:
        while (now := loop.time()) < end:
            launch(int(rate * (now - start)) + 1 - sent)
            await asyncio.sleep(0.001)
    if client._pending:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), drain)
    client.on_result = None
    report = client.stats
    report.elapsed = max(last, start + 1e-9) - start
    return report
