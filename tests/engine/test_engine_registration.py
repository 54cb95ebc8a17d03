"""Binding rules of RFC 5944 §3.8.2.2 and every reply code, through HomeAgent.handle_datagram."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest
from engine_helpers import HA, KEY, NONCE, build_request, harness, node, sa, vr_config

from ha.dataplane.intents import (
    EnsureTunnel,
    GratuitousArp,
    ProxyArp,
    ReleaseTunnel,
    RemoveHomeRoute,
    SetHomeRoute,
)
from ha.engine.bindings import BindingTable
from ha.engine.config import ForeignAgent
from ha.engine.events import BindingCreated, BindingRemoved, RegistrationDenied, RemovalReason
from ha.protocol import RequestFlags, pull_registration_reply
from ha.protocol.constants import AuthAlgorithm, Encapsulation, ReverseTunnelPolicy

HOME = "10.1.0.1"
COA1, COA2, COA3 = "203.0.113.5", "203.0.113.6", "203.0.113.7"
S, T, G = int(RequestFlags.S), int(RequestFlags.T), int(RequestFlags.G)


def addr(text: str) -> IPv4Address:
    return IPv4Address(text)


def test_first_registration_creates_tunnel_route_proxy_arp_and_garp():
    h = harness()
    reply = h.register(HOME, COA1, lifetime=300)
    assert (reply.code, reply.lifetime, reply.home_address, reply.home_agent) == (0, 300, addr(HOME), HA)
    assert h.plane.drain(h.engine) == [
        EnsureTunnel(addr(COA1)),
        SetHomeRoute(addr(HOME), (addr(COA1),), False),
        ProxyArp(addr(HOME), True),
        GratuitousArp(addr(HOME)),
    ]
    assert h.events() == [BindingCreated(addr(HOME), addr(COA1), "mn1", None, 300)]
    info = h.engine.binding((addr(HOME), addr(COA1)))
    assert info is not None and info.lifetime_granted == 300 and info.mobile_node == "mn1"
    # counted when the data plane sends it (this recording plane sends nothing)
    assert h.engine.statistics.accepted == 1 and h.engine.statistics.gratuitous_arps_sent == 0


def test_reply_is_authenticated_with_the_mobile_node_key():
    h = harness()
    reply = h.register(HOME, COA1)
    ext = reply.mn_ha_auth
    assert ext is not None and ext.spi == 256
    from ha.protocol.auth import verify

    assert verify(reply.raw, ext, sa())
    assert not verify(reply.raw, ext, sa(key=b"x" * 16))


def test_reregistration_same_coa_refreshes_without_intents():
    h = harness()
    h.register(HOME, COA1, lifetime=100)
    h.plane.drain(h.engine)
    h.events()
    h.clock.advance(50)
    reply = h.register(HOME, COA1, lifetime=100)
    assert reply.code == 0
    assert h.plane.drain(h.engine) == []
    assert h.events() == []
    assert h.expire(60) == 0  # the first expiry (t+100) is stale now
    assert h.expire(41) == 1


def test_handover_replaces_the_binding_and_moves_the_route():
    h = harness()
    h.register(HOME, COA1)
    h.plane.drain(h.engine)
    h.events()
    reply = h.register(HOME, COA2)
    assert reply.code == 0
    assert h.plane.drain(h.engine) == [
        EnsureTunnel(addr(COA2)),
        SetHomeRoute(addr(HOME), (addr(COA2),), False),
        ReleaseTunnel(addr(COA1)),
    ]
    assert h.events() == [
        BindingRemoved(addr(HOME), addr(COA1), "mn1", RemovalReason.REPLACED),
        BindingCreated(addr(HOME), addr(COA2), "mn1", None, 600),
    ]
    assert [b.care_of_address for b in h.engine.bindings_of(addr(HOME))] == [addr(COA2)]
    assert h.plane.routes == {addr(HOME): (addr(COA2),)}
    assert h.plane.tunnels_refs == {(addr(COA2), "ip-in-ip"): 1}


def test_simultaneous_bindings_up_to_the_limit_then_135():
    h = harness(vr_config([node("mn1", HOME)], address=HA, simultaneous_bindings=2))
    assert h.register(HOME, COA1, flags=S).code == 0
    assert h.register(HOME, COA2, flags=S).code == 0
    h.plane.drain(h.engine)
    assert h.plane.routes[addr(HOME)] == (addr(COA1), addr(COA2))
    denied = h.register(HOME, COA3, flags=S)
    assert denied.code == 135
    assert h.engine.binding_count == 2
    assert h.engine.statistics.denied_by_code[135] == 1
    # Re-registering an existing CoA with S is a refresh, not a third binding.
    assert h.register(HOME, COA2, flags=S).code == 0
    # Without S, a registration replaces every binding (RFC 5944 §3.8.2.2).
    assert h.register(HOME, COA3).code == 0
    h.plane.drain(h.engine)
    assert h.plane.routes[addr(HOME)] == (addr(COA3),)
    assert h.plane.tunnels_refs == {(addr(COA3), "ip-in-ip"): 1}


def test_s_bit_without_support_is_code_1_and_replaces():
    h = harness()  # simultaneous-bindings 0
    h.register(HOME, COA1)
    reply = h.register(HOME, COA2, flags=S)
    assert reply.code == 1
    assert [b.care_of_address for b in h.engine.bindings_of(addr(HOME))] == [addr(COA2)]
    assert h.engine.statistics.accepted_no_simultaneous == 1
    assert h.engine.bindings_of(addr(HOME))[0].accepted_no_simultaneous


def test_deregister_one_care_of_address():
    h = harness(vr_config([node("mn1", HOME)], address=HA, simultaneous_bindings=3))
    h.register(HOME, COA1, flags=S)
    h.register(HOME, COA2, flags=S)
    h.plane.drain(h.engine)
    h.events()
    reply = h.register(HOME, COA1, lifetime=0)
    assert (reply.code, reply.lifetime) == (0, 0)
    assert h.plane.drain(h.engine) == [
        SetHomeRoute(addr(HOME), (addr(COA2),), False),
        ReleaseTunnel(addr(COA1)),
    ]
    assert h.events() == [BindingRemoved(addr(HOME), addr(COA1), "mn1", RemovalReason.DEREGISTERED)]
    assert h.engine.statistics.deregistrations_received == 1


def test_deregister_all_when_care_of_address_is_home_address():
    h = harness(vr_config([node("mn1", HOME)], address=HA, simultaneous_bindings=3))
    h.register(HOME, COA1, flags=S)
    h.register(HOME, COA2, flags=S)
    h.plane.drain(h.engine)
    reply = h.register(HOME, HOME, lifetime=0, source=HOME)
    assert reply.code == 0
    intents = h.plane.drain(h.engine)
    assert intents[0] == RemoveHomeRoute(addr(HOME))
    assert set(intents[1:3]) == {ReleaseTunnel(addr(COA1)), ReleaseTunnel(addr(COA2))}
    assert intents[3:] == [ProxyArp(addr(HOME), False), GratuitousArp(addr(HOME), for_mobile_node=True)]
    assert h.engine.binding_count == 0
    assert h.plane.routes == {} and h.plane.tunnels_refs == {} and h.plane.proxy_arp == set()


def test_deregistering_an_unknown_binding_is_accepted_and_changes_nothing():
    h = harness()
    reply = h.register(HOME, COA1, lifetime=0)
    assert reply.code == 0 and h.engine.drain_intents() == []


@pytest.mark.parametrize(
    ("requested", "host_max", "vr_max", "granted"),
    [(600, None, 36000, 600), (600, 100, 36000, 100), (600, None, 60, 60), (50, 100, 60, 50)],
)
def test_lifetime_is_the_minimum_of_requested_host_and_vr_limits(requested, host_max, vr_max, granted):
    config = vr_config([node("mn1", HOME, max_lifetime=host_max)], address=HA, max_lifetime=vr_max)
    h = harness(config)
    assert h.register(HOME, COA1, lifetime=requested).lifetime == granted
    assert h.engine.get_timer() == pytest.approx(h.clock.now + granted, abs=0.01)


def test_infinite_lifetime_is_granted_only_when_permitted_and_never_expires():
    h = harness(vr_config([node("mn1", HOME)], address=HA, max_lifetime=0xFFFF))
    assert h.register(HOME, COA1, lifetime=0xFFFF).lifetime == 0xFFFF
    assert h.engine.get_timer() is None
    assert h.expire(10**6) == 0
    assert h.engine.binding((addr(HOME), addr(COA1))).lifetime_remaining == 0xFFFF
    # With the default maximum (36000) an infinite request is shortened.
    h2 = harness()
    assert h2.register(HOME, COA1, lifetime=0xFFFF).lifetime == 36000


def test_nonce_retransmission_is_idempotent_and_the_next_request_needs_the_new_nonce():
    config = vr_config([node("mn1", HOME, security_associations=[sa(replay_protection=NONCE)])], address=HA)
    h = harness(config)
    # First contact: the MN does not know a nonce yet -> 133 carrying the HA nonce in the high half.
    first = h.register(HOME, COA1, identification=0x0000000000000001)
    assert first.code == 133
    ha_nonce = first.identification >> 32
    assert first.identification & 0xFFFFFFFF == 1
    data = build_request(home=HOME, coa=COA1, identification=(ha_nonce << 32) | 2)
    accepted = h.send(data, source=COA1)
    reply = pull_registration_reply(accepted.data)
    assert reply.code == 0
    h.plane.drain(h.engine)
    retransmitted = h.send(data, source=COA1)
    assert retransmitted.data == accepted.data
    assert h.engine.drain_intents() == []
    # A new request must echo the newest nonce.
    new_nonce = reply.identification >> 32
    assert h.register(HOME, COA1, identification=(ha_nonce << 32) | 3).code == 133
    fresh = h.register(HOME, COA1, identification=(h.engine._nodes["mn1"].ha_nonce << 32) | 4)
    assert new_nonce != ha_nonce and fresh.code == 0


def test_replayed_old_request_is_133_with_ha_time_in_high_bits():
    h = harness()
    old = h.clock.timestamp()
    newer = h.clock.timestamp()
    h.register(HOME, COA1, identification=newer)
    reply = h.register(HOME, COA2, identification=old)
    assert reply.code == 133
    assert reply.identification & 0xFFFFFFFF == old & 0xFFFFFFFF
    assert [b.care_of_address for b in h.engine.bindings_of(addr(HOME))] == [addr(COA1)]
    assert h.engine.statistics.identification_mismatches == 1
    (violation,) = list(h.engine.violations)
    assert violation.reason == "bad-identifier" and violation.spi == 256


def test_bad_authenticator_is_131_and_logged():
    h = harness()
    reply = h.register(HOME, COA1, key=b"k" * 16)
    assert reply.code == 131
    assert h.engine.binding_count == 0
    assert h.engine.statistics.mn_auth_failures == 1
    (violation,) = list(h.engine.violations)
    assert (violation.peer, violation.spi, violation.reason) == (addr(COA1), 256, "bad-authenticator")
    assert violation.home_address == addr(HOME) and violation.time == h.clock.wall
    (event,) = h.events()
    assert event == RegistrationDenied(131, addr(COA1), 256, addr(HOME))


def test_unknown_mobile_node_is_131():
    h = harness()
    assert h.register("10.9.9.9", COA1).code == 131


def test_keyed_md5_security_association():
    config = vr_config(
        [node("mn1", HOME, security_associations=[sa(algorithm=AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX)])],
        address=HA,
    )
    h = harness(config)
    assert h.register(HOME, COA1, algorithm=AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX).code == 0
    assert h.register(HOME, COA2, algorithm=AuthAlgorithm.HMAC_MD5).code == 131


def test_care_of_access_is_129():
    config = vr_config([node("mn1", HOME)], address=HA, care_of_access=[IPv4Network("203.0.113.0/28")])
    h = harness(config)
    assert h.register(HOME, COA1).code == 0
    assert h.register(HOME, "198.51.100.9").code == 129
    per_host = vr_config(
        [node("mn1", HOME, care_of_access=[IPv4Network("198.51.100.0/24")])],
        address=HA,
        care_of_access=[IPv4Network("203.0.113.0/28")],
    )
    h2 = harness(per_host)
    assert h2.register(HOME, "198.51.100.9").code == 0
    assert h2.register(HOME, COA1).code == 129


def test_unknown_home_agent_address_is_136_from_our_unicast_address():
    h = harness(vr_config([node("mn1", HOME)], address=HA, home_prefix=IPv4Network("192.0.2.0/24")))
    out = h.send(
        build_request(home=HOME, coa=COA1, identification=h.clock.timestamp(), ha="192.0.2.255"),
        source=COA1,
        received_on=addr("192.0.2.255"),
    )
    reply = pull_registration_reply(out.data)
    assert reply.code == 136 and reply.home_agent == HA and out.source == HA
    out = h.send(
        build_request(home=HOME, coa=COA1, identification=h.clock.timestamp(), ha="255.255.255.255"),
        source=COA1,
        received_on=addr("255.255.255.255"),
    )
    assert pull_registration_reply(out.data).code == 136 and out.source == HA
    assert h.register(HOME, COA1, ha="192.0.2.99").code == 136
    assert h.engine.binding_count == 0
    assert h.engine.statistics.unknown_ha == 3


@pytest.mark.parametrize(
    ("policy", "flags", "code"),
    [
        (ReverseTunnelPolicy.DISABLED, T, 137),
        (ReverseTunnelPolicy.REQUIRED, 0, 138),
        (ReverseTunnelPolicy.REQUIRED, T, 0),
        (ReverseTunnelPolicy.ALLOWED, T, 0),
    ],
)
def test_reverse_tunnel_policy(policy, flags, code):
    h = harness(vr_config([node("mn1", HOME)], address=HA, reverse_tunnel=policy))
    assert h.register(HOME, COA1, flags=flags).code == code
    if code == 0:
        h.plane.drain(h.engine)
        assert h.plane.reverse[addr(HOME)] is bool(flags & T)


def test_unoffered_encapsulation_is_139_and_gre_when_offered():
    h = harness()
    assert h.register(HOME, COA1, flags=G).code == 139
    config = vr_config(
        [node("mn1", HOME)], address=HA, encapsulations={Encapsulation.IP_IN_IP, Encapsulation.GRE}
    )
    h2 = harness(config)
    assert h2.register(HOME, COA1, flags=G).code == 0
    assert h2.plane.drain(h2.engine)[0] == EnsureTunnel(addr(COA1), Encapsulation.GRE)


def test_max_bindings_is_130_for_new_bindings_only():
    config = vr_config([node("mn1", HOME), node("mn2", "10.1.0.2")], address=HA, max_bindings=1)
    h = harness(config)
    assert h.register(HOME, COA1).code == 0
    assert h.register("10.1.0.2", COA2).code == 130
    assert h.register(HOME, COA2).code == 0  # a handover does not add a binding
    assert h.engine.statistics.denied_by_code[130] == 1


def test_foreign_agent_security_association_requires_extension_34():
    fa = ForeignAgent(addr("198.51.100.20"), [sa(spi=300, key=bytes(range(16)))])
    h = harness(vr_config([node("mn1", HOME)], address=HA, foreign_agents=[fa]))
    assert h.register(HOME, COA1, source="198.51.100.20").code == 132
    assert h.engine.statistics.fa_auth_failures == 1
    ok = h.register(HOME, COA1, source="198.51.100.20", fa=(300, bytes(range(16))))
    assert ok.code == 0 and ok.fa_ha_auth is not None
    assert h.engine.bindings_of(addr(HOME))[0].source_address == addr("198.51.100.20")


def test_poorly_formed_request_is_134_and_unknown_extension_is_discarded():
    h = harness()
    data = build_request(home=HOME, coa=COA1, identification=1)
    truncated = data[:-3]
    out = h.send(truncated, source=COA1)
    assert pull_registration_reply(out.data).code == 134
    assert h.send(data + bytes([5, 0]), source=COA1) is None  # unknown type <= 127: discard
    assert h.send(b"\x03" + bytes(30), source=COA1) is None  # a reply is not for us
    stats = h.engine.statistics
    assert (stats.poorly_formed, stats.discarded) == (1, 2)


def test_reply_addressing_swaps_addresses_and_ports():
    h = harness()
    out = h.send(
        build_request(home=HOME, coa=COA1, identification=h.clock.timestamp()), source="198.51.100.8"
    )
    assert out.destination == ("198.51.100.8", h.source_port) and out.source == HA and out.source_port == 434


def test_unsigned_request_with_key_zero_is_rejected():
    h = harness()
    data = build_request(home=HOME, coa=COA1, identification=h.clock.timestamp(), sign=False)
    assert pull_registration_reply(h.send(data, source=COA1).data).code == 131


def test_bindings_after_resumes_by_key():
    nodes = [node(f"mn{i}", f"10.1.0.{i}") for i in range(1, 8)]
    h = harness(vr_config(nodes, address=HA))
    for i in (5, 2, 7, 1, 3, 6, 4):
        assert h.register(f"10.1.0.{i}", COA1).code == 0
    page1 = h.engine.bindings_after(None, limit=3)
    page2 = h.engine.bindings_after(page1[-1].key, limit=3)
    page3 = h.engine.bindings_after(page2[-1].key, limit=3)
    homes = [str(b.home_address) for b in page1 + page2 + page3]
    assert homes == [f"10.1.0.{i}" for i in range(1, 8)]
    # Resuming after a key that has since been removed still continues in order.
    h.engine.clear_bindings(home_address=addr("10.1.0.3"))
    assert str(h.engine.bindings_after(page1[-1].key, limit=1)[0].home_address) == "10.1.0.4"


def test_two_mobile_nodes_share_one_tunnel_per_care_of_address():
    h = harness(vr_config([node("mn1", HOME), node("mn2", "10.1.0.2")], address=HA))
    h.register(HOME, COA1)
    h.register("10.1.0.2", COA1)
    h.plane.drain(h.engine)
    assert h.plane.tunnels() and h.plane.tunnels()[0].binding_count == 2
    h.register(HOME, COA1, lifetime=0)
    h.plane.drain(h.engine)
    assert h.plane.tunnels_refs == {(addr(COA1), "ip-in-ip"): 1}


def test_nai_identifies_a_static_mobile_node_and_is_echoed():
    config = vr_config([node("mn1", HOME, nai="alice@example.net")], address=HA)
    h = harness(config)
    reply = h.register(HOME, COA1, nai="alice@example.net")
    assert reply.code == 0 and reply.nai == "alice@example.net"
    assert h.engine.bindings_of(addr(HOME))[0].nai == "alice@example.net"


def test_key_is_per_mobile_node():
    config = vr_config(
        [node("mn1", HOME), node("mn2", "10.1.0.2", security_associations=[sa(key=b"2" * 16)])]
    )
    h = harness(config)
    assert h.register("10.1.0.2", COA1, key=KEY).code == 131
    assert h.register("10.1.0.2", COA1, key=b"2" * 16).code == 0


def test_an_accepted_request_the_engine_cannot_carry_out_is_answered_128(monkeypatch, caplog):
    """In production (not under test) an internal failure while applying an acceptance gives a signed
    128, not an exception; tests/engine/test_engine_conformance.py checks the test-suite setting."""
    h = harness()
    h.engine._raise_internal_errors = False

    def broken_add(self, binding):
        raise RuntimeError("binding table is broken")

    monkeypatch.setattr(BindingTable, "add", broken_add)
    ident = h.clock.timestamp()
    reply = h.register(HOME, COA1, identification=ident)
    assert reply.code == 128 and reply.lifetime == 0 and reply.identification == ident
    from ha.protocol.auth import verify

    assert reply.mn_ha_auth is not None and verify(reply.raw, reply.mn_ha_auth, sa())
    assert h.engine.binding_count == 0 and h.plane.drain(h.engine) == []
    stats = h.engine.statistics
    assert (stats.accepted, stats.denied, stats.denied_by_code[128], stats.replies_sent) == (0, 1, 1, 1)
    assert h.events() == [RegistrationDenied(128, addr(COA1), 256, addr(HOME))]
    assert "not carried out" in caplog.text and "binding table is broken" in caplog.text
    assert h.engine.statistics.internal_errors == 1

    monkeypatch.undo()  # the engine keeps working; the refused request's identification stays used
    assert h.register(HOME, COA1, identification=ident).code == 133
    assert h.register(HOME, COA1).code == 0 and h.engine.binding_count == 1


def test_a_configuration_change_reaches_a_peer_already_seen():
    """Per-peer look-ups are cached: a foreign agent configured later must still be required."""
    h = harness()
    assert h.register(HOME, COA1, source=COA2).code == 0
    fa = ForeignAgent(addr(COA2), security_associations=[sa(700, key=b"f" * 16)])
    h.engine.apply(h.engine.prepare(vr_config([node("mn1", HOME)], foreign_agents=[fa])))
    assert h.register(HOME, COA1, source=COA2).code == 132
    assert h.register(HOME, COA1, source=COA2, fa=(700, b"f" * 16)).code == 0
