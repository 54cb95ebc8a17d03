"""Issue 11's registration-path defects, each reproduced through the engine (real datagrams in and out).

Every test here failed before its fix: a signing oracle (131/136 signed without an authentic request),
136 answered before authentication, the per-host max-lifetime overriding a smaller home agent one,
replays that cost the real node a round trip or were answered 0, data plane capabilities unknown to
the decision, and internal errors hidden behind a 128.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address

import pytest
from engine_helpers import HA, NONCE, build_request, harness, node, sa, vr_config

from ha.dataplane.base import Capabilities
from ha.dataplane.intents import Encapsulation as PlaneEncapsulation
from ha.engine.bindings import BindingTable
from ha.engine.errors import ConfigRefused
from ha.engine.events import BindingRemoved, RemovalReason
from ha.engine.home_agent import HomeAgent, InternalError
from ha.protocol import RequestFlags, pull_registration_reply
from ha.protocol.auth import verify
from ha.protocol.constants import Encapsulation

HOME = "10.1.0.1"
COA1 = "198.51.100.7"
COA2 = "203.0.113.9"
SIGNER = sa()


def addr(text: str) -> IPv4Address:
    return IPv4Address(text)


def signed(reply) -> bool:
    """True when the reply carries an MN-HA authenticator that verifies under the node's key."""
    ext = reply.mn_ha_auth
    return ext is not None and verify(reply.raw, ext, SIGNER)


# --- defect 1: no signing oracle ------------------------------------------------------------------


def test_131_for_a_wrong_authenticator_goes_out_unauthenticated():
    h = harness()
    reply = h.register(HOME, COA1, key=b"k" * 16)
    assert reply.code == 131 and reply.mn_ha_auth is None


def test_131_for_an_unknown_spi_goes_out_unauthenticated():
    h = harness()
    reply = h.register(HOME, COA1, spi=999)
    assert reply.code == 131 and reply.mn_ha_auth is None


def test_a_corrupted_copy_of_a_real_request_gets_no_authenticated_denial():
    """The oracle: flip one authenticator bit of the node's own request, race the answer back."""
    h = harness()
    data = bytearray(build_request(home=HOME, coa=COA1, identification=h.clock.timestamp()))
    data[-1] ^= 1
    out = h.send(bytes(data), source=COA1)
    reply = pull_registration_reply(out.data)
    assert reply.code == 131 and not signed(reply)
    assert reply.mn_ha_auth is None


def test_denials_after_authentication_stay_signed():
    h = harness(vr_config([node("mn1", HOME)], address=HA, reverse_tunnel="disabled"))
    reply = h.register(HOME, COA1, flags=int(RequestFlags.T))
    assert reply.code == 137 and signed(reply)


def test_fa_ha_authenticator_only_when_the_foreign_agent_authenticated():
    from ha.engine.config import ForeignAgent

    fa_key = bytes(range(16))
    config = vr_config(
        [node("mn1", HOME)],
        address=HA,
        foreign_agents=[ForeignAgent(addr(COA1), security_associations=[sa(300, fa_key)])],
    )
    h = harness(config)
    wrong = h.register(HOME, COA1, key=b"k" * 16, fa=(300, fa_key))  # MN-HA wrong, FA-HA right
    assert wrong.code == 131 and wrong.mn_ha_auth is None and wrong.fa_ha_auth is not None
    bad_fa = h.register(HOME, COA1, fa=(300, b"x" * 16))  # MN-HA right, FA-HA wrong
    assert bad_fa.code == 132 and signed(bad_fa) and bad_fa.fa_ha_auth is None


# --- defect 2: authenticate before answering 136 --------------------------------------------------


def test_136_only_after_the_request_authenticated():
    h = harness()
    broadcast = "255.255.255.255"
    forged = h.register(HOME, COA1, ha=broadcast, key=b"k" * 16)
    assert forged.code == 131 and forged.mn_ha_auth is None
    real = h.register(HOME, COA1, ha=broadcast)
    assert real.code == 136 and signed(real) and real.home_agent == HA


# --- defect 5: per-host max-lifetime, the smaller wins --------------------------------------------


def test_the_smaller_of_host_and_home_agent_max_lifetime_wins():
    h = harness(vr_config([node("mn1", HOME, max_lifetime=300)], address=HA, max_lifetime=60))
    assert h.register(HOME, COA1, lifetime=600).lifetime == 60


# --- defect 7: replays (RFC 5944 §5.7, §3.6.3) ----------------------------------------------------


def test_a_repeated_timestamp_identification_is_133_and_changes_nothing():
    h = harness()
    data = build_request(home=HOME, coa=COA1, identification=h.clock.timestamp())
    assert pull_registration_reply(h.send(data, source=COA1).data).code == 0
    h.plane.drain(h.engine)
    h.events()
    again = pull_registration_reply(h.send(data, source=COA1).data)
    assert again.code == 133 and signed(again)
    assert h.engine.drain_intents() == [] and h.engine.binding_count == 1
    assert h.engine.statistics.identification_mismatches == 1


def test_a_replayed_nonce_request_does_not_cost_the_real_node_a_round_trip():
    h = harness(vr_config([node("mn1", HOME, security_associations=[sa(replay_protection=NONCE)])]))
    first = h.register(HOME, COA1, identification=1)  # first contact: 133 with a nonce
    nonce1 = first.identification >> 32
    old = build_request(home=HOME, coa=COA1, identification=(nonce1 << 32) | 2)
    accepted = pull_registration_reply(h.send(old, source=COA1).data)
    assert accepted.code == 0
    nonce2 = accepted.identification >> 32
    renewal = build_request(home=HOME, coa=COA1, identification=(nonce2 << 32) | 3)
    assert pull_registration_reply(h.send(renewal, source=COA1).data).code == 0
    nonce3 = h.engine._nodes["mn1"].ha_nonce
    # An attacker replays the older accepted request: 133 (authentic, so signed), new nonce offered ...
    replayed = pull_registration_reply(h.send(old, source=COA1).data)
    assert replayed.code == 133 and signed(replayed)
    # ... and the real node's next request, echoing the nonce it was given, is still accepted.
    real = h.register(HOME, COA1, identification=(nonce3 << 32) | 4)
    assert real.code == 0


def test_an_unchanged_nonce_retransmission_is_answered_again():
    """RFC 5944 §3.6.3: with nonces the unanswered request is resent unchanged, not a new registration."""
    h = harness(vr_config([node("mn1", HOME, security_associations=[sa(replay_protection=NONCE)])]))
    nonce = h.register(HOME, COA1, identification=1).identification >> 32
    data = build_request(home=HOME, coa=COA1, identification=(nonce << 32) | 2)
    first = h.send(data, source=COA1)
    h.plane.drain(h.engine)
    again = h.send(data, source=COA1)
    assert again.data == first.data and h.engine.drain_intents() == []


# --- defects 3 and 4: data plane capabilities -----------------------------------------------------


def test_minimal_encapsulation_is_refused_at_commit():
    h = harness()
    config = vr_config(
        [node("mn1", HOME)],
        address=HA,
        encapsulations=frozenset({Encapsulation.IP_IN_IP, Encapsulation.MINIMAL}),
    )
    with pytest.raises(ConfigRefused) as refused:
        h.engine.prepare(config)
    assert "minimal" in refused.value.message and refused.value.path.endswith("encapsulation")


def test_s_on_a_data_plane_that_cannot_copy_is_code_1():
    h = harness(vr_config([node("mn1", HOME)], address=HA, simultaneous_bindings=3))
    h.engine.set_capabilities(Capabilities(simultaneous_bindings=False))
    assert h.register(HOME, COA1, flags=int(RequestFlags.S)).code == 1
    assert h.register(HOME, COA2, flags=int(RequestFlags.S)).code == 1
    assert [b.care_of_address for b in h.engine.bindings_of(addr(HOME))] == [addr(COA2)]


def test_gre_is_139_on_a_data_plane_without_gre():
    h = harness(
        vr_config(
            [node("mn1", HOME)],
            address=HA,
            encapsulations=frozenset({Encapsulation.IP_IN_IP, Encapsulation.GRE}),
        )
    )
    h.engine.set_capabilities(Capabilities(encapsulations=frozenset({PlaneEncapsulation.IP_IN_IP})))
    assert h.register(HOME, COA1, flags=int(RequestFlags.G)).code == 139


def test_a_binding_the_data_plane_failed_is_withdrawn_counted_and_announced():
    h = harness()
    assert h.register(HOME, COA1).code == 0
    intents = h.engine.drain_intents()
    h.events()
    withdrawn = h.engine.data_plane_failed(intents, "no tunnel device")
    assert withdrawn == 1 and h.engine.binding_count == 0
    assert h.engine.statistics.data_plane_failures == 1
    (event,) = h.events()
    assert isinstance(event, BindingRemoved) and event.reason == RemovalReason.DATA_PLANE_FAILURE


# --- defect 9: internal errors are loud ------------------------------------------------------------


def test_an_internal_error_raises_under_test(monkeypatch):
    h = harness()

    def broken_add(self, binding):
        raise RuntimeError("binding table is broken")

    monkeypatch.setattr(BindingTable, "add", broken_add)
    with pytest.raises(InternalError):
        h.register(HOME, COA1)
    assert h.engine.statistics.internal_errors == 1


def test_in_production_an_internal_error_is_counted_logged_and_answered_128(monkeypatch, caplog):
    nonces = iter(range(0x1000, 0x7FFFFFFF))
    engine = HomeAgent(
        vr_config([node("mn1", HOME)]), nonce=lambda: next(nonces), raise_internal_errors=False
    )
    h = harness()
    h.engine = engine

    def broken_add(self, binding):
        raise RuntimeError("binding table is broken")

    monkeypatch.setattr(BindingTable, "add", broken_add)
    with caplog.at_level(logging.ERROR):
        reply = h.register(HOME, COA1)
    assert reply.code == 128 and engine.statistics.internal_errors == 1
    assert "Traceback" in caplog.text and "binding table is broken" in caplog.text


# --- operator-visible counters --------------------------------------------------------------------


def test_each_violation_names_its_identification_and_reply_and_is_one_log_line(caplog):
    h = harness()
    ident = h.clock.timestamp()
    with caplog.at_level(logging.WARNING, logger="ha.engine.home_agent"):
        assert h.register(HOME, COA1, key=b"k" * 16, identification=ident).code == 131
        assert h.register(HOME, COA2, key=b"k" * 16).code == 131
    first, _second = list(h.engine.violations)
    assert (first.identification, first.reply_code) == (ident, 131)
    assert h.engine.statistics.security_violations_total == 2
    assert {str(peer): totals.count for peer, totals in h.engine.violations.peers.items()} == {
        COA1: 1,
        COA2: 1,
    }
    lines = [r for r in caplog.records if "security violation" in r.getMessage()]
    assert len(lines) == 2 and f"{ident:#018x}" in lines[0].getMessage()


def test_accepted_counts_code_0_only_and_the_new_counters_count_what_happened():
    h = harness(vr_config([node("mn1", HOME)], address=HA))
    assert h.register(HOME, COA1, flags=int(RequestFlags.S)).code == 1  # S not offered
    assert h.register(HOME, COA1).code == 0
    assert h.register(HOME, HOME, lifetime=0).code == 0  # came home
    stats = h.engine.statistics
    assert (stats.accepted, stats.accepted_no_simultaneous) == (2, 1)
    assert (stats.proxy_arps_sent, stats.deregistration_replies_sent) == (1, 1)


def test_a_draining_home_agent_denies_registrations_129_and_still_accepts_deregistrations():
    from dataclasses import replace

    h = harness()
    assert h.register(HOME, COA1).code == 0
    config = h.engine.config
    draining = replace(config, home_agent=replace(config.home_agent, enabled=False))
    h.engine.apply(h.engine.prepare(draining))
    assert h.register(HOME, COA1).code == 129  # no renewal
    assert h.engine.binding_count == 1  # the binding keeps forwarding until it goes
    assert h.register(HOME, COA1, lifetime=0).code == 0
    assert h.engine.binding_count == 0
    assert h.engine.node_statistics("mn1")[:3] == (2, 1, 0)
