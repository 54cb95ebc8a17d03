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

import json
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import final

from ha.aaa.mn_aaa import ChapCredentials
from ha.aaa.profile import AaaProfile
from ha.protocol.auth import SecurityAssociation
from ha.protocol.constants import ReverseTunnelPolicy
from ha.protocol.messages import RegistrationRequest

_string = json.encoder.encode_basestring_ascii  # a JSON string literal, quotes included (C)

#: Names of AAA-learnt mobile nodes: the prefix keeps them apart from configured nodes.
AAA_NODE_PREFIX = "aaa:"


@dataclass(frozen=True, slots=True)
class AaaLookup:
    """A RADIUS Access-Request the shell must make for ``nai``."""

    nai: str
    home_address: IPv4Address | None  # the Framed-IP-Address hint (None for 0.0.0.0)
    chap: ChapCredentials | None  # MN-AAA: CHAP-Password/Challenge instead of the lookup password


@final
@dataclass(frozen=True, slots=True)
class AaaAccepted:
    profile: AaaProfile
    server: str = ""


@final
@dataclass(frozen=True, slots=True)
class AaaRejected:
    reason: str


@final
@dataclass(frozen=True, slots=True)
class AaaUnavailable:
    reason: str


AaaOutcome = AaaAccepted | AaaRejected | AaaUnavailable


class Pending:
    """The request a look-up is for (the latest; MN-AAA: the one whose CHAP RADIUS checks)."""

    __slots__ = ("data", "mn_aaa", "port", "received_on", "request", "source", "started")

    def __init__(
        self,
        data: bytes,
        request: RegistrationRequest,
        source: tuple[str, int],
        received_on: IPv4Address,
        port: int,
        mn_aaa: bool,
        now: float,
    ) -> None:
        self.data = data
        self.request = request  # ``data`` parsed: decided without parsing it again
        self.source = source
        self.received_on = received_on
        self.port = port
        self.mn_aaa = mn_aaa
        self.started = now


class Subscriber:
    """An AAA-learnt mobile node: what the decision sees of a ``MobileNode`` (same attribute names),
    where its key and address came from, and its accounting session.

    One slotted object, not a ``MobileNode`` plus a profile: the cache holds one per subscriber, and
    the whole of it stays under 1 KB (``bench/aaa.py``), most of it the association's MD5 states.
    """

    __slots__ = (
        "_journal",
        "address_pool",
        "address_source",
        "association_tuple",
        "home_address",
        "key_source",
        "max_lifetime",
        "nai",
        "name",
        "session",
        "session_start",
    )
    reverse_tunnel: ReverseTunnelPolicy | None = None  # AAA nodes follow the home agent's settings
    care_of_access: tuple[IPv4Network, ...] = ()

    def __init__(self, profile: AaaProfile, session: int, session_start: float) -> None:
        self.name = AAA_NODE_PREFIX + profile.nai
        self.nai = profile.nai
        self.home_address = profile.home_address
        self.address_pool = profile.pool
        self.max_lifetime = profile.lifetime
        self.association_tuple = (profile.security_association(),)
        self.key_source = sys.intern(profile.key_source)
        self.address_source = sys.intern(profile.address_source)
        self.session = session
        self.session_start = session_start
        self._journal: str | None = None

    @property
    def node(self) -> Subscriber:
        """The mobile node the engine decides with: the subscriber itself."""
        return self

    @property
    def security_associations(self) -> dict[int, SecurityAssociation]:
        return {sa.spi: sa for sa in self.association_tuple}

    @property
    def session_id(self) -> str:
        """Acct-Session-Id: Unix seconds of the first acceptance, then a per-engine counter (hex)."""
        return f"{self.session:016X}"

    @property
    def profile(self) -> AaaProfile:
        sa = self.association_tuple[0]
        return AaaProfile(
            self.nai,
            sa.spi,
            sa.key,
            sa.algorithm,
            self.home_address,
            self.address_pool,
            self.max_lifetime,
            self.key_source,
            self.address_source,
        )

    def to_dict(self) -> dict:
        """What the binding journal keeps (the key included: the journal lives in the state directory)."""
        d = self.profile.to_dict()
        d["session_id"] = self.session_id
        d["session_start"] = self.session_start
        return d

    def journal_json(self) -> str:
        """:meth:`to_dict` as JSON, encoded once: every whole journal record of an AAA binding carries it
        (its first registration, a compaction's snapshot; a renewal in place writes a short line)."""
        text = self._journal
        if text is None:  # written field by field: to_dict and an encoder cost ~4x more
            sa = self.association_tuple[0]
            home = "null" if self.home_address is None else f'"{self.home_address}"'
            pool = "null" if self.address_pool is None else _string(self.address_pool)
            lifetime = "null" if self.max_lifetime is None else f"{self.max_lifetime:d}"
            text = self._journal = (
                f'{{"nai":{_string(self.nai)},"spi":{sa.spi:d},"key":"{sa.key.hex()}",'
                f'"algorithm":"{sa.algorithm.value}","home_address":{home},"pool":{pool},'
                f'"lifetime":{lifetime},"key_source":"{self.key_source}",'
                f'"address_source":"{self.address_source}","session_id":"{self.session:016X}",'
                f'"session_start":{self.session_start!r}}}'
            )
        return text

    @classmethod
    def from_dict(cls, d: dict) -> Subscriber:
        return cls(AaaProfile.from_dict(d), int(str(d["session_id"]), 16), float(d["session_start"]))
