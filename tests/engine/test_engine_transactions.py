"""Configuration transactions (prepare / abort / apply), clear-bindings, clear-statistics, expiry."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest
from engine_helpers import HA, harness, node, sa, vr_config

from ha.dataplane.intents import ProxyArp, ReleaseTunnel, RemoveHomeRoute
from ha.engine.config import AddressPool, MobileNode
from ha.engine.errors import ConfigRefused
from ha.engine.events import BindingRemoved, RemovalReason

HOME, HOME2 = "10.1.0.1", "10.1.0.2"
COA1, COA2 = "203.0.113.5", "203.0.113.6"


def two_nodes(**home_agent):
    home_agent.setdefault("address", HA)
    return vr_config([node("mn1", HOME), node("mn2", HOME2)], **home_agent)


def pool_config(end: str):
    pool = AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address(end)),))
    mn = MobileNode("dyn", address_pool="pool", nai="dyn@example.net", security_associations=[sa()])
    return vr_config([mn], pools=[pool], address=HA)


def test_removing_a_mobile_node_removes_its_bindings_with_intents():
    h = harness(two_nodes())
    h.register(HOME, COA1)
    h.register(HOME2, COA2)
    h.plane.drain(h.engine)
    h.events()
    txn = h.engine.prepare(vr_config([node("mn2", HOME2)], address=HA))
    assert h.engine.binding_count == 2  # prepare changes nothing
    h.engine.apply(txn)
    assert h.plane.drain(h.engine) == [
        RemoveHomeRoute(IPv4Address(HOME)),
        ReleaseTunnel(IPv4Address(COA1)),
        ProxyArp(IPv4Address(HOME), False),
    ]
    assert h.events() == [BindingRemoved(IPv4Address(HOME), IPv4Address(COA1), "mn1", RemovalReason.CLEARED)]
    assert h.engine.binding_count == 1
    assert h.register(HOME, COA1).code == 131  # unknown now


def test_removing_a_security_association_keeps_bindings():
    h = harness(vr_config([node("mn1", HOME, security_associations=[sa(), sa(spi=257)])], address=HA))
    h.register(HOME, COA1)
    h.engine.apply(
        h.engine.prepare(vr_config([node("mn1", HOME, security_associations=[sa(spi=257)])], address=HA))
    )
    assert h.engine.binding_count == 1
    assert h.register(HOME, COA1).code == 131  # SPI 256 is gone
    assert h.register(HOME, COA1, spi=257).code == 0


def test_settings_changes_apply_to_new_registrations_only():
    h = harness(two_nodes(max_lifetime=600))
    h.register(HOME, COA1, lifetime=600)
    h.engine.apply(h.engine.prepare(two_nodes(max_lifetime=60)))
    assert h.engine.binding((IPv4Address(HOME), IPv4Address(COA1))).lifetime_granted == 600
    assert h.register(HOME2, COA2, lifetime=600).lifetime == 60
    assert h.expire(61) == 1  # only the new binding
    assert h.expire(540) == 1


def test_changing_a_static_home_address_drops_that_nodes_bindings():
    h = harness(two_nodes())
    h.register(HOME, COA1)
    new = vr_config([node("mn1", "10.1.0.9"), node("mn2", HOME2)], address=HA)
    h.engine.apply(h.engine.prepare(new))
    assert h.engine.binding_count == 0
    assert h.register("10.1.0.9", COA1).code == 0


def test_pool_shrinking_below_a_bound_address_is_refused_and_state_untouched():
    h = harness(pool_config("10.2.0.9"))
    h.register("0.0.0.0", COA1, nai="dyn@example.net")  # gets 10.2.0.1
    h.engine.clear_bindings()
    a = h.register("0.0.0.0", COA1, nai="dyn@example.net").home_address  # the cursor moved: 10.2.0.2
    assert a == IPv4Address("10.2.0.2")
    before = (h.engine.binding_count, h.engine.pool_usage("pool"), h.engine.config)
    with pytest.raises(ConfigRefused) as refused:
        h.engine.prepare(pool_config("10.2.0.1"))
    assert "10.2.0.2" in refused.value.message
    assert (
        refused.value.path
        == "/mipha:virtual-routers/virtual-router[name='default']/address-pool[name='pool']"
    )
    assert (h.engine.binding_count, h.engine.pool_usage("pool"), h.engine.config) == before
    # Growing the pool is fine and keeps the assignment.
    h.engine.apply(h.engine.prepare(pool_config("10.2.0.20")))
    assert h.engine.pool_usage("pool").in_use == 1 and h.engine.binding_count == 1
    assert h.register("0.0.0.0", COA2, nai="dyn@example.net").home_address == a


def test_prepare_refuses_dangling_pool_and_duplicates():
    h = harness(two_nodes())
    bad_pool = vr_config(
        [MobileNode("x", address_pool="nope", nai="x@y", security_associations=[sa()])], address=HA
    )
    with pytest.raises(ConfigRefused, match="does not exist") as refused:
        h.engine.prepare(bad_pool)
    assert refused.value.path.endswith("mobile-node[name='x']/address-pool")
    with pytest.raises(ConfigRefused, match="both"):
        h.engine.prepare(vr_config([node("a", HOME), node("b", HOME)], address=HA))
    with pytest.raises(ConfigRefused, match="NAI"):
        h.engine.prepare(vr_config([node("a", HOME, nai="n@x"), node("b", HOME2, nai="n@x")], address=HA))


def test_abort_then_apply_is_refused_and_nothing_changed():
    h = harness(two_nodes())
    h.register(HOME, COA1)
    txn = h.engine.prepare(vr_config([], address=HA))
    h.engine.abort(txn)
    with pytest.raises(ValueError, match="aborted"):
        h.engine.apply(txn)
    assert h.engine.binding_count == 1


def test_disabling_the_home_agent_clears_every_binding_and_discards_requests():
    h = harness(two_nodes())
    h.register(HOME, COA1)
    h.register(HOME2, COA2)
    h.plane.drain(h.engine)
    h.engine.apply(h.engine.prepare(replace(two_nodes(), home_agent=None)))
    h.plane.drain(h.engine)
    assert h.engine.binding_count == 0 and h.plane.routes == {} and h.plane.tunnels_refs == {}
    assert h.send(b"\x01" + bytes(40)) is None


def test_clear_bindings_filters():
    h = harness(two_nodes(simultaneous_bindings=2))
    h.register(HOME, COA1, flags=0x80)
    h.register(HOME, COA2, flags=0x80)
    h.register(HOME2, COA1)
    assert h.engine.clear_bindings(care_of_address=IPv4Address(COA2)) == 1
    assert h.engine.clear_bindings(home_address=IPv4Address(HOME2)) == 1
    assert h.engine.clear_bindings(nai="nobody@x") == 0
    assert h.engine.clear_bindings() == 1
    assert h.engine.binding_count == 0
    h.plane.drain(h.engine)
    assert h.plane.routes == {} and h.plane.tunnels_refs == {} and h.plane.proxy_arp == set()
    reasons = {e.reason for e in h.events() if isinstance(e, BindingRemoved)}
    assert reasons == {RemovalReason.CLEARED}


def test_clear_bindings_by_nai():
    h = harness(vr_config([node("mn1", HOME, nai="a@x")], address=HA))
    h.register(HOME, COA1, nai="a@x")
    assert h.engine.clear_bindings(nai="a@x") == 1


def test_clear_statistics_zeroes_counters():
    h = harness()
    h.register(HOME, COA1)
    h.register(HOME, COA1, key=b"z" * 16)
    assert h.engine.statistics.requests_received == 2
    assert h.engine.statistics.discontinuity_time is None
    h.engine.clear_statistics(wallclock=h.clock.wall)
    assert h.engine.statistics.discontinuity_time == h.clock.wall
    assert len(h.engine.violations) == 1  # a log, not a counter
    stats = h.engine.statistics.as_dict()
    assert all(v == 0 for k, v in stats.items() if k != "denied-by-code") and stats["denied-by-code"] == {}


def test_expiry_order_and_timer_follow_lifetimes():
    nodes = [node(f"mn{i}", f"10.1.0.{i}") for i in range(1, 6)]
    h = harness(vr_config(nodes, address=HA))
    for i, lifetime in zip(range(1, 6), (50, 10, 40, 20, 30), strict=True):
        h.register(f"10.1.0.{i}", COA1, lifetime=lifetime)
    h.events()
    order = []
    start = h.clock.now
    while (due := h.engine.get_timer()) is not None:
        assert due >= h.clock.now
        h.clock.now = due
        assert h.engine.handle_timer(due) == 1
        (event,) = h.events()
        order.append((str(event.home_address), round(due - start, 3)))
    assert order == [("10.1.0.2", 10), ("10.1.0.4", 20), ("10.1.0.5", 30), ("10.1.0.3", 40), ("10.1.0.1", 50)]


def test_binding_does_not_expire_one_millisecond_early():
    h = harness()
    h.register(HOME, COA1, lifetime=10)
    assert h.expire(9.998) == 0
    assert h.engine.binding((IPv4Address(HOME), IPv4Address(COA1))).lifetime_remaining == 1
    assert h.expire(0.002) == 1


def test_handle_timer_limit_expires_earliest_first_and_keeps_the_timer_due():
    nodes = [node(f"mn{i}", f"10.1.0.{i}") for i in range(1, 6)]
    h = harness(vr_config(nodes, address=HA))
    for i in range(1, 6):
        h.register(f"10.1.0.{i}", COA1, lifetime=10 + i)
    h.events()
    h.clock.advance(100)
    assert h.engine.handle_timer(h.clock.now, limit=2) == 2
    assert [str(e.home_address) for e in h.events()] == ["10.1.0.1", "10.1.0.2"]
    assert h.engine.get_timer() <= h.clock.now
    assert h.engine.handle_timer(h.clock.now) == 3
    assert h.engine.get_timer() is None


def test_prepare_says_when_the_socket_must_be_reopened():
    h = harness(two_nodes())
    assert not h.engine.prepare(two_nodes(max_lifetime=100)).rebind
    assert h.engine.prepare(two_nodes(udp_port=4434)).rebind
    assert h.engine.prepare(vr_config([], address="192.0.2.9")).rebind
    assert h.engine.prepare(replace(two_nodes(), home_agent=None)).rebind


def test_a_static_address_held_from_a_pool_is_refused():
    h = harness(pool_config("10.2.0.9"))
    assert h.register("0.0.0.0", COA1, nai="dyn@example.net").home_address == IPv4Address("10.2.0.1")
    taken = pool_config("10.2.0.9")
    clash = replace(taken, mobile_nodes={**taken.mobile_nodes, "x": node("x", "10.2.0.1")})
    with pytest.raises(ConfigRefused, match="assigned to dyn") as refused:
        h.engine.prepare(clash)
    assert refused.value.path.endswith("mobile-node[name='x']/home-address")
    h.engine.clear_bindings()
    h.engine.apply(h.engine.prepare(clash))  # free again: accepted
