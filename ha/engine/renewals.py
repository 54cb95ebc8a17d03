"""A decision cache for renewals in place: the same request again, with a new Identification.

Most registrations a home agent answers are renewals: a mobile node re-sends the request the home
agent accepted last time, byte for byte, except for the Identification and the authenticator.
``decide`` is a pure function of the request, the policy, what the engine knows of the node, the
peer and the clocks; for such a repeat only the authenticator (it covers the new Identification)
and the Identification's freshness can come out differently, and the binding rules of RFC 5944
§3.8.2.2 renew the same binding in place again.  So once the full path (``decide``, then the
engine's binding rules) has renewed a binding in place, :class:`Renewal` remembers what it read
and did; the next repeat is answered from it after checking the authenticator and the timestamp
exactly as ``mobile_node_authentic`` and ``identification_fresh`` do, and only while nothing else
the decision read has changed (:meth:`ha.engine.home_agent.HomeAgent._renew_cached` checks each
by identity).  Anything else — a failed check, another layout, nonces, AAA, a foreign agent,
revocation, a pool address — takes the full path, which decides, and answers denials, as always.

Two layouts are remembered: the usual one, and RFC 3519's (a UDP Tunnel Request before the MN-HA
extension, from behind a NAT).  A UDP-tunnelled renewal in place came from the binding's NAT mapping
(the same peer), so it changes no tunnel; its reply carries the same UDP Tunnel Reply while the
``nat-traversal`` policy is the one it was decided under (:attr:`Renewal.nat`).

``tests/engine/test_engine_renewal_cache.py`` runs random operation sequences through two engines,
one without the cache, and requires the same replies, counters, bindings, intents and events.

The C path (``ha/_fastpath.c``, ``ha/fastpath.py``) answers the same repeats from the same entries:
an entry's ``fast`` is what it needs in C (the layout bytes, the key's MD5 states, the peer, the last
Identification), built when the entry is; the checks of Python state stay in
:meth:`HomeAgent.renew_batch`, which shares them with ``_renew_cached``.
"""

from __future__ import annotations

from typing import Any

from ha.protocol import HomeAgentPolicy, SecurityAssociation

from .bindings import Binding
from .config import EngineNode

#: The usual request: 24-byte fixed part + MN-HA extension (type 32, length 20: SPI + 16-byte
#: HMAC-MD5 / keyed-MD5 authenticator); its reply is 20 + 22 bytes.
REQUEST_LENGTH = 46
REPLY_LENGTH = 42
#: RFC 3519's: the UDP Tunnel Request (type 144, length 6) before the MN-HA extension; its reply
#: carries the UDP Tunnel Reply (type 44, length 6) before it.
UDP_TUNNEL_REQUEST_LENGTH = REQUEST_LENGTH + 8
UDP_TUNNEL_REPLY_LENGTH = REPLY_LENGTH + 8
#: Entries kept at most (about 0.3 KB each); when full no new ones are added until entries are
#: dropped (a failed check) or the configuration changes: nodes beyond it take the full path.
CAPACITY = 131_072


class Renewal:
    """What a renewal in place of one request layout read and did (see the module docstring).

    ``key`` is the request's first 16 bytes (type, flags, lifetime, home address, home agent,
    care-of address), ``extension`` its extensions up to the authenticator (the MN-HA header, after
    the UDP Tunnel Request for RFC 3519's layout); the reply is ``head`` + Identification +
    ``reply_extension`` + authenticator.  ``nat`` is the ``nat-traversal`` policy a UDP-tunnelled
    renewal was decided under (None for the usual layout).
    """

    __slots__ = (
        "binding",
        "code",
        "extension",
        "fast",
        "home",
        "identification",
        "lifetime",
        "nat",
        "node",
        "peer",
        "policy",
        "reply_extension",
        "reply_head",
        "security_association",
        "state",
        "table_key",
    )

    def __init__(
        self,
        *,
        node: EngineNode,
        state: object,
        binding: Binding,
        policy: HomeAgentPolicy,
        peer: object,
        security_association: SecurityAssociation,
        request: bytes,
        reply: bytes,
        code: int,
        nat: object = None,
    ) -> None:
        self.node = node
        self.state = state
        self.binding = binding
        self.policy = policy
        self.peer = peer
        self.security_association = security_association
        self.home = binding.home_address
        self.table_key = (binding.home_address << 32) | binding.care_of_address
        self.identification = binding.identification
        self.lifetime = binding.lifetime
        self.code = code
        self.nat = nat
        self.extension = request[24:-16]
        self.reply_head = reply[:12]
        self.reply_extension = reply[20:-16]
        #: the C path's copy (ha.fastpath.entry), None when it does not serve this one
        self.fast: Any = None


def cacheable_layouts(request: bytes, reply: bytes, udp_tunnel: bool) -> bool:
    """The request and its reply have one of the two remembered layouts (the usual one; RFC 3519's
    when the renewal is UDP-tunnelled), with 16-byte authenticators."""
    if udp_tunnel:
        return (
            len(request) == UDP_TUNNEL_REQUEST_LENGTH
            and request[24:26] == b"\x90\x06"
            and request[32:34] == b"\x20\x14"
            and len(reply) == UDP_TUNNEL_REPLY_LENGTH
            and reply[20:22] == b"\x2c\x06"
            and reply[28:30] == b"\x20\x14"
        )
    return (
        len(request) == REQUEST_LENGTH
        and request[24:26] == b"\x20\x14"
        and len(reply) == REPLY_LENGTH
        and reply[20:22] == b"\x20\x14"
    )
