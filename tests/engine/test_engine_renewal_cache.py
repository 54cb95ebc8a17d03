"""The renewal cache (ha/engine/renewals.py) changes nothing but speed: random operation sequences
through an engine with it and one without give the same replies, counters, bindings, replay state,
intents, events and binding changes after every step."""

from __future__ import annotations

from ipaddress import IPv4Address

from engine_helpers import HA, KEY, Clock, build_request, node, sa, vr_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ha.engine.config import AddressPool, ConfigChange, ForeignAgent
from ha.engine.home_agent import HomeAgent
from ha.protocol import UdpTunnelRequest, ntp_timestamp
from ha.protocol.constants import ReplayProtection
from ha.protocol.udp_tunnel import NatTraversalPolicy

OTHER_KEY = bytes(range(16))
HOMES = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "0.0.0.0")  # mn0, mn1 (nonce), mn2 (FA relayed), pool
COAS = ("203.0.113.5", "203.0.113.6", "10.1.0.1")  # the last is mn0's home address (deregister all)
#: The third is a foreign agent; the last two a NAT (two mappings: the NAT lost its state).
SOURCES = (
    ("203.0.113.5", 434),
    ("203.0.113.6", 434),
    ("198.51.100.1", 434),
    ("198.51.100.77", 4500),
    ("198.51.100.77", 4501),
)
FLAGS = (0, 0x02, 0x80, 0x10)  # none, T, S, B (as RequestFlags values)
#: RFC 3519 UDP Tunnel Requests a request may carry: none, plain, forced (F), GRE inside UDP (142).
TUNNELS = (
    None,
    UdpTunnelRequest(),
    UdpTunnelRequest(flags=UdpTunnelRequest.F_FORCE),
    UdpTunnelRequest(encapsulation=47),
)
NAT_POLICIES = (
    NatTraversalPolicy(),
    NatTraversalPolicy(keepalive_interval=25),
    NatTraversalPolicy(enabled=False),
)


def config(*, max_lifetime: int = 600, enabled: bool = True, tolerance: int = 7, simultaneous: int = 0,
           max_bindings: int | None = None, key: bytes = KEY, nat: int = 0):  # fmt: skip
    nodes = [
        node("mn0", HOMES[0], security_associations=[sa(key=key)]),
        node("mn1", HOMES[1], security_associations=[sa(replay_protection=ReplayProtection.NONCE)]),
        node("mn2", HOMES[2]),
        node("mn3", None, nai="mn3@example.net", address_pool="pool"),
    ]
    return vr_config(
        nodes,
        pools=[AddressPool("pool", [("10.2.0.1", "10.2.0.9")])],
        foreign_agents=[ForeignAgent(IPv4Address(SOURCES[2][0]), {700: sa(700)})],
        max_lifetime=max_lifetime,
        enabled=enabled,
        replay_tolerance=tolerance,
        simultaneous_bindings=simultaneous,
        max_bindings=max_bindings,
        nat_traversal=NAT_POLICIES[nat],
    )


requests = st.tuples(
    st.just("request"),
    st.sampled_from((0, 0, 0, 1, 2, 3)),  # node
    st.sampled_from((0, 0, 1, 2)),  # care-of address
    st.sampled_from((600, 600, 600, 60, 0, 0xFFFF)),  # lifetime
    st.sampled_from(FLAGS),
    st.sampled_from(("fresh",) * 6 + ("repeat", "stale", "future")),  # Identification
    st.sampled_from(("good",) * 6 + ("corrupt", "other key")),  # authenticator
    st.sampled_from((0, 0, 1, 2, 3, 3, 4)),  # source
    st.sampled_from((False,) * 5 + (True,)),  # sent to the broadcast address instead
    st.sampled_from((0, 0, 1, 1, 2, 3)),  # UDP Tunnel Request (TUNNELS)
)
again = st.tuples(
    st.just("again"), st.sampled_from((0, 0, 0, 1, 2, 3))
)  # a node's last request, new Identification
others = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from((0.5, 30, 70, 700))),
    st.tuples(
        st.just("configure"),
        st.fixed_dictionaries(
            {
                "max_lifetime": st.sampled_from((600, 300)),
                "enabled": st.sampled_from((True, True, True, False)),
                "tolerance": st.sampled_from((7, 255)),
                "simultaneous": st.sampled_from((0, 2)),
                "max_bindings": st.sampled_from((None, 1, 3)),
                "key": st.sampled_from((KEY, KEY, KEY, OTHER_KEY)),
                "nat": st.sampled_from((0, 0, 1, 2)),
            }
        ),
    ),
    st.tuples(st.just("rekey"), st.sampled_from((KEY, OTHER_KEY))),  # one node changed, entry by entry
    st.tuples(st.just("clear"), st.booleans()),
)
#: Half the operations repeat a node's last request (what fills and uses the cache), 3 in 10 are new
#: requests, the rest change time, the configuration or the bindings.
operations = st.integers(0, 9).flatmap(lambda k: again if k < 5 else requests if k < 8 else others)


class Pair:
    """Two engines fed the same inputs: with the renewal cache and without (the reference)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.engines = []
        for cached in (True, False):
            nonces = iter(range(0x1000, 0x7FFFFFFF))
            engine = HomeAgent(config(), nonce=lambda n=nonces: next(n), renewal_cache=cached)
            engine.track_changes()
            engine.track_replay()
            self.engines.append(engine)
        self.last: dict[int, int] = {}
        self.asked: dict[int, tuple] = {}
        self.hits = 0

    def both(self, call):
        results = [call(engine) for engine in self.engines]
        assert results[0] == results[1]
        return results[0]

    def request(self, who, coa, lifetime, flags, ident, auth, source, broadcast, tunnel=0) -> None:
        clock = self.clock
        if ident == "repeat" and who in self.last:
            identification = self.last[who]
        elif ident == "stale":
            identification = ntp_timestamp(clock.wall - 100)
        elif ident == "future":
            identification = ntp_timestamp(clock.wall + 100)
        else:
            identification = clock.timestamp()
        self.last[who] = identification
        data = build_request(
            home=HOMES[who],
            coa=COAS[coa],
            identification=identification,
            lifetime=lifetime,
            flags=flags,
            key=OTHER_KEY if auth == "other key" else KEY,
            nai="mn3@example.net" if who == 3 else None,
            fa=(700, KEY) if source == 2 else None,
            udp_tunnel=TUNNELS[tunnel],
        )
        if auth == "corrupt":
            data = data[:-1] + bytes([data[-1] ^ 1])
        received_on = IPv4Address("192.0.2.255") if broadcast else HA
        cached = self.engines[0]._renewals
        entry = cached.get(data[:16]) if cached else None
        before = entry.identification if entry is not None else None

        def send(engine: HomeAgent):
            out = engine.handle_datagram(
                data, source=SOURCES[source], received_on=received_on, now=clock.now, wallclock=clock.wall
            )
            return None if out is None else (out.data, out.destination, out.source, out.source_port)

        self.both(send)
        if entry is not None and cached.get(data[:16]) is entry and entry.identification != before:
            self.hits += 1  # answered from the entry (the full path would have made a new one)

    def apply(self, operation) -> None:
        kind, *args = operation
        if kind == "request":
            self.asked[args[0]] = tuple(args)
            self.request(*args)
        elif kind == "again":
            asked = self.asked.get(args[0])
            if asked is not None:
                self.request(*asked[:4], "fresh", "good", *asked[6:])
        elif kind == "advance":
            self.clock.advance(args[0])
            self.both(lambda e: e.handle_timer(self.clock.now))
        elif kind == "configure":
            self.both(lambda e: e.apply(e.prepare(config(**args[0]))) or True)
        elif kind == "rekey":
            changed = node("mn0", HOMES[0], security_associations=[sa(key=args[0])])
            change = ConfigChange("default", mobile_nodes={"mn0": changed})
            self.both(lambda e: e.apply(e.prepare_change(change)) or True)
        elif kind == "clear":
            home = IPv4Address(HOMES[0]) if args[0] else None
            self.both(lambda e: e.clear_bindings(home_address=home))
        self.compare()

    def compare(self) -> None:
        now = self.clock.now
        self.both(lambda e: e.statistics.as_dict())
        self.both(lambda e: [e.node_statistics(f"mn{i}") for i in range(4)])
        self.both(lambda e: [e.replay_state(f"mn{i}") for i in range(4)])
        self.both(lambda e: e.bindings_after(None, 100, now=now))
        self.both(lambda e: (e.get_timer(), len(e)))
        self.both(lambda e: e.drain_intents())
        self.both(lambda e: e.drain_events())
        self.both(lambda e: sorted(e.take_replay_changes(), key=str))
        self.both(lambda e: (lambda c, r: (sorted(c), [(b.home_address, b.care_of_address) for b in r]))(
            *e.take_binding_changes()
        ))  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, min_size=20, max_size=60))
def test_the_cache_answers_as_the_full_path(ops) -> None:
    pair = Pair()
    for operation in ops:
        pair.apply(operation)


def test_repeats_of_a_renewal_in_place_are_answered_from_the_cache() -> None:
    """The property above must exercise the cache: a renewal in place is remembered, its repeats are
    answered from the entry, and a configuration change or a changed request takes the full path."""
    pair = Pair()
    good = ("request", 0, 0, 600, 0, "fresh", "good", 0, False)
    for _ in range(4):
        pair.apply(good)
    assert pair.hits == 2  # the first creates the binding, the second renews it in place
    pair.apply(("configure", {"max_lifetime": 300}))
    pair.apply(good)  # new policy: the entry no longer holds, the full path answers (and remembers)
    assert pair.hits == 2
    pair.apply(good)
    assert pair.hits == 3
    pair.apply(("request", 0, 0, 600, 0, "repeat", "good", 0, False))  # replayed Identification: 133
    pair.apply(("request", 0, 0, 600, 0, "fresh", "corrupt", 0, False))  # 131
    pair.apply(good)
    assert pair.hits == 4
    pair.apply(("rekey", OTHER_KEY))  # a keyed change of the node: its old key must not verify
    pair.apply(good)
    assert pair.hits == 4
    assert pair.engines[0].statistics.as_dict() == pair.engines[1].statistics.as_dict()


def test_an_expired_binding_is_not_renewed_from_the_cache() -> None:
    pair = Pair()
    good = ("request", 0, 0, 60, 0, "fresh", "good", 0, False)
    pair.apply(good)
    pair.apply(good)
    pair.apply(("advance", 70))  # expired and removed
    pair.apply(good)  # a new binding, with its intents and events, as the full path makes it
    assert pair.hits == 0
    assert [b.lifetime_granted for b in pair.engines[0].bindings_after(None, 10)] == [60]


def test_a_repeat_from_elsewhere_or_under_another_spi_takes_the_full_path() -> None:
    """The entry is the peer's and the SPI's it was made for: the same bytes from another source (a
    new NAT mapping, or through the foreign agent) or naming another SPI are decided afresh."""
    pair = Pair()
    for _ in range(3):
        pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 0, False))
    assert pair.hits == 1
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 1, False))  # another source: replied there
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 2, False))  # relayed by the foreign agent
    assert pair.hits == 1
    for _ in range(3):  # back from the first source: remembered again by the first, then answered
        pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 0, False))
    assert pair.hits == 3
    clock = pair.clock
    data = build_request(home=HOMES[0], coa=COAS[0], identification=clock.timestamp(), spi=300)
    replies = [
        e.handle_datagram(data, source=SOURCES[0], received_on=HA, now=clock.now, wallclock=clock.wall)
        for e in pair.engines
    ]
    assert replies[0] == replies[1] and replies[0] is not None and replies[0].data[1] == 131
    pair.compare()


def test_udp_tunnelled_renewals_are_answered_from_the_cache_and_a_moved_mapping_is_not() -> None:
    """RFC 3519's layout from behind a NAT: repeats from the same mapping come from the entry (with the
    same UDP Tunnel Reply); a new mapping, a new nat-traversal policy or another tunnel request take
    the full path, which moves the tunnel or answers anew."""
    pair = Pair()
    nat = ("request", 0, 0, 600, 0, "fresh", "good", 3, False, 1)
    for _ in range(4):
        pair.apply(nat)
    assert pair.hits == 2
    assert pair.engines[0].statistics.udp_tunnel_accepted == 4
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 1))  # the NAT lost its mapping
    assert pair.hits == 2
    assert pair.engines[0].bindings_of(IPv4Address(HOMES[0]))[0].source_port == 4501
    pair.apply(("configure", {"nat": 1}))  # a new keepalive interval: the reply's extension 44 changes
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 1))
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 1))
    assert pair.hits == 3
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 2))  # forced: another request
    pair.apply(("configure", {"nat": 2}))  # UDP tunnelling disabled: 142 from the full path
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 2))
    assert pair.hits == 3
    assert pair.engines[0].statistics.as_dict() == pair.engines[1].statistics.as_dict()
