"""Engine events → YANG notifications (``binding-created``, ``binding-removed``,
``registration-denied``) published on the NETCONF stream.

``registration-denied`` is rate-limited with a token bucket: a flood of bad registrations (an attack,
a misconfigured fleet) must not flood every NETCONF subscriber.  Denials beyond the limit are still
counted in the home agent's statistics; how many notifications were suppressed is logged once per
second while it happens.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from xml.sax.saxutils import escape

from lxml import etree

from ha.engine.events import BindingCreated, BindingRemoved, Event, RegistrationDenied
from mipha.model import NAMESPACE as MIPHA_NAMESPACE

log = logging.getLogger(__name__)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; the clock is injected for tests."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _esc(value: object) -> str:
    return escape(str(value))


def notification(vr: str, event: Event) -> etree._Element:
    """The YANG notification body for one engine event.

    Written as text and parsed once: ~2.5x cheaper than building it leaf by leaf with lxml, which
    matters at thousands of registrations per second.
    """
    if isinstance(event, BindingCreated):
        name = "binding-created"
        body = _binding_fields(vr, event.home_address, event.care_of_address, event.mobile_node, event.nai)
        body += f"<lifetime>{event.lifetime}</lifetime>"
    elif isinstance(event, BindingRemoved):
        name = "binding-removed"
        body = _binding_fields(vr, event.home_address, event.care_of_address, event.mobile_node, None)
        body += f"<reason>{event.reason}</reason>"
    elif isinstance(event, RegistrationDenied):
        name = "registration-denied"
        body = f"<virtual-router>{_esc(vr)}</virtual-router><code>{int(event.code)}</code>"
        body += f"<peer>{event.peer}</peer>"
        if event.spi is not None:
            body += f"<spi>{event.spi}</spi>"
        if event.home_address is not None:
            body += f"<home-address>{event.home_address}</home-address>"
    else:
        raise TypeError(f"not an engine event: {event!r}")
    return etree.fromstring(f'<{name} xmlns="{MIPHA_NAMESPACE}">{body}</{name}>')


def _binding_fields(vr, home, coa, node, nai) -> str:
    text = (
        f"<virtual-router>{_esc(vr)}</virtual-router><home-address>{home}</home-address>"
        f"<care-of-address>{coa}</care-of-address><mobile-node>{_esc(node)}</mobile-node>"
    )
    if nai:
        text += f"<nai>{_esc(nai)}</nai>"
    return text


class Notifier:
    """Turns engine events into notifications; rate-limits denials."""

    def __init__(
        self,
        publish: Callable[[Callable[[], etree._Element]], None],
        *,
        denied_rate: float = 50.0,
        denied_burst: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.publish = publish
        self.bucket = TokenBucket(denied_rate, denied_burst, clock)
        self.clock = clock
        self.suppressed = 0
        self._last_report = clock()
        self._unreported = 0

    def events(self, vr: str, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, RegistrationDenied) and not self.bucket.take():
                self.suppressed += 1
                self._unreported += 1
                continue
            try:  # built only when a subscriber or a replay needs it
                self.publish(functools.partial(notification, vr, event))
            except Exception:
                log.exception("notification for %r not published", event)
        now = self.clock()
        if self._unreported and now - self._last_report >= 1.0:
            log.warning(
                "registration-denied notifications suppressed by the rate limit: %d", self._unreported
            )
            self._unreported = 0
            self._last_report = now
