"""No datagram, however malformed, makes the engine raise (the transport would only count it)."""

from __future__ import annotations

from ipaddress import IPv4Address

from engine_helpers import HA, build_request, harness, node, vr_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ha.engine.config import AddressPool, MobileNode
from ha.engine.home_agent import Outgoing
from ha.protocol import SecurityAssociation

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
CONFIG = vr_config(
    [
        node("mn1", "10.1.0.1", nai="a@x"),
        MobileNode(
            "d", address_pool="pool", nai="d@x", security_associations=[SecurityAssociation(256, KEY)]
        ),
    ],
    pools=[AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address("10.2.0.2")),))],
    address=HA,
    simultaneous_bindings=2,
)
VALID = [
    build_request(home="10.1.0.1", coa="203.0.113.5", identification=1 << 40),
    build_request(home="0.0.0.0", coa="203.0.113.5", identification=1 << 40, nai="d@x"),
    build_request(home="10.1.0.1", coa="10.1.0.1", identification=1 << 40, lifetime=0, nai="a@x"),
]


def check(out: object) -> None:
    assert out is None or isinstance(out, Outgoing)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=120))
def test_random_bytes(data):
    h = harness(CONFIG)
    check(h.send(bytes([1]) + data))
    check(h.send(data))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
    st.integers(0, 80),
)
def test_mutated_valid_requests(base, flips, cut):
    h = harness(CONFIG)
    data = bytearray(base)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    check(h.send(bytes(data)))
    check(h.send(bytes(data[: len(data) - cut])))
    h.expire(10_000)
    h.plane.drain(h.engine)
