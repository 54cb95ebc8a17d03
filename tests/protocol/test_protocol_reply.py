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


def test_denial_has_lifetime_zero_and_is_signed_when_the_key_is_known(mn, policy, node, arrival) -> None:
    request = mn.request(sign=False, lifetime=600)
    reply = pull_registration_reply(encode_reply(run(request, policy, node, arrival)))
    assert (reply.code, reply.lifetime) == (ReplyCode.MN_FAILED_AUTHENTICATION, 0)
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
