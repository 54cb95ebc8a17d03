"""RFC 3519 (Mobile IP traversal of NAT devices), home agent side, sans-I/O.

Two things live here:

- :func:`udp_tunnel_step`, the home agent's decision on a UDP Tunnel Request extension (type 144),
  applied to an :class:`~ha.protocol.decision.Accept` once :func:`~ha.protocol.decision.decide` has
  accepted the registration (it is the last policy check: it can only turn an acceptance into 142);
- the MIP tunnel data header (message type 4) the UDP-tunnelled data path puts in
  front of each inner packet, in both directions.

The choices (docs/protocol-decisions.md §11):

- NAT is detected when the request's IP source differs from its care-of address; the tunnel then
  goes to the request's IP source and UDP source port (the NAT mapping).
- F (force, RFC 3519 §3.1.1) asks for UDP tunnelling without a NAT; the ``force_allowed`` policy
  grants it (reply F set) or refuses it with 142.
- Only IP-in-IP inside UDP (encapsulation 4) is offered — Cisco's "only the IP-to-UDP encapsulation
  method is supported"; 47/55 get 142.
- Without a UDP Tunnel Request the registration is left alone (an RFC 3519 home agent never starts UDP
  tunnelling on its own); with UDP tunnelling disabled a request that needs it (NAT or F) gets 142.
- An extension is trusted only where an authenticator covers it: before the MN-HA extension, or
  before a verified FA-HA extension (a foreign agent behind a NAT adds it there).  Anything else is
  ignored, as an on-path attacker could have appended it.
- Deregistrations get no UDP Tunnel Reply: there is no tunnel to agree on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import cast

from .codec import udp_tunnel_bytes
from .constants import MessageType, ReplyCode, RequestFlags
from .decision import Accept, Arrival, Deny, UdpTunnel
from .messages import (
    LAYOUT_UDP_TUNNEL,
    REQUEST_FLAGS,
    ForeignHomeAuth,
    MobileHomeAuth,
    UdpTunnelReply,
    UdpTunnelRequest,
)

#: The tunnel data message (RFC 3519): ``Type 4 | Next Header | Reserved16`` then the payload.
TUNNEL_DATA_HEADER = struct.Struct("!BBH")
#: Next Header values (IANA "Mobile IPv4 numbers": the IP protocol numbers of the payload).
NEXT_HEADER_IP = 4
NEXT_HEADER_GRE = 47
NEXT_HEADER_MINIMAL = 55
#: ``Type 4, Next Header 4, Reserved 0``: what precedes every IP-in-UDP packet mipha sends.
IP_IN_UDP_HEADER = TUNNEL_DATA_HEADER.pack(int(MessageType.TUNNEL_DATA), NEXT_HEADER_IP, 0)
#: UDP Tunnel Reply codes: 0-63 accept UDP tunnelling, 64-255 decline it.
UDP_TUNNEL_ACCEPTED = 0
UDP_TUNNEL_DECLINED = 64
#: Reply flags: F, "tunnelling forced" (no NAT was detected).
REPLY_F = 0x8000
#: Default keepalive interval: under the common 120 s UDP NAT timeout (Cisco's default is 110 s too).
DEFAULT_KEEPALIVE_INTERVAL = 110

_UDP_UNAVAILABLE = ReplyCode.UDP_ENCAPSULATION_UNAVAILABLE
_S = int(RequestFlags.S)
_F_FORCE = UdpTunnelRequest.F_FORCE


@dataclass(frozen=True, slots=True)
class NatTraversalPolicy:
    """YANG ``home-agent/nat-traversal``: UDP tunnelling on or off, forced tunnelling, keepalive.

    The two replies it can give (NAT detected / forced) are built once here, not per request.
    """

    enabled: bool = True
    force_allowed: bool = True
    keepalive_interval: int = DEFAULT_KEEPALIVE_INTERVAL
    behind_nat_reply: UdpTunnelReply = field(init=False, repr=False, compare=False)
    forced_reply: UdpTunnelReply = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.keepalive_interval <= 0xFFFF:
            raise ValueError("keepalive_interval must be 1..65535 seconds")
        interval = self.keepalive_interval
        object.__setattr__(self, "behind_nat_reply", UdpTunnelReply(UDP_TUNNEL_ACCEPTED, interval, 0))
        object.__setattr__(self, "forced_reply", UdpTunnelReply(UDP_TUNNEL_ACCEPTED, interval, REPLY_F))


def trusted_tunnel_request(accept: Accept) -> UdpTunnelRequest | None:
    """The UDP Tunnel Request an authenticator covers (before MN-HA, or before a verified FA-HA)."""
    request = accept.request
    extensions = request.extensions
    if request.layout == LAYOUT_UDP_TUNNEL:
        return cast(UdpTunnelRequest, extensions[0])  # the usual layout: no loop
    covered_by_mn = True
    fa_verified = accept.fa_security_association is not None
    for extension in extensions:
        kind = type(extension)
        if kind is MobileHomeAuth:
            covered_by_mn = False
        elif kind is ForeignHomeAuth:
            return None
        elif kind is UdpTunnelRequest and (covered_by_mn or fa_verified):
            return cast(UdpTunnelRequest, extension)  # kind is its type
    return None


def udp_tunnel_step(
    accept: Accept, arrival: Arrival, policy: NatTraversalPolicy, available: bool = True
) -> Accept | Deny:
    """RFC 3519 on an accepted request: set ``accept.udp_tunnel``, or deny with 142.

    ``accept`` is updated in place and returned (verdicts are per-request records, see ``decision``).
    ``available`` False: the data plane cannot carry UDP tunnels (the ``ipip`` backend), also 142.
    UDP tunnelling replaces every other binding of the node: one NAT mapping, no simultaneous
    bindings (S is answered with code 1, RFC 5944 §3.8.2.2).  Runs once per registration: the usual
    layout is recognised without a call, and the tunnel record (with its reply extension's bytes) is
    kept on ``arrival`` for the renewals that come through the same mapping.
    """
    request = accept.request
    tunnel_request: UdpTunnelRequest | None
    if request.layout == LAYOUT_UDP_TUNNEL:  # trusted_tunnel_request()'s usual case, inlined
        tunnel_request = request.extensions[0]  # type: ignore[assignment]
    else:
        tunnel_request = trusted_tunnel_request(accept)
    if tunnel_request is None:
        return accept
    if accept.lifetime == 0:
        return accept
    source = arrival.source_integer
    behind_nat = source != request.integers[2]
    if not behind_nat and not tunnel_request.flags & _F_FORCE:
        return accept  # no NAT, not forced: plain IP-in-IP to the care-of address
    if not policy.enabled:
        return accept.deny(_UDP_UNAVAILABLE, "UDP tunnelling (RFC 3519) is disabled")
    if not available:
        return accept.deny(_UDP_UNAVAILABLE, "this data plane cannot carry UDP tunnels")
    if tunnel_request.encapsulation != NEXT_HEADER_IP:
        return accept.deny(
            _UDP_UNAVAILABLE,
            f"UDP encapsulation {tunnel_request.encapsulation} is not offered (only IP-in-UDP)",
        )
    if not behind_nat and not policy.force_allowed:
        return accept.deny(_UDP_UNAVAILABLE, "forced UDP tunnelling is not allowed")
    reply = policy.behind_nat_reply if behind_nat else policy.forced_reply
    tunnel = arrival.udp_tunnel
    if tunnel is None or tunnel.reply is not reply:  # first from here, or the policy changed
        tunnel = arrival.udp_tunnel = UdpTunnel(
            source, arrival.source_port, not behind_nat, reply, udp_tunnel_bytes(reply)
        )
    accept.udp_tunnel = tunnel
    flags = int(accept.flags)
    if flags & _S:
        accept.flags = REQUEST_FLAGS[flags & ~_S]
        accept.code = ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS
    accept.replace_existing = True
    return accept


def pull_tunnel_data(data: bytes) -> tuple[int, memoryview] | None:
    """``(next header, payload)`` of a type-4 datagram, or None when it is not one."""
    if len(data) < TUNNEL_DATA_HEADER.size + 20 or data[0] != MessageType.TUNNEL_DATA:
        return None
    return data[1], memoryview(data)[TUNNEL_DATA_HEADER.size :]
