"""The engine's side of AAA: look-ups it asks for, answers it is given, and the subscribers it learnt.

The engine never does I/O.  A registration from an NAI that only RADIUS knows becomes an
:class:`AaaLookup` (``HomeAgent.next_aaa_lookup``) and no reply; the shell answers it later with
``HomeAgent.handle_aaa_answer`` and one of :class:`AaaAccepted`, :class:`AaaRejected`,
:class:`AaaUnavailable`.  At most one look-up per NAI is in flight: requests that arrive for it
meanwhile (retransmissions) are absorbed, the latest one is answered.

A subscriber RADIUS accepted is kept as a :class:`Subscriber` for as long as it has bindings (renewals
and handovers are decided locally with its key), in the binding journal across restarts, and counted
against ``cache-size``.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from ha.aaa.mn_aaa import ChapCredentials
from ha.aaa.profile import AaaProfile

from .config import MobileNode

#: Names of AAA-learnt mobile nodes: the prefix keeps them apart from configured nodes.
AAA_NODE_PREFIX = "aaa:"


@dataclass(frozen=True, slots=True)
class AaaLookup:
    """A RADIUS Access-Request the shell must make for ``nai``."""

    nai: str
    home_address: IPv4Address | None  # the Framed-IP-Address hint (None for 0.0.0.0)
    chap: ChapCredentials | None  # MN-AAA: CHAP-Password/Challenge instead of the lookup password


@dataclass(frozen=True, slots=True)
class AaaAccepted:
    profile: AaaProfile
    server: str = ""


@dataclass(frozen=True, slots=True)
class AaaRejected:
    reason: str


@dataclass(frozen=True, slots=True)
class AaaUnavailable:
    reason: str


AaaOutcome = AaaAccepted | AaaRejected | AaaUnavailable


class Pending:
    """The request a look-up is for (the latest; MN-AAA: the one whose CHAP RADIUS checks)."""

    __slots__ = ("data", "mn_aaa", "port", "received_on", "source", "started")

    def __init__(
        self,
        data: bytes,
        source: tuple[str, int],
        received_on: IPv4Address,
        port: int,
        mn_aaa: bool,
        now: float,
    ) -> None:
        self.data = data
        self.source = source
        self.received_on = received_on
        self.port = port
        self.mn_aaa = mn_aaa
        self.started = now


class Subscriber:
    """An AAA-learnt mobile node: its profile, the ``MobileNode`` the decision sees, its accounting id."""

    __slots__ = ("node", "profile", "session_id", "session_start")

    def __init__(self, profile: AaaProfile, session_id: str, session_start: float) -> None:
        self.profile = profile
        self.node = MobileNode(
            name=AAA_NODE_PREFIX + profile.nai,
            home_address=profile.home_address,
            address_pool=profile.pool,
            nai=profile.nai,
            max_lifetime=profile.lifetime,
            security_associations=[profile.security_association()],
        )
        self.session_id = session_id
        self.session_start = session_start

    def to_dict(self) -> dict:
        """What the binding journal keeps (the key included: the journal lives in the state directory)."""
        d = self.profile.to_dict()
        d["session_id"] = self.session_id
        d["session_start"] = self.session_start
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Subscriber:
        return cls(AaaProfile.from_dict(d), str(d["session_id"]), float(d["session_start"]))
