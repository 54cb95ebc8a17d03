"""Fixtures for the ha.protocol tests; the builders live in protocol_support."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

import pytest
from protocol_support import COA, HA, HOA, Registration

from ha.protocol import Arrival, HomeAgentPolicy, MobileNodeRecord


@pytest.fixture
def mn() -> Registration:
    return Registration()


@pytest.fixture
def policy() -> HomeAgentPolicy:
    return HomeAgentPolicy(address=HA, broadcast_addresses=frozenset({IPv4Address("10.0.0.255")}))


@pytest.fixture
def node(mn: Registration) -> MobileNodeRecord:
    return MobileNodeRecord(name="mn1", security_associations=(mn.sa,), home_address=HOA)


@pytest.fixture
def arrival() -> Arrival:
    return Arrival(source=COA, source_port=40000, destination=HA)


@pytest.fixture
def flip() -> Callable[[bytes, int], bytes]:
    """Flip one bit of a datagram (for tampering tests)."""

    def _flip(data: bytes, index: int) -> bytes:
        out = bytearray(data)
        out[index] ^= 0x01
        return bytes(out)

    return _flip
