"""MIP-MIB shaped counters and the bounded security-violation ring (``statistics``,
``security-violations``).

Counter attribute names are the YANG leaf names with ``-`` → ``_``; :meth:`Statistics.as_dict`
gives them back in YANG spelling for the operational-state glue.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

COUNTERS = (
    "requests-received",
    "deregistrations-received",
    "replies-sent",
    "accepted",
    "accepted-no-simultaneous",
    "denied",
    "mn-auth-failures",
    "fa-auth-failures",
    "identification-mismatches",
    "poorly-formed",
    "unknown-ha",
    "gratuitous-arps-sent",
    "discarded",
    # RFC 3519 / RFC 3543
    "udp-tunnel-accepted",
    "revocations-sent",
    "revocations-retransmitted",
    "revocations-unacknowledged",
    "revocation-acks-received",
    "revocations-received",
    "revocation-acks-sent",
    "revocations-discarded",
    # issue 11: what an operator of a production home agent expects besides the MIP-MIB counters
    "proxy-arps-sent",
    "deregistration-replies-sent",
    "security-violations-total",
    "data-plane-failures",
    "internal-errors",
)


class Statistics:
    """Home agent counters; ``denied_by_code`` maps a reply code to its count."""

    __slots__ = (*(name.replace("-", "_") for name in COUNTERS), "denied_by_code", "discontinuity_time")
    # the counters of COUNTERS, declared for the type checker (test_statistics_declares_every_counter)
    requests_received: int
    deregistrations_received: int
    replies_sent: int
    accepted: int
    accepted_no_simultaneous: int
    denied: int
    mn_auth_failures: int
    fa_auth_failures: int
    identification_mismatches: int
    poorly_formed: int
    unknown_ha: int
    gratuitous_arps_sent: int
    discarded: int
    udp_tunnel_accepted: int
    revocations_sent: int
    revocations_retransmitted: int
    revocations_unacknowledged: int
    revocation_acks_received: int
    revocations_received: int
    revocation_acks_sent: int
    revocations_discarded: int
    proxy_arps_sent: int
    deregistration_replies_sent: int
    security_violations_total: int
    data_plane_failures: int
    internal_errors: int

    def __init__(self) -> None:
        self.clear()
        self.discontinuity_time: float | None = None  # Unix time of the last reset; None: since start

    def clear(self, wallclock: float | None = None) -> None:
        """``clear-statistics``: every counter back to zero (``discontinuity-time`` = ``wallclock``)."""
        for name in COUNTERS:
            setattr(self, name.replace("-", "_"), 0)
        self.denied_by_code: Counter[int] = Counter()
        self.discontinuity_time = wallclock

    def as_dict(self) -> dict[str, int | dict[int, int]]:
        """Counters in YANG spelling, plus ``denied-by-code`` as ``{code: count}``."""
        result: dict[str, int | dict[int, int]] = {
            name: getattr(self, name.replace("-", "_")) for name in COUNTERS
        }
        result["denied-by-code"] = dict(sorted(self.denied_by_code.items()))
        return result


@dataclass(frozen=True, slots=True)
class Violation:
    """One security violation (``security-violations/violation``); ``index`` grows forever."""

    index: int
    time: float  # wallclock (Unix seconds)
    peer: IPv4Address
    spi: int | None
    reason: str
    home_address: IPv4Address | None = None
    identification: int | None = None
    reply_code: int | None = None


@dataclass(slots=True)
class PeerViolations:
    """Security violations from one peer address since it was first seen (``security-violations/peer``)."""

    count: int
    last_time: float


class ViolationRing:
    """The last ``capacity`` security violations; older ones fall off, indexes keep increasing.

    Also counts violations per peer address, for the ``peer_capacity`` peers seen most recently (a
    flood from spoofed sources cannot grow it without bound; the least recent peer is forgotten).
    """

    __slots__ = ("_entries", "_next_index", "_peer_capacity", "peers")

    def __init__(self, capacity: int = 256, peer_capacity: int = 1024) -> None:
        self._entries: deque[Violation] = deque(maxlen=capacity)
        self._next_index = 1
        self._peer_capacity = peer_capacity
        self.peers: OrderedDict[IPv4Address, PeerViolations] = OrderedDict()

    def record(
        self,
        *,
        time: float,
        peer: IPv4Address,
        spi: int | None,
        reason: str,
        home_address: IPv4Address | None = None,
        identification: int | None = None,
        reply_code: int | None = None,
    ) -> Violation:
        violation = Violation(
            self._next_index, time, peer, spi, str(reason), home_address, identification, reply_code
        )
        self._next_index += 1
        self._entries.append(violation)
        totals = self.peers.get(peer)
        if totals is None:
            if len(self.peers) >= self._peer_capacity:
                self.peers.popitem(last=False)
            totals = self.peers[peer] = PeerViolations(0, time)
        else:
            self.peers.move_to_end(peer)
        totals.count += 1
        totals.last_time = time
        return violation

    def __iter__(self) -> Iterator[Violation]:
        """Oldest first; a snapshot, so recording while iterating is safe."""
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.peers.clear()
