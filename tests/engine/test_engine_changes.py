"""Keyed changes (ConfigChange → HomeAgent.prepare_change) against whole configurations (prepare).

Two engines start from the same configuration and the same bindings; one receives each step as a keyed
change, the other as the whole configuration it amounts to.  They must refuse the same steps (same
app-tag) and otherwise end in the same state: the same intents for the data plane, events, look-ups,
pool assignments, nonce set and bindings; and answer the next registration alike.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from engine_helpers import HA, harness, node, sa, vr_config
from hypothesis import given, settings
from hypothesis import strategies as st

from ha.engine.config import AddressPool, ConfigChange, MobileNode
from ha.engine.errors import ConfigRefused
from ha.engine.home_agent import HomeAgent
from ha.protocol.constants import ReplayProtection

POOL = AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address("10.2.0.4")),))
STATIC = [f"10.1.0.{i}" for i in range(1, 6)] + ["10.2.0.1", "10.2.0.2"]  # two inside the pool
NAMES = [f"mn{i}" for i in range(6)]
NAIS = [f"n{i}@example.net" for i in range(4)]


def initial() -> list[MobileNode]:
    return [
        node("mn0", "10.1.0.1"),
        node("mn1", "10.1.0.2", nai="n1@example.net"),
        MobileNode("mn2", address_pool="pool", nai="n2@example.net", security_associations=[sa()]),
        MobileNode("mn3", address_pool="pool", nai="n3@example.net", security_associations=[sa()]),
    ]


def twins():
    pair = [harness(vr_config(initial(), pools=[POOL], address=HA)) for _ in range(2)]
    for h in pair:  # the same bindings: two static, two from the pool
        h.register("10.1.0.1", "203.0.113.5")
        h.register("10.1.0.2", "203.0.113.6")
        h.register("0.0.0.0", "203.0.113.7", nai="n2@example.net")
        h.register("0.0.0.0", "203.0.113.8", nai="n3@example.net")
        h.plane.drain(h.engine)
        h.events()
    return pair


protection = st.sampled_from([ReplayProtection.TIMESTAMP, ReplayProtection.NONCE])
static_node = st.builds(
    lambda name, home, nai, rp: node(name, home, nai=nai, security_associations=[sa(replay_protection=rp)]),
    st.sampled_from(NAMES), st.sampled_from(STATIC), st.none() | st.sampled_from(NAIS), protection,
)  # fmt: skip
pool_node = st.builds(
    lambda name, nai: MobileNode(name, address_pool="pool", nai=nai, security_associations=[sa()]),
    st.sampled_from(NAMES), st.sampled_from(NAIS),
)  # fmt: skip
step = st.dictionaries(st.sampled_from(NAMES), st.none() | static_node | pool_node, min_size=1, max_size=3)


def fixed(entries: dict[str, MobileNode | None]) -> dict[str, MobileNode | None]:
    """Entries keyed by their own name (the strategy draws key and node name independently)."""
    out: dict[str, MobileNode | None] = {}
    for key, value in entries.items():
        if value is not None and value.name != key:
            value = MobileNode(
                key, home_address=value.home_address, address_pool=value.address_pool, nai=value.nai,
                security_associations=value.association_tuple,
            )  # fmt: skip
        out[key] = value
    return out


def unordered(items: list) -> list[str]:
    return sorted(map(repr, items))


def state(engine: HomeAgent) -> tuple:
    return (
        dict(engine.config.mobile_nodes),
        dict(engine._by_home),  # the node objects themselves: a stale one would answer with old SAs
        dict(engine._by_nai),
        dict(engine._by_assigned),
        set(engine._nonce_nodes),
        {name: s.assigned for name, s in engine._nodes.items()},
        [
            (b.home_address, b.care_of_address, b.mobile_node)
            for page in engine.raw_binding_pages()
            for b in page
        ],
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=6), st.sampled_from([*STATIC, "0.0.0.0"]), st.sampled_from(NAIS))
def test_a_keyed_change_ends_where_the_whole_configuration_does(steps, home, nai) -> None:
    keyed, whole = twins()
    for entries in steps:
        change = ConfigChange("default", mobile_nodes=fixed(entries))
        verdicts: list[str | None] = []
        prepared = []
        for attempt in (
            keyed.engine.prepare_change,
            lambda c: whole.engine.prepare(c.applied_to(whole.engine.config)),
        ):
            try:
                prepared.append(attempt(change))
                verdicts.append(None)
            except ConfigRefused as exc:
                verdicts.append(exc.app_tag)
        assert verdicts[0] == verdicts[1], (entries, verdicts)
        if verdicts[0] is not None:
            continue
        keyed.engine.apply(prepared[0])
        whole.engine.apply(prepared[1])
        # the same intents and events; between different nodes their order follows the change's order
        assert unordered(keyed.plane.drain(keyed.engine)) == unordered(whole.plane.drain(whole.engine))
        assert unordered(keyed.events()) == unordered(whole.events())
        assert state(keyed.engine) == state(whole.engine)
    replies = [
        h.register(home, "203.0.113.9", nai=nai if home == "0.0.0.0" else None) for h in (keyed, whole)
    ]
    assert replies[0].code == replies[1].code
    assert replies[0].home_address == replies[1].home_address


def test_one_node_added_leaves_the_others_objects_alone() -> None:
    h = harness(
        vr_config([node(f"mn{i}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(1000)], address=HA)
    )
    before = dict(h.engine.config.mobile_nodes)
    added = node("new", "10.9.0.1")
    h.engine.apply(h.engine.prepare_change(ConfigChange("default", mobile_nodes={"new": added})))
    nodes = h.engine.config.mobile_nodes
    assert nodes["new"] is added and len(nodes) == 1001
    assert all(nodes[name] is obj for name, obj in before.items())  # nothing rebuilt or copied
    assert h.register("10.9.0.1", "203.0.113.5").code == 0


def test_a_settings_change_reaches_every_binding() -> None:
    """Disabling the home agent is a settings change: every binding goes, with its intents."""
    keyed, _ = twins()
    settings_off = keyed.engine.config.settings.__class__(None, None, None)
    keyed.engine.apply(keyed.engine.prepare_change(ConfigChange("default", settings=settings_off)))
    assert keyed.engine.binding_count == 0
    assert len([i for i in keyed.plane.drain(keyed.engine) if type(i).__name__ == "RemoveHomeRoute"]) == 4


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([5, 60, 1800]),
    st.sampled_from([0, 2]),
    st.sampled_from(["allowed", "required", "disabled"]),
    st.booleans(),
    st.sampled_from([None, 7]),
    st.sampled_from([HA, "10.0.0.2"]),
    step,
)
def test_settings_changed_in_place_end_where_the_whole_configuration_does(
    lifetime, simultaneous, reverse, enabled, port, address, entries
) -> None:
    """The home agent's own settings (with entries maybe) are installed without a walk of the entries
    (the node map is the same object after): policy, port, bindings and answers as with the whole."""
    keyed, whole = twins()
    old = keyed.engine.config.home_agent
    assert old is not None
    ha = replace(
        old, max_lifetime=lifetime, simultaneous_bindings=simultaneous, reverse_tunnel=reverse,
        enabled=enabled, udp_port=old.udp_port if port is None else 5000 + port, address=IPv4Address(address),
    )  # fmt: skip
    change = ConfigChange(
        "default", settings=replace(keyed.engine.config.settings, home_agent=ha), mobile_nodes=fixed(entries)
    )
    node_map = keyed.engine._node_map
    outcome = []
    for attempt in (
        keyed.engine.prepare_change,
        lambda c: whole.engine.prepare(c.applied_to(whole.engine.config)),
    ):
        try:
            outcome.append(attempt(change))
        except ConfigRefused as exc:
            outcome.append(exc.app_tag)
    if isinstance(outcome[0], str) or isinstance(outcome[1], str):
        assert outcome[0] == outcome[1]
        return
    assert outcome[0].rebind == outcome[1].rebind and outcome[0].port == outcome[1].port
    keyed.engine.apply(outcome[0])
    whole.engine.apply(outcome[1])
    if outcome[0].entries is not None:  # in place (a pool node moving pools takes the whole path)
        assert keyed.engine._node_map is node_map
    assert keyed.engine._policy == whole.engine._policy and keyed.engine._port == whole.engine._port
    assert keyed.engine.config.settings == whole.engine.config.settings
    assert unordered(keyed.plane.drain(keyed.engine)) == unordered(whole.plane.drain(whole.engine))
    assert state(keyed.engine) == state(whole.engine)
    replies = [h.register("10.1.0.3", "203.0.113.9", lifetime=1800) for h in (keyed, whole)]
    assert (replies[0].code, replies[0].lifetime) == (replies[1].code, replies[1].lifetime)


def test_a_settings_change_alone_walks_no_entry() -> None:
    h = harness(
        vr_config([node(f"mn{i}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(1000)], address=HA)
    )
    node_map, ha = h.engine._node_map, h.engine.config.home_agent
    assert ha is not None
    settings = replace(h.engine.config.settings, home_agent=replace(ha, max_lifetime=60))
    prepared = h.engine.prepare_change(ConfigChange("default", settings=settings))
    assert prepared.entries is not None and prepared.by_home == {}  # no index rebuilt
    h.engine.apply(prepared)
    assert h.engine._node_map is node_map and h.engine._policy is not None
    assert h.engine._policy.max_lifetime == 60
    assert h.register("10.1.0.3", "203.0.113.5", lifetime=1800).lifetime == 60
