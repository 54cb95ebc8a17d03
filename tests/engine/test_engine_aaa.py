"""The engine's AAA side, sans-I/O: look-ups asked for once per NAI, answers turned into verdicts, the
subscriber cache (bounded, kept while bound, restored from its journal form)."""

from __future__ import annotations

import json
import time
from ipaddress import IPv4Address

from ha.aaa.config import AaaConfig, AaaServer
from ha.aaa.profile import AaaProfile
from ha.engine.aaa import AaaAccepted, AaaRejected, AaaUnavailable, Subscriber
from ha.engine.config import (
    AddressPool,
    HomeAgentConfig,
    MobileNode,
    SecurityAssociation,
    VirtualRouterConfig,
)
from ha.engine.home_agent import HomeAgent
from ha.mn.session import UNSPECIFIED, MobileNodeSession
from ha.protocol import pull_registration_reply
from ha.protocol.constants import AuthAlgorithm

HA = IPv4Address("192.0.2.1")
KEY = b"aaa-mn-ha-key-0123456789"
SA = SecurityAssociation(300, KEY)
COA = IPv4Address("198.51.100.7")
SOURCE = ("198.51.100.7", 434)


def engine(
    *, authentication: str = "local-then-aaa", cache_size: int = 100, max_pending: int = 4096
) -> HomeAgent:
    return HomeAgent(
        VirtualRouterConfig(
            "vr",
            home_agent=HomeAgentConfig(HA, max_lifetime=600, authentication=authentication),
            address_pools=[AddressPool("pool", ((IPv4Address("10.0.0.1"), IPv4Address("10.0.0.9")),))],
            mobile_nodes=[
                MobileNode(
                    "local", home_address=IPv4Address("10.9.0.1"), nai="local@x", security_associations=[SA]
                )
            ],
            aaa=AaaConfig(
                servers=(AaaServer(IPv4Address("127.0.0.1"), b"s"),),
                cache_size=cache_size,
                max_pending=max_pending,
            ),
        )
    )


def profile(
    nai: str, *, home: str | None = None, pool: str | None = "pool", lifetime: int | None = None
) -> AaaProfile:
    return AaaProfile(
        nai, 300, KEY, AuthAlgorithm.HMAC_MD5, IPv4Address(home) if home else None, None if home else pool,
        lifetime, "erx", "framed-ip-address" if home else "framed-pool",
    )  # fmt: skip


def node(nai: str) -> MobileNodeSession:
    return MobileNodeSession(HA, UNSPECIFIED, COA, SA, nai=nai)


def send(ha: HomeAgent, mn: MobileNodeSession, **kw):
    data = mn.build(mn.next_identification(time.time()), **kw)
    return ha.handle_datagram(data, source=SOURCE, received_on=HA, now=10.0, wallclock=time.time())


def answer(ha: HomeAgent, nai: str, outcome):
    return ha.handle_aaa_answer(nai, outcome, now=10.5, wallclock=time.time())


def test_one_lookup_per_nai_and_the_latest_request_is_answered() -> None:
    ha = engine()
    mn = node("a@x")
    assert send(ha, mn) is None and send(ha, mn) is None and send(ha, mn) is None
    lookups = ha.drain_aaa_lookups()
    assert [lookup.nai for lookup in lookups] == ["a@x"] and lookups[0].chap is None
    assert ha.aaa_counters.absorbed == 2 and ha.aaa_pending == 1
    out = answer(ha, "a@x", AaaAccepted(profile("a@x", lifetime=60)))
    reply = pull_registration_reply(out.data)
    assert reply.code == 0 and reply.lifetime == 60  # the ERX lifetime caps the 600 asked for
    assert reply.mn_ha_auth is not None and reply.mn_ha_auth.spi == 300
    assert ha.statistics.requests_received == 3 and ha.statistics.accepted == 1
    # a renewal is decided from the cache: no look-up
    assert pull_registration_reply(send(ha, mn).data).code == 0
    assert ha.drain_aaa_lookups() == []


def test_configured_nodes_never_go_to_radius_in_local_then_aaa() -> None:
    ha = engine()
    mn = MobileNodeSession(HA, UNSPECIFIED, COA, SA, nai="local@x")
    assert pull_registration_reply(send(ha, mn).data).code == 0
    assert ha.drain_aaa_lookups() == []


def test_reject_is_131_unsigned_and_unavailable_is_130() -> None:
    ha = engine()
    send(ha, node("r@x"))
    send(ha, node("u@x"))
    rejected = pull_registration_reply(answer(ha, "r@x", AaaRejected("Access-Reject")).data)
    assert rejected.code == 131 and rejected.mn_ha_auth is None
    unavailable = pull_registration_reply(answer(ha, "u@x", AaaUnavailable("no answer")).data)
    assert unavailable.code == 130 and unavailable.mn_ha_auth is None
    assert ha.aaa_subscribers == 0
    assert answer(ha, "r@x", AaaRejected("late")) is None  # nothing waits any more


def test_framed_ip_inside_a_pool_or_of_a_configured_node_is_129() -> None:
    ha = engine()
    for nai, home in (("p@x", "10.0.0.3"), ("c@x", "10.9.0.1")):
        send(ha, node(nai))
        assert pull_registration_reply(answer(ha, nai, AaaAccepted(profile(nai, home=home))).data).code == 129
    assert ha.aaa_subscribers == 0


def test_cache_is_bounded_and_forgets_a_node_with_its_last_binding() -> None:
    ha = engine(cache_size=1)
    first, second = node("1@x"), node("2@x")
    send(ha, first)
    assert pull_registration_reply(answer(ha, "1@x", AaaAccepted(profile("1@x"))).data).code == 0
    send(ha, second)
    assert pull_registration_reply(answer(ha, "2@x", AaaAccepted(profile("2@x"))).data).code == 130
    home = first.home_address = ha.bindings_after()[0].home_address
    assert pull_registration_reply(send(ha, first, lifetime=0, care_of_address=home).data).code == 0
    assert ha.aaa_subscribers == 0 and ha.pool_usage("pool").in_use == 0
    send(ha, second)
    assert pull_registration_reply(answer(ha, "2@x", AaaAccepted(profile("2@x"))).data).code == 0


def test_pending_limit_is_130() -> None:
    ha = engine(max_pending=1)
    send(ha, node("1@x"))
    reply = pull_registration_reply(send(ha, node("2@x")).data)
    assert reply.code == 130 and reply.mn_ha_auth is None
    assert ha.aaa_counters.overflows == 1 and ha.aaa_pending == 1 and len(ha.drain_aaa_lookups()) == 1


def test_no_reachable_server_is_130_at_once_without_a_look_up() -> None:
    """The shell says every server failed and waits for a Status-Server answer: no look-up is asked for,
    the request is denied 130 in its own burst; configured nodes are unaffected; then asked again."""
    ha = engine()
    ha.set_aaa_unreachable("every RADIUS server failed")
    reply = pull_registration_reply(send(ha, node("1@x")).data)
    assert reply.code == 130 and reply.mn_ha_auth is None
    assert ha.drain_aaa_lookups() == [] and ha.aaa_pending == 0 and ha.aaa_counters.unavailable == 1
    local = MobileNodeSession(HA, IPv4Address("10.9.0.1"), COA, SA, nai="local@x")
    assert pull_registration_reply(send(ha, local).data).code == 0
    ha.set_aaa_unreachable(None)
    assert send(ha, node("1@x")) is None and len(ha.drain_aaa_lookups()) == 1


def test_restored_subscriber_renews_without_radius() -> None:
    ha = engine()
    mn = node("a@x")
    send(ha, mn)
    answer(ha, "a@x", AaaAccepted(profile("a@x", home="10.5.0.5")))
    binding = ha.bindings_after()[0]
    saved = ha.subscriber(binding.mobile_node).to_dict()
    assert Subscriber.from_dict(saved).profile == profile("a@x", home="10.5.0.5")

    class Record:
        home_address, care_of_address, mobile_node = "10.5.0.5", str(COA), binding.mobile_node
        source_address, source_port, lifetime, registered_at = SOURCE[0], 434, 600, time.time()
        identification, flags, encapsulation, nai, aaa = binding.identification, 0, "ip-in-ip", "a@x", saved

    fresh = engine()
    assert fresh.restore_binding(Record(), now=1.0, wallclock=time.time())
    info = fresh.bindings_after()[0]
    assert (info.authentication, info.key_source, info.address_source) == ("aaa", "erx", "framed-ip-address")
    assert pull_registration_reply(send(fresh, mn).data).code == 0
    assert fresh.drain_aaa_lookups() == []


def test_a_cached_renewal_is_in_place_and_a_new_answer_from_radius_changes_the_binding() -> None:
    """A journal writes a renewal in place as a short line that keeps the subscriber the binding's
    record carries: the engine reports a cached node's renewal so, but a binding whose subscriber RADIUS
    answered anew (MN-AAA, here with another key) as changed: written whole, with the new key."""
    ha = engine()
    ha.track_changes()
    mn = node("a@x")
    send(ha, mn)
    assert ha.drain_aaa_lookups()[0].chap is None
    assert pull_registration_reply(answer(ha, "a@x", AaaAccepted(profile("a@x"))).data).code == 0
    changed, renewed = ha.take_binding_changes()
    assert len(changed) == 1 and renewed == []
    key = changed[0]
    assert pull_registration_reply(send(ha, mn).data).code == 0  # cached: no RADIUS
    changed, renewed = ha.take_binding_changes()
    assert changed == [] and [(b.home_address << 32) | b.care_of_address for b in renewed] == [key]

    secret = b"mn-aaa-secret"
    assert send(ha, MobileNodeSession(HA, UNSPECIFIED, COA, SA, nai="a@x", mn_aaa_secret=secret)) is None
    assert [lookup.chap is not None for lookup in ha.drain_aaa_lookups()] == [True]
    other = AaaProfile("a@x", 301, b"another-key-0123456789", AuthAlgorithm.HMAC_MD5, None, "pool", None,
                       "erx", "framed-pool")  # fmt: skip
    assert pull_registration_reply(answer(ha, "a@x", AaaAccepted(other)).data).code == 0
    changed, renewed = ha.take_binding_changes()
    assert changed == [key] and renewed == []
    assert ha.subscriber("aaa:a@x").profile == other


def test_journal_json_is_to_dict_as_json() -> None:
    """The journal's text of a subscriber (written field by field) reads back as its ``to_dict``, for
    each kind of value a field can hold (escapes in the NAI and the pool name, absent values)."""
    profiles = [
        AaaProfile('quote"é@x', 300, KEY, AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX, IPv4Address("10.5.0.5"),
                   None, 120, "erx", "framed-ip-address"),
        AaaProfile("b@x", 65536, KEY, AuthAlgorithm.HMAC_MD5, None, 'po"ol\\', None, "3gpp2", "framed-pool"),
    ]  # fmt: skip
    for p in profiles:
        subscriber = Subscriber(p, 0x5F00000100000001, 1_790_000_000.123456)
        assert json.loads(subscriber.journal_json()) == subscriber.to_dict()
        assert Subscriber.from_dict(json.loads(subscriber.journal_json())).profile == p
