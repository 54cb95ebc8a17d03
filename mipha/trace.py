"""Per-node registration trace, what ``debug ip mobile host`` is on IOS / JUNOSe.

The ``trace-registrations`` rpc names a virtual router and a home address or NAI, for a duration.
While any trace of a virtual router is active, its UDP transport calls this module once per
datagram; otherwise the transport's hook is ``None`` and a registration pays one attribute test.
For each request of a traced node, one ``request`` line and one ``reply`` line (code, lifetimes,
identification, care-of address, flags) go to the ``mipha.trace`` logger at INFO, at most ``RATE``
lines a second per virtual router (a burst of ``BURST``); lines over the limit are counted and the
count is logged with the next line that passes. Keys and authenticators are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import TypeVar

from ha.protocol.codec import pull_registration_reply, pull_registration_request

log = logging.getLogger("mipha.trace")
RATE = 20.0
BURST = 40
K = TypeVar("K", IPv4Address, str)  # a home address or an NAI


class RegistrationTrace:
    """The active traces of one virtual router; called by its transport as ``(data, source, reply)``."""

    def __init__(
        self,
        vr: str,
        detach: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        rate: float = RATE,
        burst: int = BURST,
    ) -> None:
        self.vr, self._detach, self._clock = vr, detach, clock
        self.homes: dict[IPv4Address, float] = {}  # home address -> expiry (monotonic)
        self.nais: dict[str, float] = {}
        self._rate, self._burst = rate, burst
        self._tokens, self._refilled = float(burst), clock()
        self.suppressed = 0
        self.lines = 0

    def add(self, *, home: IPv4Address | None = None, nai: str | None = None, duration: float) -> None:
        """Trace `home` or `nai` for `duration` seconds (0: stop tracing it)."""
        if home is not None:
            self._set(self.homes, home, duration)
        elif nai is not None:
            self._set(self.nais, nai, duration)
        else:
            raise ValueError("a home address or an NAI to trace")

    def _set(self, table: dict[K, float], key: K, duration: float) -> None:
        if duration <= 0:
            table.pop(key, None)
        else:
            table[key] = self._clock() + duration

    @property
    def active(self) -> bool:
        return bool(self.homes or self.nais)

    def __call__(self, data: bytes, source: tuple[str, int], reply: bytes | None) -> None:
        try:
            self._trace(data, source, reply)
        except Exception:  # a trace must never cost a registration
            log.debug("trace of a datagram from %s failed", source, exc_info=True)

    def _trace(self, data: bytes, source: tuple[str, int], reply: bytes | None) -> None:
        now = self._clock()
        self._expire(now)
        if not self.active:
            self._detach()
            return
        if not data or data[0] != 1:
            return
        try:
            req = pull_registration_request(data)
        except Exception:
            return
        nai = req.nai
        if req.home_address not in self.homes and (nai is None or nai not in self.nais):
            return
        if not self._allow(now, 2):
            self.suppressed += 2
            return
        dropped, self.suppressed = self.suppressed, 0
        more = f" suppressed={dropped}" if dropped else ""
        log.info(
            "trace vr=%s request from=%s:%d home=%s nai=%s coa=%s ha=%s lifetime=%d id=%#018x flags=%s%s",
            self.vr,
            source[0],
            source[1],
            req.home_address,
            nai or "-",
            req.care_of_address,
            req.home_agent,
            req.lifetime,
            req.identification,
            _flags(int(req.flags)),
            more,
        )
        if reply is None:
            log.info("trace vr=%s reply none (discarded) home=%s", self.vr, req.home_address)
        else:
            rep = pull_registration_reply(reply)
            log.info(
                "trace vr=%s reply to=%s:%d code=%d home=%s coa=%s lifetime=%d id=%#018x",
                self.vr,
                source[0],
                source[1],
                rep.code,
                rep.home_address,
                req.care_of_address,
                rep.lifetime,
                rep.identification,
            )
        self.lines += 2

    def _expire(self, now: float) -> None:
        _drop_expired(self.homes, now)
        _drop_expired(self.nais, now)

    def _allow(self, now: float, cost: int) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True


def _flags(bits: int) -> str:
    names = "SBDMGrTx"
    return "".join(n for i, n in enumerate(names) if bits & (0x80 >> i) and n not in "rx") or "-"


def _drop_expired(table: dict[K, float], now: float) -> None:
    for key in [k for k, until in table.items() if until <= now]:
        del table[key]
