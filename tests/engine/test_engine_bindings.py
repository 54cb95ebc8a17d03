"""The binding table: key order, range queries, the lazy-deletion expiry heap."""

from __future__ import annotations

from ipaddress import IPv4Address

from engine_helpers import harness

from ha.engine.bindings import Binding, BindingTable
from ha.protocol.constants import Encapsulation


def binding(home: int, coa: int, registered: float, lifetime: int) -> Binding:
    return Binding(
        home,
        coa,
        "mn",
        source=0,
        lifetime=lifetime,
        registered=registered,
        identification=1,
        flags=0,
        encapsulation=Encapsulation.IP_IN_IP,
    )


def test_iteration_and_after_are_in_key_order():
    table = BindingTable()
    for home, coa in [(5, 1), (1, 9), (1, 2), (3, 3)]:
        table.add(binding(home, coa, 0.0, 10))
    assert [(b.home_address, b.care_of_address) for b in table] == [(1, 2), (1, 9), (3, 3), (5, 1)]
    assert [(b.home_address, b.care_of_address) for b in table.after((1 << 32) | 9, 2)] == [(3, 3), (5, 1)]
    assert table.care_of_addresses(1) == [2, 9]
    assert table.count_for_home(1) == 2 and table.count_for_home(4) == 0


def test_expiry_pops_in_time_order_and_skips_refreshed_entries():
    table = BindingTable()
    table.add(binding(1, 1, 0.0, 30))
    table.add(binding(2, 2, 0.0, 10))
    table.add(binding(3, 3, 0.0, 20))
    table.add(binding(2, 2, 5.0, 100))  # refreshed: its first heap entry (t=10) is stale
    assert table.next_expiry() == 20.0
    assert [b.home_address for b in table.pop_expired(29.999)] == [3]
    assert [b.home_address for b in table.pop_expired(30.0)] == [1]
    assert table.next_expiry() == 105.0
    assert list(table.pop_expired(104.9)) == []
    assert [b.home_address for b in table.pop_expired(105.0)] == [2]
    assert len(table) == 0 and table.next_expiry() is None


def test_removed_binding_never_expires_and_stale_entries_are_compacted():
    table = BindingTable()
    table.add(binding(1, 1, 0.0, 10))
    assert table.remove(1, 1) is not None
    assert list(table.pop_expired(100.0)) == []
    for i in range(5000):  # refresh one binding many times: the heap must not grow without bound
        table.add(binding(7, 7, float(i), 10))
    assert table.heap_size <= 2 * len(table) + 1024 + 1
    assert [b.registered for b in table.pop_expired(5008.9)] == []
    assert [b.registered for b in table.pop_expired(5009.0)] == [4999.0]


def renew(table: BindingTable, b: Binding, registered: float, lifetime: int) -> None:
    previous = (b.registered, b.lifetime)
    b.registered, b.lifetime = registered, lifetime
    table.reschedule(b, *previous)


def test_renewals_that_extend_cost_no_heap_entry_and_expire_at_the_new_time():
    table = BindingTable()
    b = binding(1, 1, 0.0, 10)
    table.add(b)
    for t in range(1, 50):
        renew(table, b, float(t), 10)
    assert table.heap_size == 1
    assert table.next_expiry() == 59.0  # the old entry moved to the real expiry
    assert list(table.pop_expired(58.999)) == []
    assert list(table.pop_expired(59.0)) == [b]


def test_a_renewal_that_shortens_the_lifetime_expires_early():
    table = BindingTable()
    b = binding(1, 1, 0.0, 100)
    table.add(b)
    renew(table, b, 1.0, 5)
    assert table.next_expiry() == 6.0
    assert list(table.pop_expired(6.0)) == [b]
    assert list(table.pop_expired(1000.0)) == []  # the old entry is dropped, nothing expires twice


def test_infinite_and_back():
    table = BindingTable()
    b = binding(1, 1, 0.0, 10)
    table.add(b)
    renew(table, b, 1.0, 0xFFFF)
    assert list(table.pop_expired(10_000.0)) == [] and len(table) == 1
    assert table.next_expiry() is None
    renew(table, b, 20_000.0, 30)
    assert table.next_expiry() == 20_030.0
    assert list(table.pop_expired(20_030.0)) == [b]


def test_changes_tell_renewals_in_place_from_other_changes():
    """What the daemon journals: a renewal in place is reported as the renewed binding alone; a binding
    added, removed or replaced in the same burst as its renewal is reported by key only."""
    h = harness()
    h.engine.track_changes()
    key = (int(IPv4Address("10.1.0.1")) << 32) | int(IPv4Address("198.51.100.7"))
    assert h.register("10.1.0.1", "198.51.100.7").code == 0
    assert h.engine.take_binding_changes() == ([key], [])
    h.clock.advance(1)
    assert h.register("10.1.0.1", "198.51.100.7", lifetime=900).code == 0
    changed, renewed = h.engine.take_binding_changes()
    assert changed == [] and [(b.lifetime, b is h.engine.raw_binding(key)) for b in renewed] == [(900, True)]
    assert h.engine.take_binding_changes() == ([], [])
    h.clock.advance(1)
    assert h.register("10.1.0.1", "198.51.100.7").code == 0  # renewed, then deregistered: removed
    assert h.register("10.1.0.1", "198.51.100.7", lifetime=0).code == 0
    assert h.engine.take_binding_changes() == ([key], [])
    h.clock.advance(1)
    assert h.register("10.1.0.1", "198.51.100.7").code == 0
    h.clock.advance(1)
    assert h.register("10.1.0.1", "198.51.100.7").code == 0
    assert h.engine.take_changed_bindings() == [key]  # the old view: every key, once
