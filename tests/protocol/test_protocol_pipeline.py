"""The whole path the engine runs per datagram — parse, decide, encode — under arbitrary input.

Hypothesis feeds random datagrams and damaged copies of valid signed requests (flipped bytes,
truncation, random tails) through ``pull_registration_request`` -> ``decide`` -> ``encode_reply``
with several home agent set-ups.  Nothing but ``ProtocolError`` may escape the parser, nothing at
all may escape ``decide`` / the encoders, and every reply must decode as a reply to that request.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_support import COA, FA, FA_KEY, HA, HOA, NOW, WALLCLOCK, Registration

from ha.protocol import (
    Accept,
    Arrival,
    ForeignAgentRecord,
    HomeAgentPolicy,
    MobileForeignChallenge,
    MobileNodeNai,
    MobileNodeRecord,
    ProtocolError,
    ReplayProtection,
    SecurityAssociation,
    decide,
    encode_malformed_reply,
    encode_reply,
    pull_registration_reply,
    pull_registration_request,
    push_registration_request,
    verify,
    with_home_address,
)
from ha.protocol.replay import ntp_timestamp

MN_SA = SecurityAssociation(256, bytes(range(16)))
NONCE_SA = SecurityAssociation(257, bytes(range(16)), replay_protection=ReplayProtection.NONCE)
FA_SA = SecurityAssociation(600, FA_KEY)
POLICY = HomeAgentPolicy(address=HA, broadcast_addresses=frozenset({IPv4Address("10.0.0.255")}))
NODES = [
    None,
    MobileNodeRecord("static", (MN_SA, NONCE_SA), home_address=HOA, care_of_addresses=(COA,)),
    MobileNodeRecord(
        "pool", (MN_SA,), dynamic=True, last_identification=ntp_timestamp(WALLCLOCK - 60), ha_nonce=7
    ),
]
AGENTS = [None, ForeignAgentRecord(FA, (FA_SA,))]


def _valid_datagrams() -> list[bytes]:
    signer = Registration(sa=MN_SA, fa_sa=FA_SA)
    return [
        push_registration_request(Registration(sa=MN_SA).request()),
        push_registration_request(
            signer.request(
                home_address=IPv4Address(0),
                before=(MobileNodeNai("mn1@example.net"),),
                fa_extensions=(MobileForeignChallenge(b"\x05" * 4),),
            )
        ),
        push_registration_request(Registration(sa=MN_SA).request(lifetime=0, care_of_address=HOA)),
    ]


VALID = _valid_datagrams()


def _damaged() -> st.SearchStrategy[bytes]:
    def damage(data: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
        out = bytearray(data)
        for index, value in flips:
            out[index % len(out)] = value
        return bytes(out[: max(cut, 0) or len(out)]) + tail

    return st.builds(
        damage,
        st.sampled_from(VALID),
        st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
        st.integers(-8, 80),
        st.binary(max_size=24),
    )


def _run_one(data: bytes, node_index: int, agent_index: int, destination: str) -> None:
    arrival = Arrival(FA if agent_index else COA, 40000, IPv4Address(destination))
    try:
        request = pull_registration_request(data)
    except ProtocolError as error:
        reply = encode_malformed_reply(error)
        assert reply is None or pull_registration_reply(reply).code == 134
        return
    verdict = decide(
        request,
        policy=POLICY,
        mobile_node=NODES[node_index],
        foreign_agent=AGENTS[agent_index],
        arrival=arrival,
        now=NOW,
        wallclock=WALLCLOCK,
        bindings_in_use=3,
        fresh_nonce=0xDEADBEEF,
    )
    if isinstance(verdict, Accept) and verdict.assign:
        verdict = with_home_address(verdict, verdict.home_address or IPv4Address("10.0.0.77"))
    reply = pull_registration_reply(encode_reply(verdict))
    assert reply.code == verdict.code
    if isinstance(verdict, Accept):
        assert verify(reply.raw, reply.mn_ha_auth, verdict.security_association)
    else:
        assert reply.lifetime == 0


@settings(max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.binary(max_size=90), _damaged()),
    st.integers(0, len(NODES) - 1),
    st.integers(0, len(AGENTS) - 1),
    st.sampled_from(["10.0.0.1", "10.0.0.255", "255.255.255.255", "224.0.0.11"]),
)
def test_nothing_but_protocol_error_escapes_the_whole_path(
    data: bytes, node_index: int, agent_index: int, destination: str
) -> None:
    _run_one(data, node_index, agent_index, destination)


def test_the_undamaged_requests_are_accepted() -> None:
    """The fuzz starts from requests that really pass, so damage reaches every later check."""
    for data, node in zip(VALID, (NODES[1], NODES[2], NODES[1]), strict=True):
        request = pull_registration_request(data)
        foreign_agent = AGENTS[1] if request.fa_ha_auth is not None else None
        source = FA if foreign_agent is not None else COA
        verdict = decide(
            request,
            policy=POLICY,
            mobile_node=node,
            foreign_agent=foreign_agent,
            arrival=Arrival(source, 40000, HA),
            now=NOW,
            wallclock=WALLCLOCK,
        )
        assert isinstance(verdict, Accept), getattr(verdict, "reason", verdict)
