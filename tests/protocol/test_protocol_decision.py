"""ha.protocol.decision: one test (at least) per reply code and per binding rule of RFC 5944 §3.8."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest
from protocol_support import COA, FA, FA_KEY, HA, HOA, NOW, WALLCLOCK, Registration

from ha.protocol import (
    Accept,
    Arrival,
    BindingAction,
    CriticalVendorExtension,
    Deny,
    Encapsulation,
    ForeignAgentRecord,
    GeneralizedAuth,
    HomeAgentPolicy,
    MobileForeignAuth,
    MobileNodeNai,
    MobileNodeRecord,
    ReplayProtection,
    ReplyCode,
    RequestFlags,
    ReverseTunnelPolicy,
    SecurityAssociation,
    SecurityViolation,
    decide,
    with_home_address,
)
from ha.protocol.replay import ntp_seconds, ntp_timestamp

F = RequestFlags


def run(request, policy, node, arrival, **more):
    kwargs = {"foreign_agent": None, "now": NOW, "wallclock": WALLCLOCK}
    kwargs.update(more)
    return decide(request, policy=policy, mobile_node=node, arrival=arrival, **kwargs)


def denied(verdict, code: ReplyCode) -> Deny:
    assert isinstance(verdict, Deny), verdict
    assert verdict.code == code, verdict.reason
    return verdict


def accepted(verdict) -> Accept:
    assert isinstance(verdict, Accept), getattr(verdict, "reason", verdict)
    return verdict


class TestAccept:
    def test_plain_registration(self, mn, policy, node, arrival) -> None:
        request = mn.request(lifetime=1800)
        verdict = accepted(run(request, policy, node, arrival))
        assert verdict.code == ReplyCode.ACCEPTED
        assert verdict.action == BindingAction.REGISTER
        assert (verdict.lifetime, verdict.expires_at) == (1800, NOW + 1800)
        assert (verdict.home_address, verdict.care_of_address, verdict.assign) == (HOA, COA, False)
        assert verdict.encapsulation == Encapsulation.IP_IN_IP
        assert verdict.replace_existing and not verdict.reverse_tunnel
        assert verdict.reply_identification == request.identification
        assert verdict.accepted_identification == request.identification
        assert verdict.security_association == mn.sa

    def test_same_inputs_same_verdict(self, mn, policy, node, arrival) -> None:
        request = mn.request()
        assert run(request, policy, node, arrival) == run(request, policy, node, arrival)

    def test_lifetime_is_capped_by_policy_then_by_the_mobile_node(self, mn, policy, node, arrival) -> None:
        request = mn.request(lifetime=50000)
        assert accepted(run(request, policy, node, arrival)).lifetime == 36000
        assert accepted(run(request, replace(policy, max_lifetime=600), node, arrival)).lifetime == 600
        assert accepted(run(request, policy, replace(node, max_lifetime=120), arrival)).lifetime == 120

    def test_infinite_lifetime(self, mn, policy, node, arrival) -> None:
        request = mn.request(lifetime=0xFFFF)
        verdict = accepted(run(request, replace(policy, max_lifetime=0xFFFF), node, arrival))
        assert (verdict.lifetime, verdict.expires_at) == (0xFFFF, None)
        assert accepted(run(request, policy, node, arrival)).expires_at == NOW + 36000

    def test_ignored_bits_are_cleared_not_refused(self, mn, policy, node, arrival) -> None:
        request = mn.request(flags=F.R | F.X | F.B | F.D)
        verdict = accepted(run(request, policy, node, arrival))
        assert verdict.flags == F.D  # r and x ignored on reception; B ignored without broadcast support
        verdict = accepted(run(request, replace(policy, broadcast_forwarding=True), node, arrival))
        assert verdict.flags == F.D | F.B


class TestDeregistration:
    def test_lifetime_zero_removes_one_binding(self, mn, policy, node, arrival) -> None:
        verdict = accepted(
            run(mn.request(lifetime=0), policy, replace(node, care_of_addresses=(COA,)), arrival)
        )
        assert (verdict.action, verdict.lifetime, verdict.expires_at) == (BindingAction.DEREGISTER, 0, None)
        assert not verdict.replace_existing

    def test_care_of_address_equal_home_address_removes_all(self, mn, policy, node, arrival) -> None:
        verdict = accepted(run(mn.request(lifetime=0, care_of_address=HOA), policy, node, arrival))
        assert verdict.action == BindingAction.DEREGISTER_ALL and verdict.replace_existing

    def test_policy_does_not_block_deregistration(self, mn, policy, node, arrival) -> None:
        strict = replace(
            policy,
            reverse_tunnel=ReverseTunnelPolicy.REQUIRED,
            care_of_access=(IPv4Network("198.51.100.0/24"),),
            encapsulations=frozenset({Encapsulation.GRE}),
        )
        accepted(run(mn.request(lifetime=0), strict, node, arrival))

    def test_deregistration_still_needs_authentication_and_freshness(self, mn, policy, node, arrival) -> None:
        denied(
            run(mn.request(lifetime=0, sign=False), policy, node, arrival), ReplyCode.MN_FAILED_AUTHENTICATION
        )
        stale = mn.request(lifetime=0, identification=ntp_timestamp(WALLCLOCK - 60))
        denied(run(stale, policy, node, arrival), ReplyCode.IDENTIFICATION_MISMATCH)

    def test_deregistering_someone_elses_address(self, mn, policy, node, arrival) -> None:
        other = IPv4Address("10.0.0.99")
        request = mn.request(lifetime=0, home_address=other, care_of_address=other)
        denied(run(request, policy, node, arrival), ReplyCode.ADMINISTRATIVELY_PROHIBITED)


class TestUnknownHomeAgent:
    @pytest.mark.parametrize("home_agent", ["10.0.0.2", "10.0.0.255", "255.255.255.255", "0.0.0.0"])
    def test_home_agent_field_not_ours(self, mn, policy, node, arrival, home_agent: str) -> None:
        verdict = denied(
            run(mn.request(home_agent=IPv4Address(home_agent)), policy, node, arrival),
            ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS,
        )
        assert verdict.home_agent == HA  # our unicast address, so the mobile node can learn it
        assert verdict.security_association == mn.sa  # still signed: the MN can trust the answer

    @pytest.mark.parametrize("destination", ["10.0.0.255", "255.255.255.255"])
    def test_request_sent_to_a_broadcast_address(self, mn, policy, node, destination: str) -> None:
        arrival = Arrival(COA, 40000, IPv4Address(destination))
        denied(run(mn.request(), policy, node, arrival), ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS)


class TestMobileNodeAuthentication:
    def test_missing_extension(self, mn, policy, node, arrival) -> None:
        verdict = denied(
            run(mn.request(mn_auth=False), policy, node, arrival), ReplyCode.MN_FAILED_AUTHENTICATION
        )
        assert verdict.violation == SecurityViolation.MISSING_SECURITY_EXTENSION
        # no authenticator verified: the denial is not signed (else the HA is a signing oracle)
        assert (verdict.spi, verdict.security_association) == (None, None)

    def test_mn_aaa_is_not_supported_without_aaa(self, mn, policy, node, arrival) -> None:
        request = mn.request(mn_auth=False, before=(MobileNodeNai("a@b"), GeneralizedAuth(1, 256, bytes(16))))
        verdict = denied(run(request, policy, node, arrival), ReplyCode.MN_FAILED_AUTHENTICATION)
        assert "AAA" in verdict.reason

    def test_unknown_mobile_node(self, mn, policy, arrival) -> None:
        verdict = denied(run(mn.request(), policy, None, arrival), ReplyCode.MN_FAILED_AUTHENTICATION)
        assert verdict.violation == SecurityViolation.NO_SECURITY_ASSOCIATION

    def test_unknown_spi(self, mn, policy, node, arrival) -> None:
        other = SecurityAssociation(999, mn.sa.key)
        verdict = denied(run(mn.request(sa=other), policy, node, arrival), ReplyCode.MN_FAILED_AUTHENTICATION)
        assert (verdict.violation, verdict.spi, verdict.security_association) == (
            SecurityViolation.BAD_SPI,
            999,
            None,  # the request named no key we hold: nothing verified, nothing signed
        )

    def test_bad_authenticator(self, mn, policy, node, arrival) -> None:
        verdict = denied(
            run(mn.request(sign=False), policy, node, arrival), ReplyCode.MN_FAILED_AUTHENTICATION
        )
        assert verdict.violation == SecurityViolation.BAD_AUTHENTICATOR
        assert verdict.security_association is None  # a corrupted copy must not get a signed 131
        assert verdict.accepted_identification is None  # unauthenticated: nothing to remember

    def test_wrong_key(self, policy, node, arrival) -> None:
        forger = Registration(sa=SecurityAssociation(256, b"\x01" * 16))
        denied(run(forger.request(), policy, node, arrival), ReplyCode.MN_FAILED_AUTHENTICATION)


class TestIdentification:
    def test_stale_timestamp(self, mn, policy, node, arrival) -> None:
        request = mn.request(identification=ntp_timestamp(WALLCLOCK - 3600) | 0x77)
        verdict = denied(run(request, policy, node, arrival), ReplyCode.IDENTIFICATION_MISMATCH)
        assert verdict.violation == SecurityViolation.BAD_IDENTIFIER
        assert verdict.reply_identification == (ntp_seconds(WALLCLOCK) << 32) | 0x77
        assert verdict.accepted_identification is None

    def test_tolerance_comes_from_policy(self, mn, policy, node, arrival) -> None:
        request = mn.request(identification=ntp_timestamp(WALLCLOCK - 30))
        denied(run(request, policy, node, arrival), ReplyCode.IDENTIFICATION_MISMATCH)
        accepted(run(request, replace(policy, replay_tolerance=60), node, arrival))

    def test_replay_of_an_accepted_request(self, mn, policy, node, arrival) -> None:
        request = mn.request()
        first = accepted(run(request, policy, node, arrival))
        remembered = replace(node, last_identification=first.accepted_identification)
        denied(run(request, policy, remembered, arrival), ReplyCode.IDENTIFICATION_MISMATCH)
        newer = mn.request(identification=request.identification + 1)
        accepted(run(newer, policy, remembered, arrival))

    def test_nonce_exchange(self, policy, arrival) -> None:
        sa = SecurityAssociation(256, bytes(range(16)), replay_protection=ReplayProtection.NONCE)
        mn = Registration(sa=sa)
        node = MobileNodeRecord("mn1", (sa,), home_address=HOA)
        first = denied(
            run(
                mn.request(identification=0x00000000_00000001), policy, node, arrival, fresh_nonce=0xA1B2C3D4
            ),
            ReplyCode.IDENTIFICATION_MISMATCH,
        )
        assert first.ha_nonce == 0xA1B2C3D4 and first.reply_identification == 0xA1B2C3D4_00000001
        assert first.violation is None  # the first request cannot know our nonce
        node = replace(node, ha_nonce=first.ha_nonce)
        echo = mn.request(identification=0xA1B2C3D4_00000002)
        verdict = accepted(run(echo, policy, node, arrival, fresh_nonce=7))
        assert verdict.reply_identification == 0x00000007_00000002 and verdict.ha_nonce == 7
        node = replace(node, ha_nonce=7)
        replayed = run(echo, policy, node, arrival, fresh_nonce=8)  # old nonce A1B2C3D4, we expect 7
        wrong = denied(replayed, ReplyCode.IDENTIFICATION_MISMATCH)
        assert wrong.violation == SecurityViolation.BAD_IDENTIFIER and wrong.ha_nonce == 8


class TestForeignAgent:
    FA_SA = SecurityAssociation(600, FA_KEY)

    def agent(self) -> ForeignAgentRecord:
        return ForeignAgentRecord(FA, (self.FA_SA,))

    def test_valid_foreign_home_extension(self, policy, node) -> None:
        mn = Registration(fa_sa=self.FA_SA)
        request = mn.request(fa_extensions=(MobileForeignAuth(300, bytes(16)),))
        verdict = accepted(run(request, policy, node, Arrival(FA, 434, HA), foreign_agent=self.agent()))
        assert verdict.fa_security_association == self.FA_SA

    def test_missing_foreign_home_extension(self, mn, policy, node) -> None:
        verdict = denied(
            run(mn.request(), policy, node, Arrival(FA, 434, HA), foreign_agent=self.agent()),
            ReplyCode.FA_FAILED_AUTHENTICATION,
        )
        assert verdict.violation == SecurityViolation.MISSING_SECURITY_EXTENSION
        assert verdict.accepted_identification is not None  # the MN part was authentic and fresh

    def test_bad_foreign_home_authenticator_and_spi(self, policy, node) -> None:
        forged = Registration(fa_sa=SecurityAssociation(600, b"\x02" * 16))
        verdict = denied(
            run(forged.request(), policy, node, Arrival(FA, 434, HA), foreign_agent=self.agent()),
            ReplyCode.FA_FAILED_AUTHENTICATION,
        )
        assert verdict.violation == SecurityViolation.BAD_AUTHENTICATOR
        wrong_spi = Registration(fa_sa=SecurityAssociation(601, FA_KEY))
        verdict = denied(
            run(wrong_spi.request(), policy, node, Arrival(FA, 434, HA), foreign_agent=self.agent()),
            ReplyCode.FA_FAILED_AUTHENTICATION,
        )
        assert verdict.violation == SecurityViolation.BAD_SPI

    def test_foreign_home_extension_without_an_association_is_ignored(self, policy, node) -> None:
        request = Registration(fa_sa=self.FA_SA).request()
        verdict = accepted(run(request, policy, node, Arrival(FA, 434, HA), foreign_agent=None))
        assert verdict.fa_security_association is None


class TestVendorExtensions:
    def test_critical_vendor_extension_from_the_mobile_node(self, mn, policy, node, arrival) -> None:
        request = mn.request(before=(CriticalVendorExtension(5535, 1, b"x"),))
        denied(run(request, policy, node, arrival), ReplyCode.MN_CVSE_NOT_UNDERSTOOD)

    def test_critical_vendor_extension_from_the_foreign_agent(self, mn, policy, node, arrival) -> None:
        request = mn.request(fa_extensions=(CriticalVendorExtension(5535, 1, b"x"),))
        denied(run(request, policy, node, arrival), ReplyCode.FA_CVSE_NOT_UNDERSTOOD)


class TestHomeAddress:
    def test_zero_home_address_needs_an_nai(self, mn, policy, node, arrival) -> None:
        request = mn.request(home_address=IPv4Address(0))
        denied(run(request, policy, node, arrival), ReplyCode.POORLY_FORMED_REQUEST)

    def test_zero_home_address_gets_the_static_one(self, mn, policy, node, arrival) -> None:
        request = mn.request(home_address=IPv4Address(0), before=(MobileNodeNai("mn1@example.net"),))
        verdict = accepted(run(request, policy, node, arrival))
        assert (verdict.home_address, verdict.assign, verdict.nai) == (HOA, False, "mn1@example.net")

    def test_zero_home_address_from_a_pool(self, mn, policy, arrival) -> None:
        node = MobileNodeRecord("mn1", (mn.sa,), dynamic=True)
        request = mn.request(home_address=IPv4Address(0), before=(MobileNodeNai("mn1@example.net"),))
        verdict = accepted(run(request, policy, node, arrival))
        assert (verdict.home_address, verdict.assign) == (None, True)
        assigned = with_home_address(verdict, IPv4Address("10.0.0.50"))
        assert (assigned.home_address, assigned.assign) == (IPv4Address("10.0.0.50"), False)
        # every other field as it was (with_home_address builds the Accept field by field)
        assert assigned == replace(verdict, home_address=IPv4Address("10.0.0.50"), assign=False)
        with pytest.raises(ValueError):
            with_home_address(assigned, IPv4Address("10.0.0.51"))

    def test_requested_address_from_a_pool_must_be_reserved(self, mn, policy, arrival) -> None:
        node = MobileNodeRecord("mn1", (mn.sa,), dynamic=True)
        verdict = accepted(run(mn.request(), policy, node, arrival))
        assert (verdict.home_address, verdict.assign) == (HOA, True)
        with pytest.raises(ValueError):
            with_home_address(verdict, IPv4Address("10.0.0.51"))

    def test_engine_can_refuse_after_acceptance(self, mn, policy, arrival) -> None:
        node = MobileNodeRecord("mn1", (mn.sa,), dynamic=True)
        verdict = accepted(run(mn.request(), policy, node, arrival))
        refusal = verdict.deny(ReplyCode.INSUFFICIENT_RESOURCES, "pool exhausted")
        assert refusal.code == ReplyCode.INSUFFICIENT_RESOURCES
        assert refusal.security_association == mn.sa
        assert refusal.accepted_identification == verdict.accepted_identification
        with pytest.raises(ValueError):
            verdict.deny(ReplyCode.ACCEPTED, "no")

    def test_someone_elses_home_address(self, mn, policy, node, arrival) -> None:
        request = mn.request(home_address=IPv4Address("10.0.0.6"))
        denied(run(request, policy, node, arrival), ReplyCode.ADMINISTRATIVELY_PROHIBITED)

    def test_mobile_node_without_any_address(self, mn, policy, arrival) -> None:
        node = MobileNodeRecord("mn1", (mn.sa,))
        denied(run(mn.request(), policy, node, arrival), ReplyCode.ADMINISTRATIVELY_PROHIBITED)


class TestCareOfAddress:
    @pytest.mark.parametrize(
        "coa", ["0.0.0.0", "224.0.0.5", "255.255.255.255", "10.0.0.255", "10.0.0.5", "10.0.0.1"]
    )
    def test_not_a_usable_care_of_address(self, mn, policy, node, arrival, coa: str) -> None:
        request = mn.request(care_of_address=IPv4Address(coa))
        denied(run(request, policy, node, arrival), ReplyCode.POORLY_FORMED_REQUEST)

    def test_care_of_access_list(self, mn, policy, node, arrival) -> None:
        request = mn.request()
        elsewhere = replace(policy, care_of_access=(IPv4Network("198.51.100.0/24"),))
        denied(run(request, elsewhere, node, arrival), ReplyCode.ADMINISTRATIVELY_PROHIBITED)
        inside = replace(policy, care_of_access=(IPv4Network("198.51.100.0/24"), IPv4Network("192.0.2.0/24")))
        accepted(run(request, inside, node, arrival))
        per_host = replace(node, care_of_access=(IPv4Network("192.0.2.10/32"),))
        accepted(run(request, elsewhere, per_host, arrival))


class TestReverseTunnel:
    def test_disabled(self, mn, policy, node, arrival) -> None:
        disabled = replace(policy, reverse_tunnel=ReverseTunnelPolicy.DISABLED)
        denied(run(mn.request(flags=F.T), disabled, node, arrival), ReplyCode.REVERSE_TUNNEL_UNAVAILABLE)
        accepted(run(mn.request(), disabled, node, arrival))

    def test_required(self, mn, policy, node, arrival) -> None:
        required = replace(policy, reverse_tunnel=ReverseTunnelPolicy.REQUIRED)
        denied(run(mn.request(), required, node, arrival), ReplyCode.REVERSE_TUNNEL_MANDATORY)
        assert accepted(run(mn.request(flags=F.T), required, node, arrival)).reverse_tunnel

    def test_per_host_override(self, mn, policy, node, arrival) -> None:
        lenient = replace(node, reverse_tunnel=ReverseTunnelPolicy.ALLOWED)
        required = replace(policy, reverse_tunnel=ReverseTunnelPolicy.REQUIRED)
        accepted(run(mn.request(), required, lenient, arrival))


class TestEncapsulation:
    @pytest.mark.parametrize(
        ("flags", "offered", "expected"),
        [
            (F.G, {Encapsulation.IP_IN_IP, Encapsulation.GRE}, Encapsulation.GRE),
            (F.M, {Encapsulation.MINIMAL}, Encapsulation.MINIMAL),
            (F.NONE, {Encapsulation.IP_IN_IP}, Encapsulation.IP_IN_IP),
        ],
    )
    def test_offered(self, mn, policy, node, arrival, flags, offered, expected) -> None:
        verdict = accepted(
            run(mn.request(flags=flags), replace(policy, encapsulations=offered), node, arrival)
        )
        assert verdict.encapsulation == expected

    @pytest.mark.parametrize(
        ("flags", "offered"),
        [(F.G, {Encapsulation.IP_IN_IP}), (F.M, {Encapsulation.IP_IN_IP}), (F.M | F.G, set(Encapsulation))],
    )
    def test_unavailable(self, mn, policy, node, arrival, flags, offered) -> None:
        verdict = run(mn.request(flags=flags), replace(policy, encapsulations=offered), node, arrival)
        denied(verdict, ReplyCode.ENCAPSULATION_UNAVAILABLE)


class TestSimultaneousBindings:
    OTHER = IPv4Address("198.51.100.7")

    def test_unsupported_s_bit_gives_code_1_and_replaces(self, mn, policy, node, arrival) -> None:
        node = replace(node, care_of_addresses=(self.OTHER,))
        verdict = accepted(run(mn.request(flags=F.S), policy, node, arrival))
        assert verdict.code == ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS
        assert verdict.replace_existing and F.S not in verdict.flags

    def test_supported_s_bit_keeps_the_others(self, mn, policy, node, arrival) -> None:
        node = replace(node, care_of_addresses=(self.OTHER,))
        verdict = accepted(
            run(mn.request(flags=F.S), replace(policy, simultaneous_bindings=2), node, arrival)
        )
        assert verdict.code == ReplyCode.ACCEPTED and not verdict.replace_existing

    def test_too_many(self, mn, policy, node, arrival) -> None:
        node = replace(node, care_of_addresses=(self.OTHER, IPv4Address("198.51.100.8")))
        two = replace(policy, simultaneous_bindings=2)
        denied(run(mn.request(flags=F.S), two, node, arrival), ReplyCode.TOO_MANY_SIMULTANEOUS_BINDINGS)
        # renewing one of the two existing bindings is fine
        accepted(run(mn.request(flags=F.S, care_of_address=self.OTHER), two, node, arrival))
        # without S the request replaces both
        assert accepted(run(mn.request(), two, node, arrival)).replace_existing


class TestBindingLimit:
    def test_new_binding_at_the_limit(self, mn, policy, node, arrival) -> None:
        limited = replace(policy, max_bindings=10)
        denied(
            run(mn.request(), limited, node, arrival, bindings_in_use=10), ReplyCode.INSUFFICIENT_RESOURCES
        )
        accepted(run(mn.request(), limited, node, arrival, bindings_in_use=9))

    def test_renewal_and_handover_at_the_limit(self, mn, policy, node, arrival) -> None:
        limited = replace(policy, max_bindings=10)
        renewing = replace(node, care_of_addresses=(COA,))
        accepted(run(mn.request(), limited, renewing, arrival, bindings_in_use=10))
        moving = replace(node, care_of_addresses=(IPv4Address("198.51.100.7"),))
        accepted(run(mn.request(), limited, moving, arrival, bindings_in_use=10))


def test_policy_validation() -> None:
    for bad in ({"max_lifetime": 0}, {"replay_tolerance": 0}, {"simultaneous_bindings": 300}):
        with pytest.raises(ValueError):
            HomeAgentPolicy(address=HA, **bad)
    policy = HomeAgentPolicy(address=HA, reverse_tunnel="required", encapsulations=["gre"])
    assert policy.reverse_tunnel is ReverseTunnelPolicy.REQUIRED
    assert policy.encapsulations == frozenset({Encapsulation.GRE})


class TestProcessingOrder:
    """RFC 5944 §3.8 / docs §4: with several faults at once, the earliest check decides.

    Each fault is applied together with every fault that comes after it in the order; the verdict must
    be the earliest one's code.  Each fault alone must also be refused with its code, so that the
    combined case cannot pass by accident.
    """

    FA_SA = SecurityAssociation(600, FA_KEY)
    ORDER = [
        ("zero home address without NAI", 134),
        ("bad authenticator", 131),
        ("stale timestamp", 133),
        ("home agent field not ours", 136),  # only an authentic, fresh request learns our address
        ("foreign agent without FA-HA", 132),
        ("critical vendor extension", 140),
        ("multicast care-of address", 134),
        ("reverse tunnel refused", 137),
    ]

    def verdict_with(self, faults: set[str], mn, policy, node):
        args: dict = {}
        if "zero home address without NAI" in faults:
            args["home_address"] = IPv4Address(0)
        if "home agent field not ours" in faults:
            args["home_agent"] = IPv4Address("10.0.0.2")
        if "bad authenticator" in faults:
            args["sign"] = False
        if "stale timestamp" in faults:
            args["identification"] = ntp_timestamp(WALLCLOCK - 3600)
        if "critical vendor extension" in faults:
            args["before"] = (CriticalVendorExtension(5535, 1, b"x"),)
        if "multicast care-of address" in faults:
            args["care_of_address"] = IPv4Address("224.0.0.5")
        if "reverse tunnel refused" in faults:
            args["flags"] = F.T
            policy = replace(policy, reverse_tunnel=ReverseTunnelPolicy.DISABLED)
        agent = ForeignAgentRecord(FA, (self.FA_SA,)) if "foreign agent without FA-HA" in faults else None
        return run(mn.request(**args), policy, node, Arrival(FA, 434, HA), foreign_agent=agent)

    @pytest.mark.parametrize("position", range(len(ORDER)), ids=[name for name, _ in ORDER])
    def test_the_earliest_fault_wins(self, mn, policy, node, position: int) -> None:
        name, code = self.ORDER[position]
        later = {fault for fault, _ in self.ORDER[position:]}
        denied(self.verdict_with(later, mn, policy, node), ReplyCode(code))
        denied(self.verdict_with({name}, mn, policy, node), ReplyCode(code))
