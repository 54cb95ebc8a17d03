"""RFC 3519 and RFC 3543 bytes as mipha writes them, decoded by tshark 4.0's ``mip`` dissector.

Replies from ``decide`` + ``udp_tunnel_step`` / ``revocation_step`` + ``encode_reply``, revocation
messages from ``push_revocation(_ack)``, and the tunnel data header in front of an inner ICMP packet.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from protocol_support import FA_KEY, HA, HOA, KEY, NOW, WALLCLOCK
from scapy.layers.inet import ICMP, IP, UDP
from scapy.packet import Raw
from scapy.utils import wrpcap

from ha.protocol import (
    Accept,
    Arrival,
    Deny,
    ExtensionType,
    ForeignAgentRecord,
    ForeignHomeAuth,
    HomeAgentPolicy,
    MobileHomeAuth,
    MobileNodeRecord,
    RegistrationRequest,
    RequestFlags,
    RevocationSupport,
    SecurityAssociation,
    UdpTunnelRequest,
    decide,
    encode_reply,
    ntp_timestamp,
    pull_registration_reply,
    pull_registration_request,
    push_registration_request,
)
from ha.protocol.errors import ProtocolError
from ha.protocol.revocation import (
    Revocation,
    RevocationAck,
    check_revocation_id,
    next_revocation_id,
    pull_revocation,
    pull_revocation_ack,
    push_revocation,
    push_revocation_ack,
    revocation_step,
    verify_fa_ha,
)
from ha.protocol.udp_tunnel import IP_IN_UDP_HEADER, NatTraversalPolicy, udp_tunnel_step

SA = SecurityAssociation(256, KEY)
FA_SA = SecurityAssociation(600, FA_KEY)
PRIVATE = IPv4Address("172.16.0.10")
NAT = IPv4Address("192.0.2.2")
FA = IPv4Address("198.51.100.1")

FIELDS = [
    "mip.type",
    "mip.code",
    "mip.ext.type",
    "mip.ext.utrp.code",
    "mip.ext.utrp.f",
    "mip.ext.utrp.keepalive",
    "mip.ext.rev.i",
    "mip.ext.rev.tstamp",
    "mip.rev.a",
    "mip.rev.i",
    "mip.homeaddr",
    "mip.rev.hda",
    "mip.rev.fda",
    "mip.revid",
    "mip.ack.i",
    "mip.auth.spi",
    "mip.nattt.nexthdr",
    "icmp.type",
    "_ws.malformed",
    "_ws.expert",
]


def tshark(payloads: list[bytes]) -> list[dict[str, str]]:
    if shutil.which("tshark") is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is missing (it is in the Makefile's APT_PACKAGES)")
        pytest.skip("tshark is not installed")
    with tempfile.TemporaryDirectory(prefix="mipha-3519-") as tmp:
        pcap = Path(tmp) / "mip.pcap"
        packets = [
            IP(src="192.0.2.2", dst="10.0.0.1") / UDP(sport=4500, dport=434) / Raw(p) for p in payloads
        ]
        wrpcap(str(pcap), packets)
        command = ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
        command += ["-E", "aggregator=,"]
        for field in FIELDS:
            command += ["-e", field]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=True, stdin=subprocess.DEVNULL
        )
    rows = [line.split("|") for line in result.stdout.splitlines() if line]
    assert len(rows) == len(payloads)
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def request(*extensions: object, lifetime: int = 600, fa: bool = False) -> RegistrationRequest:
    signers = {ExtensionType.MN_HA_AUTH: SA}
    if fa:
        signers[ExtensionType.FA_HA_AUTH] = FA_SA
    message = RegistrationRequest(
        RequestFlags.D | RequestFlags.T,
        lifetime,
        HOA,
        HA,
        PRIVATE if not fa else FA,
        ntp_timestamp(WALLCLOCK),
        tuple(extensions),  # type: ignore[arg-type]
    )
    return pull_registration_request(push_registration_request(message, sign=signers))


def verdict(req: RegistrationRequest, source: IPv4Address, fa: bool = False) -> Accept | Deny:
    return decide(
        req,
        policy=HomeAgentPolicy(address=HA),
        mobile_node=MobileNodeRecord("mn1", (SA,), home_address=HOA),
        foreign_agent=ForeignAgentRecord(FA, (FA_SA,)) if fa else None,
        arrival=Arrival(source, 4500, HA),
        now=NOW,
        wallclock=WALLCLOCK,
    )


def test_udp_tunnel_reply_and_142_decode_in_tshark() -> None:
    nat_request = request(UdpTunnelRequest(), MobileHomeAuth(256))
    accepted = udp_tunnel_step(verdict(nat_request, NAT), Arrival(NAT, 4500, HA), NatTraversalPolicy())
    assert isinstance(accepted, Accept) and accepted.udp_tunnel is not None
    assert (accepted.udp_tunnel.address, accepted.udp_tunnel.port) == (int(NAT), 4500)
    forced_request = request(UdpTunnelRequest(flags=0x80), MobileHomeAuth(256))
    forced = udp_tunnel_step(
        verdict(forced_request, PRIVATE), Arrival(PRIVATE, 4500, HA), NatTraversalPolicy()
    )
    assert isinstance(forced, Accept) and forced.udp_tunnel is not None and forced.udp_tunnel.forced
    denied = udp_tunnel_step(
        verdict(nat_request, NAT), Arrival(NAT, 4500, HA), NatTraversalPolicy(enabled=False)
    )
    assert isinstance(denied, Deny) and denied.code == 142

    replies = [encode_reply(accepted), encode_reply(forced), encode_reply(denied)]
    for data in replies:  # the MN-HA authenticator covers the UDP Tunnel Reply
        reply = pull_registration_reply(data)
        mn_ha = reply.mn_ha_auth
        assert mn_ha is not None and SA.authenticator(data[: mn_ha.offset + 6]) == mn_ha.authenticator
    rows = tshark(replies)
    assert [r["mip.ext.type"] for r in rows] == ["44,32", "44,32", "32"]
    assert [r["mip.ext.utrp.f"] for r in rows] == ["0", "1", ""]
    assert [r["mip.ext.utrp.code"] for r in rows] == ["0", "0", ""]
    assert rows[0]["mip.ext.utrp.keepalive"] == "110"
    assert rows[2]["mip.code"] == "142"
    assert all(r["_ws.malformed"] == "" for r in rows)


def test_revocation_support_is_echoed_before_fa_ha_and_decodes() -> None:
    offered = request(MobileHomeAuth(256), RevocationSupport(0x8000, 777), ForeignHomeAuth(600), fa=True)
    accepted = verdict(offered, FA, fa=True)
    assert isinstance(accepted, Accept)
    accepted = revocation_step(accepted, int(WALLCLOCK))
    assert accepted.revocation == RevocationSupport(0x8000, int(WALLCLOCK))
    data = encode_reply(accepted)
    (row,) = tshark([data])
    assert row["mip.ext.type"] == "32,137,34"
    assert (row["mip.ext.rev.i"], row["mip.ext.rev.tstamp"]) == ("1", str(int(WALLCLOCK)))
    assert row["_ws.malformed"] == ""
    # Without a verified FA-HA (no record for the agent) nothing is negotiated.
    plain = verdict(offered, FA)
    assert isinstance(plain, Accept) and revocation_step(plain, 1).revocation is None


def test_revocation_messages_round_trip_and_decode() -> None:
    revocation = Revocation(HOA, HA, FA, 0x64000001, home_agent_revoking=True, inform=True)
    ack = RevocationAck(HOA, 0x64000001, inform=False)
    data = push_revocation(revocation, FA_SA)
    ack_data = push_revocation_ack(ack, FA_SA)
    parsed = pull_revocation(data)
    assert replace(parsed, extensions=()) == revocation
    assert verify_fa_ha(parsed, ForeignAgentRecord(FA, (FA_SA,)))
    assert not verify_fa_ha(parsed, ForeignAgentRecord(FA, (SecurityAssociation(600, KEY),)))
    assert replace(pull_revocation_ack(ack_data), extensions=()) == ack
    for broken in (data[:19], b"\x07" + data[1:-1], ack_data[:11], b"\x03" + ack_data[1:]):
        with pytest.raises(ProtocolError):
            pull_revocation(broken) if broken[0] == 7 else pull_revocation_ack(broken)

    rev_row, ack_row = tshark([data, ack_data])
    assert (rev_row["mip.type"], rev_row["mip.rev.a"], rev_row["mip.rev.i"]) == ("7", "1", "1")
    assert (rev_row["mip.homeaddr"], rev_row["mip.rev.hda"], rev_row["mip.rev.fda"]) == (
        str(HOA),
        str(HA),
        str(FA),
    )
    assert rev_row["mip.revid"] == str(0x64000001) and rev_row["mip.ext.type"] == "34"
    assert int(rev_row["mip.auth.spi"], 16) == 600
    assert (ack_row["mip.type"], ack_row["mip.ack.i"], ack_row["mip.revid"]) == ("15", "0", str(0x64000001))
    assert rev_row["_ws.malformed"] == ack_row["_ws.malformed"] == ""


def test_tunnel_data_header_decodes_with_its_inner_packet() -> None:
    inner = bytes(IP(src=str(HOA), dst="10.0.0.20") / ICMP(type=8) / Raw(b"x" * 20))
    (row,) = tshark([IP_IN_UDP_HEADER + inner])
    assert (row["mip.type"], row["mip.nattt.nexthdr"], row["icmp.type"]) == ("4", "4", "8")
    assert row["_ws.malformed"] == ""
    assert struct.unpack("!BBH", IP_IN_UDP_HEADER) == (4, 4, 0)


def test_revocation_identifiers_follow_section_5() -> None:
    assert next_revocation_id(1000.7, 0) == 1000
    assert next_revocation_id(1000.7, 1000) == 1001  # strictly increasing within one second
    assert next_revocation_id(5.0, 0xFFFF_FFFF) == 5  # serial arithmetic across the wrap
    assert check_revocation_id(1001, 1000, None) and check_revocation_id(1000, 1000, None)
    assert not check_revocation_id(999, 1000, None)
    assert not check_revocation_id(1001, 1000, 1001)  # a replay of the last one
    assert check_revocation_id(3, 0xFFFF_FFF0, None)
