"""Independent decoders read what ha.protocol writes, and ha.protocol reads what scapy writes.

Peers: scapy's ``mobileip`` layer (fixed parts only) and tshark's ``mip`` dissector (every extension;
it does not check authenticators, so those are compared as bytes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from protocol_support import HA, HOA, KEY
from scapy.layers.inet import IP, UDP
from scapy.layers.mobileip import MobileIP, MobileIPRRP, MobileIPRRQ
from scapy.packet import Raw
from scapy.utils import wrpcap
from test_protocol_codec import full_request

from ha.protocol import (
    ExtensionType,
    MobileHomeAuth,
    MobileNodeNai,
    RegistrationReply,
    RequestFlags,
    SecurityAssociation,
    UdpTunnelReply,
    compute_authenticator,
    pull_registration_request,
    push_registration_reply,
    push_registration_request,
    verify,
)

SA = SecurityAssociation(256, KEY)


def test_scapy_request_is_read_field_by_field() -> None:
    packet = MobileIP(type=1) / MobileIPRRQ(
        flags=0x82,
        lifetime=1234,
        homeaddr="10.0.0.5",
        haaddr="10.0.0.1",
        coaddr="192.0.2.10",
        id=0x1122334455667788,
    )
    # scapy has no extensions: append a Mobile-Home extension signed over scapy's bytes
    fixed = bytes(packet)
    covered = fixed + bytes([32, 20]) + (256).to_bytes(4, "big")
    data = covered + compute_authenticator(SA.algorithm, SA.key, covered)
    request = pull_registration_request(data)
    assert request.flags == RequestFlags.S | RequestFlags.T
    assert (request.lifetime, request.home_address, request.home_agent) == (1234, HOA, HA)
    assert request.care_of_address == IPv4Address("192.0.2.10")
    assert request.identification == 0x1122334455667788
    assert verify(request.raw, request.mn_ha_auth, SA)


def test_scapy_reads_our_reply() -> None:
    reply = RegistrationReply(1, 900, HOA, HA, 0xE8FE6F8012345678, (MobileHomeAuth(256),))
    parsed = MobileIP(push_registration_reply(reply, sign={ExtensionType.MN_HA_AUTH: SA}))
    rrp = parsed[MobileIPRRP]
    assert (parsed.type, rrp.code, rrp.lifetime) == (3, 1, 900)
    assert (rrp.homeaddr, rrp.haaddr, rrp.id) == ("10.0.0.5", "10.0.0.1", 0xE8FE6F8012345678)
    assert bytes(rrp.payload)[:6] == bytes([32, 20, 0, 0, 1, 0])


FIELDS = [
    "mip.type",
    "mip.flags",
    "mip.code",
    "mip.life",
    "mip.homeaddr",
    "mip.haaddr",
    "mip.coa",
    "mip.ext.type",
    "mip.auth.spi",
    "mip.auth.auth",
    "mip.nai",
    "mip.ext.utrq.encaptype",
    "mip.ext.utrp.keepalive",
    "mip.ext.rev.tstamp",
    "mip.ext.cvse.vendor_id",
    "_ws.malformed",
]


def _tshark(payloads: list[bytes]) -> list[dict[str, str]]:
    if shutil.which("tshark") is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is missing (it is in the Makefile's APT_PACKAGES)")
        pytest.skip("tshark is not installed")
    with tempfile.TemporaryDirectory(prefix="mipha-protocol-") as tmp:
        pcap = Path(tmp) / "mip.pcap"
        packets = [
            IP(src="192.0.2.10", dst="10.0.0.1") / UDP(sport=40000, dport=434) / Raw(payload)
            for payload in payloads
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
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def test_tshark_decodes_every_extension_we_write() -> None:
    request = full_request()
    signed_reply = push_registration_reply(
        RegistrationReply(
            0,
            600,
            HOA,
            HA,
            42,
            (MobileNodeNai("alice@example.net"), UdpTunnelReply(0, 110), MobileHomeAuth(256)),
        ),
        sign={ExtensionType.MN_HA_AUTH: SA},
    )
    rows = _tshark([push_registration_request(request), signed_reply])
    assert len(rows) == 2
    rrq, rrp = rows

    assert rrq["mip.type"] == "1" and int(rrq["mip.flags"], 16) == int(request.flags)
    assert (rrq["mip.life"], rrq["mip.homeaddr"], rrq["mip.haaddr"], rrq["mip.coa"]) == (
        "600",
        "0.0.0.0",
        "10.0.0.1",
        "192.0.2.10",
    )
    assert rrq["mip.ext.type"].split(",") == ["131", "144", "139", "32", "132", "38", "33", "137", "34"]
    assert [int(s, 16) for s in rrq["mip.auth.spi"].split(",")] == [256, 300, 400]
    assert rrq["mip.auth.auth"].split(",")[0].replace(":", "") == bytes(range(16)).hex()
    assert rrq["mip.nai"] == "alice@example.net"
    assert (rrq["mip.ext.utrq.encaptype"], rrq["mip.ext.rev.tstamp"]) == ("4", "1234567")
    assert rrq["mip.ext.cvse.vendor_id"] == "5535"
    assert rrq["_ws.malformed"] == ""

    assert (rrp["mip.type"], rrp["mip.code"], rrp["mip.life"]) == ("3", "0", "600")
    assert rrp["mip.ext.type"].split(",") == ["131", "44", "32"]
    assert rrp["mip.ext.utrp.keepalive"] == "110"
    assert rrp["mip.auth.auth"].replace(":", "") == signed_reply[-16:].hex()
    assert rrp["_ws.malformed"] == ""
