"""clear-bindings of a whole table in pages (``HomeAgent.clear_bindings_page``): registrations decided
between pages stand, everything registered before the clear began goes, and the data plane the intents
build matches the bindings left at every step."""

from __future__ import annotations

from ipaddress import IPv4Address

from engine_helpers import HA, harness, node, vr_config

from ha.engine.events import BindingRemoved, RemovalReason
from ha.protocol import RequestFlags

COA1, COA2, COA3 = "198.51.100.7", "198.51.100.8", "198.51.100.9"
S = int(RequestFlags.S)


def homes(n: int) -> list[str]:
    return [f"10.1.0.{i}" for i in range(1, n + 1)]


def consistent(h) -> None:
    """The recorded data plane holds exactly the engine's bindings: one route per bound home address
    via its care-of addresses, one tunnel reference per binding, proxy ARP for each bound home."""
    h.plane.drain(h.engine)
    bound: dict[IPv4Address, set[IPv4Address]] = {}
    for b in h.engine.bindings_after(None, limit=1000):
        bound.setdefault(b.home_address, set()).add(b.care_of_address)
    assert {home: set(coas) for home, coas in h.plane.routes.items()} == bound
    assert h.plane.proxy_arp == set(bound)
    assert sum(r.binding_count for r in h.plane.tunnels()) == sum(len(c) for c in bound.values())


def test_registrations_between_pages_stand_and_everything_older_goes() -> None:
    nodes = [node(f"mn{i}", home) for i, home in enumerate(homes(10), 1)]
    h = harness(vr_config(nodes, address=HA, simultaneous_bindings=2))
    for home in homes(10):
        assert h.register(home, COA1, flags=S).code == 0
    assert h.register("10.1.0.5", COA2, flags=S).code == 0  # mn5 has two bindings
    assert h.register("10.1.0.2", COA1, flags=S).code == 0  # renewed: the renewal cache remembers mn2
    h.plane.drain(h.engine)
    h.events()
    h.clock.advance(1)
    before = h.clock.now  # the clear begins
    h.clock.advance(0.001)

    cleared, after = h.engine.clear_bindings_page(before=before, after=None, limit=3)
    assert (cleared, str(IPv4Address(after >> 32))) == (3, "10.1.0.3")  # the page's last key
    consistent(h)
    # between pages: mn1 (already cleared) registers again, mn9 (not reached yet) renews, mn5 renews
    # one of its two bindings, a deregistration of mn7 removes its binding before its page comes
    assert h.register("10.1.0.2", COA1, flags=S).code == 0  # as before the clear: bound anew, not renewed
    assert h.register("10.1.0.1", COA3).code == 0
    assert h.register("10.1.0.9", COA1).code == 0
    assert h.register("10.1.0.5", COA2, flags=S).code == 0
    assert h.register("10.1.0.7", COA1, lifetime=0).code == 0
    consistent(h)
    total = cleared
    while after is not None:
        cleared, after = h.engine.clear_bindings_page(before=before, after=after, limit=3)
        total += cleared
        consistent(h)
    left = {(str(b.home_address), str(b.care_of_address)) for b in h.engine.bindings_after(None, limit=100)}
    assert left == {("10.1.0.1", COA3), ("10.1.0.2", COA1), ("10.1.0.9", COA1), ("10.1.0.5", COA2)}
    assert total == 11 - 1 - 1 - 1  # all but mn9's and mn5's renewed ones, and mn7's deregistered one
    removed = [e for e in h.events() if type(e) is BindingRemoved]
    cleared_pairs = {(str(e.home_address), str(e.care_of_address)) for e in removed if e.reason == "cleared"}
    assert len(cleared_pairs) == total == len([e for e in removed if e.reason is RemovalReason.CLEARED])
    assert ("10.1.0.5", COA1) in cleared_pairs and ("10.1.0.5", COA2) not in cleared_pairs
    assert h.plane.routes[IPv4Address("10.1.0.5")] == (IPv4Address(COA2),)


def test_a_page_clears_only_the_care_of_address_asked_for() -> None:
    nodes = [node(f"mn{i}", home) for i, home in enumerate(homes(6), 1)]
    h = harness(vr_config(nodes, address=HA))
    for i, home in enumerate(homes(6)):
        assert h.register(home, COA1 if i % 2 else COA2).code == 0
    h.clock.advance(1)
    total, after = 0, None
    while True:
        cleared, after = h.engine.clear_bindings_page(
            before=h.clock.now, after=after, limit=4, care_of_address=IPv4Address(COA1)
        )
        total += cleared
        if after is None:
            break
    assert total == 3
    assert {str(b.care_of_address) for b in h.engine.bindings_after(None, limit=100)} == {COA2}
    consistent(h)


def test_an_empty_table_is_one_empty_page() -> None:
    h = harness()
    assert h.engine.clear_bindings_page(before=h.clock.now, after=None, limit=256) == (0, None)
