"""Dynamic home addresses (RFC 2794): home address 0.0.0.0 + NAI, assigned from the node's pool."""

from __future__ import annotations

from ipaddress import IPv4Address

from engine_helpers import HA, harness, sa, vr_config

from ha.engine.config import AddressPool, MobileNode
from ha.engine.events import BindingRemoved, RemovalReason

COA1, COA2 = "203.0.113.5", "203.0.113.6"
ZERO = "0.0.0.0"


def dynamic_config(size: int = 2, **home_agent: object):
    pool = AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address(f"10.2.0.{size}")),))
    nodes = [
        MobileNode(f"mn{i}", address_pool="pool", nai=f"mn{i}@example.net", security_associations=[sa()])
        for i in range(1, 4)
    ]
    home_agent.setdefault("address", HA)
    return vr_config(nodes, pools=[pool], **home_agent)


def test_assigns_from_pool_and_echoes_the_nai():
    h = harness(dynamic_config())
    reply = h.register(ZERO, COA1, nai="mn1@example.net")
    assert (
        reply.code == 0 and reply.home_address == IPv4Address("10.2.0.1") and reply.nai == "mn1@example.net"
    )
    assert h.engine.assigned_address("mn1") == IPv4Address("10.2.0.1")
    assert h.engine.pool_usage("pool").in_use == 1
    info = h.engine.bindings_of(IPv4Address("10.2.0.1"))[0]
    assert (info.mobile_node, info.nai) == ("mn1", "mn1@example.net")


def test_same_nai_keeps_its_address_while_bound_also_on_handover():
    h = harness(dynamic_config())
    first = h.register(ZERO, COA1, nai="mn1@example.net").home_address
    again = h.register(ZERO, COA2, nai="mn1@example.net")
    explicit = h.register(str(first), COA1, nai="mn1@example.net")
    assert again.home_address == first and explicit.home_address == first and explicit.code == 0
    assert h.engine.pool_usage("pool").in_use == 1
    assert h.engine.binding_count == 1


def test_exhausted_pool_is_130_and_address_is_released_on_deregistration():
    h = harness(dynamic_config(size=2))
    a = h.register(ZERO, COA1, nai="mn1@example.net").home_address
    h.register(ZERO, COA1, nai="mn2@example.net")
    denied = h.register(ZERO, COA1, nai="mn3@example.net")
    assert denied.code == 130 and h.engine.statistics.denied_by_code[130] == 1
    dereg = h.register(str(a), str(a), lifetime=0, nai="mn1@example.net")
    assert dereg.code == 0
    assert h.engine.assigned_address("mn1") is None and h.engine.pool_usage("pool").in_use == 1
    assert h.register(ZERO, COA2, nai="mn3@example.net").home_address == a


def test_address_is_released_on_expiry():
    h = harness(dynamic_config())
    a = h.register(ZERO, COA1, nai="mn1@example.net", lifetime=10).home_address
    h.events()
    assert h.expire(10.001) == 1
    expired = BindingRemoved(a, IPv4Address(COA1), "mn1", RemovalReason.EXPIRED, "mn1@example.net")
    assert h.events() == [expired]
    assert h.engine.pool_usage("pool").in_use == 0 and h.engine.assigned_address("mn1") is None


def test_zero_home_address_without_nai_is_134():
    h = harness(dynamic_config())
    assert h.register(ZERO, COA1).code == 134


def test_requesting_an_address_held_by_someone_else_is_130():
    h = harness(dynamic_config())
    a = h.register(ZERO, COA1, nai="mn1@example.net").home_address
    assert h.register(str(a), COA2, nai="mn2@example.net").code == 130
    # ... but a free member address is granted as asked (e.g. after a home agent restart).
    assert h.register("10.2.0.2", COA2, nai="mn2@example.net").home_address == IPv4Address("10.2.0.2")
