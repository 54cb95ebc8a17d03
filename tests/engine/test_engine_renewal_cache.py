"""The renewal cache (ha/engine/renewals.py) changes nothing but speed: random operation sequences
through an engine with it and one without give the same replies, counters, bindings, replay state,
intents, events and binding changes after every step — configured nodes by home address and by NAI,
AAA subscribers (RADIUS answers given to both engines alike), pool addresses, UDP tunnels,
configuration changes (the authentication mode and the AAA cache's size too), expiry, Disconnect-
Requests (``clear_bindings`` as mipha/aaa.py calls it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from ipaddress import IPv4Address

from engine_helpers import HA, KEY, Clock, build_request, node, sa, vr_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ha.aaa.config import AaaConfig, AaaServer
from ha.aaa.profile import AaaProfile
from ha.dataplane.base import Capabilities
from ha.dataplane.intents import GratuitousArp
from ha.engine.aaa import AaaAccepted, AaaRejected, AaaUnavailable
from ha.engine.config import AddressPool, ConfigChange, ForeignAgent
from ha.engine.home_agent import HomeAgent
from ha.mn.session import MobileNodeSession
from ha.protocol import UdpTunnelRequest, ntp_timestamp
from ha.protocol.constants import AuthAlgorithm, ReplayProtection
from ha.protocol.udp_tunnel import NatTraversalPolicy

OTHER_KEY = bytes(range(16))
#: mn0, mn1 (nonce), mn2 (FA relayed), mn3 (pool, by NAI), then two AAA subscribers: a4 (Framed-IP-
#: Address 10.3.0.4, or Framed-Pool by another answer), a5 (Framed-Pool); a request may name the pool's
#: first address instead (what a pool node renews with once assigned it).
HOMES = ("10.1.0.1", "10.1.0.2", "10.1.0.3", "0.0.0.0", "0.0.0.0", "0.0.0.0")
POOL_FIRST = "10.2.0.1"
#: The NAI each node's requests carry: mn0 may name itself by NAI or not, mn3 and AAA nodes always do.
NAIS = ("mn0@example.net", None, None, "mn3@example.net", "a4@example.net", "a5@example.net")
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
#: What the data plane can do (HomeAgent.set_capabilities): everything, or neither S, T nor UDP tunnels.
CAPABILITIES = (
    Capabilities(),
    Capabilities(simultaneous_bindings=False, reverse_tunnel=False, udp_tunnels=False),
)


#: RADIUS's answers: ERX key + Framed-IP-Address, the same with a lifetime cap, Framed-Pool, another
#: key, Access-Reject, every server timed out.
ANSWERS = ("static", "capped", "pool", "other key", "reject", "unavailable")
AUTHENTICATIONS = ("local-then-aaa", "local-then-aaa", "aaa", "local")


def answer(nai: str, kind: str):
    if kind == "reject":
        return AaaRejected("Access-Reject")
    if kind == "unavailable":
        return AaaUnavailable("no answer")
    key = OTHER_KEY if kind == "other key" else KEY
    static = kind in ("static", "capped", "other key")
    home = IPv4Address("10.3.0.4") if static and nai.startswith("a4") else None
    return AaaAccepted(
        AaaProfile(nai, 256, key, AuthAlgorithm.HMAC_MD5, home, None if home else "pool",
                   60 if kind == "capped" else None, "erx", "framed-ip-address" if home else "framed-pool")
    )  # fmt: skip


def config(*, max_lifetime: int = 600, enabled: bool = True, tolerance: int = 7, simultaneous: int = 0,
           max_bindings: int | None = None, key: bytes = KEY, nat: int = 0,
           authentication: str = "local-then-aaa", cache_size: int = 4):  # fmt: skip
    nodes = [
        node("mn0", HOMES[0], nai=NAIS[0], security_associations=[sa(key=key)]),
        node("mn1", HOMES[1], security_associations=[sa(replay_protection=ReplayProtection.NONCE)]),
        node("mn2", HOMES[2]),
        node("mn3", None, nai=NAIS[3], address_pool="pool"),
    ]
    vr = vr_config(
        nodes,
        pools=[AddressPool("pool", [("10.2.0.1", "10.2.0.9")])],
        foreign_agents=[ForeignAgent(IPv4Address(SOURCES[2][0]), {700: sa(700)})],
        max_lifetime=max_lifetime,
        enabled=enabled,
        replay_tolerance=tolerance,
        simultaneous_bindings=simultaneous,
        max_bindings=max_bindings,
        nat_traversal=NAT_POLICIES[nat],
        authentication=authentication,
    )
    return replace(
        vr, aaa=AaaConfig(servers=(AaaServer(IPv4Address("127.0.0.1"), b"s"),), cache_size=cache_size)
    )


WHO = (0, 0, 0, 1, 2, 3, 4, 4, 5)
requests = st.tuples(
    st.just("request"),
    st.sampled_from(WHO),  # node
    st.sampled_from((0, 0, 1, 2)),  # care-of address
    st.sampled_from((600, 600, 600, 60, 0, 0xFFFF)),  # lifetime
    st.sampled_from(FLAGS),
    st.sampled_from(("fresh",) * 6 + ("repeat", "stale", "future")),  # Identification
    st.sampled_from(("good",) * 6 + ("corrupt", "other key")),  # authenticator
    st.sampled_from((0, 0, 1, 2, 3, 3, 4)),  # source
    st.sampled_from((False,) * 5 + (True,)),  # sent to the broadcast address instead
    st.sampled_from((0, 0, 1, 1, 2, 3)),  # UDP Tunnel Request (TUNNELS)
    st.sampled_from((True, True, False)),  # the NAI when the node has one (AAA nodes: always)
    st.sampled_from((False, False, True)),  # the pool's first address as home address, not the node's
    st.sampled_from(ANSWERS[:3] * 3 + ANSWERS[3:]),  # RADIUS's answer, if asked
)
again = st.tuples(st.just("again"), st.sampled_from(WHO))  # a node's last request, new Identification
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
                "authentication": st.sampled_from(AUTHENTICATIONS),
                "cache_size": st.sampled_from((4, 4, 1)),
            }
        ),
    ),
    st.tuples(st.just("rekey"), st.sampled_from((KEY, OTHER_KEY))),  # one node changed, entry by entry
    st.tuples(st.just("clear"), st.booleans()),
    st.tuples(st.just("capabilities"), st.sampled_from(CAPABILITIES)),
    st.tuples(st.just("plane-fails"), st.integers(0, 3)),  # the data plane refused one home's intents
    st.tuples(st.just("disconnect"), st.sampled_from((4, 5)), st.booleans()),  # by NAI, or Framed-IP
    # an MN-AAA request: RADIUS answers again for a (maybe bound) subscriber, perhaps with another key
    # (a stale Identification: RADIUS accepts, the decision answers 133 and the binding stays; lifetime
    # 600: the same first 16 bytes as the node's usual requests)
    st.tuples(
        st.just("mn-aaa"),
        st.sampled_from((4, 5)),
        st.sampled_from(ANSWERS),
        st.booleans(),
        st.sampled_from((600, 300)),
    ),
)
#: Half the operations repeat a node's last request (what fills and uses the cache), 3 in 10 are new
#: requests, the rest change time, the configuration or the bindings.
operations = st.integers(0, 9).flatmap(lambda k: again if k < 5 else requests if k < 8 else others)


class Pair:
    """Two engines fed the same inputs: with the renewal cache and without (the reference).
    (tests/engine/test_engine_fastpath.py adds a third, served by the C path.)"""

    def __init__(self, cached: tuple[bool, ...] = (True, False)) -> None:
        self.clock = Clock()
        self.engines = []
        for with_cache in cached:
            nonces = iter(range(0x1000, 0x7FFFFFFF))
            engine = HomeAgent(config(), nonce=lambda n=nonces: next(n), renewal_cache=with_cache)
            engine.fast_renewals = False  # the C path's own test turns it on for its engine
            engine.track_changes()
            engine.track_replay()
            self.engines.append(engine)
        self.last: dict[int, int] = {}
        self.asked: dict[int, tuple] = {}
        self.hits = 0
        self.hits_by: Counter[str] = Counter()  # by node name (AAA subscribers: aaa:<NAI>)

    def both(self, call):
        results = [call(engine) for engine in self.engines]
        assert all(result == results[0] for result in results[1:])
        return results[0]

    def request(self, *args, **kwargs) -> None:
        self.deliver(self.datagram(*args, **kwargs))

    def datagram(self, who, coa, lifetime, flags, ident, auth, source, broadcast, tunnel=0, named=True,
                 pool_home=False, radius="static") -> tuple[bytes, int, bool, str]:  # fmt: skip
        """The request's bytes, its source (SOURCES), whether it was broadcast, RADIUS's answer."""
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
        nai = NAIS[who] if named or who >= 3 else None
        data = build_request(
            home=POOL_FIRST if pool_home else HOMES[who],
            coa=COAS[coa],
            identification=identification,
            lifetime=lifetime,
            flags=flags,
            key=OTHER_KEY if auth == "other key" else KEY,
            nai=nai,
            fa=(700, KEY) if source == 2 else None,
            udp_tunnel=TUNNELS[tunnel],
        )
        if auth == "corrupt":
            data = data[:-1] + bytes([data[-1] ^ 1])
        return data, source, broadcast, radius

    def deliver(self, datagram: tuple[bytes, int, bool, str]) -> None:
        data, source, broadcast, radius = datagram
        clock = self.clock
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
        self.radius(radius)
        if entry is not None and cached.get(data[:16]) is entry and entry.identification != before:
            self.hits += 1  # answered from the entry (the full path would have made a new one)
            self.hits_by[entry.node.name] += 1

    def radius(self, kind: str) -> None:
        """RADIUS answers every look-up the request made, both engines alike."""
        clock = self.clock
        for lookup in self.both(lambda e: [(x.nai, x.home_address, x.chap) for x in e.drain_aaa_lookups()]):
            outcome = answer(lookup[0], kind)
            self.both(
                lambda e, nai=lookup[0], outcome=outcome: (
                    lambda out: None if out is None else (out.data, out.destination, out.source)
                )(e.handle_aaa_answer(nai, outcome, now=clock.now, wallclock=clock.wall))
            )

    def mn_aaa(self, who: int, kind: str, stale: bool, lifetime: int) -> None:
        clock = self.clock
        session = MobileNodeSession(HA, IPv4Address(HOMES[who]), IPv4Address(COAS[0]), sa(), nai=NAIS[who],
                                    mn_aaa_secret=b"mn-aaa-secret")  # fmt: skip
        identification = ntp_timestamp(clock.wall - 100) if stale else clock.timestamp()
        data = session.build(identification, lifetime=lifetime)
        self.both(
            lambda e: e.handle_datagram(
                data, source=SOURCES[0], received_on=HA, now=clock.now, wallclock=clock.wall
            )
        )
        self.radius(kind)

    def apply(self, operation) -> None:
        kind, *args = operation
        if kind == "request":
            self.asked[args[0]] = tuple(args)
            self.request(*args)
        elif kind == "again":
            asked = self.asked.get(args[0])
            if asked is not None:
                self.request(*asked[:4], "fresh", "good", *asked[6:])
        elif kind == "mn-aaa":
            self.mn_aaa(*args)
        elif kind == "disconnect":  # a Disconnect-Request naming the NAI, or the Framed-IP-Address
            nai, home = NAIS[args[0]], IPv4Address("10.3.0.4") if args[0] == 4 else IPv4Address(POOL_FIRST)
            self.both(lambda e: e.clear_bindings(nai=nai) if args[1] else e.clear_bindings(home_address=home))
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
        elif kind == "capabilities":
            self.both(lambda e: e.set_capabilities(args[0]))
        elif kind == "plane-fails":
            homes = sorted({b.home_address for b in self.engines[0].bindings_after(None, 100)})
            if homes:
                failed = [GratuitousArp(homes[args[0] % len(homes)])]
                self.both(lambda e: e.data_plane_failed(failed, "refused by the test"))
        self.compare()

    def compare(self) -> None:
        now = self.clock.now
        self.both(lambda e: e.statistics.as_dict())
        self.both(lambda e: [getattr(e.aaa_counters, name) for name in e.aaa_counters.__slots__])
        names = [f"mn{i}" for i in range(4)] + ["aaa:" + nai for nai in NAIS[4:]]
        self.both(lambda e: [e.node_statistics(name) for name in names])
        self.both(lambda e: [e.replay_state(name) for name in names])
        self.both(lambda e: sorted((n, s.to_dict()) for n, s in e.subscribers()))
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
    assert pair.hits == 3  # the first creates the binding (remembered: its repeats renew it in place)
    pair.apply(("configure", {"max_lifetime": 300}))
    pair.apply(good)  # new policy: the entry no longer holds, the full path answers (and remembers)
    assert pair.hits == 3
    pair.apply(good)
    assert pair.hits == 4
    pair.apply(("request", 0, 0, 600, 0, "repeat", "good", 0, False))  # replayed Identification: 133
    pair.apply(("request", 0, 0, 600, 0, "fresh", "corrupt", 0, False))  # 131
    pair.apply(good)
    assert pair.hits == 5
    pair.apply(("rekey", OTHER_KEY))  # a keyed change of the node: its old key must not verify
    pair.apply(good)
    assert pair.hits == 5
    assert pair.engines[0].statistics.as_dict() == pair.engines[1].statistics.as_dict()


def test_an_expired_binding_is_not_renewed_from_the_cache() -> None:
    pair = Pair()
    good = ("request", 0, 0, 60, 0, "fresh", "good", 0, False)
    pair.apply(good)
    pair.apply(good)
    assert pair.hits == 1
    pair.apply(("advance", 70))  # expired and removed
    pair.apply(good)  # a new binding, with its intents and events, as the full path makes it
    assert pair.hits == 1
    assert [b.lifetime_granted for b in pair.engines[0].bindings_after(None, 10)] == [60]


def test_a_repeat_from_elsewhere_or_under_another_spi_takes_the_full_path() -> None:
    """The entry is the peer's and the SPI's it was made for: the same bytes from another source (a
    new NAT mapping, or through the foreign agent) or naming another SPI are decided afresh."""
    pair = Pair()
    for _ in range(3):
        pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 0, False))
    assert pair.hits == 2
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 1, False))  # another source: replied there
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 2, False))  # relayed by the foreign agent
    assert pair.hits == 2
    for _ in range(3):  # back from the first source: remembered again by the first, then answered
        pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 0, False))
    assert pair.hits == 4
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
    assert pair.hits == 3
    assert pair.engines[0].statistics.udp_tunnel_accepted == 4
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 1))  # the NAT lost its mapping
    assert pair.hits == 3
    assert pair.engines[0].bindings_of(IPv4Address(HOMES[0]))[0].source_port == 4501
    pair.apply(("configure", {"nat": 1}))  # a new keepalive interval: the reply's extension 44 changes
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 1))
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 1))
    assert pair.hits == 4
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 2))  # forced: another request
    pair.apply(("configure", {"nat": 2}))  # UDP tunnelling disabled: 142 from the full path
    pair.apply(("request", 0, 0, 600, 0, "fresh", "good", 4, False, 2))
    assert pair.hits == 4
    assert pair.engines[0].statistics.as_dict() == pair.engines[1].statistics.as_dict()


def aaa_request(who: int, radius: str = "static", **kw) -> tuple:
    """A request of AAA node ``who`` (4: a4, 5: a5) directly from 203.0.113.5, RADIUS answering ``radius``."""
    fields = dict(coa=0, lifetime=600, flags=0, source=0, tunnel=0, pool_home=False)
    fields.update(kw)
    return ("request", who, fields["coa"], fields["lifetime"], fields["flags"], "fresh", "good",
            fields["source"], False, fields["tunnel"], True, fields["pool_home"], radius)  # fmt: skip


def test_aaa_renewals_are_answered_from_the_cache_until_radius_answers_anew() -> None:
    """A cached subscriber's renewals (NAI before MN-HA, its key from the AAA cache) come from the entry;
    once RADIUS answered again with another key (MN-AAA, here decided 133: the binding stays), the old
    key must not verify: the subscriber is another object, the full path answers 131."""
    pair = Pair()
    good = aaa_request(4)
    for _ in range(4):
        pair.apply(good)
    assert pair.hits_by == {"aaa:a4@example.net": 3}
    engine = pair.engines[0]
    assert engine.aaa_counters.lookups == 1 and engine.statistics.accepted == 4
    pair.apply(("mn-aaa", 4, "other key", True, 300))  # not the entry's first 16 bytes: it stays
    assert engine.aaa_counters.lookups == 2 and engine.statistics.denied_by_code[133] == 1
    pair.apply(good)
    assert pair.hits == 3 and engine.statistics.denied_by_code[131] == 1
    assert engine.binding_count == 1


def test_pool_and_udp_tunnelled_aaa_renewals_are_answered_from_the_cache() -> None:
    """Framed-Pool subscribers (renewing with 0.0.0.0 or the address they hold), and from behind a NAT
    (NAI, UDP Tunnel Request, MN-HA): the same replies as the full path, from the entry."""
    pair = Pair()
    for request in (
        aaa_request(5),
        aaa_request(5, pool_home=True),
        aaa_request(4, "pool", source=3, tunnel=1),
    ):
        for _ in range(3):
            pair.apply(request)
    # a5: remembered by its first registration, then by the first request naming its address (another
    # entry); a4 by its first registration, from behind the NAT
    assert pair.hits_by == {"aaa:a5@example.net": 4, "aaa:a4@example.net": 2}
    assert pair.engines[0].statistics.udp_tunnel_accepted == 3


def test_a_disconnect_request_expiry_or_local_authentication_ends_an_aaa_entry() -> None:
    """The subscriber goes with its binding (Disconnect-Request by NAI or Framed-IP-Address, expiry) or
    with AAA itself (authentication local): the same request again takes the full path (a new look-up,
    or 131 when AAA is off)."""
    pair = Pair()
    engine = pair.engines[0]
    good = aaa_request(4)
    steps = (
        ("disconnect", 4, True),
        ("disconnect", 4, False),
        ("advance", 700),
        ("configure", {"authentication": "local"}),
    )
    for step in steps:
        hits = pair.hits
        for _ in range(3):
            pair.apply(good)
        assert pair.hits > hits
        hits = pair.hits
        pair.apply(step)
        assert engine.aaa_subscribers == 0 and engine.binding_count == 0
        pair.apply(good)
        assert pair.hits == hits
    assert engine.aaa_counters.lookups == 4 and engine.statistics.denied_by_code[131] == 1
