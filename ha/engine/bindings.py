"""The mobility binding table and its expiry heap, built to hold a million bindings in little memory.

A binding is keyed by ``(home address, care-of address)``; internally the key is one 64-bit ``int``
(``home << 32 | care_of``) whose numeric order is the YANG key order, so one sorted list of ints gives
``bindings_after`` (resume by key, never a live iterator) and the care-of addresses of a home address
(a range query) without any per-home-address structure.

Expiry uses a binary heap of single ints ``expires_ms << 64 | key`` with lazy deletion: an entry is
checked against its binding when it surfaces (O(log n) per operation, no per-binding task).  A renewal
that moves the expiry later pushes nothing: the old entry is re-pushed at the new time when it
surfaces; one that moves it earlier pushes a new entry.  The heap is rebuilt when stale entries
outnumber live ones.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from ipaddress import IPv4Address

from sortedcontainers import SortedList

from ha.dataplane.intents import Encapsulation  # what the tunnel is (IP-in-UDP too), not what was asked
from ha.protocol.constants import INFINITE_LIFETIME

_MASK32 = 0xFFFF_FFFF
_MASK64 = (1 << 64) - 1

#: Bit of :attr:`Binding.flags` above the request's flag octet: accepted with code 1 (no S support).
NO_SIMULTANEOUS = 0x100
#: Bit of :attr:`Binding.flags`: RFC 3519 UDP tunnel; the tunnel goes to ``source`` (the NAT mapping).
UDP_TUNNEL = 0x200


def make_key(home_address: int, care_of_address: int) -> int:
    """The packed table key of a binding."""
    return (home_address << 32) | care_of_address


def split_key(key: int) -> tuple[int, int]:
    """``(home_address, care_of_address)`` of a packed key."""
    return key >> 32, key & _MASK32


def _earlier(due: int, binding: Binding) -> bool:
    """True when ``due`` comes before the expiry ``binding`` was scheduled for (or it had none)."""
    previous = expires_ms(binding.registered, binding.lifetime)
    return previous is None or due < previous


def expires_ms(registered: float, lifetime: int) -> int | None:
    """Expiry on the monotonic clock in whole milliseconds, rounded up; None for an infinite lifetime."""
    if lifetime == INFINITE_LIFETIME:
        return None
    return math.ceil((registered + lifetime) * 1000)


class Binding:
    """One mobility binding (``bindings/binding``): what was granted, to whom, and when.

    Addresses are ints; ``source`` packs the request's source ``ip << 16 | port`` (the reply goes
    there).  Only ``registered`` (monotonic) is stored: the expiry and the wallclock time of
    registration are derived, which keeps the object small.
    """

    __slots__ = (
        "care_of_address",
        "encapsulation",
        "flags",
        "home_address",
        "identification",
        "lifetime",
        "mobile_node",
        "registered",
        "source",
    )

    def __init__(
        self,
        home_address: int,
        care_of_address: int,
        mobile_node: str,
        *,
        source: int,
        lifetime: int,
        registered: float,
        identification: int,
        flags: int,
        encapsulation: Encapsulation,
    ) -> None:
        self.home_address = home_address
        self.care_of_address = care_of_address
        self.mobile_node = mobile_node
        self.source = source
        self.lifetime = lifetime
        self.registered = registered
        self.identification = identification
        self.flags = flags
        self.encapsulation = encapsulation

    @property
    def key(self) -> tuple[IPv4Address, IPv4Address]:
        """The YANG key ``(home-address, care-of-address)``."""
        return IPv4Address(self.home_address), IPv4Address(self.care_of_address)

    @property
    def infinite(self) -> bool:
        return self.lifetime == INFINITE_LIFETIME

    @property
    def expires(self) -> float:
        """Monotonic expiry time (``inf`` for a 0xffff lifetime)."""
        return math.inf if self.infinite else self.registered + self.lifetime

    def remaining(self, now: float) -> int:
        """Whole seconds left (YANG ``lifetime-remaining``); 0xffff for an infinite binding."""
        if self.infinite:
            return INFINITE_LIFETIME
        return max(0, math.ceil(self.expires - now))

    @property
    def source_address(self) -> tuple[IPv4Address, int]:
        return IPv4Address(self.source >> 16), self.source & 0xFFFF

    def __repr__(self) -> str:
        home, coa = self.key
        return f"Binding({home} via {coa}, node={self.mobile_node!r}, lifetime={self.lifetime})"


class BindingTable:
    """Bindings in key order, with an expiry heap; knows nothing of mobile nodes or policy."""

    __slots__ = ("_by_key", "_heap", "_keys", "at_key", "changed", "gone", "renewed")

    def __init__(self) -> None:
        self._by_key: dict[int, Binding] = {}
        #: the binding at a packed key ``(home << 32) | care_of``, or None (a bound ``dict.get``: the
        #: renewal fast path asks once per renewal)
        self.at_key = self._by_key.get
        self._keys: SortedList[int] = SortedList()
        #: Packed keys added, renewed or removed since the owner last took them; None = not tracked
        #: (the daemon's binding journal turns tracking on).
        self.changed: set[int] | None = None
        #: Bindings renewed in place since the owner last took them, by packed key (tracked with
        #: ``changed``): only the fields a renewal sets changed, so a journal can record just those.
        self.renewed: dict[int, Binding] | None = None
        #: Mobile nodes that lost a binding since the owner last took them; None = not tracked (hot
        #: standby turns it on: a removed binding may have carried the node's replicated replay state).
        self.gone: set[str] | None = None
        self._heap: list[int] = []

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Binding]:
        """Bindings in key order (a snapshot-free walk: do not mutate while iterating)."""
        by_key = self._by_key
        for key in self._keys:
            yield by_key[key]

    def get(self, home_address: int, care_of_address: int) -> Binding | None:
        return self._by_key.get((home_address << 32) | care_of_address)

    def care_of_addresses(self, home_address: int) -> list[int]:
        """Care-of addresses bound to a home address, ascending."""
        low = home_address << 32
        return [key & _MASK32 for key in self._keys.irange(low, low | _MASK32)]

    def for_home(self, home_address: int) -> list[Binding]:
        low = home_address << 32
        by_key = self._by_key
        return [by_key[key] for key in self._keys.irange(low, low | _MASK32)]

    def count_for_home(self, home_address: int) -> int:
        low = home_address << 32
        keys = self._keys
        return keys.bisect_right(low | _MASK32) - keys.bisect_left(low)

    def after(self, key: int | None, limit: int) -> list[Binding]:
        """Up to ``limit`` bindings whose key is strictly greater than ``key`` (None = from the start)."""
        keys = self._keys
        start = 0 if key is None else keys.bisect_right(key)
        return list(map(self._by_key.__getitem__, keys[start : start + limit]))

    def add(self, binding: Binding) -> None:
        """Insert ``binding`` (a binding with the same key is replaced) and schedule its expiry."""
        key = (binding.home_address << 32) | binding.care_of_address
        if self.changed is not None:
            self.changed.add(key)
        previous = self._by_key.get(key)
        if previous is None:
            self._keys.add(key)
        self._by_key[key] = binding
        due = expires_ms(binding.registered, binding.lifetime)
        if due is not None and (previous is None or _earlier(due, previous)):
            self._push(due, key)

    def reschedule(self, binding: Binding, registered: float, lifetime: int) -> None:
        """A binding was renewed in place; ``registered``/``lifetime`` are its previous values.

        The usual renewal only moves the expiry later: the old heap entry stays and is re-pushed
        at its new time when it surfaces, so renewals cost no heap operation at all.
        """
        if self.renewed is not None:
            self.renewed[(binding.home_address << 32) | binding.care_of_address] = binding
        if (
            binding.lifetime >= lifetime
            and binding.registered >= registered
            and lifetime != INFINITE_LIFETIME
        ):
            return
        due = expires_ms(binding.registered, binding.lifetime)
        old = expires_ms(registered, lifetime)
        if due is not None and (old is None or due < old):
            self._push(due, (binding.home_address << 32) | binding.care_of_address)

    def _push(self, due: int, key: int) -> None:
        heapq.heappush(self._heap, (due << 64) | key)
        if len(self._heap) > 2 * len(self._by_key) + 1024:
            self._compact()

    def remove(self, home_address: int, care_of_address: int) -> Binding | None:
        key = (home_address << 32) | care_of_address
        binding = self._by_key.pop(key, None)
        if binding is not None:
            self._keys.remove(key)
            if self.changed is not None:
                self.changed.add(key)
            if self.gone is not None:
                self.gone.add(binding.mobile_node)
        return binding

    def next_expiry(self) -> float | None:
        """Monotonic time of the earliest live expiry, settling stale heap entries on the way.

        An entry is stale when its binding is gone or now expires at another time: removed, moved
        to the binding's real expiry (renewed later), or dropped (another entry covers it).
        """
        heap = self._heap
        by_key = self._by_key
        while heap:
            entry = heap[0]
            due, key = entry >> 64, entry & _MASK64
            binding = by_key.get(key)
            actual = None if binding is None else expires_ms(binding.registered, binding.lifetime)
            if actual == due:
                return due / 1000
            if actual is not None and actual > due:
                heapq.heapreplace(heap, (actual << 64) | key)
            else:
                heapq.heappop(heap)
        return None

    def earliest_entry(self) -> float | None:
        """The earliest time in the expiry heap, stale entries included: never later than
        :meth:`next_expiry`, and free (no settling).  A timer set to it may fire early; ``pop_expired``
        then settles what is stale, once per entry rather than after every renewal."""
        heap = self._heap
        return (heap[0] >> 64) / 1000 if heap else None

    def pop_expired(self, now: float) -> Iterator[Binding]:
        """Remove and yield every binding whose expiry is at or before ``now``, earliest first."""
        heap = self._heap
        by_key = self._by_key
        now_ms = math.floor(now * 1000)
        while heap and (heap[0] >> 64) <= now_ms:
            entry = heap[0]
            due, key = entry >> 64, entry & _MASK64
            binding = by_key.get(key)
            actual = None if binding is None else expires_ms(binding.registered, binding.lifetime)
            if actual is not None and actual > due:  # renewed since: wait for its real expiry
                heapq.heapreplace(heap, (actual << 64) | key)
                continue
            heapq.heappop(heap)
            if actual != due or binding is None:
                continue  # removed, infinite now, or another entry covers an earlier expiry
            del by_key[key]
            self._keys.remove(key)
            if self.changed is not None:
                self.changed.add(key)
            if self.gone is not None:
                self.gone.add(binding.mobile_node)
            yield binding

    def _compact(self) -> None:
        entries = []
        for key, binding in self._by_key.items():
            due = expires_ms(binding.registered, binding.lifetime)
            if due is not None:
                entries.append((due << 64) | key)
        heapq.heapify(entries)
        self._heap = entries

    @property
    def heap_size(self) -> int:
        """Entries in the expiry heap, stale ones included (for tests and benchmarks)."""
        return len(self._heap)
