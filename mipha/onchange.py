"""The home agents' state changes for YANG-Push on-change subscriptions (server/push.py).

Bindings: after every burst the runtime hands over the keys of the bindings that changed (added,
renewed, removed) and the burst's events. Each becomes one YANG Patch edit on that binding's entry —
create, replace (renewed) or delete — whose value is written from the engine's binding object only
when a subscription needs it. The table itself is never walked.
Statistics: the container is marked touched; the feed reads it (a few dozen counters) at most every
10 ms while someone listens and pushes the counters that differ.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from lxml import etree

from ha.engine.events import BindingCreated, BindingRemoved, Event
from server.patch import Edit, Step
from server.push import ChangeFeed

from .state_xml import ALL_LEAVES, NS, BindingWriter, write_statistics

if TYPE_CHECKING:
    from .runtime import VirtualRouter

_HA = ((NS, "virtual-routers"), (NS, "virtual-router"), (NS, "home-agent"))
BINDINGS = (*_HA, (NS, "bindings"), (NS, "binding"))
STATISTICS = (*_HA, (NS, "statistics"))


def declare(feed: ChangeFeed) -> None:
    """The state subtrees with on-change support (the others — tunnels' and AAA counters, violations,
    remaining lifetimes between renewals — are for periodic subscriptions)."""
    feed.declare(BINDINGS)
    feed.declare(STATISTICS)


def _ha_steps(vr: str) -> tuple[Step, ...]:
    return ((NS, "virtual-routers", ()), (NS, "virtual-router", (("name", vr),)), (NS, "home-agent", ()))


def binding_steps(vr: str, key: int) -> tuple[Step, ...]:
    home, coa = BindingWriter.address(key >> 32), BindingWriter.address(key & 0xFFFFFFFF)
    entry = (NS, "binding", (("home-address", home), ("care-of-address", coa)))
    return (*_ha_steps(vr), (NS, "bindings", ()), entry)


def _key(home: IPv4Address, coa: IPv4Address) -> int:
    return (int(home) << 32) | int(coa)


class _Values:
    """Writes binding entries of one burst, the tunnel interfaces read once for all of them."""

    def __init__(self, vr: VirtualRouter) -> None:
        self.vr = vr
        self.writer: BindingWriter | None = None

    def binding(self, key: int) -> bytes | None:
        engine = self.vr.engine
        b = engine.raw_binding(key) if engine is not None else None
        if engine is None or b is None:
            return None  # gone since: the delete that follows says so
        if self.writer is None:
            interfaces = {t.care_of_address: t.interface for t in self.vr.tunnels()}
            self.writer = BindingWriter(engine, self.vr.now(), interfaces)
        return self.writer.page([b], ALL_LEAVES)


def _removed_value(event: BindingRemoved) -> etree._Element:
    """The entry as it was (what a filter on mobile-node or nai matches a delete with)."""
    el = etree.Element(f"{{{NS}}}binding", nsmap={None: NS})
    for name, value in (
        ("home-address", event.home_address),
        ("care-of-address", event.care_of_address),
        ("mobile-node", event.mobile_node),
        ("nai", event.nai),
    ):
        if value is not None:
            etree.SubElement(el, f"{{{NS}}}{name}").text = str(value)
    return el


def bindings_changed(feed: ChangeFeed, vr: VirtualRouter, keys: Iterable[int], events: list[Event]) -> None:
    """One burst of a virtual router: its changed binding keys and its events."""
    if feed.listening(BINDINGS):
        created = {_key(e.home_address, e.care_of_address) for e in events if isinstance(e, BindingCreated)}
        removed = {
            _key(e.home_address, e.care_of_address): e for e in events if isinstance(e, BindingRemoved)
        }
        values = _Values(vr)
        engine = vr.engine
        for key in keys:
            steps = binding_steps(vr.name, key)
            if engine is None or engine.raw_binding(key) is None:
                gone = removed.get(key)
                feed.edit(Edit("delete", steps, old=_removed_value(gone) if gone is not None else None))
            else:
                op = "create" if key in created else "replace"
                feed.edit(Edit(op, steps, functools.partial(values.binding, key)))
    if feed.listening(STATISTICS):
        feed.touched((*_ha_steps(vr.name), (NS, "statistics", ())), lambda: _statistics(vr))


def _statistics(vr: VirtualRouter) -> etree._Element | None:
    engine = vr.engine
    if engine is None:
        return None
    el = etree.Element(f"{{{NS}}}statistics", nsmap={None: NS})
    write_statistics(el, engine, vr.discontinuity_time())
    return el
