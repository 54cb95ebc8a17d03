"""ha.protocol.reply: reply bytes for each verdict, as a mobile node and a foreign agent read them."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from protocol_support import COA, FA, FA_KEY, HA, HOA, NOW, WALLCLOCK, Registration

from ha.protocol import (
    Arrival,
    ForeignAgentRecord,
    ForeignHomeAuth,
    MobileForeignAuth,
    MobileForeignChallenge,
    MobileHomeAuth,
    MobileNodeNai,
    MobileNodeRecord,
    ProtocolError,
    ReplyAddress,
    ReplyCode,
    SecurityAssociation,
    build_reply,
    decide,
    encode_malformed_reply,
    encode_reply,
    pull_registration_reply,
    pull_registration_request,
    push_registration_request,
    reply_address,
    verify,
    with_home_address,
)


def run(request, policy, node, arrival, foreign_agent=None):
    return decide(
        request,
        policy=policy,
        mobile_node=node,
        foreign_agent=foreign_agent,
        arrival=arrival,
        now=NOW,
        wallclock=WALLCLOCK,
    )


def test_accepted_reply_is_signed_and_copies_the_request(mn, policy, node, arrival) -> None:
    request = mn.request(lifetime=50000)
    reply = pull_registration_reply(encode_reply(run(request, policy, node, arrival)))
    assert (reply.code, reply.lifetime) == (ReplyCode.ACCEPTED, 36000)
    assert (reply.home_address, reply.home_agent, reply.identification) == (HOA, HA, request.identification)
    assert reply.extensions == (MobileHomeAuth(mn.sa.spi, reply.mn_ha_auth.authenticator),)
    assert verify(reply.raw, reply.mn_ha_auth, mn.sa)


def test_extension_order_with_nai_challenge_and_foreign_agent(policy, node) -> None:
    fa_sa = SecurityAssociation(600, FA_KEY)
    mn = Registration(fa_sa=fa_sa)
    request = mn.request(
        before=(MobileNodeNai("mn1@example.net"),),
        fa_extensions=(MobileForeignChallenge(b"\x42" * 8), MobileForeignAuth(300, bytes(16))),
    )
    verdict = run(request, policy, node, Arrival(FA, 434, HA), ForeignAgentRecord(FA, (fa_sa,)))
    reply = pull_registration_reply(encode_reply(verdict))
    assert [type(e) for e in reply.extensions] == [
        MobileNodeNai,
        MobileHomeAuth,
        MobileForeignChallenge,
        ForeignHomeAuth,
    ]
    assert reply.nai == "mn1@example.net"
    assert reply.extensions[2] == MobileForeignChallenge(b"\x42" * 8)
    assert verify(reply.raw, reply.mn_ha_auth, mn.sa)
    assert verify(reply.raw, reply.fa_ha_auth, fa_sa)


def test_assigned_home_address_is_returned(mn, policy, arrival) -> None:
    node = MobileNodeRecord("mn1", (mn.sa,), dynamic=True)
    request = mn.request(home_address=IPv4Address(0), before=(MobileNodeNai("mn1@example.net"),))
    verdict = run(request, policy, node, arrival)
    with pytest.raises(ValueError, match="assign"):
        build_reply(verdict)
    reply = pull_registration_reply(encode_reply(with_home_address(verdict, IPv4Address("10.0.0.50"))))
    assert reply.home_address == IPv4Address("10.0.0.50") and reply.nai == "mn1@example.net"


def test_denial_of_an_unauthentic_request_has_lifetime_zero_and_no_authenticator(
    mn, policy, node, arrival
) -> None:
    """No signing oracle: a 131 never carries an authenticator made with the mobile node's key."""
    request = mn.request(sign=False, lifetime=600)
    reply = pull_registration_reply(encode_reply(run(request, policy, node, arrival)))
    assert (reply.code, reply.lifetime) == (ReplyCode.MN_FAILED_AUTHENTICATION, 0)
    assert reply.mn_ha_auth is None


def test_denial_of_an_authentic_request_is_signed(mn, policy, node, arrival) -> None:
    request = mn.request(identification=(123 << 32) | 0xBEEF)  # authentic, stale: 133
    reply = pull_registration_reply(encode_reply(run(request, policy, node, arrival)))
    assert reply.code == ReplyCode.IDENTIFICATION_MISMATCH
    assert verify(reply.raw, reply.mn_ha_auth, mn.sa)


def test_denial_for_an_unknown_mobile_node_is_unsigned(mn, policy, arrival) -> None:
    reply = pull_registration_reply(encode_reply(run(mn.request(), policy, None, arrival)))
    assert reply.code == ReplyCode.MN_FAILED_AUTHENTICATION
    assert reply.extensions == ()


def test_identification_mismatch_reply_carries_our_time(mn, policy, node, arrival) -> None:
    request = mn.request(identification=(123 << 32) | 0xBEEF)
    reply = pull_registration_reply(encode_reply(run(request, policy, node, arrival)))
    assert reply.code == ReplyCode.IDENTIFICATION_MISMATCH
    assert abs((reply.identification >> 32) - 2_208_988_800 - WALLCLOCK) < 1
    assert reply.identification & 0xFFFFFFFF == 0xBEEF


def test_unknown_home_agent_reply_names_our_address(mn, policy, node, arrival) -> None:
    request = mn.request(home_agent=IPv4Address("10.0.0.255"))
    reply = pull_registration_reply(encode_reply(run(request, policy, node, arrival)))
    assert (reply.code, reply.home_agent) == (ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS, HA)


def test_malformed_request_reply(mn) -> None:
    data = push_registration_request(mn.request().header()) + bytes([131, 9, 1])
    with pytest.raises(ProtocolError) as info:
        pull_registration_request(data)
    reply = pull_registration_reply(encode_malformed_reply(info.value))
    assert (reply.code, reply.home_address, reply.home_agent) == (ReplyCode.POORLY_FORMED_REQUEST, HOA, HA)
    assert reply.extensions == ()
    discard = ProtocolError("unknown extension")
    assert encode_malformed_reply(discard) is None


def test_reply_addressing(policy) -> None:
    unicast = Arrival(COA, 40000, HA, 434)
    assert reply_address(unicast, policy) == ReplyAddress(HA, 434, COA, 40000)
    for broadcast in ("10.0.0.255", "255.255.255.255"):
        sent = Arrival(COA, 40000, IPv4Address(broadcast), 434)
        assert reply_address(sent, policy).source == HA


def test_build_reply_rejects_non_verdicts() -> None:
    with pytest.raises(TypeError):
        build_reply("accept")


# --- codes decided outside decide(), discovery, and who signs ----------------------------------------


def test_reason_unspecified_is_the_engines_refusal_of_an_acceptance(mn, policy, node, arrival) -> None:
    """128: the engine could not carry out an accepted registration (e.g. the data plane failed)."""
    accept = run(mn.request(), policy, node, arrival)
    verdict = accept.deny(ReplyCode.REASON_UNSPECIFIED, "data plane refused the tunnel")
    reply = pull_registration_reply(encode_reply(verdict))
    assert (reply.code, reply.lifetime, reply.identification) == (128, 0, accept.reply_identification)
    assert verify(reply.raw, reply.mn_ha_auth, mn.sa)
    assert verdict.accepted_identification == accept.accepted_identification  # replay state still kept
    with pytest.raises(ValueError, match="not a denial"):
        accept.deny(ReplyCode.ACCEPTED, "no")


@pytest.mark.parametrize(
    ("destination", "home_agent"),
    [
        ("10.0.0.255", "10.0.0.255"),  # subnet-directed broadcast discovery
        ("255.255.255.255", "255.255.255.255"),  # limited broadcast (routers may rewrite to it)
        ("10.0.0.255", "10.0.0.1"),  # sent to the broadcast, Home Agent field already ours
    ],
)
def test_home_agent_discovery_is_answered_136_from_our_unicast_address(
    mn, policy, node, destination: str, home_agent: str
) -> None:
    sent = Arrival(COA, 40000, IPv4Address(destination))
    verdict = run(mn.request(home_agent=IPv4Address(home_agent)), policy, node, sent)
    reply = pull_registration_reply(encode_reply(verdict))
    assert (reply.code, reply.lifetime, reply.home_agent) == (ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS, 0, HA)
    assert verify(reply.raw, reply.mn_ha_auth, mn.sa)  # the mobile node can trust what it learns
    # discovery is answered after authentication and identification (docs §4): the request was
    # authentic and fresh, so its identification is remembered like any authentic request's
    assert verdict.accepted_identification == verdict.request.identification
    assert reply_address(sent, policy) == ReplyAddress(HA, 434, COA, 40000)


def test_132_is_signed_for_the_mobile_node_only(mn, policy, node) -> None:
    """132 because the FA-HA extension is missing: signed for the authentic mobile node, not for the
    foreign agent, whose authenticator did not verify (no signing oracle for the FA key either)."""
    fa_sa = SecurityAssociation(600, FA_KEY)
    verdict = run(mn.request(), policy, node, Arrival(FA, 434, HA), ForeignAgentRecord(FA, (fa_sa,)))
    reply = pull_registration_reply(encode_reply(verdict))
    assert reply.code == ReplyCode.FA_FAILED_AUTHENTICATION
    assert verify(reply.raw, reply.mn_ha_auth, mn.sa)
    assert reply.fa_ha_auth is None


def test_a_denial_is_signed_for_a_foreign_agent_that_authenticated(mn, policy, node) -> None:
    fa_sa = SecurityAssociation(600, FA_KEY)
    relayed = Registration(sa=mn.sa, fa_sa=fa_sa).request(identification=5)  # authentic, stale: 133
    verdict = run(relayed, policy, node, Arrival(FA, 434, HA), ForeignAgentRecord(FA, (fa_sa,)))
    reply = pull_registration_reply(encode_reply(verdict))
    assert reply.code == ReplyCode.IDENTIFICATION_MISMATCH
    assert verify(reply.raw, reply.mn_ha_auth, mn.sa) and verify(reply.raw, reply.fa_ha_auth, fa_sa)


def test_encoder_writes_exactly_the_built_reply_signed(mn, policy, node) -> None:
    """encode_reply writes bytes directly; they must be build_reply's message, signed by the codec."""
    from ha.protocol import ExtensionType, push_registration_reply

    fa_sa = SecurityAssociation(600, FA_KEY)
    signer = Registration(sa=mn.sa, fa_sa=fa_sa)
    agent = ForeignAgentRecord(FA, (fa_sa,))
    requests = [
        (signer.request(), agent),
        (signer.request(before=(MobileNodeNai("mn1@example.net"),)), agent),
        (signer.request(fa_extensions=(MobileForeignChallenge(b"\x01\x02\x03"),)), agent),
        (mn.request(sign=False), None),
        (mn.request(identification=5), None),
        (mn.request(home_agent=IPv4Address("10.0.0.255")), None),
    ]
    for request, foreign_agent in requests:
        verdict = run(request, policy, node, Arrival(FA, 434, HA), foreign_agent)
        sign = {}
        if verdict.security_association is not None:
            sign[ExtensionType.MN_HA_AUTH] = verdict.security_association
        if verdict.fa_security_association is not None:
            sign[ExtensionType.FA_HA_AUTH] = verdict.fa_security_association
        assert encode_reply(verdict) == push_registration_reply(build_reply(verdict), sign=sign), verdict


def test_malformed_request_reply_is_signed_when_the_engine_passes_the_key(mn) -> None:
    data = push_registration_request(mn.request().header()) + bytes([131, 9, 1])
    with pytest.raises(ProtocolError) as info:
        pull_registration_request(data)
    unsigned = pull_registration_reply(encode_malformed_reply(info.value))
    signed = pull_registration_reply(encode_malformed_reply(info.value, security_association=mn.sa))
    assert signed.code == unsigned.code == ReplyCode.POORLY_FORMED_REQUEST
    assert (signed.lifetime, signed.home_address, signed.identification) == (0, HOA, unsigned.identification)
    assert signed.raw[: len(unsigned.raw)] == unsigned.raw
    assert verify(signed.raw, signed.mn_ha_auth, mn.sa)
    assert encode_malformed_reply(ProtocolError("unknown extension"), security_association=mn.sa) is None
