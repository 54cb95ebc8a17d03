"""RFC 3519 (UDP tunnelling through a NAT) and RFC 3543 (registration revocation) in the engine.

The foreign agent's side is built here by hand with ``struct`` and ``hmac`` (not with ``ha.protocol``):
an independent stand-in for the byte layouts (checked against tshark in tests/protocol).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from ipaddress import IPv4Address

import pytest
from engine_helpers import FA_KEY, HA, KEY, Harness, node, vr_config

from ha.dataplane.base import Capabilities, DesiredBinding
from ha.dataplane.intents import Encapsulation, EnsureTunnel, ReleaseTunnel, SetHomeRoute
from ha.engine.config import ForeignAgent, SecurityAssociation
from ha.engine.events import BindingRemoved, RemovalReason
from ha.engine.home_agent import HomeAgent
from ha.protocol import (
    MobileHomeAuth,
    RegistrationReply,
    RevocationSupport,
    UdpTunnelReply,
    pull_registration_reply,
)
from ha.protocol.revocation import RevocationPolicy
from ha.protocol.udp_tunnel import NatTraversalPolicy

HOME = "10.1.0.100"
PRIVATE_COA = "172.16.0.10"
NAT = "192.0.2.2"
FA = "198.51.100.1"
FA_SPI = 300


def request(
    *, ident: int, lifetime: int = 600, coa: str = PRIVATE_COA, flags: int = 0x20, tail: bytes = b"",
    head: bytes = b"", fa: bool = False,
) -> bytes:  # fmt: skip
    """A Registration Request built by hand: ``head`` extensions before MN-HA, ``tail`` after it."""
    fixed = struct.pack(
        "!BBHIIIQ", 1, flags, lifetime, int(IPv4Address(HOME)), int(HA), int(IPv4Address(coa)), ident
    )
    covered = fixed + head + struct.pack("!BBI", 32, 20, 256)
    out = covered + hmac.new(KEY, covered, hashlib.md5).digest() + tail
    if fa:
        out += struct.pack("!BBI", 34, 20, FA_SPI)
        out += hmac.new(FA_KEY, out, hashlib.md5).digest()
    return out


def udp_tunnel_request(flags: int = 0, encapsulation: int = 4) -> bytes:
    return struct.pack("!BBBBBBH", 144, 6, 0, 0, flags, encapsulation, 0)


def revocation_support(timestamp: int, inform: bool = True) -> bytes:
    return struct.pack("!BBHI", 137, 6, 0x8000 if inform else 0, timestamp)


def harness(**home_agent: object) -> Harness:
    config = vr_config(
        [node("mn1", HOME)],
        foreign_agents=[ForeignAgent(IPv4Address(FA), [SecurityAssociation(FA_SPI, FA_KEY)])],
        **home_agent,
    )
    return Harness(HomeAgent(config))


def send(h: Harness, data: bytes, source: str, port: int = 40000) -> RegistrationReply:
    out = h.engine.handle_datagram(
        data, source=(source, port), received_on=HA, now=h.clock.now, wallclock=h.clock.wall
    )
    assert out is not None
    return pull_registration_reply(out.data)


# --- RFC 3519 ---------------------------------------------------------------------------------------


def test_nat_detected_tunnels_to_the_mapping_with_the_reply_inside_the_mn_ha_part() -> None:
    h = harness(nat_traversal=NatTraversalPolicy(keepalive_interval=25))
    reply = send(h, request(ident=h.clock.timestamp(), head=udp_tunnel_request()), NAT, 40001)
    assert reply.code == 0
    kinds = [type(e) for e in reply.extensions]
    assert kinds == [UdpTunnelReply, MobileHomeAuth]  # 44 is covered by the MN-HA authenticator
    assert reply.extensions[0] == UdpTunnelReply(code=0, keepalive_interval=25, flags=0)
    nat = IPv4Address(NAT)
    assert h.plane.drain(h.engine)[:2] == [
        EnsureTunnel(nat, Encapsulation.IP_IN_UDP),
        SetHomeRoute(IPv4Address(HOME), (nat,), False, 40001),
    ]
    (info,) = h.engine.bindings_of(IPv4Address(HOME))
    assert info.udp_tunnel and info.care_of_address == IPv4Address(PRIVATE_COA)
    assert (info.source_address, info.source_port) == (nat, 40001)
    assert h.engine.statistics.udp_tunnel_accepted == 1

    # A renewal from a new NAT port (the NAT lost its state) moves the tunnel; the same port does not.
    send(h, request(ident=h.clock.timestamp(), head=udp_tunnel_request()), NAT, 40001)
    assert h.plane.drain(h.engine) == []
    send(h, request(ident=h.clock.timestamp(), head=udp_tunnel_request()), NAT, 40777)
    assert h.plane.drain(h.engine) == [SetHomeRoute(IPv4Address(HOME), (nat,), False, 40777)]
    assert h.engine.bindings_of(IPv4Address(HOME))[0].source_port == 40777

    # Deregistration: no UDP Tunnel Reply (RFC 3519 §3.2), the tunnel is released.
    reply = send(h, request(ident=h.clock.timestamp(), lifetime=0, head=udp_tunnel_request()), NAT, 40777)
    assert reply.code == 0 and [type(e) for e in reply.extensions] == [MobileHomeAuth]
    assert ReleaseTunnel(nat, Encapsulation.IP_IN_UDP) in h.plane.drain(h.engine)


def test_expiry_releases_the_udp_tunnel() -> None:
    h = harness()
    send(h, request(ident=h.clock.timestamp(), lifetime=30, head=udp_tunnel_request()), NAT)
    h.plane.drain(h.engine)
    assert h.expire(31) == 1
    assert ReleaseTunnel(IPv4Address(NAT), Encapsulation.IP_IN_UDP) in h.plane.drain(h.engine)
    assert h.plane.tunnels_refs == {}


@pytest.mark.parametrize(
    ("policy", "source", "ext", "available", "code", "reply_flags"),
    [
        (NatTraversalPolicy(enabled=False), NAT, udp_tunnel_request(), True, 142, None),
        (NatTraversalPolicy(), NAT, udp_tunnel_request(encapsulation=47), True, 142, None),
        (NatTraversalPolicy(), NAT, udp_tunnel_request(), False, 142, None),  # ipip data plane
        (NatTraversalPolicy(force_allowed=False), PRIVATE_COA, udp_tunnel_request(0x80), True, 142, None),
        (NatTraversalPolicy(), PRIVATE_COA, udp_tunnel_request(0x80), True, 0, 0x8000),  # forced
        (NatTraversalPolicy(), PRIVATE_COA, udp_tunnel_request(), True, 0, "none"),  # no NAT, no F
        (NatTraversalPolicy(enabled=False), PRIVATE_COA, udp_tunnel_request(), True, 0, "none"),
    ],
)
def test_udp_tunnel_policy(
    policy: NatTraversalPolicy, source: str, ext: bytes, available: bool, code: int, reply_flags: object
) -> None:
    h = harness(nat_traversal=policy)
    h.engine.set_capabilities(Capabilities(udp_tunnels=available))
    reply = send(h, request(ident=h.clock.timestamp(), head=ext), source)
    assert reply.code == code
    tunnel = reply.first(UdpTunnelReply)
    if reply_flags is None or reply_flags == "none":
        assert tunnel is None
    else:
        assert tunnel is not None and tunnel.flags == reply_flags
    if code == 142:
        assert h.engine.statistics.denied_by_code[142] == 1 and len(h.engine) == 0


def test_unauthenticated_udp_tunnel_request_is_ignored() -> None:
    """144 appended after the MN-HA extension (no FA-HA covers it): an attacker could have added it."""
    h = harness()
    reply = send(h, request(ident=h.clock.timestamp(), tail=udp_tunnel_request()), NAT)
    assert reply.code == 0 and reply.first(UdpTunnelReply) is None
    assert not h.engine.bindings_of(IPv4Address(HOME))[0].udp_tunnel


def test_simultaneous_bindings_are_not_kept_with_a_udp_tunnel() -> None:
    h = harness(simultaneous_bindings=2)
    reply = send(h, request(ident=h.clock.timestamp(), flags=0xA0, head=udp_tunnel_request()), NAT)
    assert reply.code == 1  # accepted, simultaneous bindings unsupported (one NAT mapping)


# --- RFC 3543 ---------------------------------------------------------------------------------------


def fa_signed(fixed: bytes) -> bytes:
    out = fixed + struct.pack("!BBI", 34, 20, FA_SPI)
    return out + hmac.new(FA_KEY, out, hashlib.md5).digest()


def fa_register(
    h: Harness, *, timestamp: int = 1000, coa: str = FA, inform: bool = True
) -> RegistrationReply:
    support = revocation_support(timestamp, inform)
    data = request(ident=h.clock.timestamp(), coa=coa, flags=0, tail=support, fa=True)
    return send(h, data, FA, 434)


def check_fa_ha(data: bytes) -> None:
    assert data[-22:-16] == struct.pack("!BBI", 34, 20, FA_SPI)
    assert hmac.new(FA_KEY, data[:-16], hashlib.md5).digest() == data[-16:]


def test_revocation_is_negotiated_and_echoed_before_fa_ha() -> None:
    h = harness()
    reply = fa_register(h)
    assert reply.code == 0
    names = [type(e).__name__ for e in reply.extensions]
    assert names == ["MobileHomeAuth", "RevocationSupport", "ForeignHomeAuth"]
    ours = reply.first(RevocationSupport)
    assert ours.flags == RevocationSupport.I_BIT and ours.timestamp == int(h.clock.wall)
    check_fa_ha(reply.raw)
    assert h.engine.bindings_of(IPv4Address(HOME))[0].revocation


def test_no_revocation_without_fa_association_or_when_disabled() -> None:
    h = harness(revocation=RevocationPolicy(enabled=False))
    assert fa_register(h).first(RevocationSupport) is None
    h = harness()
    # From a source that is no configured foreign agent: the FA-HA extension is ignored, so is 137.
    data = request(ident=h.clock.timestamp(), coa=FA, flags=0, tail=revocation_support(5), fa=True)
    assert send(h, data, "198.51.100.99", 434).first(RevocationSupport) is None


def test_clear_bindings_revokes_and_retransmits_until_acknowledged() -> None:
    h = harness(revocation=RevocationPolicy(retransmit_interval=1, max_attempts=3))
    fa_register(h)
    h.plane.drain(h.engine)
    assert h.engine.clear_bindings() == 1
    (first,) = h.engine.drain_datagrams()
    assert first.destination == (FA, 434) and first.source == HA
    data = first.data
    kind, _rsv, flags, home, hda, fda, revocation_id = struct.unpack_from("!BBHIIII", data)
    assert (kind, flags) == (7, 0xC000)  # A (home agent revoking) and I (the agent offered it)
    assert (IPv4Address(home), IPv4Address(hda), IPv4Address(fda)) == (IPv4Address(HOME), HA, IPv4Address(FA))
    assert revocation_id > int(h.clock.wall) - 1
    check_fa_ha(data)
    assert h.engine.statistics.revocations_sent == 1

    due = h.engine.get_timer()
    assert due is not None and due - h.clock.now == pytest.approx(1.0, abs=0.01)
    h.clock.advance(1.01)
    h.engine.handle_timer(h.clock.now)
    (again,) = h.engine.drain_datagrams()
    assert again.data == data and h.engine.statistics.revocations_retransmitted == 1

    ack = fa_signed(struct.pack("!BBHII", 15, 0, 0, int(IPv4Address(HOME)), revocation_id))
    assert h.engine.handle_datagram(ack, source=(FA, 434), received_on=HA, now=h.clock.now,
                                    wallclock=h.clock.wall) is None  # fmt: skip
    assert h.engine.statistics.revocation_acks_received == 1
    assert h.engine.get_timer() is None  # nothing left to retransmit or expire


@pytest.mark.parametrize("offered", [True, False], ids=["agent-offers-I", "agent-without-I"])
def test_the_i_bit_follows_the_agents_offer_and_the_ack_says_we_informed_nobody(offered: bool) -> None:
    """RFC 3543 I bit (docs/protocol-decisions.md §11): echoed only when the agent offered it; an
    HA revocation asks the agent to inform the node only then; our ack never claims we informed it."""
    h = harness()
    reply = fa_register(h, timestamp=5000, inform=offered)
    assert reply.first(RevocationSupport).flags == (RevocationSupport.I_BIT if offered else 0)
    assert reply.raw[-30:-26] == bytes((137, 6, 0x80 if offered else 0, 0))  # the bytes, not our codec
    assert h.engine.clear_bindings() == 1
    (revocation,) = h.engine.drain_datagrams()
    flags = struct.unpack_from("!H", revocation.data, 2)[0]
    assert flags == (0xC000 if offered else 0x8000)  # A always; I only as negotiated

    # The agent revokes with I set (it asks us to inform the node): we cannot reach a node behind a
    # foreign agent but through that agent, so the acknowledgement's I stays clear.
    fa_register(h, timestamp=6000, inform=offered)
    revoke = struct.pack(
        "!BBHIIII", 7, 0, 0x4000, int(IPv4Address(HOME)), int(HA), int(IPv4Address(FA)), 6001
    )
    out = h.engine.handle_datagram(
        fa_signed(revoke), source=(FA, 434), received_on=HA, now=h.clock.now, wallclock=h.clock.wall
    )
    assert out is not None and out.data[0] == 15
    assert struct.unpack_from("!H", out.data, 2)[0] == 0
    assert len(h.engine) == 0 and h.engine.statistics.revocations_received == 1


def test_unacknowledged_revocation_is_given_up() -> None:
    h = harness(revocation=RevocationPolicy(retransmit_interval=1, max_attempts=3))
    fa_register(h)
    h.engine.clear_bindings()
    h.engine.drain_datagrams()
    sent = 1
    while (due := h.engine.get_timer()) is not None:
        h.clock.now = due
        h.engine.handle_timer(h.clock.now)
        sent += len(h.engine.drain_datagrams())
    assert sent == 3
    assert h.engine.statistics.revocations_unacknowledged == 1


def test_forged_or_stale_acknowledgements_change_nothing() -> None:
    h = harness()
    fa_register(h)
    h.engine.clear_bindings()
    (first,) = h.engine.drain_datagrams()
    revocation_id = struct.unpack_from("!I", first.data, 16)[0]
    forged = bytearray(fa_signed(struct.pack("!BBHII", 15, 0, 0, int(IPv4Address(HOME)), revocation_id)))
    forged[-1] ^= 1
    wrong_id = fa_signed(struct.pack("!BBHII", 15, 0, 0, int(IPv4Address(HOME)), revocation_id + 7))
    for data in (bytes(forged), wrong_id, b"\x0f\x00"):
        h.engine.handle_datagram(
            data, source=(FA, 434), received_on=HA, now=h.clock.now, wallclock=h.clock.wall
        )
    assert h.engine.statistics.revocations_discarded == 3
    assert h.engine.statistics.revocation_acks_received == 0
    assert h.engine.get_timer() is not None  # still retransmitting


def test_foreign_agent_revocation_removes_the_binding_and_is_acknowledged() -> None:
    h = harness()
    fa_register(h, timestamp=5000)
    h.plane.drain(h.engine)
    h.events()
    revocation = fa_signed(
        struct.pack("!BBHIIII", 7, 0, 0, int(IPv4Address(HOME)), int(HA), int(IPv4Address(FA)), 5001)
    )
    out = h.engine.handle_datagram(
        revocation, source=(FA, 434), received_on=HA, now=h.clock.now, wallclock=h.clock.wall
    )
    assert out is not None and out.destination == (FA, 434)
    kind, _rsv, flags, home, revocation_id = struct.unpack_from("!BBHII", out.data)
    assert (kind, flags, IPv4Address(home), revocation_id) == (15, 0, IPv4Address(HOME), 5001)
    check_fa_ha(out.data)
    assert len(h.engine) == 0
    removed = [e for e in h.events() if isinstance(e, BindingRemoved)]
    assert [e.reason for e in removed] == [RemovalReason.REVOKED]
    assert h.engine.statistics.revocations_received == 1
    assert h.engine.drain_datagrams() == []  # the agent's own revocation is not revoked back

    # The same revocation again (a replay) and one older than the registration: discarded.
    for stale in (revocation, fa_signed(revocation[:20].replace(b"\x00\x00\x13\x89", b"\x00\x00\x03\xe8"))):
        assert h.engine.handle_datagram(stale, source=(FA, 434), received_on=HA, now=h.clock.now,
                                        wallclock=h.clock.wall) is None  # fmt: skip
    assert h.engine.statistics.revocations_discarded == 2


def test_unauthenticated_revocation_is_discarded() -> None:
    h = harness()
    fa_register(h, timestamp=5000)
    fixed = struct.pack("!BBHIIII", 7, 0, 0, int(IPv4Address(HOME)), int(HA), int(IPv4Address(FA)), 6000)
    bad = bytearray(fa_signed(fixed))
    bad[-3] ^= 0x40
    for source, data in ((FA, bytes(bad)), ("198.51.100.99", fa_signed(fixed)), (FA, fixed)):
        assert h.engine.handle_datagram(data, source=(source, 434), received_on=HA, now=h.clock.now,
                                        wallclock=h.clock.wall) is None  # fmt: skip
    assert len(h.engine) == 1 and h.engine.statistics.revocations_discarded == 3


def test_config_change_that_drops_the_node_revokes() -> None:
    h = harness()
    fa_register(h)
    config = vr_config(
        [], foreign_agents=[ForeignAgent(IPv4Address(FA), [SecurityAssociation(FA_SPI, FA_KEY)])]
    )
    h.engine.apply(h.engine.prepare(config))
    (revocation,) = h.engine.drain_datagrams()
    assert revocation.data[0] == 7


def test_a_udp_tunnel_binding_survives_the_journal() -> None:
    """The daemon's journal record keeps the UDP tunnel: a restart restores the tunnel to the mapping."""
    from mipha.runtime import record_of

    h = harness()
    send(h, request(ident=h.clock.timestamp(), head=udp_tunnel_request()), NAT, 40001)
    (raw,) = h.engine.raw_bindings_after(None, 10)
    record = record_of("default", h.engine, raw)
    fresh = HomeAgent(h.engine.config)
    assert fresh.restore_binding(record, now=h.clock.now, wallclock=h.clock.wall)
    (desired,) = list(fresh.desired_bindings())
    nat = IPv4Address(NAT)
    assert desired == DesiredBinding(IPv4Address(HOME), (nat,), Encapsulation.IP_IN_UDP, False, 40001)
    assert fresh.bindings_of(IPv4Address(HOME))[0].udp_tunnel


def _reconfigure(h: Harness, nodes: list, **home_agent: object) -> None:
    config = vr_config(
        nodes,
        foreign_agents=[ForeignAgent(IPv4Address(FA), [SecurityAssociation(FA_SPI, FA_KEY)])],
        **home_agent,
    )
    h.engine.apply(h.engine.prepare(config))


def test_config_changes_that_end_a_binding_revoke_it_and_others_do_not() -> None:
    """A configuration change that removes a negotiated binding revokes it (reason ``cleared``); a key
    rotation and draining (``enabled`` false) remove nothing, so they revoke nothing (docs §11)."""
    # The node re-addressed: its binding for the old home address ends.
    h = harness()
    fa_register(h)
    h.events()
    _reconfigure(h, [node("mn1", "10.1.0.101")])
    removed = [e for e in h.events() if isinstance(e, BindingRemoved)]
    datagrams = h.engine.drain_datagrams()
    assert len(h.engine) == 0 and [e.reason for e in removed] == [RemovalReason.CLEARED]
    assert [d.data[0] for d in datagrams] == [7] and datagrams[0].destination == (FA, 434)

    # A new key for the node: the binding stays until its lifetime ends (the next renewal needs the
    # new key); nothing is revoked.
    h = harness()
    fa_register(h)
    _reconfigure(h, [node("mn1", HOME, security_associations=[SecurityAssociation(256, b"\x01" * 16)])])
    assert len(h.engine) == 1 and h.engine.drain_datagrams() == []

    # Draining: the binding stays, nothing is revoked; clearing it then revokes.
    h = harness()
    fa_register(h)
    _reconfigure(h, [node("mn1", HOME)], enabled=False)
    assert len(h.engine) == 1 and h.engine.drain_datagrams() == []
    assert h.engine.clear_bindings() == 1
    assert [d.data[0] for d in h.engine.drain_datagrams()] == [7]


def test_revocation_negotiation_survives_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The journal keeps who negotiated revocation (agent, timestamps, I bit): after a restart from the
    journal file, clearing the binding still revokes it, with an identifier above the negotiated one."""
    from mipha.journal import BindingJournal
    from mipha.runtime import record_of

    h = harness()
    fa_register(h, timestamp=5000)
    (raw,) = h.engine.raw_bindings_after(None, 10)
    (ha_timestamp,) = [n.ha_timestamp for n in h.engine._revocations.negotiated.values()]
    journal = BindingJournal(tmp_path / "bindings.journal")
    journal.load()
    journal.open()
    journal.record([record_of("default", h.engine, raw)])
    journal.close()

    (record,) = BindingJournal(tmp_path / "bindings.journal").load().values()
    assert record.revocation == {
        "foreign_agent": FA, "fa_timestamp": 5000, "ha_timestamp": ha_timestamp, "inform": True,
    }  # fmt: skip
    fresh = HomeAgent(h.engine.config)
    assert fresh.restore_binding(record, now=h.clock.now, wallclock=h.clock.wall)
    assert fresh.clear_bindings() == 1
    (revocation,) = fresh.drain_datagrams()
    assert revocation.destination == (FA, 434)
    kind, _rsv, flags, home, _hda, _fda, revocation_id = struct.unpack_from("!BBHIIII", revocation.data)
    assert (kind, flags, IPv4Address(home)) == (7, 0xC000, IPv4Address(HOME))
    assert revocation_id > ha_timestamp
    check_fa_ha(revocation.data)

    # A journaled negotiation whose agent the configuration no longer has is dropped.
    record.revocation = dict(record.revocation, foreign_agent="198.51.100.77")
    fresh = HomeAgent(h.engine.config)
    assert fresh.restore_binding(record, now=h.clock.now, wallclock=h.clock.wall)
    assert fresh.clear_bindings() == 1 and fresh.drain_datagrams() == []
