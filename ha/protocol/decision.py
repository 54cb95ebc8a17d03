"""The home agent's verdict on one Registration Request (RFC 5944 §3.8), as a pure function.

:func:`decide` sees only what it is given: the parsed request, where it arrived, the virtual router's
policy, a snapshot of what the engine knows about the mobile node and the foreign agent that relayed
it, and the two clocks (monotonic ``now`` for lifetimes, Unix ``wallclock`` for timestamps).  It
returns :class:`Accept` or :class:`Deny`, each carrying everything the engine must change (bindings,
replay state) and everything the reply needs.  It changes nothing itself.

The checks run in RFC order, first failure wins (docs/protocol-decisions.md explains each choice):

1. poorly formed for this home agent (home address 0.0.0.0 without an NAI) -> 134
2. sent to a broadcast address or to another home agent address -> 136 (no binding change)
3. authorization-enabling extension missing, unknown mobile node/SPI, bad authenticator -> 131
4. identification not fresh (timestamp or nonce) -> 133
5. foreign agent with a security association but no valid Foreign-Home extension -> 132
6. critical vendor extension not understood -> 140 (from the mobile node) / 141 (from the agent)
7. deregistration: accepted (lifetime 0) once the request is authentic and fresh
8. registration policy: care-of address sanity 134, home address 129, care-of access 129,
   reverse tunnel 137/138, encapsulation 139, simultaneous bindings 135, binding limit 130

Speed (one of these runs per request; ``bench/registration_protocol.py``): the per-request records
(``Arrival``, ``MobileNodeRecord``, ``Accept``, ``Deny``) are slotted dataclasses that are *not*
frozen — a frozen dataclass pays ~100 ns per field on construction, which for the 19 fields of an
``Accept`` alone is a fifth of the per-request budget.  Treat them as read-only all the same.
Addresses are compared as integers and flags handled as plain ints, converted back once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network

from .auth import SecurityAssociation, verify
from .constants import (
    INFINITE_LIFETIME,
    MEANINGFUL_FLAGS,
    Encapsulation,
    ReplayProtection,
    ReplyCode,
    RequestFlags,
    ReverseTunnelPolicy,
    SecurityViolation,
)
from .messages import (
    REQUEST_FLAGS,
    CriticalVendorExtension,
    ForeignHomeAuth,
    GeneralizedAuth,
    MobileHomeAuth,
    MobileNodeNai,
    RegistrationRequest,
    RevocationSupport,
    UdpTunnelReply,
)
from .replay import ReplayVerdict, check_identification, check_timestamp

_LIMITED_BROADCAST = 0xFFFF_FFFF
_UNSPECIFIED = 0


# --- inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HomeAgentPolicy:
    """The home agent configuration of one virtual router (YANG ``home-agent``), for decisions.

    ``broadcast_addresses`` are the home subnets' directed broadcasts; 255.255.255.255 is always
    treated as broadcast.  ``max_bindings`` None means no limit.  ``broadcast_forwarding`` False
    makes the B bit ignored (RFC 5944 §3.8.3: a home agent without support MUST ignore it).
    """

    address: IPv4Address
    broadcast_addresses: frozenset[IPv4Address] = frozenset()
    max_lifetime: int = 36000
    replay_tolerance: int = 7
    reverse_tunnel: ReverseTunnelPolicy = ReverseTunnelPolicy.ALLOWED
    encapsulations: frozenset[Encapsulation] = frozenset({Encapsulation.IP_IN_IP})
    simultaneous_bindings: int = 0
    max_bindings: int | None = None
    care_of_access: tuple[IPv4Network, ...] = ()
    broadcast_forwarding: bool = False
    # Derived once, read per request: our address and every broadcast address (255.255.255.255
    # included) as integers, and the M|G flag values that ask for an offered encapsulation.
    address_integer: int = field(init=False, repr=False, compare=False)
    broadcast_integers: frozenset[int] = field(init=False, repr=False, compare=False)
    offered_encapsulation_flags: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_lifetime <= INFINITE_LIFETIME:
            raise ValueError("max_lifetime must be 1..65535 seconds")
        if not 1 <= self.replay_tolerance <= 255:
            raise ValueError("replay_tolerance must be 1..255 seconds")
        if not 0 <= self.simultaneous_bindings <= 255:
            raise ValueError("simultaneous_bindings must be 0..255")
        object.__setattr__(self, "reverse_tunnel", ReverseTunnelPolicy(self.reverse_tunnel))
        object.__setattr__(self, "encapsulations", frozenset(Encapsulation(e) for e in self.encapsulations))
        object.__setattr__(self, "broadcast_addresses", frozenset(self.broadcast_addresses))
        object.__setattr__(self, "care_of_access", tuple(self.care_of_access))
        object.__setattr__(self, "address_integer", int(self.address))
        broadcasts = frozenset(int(a) for a in self.broadcast_addresses) | {_LIMITED_BROADCAST}
        object.__setattr__(self, "broadcast_integers", broadcasts)
        offered = frozenset(
            bits for bits, kind in _ENCAPSULATION_BY_FLAGS.items() if kind in self.encapsulations
        )
        object.__setattr__(self, "offered_encapsulation_flags", offered)


@dataclass(slots=True)
class MobileNodeRecord:
    """What the engine knows about the mobile node a request names (by NAI, else by home address).

    ``home_address`` is the static address, or the pool address currently assigned, or None.
    ``care_of_addresses`` are its current bindings.  ``last_identification`` and ``ha_nonce`` are the
    replay state the engine stored from earlier verdicts.  Overrides left None inherit the policy.
    """

    name: str
    security_associations: tuple[SecurityAssociation, ...] = ()
    home_address: IPv4Address | None = None
    dynamic: bool = False
    care_of_addresses: tuple[IPv4Address, ...] = ()
    last_identification: int | None = None
    ha_nonce: int | None = None
    max_lifetime: int | None = None
    reverse_tunnel: ReverseTunnelPolicy | None = None
    care_of_access: tuple[IPv4Network, ...] | None = None

    def security_association(self, spi: int) -> SecurityAssociation | None:
        """The association this SPI names for this mobile node, if configured."""
        for sa in self.security_associations:
            if sa.spi == spi:
                return sa
        return None


@dataclass(frozen=True, slots=True)
class ForeignAgentRecord:
    """A foreign agent the home agent shares security associations with (keyed by its address)."""

    address: IPv4Address
    security_associations: tuple[SecurityAssociation, ...] = ()

    def security_association(self, spi: int) -> SecurityAssociation | None:
        """The association this SPI names for this foreign agent, if configured."""
        for sa in self.security_associations:
            if sa.spi == spi:
                return sa
        return None


@dataclass(slots=True)
class Arrival:
    """Where the request came from and where it was sent (IP and UDP), as the socket reported it.

    ``destination_integer`` is derived on construction (a caller may keep one per peer and reuse it).
    """

    source: IPv4Address
    source_port: int
    destination: IPv4Address
    destination_port: int = 434
    destination_integer: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.destination_integer = int(self.destination)


# --- outputs -----------------------------------------------------------------------------------------


class BindingAction(StrEnum):
    """What an accepted request does to the mobility binding list (RFC 5944 §3.8.2.2)."""

    REGISTER = "register"  # add or renew (home address, care-of address)
    DEREGISTER = "deregister"  # remove the binding for this care-of address only
    DEREGISTER_ALL = "deregister-all"  # lifetime 0 with care-of address = home address


@dataclass(slots=True)
class Deny:
    """The request is refused with ``code``; no binding changes.

    ``security_association`` and ``fa_security_association`` sign the reply: the associations the
    request named when the home agent holds them, else the first one configured for that mobile node /
    foreign agent (every reply for which a key is known is authenticated); ``spi`` is the SPI the
    request carried.  ``accepted_identification`` / ``ha_nonce``
    are replay state to store even though the request is denied (the request was authentic and
    fresh, or a nonce was issued).  ``violation`` is set for authentication failures (131-133).
    """

    request: RegistrationRequest
    code: ReplyCode
    reason: str
    reply_identification: int
    home_agent: IPv4Address
    security_association: SecurityAssociation | None = None
    fa_security_association: SecurityAssociation | None = None
    violation: SecurityViolation | None = None
    spi: int | None = None
    accepted_identification: int | None = None
    ha_nonce: int | None = None

    @property
    def accepted(self) -> bool:
        """Always False; lets callers test either verdict the same way."""
        return False


@dataclass(frozen=True, slots=True)
class UdpTunnel:
    """An accepted registration's RFC 3519 UDP tunnel: the NAT mapping and the reply's extension 44."""

    address: int  # the request's IP source (the NAT's public address), as an integer
    port: int  # the request's UDP source port
    forced: bool  # tunnelling without a detected NAT (F)
    reply: UdpTunnelReply


@dataclass(slots=True)
class Accept:
    """The request is accepted; the engine applies ``action`` and answers with ``code``.

    For ``REGISTER``: ``home_address`` None with ``assign`` True means "allocate any address from the
    mobile node's pool"; an address with ``assign`` True means "reserve exactly this one".  If the
    engine cannot, it answers ``accept.deny(ReplyCode.INSUFFICIENT_RESOURCES, ...)`` instead.
    ``replace_existing`` drops the mobile node's other care-of addresses (S not set or not
    supported).  ``expires_at`` is on the monotonic clock; None = never (or deregistration).
    """

    request: RegistrationRequest
    code: ReplyCode
    action: BindingAction
    lifetime: int
    expires_at: float | None
    home_address: IPv4Address | None
    assign: bool
    care_of_address: IPv4Address
    flags: RequestFlags
    encapsulation: Encapsulation
    reverse_tunnel: bool
    replace_existing: bool
    security_association: SecurityAssociation
    fa_security_association: SecurityAssociation | None
    reply_identification: int
    accepted_identification: int | None
    ha_nonce: int | None
    nai: str | None
    #: Set after ``decide`` by ``udp_tunnel.udp_tunnel_step`` (RFC 3519) and
    #: ``revocation.revocation_step`` (RFC 3543); both travel in the reply.
    udp_tunnel: UdpTunnel | None = None
    revocation: RevocationSupport | None = None

    @property
    def accepted(self) -> bool:
        """Always True."""
        return True

    def deny(self, code: ReplyCode, reason: str) -> Deny:
        """Turn this acceptance into a refusal the engine decided on (pool exhausted, ...)."""
        if code.accepted:
            raise ValueError(f"{code!r} is not a denial code")
        return Deny(
            request=self.request,
            code=code,
            reason=reason,
            reply_identification=self.reply_identification,
            home_agent=self.request.home_agent,
            security_association=self.security_association,
            fa_security_association=self.fa_security_association,
            spi=self.security_association.spi,
            accepted_identification=self.accepted_identification,
            ha_nonce=self.ha_nonce,
        )


Verdict = Accept | Deny


# --- the decision ------------------------------------------------------------------------------------

_S = int(RequestFlags.S)
_B = int(RequestFlags.B)
_T = int(RequestFlags.T)
_MEANINGFUL = int(MEANINGFUL_FLAGS)
_ENCAPSULATION_FLAGS = int(RequestFlags.M | RequestFlags.G)
#: What M and G ask for; both at once is contradictory (None).
_ENCAPSULATION_BY_FLAGS: dict[int, Encapsulation | None] = {
    0: Encapsulation.IP_IN_IP,
    int(RequestFlags.M): Encapsulation.MINIMAL,
    int(RequestFlags.G): Encapsulation.GRE,
    _ENCAPSULATION_FLAGS: None,
}


# Enum members read for every request, bound to module names once: reading a member off its Enum
# class costs ~70 ns in Python 3.11, a module global ~15 ns.
_TIMESTAMP = ReplayProtection.TIMESTAMP
_DISABLED = ReverseTunnelPolicy.DISABLED
_REQUIRED = ReverseTunnelPolicy.REQUIRED
_ACCEPTED = ReplyCode.ACCEPTED
_REGISTER = BindingAction.REGISTER


def _in_any(address: IPv4Address, networks: tuple[IPv4Network, ...]) -> bool:
    return any(address in network for network in networks)


def _signer(holder: MobileNodeRecord | ForeignAgentRecord) -> SecurityAssociation | None:
    """The association that signs a reply when the request named none we hold: any we hold for the peer.

    Every reply for which the home agent knows a key is authenticated (docs/protocol-decisions.md §7):
    a peer drops unauthenticated replies, and it may well hold our association even if its request
    named another SPI or none.
    """
    return holder.security_associations[0] if holder.security_associations else None


def _deny(
    request: RegistrationRequest,
    code: ReplyCode,
    reason: str,
    sa: SecurityAssociation | None,
    fa_sa: SecurityAssociation | None,
    spi: int | None,
    *,
    replay: ReplayVerdict | None = None,
    violation: SecurityViolation | None = None,
    home_agent: IPv4Address | None = None,
) -> Deny:
    """A denial; ``replay`` (once the identification was checked) gives its identification fields."""
    if replay is None:
        identification, accepted, ha_nonce = request.identification, None, None
    else:
        identification, accepted, ha_nonce = (
            replay.reply_identification,
            replay.accepted_identification,
            replay.ha_nonce,
        )
    return Deny(
        request,
        code,
        reason,
        identification,
        request.home_agent if home_agent is None else home_agent,
        sa,
        fa_sa,
        violation,
        spi,
        accepted,
        ha_nonce,
    )


def decide(
    request: RegistrationRequest,
    *,
    policy: HomeAgentPolicy,
    mobile_node: MobileNodeRecord | None,
    foreign_agent: ForeignAgentRecord | None,
    arrival: Arrival,
    now: float,
    wallclock: float,
    bindings_in_use: int = 0,
    fresh_nonce: int = 0,
    mn_aaa_verified: bool = False,
) -> Verdict:
    """Decide on one parsed request.  Pure: same inputs, same verdict.

    ``bindings_in_use`` is the virtual router's current binding count (for ``max_bindings``);
    ``fresh_nonce`` a 32-bit random number from the caller, used only by nonce associations.
    ``mn_aaa_verified``: RADIUS accepted this very request's MN-AAA authenticator (RFC 4721 §8, as
    CHAP); the MN-AAA extension is then the authorization-enabling one and the mobile node's (AAA-learnt)
    association signs the reply.
    """
    # One pass over the extensions for everything the checks below look at.
    mn_ha = fa_ha = None
    mn_ha_index = 0
    nai: str | None = None
    mn_aaa = False
    cvse: tuple[int, CriticalVendorExtension] | None = None  # (position, extension) of the first
    for index, extension in enumerate(request.extensions):
        kind = type(extension)
        if kind is MobileHomeAuth:
            if mn_ha is None:
                mn_ha, mn_ha_index = extension, index
        elif kind is ForeignHomeAuth:
            fa_ha = fa_ha or extension
        elif kind is MobileNodeNai:
            nai = extension.nai if nai is None else nai
        elif kind is GeneralizedAuth:
            mn_aaa = mn_aaa or extension.is_mn_aaa
        elif kind is CriticalVendorExtension and cvse is None:
            cvse = (index, extension)
    spi = mn_ha.spi if mn_ha is not None else None
    named_sa = mobile_node.security_association(spi) if mobile_node is not None and spi is not None else None
    named_fa_sa = (
        foreign_agent.security_association(fa_ha.spi)
        if foreign_agent is not None and fa_ha is not None
        else None
    )
    sa = named_sa if named_sa is not None or mobile_node is None else _signer(mobile_node)
    fa_sa = named_fa_sa if named_fa_sa is not None or foreign_agent is None else _signer(foreign_agent)
    home, agent, coa = request.integers

    # 1. Poorly formed for a home agent (the codec already refused structural errors).
    if home == _UNSPECIFIED and nai is None:
        return _deny(
            request,
            ReplyCode.POORLY_FORMED_REQUEST,
            "home address 0.0.0.0 without an NAI extension",
            sa,
            fa_sa,
            spi,
        )

    # 2. Broadcast or someone else's address: deny, answer from our unicast address (§3.8.2.1).
    broadcasts = policy.broadcast_integers
    if arrival.destination_integer in broadcasts or agent in broadcasts:
        return _deny(
            request,
            ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS,
            "request sent to a broadcast address",
            sa,
            fa_sa,
            spi,
            home_agent=policy.address,
        )
    if agent != policy.address_integer:
        return _deny(
            request,
            ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS,
            f"home agent field {request.home_agent} is not us",
            sa,
            fa_sa,
            spi,
            home_agent=policy.address,
        )

    # 3. The authorization-enabling extension (§3.8.2.1, §5.1; MN-AAA: RFC 4721 §6, checked by RADIUS).
    aaa_checked = (
        mn_ha is None
        and mn_aaa
        and mn_aaa_verified
        and mobile_node is not None
        and bool(mobile_node.security_associations)
    )
    if aaa_checked:
        assert mobile_node is not None
        named_sa = sa = mobile_node.security_associations[0]
    elif mn_ha is None:
        if mn_aaa:
            return _deny(
                request,
                ReplyCode.MN_FAILED_AUTHENTICATION,
                "MN-AAA authentication needs an AAA server (not supported)",
                sa,
                fa_sa,
                spi,
                violation=SecurityViolation.OTHER,
            )
        return _deny(
            request,
            ReplyCode.MN_FAILED_AUTHENTICATION,
            "no Mobile-Home authentication extension",
            sa,
            fa_sa,
            spi,
            violation=SecurityViolation.MISSING_SECURITY_EXTENSION,
        )
    if mobile_node is None:
        return _deny(
            request,
            ReplyCode.MN_FAILED_AUTHENTICATION,
            "no security association for this mobile node",
            sa,
            fa_sa,
            spi,
            violation=SecurityViolation.NO_SECURITY_ASSOCIATION,
        )
    if named_sa is None:
        return _deny(
            request,
            ReplyCode.MN_FAILED_AUTHENTICATION,
            f"SPI {spi} is not configured for {mobile_node.name}",
            sa,
            fa_sa,
            spi,
            violation=SecurityViolation.BAD_SPI,
        )
    if not aaa_checked and not verify(request.raw, mn_ha, named_sa):
        return _deny(
            request,
            ReplyCode.MN_FAILED_AUTHENTICATION,
            "Mobile-Home authenticator does not verify",
            sa,
            fa_sa,
            spi,
            violation=SecurityViolation.BAD_AUTHENTICATOR,
        )

    # 4. Identification (§5.7).  Its reply value is used from here on, whatever the outcome.
    replay_method = named_sa.replay_protection
    if replay_method is _TIMESTAMP:
        replay = check_timestamp(
            request.identification,
            wallclock=wallclock,
            tolerance=policy.replay_tolerance,
            last_accepted=mobile_node.last_identification,
        )
    else:
        replay = check_identification(
            replay_method,
            request.identification,
            wallclock=wallclock,
            tolerance=policy.replay_tolerance,
            last_accepted=mobile_node.last_identification,
            expected_ha_nonce=mobile_node.ha_nonce,
            fresh_ha_nonce=fresh_nonce,
        )
    if not replay.ok:
        # A nonce mobile node's first request cannot know our nonce: expected, not a violation.
        first_contact = replay_method is ReplayProtection.NONCE and mobile_node.ha_nonce is None
        return _deny(
            request,
            ReplyCode.IDENTIFICATION_MISMATCH,
            replay.reason,
            sa,
            fa_sa,
            spi,
            replay=replay,
            violation=None if first_contact else SecurityViolation.BAD_IDENTIFIER,
        )

    # 5. The foreign agent, when the home agent shares an association with it (§3.8.2.1).
    if foreign_agent is not None:
        if fa_ha is None:
            return _deny(
                request,
                ReplyCode.FA_FAILED_AUTHENTICATION,
                f"no Foreign-Home extension from {foreign_agent.address}",
                sa,
                fa_sa,
                spi,
                replay=replay,
                violation=SecurityViolation.MISSING_SECURITY_EXTENSION,
            )
        if named_fa_sa is None:
            return _deny(
                request,
                ReplyCode.FA_FAILED_AUTHENTICATION,
                f"SPI {fa_ha.spi} is not configured for {foreign_agent.address}",
                sa,
                fa_sa,
                spi,
                replay=replay,
                violation=SecurityViolation.BAD_SPI,
            )
        if not verify(request.raw, fa_ha, named_fa_sa):
            return _deny(
                request,
                ReplyCode.FA_FAILED_AUTHENTICATION,
                "Foreign-Home authenticator does not verify",
                sa,
                fa_sa,
                spi,
                replay=replay,
                violation=SecurityViolation.BAD_AUTHENTICATOR,
            )

    # 6. Critical vendor extensions: mipha understands none (RFC 3115).
    if cvse is not None:
        index, extension = cvse
        from_mn = index < mn_ha_index
        code = ReplyCode.MN_CVSE_NOT_UNDERSTOOD if from_mn else ReplyCode.FA_CVSE_NOT_UNDERSTOOD
        return _deny(
            request,
            code,
            f"critical vendor extension {extension.vendor_id}/{extension.vendor_type}",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )

    flags = int(request.flags) & _MEANINGFUL

    # 7. Deregistration: authentic and fresh is enough (no policy applies to giving up service).
    if request.lifetime == 0:
        if home == _UNSPECIFIED:
            return _deny(
                request,
                ReplyCode.POORLY_FORMED_REQUEST,
                "deregistration without a home address",
                sa,
                fa_sa,
                spi,
                replay=replay,
            )
        if mobile_node.home_address is not None and request.home_address != mobile_node.home_address:
            return _deny(
                request,
                ReplyCode.ADMINISTRATIVELY_PROHIBITED,
                f"{request.home_address} is not the home address of {mobile_node.name}",
                sa,
                fa_sa,
                spi,
                replay=replay,
            )
        everything = coa == home
        return Accept(
            request,
            ReplyCode.ACCEPTED,
            BindingAction.DEREGISTER_ALL if everything else BindingAction.DEREGISTER,
            0,
            None,
            request.home_address,
            False,
            request.care_of_address,
            REQUEST_FLAGS[flags],
            Encapsulation.IP_IN_IP,
            False,
            everything,
            named_sa,
            named_fa_sa,
            replay.reply_identification,
            replay.accepted_identification,
            replay.ha_nonce,
            nai,
        )

    # 8. Registration policy.
    if coa == _UNSPECIFIED or coa >> 28 == 0xE or coa in broadcasts:  # 0.0.0.0, multicast, broadcast
        return _deny(
            request,
            ReplyCode.POORLY_FORMED_REQUEST,
            f"care-of address {request.care_of_address} is not a unicast address",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )
    if coa == home or coa == policy.address_integer:
        return _deny(
            request,
            ReplyCode.POORLY_FORMED_REQUEST,
            f"care-of address {request.care_of_address} is the home address or ours",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )

    home_address: IPv4Address | None
    known = mobile_node.home_address
    if home == _UNSPECIFIED:
        home_address, assign = known, mobile_node.dynamic and known is None
        if known is None and not mobile_node.dynamic:
            return _deny(
                request,
                ReplyCode.ADMINISTRATIVELY_PROHIBITED,
                f"{mobile_node.name} has no home address",
                sa,
                fa_sa,
                spi,
                replay=replay,
            )
    elif known is not None:
        if home != int(known):
            return _deny(
                request,
                ReplyCode.ADMINISTRATIVELY_PROHIBITED,
                f"{request.home_address} is not the home address of {mobile_node.name}",
                sa,
                fa_sa,
                spi,
                replay=replay,
            )
        home_address, assign = request.home_address, False
    elif mobile_node.dynamic:
        home_address, assign = request.home_address, True
    else:
        return _deny(
            request,
            ReplyCode.ADMINISTRATIVELY_PROHIBITED,
            f"{mobile_node.name} has no home address",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )

    access = mobile_node.care_of_access if mobile_node.care_of_access is not None else policy.care_of_access
    if access and not _in_any(request.care_of_address, access):
        return _deny(
            request,
            ReplyCode.ADMINISTRATIVELY_PROHIBITED,
            f"care-of address {request.care_of_address} is not allowed",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )

    reverse_policy = mobile_node.reverse_tunnel or policy.reverse_tunnel
    wants_reverse = bool(flags & _T)
    if wants_reverse and reverse_policy is _DISABLED:
        return _deny(
            request,
            ReplyCode.REVERSE_TUNNEL_UNAVAILABLE,
            "reverse tunnelling is disabled",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )
    if not wants_reverse and reverse_policy is _REQUIRED:
        return _deny(
            request,
            ReplyCode.REVERSE_TUNNEL_MANDATORY,
            "reverse tunnelling is required and T is not set",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )

    encapsulation = _ENCAPSULATION_BY_FLAGS[flags & _ENCAPSULATION_FLAGS]
    if flags & _ENCAPSULATION_FLAGS not in policy.offered_encapsulation_flags:
        return _deny(
            request,
            ReplyCode.ENCAPSULATION_UNAVAILABLE,
            f"encapsulation {encapsulation} is not offered",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )

    # ``in`` tries identity first: the codec's cached addresses usually match without __eq__.
    existing = mobile_node.care_of_addresses
    bound_here = request.care_of_address in existing
    others = len(existing) - bound_here
    code = _ACCEPTED
    if flags & _S and policy.simultaneous_bindings == 0:
        code, flags = ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS, flags & ~_S
    simultaneous = bool(flags & _S)
    if simultaneous and others + 1 > policy.simultaneous_bindings:
        return _deny(
            request,
            ReplyCode.TOO_MANY_SIMULTANEOUS_BINDINGS,
            f"{others + 1} bindings exceed the limit of {policy.simultaneous_bindings}",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )

    removed = 0 if simultaneous else others
    after = bindings_in_use - removed + (not bound_here)
    if policy.max_bindings is not None and after > policy.max_bindings and after > bindings_in_use:
        return _deny(
            request,
            ReplyCode.INSUFFICIENT_RESOURCES,
            f"binding limit {policy.max_bindings} reached",
            sa,
            fa_sa,
            spi,
            replay=replay,
        )

    if not policy.broadcast_forwarding:
        flags &= ~_B
    ceiling = mobile_node.max_lifetime if mobile_node.max_lifetime is not None else policy.max_lifetime
    lifetime = request.lifetime if request.lifetime < ceiling else ceiling  # min(), without the call

    return Accept(
        request,
        code,
        _REGISTER,
        lifetime,
        None if lifetime == INFINITE_LIFETIME else now + lifetime,
        home_address,
        assign,
        request.care_of_address,
        REQUEST_FLAGS[flags],
        encapsulation,
        wants_reverse,
        not simultaneous,
        named_sa,
        named_fa_sa,
        replay.reply_identification,
        replay.accepted_identification,
        replay.ha_nonce,
        nai,
    )


def with_home_address(accept: Accept, home_address: IPv4Address) -> Accept:
    """The verdict once the engine has reserved ``home_address`` from the mobile node's pool."""
    if not accept.assign:
        raise ValueError("this acceptance did not ask for an address assignment")
    if accept.home_address is not None and accept.home_address != home_address:
        raise ValueError(f"the request asked for {accept.home_address}, not {home_address}")
    return replace(accept, home_address=home_address, assign=False)
