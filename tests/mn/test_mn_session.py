"""The simulated mobile node's sans-I/O session: requests it builds, replies it checks."""

from __future__ import annotations

from ipaddress import IPv4Address

from ha.mn.session import MobileNodeSession
from ha.protocol import (
    ExtensionType,
    MobileHomeAuth,
    MobileNodeNai,
    RegistrationReply,
    SecurityAssociation,
    pull_registration_request,
    push_registration_reply,
)
from ha.protocol.auth import verify
from ha.protocol.constants import NTP_UNIX_OFFSET, AuthAlgorithm, ReplayProtection

KEY = bytes(range(16))
WALL = 1_790_000_000.25


def session(**kwargs) -> MobileNodeSession:
    sa = kwargs.pop("sa", SecurityAssociation(300, KEY))
    return MobileNodeSession(
        IPv4Address("192.0.2.1"), IPv4Address("10.1.0.1"), IPv4Address("203.0.113.5"), sa, **kwargs
    )


def reply_for(
    request_ident: int, *, code: int = 0, sa: SecurityAssociation | None = None, nai: str | None = None
):
    sa = sa or SecurityAssociation(300, KEY)
    extensions = ([MobileNodeNai(nai)] if nai else []) + [MobileHomeAuth(sa.spi)]
    reply = RegistrationReply(
        code, 600, IPv4Address("10.1.0.1"), IPv4Address("192.0.2.1"), request_ident, tuple(extensions)
    )
    return push_registration_reply(reply, sign={ExtensionType.MN_HA_AUTH: sa})


def test_built_request_parses_and_authenticates_for_both_algorithms():
    for algorithm in AuthAlgorithm:
        sa = SecurityAssociation(300, KEY, algorithm)
        s = session(sa=sa, nai="a@example.net", lifetime=120)
        ident = s.next_identification(WALL)
        request = pull_registration_request(s.build(ident))
        assert (request.lifetime, request.identification, request.nai) == (120, ident, "a@example.net")
        assert verify(request.raw, request.mn_ha_auth, sa)
        # Re-signing the template for a new identification keeps it valid.
        again = pull_registration_request(s.build(s.next_identification(WALL), lifetime=0))
        assert again.lifetime == 0 and verify(again.raw, again.mn_ha_auth, sa)


def test_timestamps_increase_and_carry_ntp_seconds():
    s = session()
    first, second = s.next_identification(WALL), s.next_identification(WALL + 0.5)
    assert first >> 32 == int(WALL) + NTP_UNIX_OFFSET
    assert second > first


def test_reply_check_authenticates_and_matches_the_identification():
    s = session()
    ident = s.next_identification(WALL)
    outcome = s.check_reply(reply_for(ident), ident, WALL)
    assert outcome is not None and outcome.accepted and outcome.authenticated
    forged = s.check_reply(reply_for(ident, sa=SecurityAssociation(300, b"f" * 16)), ident, WALL)
    assert forged is not None and not forged.authenticated
    assert s.check_reply(reply_for(ident + 1), ident, WALL) is None  # not an answer to this request
    assert MobileNodeSession.reply_token(reply_for(ident)) == ident & 0xFFFFFFFF


def test_133_teaches_the_clock_offset_and_nonce_replies_the_nonce():
    s = session()
    ident = s.next_identification(WALL)
    ha_time = int(WALL) + NTP_UNIX_OFFSET + 100
    s.check_reply(reply_for((ha_time << 32) | (ident & 0xFFFFFFFF), code=133), ident, WALL)
    assert s.clock_offset == 100
    assert s.next_identification(WALL) >> 32 == ha_time
    n = session(sa=SecurityAssociation(300, KEY, replay_protection=ReplayProtection.NONCE))
    ident = n.next_identification(WALL)
    n.check_reply(reply_for((0xABCDEF << 32) | (ident & 0xFFFFFFFF), code=133, sa=n.sa), ident, WALL)
    assert n.ha_nonce == 0xABCDEF and n.next_identification(WALL) >> 32 == 0xABCDEF


def test_a_load_session_names_the_home_address_it_was_given_and_its_renewals_come_from_the_cache():
    """``adopt_home_address`` (``mipha mn load``): after an accepted reply from a pool the node asks with
    that address, as RFC 2794 nodes do, so nodes sharing a care-of address renew each under its own
    renewal cache key; without it every request keeps 0.0.0.0."""
    import time

    from ha.engine.config import AddressPool, HomeAgentConfig, MobileNode, VirtualRouterConfig
    from ha.engine.home_agent import HomeAgent

    ha_address, coa = IPv4Address("192.0.2.1"), IPv4Address("198.51.100.9")
    sa = SecurityAssociation(256, b"k" * 16)
    engine = HomeAgent(
        VirtualRouterConfig(
            "vr",
            home_agent=HomeAgentConfig(ha_address),
            address_pools=[AddressPool("p", ((IPv4Address("10.0.0.1"), IPv4Address("10.0.0.9")),))],
            mobile_nodes=[
                MobileNode(f"n{i}", address_pool="p", nai=f"n{i}@x", security_associations=[sa])
                for i in range(3)
            ],
        )
    )
    unspecified = IPv4Address("0.0.0.0")
    sessions = [MobileNodeSession(ha_address, unspecified, coa, sa, nai=f"n{i}@x") for i in range(3)]
    sessions[2].adopt_home_address = False
    for session in sessions[:2]:
        session.adopt_home_address = True
    wall = time.time()
    for r in range(4):
        for session in sessions:
            identification = session.next_identification(wall + r * 0.01)
            out = engine.handle_datagram(
                session.build(identification),
                source=(str(coa), 434),
                received_on=ha_address,
                now=1.0,
                wallclock=wall,
            )
            outcome = session.check_reply(out.data, identification, wall)
            assert outcome is not None and outcome.accepted and outcome.authenticated
    assert [str(s.home_address) for s in sessions] == ["10.0.0.1", "10.0.0.2", "0.0.0.0"]
    assert engine.statistics.accepted == 12 and engine.binding_count == 3
    entries = {entry.node.name for entry in (engine._renewals or {}).values()}
    assert {"n0", "n1"} <= entries
