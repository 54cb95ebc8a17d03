"""Registration Replies from verdicts (RFC 5944 §3.8.3), and where to send them.

Reply extensions, in order: the request's NAI echoed (RFC 2794), the Mobile-Home authentication
extension, the foreign agent's challenge echoed unchanged (RFC 4721; "after the MN-HA and before
the MN-FA"), the Foreign-Home authentication extension last (it covers everything before it).

Every reply is signed with each key the home agent holds for the request's peers, denials included:
mobile nodes discard unauthenticated denials (Qualcomm's MN code does), so an unsigned 131/133 would
only make the mobile node retry blindly.  A reply to a request that could not be parsed (134 from
the codec) is never signed: nothing in it was authenticated.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from .codec import push_registration_reply
from .constants import ExtensionType
from .decision import Accept, Arrival, Deny, HomeAgentPolicy, Verdict
from .errors import ProtocolError
from .messages import (
    LIMITED_BROADCAST,
    Extension,
    ForeignHomeAuth,
    MobileForeignChallenge,
    MobileHomeAuth,
    MobileNodeNai,
    RegistrationReply,
)


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """IP/UDP addressing of a reply (RFC 5944 §3.8.3.1): back to where the request came from."""

    source: IPv4Address
    source_port: int
    destination: IPv4Address
    destination_port: int


def reply_address(arrival: Arrival, policy: HomeAgentPolicy) -> ReplyAddress:
    """Swap the request's addresses and ports; a request sent to a broadcast is answered from our address."""
    broadcast = (
        arrival.destination in policy.broadcast_addresses
        or arrival.destination == LIMITED_BROADCAST
        or arrival.destination.is_multicast
        or arrival.destination.is_unspecified
    )
    source = policy.address if broadcast else arrival.destination
    return ReplyAddress(source, arrival.destination_port, arrival.source, arrival.source_port)


def _extensions(verdict: Verdict) -> tuple[Extension, ...]:
    request = verdict.request
    out: list[Extension] = []
    nai = request.first(MobileNodeNai)
    if nai is not None:
        out.append(nai)
    if verdict.security_association is not None:
        out.append(MobileHomeAuth(spi=verdict.security_association.spi))
    challenge = request.first(MobileForeignChallenge)
    if challenge is not None:
        out.append(challenge)
    if verdict.fa_security_association is not None:
        out.append(ForeignHomeAuth(spi=verdict.fa_security_association.spi))
    return tuple(out)


def build_reply(verdict: Verdict) -> RegistrationReply:
    """The reply message for a verdict (authenticators still empty: :func:`encode_reply` signs)."""
    if not isinstance(verdict, Accept | Deny):
        raise TypeError(f"not a verdict: {verdict!r}")
    request = verdict.request
    if isinstance(verdict, Accept):
        if verdict.home_address is None or verdict.assign:
            raise ValueError("assign the home address (decision.with_home_address) before replying")
        return RegistrationReply(
            code=verdict.code,
            lifetime=verdict.lifetime,
            home_address=verdict.home_address,
            home_agent=request.home_agent,
            identification=verdict.reply_identification,
            extensions=_extensions(verdict),
        )
    return RegistrationReply(
        code=verdict.code,
        lifetime=0,  # ignored by the mobile node on a denial (RFC 5944 §3.4)
        home_address=request.home_address,
        home_agent=verdict.home_agent,
        identification=verdict.reply_identification,
        extensions=_extensions(verdict),
    )


def encode_reply(verdict: Verdict) -> bytes:
    """The signed reply datagram for a verdict."""
    sign = {}
    if verdict.security_association is not None:
        sign[ExtensionType.MN_HA_AUTH] = verdict.security_association
    if verdict.fa_security_association is not None:
        sign[ExtensionType.FA_HA_AUTH] = verdict.fa_security_association
    return push_registration_reply(build_reply(verdict), sign=sign)


def encode_malformed_reply(error: ProtocolError) -> bytes | None:
    """The unsigned 134 reply for a request the codec refused, or None when it must be discarded."""
    if error.discard or error.header is None or error.reply_code_hint is None:
        return None
    header = error.header
    reply = RegistrationReply(
        code=error.reply_code_hint,
        lifetime=0,
        home_address=header.home_address,
        home_agent=header.home_agent,
        identification=header.identification,
    )
    return push_registration_reply(reply)
