"""decide()'s plans: the step lists without the steps idle under a policy (or for the usual request)
decide exactly as the whole lists do, for every policy, node, relay and request shape."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_support import COA, FA, FA_KEY, HA, HOA, NOW, WALLCLOCK, Registration

from ha.protocol import (
    Arrival,
    CriticalVendorExtension,
    Encapsulation,
    ForeignAgentRecord,
    HomeAgentPolicy,
    MobileNodeRecord,
    RequestFlags,
    ReverseTunnelPolicy,
    SecurityAssociation,
    decide,
)
from ha.protocol.decision import (
    DEREGISTRATION_STEPS,
    REGISTRATION_STEPS,
    VALIDITY_STEPS,
    Examination,
    _deregistration,
    _first_denial,
    _registration,
    binding_limit,
    home_agent_enabled,
    plan,
)
from ha.protocol.replay import ntp_timestamp

SA = SecurityAssociation(256, bytes(range(16)))
FA_SA = SecurityAssociation(600, FA_KEY)
WHOLE_REGISTRATION = _first_denial(VALIDITY_STEPS + REGISTRATION_STEPS)
WHOLE_DEREGISTRATION = _first_denial(VALIDITY_STEPS + DEREGISTRATION_STEPS)
ELSEWHERE = (IPv4Network("198.51.100.0/24"),)
HERE = (IPv4Network("192.0.2.0/24"),)
NODE = MobileNodeRecord("mn1", (SA,), HOA)


def whole(request, policy, node, agent, arrival, in_use: int):
    """The reference: every step of the tuples, in order, none left out."""
    x = Examination(request, policy, node, agent, arrival, NOW, WALLCLOCK, in_use, 7)
    if request.lifetime == 0:
        return WHOLE_DEREGISTRATION(x) or _deregistration(x)
    return WHOLE_REGISTRATION(x) or _registration(x)


policies = st.builds(
    HomeAgentPolicy,
    address=st.just(HA),
    reverse_tunnel=st.sampled_from(list(ReverseTunnelPolicy)),
    encapsulations=st.sampled_from(
        [
            frozenset({Encapsulation.IP_IN_IP}),
            frozenset({Encapsulation.IP_IN_IP, Encapsulation.GRE}),
            frozenset({Encapsulation.GRE}),
        ]
    ),
    simultaneous_bindings=st.sampled_from([0, 2]),
    max_bindings=st.sampled_from([None, 1, 5]),
    care_of_access=st.sampled_from([(), ELSEWHERE, HERE]),
    enabled=st.booleans(),
)
nodes = st.builds(
    MobileNodeRecord,
    name=st.just("mn1"),
    security_associations=st.just((SA,)),
    home_address=st.sampled_from([HOA, None]),
    dynamic=st.booleans(),
    care_of_addresses=st.sampled_from([(), (COA,), (COA, IPv4Address("192.0.2.99"))]),
    last_identification=st.sampled_from([None, ntp_timestamp(WALLCLOCK - 1)]),
    max_lifetime=st.sampled_from([None, 60]),
    reverse_tunnel=st.sampled_from([None, *ReverseTunnelPolicy]),
    care_of_access=st.sampled_from([None, ELSEWHERE, HERE]),
)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=policies,
    node=st.one_of(st.none(), nodes),
    usual=st.booleans(),
    relayed=st.booleans(),
    flags=st.integers(0, 255),
    lifetime=st.sampled_from([0, 30, 1800, 0xFFFF]),
    home=st.sampled_from([HOA, IPv4Address(0), IPv4Address("10.0.0.9")]),
    care_of=st.sampled_from([COA, HOA, HA, IPv4Address("198.51.100.4")]),
    cvse=st.booleans(),
    in_use=st.integers(0, 6),
)
def test_a_plan_decides_as_the_whole_step_lists(
    policy, node, usual, relayed, flags, lifetime, home, care_of, cvse, in_use
) -> None:
    if usual:  # half the examples: the usual request, whose plan leaves out the most, from its node
        node = replace(node or NODE, home_address=HOA, care_of_access=None, reverse_tunnel=None)
        relayed = cvse = False
        home, care_of = HOA, COA
        flags &= ~int(RequestFlags.S | RequestFlags.M | RequestFlags.G)
    registration = Registration(sa=SA, fa_sa=FA_SA if relayed else None)
    after = (CriticalVendorExtension(9, 1, b"x"),) if cvse else ()
    request = registration.request(
        flags=RequestFlags(flags), lifetime=lifetime, home_address=home, care_of_address=care_of, after=after
    )
    agent = ForeignAgentRecord(FA, (FA_SA,)) if relayed else None
    arrival = Arrival(FA if relayed else COA, 434, HA)
    verdict = decide(
        request,
        policy=policy,
        mobile_node=node,
        foreign_agent=agent,
        arrival=arrival,
        now=NOW,
        wallclock=WALLCLOCK,
        bindings_in_use=in_use,
        fresh_nonce=7,
    )
    assert verdict == whole(request, policy, node, agent, arrival, in_use)


def _steps(chain) -> set:
    """The steps a compiled chain calls (its globals ``step0``, ``step1``, ...)."""
    return {value for name, value in chain.__globals__.items() if name.startswith("step")}


def test_idle_steps_are_left_out_only_where_they_cannot_deny() -> None:
    """An enabled home agent without a binding limit runs neither check; draining or a limit does."""
    usual = plan(VALIDITY_STEPS + REGISTRATION_STEPS, HomeAgentPolicy(HA), False)
    assert usual is plan(VALIDITY_STEPS + REGISTRATION_STEPS, HomeAgentPolicy(HA, max_lifetime=60), False)
    kept = _steps(usual)
    assert home_agent_enabled not in kept and binding_limit not in kept
    assert (
        len(kept & set(VALIDITY_STEPS + REGISTRATION_STEPS)) == len(VALIDITY_STEPS + REGISTRATION_STEPS) - 2
    )
    draining = HomeAgentPolicy(HA, enabled=False, max_bindings=9)
    kept = _steps(plan(VALIDITY_STEPS + REGISTRATION_STEPS, draining, False))
    assert {home_agent_enabled, binding_limit} <= kept
