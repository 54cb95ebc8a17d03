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

``tests/engine/test_engine_renewal_cache.py`` runs random operation sequences through two engines,
one without the cache, and requires the same replies, counters, bindings, intents and events.
"""

from __future__ import annotations

from ipaddress import IPv4Address

from ha.protocol import HomeAgentPolicy, SecurityAssociation

from .bindings import Binding
from .config import EngineNode

#: The usual request: 24-byte fixed part + MN-HA extension (type 32, length 20: SPI + 16-byte
#: HMAC-MD5 / keyed-MD5 authenticator); its reply is 20 + 22 bytes.
REQUEST_LENGTH = 46
REPLY_LENGTH = 42
#: Entries kept at most (about 0.3 KB each); when full no new ones are added until entries are
#: dropped (a failed check) or the configuration changes: nodes beyond it take the full path.
CAPACITY = 131_072


class Renewal:
    """What a renewal in place of one request layout read and did (see the module docstring).

    ``key`` is the request's first 16 bytes (type, flags, lifetime, home address, home agent,
    care-of address), ``extension`` its MN-HA extension header (type, length, SPI); the reply is
    ``head`` + Identification + ``reply_extension`` + authenticator.
    """

    __slots__ = (
        "binding",
        "code",
        "extension",
        "home",
        "identification",
        "lifetime",
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
        self.extension = request[24:30]
        self.reply_head = reply[:12]
        self.reply_extension = reply[20:26]


def cacheable_reply(reply: bytes, home_address: IPv4Address | None) -> bool:
    """The reply has the usual layout (fixed part + MN-HA extension) and names a home address."""
    return len(reply) == REPLY_LENGTH and reply[20] == 32 and reply[21] == 20 and home_address is not None
