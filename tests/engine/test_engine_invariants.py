"""A long random sequence of registrations, handovers, deregistrations, expiries, clears and config
changes; after every step the data plane built from the intents must match the binding table."""

from __future__ import annotations

import random
from collections import Counter
from ipaddress import IPv4Address

import pytest
from engine_helpers import HA, harness, node, sa, vr_config

from ha.engine.config import AddressPool, MobileNode

COAS = [f"203.0.113.{i}" for i in range(1, 6)]


def config(simultaneous: int, pool_end: int = 6):
    statics = [node(f"s{i}", f"10.1.0.{i}") for i in range(1, 5)]
    dynamic = [
        MobileNode(f"d{i}", address_pool="pool", nai=f"d{i}@x", security_associations=[sa()])
        for i in range(1, 5)
    ]
    pool = AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address(f"10.2.0.{pool_end}")),))
    return vr_config(statics + dynamic, pools=[pool], address=HA, simultaneous_bindings=simultaneous)


def check(h) -> None:
    engine = h.engine
    h.plane.drain(engine)
    bindings = engine.bindings_after(None, limit=10_000)
    routes: dict[IPv4Address, tuple[IPv4Address, ...]] = {}
    for b in bindings:
        routes.setdefault(b.home_address, ())
        routes[b.home_address] += (b.care_of_address,)
    assert h.plane.routes == routes
    desired = list(engine.desired_bindings())
    assert {d.home_address: d.care_of_addresses for d in desired} == routes
    assert {d.home_address: d.reverse_tunnel for d in desired} == {a: h.plane.reverse[a] for a in routes}
    assert h.plane.proxy_arp == set(routes)
    per_coa = Counter(b.care_of_address for b in bindings)
    assert Counter({coa: n for (coa, _), n in h.plane.tunnels_refs.items()}) == per_coa
    for name, state in engine._nodes.items():
        node_config = engine.config.mobile_nodes.get(name)
        home = engine._home_of(node_config, state) if node_config is not None else None
        expected = tuple(
            int(b.care_of_address) for b in bindings if home is not None and int(b.home_address) == home
        )
        assert state.care_of_addresses() == expected, name
    usage = engine.pool_usage("pool")
    assigned = sum(1 for s in engine._nodes.values() if s.assigned is not None)
    assert usage.in_use == assigned


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_keep_plane_and_table_consistent(seed):
    rng = random.Random(seed)
    simultaneous = seed % 3
    h = harness(config(simultaneous))
    for _ in range(400):
        op = rng.random()
        if op < 0.55:
            if rng.random() < 0.5:
                home, nai = f"10.1.0.{rng.randint(1, 4)}", None
            else:
                index = rng.randint(1, 4)
                assigned = h.engine.assigned_address(f"d{index}")
                home, nai = (str(assigned) if assigned and rng.random() < 0.5 else "0.0.0.0"), f"d{index}@x"
            flags = 0x80 if rng.random() < 0.5 else 0
            flags |= 0x02 if rng.random() < 0.3 else 0
            h.register(home, rng.choice(COAS), nai=nai, flags=flags, lifetime=rng.choice([5, 20, 60]))
        elif op < 0.75:
            bindings = h.engine.bindings_after(None, limit=1000)
            if bindings:
                b = rng.choice(bindings)
                coa = str(b.home_address) if rng.random() < 0.3 else str(b.care_of_address)
                h.register(str(b.home_address), coa, lifetime=0, nai=b.nai)
        elif op < 0.9:
            h.expire(rng.choice([1, 5, 15]))
        elif op < 0.95:
            h.engine.clear_bindings(care_of_address=IPv4Address(rng.choice(COAS)))
        else:
            try:
                h.engine.apply(h.engine.prepare(config(rng.randint(0, 2), pool_end=rng.choice([4, 6, 8]))))
            except Exception as error:  # a shrinking pool under bound addresses is refused
                assert "no longer contain" in str(error)
        h.clock.advance(0.25)
        check(h)
