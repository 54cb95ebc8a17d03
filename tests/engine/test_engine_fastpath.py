"""The C path (ha/_fastpath.c, ha/fastpath.py) changes nothing but speed: random operation sequences,
with bursts of several datagrams handled as one batch, through an engine served by the C path, one
by the Python renewal cache alone and one without any cache (the reference) give the same replies
(byte for byte, same addresses), counters, bindings, replay state, intents, events and binding
changes after every step; bad input through the C path gets the Python path's answer."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from engine_helpers import HA, KEY, build_request, node, sa, vr_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_renewal_cache import HOMES, OTHER_KEY, SOURCES, Pair, config, operations, requests

from ha import _fastpath as C  # make test builds it (gcc, python3-dev, libssl-dev): no skip
from ha import fastpath
from ha.engine.home_agent import HomeAgent
from ha.protocol.constants import AuthAlgorithm

PORT = 434


class Triple(Pair):
    """Three engines fed the same datagrams: the C path, the Python renewal cache, no cache.  A
    burst is one wake-up: the C engine takes its unicast datagrams as one batch (broadcasts between
    them by the wildcard socket's Python path), the others one by one; RADIUS answers after it."""

    def __init__(self, make_config=config) -> None:
        super().__init__(cached=(True, True, False))
        if make_config is not config:
            self.engines = [HomeAgent(make_config(), renewal_cache=c) for c in (True, True, False)]
            for engine in self.engines:
                engine.fast_renewals = False
                engine.track_changes()
                engine.track_replay()
        self.engines[0].fast_renewals = True  # whatever MIPHA_FASTPATH says: the C path's engine
        self.batch = C.Batch(-1, 256)

    def deliver(self, datagram) -> None:
        self.burst([datagram])

    def burst(self, datagrams: list[tuple[bytes, int, bool, str]]) -> None:
        clock = self.clock
        now, wall = clock.now, clock.wall

        def out(o):
            return None if o is None else (o.data, o.destination, o.source, o.source_port)

        def arrived(broadcast: bool) -> IPv4Address:
            return IPv4Address("192.0.2.255") if broadcast else HA

        replies: list[list] = [[], [], []]
        for i, engine in enumerate(self.engines[1:], 1):
            for data, source, broadcast, _radius in datagrams:
                replies[i].append(out(engine.handle_datagram(
                    data, source=SOURCES[source], received_on=arrived(broadcast), now=now, wallclock=wall,
                    destination_port=PORT,
                )))  # fmt: skip
        engine = self.engines[0]
        run: list[tuple[bytes, tuple[str, int]]] = []

        def slow(data: bytes, source: tuple[str, int]) -> None:
            replies[0].append(out(engine.handle_datagram(
                data, source=source, received_on=HA, now=now, wallclock=wall, destination_port=PORT
            )))  # fmt: skip

        def flush_run() -> None:
            if run:
                self.batch.load([(d, int(IPv4Address(s[0])), s[1]) for d, s in run])
                fastpath.run(
                    self.batch, engine, engine.renewal_cache, now=now, wallclock=wall, received_on=HA,
                    port=PORT, slow=slow,
                )  # fmt: skip
                run.clear()

        for data, source, broadcast, _radius in datagrams:
            if broadcast:
                flush_run()
                replies[0].append(out(engine.handle_datagram(
                    data, source=SOURCES[source], received_on=arrived(True), now=now, wallclock=wall,
                    destination_port=PORT,
                )))  # fmt: skip
            else:
                run.append((data, SOURCES[source]))
        flush_run()
        # the C path's replies leave after the burst, the Python path's in order: the same multiset
        fast = [(d, to, HA, PORT) for d, to in self.batch.take()]
        got = sorted([r for r in replies[0] if r is not None] + fast, key=repr)
        assert got == sorted([r for r in replies[1] if r is not None], key=repr)
        assert replies[1] == replies[2]
        self.hits += len(fast)
        if datagrams:
            self.radius(datagrams[-1][3])

    def apply(self, operation) -> None:
        if operation[0] != "burst":
            return super().apply(operation)
        datagrams = []
        for op in operation[1]:
            if op[0] == "request":
                self.asked[op[1]] = tuple(op[1:])
                datagrams.append(self.datagram(*op[1:]))
            elif (asked := self.asked.get(op[1])) is not None:
                datagrams.append(self.datagram(*asked[:4], op[2], "good", *asked[6:]))
        self.burst(datagrams)
        self.compare()


#: A burst: several requests of the same wake-up, most of them repeats (fresh, or the same
#: Identification again: a retransmission inside the burst).
again_in_burst = st.tuples(
    st.just("again"), st.sampled_from((0, 0, 0, 1, 2, 3, 4, 5)), st.sampled_from(("fresh",) * 4 + ("repeat",))
)
unicast_requests = requests.map(lambda r: (*r[:8], False, *r[9:]))
bursts = st.tuples(
    st.just("burst"),
    st.lists(st.one_of(again_in_burst, again_in_burst, unicast_requests), min_size=2, max_size=8),
)
fast_operations = st.one_of(operations, operations, bursts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fast_operations, min_size=20, max_size=60))
def test_the_c_path_answers_as_the_python_path(ops) -> None:
    triple = Triple()
    for operation in ops:
        triple.apply(operation)


def test_repeats_are_answered_in_c_and_changes_take_the_python_path() -> None:
    """The property above must exercise the C path: repeats of a remembered renewal are answered in C,
    in a burst too; a new policy, a corrupted or replayed request and a rekeyed node are not; AAA
    subscribers' renewals (with their NAI) are answered in C too."""
    triple = Triple()
    good = ("request", 0, 0, 600, 0, "fresh", "good", 0, False)
    for _ in range(4):
        triple.apply(good)
    assert triple.hits == 3  # the first creates the binding (remembered: its repeats renew it in place)
    triple.apply(("burst", [("again", 0, "fresh"), ("again", 0, "fresh"), ("again", 0, "repeat")]))
    assert triple.hits == 5  # the third repeats the second's Identification: 133 from Python
    assert triple.engines[0].statistics.denied_by_code.get(133) == 1
    triple.apply(("configure", {"max_lifetime": 300}))
    triple.apply(good)
    assert triple.hits == 5
    triple.apply(good)
    assert triple.hits == 6
    triple.apply(("request", 0, 0, 600, 0, "fresh", "corrupt", 0, False))
    triple.apply(("rekey", OTHER_KEY))
    triple.apply(good)  # 131: signed with the old key
    assert triple.hits == 6
    triple.apply(("rekey", KEY))  # (without its NAI: the requests below name none)
    triple.apply(("request", 0, 0, 600, 0, "fresh", "good", 3, False, 1, False))  # RFC 3519, from a NAT
    for _ in range(3):
        triple.apply(("again", 0))
    assert triple.hits == 9  # the tunnelled binding replaced the plain one: remembered, then repeated
    assert triple.engines[0].statistics.udp_tunnel_accepted == 4
    aaa = ("request", 5, 0, 600, 0, "fresh", "good", 0, False, 0, True, False, "pool")  # a subscriber
    for _ in range(4):
        triple.apply(aaa)
    assert triple.hits == 12, triple.engines[0].aaa_counters.accepted


def test_a_change_of_the_data_plane_or_a_withdrawn_binding_ends_the_entries_answered_in_c() -> None:
    """Entries answered in C are trusted without their checks of Python state only while nothing but
    renewals ran since they last held (HomeAgent._generation): a data plane that can no longer reverse
    tunnel (T is then refused, 137), or that refused a binding's tunnel (withdrawn), sends the repeats
    to the Python path, which answers as the engine without a cache does."""
    from ha.dataplane.base import Capabilities

    triple = Triple()
    reverse = ("request", 0, 0, 600, 0x02, "fresh", "good", 0, False)  # T: reverse tunnelling
    for _ in range(3):
        triple.apply(reverse)
    triple.apply(("burst", [("again", 0, "fresh")] * 2))
    assert triple.hits == 4
    triple.apply(("capabilities", Capabilities(reverse_tunnel=False)))
    triple.apply(("burst", [("again", 0, "fresh")] * 2))
    assert triple.hits == 4 and triple.engines[0].statistics.denied_by_code.get(137) == 2
    triple.apply(("capabilities", Capabilities()))
    for _ in range(3):
        triple.apply(reverse)
    assert triple.hits == 6
    triple.apply(("plane-fails", 0))
    triple.apply(("burst", [("again", 0, "fresh")] * 2))  # a new binding, then a repeat of it in C
    assert triple.hits == 7 and triple.engines[0].binding_count == 1


def keyed_config():
    nodes = [
        node(
            "mn0",
            HOMES[0],
            security_associations=[sa(key=KEY, algorithm=AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX)],
        ),
        node("mn1", HOMES[1], security_associations=[sa(key=bytes(range(80)))]),  # HMAC, key > 64 bytes
    ]
    return vr_config(nodes, replay_tolerance=7)


@pytest.mark.parametrize("who", [0, 1])
def test_keyed_md5_and_long_hmac_keys_are_answered_in_c_as_in_python(who) -> None:
    triple = Triple(keyed_config)
    key = (KEY, bytes(range(80)))[who]
    algorithm = (AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX, AuthAlgorithm.HMAC_MD5)[who]
    for _ in range(5):
        data = build_request(
            home=HOMES[who],
            coa="203.0.113.5",
            identification=triple.clock.timestamp(),
            key=key,
            algorithm=algorithm,
        )
        triple.burst([(data, 0, False, "static")])
        triple.compare()
    assert triple.hits == 4  # every repeat of the first registration
    assert triple.engines[0].statistics.accepted == 5


# --- bad input: the C path never crashes and answers as Python does --------------------------------


def _mutations(data: bytes):
    yield data[:-1]
    yield data + b"\0"
    yield data[:24]
    yield data[:16]
    yield b""
    yield b"\x01"
    yield data + bytes(2000)
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        yield bytes(flipped)


def test_every_bit_flip_truncation_and_extension_of_a_cached_renewal_gets_the_python_answer() -> None:
    """Every single-bit flip of a remembered renewal (one per bit), truncations and extensions: never
    answered in C (none verifies), each gets the Python path's answer, with the same state after."""
    triple = Triple()
    good = ("request", 0, 0, 600, 0, "fresh", "good", 0, False)
    for _ in range(3):
        triple.apply(good)
    hits = triple.hits
    base = triple.datagram(0, 0, 600, 0, "fresh", "good", 0, False)[0]
    for bad in _mutations(base):
        triple.clock.advance(0.001)
        triple.burst([(bad, 0, False, "static")])
        triple.compare()
    assert triple.hits == hits
    triple.apply(good)  # a flip in the extension bytes dropped the entry (as Python does): remembered again
    triple.apply(good)
    assert triple.hits == hits + 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=12), st.randoms(use_true_random=False)
)
def test_random_datagrams_mixed_with_renewals_get_the_python_answers(noise, rnd) -> None:
    """Arbitrary bytes, and renewals with random bytes spliced in, in one batch with good renewals."""
    triple = Triple()
    for _ in range(2):
        triple.apply(("request", 0, 0, 600, 0, "fresh", "good", 0, False))
    datagrams = []
    for blob in noise:
        good = triple.datagram(0, 0, 600, 0, "fresh", "good", 0, False)[0]
        at = rnd.randrange(len(good))
        spliced = good[:at] + blob + good[at + len(blob) :]
        datagrams += [(blob, 0, False, "static"), (spliced, 0, False, "static"), (good, 0, False, "static")]
        triple.clock.advance(0.01)
    triple.burst(datagrams[:32])
    triple.compare()


def test_batch_api_refuses_out_of_range_use() -> None:
    batch = C.Batch(-1, 64)
    with pytest.raises(ValueError):
        batch.load([(b"x", 0, 0)] * (C.SLOTS + 1))
    with pytest.raises(ValueError):
        batch.load([(b"x", 1 << 32, 0)])
    with pytest.raises(ValueError):
        batch.load([(bytes(70000), 0, 0)])
    batch.load([(b"x", 0x7F000001, 5)])
    assert batch.datagram(0) == (b"x", ("127.0.0.1", 5))
    with pytest.raises(IndexError):
        batch.datagram(1)
    with pytest.raises(IndexError):
        batch.process(2, {}, 0.0)
    assert batch.process(0, {}, 0.0) == ([], 0)
    with pytest.raises(ValueError):
        batch.commit(1)
    assert batch.send() == 0 and batch.take() == []
    with pytest.raises(ValueError):
        C.Entry(b"", False, KEY, 7, 0, b"short", b"", 0, 0)
    with pytest.raises(ValueError):
        C.Entry(bytes(2000), False, KEY, 7, 0, bytes(12), b"", 0, 0)
    entry = C.Entry(b"", False, KEY, 7, 0, bytes(12), b"", 0, 0)
    with pytest.raises(TypeError):
        entry.__init__(b"", False, KEY, 7, 0, bytes(12), b"", 0, 0)
    assert struct.unpack("!Q", struct.pack("!Q", entry.last))[0] == 0


def test_the_c_extension_is_built_and_the_switch_selects_the_python_path(monkeypatch) -> None:
    """make test installs gcc, python3-dev and libssl-dev: the extension must be there, and
    MIPHA_FASTPATH=0 must select the Python path."""
    monkeypatch.delenv(fastpath.ENV, raising=False)
    assert fastpath.enabled() and fastpath.status().startswith("C path")
    assert HomeAgent(config()).fast_renewals
    assert not HomeAgent(config(), renewal_cache=False).fast_renewals
    monkeypatch.setenv(fastpath.ENV, "0")
    assert not fastpath.enabled()
    assert not HomeAgent(config()).fast_renewals
    assert fastpath.status() == "Python path: MIPHA_FASTPATH=0"
