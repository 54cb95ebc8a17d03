"""Dynamic home address allocation (RFC 2794): one byte per address, searched with ``bytearray.find``.

A pool of a million addresses costs one megabyte and allocation is a C-speed ``memchr`` from a rotating
cursor, so handing out and releasing addresses stays O(1) amortised without a Python set of addresses.
Addresses are plain ``int`` here, like everywhere inside the engine's hot paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .config import AddressPool

FREE = 0
IN_USE = 1
EXCLUDED = 2
_FREE_BYTE = bytes([FREE])


class _Range:
    """One inclusive range of a pool with its state bytes and a cursor where the next search starts."""

    __slots__ = ("cursor", "end", "start", "state")

    def __init__(self, start: int, end: int, excludes: Iterable[int]) -> None:
        self.start = start
        self.end = end
        self.state = bytearray(end - start + 1)
        for address in excludes:
            if start <= address <= end:
                self.state[address - start] = EXCLUDED
        self.cursor = 0

    def allocate(self) -> int | None:
        index = self.state.find(_FREE_BYTE, self.cursor)
        if index < 0:
            index = self.state.find(_FREE_BYTE, 0, self.cursor)
            if index < 0:
                return None
        self.state[index] = IN_USE
        self.cursor = index + 1 if index + 1 < len(self.state) else 0
        return self.start + index


class PoolAllocator:
    """Runtime state of one :class:`~ha.engine.config.AddressPool`: which addresses are handed out."""

    __slots__ = ("_ranges", "config", "in_use", "size")

    def __init__(self, config: AddressPool) -> None:
        self.config = config
        excludes = [int(address) for address in config.excludes]
        self._ranges = [_Range(int(start), int(end), excludes) for start, end in config.ranges]
        self.size = sum(len(r.state) - r.state.count(EXCLUDED) for r in self._ranges)
        self.in_use = 0

    @property
    def free(self) -> int:
        """Addresses still available (YANG ``free``)."""
        return self.size - self.in_use

    def _range_of(self, address: int) -> _Range | None:
        for candidate in self._ranges:
            if candidate.start <= address <= candidate.end:
                return candidate
        return None

    def contains(self, address: int) -> bool:
        """True when ``address`` belongs to the pool and is not excluded."""
        owner = self._range_of(address)
        return owner is not None and owner.state[address - owner.start] != EXCLUDED

    def is_allocated(self, address: int) -> bool:
        owner = self._range_of(address)
        return owner is not None and owner.state[address - owner.start] == IN_USE

    def allocate(self) -> int | None:
        """Hand out a free address, or None when the pool is exhausted (reply code 130)."""
        if self.in_use >= self.size:
            return None
        for candidate in self._ranges:
            address = candidate.allocate()
            if address is not None:
                self.in_use += 1
                return address
        return None

    def claim(self, address: int) -> bool:
        """Mark a specific free address in use (used when a new pool adopts live bindings)."""
        owner = self._range_of(address)
        if owner is None or owner.state[address - owner.start] != FREE:
            return False
        owner.state[address - owner.start] = IN_USE
        self.in_use += 1
        return True

    def release(self, address: int) -> None:
        """Give an address back; releasing an address that is not in use is a no-op."""
        owner = self._range_of(address)
        if owner is not None and owner.state[address - owner.start] == IN_USE:
            owner.state[address - owner.start] = FREE
            self.in_use -= 1

    def allocated(self) -> Iterator[int]:
        """Every address in use, in ascending order."""
        for candidate in self._ranges:
            state = candidate.state
            index = state.find(IN_USE)
            while index >= 0:
                yield candidate.start + index
                index = state.find(IN_USE, index + 1)
