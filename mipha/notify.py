"""Engine events → YANG notifications (``binding-created``, ``binding-removed``,
``registration-denied``) published on the NETCONF stream.

``registration-denied`` is rate-limited with a token bucket: a flood of bad registrations (an attack,
a misconfigured fleet) must not flood every NETCONF subscriber.  Denials beyond the limit are still
counted in the home agent's statistics; how many notifications were suppressed is logged once per
second while it happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from lxml import etree

from ha.engine.events import BindingCreated, BindingRemoved, Event, RegistrationDenied
from server.yang import MIPHA_NAMESPACE

log = logging.getLogger(__name__)
_Q = f"{{{MIPHA_NAMESPACE}}}"


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


def _leaf(parent: etree._Element, name: str, value: object) -> None:
    etree.SubElement(parent, _Q + name).text = str(value)


def notification(vr: str, event: Event) -> etree._Element:
    """The YANG notification body for one engine event."""
    if isinstance(event, BindingCreated):
        body = etree.Element(_Q + "binding-created", nsmap={None: MIPHA_NAMESPACE})
        _binding_fields(body, vr, event.home_address, event.care_of_address, event.mobile_node, event.nai)
        _leaf(body, "lifetime", event.lifetime)
        return body
    if isinstance(event, BindingRemoved):
        body = etree.Element(_Q + "binding-removed", nsmap={None: MIPHA_NAMESPACE})
        _binding_fields(body, vr, event.home_address, event.care_of_address, event.mobile_node, None)
        _leaf(body, "reason", event.reason)
        return body
    if isinstance(event, RegistrationDenied):
        body = etree.Element(_Q + "registration-denied", nsmap={None: MIPHA_NAMESPACE})
        _leaf(body, "virtual-router", vr)
        _leaf(body, "code", int(event.code))
        _leaf(body, "peer", event.peer)
        if event.spi is not None:
            _leaf(body, "spi", event.spi)
        if event.home_address is not None:
            _leaf(body, "home-address", event.home_address)
        return body
    raise TypeError(f"not an engine event: {event!r}")


def _binding_fields(body, vr, home, coa, node, nai) -> None:
    _leaf(body, "virtual-router", vr)
    _leaf(body, "home-address", home)
    _leaf(body, "care-of-address", coa)
    _leaf(body, "mobile-node", node)
    if nai:
        _leaf(body, "nai", nai)


class Notifier:
    """Turns engine events into notifications; rate-limits denials."""

    def __init__(
        self,
        publish: Callable[[etree._Element], None],
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
            try:
                self.publish(notification(vr, event))
            except Exception:
                log.exception("notification for %r not published", event)
        now = self.clock()
        if self._unreported and now - self._last_report >= 1.0:
            log.warning(
                "registration-denied notifications suppressed by the rate limit: %d", self._unreported
            )
            self._unreported = 0
            self._last_report = now
