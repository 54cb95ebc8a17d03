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
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    LIMITED_BROADCAST,
    UNSPECIFIED,
    CriticalVendorExtension,
    GeneralizedAuth,
    MobileHomeAuth,
    RegistrationRequest,
)
from .replay import ReplayVerdict, check_identification

_MULTICAST = IPv4Network("224.0.0.0/4")


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


@dataclass(frozen=True, slots=True)
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
        return next((sa for sa in self.security_associations if sa.spi == spi), None)


@dataclass(frozen=True, slots=True)
class ForeignAgentRecord:
    """A foreign agent the home agent shares security associations with (keyed by its address)."""

    address: IPv4Address
    security_associations: tuple[SecurityAssociation, ...] = ()

    def security_association(self, spi: int) -> SecurityAssociation | None:
        """The association this SPI names for this foreign agent, if configured."""
        return next((sa for sa in self.security_associations if sa.spi == spi), None)


@dataclass(frozen=True, slots=True)
class Arrival:
    """Where the request came from and where it was sent (IP and UDP), as the socket reported it."""

    source: IPv4Address
    source_port: int
    destination: IPv4Address
    destination_port: int = 434


# --- outputs -----------------------------------------------------------------------------------------


class BindingAction(StrEnum):
    """What an accepted request does to the mobility binding list (RFC 5944 §3.8.2.2)."""

    REGISTER = "register"  # add or renew (home address, care-of address)
    DEREGISTER = "deregister"  # remove the binding for this care-of address only
    DEREGISTER_ALL = "deregister-all"  # lifetime 0 with care-of address = home address


@dataclass(frozen=True, slots=True)
class Deny:
    """The request is refused with ``code``; no binding changes.

    ``security_association`` (the mobile node's, when the request named one the home agent holds)
    and ``fa_security_association`` sign the reply.  ``accepted_identification`` / ``ha_nonce``
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


def _in_any(address: IPv4Address, networks: tuple[IPv4Network, ...]) -> bool:
    return any(address in network for network in networks)


def _requested_encapsulation(flags: RequestFlags) -> Encapsulation | None:
    """M and G select minimal / GRE; both at once is contradictory (None)."""
    if RequestFlags.M in flags and RequestFlags.G in flags:
        return None
    if RequestFlags.M in flags:
        return Encapsulation.MINIMAL
    if RequestFlags.G in flags:
        return Encapsulation.GRE
    return Encapsulation.IP_IN_IP


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
) -> Verdict:
    """Decide on one parsed request.  Pure: same inputs, same verdict.

    ``bindings_in_use`` is the virtual router's current binding count (for ``max_bindings``);
    ``fresh_nonce`` a 32-bit random number from the caller, used only by nonce associations.
    """
    mn_ha = request.mn_ha_auth
    sa = mobile_node.security_association(mn_ha.spi) if mobile_node and mn_ha else None
    fa_ha = request.fa_ha_auth
    fa_sa = foreign_agent.security_association(fa_ha.spi) if foreign_agent and fa_ha else None

    def deny(code: ReplyCode, reason: str, **more: object) -> Deny:
        fields: dict[str, object] = {
            "reply_identification": request.identification,
            "home_agent": request.home_agent,
            "security_association": sa,
            "fa_security_association": fa_sa,
            "spi": mn_ha.spi if mn_ha else None,
        }
        fields.update(more)
        return Deny(request=request, code=code, reason=reason, **fields)

    # 1. Poorly formed for a home agent (the codec already refused structural errors).
    if request.home_address == UNSPECIFIED and request.nai is None:
        return deny(ReplyCode.POORLY_FORMED_REQUEST, "home address 0.0.0.0 without an NAI extension")

    # 2. Broadcast or someone else's address: deny, answer from our unicast address (§3.8.2.1).
    broadcasts = policy.broadcast_addresses | {LIMITED_BROADCAST}
    if arrival.destination in broadcasts or request.home_agent in broadcasts:
        return deny(
            ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS,
            "request sent to a broadcast address",
            home_agent=policy.address,
        )
    if request.home_agent != policy.address:
        return deny(
            ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS,
            f"home agent field {request.home_agent} is not us",
            home_agent=policy.address,
        )

    # 3. The authorization-enabling extension (§3.8.2.1, §5.1).
    mn_auth_failed = ReplyCode.MN_FAILED_AUTHENTICATION
    if mn_ha is None:
        aaa = any(isinstance(e, GeneralizedAuth) and e.is_mn_aaa for e in request.extensions)
        if aaa:
            return deny(
                mn_auth_failed,
                "MN-AAA authentication needs an AAA server (not supported)",
                violation=SecurityViolation.OTHER,
            )
        return deny(
            mn_auth_failed,
            "no Mobile-Home authentication extension",
            violation=SecurityViolation.MISSING_SECURITY_EXTENSION,
        )
    if mobile_node is None:
        return deny(
            mn_auth_failed,
            "no security association for this mobile node",
            violation=SecurityViolation.NO_SECURITY_ASSOCIATION,
        )
    if sa is None:
        return deny(
            mn_auth_failed,
            f"SPI {mn_ha.spi} is not configured for {mobile_node.name}",
            violation=SecurityViolation.BAD_SPI,
        )
    if not verify(request.raw, mn_ha, sa):
        return deny(
            mn_auth_failed,
            "Mobile-Home authenticator does not verify",
            violation=SecurityViolation.BAD_AUTHENTICATOR,
        )

    # 4. Identification (§5.7).  Its reply value is used from here on, whatever the outcome.
    replay: ReplayVerdict = check_identification(
        sa.replay_protection,
        request.identification,
        wallclock=wallclock,
        tolerance=policy.replay_tolerance,
        last_accepted=mobile_node.last_identification,
        expected_ha_nonce=mobile_node.ha_nonce,
        fresh_ha_nonce=fresh_nonce,
    )
    if not replay.ok:
        # A nonce mobile node's first request cannot know our nonce: expected, not a violation.
        first_contact = sa.replay_protection is ReplayProtection.NONCE and mobile_node.ha_nonce is None
        return deny(
            ReplyCode.IDENTIFICATION_MISMATCH,
            replay.reason,
            violation=None if first_contact else SecurityViolation.BAD_IDENTIFIER,
            reply_identification=replay.reply_identification,
            ha_nonce=replay.ha_nonce,
        )
    fresh: dict[str, object] = {
        "reply_identification": replay.reply_identification,
        "accepted_identification": replay.accepted_identification,
        "ha_nonce": replay.ha_nonce,
    }

    # 5. The foreign agent, when the home agent shares an association with it (§3.8.2.1).
    if foreign_agent is not None:
        fa_failed = ReplyCode.FA_FAILED_AUTHENTICATION
        if fa_ha is None:
            return deny(
                fa_failed,
                f"no Foreign-Home extension from {foreign_agent.address}",
                violation=SecurityViolation.MISSING_SECURITY_EXTENSION,
                **fresh,
            )
        if fa_sa is None:
            return deny(
                fa_failed,
                f"SPI {fa_ha.spi} is not configured for {foreign_agent.address}",
                violation=SecurityViolation.BAD_SPI,
                **fresh,
            )
        if not verify(request.raw, fa_ha, fa_sa):
            return deny(
                fa_failed,
                "Foreign-Home authenticator does not verify",
                violation=SecurityViolation.BAD_AUTHENTICATOR,
                **fresh,
            )

    # 6. Critical vendor extensions: mipha understands none (RFC 3115).
    for index, extension in enumerate(request.extensions):
        if isinstance(extension, CriticalVendorExtension):
            from_mn = index < (request.index_of(MobileHomeAuth) or 0)
            code = ReplyCode.MN_CVSE_NOT_UNDERSTOOD if from_mn else ReplyCode.FA_CVSE_NOT_UNDERSTOOD
            return deny(
                code, f"critical vendor extension {extension.vendor_id}/{extension.vendor_type}", **fresh
            )

    flags = RequestFlags(request.flags & MEANINGFUL_FLAGS)
    common = {
        "request": request,
        "care_of_address": request.care_of_address,
        "security_association": sa,
        "fa_security_association": fa_sa,
        "nai": request.nai,
        **fresh,
    }

    # 7. Deregistration: authentic and fresh is enough (no policy applies to giving up service).
    if request.is_deregistration:
        if request.home_address == UNSPECIFIED:
            return deny(ReplyCode.POORLY_FORMED_REQUEST, "deregistration without a home address", **fresh)
        if mobile_node.home_address is not None and request.home_address != mobile_node.home_address:
            return deny(
                ReplyCode.ADMINISTRATIVELY_PROHIBITED,
                f"{request.home_address} is not the home address of {mobile_node.name}",
                **fresh,
            )
        action = BindingAction.DEREGISTER_ALL if request.deregisters_all else BindingAction.DEREGISTER
        return Accept(
            code=ReplyCode.ACCEPTED,
            action=action,
            lifetime=0,
            expires_at=None,
            home_address=request.home_address,
            assign=False,
            flags=flags,
            encapsulation=Encapsulation.IP_IN_IP,
            reverse_tunnel=False,
            replace_existing=request.deregisters_all,
            **common,
        )

    # 8. Registration policy.
    coa = request.care_of_address
    if coa == UNSPECIFIED or coa in _MULTICAST or coa in broadcasts:
        return deny(
            ReplyCode.POORLY_FORMED_REQUEST, f"care-of address {coa} is not a unicast address", **fresh
        )
    if coa == request.home_address or coa == policy.address:
        return deny(
            ReplyCode.POORLY_FORMED_REQUEST, f"care-of address {coa} is the home address or ours", **fresh
        )

    home_address: IPv4Address | None
    if request.home_address == UNSPECIFIED:
        home_address, assign = (
            mobile_node.home_address,
            mobile_node.dynamic and mobile_node.home_address is None,
        )
        if home_address is None and not mobile_node.dynamic:
            return deny(
                ReplyCode.ADMINISTRATIVELY_PROHIBITED, f"{mobile_node.name} has no home address", **fresh
            )
    elif mobile_node.home_address is not None:
        if request.home_address != mobile_node.home_address:
            return deny(
                ReplyCode.ADMINISTRATIVELY_PROHIBITED,
                f"{request.home_address} is not the home address of {mobile_node.name}",
                **fresh,
            )
        home_address, assign = request.home_address, False
    elif mobile_node.dynamic:
        home_address, assign = request.home_address, True
    else:
        return deny(ReplyCode.ADMINISTRATIVELY_PROHIBITED, f"{mobile_node.name} has no home address", **fresh)

    access = mobile_node.care_of_access if mobile_node.care_of_access is not None else policy.care_of_access
    if access and not _in_any(coa, access):
        return deny(ReplyCode.ADMINISTRATIVELY_PROHIBITED, f"care-of address {coa} is not allowed", **fresh)

    reverse_policy = mobile_node.reverse_tunnel or policy.reverse_tunnel
    wants_reverse = RequestFlags.T in flags
    if wants_reverse and reverse_policy is ReverseTunnelPolicy.DISABLED:
        return deny(ReplyCode.REVERSE_TUNNEL_UNAVAILABLE, "reverse tunnelling is disabled", **fresh)
    if not wants_reverse and reverse_policy is ReverseTunnelPolicy.REQUIRED:
        return deny(
            ReplyCode.REVERSE_TUNNEL_MANDATORY, "reverse tunnelling is required and T is not set", **fresh
        )

    encapsulation = _requested_encapsulation(flags)
    if encapsulation is None or encapsulation not in policy.encapsulations:
        return deny(
            ReplyCode.ENCAPSULATION_UNAVAILABLE, f"encapsulation {encapsulation} is not offered", **fresh
        )

    existing = tuple(mobile_node.care_of_addresses)
    others = tuple(a for a in existing if a != coa)
    code = ReplyCode.ACCEPTED
    if RequestFlags.S in flags and policy.simultaneous_bindings == 0:
        code, flags = ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS, flags & ~RequestFlags.S
    simultaneous = RequestFlags.S in flags
    if simultaneous and len(others) + 1 > policy.simultaneous_bindings:
        return deny(
            ReplyCode.TOO_MANY_SIMULTANEOUS_BINDINGS,
            f"{len(others) + 1} bindings exceed the limit of {policy.simultaneous_bindings}",
            **fresh,
        )

    removed = 0 if simultaneous else len(others)
    added = 0 if coa in existing else 1
    after = bindings_in_use - removed + added
    if policy.max_bindings is not None and after > policy.max_bindings and after > bindings_in_use:
        return deny(ReplyCode.INSUFFICIENT_RESOURCES, f"binding limit {policy.max_bindings} reached", **fresh)

    if not policy.broadcast_forwarding:
        flags &= ~RequestFlags.B
    ceiling = mobile_node.max_lifetime if mobile_node.max_lifetime is not None else policy.max_lifetime
    lifetime = min(request.lifetime, ceiling)
    expires_at = None if lifetime == INFINITE_LIFETIME else now + lifetime

    return Accept(
        code=code,
        action=BindingAction.REGISTER,
        lifetime=lifetime,
        expires_at=expires_at,
        home_address=home_address,
        assign=assign,
        flags=RequestFlags(flags),
        encapsulation=encapsulation,
        reverse_tunnel=wants_reverse,
        replace_existing=not simultaneous,
        **common,
    )


def with_home_address(accept: Accept, home_address: IPv4Address) -> Accept:
    """The verdict once the engine has reserved ``home_address`` from the mobile node's pool."""
    if not accept.assign:
        raise ValueError("this acceptance did not ask for an address assignment")
    if accept.home_address is not None and accept.home_address != home_address:
        raise ValueError(f"the request asked for {accept.home_address}, not {home_address}")
    return replace(accept, home_address=home_address, assign=False)
