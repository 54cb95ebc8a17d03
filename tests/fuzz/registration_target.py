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

import dataclasses
import hashlib
import struct
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from engine_helpers import FA_KEY, HA, Clock, RecordingDataPlane, build_request, harness, node, sa, vr_config
from fuzz_common import BugFound, ErrorLog

from ha.aaa.config import AaaConfig, AaaServer
from ha.aaa.mn_aaa import CHAP_SPI, mn_aaa_authenticator
from ha.aaa.profile import AaaProfile
from ha.engine.aaa import AaaAccepted, AaaLookup, AaaRejected, AaaUnavailable
from ha.engine.config import AddressPool, ForeignAgent
from ha.engine.home_agent import Outgoing
from ha.mn.session import UNSPECIFIED, MobileNodeSession
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
from ha.protocol.revocation import (
    Revocation,
    RevocationAck,
    pull_revocation,
    push_revocation,
    push_revocation_ack,
)

KEYS = {spi: bytes([spi & 0xFF]) * 16 for spi in (256, 257, 258, 259, 260, 261)}
#: what the simulated RADIUS server (local-then-aaa) knows: every other NAI's MN-HA association
#: (SPI 261) and the MN-AAA shared secret it checks CHAP with (RFC 4721 §8)
AAA_SPI = 261
AAA_SECRET = b"mn-aaa-secret-16"
KEYED_MD5 = AuthAlgorithm.KEYED_MD5_PREFIX_SUFFIX
FA_SPI = 300
#: every configured association by SPI, as the harness re-signs and verifies with them
SAS = {spi: sa(spi, key) for spi, key in KEYS.items()} | {
    257: sa(257, KEYS[257], algorithm=KEYED_MD5),
    258: sa(258, KEYS[258], replay_protection=ReplayProtection.NONCE),
}
FA_SAS = {FA_SPI: sa(FA_SPI, FA_KEY)}
FA = IPv4Address("198.51.100.9")
AAA_HOME = IPv4Address("10.3.0.1")
SOURCES = ("203.0.113.5", str(FA), "10.1.0.1", "198.51.100.7")
DESTINATIONS = (HA, IPv4Address("255.255.255.255"), IPv4Address("192.0.2.255"), IPv4Address("192.0.2.9"))
MN_HA, FA_HA, MN_AAA, CHALLENGE = 32, 34, 36, 132
LONG_EXTENSIONS = (36, 38)  # type, subtype/reserved, 16-bit length
FIXED = 24  # the Registration Request's fixed part
#: where the extensions start: Registration Request (1), Revocation (7), Revocation Acknowledgement (15)
EXTENSIONS_AT = {1: FIXED, 7: 20, 15: 12}
REVOCATION, REVOCATION_ACK = 7, 15


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
    config = vr_config(
        nodes,
        pools=[AddressPool("pool", ((IPv4Address("10.2.0.1"), IPv4Address("10.2.0.3")),))],
        foreign_agents=[ForeignAgent(FA, FA_SAS)],
        address=HA,
        home_prefix=IPv4Network("192.0.2.0/24"),
        max_lifetime=1800,
        simultaneous_bindings=2,
        max_bindings=6,
        encapsulations=frozenset({Encapsulation.IP_IN_IP, Encapsulation.GRE}),
        authentication="local-then-aaa",
    )
    aaa = AaaConfig(servers=(AaaServer(IPv4Address("127.0.0.1"), b"s"),), cache_size=3, max_pending=2)
    return dataclasses.replace(config, aaa=aaa)


def extensions(data: bytes | bytearray):
    """(offset, type, header length, body length) of each extension, as far as the bytes allow."""
    offset = EXTENSIONS_AT.get(data[0], FIXED) if data else FIXED
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


def fa_ha_verified(data: bytes) -> bool:
    """Is the last extension an FA-HA authenticator that the foreign agent's key verifies?"""
    found = list(extensions(data))
    if not found:
        return False
    offset, ext, head, length = found[-1]
    if ext != FA_HA or length != 20 or offset + head + 20 != len(data):
        return False
    association = FA_SAS.get(struct.unpack_from("!I", data, offset + head)[0])
    covered = offset + head + 4
    return association is not None and association.authenticator(data[:covered]) == data[covered:]


def mn_aaa_covered(data: bytes | bytearray) -> tuple[int, bytes] | None:
    """(bytes covered, challenge) of the first MN-AAA extension (36/1) with the CHAP SPI and a 16-byte
    authenticator after an MN-FA Challenge: what RADIUS can check (RFC 4721 §8)."""
    challenge = None
    for offset, ext, head, length in extensions(data):
        if ext == CHALLENGE:
            challenge = bytes(data[offset + head : offset + head + length])
        elif ext == MN_AAA and data[offset + 1] == 1:
            covered = offset + head + 4
            if not challenge or length != 20 or covered + 16 > len(data):
                return None
            return (
                (covered, challenge) if struct.unpack_from("!I", data, offset + head)[0] == CHAP_SPI else None
            )
    return None


def sign_mn_aaa(data: bytearray) -> None:
    """Re-sign the MN-AAA authenticator with the shared secret, as a mobile node does."""
    found = mn_aaa_covered(data)
    if found is not None:
        covered, challenge = found
        data[covered : covered + 16] = mn_aaa_authenticator(bytes(data[:covered]), challenge, AAA_SECRET)


def mn_aaa_verified(data: bytes) -> bool:
    found = mn_aaa_covered(data)
    if found is None:
        return False
    covered, challenge = found
    return mn_aaa_authenticator(data[:covered], challenge, AAA_SECRET) == data[covered : covered + 16]


def chap_verifies(lookup: AaaLookup) -> bool:
    """What RADIUS checks for an MN-AAA look-up: the CHAP response under the shared secret."""
    chap = lookup.chap
    assert chap is not None
    expected = hashlib.md5(chap.chap_password[:1] + AAA_SECRET + chap.chap_challenge).digest()
    return chap.chap_password[1:] == expected


def verified(data: bytes) -> bool:
    """Does the request carry an MN-HA authenticator that a configured key (or the one RADIUS gives)
    verifies, or an MN-AAA authenticator RADIUS accepts?"""
    if mn_aaa_verified(data):
        return True
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
        aaa_node = MobileNodeSession(HA, UNSPECIFIED, IPv4Address("203.0.113.5"), SAS[AAA_SPI], nai="z@aaa")
        aaa = aaa_node.build(ident())
        mn_aaa = dataclasses.replace(aaa_node, nai="c@aaa", mn_aaa_secret=AAA_SECRET).build(ident())
        framed = aaa_node.build(ident(), home_address=AAA_HOME)
        fa_revokes = push_revocation(
            Revocation(IPv4Address("10.1.0.1"), HA, FA, 0, home_agent_revoking=False), FA_SAS[FA_SPI]
        )
        acknowledges = push_revocation_ack(RevocationAck(IPv4Address("10.1.0.1"), 0), FA_SAS[FA_SPI])
        fa_source = 1 << 3
        relayed = signed | 0x02 | fa_source
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
            # RADIUS (local-then-aaa): accepted then renewed from the cache; rejected; unavailable; an
            # answer that waits while retransmissions are absorbed; a Framed-IP-Address; MN-AAA (CHAP)
            rec(signed, aaa, 0) + rec(signed, aaa, 16),
            rec(signed, aaa, 1) + rec(signed, aaa, 2),
            rec(signed, aaa, 3) + rec(signed, aaa, 3) + rec(signed, aaa, 4),
            rec(signed, framed, 0) + rec(signed, mn_aaa, 0) + rec(signed, mn_aaa, 16),
            # RFC 3543: the foreign agent revokes (7); the operator clears, the agent acknowledges (15)
            rec(relayed, revocation) + rec(0x04 | 0x02 | fa_source, fa_revokes, 32),
            rec(relayed, revocation) + rec(0x80, b"", 0) + rec(0x04 | 0x02 | fa_source, acknowledges),
        ]

    def one(self, data: bytes) -> None:
        h = harness(self.config)
        h.plane = RecordingDataPlane()
        engine = h.engine
        internal = getattr(engine.statistics, "internal_errors", 0)
        position = 0
        nonce = None  # the HA nonce of the last 133 reply, for the next fresh Identification
        revoked: Revocation | None = None  # the last revocation the engine sent, for an acknowledgement
        waiting: dict[str, AaaLookup] = {}  # RADIUS look-ups not answered yet
        for _ in range(8):
            if position + 3 > len(data):
                break
            control, step, length = data[position], data[position + 1], data[position + 2]
            datagram = bytearray(data[position + 3 : position + 3 + length])
            position += 3 + length
            h.clock.advance(step / 16)
            if control & 0x04:
                self.stamp(datagram, h.clock, nonce, revoked)
            if control & 0x01:
                sign(datagram, MN_HA, SAS)
                sign_mn_aaa(datagram)
            if control & 0x02:
                sign(datagram, FA_HA, FA_SAS)
            source = SOURCES[(control >> 3) & 3]
            out = h.send(bytes(datagram), source=source, received_on=DESTINATIONS[(control >> 5) & 3])
            if datagram and datagram[0] in (REVOCATION, REVOCATION_ACK):
                self.check_acknowledgement(bytes(datagram), out)
                reply = None
            else:
                reply = self.check_reply(bytes(datagram), out)
            nonce = reply.identification >> 32 if reply is not None and reply.code == 133 else None
            if control & 0x80:
                if step == 0:
                    engine.clear_bindings()  # the operator's clear-bindings: revocations to the agents
                else:
                    h.expire(step * 8)
            self.answer_aaa(h, step, waiting)
            h.plane.drain(engine)
            h.events()
            for sent in engine.drain_datagrams():  # RFC 3543 revocations the engine sends on its own
                revoked = pull_revocation(sent.data)
            self.errors.check()
        if getattr(engine.statistics, "internal_errors", 0) != internal:
            raise BugFound("the engine counted an internal error")

    def stamp(self, datagram: bytearray, clock: Clock, nonce: int | None, revoked: Revocation | None) -> None:
        """Fresh Identification (request); fresh Revocation Identifier (7, the agent's clock in NTP
        seconds, RFC 3543 §5); the home address and identifier of the engine's last revocation (15)."""
        kind = datagram[0] if datagram else None
        if kind == REVOCATION and len(datagram) >= EXTENSIONS_AT[REVOCATION]:
            struct.pack_into("!I", datagram, 16, clock.timestamp() >> 32)
        elif (
            kind == REVOCATION_ACK and len(datagram) >= EXTENSIONS_AT[REVOCATION_ACK] and revoked is not None
        ):
            struct.pack_into("!II", datagram, 4, int(revoked.home_address), revoked.revocation_id)
        elif kind not in (REVOCATION, REVOCATION_ACK) and len(datagram) >= FIXED:
            struct.pack_into("!Q", datagram, 16, self.identification(clock, nonce))

    def answer_aaa(self, h, choice: int, waiting: dict[str, AaaLookup]) -> None:
        """The simulated RADIUS server: an MN-AAA look-up is accepted when its CHAP response verifies
        under the shared secret; any other one is accepted, rejected or unavailable as the fuzzer
        chooses; either may also stay unanswered until a later step."""
        engine = h.engine
        for lookup in engine.drain_aaa_lookups():
            waiting[lookup.nai] = lookup
        for i, (nai, lookup) in enumerate(list(waiting.items())):
            pick = (choice + i) & 3
            if pick == 3:
                continue
            del waiting[nai]
            if pick == 2:
                outcome: AaaAccepted | AaaRejected | AaaUnavailable = AaaUnavailable("no answer")
            elif lookup.chap is not None and not chap_verifies(lookup):
                outcome = AaaRejected("CHAP")
            elif pick == 1 and lookup.chap is None:
                outcome = AaaRejected("Access-Reject")
            else:
                outcome = AaaAccepted(self.profile(lookup, choice))
            pending = engine._aaa_pending.get(nai)  # the request the answer decides
            out = engine.handle_aaa_answer(nai, outcome, now=h.clock.now, wallclock=h.clock.wall)
            if pending is not None:
                self.check_reply(pending.data, out)
            elif out is not None:
                raise BugFound(f"a reply to an AAA answer for {nai!r}, which had no request waiting")

    @staticmethod
    def profile(lookup: AaaLookup, choice: int) -> AaaProfile:
        """What the Access-Accept grants: the Framed-IP-Address asked for, else the pool; and (on odd
        choices) an ERX lifetime ceiling."""
        home = lookup.home_address
        return AaaProfile(
            lookup.nai, AAA_SPI, KEYS[AAA_SPI], AuthAlgorithm.HMAC_MD5, home, None if home else "pool",
            60 if choice & 4 else None, "erx", "framed-ip-address" if home else "framed-pool",
        )  # fmt: skip

    @staticmethod
    def check_acknowledgement(message: bytes, out: object) -> None:
        """A revocation message gets nothing back, or (a revocation whose FA-HA authenticator
        verifies, RFC 3543 §4.2) a Revocation Acknowledgement."""
        if out is None:
            return
        if not isinstance(out, Outgoing) or not out.data or out.data[0] != REVOCATION_ACK:
            raise BugFound(f"a revocation message answered with {out!r}")
        if message[0] != REVOCATION or not fa_ha_verified(message):
            raise BugFound(
                "a Revocation Acknowledgement for a message whose FA-HA authenticator does not verify"
            )

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
