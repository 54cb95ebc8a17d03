"""A decision cache for renewals in place: the same request again, with a new Identification.

Most registrations a home agent answers are renewals: a mobile node re-sends the request the home
agent accepted last time, byte for byte, except for the Identification and the authenticator.
``decide`` is a pure function of the request, the policy, what the engine knows of the node, the
peer and the clocks; for such a repeat only the authenticator (it covers the new Identification)
and the Identification's freshness can come out differently, and the binding rules of RFC 5944
§3.8.2.2 renew the same binding in place again.  So once the full path (``decide``, then the
engine's binding rules) has added a binding or renewed one in place, :class:`Renewal` remembers what
it read and did (a repeat of a first registration is a renewal in place of the binding it made, with
the same verdict: ``decide`` reads nothing the registration changed but the node's own care-of
addresses, which then include this one, and renewals pass the binding limits); the next repeat is
answered from it after checking the authenticator and the timestamp exactly as
``mobile_node_authentic`` and ``identification_fresh`` do, and only while nothing else the decision
read has changed (:meth:`ha.engine.home_agent.HomeAgent._renew_cached` checks each by identity, the
node too: the one the request's NAI, or else its home address, names now).  Those checks of engine
state run again only when something other than a renewal from the cache ran since the entry last
held: the engine's generation (``HomeAgent._generation``) counts every other call into it, and an
entry keeps the generation it last held at; the node's Identification, which a renewal from another
entry of the same node changes, is checked every time.
Anything else — a failed check, another layout, nonces, MN-AAA, a foreign agent, revocation —
takes the full path, which decides, and answers denials, as always.

The layouts remembered end with the MN-HA extension (16-byte authenticator); before it a request
may carry the NAI (RFC 2794: every AAA subscriber's request, and configured nodes known by NAI) and
RFC 3519's UDP Tunnel Request (from behind a NAT), so its reply carries the NAI echoed and the UDP
Tunnel Reply.  AAA subscribers are served like configured nodes: their key is the AAA cache's
(``ha/engine/aaa.py``), and a subscriber RADIUS answered for again, forgotten or cleared (a
Disconnect-Request) is another object or none, so its entries no longer hold.  Pool addresses
(Framed-Pool, ``address-pool``) too: the binding is the one at the address the node holds.  A
UDP-tunnelled renewal in place came from the binding's NAT mapping (the same peer), so it changes
no tunnel; its reply carries the same UDP Tunnel Reply while the ``nat-traversal`` policy is the one
it was decided under (:attr:`Renewal.nat`).

An entry is generic over its extension bytes: ``key`` (the request's first 16 bytes) finds it,
``extension`` (the bytes between the fixed part and the authenticator) must match, and the reply is
built from ``reply_head`` and ``reply_extension``, whatever the layout.  Nodes known by NAI that renew with
home address 0.0.0.0 from one care-of address share a key: each renewal then finds another node's
entry, takes the full path and leaves its own (correct, at the full path's cost); nodes that name the
address they were given, as ``mipha mn`` does, each have their own.

``tests/engine/test_engine_renewal_cache.py`` runs random operation sequences (configured and AAA
nodes, every layout above) through two engines, one without the cache, and requires the same
replies, counters, bindings, intents and events.

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
#: HMAC-MD5 / keyed-MD5 authenticator), the shortest one remembered; its reply is 20 + 22 bytes.
REQUEST_LENGTH = 46
REPLY_LENGTH = 42
#: Extension types a remembered request may carry before its MN-HA extension: the NAI (RFC 2794) and
#: RFC 3519's UDP Tunnel Request; its reply: the NAI echoed and the UDP Tunnel Reply.
_NAI = 131
_UDP_TUNNEL_REQUEST = 144
_UDP_TUNNEL_REPLY = 44
_MN_HA_HEADER = b"\x20\x14"
#: Entries kept at most (about 0.3 KB each); when full no new ones are added until entries are
#: dropped (a failed check) or the configuration changes: nodes beyond it take the full path.
CAPACITY = 131_072


class Renewal:
    """What a renewal in place of one request layout read and did (see the module docstring).

    ``key`` is the request's first 16 bytes (type, flags, lifetime, home address, home agent,
    care-of address), ``extension`` its extensions up to the authenticator (the MN-HA header, after
    the NAI and the UDP Tunnel Request when it carries them); the reply is ``head`` + Identification
    + ``reply_extension`` + authenticator.  ``nai`` is the NAI the request names the node by (None:
    by its home address), ``nat`` the ``nat-traversal`` policy a UDP-tunnelled renewal was decided
    under (None when not tunnelled).
    """

    __slots__ = (
        "binding",
        "code",
        "extension",
        "fast",
        "generation",
        "home",
        "identification",
        "lifetime",
        "nai",
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
        nai: str | None = None,
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
        self.nai = nai
        self.nat = nat
        self.extension = request[24:-16]
        self.reply_head = reply[:12]
        self.reply_extension = reply[20:-16]
        #: the C path's copy (ha.fastpath.entry), None when it does not serve this one
        self.fast: Any = None
        #: the engine's generation when the entry last held (HomeAgent._renewal_holds)
        self.generation = -1


def _kinds(data: bytes, start: int) -> tuple[int, ...] | None:
    """The types of the extensions from ``start`` up to a last MN-HA extension with a 16-byte
    authenticator; None when the message does not end with one or its lengths do not add up."""
    end = len(data) - 22
    if end < start or data[end : end + 2] != _MN_HA_HEADER:
        return None
    kinds = []
    while start < end - 1:
        kinds.append(data[start])
        start += 2 + data[start + 1]
    return tuple(kinds) if start == end else None


#: Extension types before the MN-HA extension, request and reply: (not tunnelled, UDP-tunnelled).
_LAYOUTS = (
    {(): (), (_NAI,): (_NAI,)},
    {
        (_UDP_TUNNEL_REQUEST,): (_UDP_TUNNEL_REPLY,),
        (_NAI, _UDP_TUNNEL_REQUEST): (_NAI, _UDP_TUNNEL_REPLY),
        (_UDP_TUNNEL_REQUEST, _NAI): (_NAI, _UDP_TUNNEL_REPLY),
    },
)


def cacheable_layouts(request: bytes, reply: bytes, udp_tunnel: bool) -> bool:
    """The request and its reply have one of the remembered layouts (the NAI and, when the renewal
    is UDP-tunnelled, RFC 3519's extension, before an MN-HA extension with a 16-byte authenticator)."""
    asked = _kinds(request, 24)
    return asked is not None and _LAYOUTS[udp_tunnel].get(asked, -1) == _kinds(reply, 20)
