"""A simulated mobile node's registration state, sans-I/O (the client side of RFC 5944 §3.6).

It builds Registration Requests with the protocol package, checks replies (MN-HA authenticator,
Identification echo), and follows the home agent's replay state: the clock offset for timestamps
(a 133 carries the HA's time in the high 32 bits) and the latest HA nonce for nonces.  The low 32 bits
of every Identification are a per-session counter, so the asyncio driver matches replies to requests
by them.

Building a request re-signs a template: the fixed part and extensions are encoded once per (flags,
lifetime, care-of address) with :func:`push_registration_request`; for each new Identification only
the 8 bytes and the authenticator change (``SecurityAssociation.authenticator``), which keeps a load generator
fast enough to saturate the home agent.
"""

from __future__ import annotations

import math
import secrets
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ha.aaa.mn_aaa import CHAP_SPI, mn_aaa_authenticator
from ha.protocol import (
    ExtensionType,
    GeneralizedAuth,
    MobileForeignChallenge,
    MobileHomeAuth,
    MobileNodeNai,
    ProtocolError,
    RegistrationRequest,
    RequestFlags,
    SecurityAssociation,
    UdpTunnelReply,
    UdpTunnelRequest,
    pull_registration_reply,
    push_registration_request,
)
from ha.protocol.auth import verify
from ha.protocol.constants import NTP_UNIX_OFFSET, ReplayProtection, ReplyCode

_IDENT_OFFSET = 16  # Identification field of a request
_IDENT = struct.Struct("!Q")
_MN_AAA_HEADER = struct.Struct("!BBHI")
_MOD32 = 1 << 32
UNSPECIFIED = IPv4Address(0)


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """What a reply said, once checked."""

    code: int
    lifetime: int
    home_address: IPv4Address
    identification: int
    authenticated: bool
    nai: str | None
    #: RFC 3519 UDP Tunnel Reply, when the home agent sent one inside the authenticated part.
    udp_tunnel: UdpTunnelReply | None = None

    @property
    def accepted(self) -> bool:
        return self.code in (0, 1)


@dataclass
class MobileNodeSession:
    """One mobile node talking to one home agent."""

    home_agent: IPv4Address
    home_address: IPv4Address
    care_of_address: IPv4Address
    sa: SecurityAssociation
    nai: str | None = None
    lifetime: int = 600
    flags: RequestFlags = RequestFlags.NONE
    clock_offset: int = 0  # seconds to add to our clock to match the HA's (learnt from 133)
    #: RFC 3519: ask for UDP tunnelling (UDP Tunnel Request before the MN-HA extension); F forces it.
    udp_tunnel: bool = False
    udp_force: bool = False
    ha_nonce: int | None = None
    #: MN-AAA shared secret (RFC 4721 §8, CHAP_SPI): requests then carry a challenge and the MN-AAA
    #: extension instead of Mobile-Home authentication; RADIUS checks them.
    mn_aaa_secret: bytes | None = None
    #: Name the home address an accepted reply gave (a pool's, RADIUS's) in the requests after it, as
    #: RFC 2794 nodes do once they know it (``mipha mn load``); False: keep asking with 0.0.0.0.
    adopt_home_address: bool = False
    _counter: int = field(default_factory=lambda: secrets.randbits(31), repr=False)
    _templates: dict[tuple[int, int, int, int], tuple[bytearray, int]] = field(
        default_factory=dict, repr=False
    )

    # --- requests --------------------------------------------------------------------------------

    def next_identification(self, wallclock: float, token: int | None = None) -> int:
        """A fresh Identification: NTP time (+ learnt offset) or the HA nonce; low half = ``token``.

        ``token`` (default: a per-session counter) is what replies are matched by; a load generator
        driving many sessions over one socket passes globally unique tokens.
        """
        if token is None:
            self._counter = (self._counter + 1) % _MOD32 or 1
            token = self._counter
        if self.sa.replay_protection is ReplayProtection.NONCE:
            high = self.ha_nonce if self.ha_nonce is not None else 0
            return (high << 32) | (token & 0xFFFF_FFFF)
        # Timestamp: NTP seconds, then the top 16 bits of the fraction (so that later requests are
        # newer even from another process), then 16 bits of token to tell requests in flight apart.
        seconds = math.floor(wallclock)
        high = (seconds + NTP_UNIX_OFFSET + self.clock_offset) % _MOD32
        fraction = int((wallclock - seconds) * 65536) & 0xFFFF
        return (high << 32) | (fraction << 16) | (token & 0xFFFF)

    def build(
        self,
        identification: int,
        *,
        lifetime: int | None = None,
        care_of_address: IPv4Address | None = None,
        home_address: IPv4Address | None = None,
    ) -> bytes:
        """A signed request; ``lifetime`` 0 deregisters (``care_of_address`` = home address: all)."""
        life = self.lifetime if lifetime is None else lifetime
        coa = self.care_of_address if care_of_address is None else care_of_address
        home = self.home_address if home_address is None else home_address
        if self.mn_aaa_secret is not None:
            return self._build_mn_aaa(identification, life, coa, home)
        key = (int(self.flags), life, int(coa), int(home))
        template = self._templates.get(key)
        if template is None:
            extensions: list = [] if self.nai is None else [MobileNodeNai(self.nai)]
            if self.udp_tunnel and life:  # never on a deregistration (RFC 3519 §3.1)
                extensions.append(UdpTunnelRequest(flags=UdpTunnelRequest.F_FORCE if self.udp_force else 0))
            extensions.append(MobileHomeAuth(self.sa.spi))
            request = RegistrationRequest(self.flags, life, home, self.home_agent, coa, 0, tuple(extensions))
            encoded = bytearray(push_registration_request(request, sign={ExtensionType.MN_HA_AUTH: self.sa}))
            covered = len(encoded) - 16
            template = self._templates[key] = (encoded, covered)
        buffer, covered = template
        _IDENT.pack_into(buffer, _IDENT_OFFSET, identification)
        with memoryview(buffer) as view:
            signature = self.sa.authenticator(view[:covered])
        buffer[covered:] = signature
        return bytes(buffer)

    def _build_mn_aaa(self, identification: int, life: int, coa: IPv4Address, home: IPv4Address) -> bytes:
        """NAI, MN-FA Challenge (a fresh one: what a foreign agent would advertise), MN-AAA (36/1)."""
        assert self.mn_aaa_secret is not None and self.nai is not None, "MN-AAA needs an NAI"
        challenge = secrets.token_bytes(16)
        extensions = (
            MobileNodeNai(self.nai),
            MobileForeignChallenge(challenge),
            GeneralizedAuth(1, CHAP_SPI),
        )
        request = RegistrationRequest(
            self.flags, life, home, self.home_agent, coa, identification, extensions
        )
        unsigned = push_registration_request(request)  # the MN-AAA extension last, its authenticator empty
        covered = unsigned[:-8] + _MN_AAA_HEADER.pack(36, 1, 4 + 16, CHAP_SPI)  # the final Length
        return covered + mn_aaa_authenticator(covered, challenge, self.mn_aaa_secret)

    # --- replies ---------------------------------------------------------------------------------

    @staticmethod
    def reply_token(data: bytes) -> int | None:
        """The low 32 bits of a reply's Identification: which request it answers (None: not a reply)."""
        if len(data) < 20 or data[0] != 3:
            return None
        return _IDENT.unpack_from(data, 12)[0] & 0xFFFF_FFFF

    def check_reply(self, data: bytes, identification: int, wallclock: float) -> ReplyOutcome | None:
        """Parse and authenticate a reply to the request ``identification``; None if it is not one.

        An authenticated reply updates the replay state: the HA nonce (nonces) or the clock offset
        (a 133 under timestamps).  Unauthenticated replies change nothing (RFC 5944 §3.6.2.1).
        """
        try:
            reply = pull_registration_reply(data)
        except ProtocolError:
            return None
        if reply.identification & 0xFFFF_FFFF != identification & 0xFFFF_FFFF:
            return None
        ext = reply.mn_ha_auth
        authenticated = ext is not None and ext.spi == self.sa.spi and verify(reply.raw, ext, self.sa)
        if authenticated:
            high = reply.identification >> 32
            if self.sa.replay_protection is ReplayProtection.NONCE:
                self.ha_nonce = high
            elif reply.code == ReplyCode.IDENTIFICATION_MISMATCH:
                ours = (math.floor(wallclock) + NTP_UNIX_OFFSET) % _MOD32
                delta = (high - ours) % _MOD32
                self.clock_offset = delta - _MOD32 if delta >= 1 << 31 else delta
            elif reply.identification != identification:
                return None  # an accepted timestamp reply echoes all 64 bits
        if (
            authenticated
            and self.adopt_home_address
            and reply.code in (0, 1)
            and reply.lifetime
            and int(self.home_address) == 0
        ):
            self.home_address = reply.home_address
        tunnel = None
        if authenticated:  # only an extension the MN-HA authenticator covers counts
            for extension in reply.extensions:
                if type(extension) is MobileHomeAuth:
                    break
                if type(extension) is UdpTunnelReply:
                    tunnel = extension
        return ReplyOutcome(
            reply.code,
            reply.lifetime,
            reply.home_address,
            reply.identification,
            authenticated,
            reply.nai,
            tunnel,
        )
