"""RFC 3543 (Registration Revocation in Mobile IPv4), home agent side, sans-I/O.

- :func:`revocation_step` negotiates revocation on an accepted registration: a foreign agent the home
  agent shares an FA-HA security association with offers it with a Revocation Support extension
  (type 137) that the verified FA-HA authenticator covers; the reply echoes one (RFC 3543 §3.1).
- :class:`Revocation` (type 7) and :class:`RevocationAck` (type 15) with their codec: fixed part,
  then extensions, the FA-HA authentication extension last (§3.3, §3.4; layouts checked against
  tshark's ``mip`` dissector).
- :func:`next_revocation_id` and :func:`check_revocation_id`: the identification rule of §5.  A
  Revocation Identifier is the sender's timestamp (seconds); it must be greater than the timestamp
  the sender put in its Revocation Support extension when the binding was registered, and greater than
  every identifier already received from it, so an old revocation cannot be replayed.
- :class:`RetransmitSchedule`: HA-initiated revocations are retransmitted with exponential backoff
  until acknowledged (§4.1), at most ``attempts`` times.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import cast, final

from .auth import SecurityAssociation
from .codec import _Malformed, _pull_extensions
from .constants import MD5_AUTHENTICATOR_LENGTH, ExtensionType, MessageType
from .decision import Accept, ForeignAgentRecord
from .errors import ProtocolError
from .messages import Extension, ForeignHomeAuth, MobileHomeAuth, RevocationSupport, ipv4

_REVOCATION = struct.Struct("!BBHIIII")  # Type, Reserved, Flags16 (A, I), HoA, HDA, FDA, Revocation Id
_ACK = struct.Struct("!BBHII")  # Type, Reserved, Flags16 (I), HoA, Revocation Id
_AUTH_HEADER = struct.Struct("!BBI")
#: Revocation flags (§3.3): A = sent by the home agent ("home agent revoking"), I = inform the mobile node.
FLAG_A = 0x8000
FLAG_I = 0x4000
#: Acknowledgement flag (§3.4): I = the mobile node was informed.
ACK_FLAG_I = 0x8000


@final
@dataclass(frozen=True, slots=True)
class Revocation:
    """Registration Revocation (type 7).  ``home_agent_revoking`` is the A bit, ``inform`` the I bit."""

    home_address: IPv4Address
    home_domain_address: IPv4Address
    foreign_domain_address: IPv4Address
    revocation_id: int
    home_agent_revoking: bool = True
    inform: bool = False
    extensions: tuple[Extension, ...] = ()
    raw: bytes = field(default=b"", compare=False, repr=False)


@final
@dataclass(frozen=True, slots=True)
class RevocationAck:
    """Registration Revocation Acknowledgement (type 15)."""

    home_address: IPv4Address
    revocation_id: int
    inform: bool = False
    extensions: tuple[Extension, ...] = ()
    raw: bytes = field(default=b"", compare=False, repr=False)


def _signed(fixed: bytes, sa: SecurityAssociation) -> bytes:
    out = fixed + _AUTH_HEADER.pack(ExtensionType.FA_HA_AUTH, 4 + MD5_AUTHENTICATOR_LENGTH, sa.spi)
    return out + sa.authenticator(out)


def push_revocation(message: Revocation, sa: SecurityAssociation) -> bytes:
    """A type-7 datagram signed with the FA-HA association ``sa`` (the only extension mipha sends)."""
    flags = (FLAG_A if message.home_agent_revoking else 0) | (FLAG_I if message.inform else 0)
    fixed = _REVOCATION.pack(
        MessageType.REGISTRATION_REVOCATION,
        0,
        flags,
        int(message.home_address),
        int(message.home_domain_address),
        int(message.foreign_domain_address),
        message.revocation_id,
    )
    return _signed(fixed, sa)


def push_revocation_ack(message: RevocationAck, sa: SecurityAssociation) -> bytes:
    """A type-15 datagram signed with the FA-HA association ``sa``."""
    flags = ACK_FLAG_I if message.inform else 0
    fixed = _ACK.pack(
        MessageType.REVOCATION_ACKNOWLEDGEMENT, 0, flags, int(message.home_address), message.revocation_id
    )
    return _signed(fixed, sa)


def _extensions(data: bytes, start: int) -> tuple[Extension, ...]:
    try:
        extensions = _pull_extensions(data, start)
    except _Malformed as exc:
        raise ProtocolError(str(exc)) from exc
    if any(type(e) is MobileHomeAuth for e in extensions):
        raise ProtocolError("a revocation message carries no MN-HA extension")
    return extensions


def pull_revocation(data: bytes) -> Revocation:
    """Decode a type-7 datagram; :class:`ProtocolError` (always "discard") when it is not one."""
    if len(data) < _REVOCATION.size or data[0] != MessageType.REGISTRATION_REVOCATION:
        raise ProtocolError("not a registration revocation")
    _t, _r, flags, home, hda, fda, revocation_id = _REVOCATION.unpack_from(data)
    return Revocation(
        ipv4(home),
        ipv4(hda),
        ipv4(fda),
        revocation_id,
        bool(flags & FLAG_A),
        bool(flags & FLAG_I),
        _extensions(data, _REVOCATION.size),
        bytes(data),
    )


def pull_revocation_ack(data: bytes) -> RevocationAck:
    """Decode a type-15 datagram; :class:`ProtocolError` (always "discard") when it is not one."""
    if len(data) < _ACK.size or data[0] != MessageType.REVOCATION_ACKNOWLEDGEMENT:
        raise ProtocolError("not a revocation acknowledgement")
    _t, _r, flags, home, revocation_id = _ACK.unpack_from(data)
    return RevocationAck(
        ipv4(home), revocation_id, bool(flags & ACK_FLAG_I), _extensions(data, _ACK.size), bytes(data)
    )


def verify_fa_ha(message: Revocation | RevocationAck, foreign_agent: ForeignAgentRecord | None) -> bool:
    """True when the message ends with an FA-HA extension that verifies under the agent's association.

    The FA-HA extension must be the last one (it covers everything before it, §3.3).
    """
    if foreign_agent is None or not message.extensions:
        return False
    last = message.extensions[-1]
    if type(last) is not ForeignHomeAuth:
        return False
    sa = foreign_agent.security_association(last.spi)
    if sa is None:
        return False
    end = last.offset + 6
    return hmac.compare_digest(sa.authenticator(message.raw[:end]), last.authenticator)


# --- negotiation in registration (§3.1, §3.2) ----------------------------------------------------------


def offered_revocation(accept: Accept) -> RevocationSupport | None:
    """The foreign agent's Revocation Support extension, when a verified FA-HA authenticator covers it."""
    if accept.fa_security_association is None or accept.lifetime == 0:
        return None
    for extension in accept.request.extensions:
        kind = type(extension)
        if kind is ForeignHomeAuth:
            return None
        if kind is RevocationSupport:
            return cast(RevocationSupport, extension)  # kind is its type
    return None


def revocation_step(accept: Accept, ha_timestamp: int, *, enabled: bool = True) -> Accept:
    """Echo revocation support to a foreign agent that offered it (sets ``accept.revocation``).

    The reply's extension carries the home agent's current revocation timestamp and the I bit when the
    agent offered it (mipha asks the agent to inform the mobile node of a revocation when it can).
    """
    if not enabled:
        return accept
    offered = offered_revocation(accept)
    if offered is None:
        return accept
    flags = RevocationSupport.I_BIT if offered.flags & RevocationSupport.I_BIT else 0
    accept.revocation = RevocationSupport(flags, ha_timestamp & 0xFFFF_FFFF)
    return accept


# --- identification (§5) -----------------------------------------------------------------------------


def next_revocation_id(wallclock: float, last_sent: int) -> int:
    """Our next Revocation Identifier: the clock in seconds, strictly increasing (modulo 2**32)."""
    now = int(wallclock) & 0xFFFF_FFFF
    return now if _newer(now, last_sent) else (last_sent + 1) & 0xFFFF_FFFF


def _newer(value: int, than: int) -> bool:
    """RFC 1982 serial comparison on 32 bits: ``value`` comes after ``than``."""
    difference = (value - than) & 0xFFFF_FFFF
    return 0 < difference < 0x8000_0000


def check_revocation_id(revocation_id: int, registered_timestamp: int, last_received: int | None) -> bool:
    """§5: newer than the agent's timestamp at registration and than any identifier it sent since."""
    if not _newer(revocation_id, registered_timestamp) and revocation_id != registered_timestamp:
        return False
    return last_received is None or _newer(revocation_id, last_received)


@dataclass(frozen=True, slots=True)
class RevocationPolicy:
    """YANG ``home-agent/revocation``: negotiate RFC 3543 revocation, and how to retransmit."""

    enabled: bool = True
    retransmit_interval: float = 1.0
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if not 0.1 <= self.retransmit_interval <= 60:
            raise ValueError("retransmit_interval must be 0.1..60 seconds")
        if not 1 <= self.max_attempts <= 16:
            raise ValueError("max_attempts must be 1..16")

    @property
    def schedule(self) -> RetransmitSchedule:
        return RetransmitSchedule(self.retransmit_interval, self.max_attempts)


@dataclass(slots=True)
class RetransmitSchedule:
    """When to send an unacknowledged revocation again: ``initial`` seconds, doubling, ``attempts`` sends."""

    initial: float = 1.0
    attempts: int = 5
    ceiling: float = 16.0

    def delay(self, sent: int) -> float | None:
        """Seconds to wait after the ``sent``-th transmission; None once every attempt is used."""
        if sent >= self.attempts:
            return None
        return min(self.initial * (2 ** (sent - 1)), self.ceiling)
