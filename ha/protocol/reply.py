"""Registration Replies from verdicts (RFC 5944 §3.8.3), and where to send them.

Reply extensions, in order: the request's NAI echoed (RFC 2794), the UDP Tunnel Reply (RFC 3519,
inside the part the MN-HA authenticator covers), the Mobile-Home authentication extension, the
foreign agent's challenge echoed unchanged (RFC 4721; "after the MN-HA and before the MN-FA"), the
Revocation Support extension (RFC 3543), the Foreign-Home authentication extension last (it covers
everything before it).

Every reply is signed with each key the home agent holds for the request's peers, denials included:
mobile nodes discard unauthenticated denials (Qualcomm's MN code does), so an unsigned 131/133 would
only make the mobile node retry blindly.  A reply to a request that could not be parsed (134 from
the codec) is signed only when the caller passes the mobile node's association.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import cast

from .auth import SecurityAssociation
from .codec import push_signed_reply
from .constants import ReplyCode
from .decision import Accept, Arrival, Deny, HomeAgentPolicy, Verdict
from .errors import ProtocolError
from .messages import (
    Extension,
    ForeignHomeAuth,
    MobileForeignChallenge,
    MobileHomeAuth,
    MobileNodeNai,
    RegistrationReply,
    RegistrationRequest,
    RevocationSupport,
    UdpTunnelReply,
)


@dataclass(slots=True)
class ReplyAddress:
    """IP/UDP addressing of a reply (RFC 5944 §3.8.3.1): back to where the request came from.

    One per request, so not frozen (see ``decision``'s docstring); read-only all the same.
    """

    source: IPv4Address
    source_port: int
    destination: IPv4Address
    destination_port: int


def reply_address(arrival: Arrival, policy: HomeAgentPolicy) -> ReplyAddress:
    """Swap the request's addresses and ports; a request sent to a broadcast is answered from our address."""
    destination = arrival.destination_integer
    broadcast = (
        destination in policy.broadcast_integers  # the home subnets' broadcasts and 255.255.255.255
        or destination >> 28 == 0xE  # multicast
        or destination == 0
    )
    source = policy.address if broadcast else arrival.destination
    return ReplyAddress(source, arrival.destination_port, arrival.source, arrival.source_port)


def _echoed(request: RegistrationRequest) -> tuple[MobileNodeNai | None, MobileForeignChallenge | None]:
    """The request's extensions a reply echoes: its NAI (RFC 2794) and its challenge (RFC 4721)."""
    nai: MobileNodeNai | None = None
    challenge: MobileForeignChallenge | None = None
    for extension in request.extensions:
        kind = type(extension)
        if kind is MobileNodeNai and nai is None:
            nai = cast(MobileNodeNai, extension)  # kind is its type
        elif kind is MobileForeignChallenge and challenge is None:
            challenge = cast(MobileForeignChallenge, extension)
    return nai, challenge


def _header(verdict: Verdict) -> tuple[ReplyCode, int, IPv4Address, IPv4Address]:
    """Code, Lifetime, Home Address and Home Agent of the reply to a verdict."""
    if type(verdict) is Accept:
        if verdict.home_address is None or verdict.assign:
            raise ValueError("assign the home address (decision.with_home_address) before replying")
        return verdict.code, verdict.lifetime, verdict.home_address, verdict.request.home_agent
    if type(verdict) is Deny:
        # Lifetime 0: ignored by the mobile node on a denial (RFC 5944 §3.4).
        return verdict.code, 0, verdict.request.home_address, verdict.home_agent
    raise TypeError(f"not a verdict: {verdict!r}")


def _rfc3519_3543(verdict: Verdict) -> tuple[UdpTunnelReply | None, RevocationSupport | None]:
    """The UDP Tunnel Reply (RFC 3519) and Revocation Support (RFC 3543) extensions of an acceptance."""
    if type(verdict) is not Accept:
        return None, None
    tunnel = verdict.udp_tunnel
    return (tunnel.reply if tunnel is not None else None), verdict.revocation


def build_reply(verdict: Verdict) -> RegistrationReply:
    """The reply message for a verdict (authenticators still empty: :func:`encode_reply` signs)."""
    code, lifetime, home_address, home_agent = _header(verdict)
    nai, challenge = _echoed(verdict.request)
    sa, fa_sa = verdict.security_association, verdict.fa_security_association
    extensions: list[Extension] = []
    if nai is not None:
        extensions.append(nai)
    udp_tunnel, revocation = _rfc3519_3543(verdict)
    if udp_tunnel is not None:
        extensions.append(udp_tunnel)
    if sa is not None:
        extensions.append(MobileHomeAuth(spi=sa.spi))
    if challenge is not None:
        extensions.append(challenge)
    if revocation is not None:
        extensions.append(revocation)
    if fa_sa is not None:
        extensions.append(ForeignHomeAuth(spi=fa_sa.spi))
    return RegistrationReply(
        code, lifetime, home_address, home_agent, verdict.reply_identification, tuple(extensions)
    )


def encode_reply(verdict: Verdict) -> bytes:
    """The signed reply datagram for a verdict: :func:`build_reply`'s message, signed, in one step."""
    request = verdict.request
    request_home, request_agent, _coa = request.integers
    if type(verdict) is Accept:  # _header() and reply_identification, inlined: once per request
        home_address = verdict.home_address
        if home_address is None or verdict.assign:
            raise ValueError("assign the home address (decision.with_home_address) before replying")
        code, lifetime, identification = verdict.code, verdict.lifetime, verdict.replay.reply_identification
        home = request_home if home_address is request.home_address else int(home_address)
        agent = request_agent
        tunnel, revocation = verdict.udp_tunnel, verdict.revocation  # _rfc3519_3543(), inlined
        udp_tunnel = tunnel.reply_bytes or tunnel.reply if tunnel is not None else None
    else:
        code, lifetime, home_address, home_agent = _header(verdict)
        identification = verdict.reply_identification
        home = request_home if home_address is request.home_address else int(home_address)
        agent = request_agent if home_agent is request.home_agent else int(home_agent)
        udp_tunnel = revocation = None
    if request.layout:
        nai = challenge = None  # the usual requests (RFC 3519's too): nothing to echo, no _echoed() call
    else:
        nai, challenge = _echoed(request)
    return push_signed_reply(
        code,
        lifetime,
        home,
        agent,
        identification,
        nai,
        verdict.security_association,
        challenge,
        verdict.fa_security_association,
        udp_tunnel,
        revocation,
    )


def encode_malformed_reply(
    error: ProtocolError, *, security_association: SecurityAssociation | None = None
) -> bytes | None:
    """The 134 reply for a request the codec refused, or None when it must be discarded.

    Unsigned by default.  A caller that holds a key for the mobile node the fixed part names (by its
    home address) may pass that ``security_association``: the reply then carries an MN-HA extension
    signed with it, so the mobile node does not drop it as unauthenticated (docs §7).
    """
    if error.discard or error.header is None or error.reply_code_hint is None:
        return None
    header = error.header
    home, agent, _coa = header.integers
    return push_signed_reply(
        error.reply_code_hint, 0, home, agent, header.identification, mn_ha=security_association
    )
