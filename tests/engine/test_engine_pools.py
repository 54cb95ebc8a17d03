"""Address pools: allocation, exclusion, exhaustion, release, claims."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from ha.engine.config import AddressPool
from ha.engine.pools import PoolAllocator


def ip(text: str) -> int:
    return int(IPv4Address(text))


def pool(*ranges: tuple[str, str], excludes: tuple[str, ...] = ()) -> PoolAllocator:
    config = AddressPool(
        "p",
        tuple((IPv4Address(a), IPv4Address(b)) for a, b in ranges),
        frozenset(IPv4Address(e) for e in excludes),
    )
    return PoolAllocator(config)


def test_allocates_every_address_once_skipping_excludes_then_exhausts():
    p = pool(("10.0.0.1", "10.0.0.4"), ("10.0.1.1", "10.0.1.2"), excludes=("10.0.0.2",))
    assert (p.size, p.in_use, p.free) == (5, 0, 5)
    got = [p.allocate() for _ in range(5)]
    assert sorted(got) == [ip(a) for a in ("10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.1.1", "10.0.1.2")]
    assert p.allocate() is None
    assert (p.in_use, p.free) == (5, 0)


def test_release_makes_an_address_available_again_and_is_idempotent():
    p = pool(("10.0.0.1", "10.0.0.2"))
    a, b = p.allocate(), p.allocate()
    assert p.allocate() is None
    p.release(a)
    p.release(a)
    assert p.in_use == 1
    assert p.allocate() == a
    assert list(p.allocated()) == sorted([a, b])


def test_claim_only_free_member_addresses():
    p = pool(("10.0.0.1", "10.0.0.9"), excludes=("10.0.0.5",))
    assert p.claim(ip("10.0.0.3"))
    assert not p.claim(ip("10.0.0.3"))
    assert not p.claim(ip("10.0.0.5"))
    assert not p.claim(ip("10.0.1.1"))
    assert p.is_allocated(ip("10.0.0.3")) and p.contains(ip("10.0.0.4")) and not p.contains(ip("10.0.0.5"))


def test_a_million_address_pool_is_a_megabyte_and_allocates_in_order_after_wrap():
    p = pool(("10.0.0.0", "10.15.66.63"))
    assert p.size == 1_000_000
    first = p.allocate()
    p.release(first)
    # The cursor moved on: the next allocation is the following address, not the one just released.
    assert p.allocate() == first + 1


def test_config_rejects_overlapping_or_reversed_ranges():
    with pytest.raises(ValueError, match="overlaps"):
        AddressPool(
            "p",
            (
                (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.9")),
                (IPv4Address("10.0.0.5"), IPv4Address("10.0.0.20")),
            ),
        )
    with pytest.raises(ValueError, match="after its end"):
        AddressPool("p", ((IPv4Address("10.0.0.9"), IPv4Address("10.0.0.1")),))
