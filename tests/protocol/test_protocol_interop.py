"""Independent decoders read what ha.protocol writes, and ha.protocol reads what scapy writes.

Peers: scapy's ``mobileip`` layer (fixed parts only) and tshark's ``mip`` dissector (every extension;
it does not check authenticators, so those are compared as bytes).
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from protocol_support import COA, FA, FA_KEY, HA, HOA, KEY, NOW, WALLCLOCK, Registration
from scapy.layers.inet import IP, UDP
from scapy.layers.mobileip import MobileIP, MobileIPRRP, MobileIPRRQ
from scapy.packet import Raw
from scapy.utils import wrpcap
from test_protocol_codec import full_request

from ha.protocol import (
    Accept,
    Arrival,
    ExtensionType,
    ForeignAgentRecord,
    HomeAgentPolicy,
    MobileForeignChallenge,
    MobileHomeAuth,
    MobileNodeNai,
    MobileNodeRecord,
    RegistrationReply,
    ReplyCode,
    RequestFlags,
    SecurityAssociation,
    UdpTunnelReply,
    compute_authenticator,
    decide,
    encode_reply,
    ntp_timestamp,
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


def test_scapy_request_with_hand_built_extensions_is_accepted() -> None:
    """scapy's fixed part + NAI + MN-HA built by hand: the home agent accepts it and signs the reply."""
    packet = MobileIP(type=1) / MobileIPRRQ(
        flags=0x02, lifetime=600, homeaddr="10.0.0.5", haaddr="10.0.0.1", coaddr="192.0.2.10"
    )
    packet[MobileIPRRQ].id = ntp_timestamp(WALLCLOCK)
    nai = b"mn1@example.net"
    covered = bytes(packet) + bytes([131, len(nai)]) + nai + bytes([32, 20]) + (256).to_bytes(4, "big")
    data = covered + compute_authenticator(SA.algorithm, SA.key, covered)
    verdict = decide(
        pull_registration_request(data),
        policy=HomeAgentPolicy(address=HA),
        mobile_node=MobileNodeRecord("mn1", (SA,), home_address=HOA),
        foreign_agent=None,
        arrival=Arrival(COA, 40000, HA),
        now=NOW,
        wallclock=WALLCLOCK,
    )
    assert isinstance(verdict, Accept), getattr(verdict, "reason", verdict)
    assert (verdict.lifetime, verdict.reverse_tunnel, verdict.nai) == (600, True, "mn1@example.net")
    rrp = MobileIP(encode_reply(verdict))[MobileIPRRP]
    assert (rrp.code, rrp.lifetime, rrp.id) == (0, 600, ntp_timestamp(WALLCLOCK))


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


# --- replies as the home agent sends them, captured on the wire --------------------------------------


def _wait_until_capturing(process: subprocess.Popen[str], deadline: float) -> None:
    """tshark logs "Capture started" on stderr once dumpcap captures ("Capturing on" comes too early).

    Raw reads of the pipe, each bounded by ``deadline``: a buffered ``readline()`` blocks on a line
    without its newline (a stuck or dying tshark) and would hang the suite instead of failing here.
    """
    assert process.stderr is not None
    fd = process.stderr.fileno()
    seen = b""
    while b"Capture started" not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # tshark exited
            seen += chunk
    if b"Capture started" not in seen:
        pytest.fail(f"tshark did not start capturing: {seen.decode(errors='replace')!r}")


def _capture_on_loopback(payloads: list[bytes]) -> list[dict[str, str]]:
    """Send ``payloads`` over UDP on 127.0.0.1 while tshark captures them, then decode the capture."""
    _tshark([])  # skips or fails the test when tshark is missing
    with (
        tempfile.TemporaryDirectory(prefix="mipha-protocol-") as tmp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ha_side,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mn_side,
    ):
        mn_side.bind(("127.0.0.1", 0))
        ha_side.bind(("127.0.0.1", 0))
        port = mn_side.getsockname()[1]
        pcap = Path(tmp) / "wire.pcap"
        command = ["tshark", "-n", "-i", "lo", "-f", f"udp and dst port {port}", "-c", str(len(payloads))]
        command += ["-a", "duration:60", "-w", str(pcap)]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        try:
            _wait_until_capturing(process, time.monotonic() + 60)
            mn_side.settimeout(10)
            for payload in payloads:
                ha_side.sendto(payload, ("127.0.0.1", port))
                assert mn_side.recv(2048) == payload
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        command = ["tshark", "-n", "-r", str(pcap), "-d", f"udp.port=={port},mip", "-T", "fields"]
        command += ["-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=,"]
        for field in FIELDS:
            command += ["-e", field]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=True, stdin=subprocess.DEVNULL
        )
    rows = [line.split("|") for line in result.stdout.splitlines() if line]
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def test_every_reply_code_decodes_in_tshark_as_sent_on_the_wire() -> None:
    """Replies from decide() + encode_reply for codes 0, 1, 128-139, captured on loopback by tshark."""
    fa_sa = SecurityAssociation(600, FA_KEY)
    mn = Registration(sa=SA)
    broadcast = IPv4Address("10.0.0.255")
    policy = HomeAgentPolicy(address=HA, broadcast_addresses=frozenset({broadcast}))
    node = MobileNodeRecord("mn1", (SA,), home_address=HOA)
    here = Arrival(COA, 40000, HA)

    def verdict(request, arrival=here, foreign_agent=None):
        return decide(
            request,
            policy=policy,
            mobile_node=node,
            foreign_agent=foreign_agent,
            arrival=arrival,
            now=NOW,
            wallclock=WALLCLOCK,
        )

    accept = verdict(mn.request())
    relayed = Registration(sa=SA, fa_sa=fa_sa).request(
        before=(MobileNodeNai("mn1@example.net"),), fa_extensions=(MobileForeignChallenge(b"\x42" * 8),)
    )
    verdicts = {
        0: accept,
        1: verdict(mn.request(flags=RequestFlags.S)),
        131: verdict(mn.request(sign=False)),
        132: verdict(mn.request(), Arrival(FA, 434, HA), ForeignAgentRecord(FA, (fa_sa,))),
        133: verdict(mn.request(identification=7)),
        136: verdict(mn.request(home_agent=broadcast), Arrival(COA, 40000, broadcast)),
        # the engine's refusals of an acceptance, and policy codes, share the encoder:
        **{code: accept.deny(ReplyCode(code), "x") for code in (128, 129, 130, 134, 135, 137, 138, 139)},
    }
    relayed_accept = verdict(relayed, Arrival(FA, 434, HA), ForeignAgentRecord(FA, (fa_sa,)))
    payloads = [encode_reply(v) for v in verdicts.values()] + [encode_reply(relayed_accept)]
    rows = _capture_on_loopback(payloads)

    assert [row["mip.code"] for row in rows] == [str(code) for code in verdicts] + ["0"]
    for code, row, payload in zip([*verdicts, 0], rows, payloads, strict=True):
        assert row["mip.type"] == "3" and row["_ws.malformed"] == ""
        assert row["mip.haaddr"] == "10.0.0.1"  # 136 included: our unicast address
        assert row["mip.homeaddr"] == "10.0.0.5"
        if code == 131:  # the request did not authenticate: no authenticator (no signing oracle)
            assert row["mip.ext.type"] == "" and len(payload) == 20
            continue
        # every other reply ends with an authenticator: tshark shows the bytes we sent
        assert row["mip.auth.auth"].split(",")[-1].replace(":", "") == payload[-16:].hex()
    assert rows[3]["mip.ext.type"].split(",") == ["32"]  # 132: signed for the MN, not the failed FA
    assert rows[-1]["mip.ext.type"].split(",") == ["131", "32", "132", "34"]
    assert rows[-1]["mip.nai"] == "mn1@example.net"
    assert [int(spi, 16) for spi in rows[-1]["mip.auth.spi"].split(",")] == [256, 600]
