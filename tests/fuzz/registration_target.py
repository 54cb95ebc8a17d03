"""Fuzz target: registration parser + decision + engine (``HomeAgent.handle_datagram`` and expiry).

One input is a short conversation with a freshly configured home agent (so any failure replays from
its input alone): up to 8 records of ``[control, time step, length, datagram...]``.  The control byte
lets the fuzzer get past authentication, which random bytes never would: it can ask the harness to
stamp a fresh Identification and re-sign the MN-HA and FA-HA authenticators with the configured keys
of the SPIs the datagram names, pick the sender (care-of address, foreign agent, the home address)
and the destination (unicast, limited or subnet-directed broadcast), and run the expiry timer.

Invariants checked after every datagram (see fuzz_common for what counts as a bug):
- the engine returns None or an Outgoing whose bytes parse as a Registration Reply;
- a reply with code 0 or 1 answers a request whose MN-HA authenticator verifies with a configured
  key, and grants no more lifetime than requested (RFC 5944 §3.8.3.1);
- the intents keep the data plane's contract (RecordingDataPlane raises on a release without an
  ensure, a route without a tunnel, a removal of an unknown route).
"""

from __future__ import annotations

import struct
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from engine_helpers import FA_KEY, HA, Clock, RecordingDataPlane, build_request, harness, node, sa, vr_config
from fuzz_common import BugFound, ErrorLog

from ha.engine.config import AddressPool, ForeignAgent
from ha.engine.home_agent import Outgoing
from ha.protocol import (
    ExtensionType,
    ForeignHomeAuth,
    MobileHomeAuth,
    ProtocolError,
    RegistrationReply,
    RegistrationRequest,
    RequestFlags,
    RevocationSupport,
    SecurityAssociation,
    UdpTunnelRequest,
    pull_registration_reply,
    push_registration_request,
)
from ha.protocol.constants import AuthAlgorithm, Encapsulation, ReplayProtection, ReverseTunnelPolicy

KEYS = {spi: bytes([spi & 0xFF]) * 16 for spi in (256, 257, 258, 259, 260)}
KEYED_MD5 = AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX
FA_SPI = 300
#: every configured association by SPI, as the harness re-signs and verifies with them
SAS = {spi: sa(spi, key) for spi, key in KEYS.items()} | {
    257: sa(257, KEYS[257], algorithm=KEYED_MD5),
    258: sa(258, KEYS[258], replay_protection=ReplayProtection.NONCE),
}
FA_SAS = {FA_SPI: sa(FA_SPI, FA_KEY)}
FA = IPv4Address("198.51.100.9")
SOURCES = ("203.0.113.5", str(FA), "10.1.0.1", "198.51.100.7")
DESTINATIONS = (HA, IPv4Address("255.255.255.255"), IPv4Address("192.0.2.255"), IPv4Address("192.0.2.9"))
MN_HA, FA_HA = 32, 34
LONG_EXTENSIONS = (36, 38)  # type, subtype/reserved, 16-bit length
FIXED = 24  # the Registration Request's fixed part


def configured():
    nodes = [
        node("mn1", "10.1.0.1", nai="a@x", security_associations=[SAS[256]]),
        node(
            "mn2",
            "10.1.0.2",
            max_lifetime=300,
            reverse_tunnel=ReverseTunnelPolicy.REQUIRED,
            security_associations=[SAS[257]],
        ),
        node("mn3", "10.1.0.3", security_associations=[SAS[258]]),
        node("d", address_pool="pool", nai="d@x", security_associations=[SAS[259]]),
        node(
            "e",
            "10.1.0.5",
            nai="e@x",
            care_of_access=(IPv4Network("203.0.113.0/24"),),
            security_associations=[SAS[260]],
        ),
    ]
    return vr_config(
        nodes,
        pools=[AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address("10.2.0.3")),))],
        foreign_agents=[ForeignAgent(FA, FA_SAS)],
        address=HA,
        home_prefix=IPv4Network("192.0.2.0/24"),
        max_lifetime=1800,
        simultaneous_bindings=2,
        max_bindings=6,
        encapsulations=frozenset({Encapsulation.IP_IN_IP, Encapsulation.GRE}),
    )


def extensions(data: bytes | bytearray):
    """(offset, type, body length) of each extension, as far as the bytes allow."""
    offset = FIXED
    while offset + 2 <= len(data):
        kind = data[offset]
        if kind in LONG_EXTENSIONS:
            if offset + 4 > len(data):
                return
            length, head = struct.unpack_from("!H", data, offset + 2)[0], 4
        else:
            length, head = data[offset + 1], 2
        yield offset, kind, head, length
        offset += head + length


def sign(data: bytearray, kind: int, associations: dict[int, SecurityAssociation]) -> None:
    """Re-sign the first extension of ``kind`` (SPI + 16-byte authenticator) if its SPI is configured."""
    for offset, ext, head, length in extensions(data):
        if ext == kind and length == 20 and offset + head + 20 <= len(data):
            spi = struct.unpack_from("!I", data, offset + head)[0]
            if spi in associations:
                covered = offset + head + 4
                data[covered : covered + 16] = associations[spi].authenticator(bytes(data[:covered]))
            return


def verified(data: bytes) -> bool:
    """Does the request carry an MN-HA authenticator that a configured key verifies?"""
    for offset, ext, head, length in extensions(data):
        if ext == MN_HA:
            if length != 20 or offset + head + 20 > len(data):
                return False
            spi = struct.unpack_from("!I", data, offset + head)[0]
            covered = offset + head + 4
            association = SAS.get(spi)
            return (
                association is not None
                and association.authenticator(data[:covered]) == data[covered : covered + 16]
            )
    return False


class RegistrationTarget:
    def __init__(self) -> None:
        self.config = configured()
        self.errors = ErrorLog("ha")

    def close(self) -> None:
        self.errors.close()

    def seeds(self) -> list[bytes]:
        clock = Clock()
        ident = clock.timestamp

        def rec(control: int, data: bytes, step: int = 1) -> bytes:
            return bytes([control, step, len(data) & 0xFF]) + data

        signed = 0x01 | 0x04  # fresh identification, re-signed MN-HA
        first = build_request(home="10.1.0.1", coa="203.0.113.5", identification=ident(), key=KEYS[256])
        gre = build_request(
            home="10.1.0.1", coa="203.0.113.6", identification=ident(), key=KEYS[256], flags=0x88
        )
        dereg = build_request(
            home="10.1.0.1", coa="10.1.0.1", identification=ident(), key=KEYS[256], lifetime=0
        )
        keyed = build_request(
            home="10.1.0.2",
            coa="203.0.113.5",
            identification=ident(),
            spi=257,
            key=KEYS[257],
            algorithm=AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX,
            flags=0x02,
        )
        nonce = build_request(
            home="10.1.0.3", coa="203.0.113.5", identification=ident(), spi=258, key=KEYS[258]
        )
        pool = build_request(
            home="0.0.0.0", coa="203.0.113.5", identification=ident(), spi=259, key=KEYS[259], nai="d@x"
        )
        nai = build_request(
            home="10.1.0.5", coa="203.0.113.7", identification=ident(), spi=260, key=KEYS[260], nai="e@x"
        )
        via_fa = build_request(
            home="10.1.0.1", coa=str(FA), identification=ident(), key=KEYS[256], fa=(FA_SPI, FA_KEY)
        )
        stamp = ident()
        nat = push_registration_request(
            RegistrationRequest(
                RequestFlags.T, 600, IPv4Address("10.1.0.1"), HA, IPv4Address("203.0.113.5"), stamp,
                (UdpTunnelRequest(), MobileHomeAuth(256)),
            ),
            sign={ExtensionType.MN_HA_AUTH: SAS[256]},
        )  # fmt: skip
        revocation = push_registration_request(
            RegistrationRequest(
                RequestFlags.NONE, 600, IPv4Address("10.1.0.1"), HA, FA, ident(),
                (MobileHomeAuth(256), RevocationSupport(0, stamp >> 32), ForeignHomeAuth(FA_SPI)),
            ),
            sign={ExtensionType.MN_HA_AUTH: SAS[256], ExtensionType.FA_HA_AUTH: FA_SAS[FA_SPI]},
        )  # fmt: skip
        discovery = build_request(
            home="10.1.0.1", coa="203.0.113.5", identification=ident(), key=KEYS[256], ha="255.255.255.255"
        )
        fa_source = 1 << 3
        return [
            rec(0, first),
            rec(signed, first) + rec(signed, first, 30) + rec(signed, dereg) + rec(0x80 | signed, first, 200),
            rec(signed, first) + rec(signed, gre) + rec(signed | 0x80, gre, 255),
            rec(signed, keyed) + rec(signed, keyed, 10),
            rec(signed, nonce) + rec(signed, nonce),
            rec(signed, pool) + rec(signed, pool) + rec(signed, pool, 40),
            rec(signed, nai) + rec(0x80 | signed, nai, 255),
            rec(signed | 0x02 | fa_source, via_fa),
            rec(signed | (1 << 5), discovery) + rec(signed | (2 << 5), discovery),
            rec(signed | (2 << 3), dereg),
            rec(signed | (3 << 3), nat) + rec(signed | (3 << 3), nat, 20) + rec(0x80 | signed, dereg, 255),
            rec(signed | 0x02 | fa_source, revocation)
            + rec(0x80 | signed | 0x02 | fa_source, revocation, 255),
        ]

    def one(self, data: bytes) -> None:
        h = harness(self.config)
        h.plane = RecordingDataPlane()
        engine = h.engine
        internal = getattr(engine.statistics, "internal_errors", 0)
        position = 0
        nonce = None  # the HA nonce of the last 133 reply, for the next fresh Identification
        for _ in range(8):
            if position + 3 > len(data):
                break
            control, step, length = data[position], data[position + 1], data[position + 2]
            datagram = bytearray(data[position + 3 : position + 3 + length])
            position += 3 + length
            h.clock.advance(step / 16)
            if control & 0x04 and len(datagram) >= FIXED:
                struct.pack_into("!Q", datagram, 16, self.identification(h.clock, nonce))
            if control & 0x01:
                sign(datagram, MN_HA, SAS)
            if control & 0x02:
                sign(datagram, FA_HA, FA_SAS)
            source = SOURCES[(control >> 3) & 3]
            out = h.send(bytes(datagram), source=source, received_on=DESTINATIONS[(control >> 5) & 3])
            reply = self.check_reply(bytes(datagram), out)
            nonce = reply.identification >> 32 if reply is not None and reply.code == 133 else None
            if control & 0x80:
                h.expire(step * 8)
            h.plane.drain(engine)
            h.events()
            engine.drain_datagrams()  # RFC 3543 revocations the engine sends on its own
            self.errors.check()
        if getattr(engine.statistics, "internal_errors", 0) != internal:
            raise BugFound("the engine counted an internal error")

    @staticmethod
    def identification(clock: Clock, nonce: int | None) -> int:
        """A fresh timestamp, or (after a 133) the HA's nonce beside a fresh low half (RFC 5944 §5.7)."""
        stamp = clock.timestamp()
        return stamp if nonce is None else (nonce << 32) | (stamp & 0xFFFFFFFF)

    @staticmethod
    def check_reply(request: bytes, out: object) -> RegistrationReply | None:
        if out is None:
            return None
        if not isinstance(out, Outgoing):
            raise BugFound(f"handle_datagram returned {out!r}")
        try:
            reply = pull_registration_reply(out.data)
        except ProtocolError as error:
            raise BugFound(f"the reply does not parse: {error}") from error
        if reply.code in (0, 1):
            if not verified(request):
                raise BugFound(f"code {reply.code} for a request whose MN-HA authenticator does not verify")
            requested = struct.unpack_from("!H", request, 2)[0]
            if reply.lifetime > requested:
                raise BugFound(f"granted lifetime {reply.lifetime} > requested {requested}")
        return reply
