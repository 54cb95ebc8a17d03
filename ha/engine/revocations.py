"""RFC 3543 registration revocation state of one home agent: negotiated bindings, pending revocations.

The home agent revokes a binding it removes for an operator or configuration reason (``cleared``:
``clear-bindings``, an AAA Disconnect-Request, a mobile node removed or re-addressed) when revocation
was negotiated with the foreign agent that relayed it.  The Registration Revocation goes to that agent
on UDP 434, signed with the FA-HA association, and is sent again with exponential backoff until the
agent acknowledges it or the attempts run out (``revocations-unacknowledged``).  Bindings that end by
themselves (expired, deregistered, replaced by a new registration, revoked by the agent) need no
revocation: the agent saw the same event or caused it.

Everything here is bookkeeping; bytes come from :mod:`ha.protocol.revocation` and the engine sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from ha.protocol.auth import SecurityAssociation
from ha.protocol.revocation import (
    Revocation,
    RevocationPolicy,
    check_revocation_id,
    next_revocation_id,
    push_revocation,
)


@dataclass(slots=True)
class Negotiated:
    """A binding registered through a foreign agent that negotiated revocation (§3.1)."""

    foreign_agent: IPv4Address
    fa_timestamp: int  # the agent's timestamp in its Revocation Support extension
    ha_timestamp: int  # ours, in the reply
    inform: bool  # the agent offered the I bit


@dataclass(slots=True)
class Pending:
    """A revocation waiting for its acknowledgement."""

    data: bytes
    foreign_agent: IPv4Address
    home_address: IPv4Address
    revocation_id: int
    sent: int
    due: float


class RevocationState:
    """Negotiated bindings (by packed binding key), pending revocations, identifiers per agent."""

    __slots__ = ("last_received", "last_sent", "negotiated", "pending")

    def __init__(self) -> None:
        self.negotiated: dict[int, Negotiated] = {}
        self.pending: dict[tuple[IPv4Address, int], Pending] = {}
        self.last_sent: dict[IPv4Address, int] = {}
        self.last_received: dict[IPv4Address, int] = {}

    def revoke(
        self,
        negotiated: Negotiated,
        *,
        home_address: IPv4Address,
        ha_address: IPv4Address,
        sa: SecurityAssociation,
        policy: RevocationPolicy,
        now: float,
        wallclock: float,
    ) -> Pending:
        """Build, remember and return a revocation of one binding (the caller sends ``data``)."""
        agent = negotiated.foreign_agent
        floor = max(self.last_sent.get(agent, 0), negotiated.ha_timestamp)
        revocation_id = next_revocation_id(wallclock, floor)
        self.last_sent[agent] = revocation_id
        message = Revocation(home_address, ha_address, agent, revocation_id, True, negotiated.inform)
        delay = policy.schedule.delay(1)
        pending = Pending(
            push_revocation(message, sa),
            agent,
            home_address,
            revocation_id,
            1,
            now + (delay if delay is not None else 0.0),
        )
        if delay is not None:
            self.pending[(agent, revocation_id)] = pending
        return pending

    def acknowledged(self, agent: IPv4Address, home_address: IPv4Address, revocation_id: int) -> bool:
        """An authentic acknowledgement arrived: stop retransmitting that revocation."""
        pending = self.pending.get((agent, revocation_id))
        if pending is None or pending.home_address != home_address:
            return False
        del self.pending[(agent, revocation_id)]
        return True

    def next_due(self) -> float | None:
        return min((p.due for p in self.pending.values()), default=None)

    def due(self, now: float, policy: RevocationPolicy) -> tuple[list[Pending], int]:
        """Revocations to send again now, and how many ran out of attempts (dropped)."""
        again: list[Pending] = []
        exhausted = 0
        schedule = policy.schedule
        for key, pending in list(self.pending.items()):
            if pending.due > now:
                continue
            if pending.sent >= schedule.attempts:
                del self.pending[key]
                exhausted += 1
                continue
            pending.sent += 1
            delay = schedule.delay(pending.sent)
            pending.due = now + (delay if delay is not None else schedule.ceiling)
            again.append(pending)
        return again, exhausted

    def fresh(self, agent: IPv4Address, revocation_id: int, registered_timestamp: int) -> bool:
        """§5 for a revocation the agent sent; remembers the identifier when it is fresh."""
        if not check_revocation_id(revocation_id, registered_timestamp, self.last_received.get(agent)):
            return False
        self.last_received[agent] = revocation_id
        return True
