"""The home agent's verdict on one Registration Request (RFC 5944 §3.8), as a pure function.

:func:`decide` sees only what it is given: the parsed request, where it arrived, the virtual router's
policy, a snapshot of what the engine knows about the mobile node and the foreign agent that relayed
it, and the two clocks (monotonic ``now`` for lifetimes, Unix ``wallclock`` for timestamps).  It
returns :class:`Accept` or :class:`Deny`, each carrying everything the engine must change (bindings,
replay state) and everything the reply needs.  It changes nothing itself.

One function per RFC 5944 §3.8.2 check ("step"), each taking the :class:`Examination` of the request
and returning a :class:`Deny` or None; the first denial wins.  The order is the tuples below
(:data:`VALIDITY_STEPS`, then :data:`DEREGISTRATION_STEPS` or :data:`REGISTRATION_STEPS`); a new check
(an AAA look-up, an RFC 3519 UDP tunnel request, RFC 3543 revocation support) is one more function
inserted where it belongs.  docs/protocol-decisions.md §4 explains the order and each choice.

Speed (one of these runs per request; ``bench/registration_protocol.py``): the per-request records
(``Arrival``, ``MobileNodeRecord``, ``Accept``, ``Deny``, ``Examination``) are slotted and *not* frozen
— a frozen dataclass pays ~100 ns per field on construction.  Treat them as read-only all the same.
Addresses are compared as integers and flags handled as plain ints, converted back once.  ``Accept``
is built by keyword through its ``__init__`` on a new instance (calling a class with keywords builds a
dict first).  Each policy carries its step lists compiled as one ``s0(x) or s1(x) or ...`` each
(:func:`plan`), without the steps that cannot deny under it — nor, for the usual request (one MN-HA
extension, alone or after an RFC 3519 UDP Tunnel Request; no foreign agent, no S/M/G, no per-host
overrides), those that cannot deny it: no call is paid for a check that cannot fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from typing import final

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
    GeneralizedAuth,
    MobileHomeAuth,
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
    #: False: draining for maintenance (YANG ``home-agent/enabled``): registrations are denied 129.
    enabled: bool = True
    # Derived once, read per request: our address and every broadcast address (255.255.255.255
    # included) as integers, and the M|G flag values that ask for an offered encapsulation.
    address_integer: int = field(init=False, repr=False, compare=False)
    broadcast_integers: frozenset[int] = field(init=False, repr=False, compare=False)
    unusable_care_of_integers: frozenset[int] = field(init=False, repr=False, compare=False)
    offered_encapsulation_flags: frozenset[int] = field(init=False, repr=False, compare=False)
    #: The step chains :func:`decide` runs under this policy (:func:`plan`): registration,
    #: deregistration, and registration for the usual request (see :func:`decide`).
    plans: tuple[Callable[[Examination], Deny | None], ...] = field(init=False, repr=False, compare=False)

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
        unusable = broadcasts | {_UNSPECIFIED, int(self.address)}  # as care-of addresses (134)
        object.__setattr__(self, "unusable_care_of_integers", unusable)
        offered = frozenset(
            bits for bits, kind in _ENCAPSULATION_BY_FLAGS.items() if kind in self.encapsulations
        )
        object.__setattr__(self, "offered_encapsulation_flags", offered)
        registration, deregistration = (
            VALIDITY_STEPS + REGISTRATION_STEPS,
            VALIDITY_STEPS + DEREGISTRATION_STEPS,
        )
        plans = (
            plan(registration, self, False),
            plan(deregistration, self, False),
            plan(registration, self, True),
        )
        object.__setattr__(self, "plans", plans)


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
    #: A nonce offered in a 133 since ``ha_nonce`` was issued; either one is accepted (§5.7).
    offered_nonce: int | None = None

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

    ``destination_integer`` and ``source_integer`` are derived on construction (a caller may keep one
    per peer and reuse it).
    """

    source: IPv4Address
    source_port: int
    destination: IPv4Address
    destination_port: int = 434
    destination_integer: int = field(init=False, repr=False, compare=False)
    source_integer: int = field(init=False, repr=False, compare=False)
    #: The RFC 3519 tunnel last granted to requests from here (``udp_tunnel_step``'s cache: renewals
    #: through one NAT mapping share one record, built once).
    udp_tunnel: UdpTunnel | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.destination_integer = int(self.destination)
        self.source_integer = int(self.source)


# --- outputs -----------------------------------------------------------------------------------------


class BindingAction(StrEnum):
    """What an accepted request does to the mobility binding list (RFC 5944 §3.8.2.2)."""

    REGISTER = "register"  # add or renew (home address, care-of address)
    DEREGISTER = "deregister"  # remove the binding for this care-of address only
    DEREGISTER_ALL = "deregister-all"  # lifetime 0 with care-of address = home address


@final  # type(verdict) is Deny / Accept narrows both ways
@dataclass(slots=True)
class Deny:
    """The request is refused with ``code``; no binding changes.

    ``security_association`` and ``fa_security_association`` sign the reply, each only when the
    request's own authenticator for that peer verified (None otherwise: an unauthenticated reply, so
    the home agent never signs what an attacker sent); ``spi`` is the SPI the request carried.
    ``accepted_identification`` / ``ha_nonce`` are replay state to store even though the request is
    denied (the request was authentic and fresh, or a nonce was offered).  ``violation`` is set for
    authentication failures (131-133).
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


@dataclass(slots=True)
class UdpTunnel:
    """An accepted registration's RFC 3519 UDP tunnel: the NAT mapping and the reply's extension 44.

    One per request, so not frozen (see the module docstring); read-only all the same.
    """

    address: int  # the request's IP source (the NAT's public address), as an integer
    port: int  # the request's UDP source port
    forced: bool  # tunnelling without a detected NAT (F)
    reply: UdpTunnelReply
    #: ``reply`` encoded (the 8 bytes of extension 44 the reply carries), built with the record.
    reply_bytes: bytes = b""


@final
@dataclass(slots=True)
class Accept:
    """The request is accepted; the engine applies ``action`` and answers with ``code``.

    ``replay`` is the identification check's verdict (what the reply carries and the engine stores).
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
    flags: RequestFlags
    encapsulation: Encapsulation
    replace_existing: bool
    security_association: SecurityAssociation
    fa_security_association: SecurityAssociation | None
    replay: ReplayVerdict
    #: Set after ``decide`` by ``udp_tunnel.udp_tunnel_step`` (RFC 3519) and
    #: ``revocation.revocation_step`` (RFC 3543); both travel in the reply.
    udp_tunnel: UdpTunnel | None = None
    revocation: RevocationSupport | None = None

    # Read from the request and the replay verdict rather than stored: every field is paid for on each
    # construction (a keyword call costs ~35 ns per argument on Python 3.11).
    @property
    def care_of_address(self) -> IPv4Address:
        return self.request.care_of_address

    @property
    def nai(self) -> str | None:
        return self.request.nai

    @property
    def reverse_tunnel(self) -> bool:
        return self.action is BindingAction.REGISTER and bool(self.flags & _T)

    @property
    def reply_identification(self) -> int:
        return self.replay.reply_identification

    @property
    def accepted_identification(self) -> int | None:
        return self.replay.accepted_identification

    @property
    def ha_nonce(self) -> int | None:
        return self.replay.ha_nonce

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
            reply_identification=self.replay.reply_identification,
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
_UNUSUAL_FLAGS = _S | _ENCAPSULATION_FLAGS
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
_ALLOWED = ReverseTunnelPolicy.ALLOWED
_IP_IN_IP = Encapsulation.IP_IN_IP
_ACCEPTED = ReplyCode.ACCEPTED
_REGISTER = BindingAction.REGISTER
_CVSE = CriticalVendorExtension


def _in_any(address: IPv4Address, networks: tuple[IPv4Network, ...]) -> bool:
    return any(address in network for network in networks)


class Examination:
    """One request under examination: :func:`decide`'s inputs, and what the steps learnt for later ones.

    Built once per request (slots, hand-written ``__init__``: a dataclass costs more per field), with
    as little as possible up front: each step finds what it needs.  What steps store for later ones:
    ``named_sa``/``spi`` (:func:`mobile_node_authentic`), ``replay`` (:func:`identification_fresh`),
    ``flags`` (the meaningful request flags as an int; S may be cleared), and for the acceptance
    ``home_address``/``assign``, ``encapsulation``, ``code`` (0, or 1 when S is not honoured) and
    ``simultaneous`` — the last three, and ``named_fa_sa``, start as the usual request gets them (the
    steps that would set them are idle for it: :func:`plan`).
    """

    __slots__ = (
        "arrival",
        "assign",
        "bindings_in_use",
        "coa",
        "code",
        "encapsulation",
        "flags",
        "foreign_agent",
        "fresh_nonce",
        "home",
        "home_address",
        "mn_aaa_verified",
        "mobile_node",
        "named_fa_sa",
        "named_sa",
        "now",
        "policy",
        "replay",
        "request",
        "simultaneous",
        "spi",
        "wallclock",
    )
    # set by the steps (above), declared for the type checker
    named_sa: SecurityAssociation
    named_fa_sa: SecurityAssociation | None
    replay: ReplayVerdict
    home_address: IPv4Address | None
    assign: bool
    encapsulation: Encapsulation
    code: ReplyCode
    simultaneous: bool

    def __init__(
        self,
        request: RegistrationRequest,
        policy: HomeAgentPolicy,
        mobile_node: MobileNodeRecord | None,
        foreign_agent: ForeignAgentRecord | None,
        arrival: Arrival,
        now: float,
        wallclock: float,
        bindings_in_use: int,
        fresh_nonce: int,
        mn_aaa_verified: bool = False,
    ) -> None:
        self.request = request
        self.policy = policy
        self.mobile_node = mobile_node
        self.foreign_agent = foreign_agent
        self.arrival = arrival
        self.now = now
        self.wallclock = wallclock
        self.bindings_in_use = bindings_in_use
        self.fresh_nonce = fresh_nonce
        self.mn_aaa_verified = mn_aaa_verified
        self.flags = int(request.flags) & _MEANINGFUL
        self.home, _agent, self.coa = request.integers
        # What the steps idle for the usual request would set (foreign_agent_authentic,
        # encapsulation_offered, simultaneous_bindings_allowed):
        self.named_fa_sa: SecurityAssociation | None = None
        self.encapsulation = _IP_IN_IP
        self.code = _ACCEPTED
        self.simultaneous = False
        # Set by the steps (reading one before its step ran is a bug, and raises AttributeError):
        # named_sa, replay, home_address, assign.

    def deny(
        self,
        code: ReplyCode,
        reason: str,
        *,
        violation: SecurityViolation | None = None,
        home_agent: IPv4Address | None = None,
    ) -> Deny:
        """A denial; once the identification was checked (``replay``) it gives the identification fields."""
        replay: ReplayVerdict | None = getattr(self, "replay", None)  # None before identification_fresh
        request = self.request
        mn_ha = request.mn_ha_auth
        sa, fa_sa = self._signers(mn_ha)
        return Deny(
            request=request,
            code=code,
            reason=reason,
            reply_identification=request.identification if replay is None else replay.reply_identification,
            home_agent=request.home_agent if home_agent is None else home_agent,
            security_association=sa,
            fa_security_association=fa_sa,
            violation=violation,
            spi=None if mn_ha is None else mn_ha.spi,
            accepted_identification=None if replay is None else replay.accepted_identification,
            ha_nonce=None if replay is None else replay.ha_nonce,
        )

    def _signers(
        self, mn_ha: MobileHomeAuth | None
    ) -> tuple[SecurityAssociation | None, SecurityAssociation | None]:
        """The associations that sign a denial: each only when the request's own authenticator for it
        verified (docs/protocol-decisions.md §7: otherwise the home agent is a signing oracle)."""
        sa: SecurityAssociation | None = getattr(self, "named_sa", None)  # set once MN-HA verified
        fa_sa = self.named_fa_sa
        foreign_agent = self.foreign_agent
        if fa_sa is None and foreign_agent is not None:  # not yet checked: check it for the signature
            fa_ha = self.request.fa_ha_auth
            named = foreign_agent.security_association(fa_ha.spi) if fa_ha is not None else None
            if named is not None and verify(self.request.raw, fa_ha, named):  # type: ignore[arg-type]
                fa_sa = named
        return sa, fa_sa


#: A step of :func:`decide`: a denial, or None to go on.
Step = Callable[[Examination], "Deny | None"]


# --- the steps, in the order decide() runs them (RFC 5944 §3.8.2) -----------------------------------


def poorly_formed(x: Examination) -> Deny | None:
    """134: home address 0.0.0.0 without an NAI (the codec already refused structural errors)."""
    if x.home == _UNSPECIFIED and x.request.nai is None:
        return x.deny(ReplyCode.POORLY_FORMED_REQUEST, "home address 0.0.0.0 without an NAI extension")
    return None


def addressed_to_us(x: Examination) -> Deny | None:
    """136 for a broadcast or someone else's address; the reply names our unicast address (§3.8.2.1)."""
    policy = x.policy
    broadcasts = policy.broadcast_integers
    agent = x.request.integers[1]
    if agent == policy.address_integer and x.arrival.destination_integer not in broadcasts:
        return None  # the usual request, answered without the checks below
    if x.arrival.destination_integer in broadcasts or agent in broadcasts:
        reason = "request sent to a broadcast address"
    elif agent != policy.address_integer:
        reason = f"home agent field {x.request.home_agent} is not us"
    else:
        return None
    return x.deny(ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS, reason, home_agent=policy.address)


def mobile_node_authentic(x: Examination) -> Deny | None:
    """131 unless the authorization-enabling MN-HA extension verifies (§3.8.2.1, §5.1)."""
    mobile_node, request = x.mobile_node, x.request
    extensions = request.extensions
    # The usual requests (RFC 3519's too) end with their MN-HA extension: no search.  The codec lets a
    # request carry one authorization-enabling extension only, so it is the one mn_ha_auth would find.
    # (typed without a cast() call per request: request.layout says the last extension is MN-HA)
    mn_ha: MobileHomeAuth | None = extensions[-1] if request.layout else request.mn_ha_auth  # type: ignore[assignment]
    if mn_ha is None:
        mn_aaa = any(type(e) is GeneralizedAuth and e.is_mn_aaa for e in extensions)
        if mn_aaa and x.mn_aaa_verified and mobile_node is not None and mobile_node.security_associations:
            # RADIUS checked this very request's MN-AAA authenticator (RFC 4721 §6/§8): the node's
            # AAA-learnt association signs the reply.
            x.named_sa = mobile_node.security_associations[0]
            return None
        if mn_aaa:
            return x.deny(
                ReplyCode.MN_FAILED_AUTHENTICATION,
                "MN-AAA authentication needs an AAA server (not supported)",
                violation=SecurityViolation.OTHER,
            )
        return x.deny(
            ReplyCode.MN_FAILED_AUTHENTICATION,
            "no Mobile-Home authentication extension",
            violation=SecurityViolation.MISSING_SECURITY_EXTENSION,
        )
    if mobile_node is None:
        return x.deny(
            ReplyCode.MN_FAILED_AUTHENTICATION,
            "no security association for this mobile node",
            violation=SecurityViolation.NO_SECURITY_ASSOCIATION,
        )
    spi = mn_ha.spi
    for named_sa in mobile_node.security_associations:  # security_association(spi), without the call
        if named_sa.spi == spi:
            break
    else:
        named_sa = None
    if named_sa is None:
        return x.deny(
            ReplyCode.MN_FAILED_AUTHENTICATION,
            f"SPI {mn_ha.spi} is not configured for {mobile_node.name}",
            violation=SecurityViolation.BAD_SPI,
        )
    if not verify(request.raw, mn_ha, named_sa):
        return x.deny(
            ReplyCode.MN_FAILED_AUTHENTICATION,
            "Mobile-Home authenticator does not verify",
            violation=SecurityViolation.BAD_AUTHENTICATOR,
        )
    x.named_sa = named_sa
    return None


def identification_fresh(x: Examination) -> Deny | None:
    """133 unless the Identification is fresh (§5.7); its reply value is used from here on."""
    mobile_node, named_sa, policy = x.mobile_node, x.named_sa, x.policy
    assert mobile_node is not None and named_sa is not None  # mobile_node_authentic ran
    method = named_sa.replay_protection
    if method is _TIMESTAMP:
        replay = check_timestamp(
            x.request.identification,
            wallclock=x.wallclock,
            tolerance=policy.replay_tolerance,
            last_accepted=mobile_node.last_identification,
        )
    else:
        replay = check_identification(
            method,
            x.request.identification,
            wallclock=x.wallclock,
            tolerance=policy.replay_tolerance,
            last_accepted=mobile_node.last_identification,
            expected_ha_nonce=mobile_node.ha_nonce,
            fresh_ha_nonce=x.fresh_nonce,
            offered_ha_nonce=mobile_node.offered_nonce,
        )
    x.replay = replay
    if replay.ok:
        return None
    # A nonce mobile node's first request cannot know our nonce: expected, not a violation.
    first_contact = method is ReplayProtection.NONCE and (
        mobile_node.ha_nonce is None and mobile_node.offered_nonce is None
    )
    return x.deny(
        ReplyCode.IDENTIFICATION_MISMATCH,
        replay.reason,
        violation=None if first_contact else SecurityViolation.BAD_IDENTIFIER,
    )


def foreign_agent_authentic(x: Examination) -> Deny | None:
    """132 when we share an association with the relaying foreign agent and its FA-HA fails (§3.8.2.1)."""
    foreign_agent = x.foreign_agent
    if foreign_agent is None:
        return None
    fa_ha = x.request.fa_ha_auth
    if fa_ha is None:
        return x.deny(
            ReplyCode.FA_FAILED_AUTHENTICATION,
            f"no Foreign-Home extension from {foreign_agent.address}",
            violation=SecurityViolation.MISSING_SECURITY_EXTENSION,
        )
    named_fa_sa = foreign_agent.security_association(fa_ha.spi)
    if named_fa_sa is None:
        return x.deny(
            ReplyCode.FA_FAILED_AUTHENTICATION,
            f"SPI {fa_ha.spi} is not configured for {foreign_agent.address}",
            violation=SecurityViolation.BAD_SPI,
        )
    if not verify(x.request.raw, fa_ha, named_fa_sa):
        return x.deny(
            ReplyCode.FA_FAILED_AUTHENTICATION,
            "Foreign-Home authenticator does not verify",
            violation=SecurityViolation.BAD_AUTHENTICATOR,
        )
    x.named_fa_sa = named_fa_sa
    return None


def vendor_extensions_understood(x: Examination) -> Deny | None:
    """140 / 141 for a critical vendor extension (mipha understands none, RFC 3115)."""
    request = x.request
    extensions = request.extensions
    if len(extensions) == 1:  # its MN-HA extension only
        return None
    if len(extensions) == 2 and _CVSE not in (type(extensions[0]), type(extensions[1])):
        return None  # RFC 3519's request: a UDP Tunnel Request and the MN-HA extension
    index = request.index_of(CriticalVendorExtension)
    if index is None:
        return None
    extension = request.extensions[index]
    assert isinstance(extension, CriticalVendorExtension)
    from_mn = index < (request.index_of(MobileHomeAuth) or 0)
    code = ReplyCode.MN_CVSE_NOT_UNDERSTOOD if from_mn else ReplyCode.FA_CVSE_NOT_UNDERSTOOD
    return x.deny(code, f"critical vendor extension {extension.vendor_id}/{extension.vendor_type}")


def deregistration_names_home_address(x: Examination) -> Deny | None:
    """134 without a home address, 129 for another node's: all a deregistration is checked for."""
    mobile_node = x.mobile_node
    assert mobile_node is not None
    if x.home == _UNSPECIFIED:
        return x.deny(ReplyCode.POORLY_FORMED_REQUEST, "deregistration without a home address")
    if mobile_node.home_address is not None and x.request.home_address != mobile_node.home_address:
        return x.deny(
            ReplyCode.ADMINISTRATIVELY_PROHIBITED,
            f"{x.request.home_address} is not the home address of {mobile_node.name}",
        )
    return None


def home_agent_enabled(x: Examination) -> Deny | None:
    """129 while the home agent drains for maintenance (``enabled`` false): no new registration and no
    renewal; deregistrations are still accepted and existing bindings forward until they go."""
    if x.policy.enabled:
        return None
    return x.deny(ReplyCode.ADMINISTRATIVELY_PROHIBITED, "the home agent is disabled (draining)")


def care_of_address_usable(x: Examination) -> Deny | None:
    """134 for a care-of address that is 0.0.0.0, multicast, a broadcast, the home address or ours."""
    coa, policy = x.coa, x.policy
    if coa not in policy.unusable_care_of_integers and coa >> 28 != 0xE and coa != x.home:
        return None  # the usual request, answered without the checks below
    if coa == _UNSPECIFIED or coa >> 28 == 0xE or coa in policy.broadcast_integers:
        reason = f"care-of address {x.request.care_of_address} is not a unicast address"
    elif coa == x.home or coa == policy.address_integer:
        reason = f"care-of address {x.request.care_of_address} is the home address or ours"
    else:
        return None
    return x.deny(ReplyCode.POORLY_FORMED_REQUEST, reason)


def home_address_allowed(x: Examination) -> Deny | None:
    """129 unless the home address is the node's (static or assigned), or its pool can assign one."""
    mobile_node = x.mobile_node
    assert mobile_node is not None
    known = mobile_node.home_address
    if x.home == _UNSPECIFIED:
        if known is not None or mobile_node.dynamic:
            x.home_address, x.assign = known, known is None
            return None
    elif known is not None:
        if x.home == int(known):
            x.home_address, x.assign = x.request.home_address, False
            return None
        return x.deny(
            ReplyCode.ADMINISTRATIVELY_PROHIBITED,
            f"{x.request.home_address} is not the home address of {mobile_node.name}",
        )
    elif mobile_node.dynamic:
        x.home_address, x.assign = x.request.home_address, True
        return None
    return x.deny(ReplyCode.ADMINISTRATIVELY_PROHIBITED, f"{mobile_node.name} has no home address")


def care_of_access_allowed(x: Examination) -> Deny | None:
    """129 for a care-of address outside ``care-of-access`` (per-host list, else the home agent's)."""
    mobile_node = x.mobile_node
    assert mobile_node is not None
    access = mobile_node.care_of_access
    if access is None:
        access = x.policy.care_of_access
    if access and not _in_any(x.request.care_of_address, access):
        return x.deny(
            ReplyCode.ADMINISTRATIVELY_PROHIBITED,
            f"care-of address {x.request.care_of_address} is not allowed",
        )
    return None


def reverse_tunnel_allowed(x: Examination) -> Deny | None:
    """137 for T when reverse tunnelling is disabled, 138 without T when it is required (RFC 3024)."""
    mobile_node = x.mobile_node
    assert mobile_node is not None
    policy = mobile_node.reverse_tunnel or x.policy.reverse_tunnel
    if x.flags & _T:
        if policy is _DISABLED:
            return x.deny(ReplyCode.REVERSE_TUNNEL_UNAVAILABLE, "reverse tunnelling is disabled")
    elif policy is _REQUIRED:
        return x.deny(ReplyCode.REVERSE_TUNNEL_MANDATORY, "reverse tunnelling is required and T is not set")
    return None


def encapsulation_offered(x: Examination) -> Deny | None:
    """139 unless the encapsulation M / G ask for (neither: IP-in-IP) is offered."""
    asked = x.flags & _ENCAPSULATION_FLAGS
    encapsulation = _ENCAPSULATION_BY_FLAGS[asked]
    if asked not in x.policy.offered_encapsulation_flags:
        return x.deny(ReplyCode.ENCAPSULATION_UNAVAILABLE, f"encapsulation {encapsulation} is not offered")
    assert encapsulation is not None  # M|G together is never offered
    x.encapsulation = encapsulation
    return None


def simultaneous_bindings_allowed(x: Examination) -> Deny | None:
    """S: code 1 (S cleared) when not offered (§3.8.2.2), 135 past the per-node limit."""
    limit = x.policy.simultaneous_bindings
    if x.flags & _S and limit == 0:
        x.code, x.flags = ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS, x.flags & ~_S
    simultaneous = x.simultaneous = bool(x.flags & _S)
    if simultaneous:
        others = _other_bindings(x)
        if others + 1 > limit:
            return x.deny(
                ReplyCode.TOO_MANY_SIMULTANEOUS_BINDINGS,
                f"{others + 1} bindings exceed the limit of {limit}",
            )
    return None


def binding_limit(x: Examination) -> Deny | None:
    """130 when a new binding would exceed ``max-bindings`` (renewals and handovers still pass)."""
    limit = x.policy.max_bindings
    if limit is None:
        return None
    others = _other_bindings(x)
    bound_here = x.request.care_of_address in x.mobile_node.care_of_addresses  # type: ignore[union-attr]
    in_use = x.bindings_in_use
    after = in_use - (0 if x.simultaneous else others) + (not bound_here)
    if after > limit and after > in_use:
        return x.deny(ReplyCode.INSUFFICIENT_RESOURCES, f"binding limit {limit} reached")
    return None


def _other_bindings(x: Examination) -> int:
    """How many of the node's bindings are for another care-of address than this request's."""
    # ``in`` tries identity first: the codec's cached addresses usually match without __eq__.
    existing = x.mobile_node.care_of_addresses  # type: ignore[union-attr]
    return len(existing) - (x.request.care_of_address in existing)


#: Every request, in this order (RFC 5944 §3.8.2.1 validity checks, then RFC 3115 vendor extensions).
#: 136 comes after authentication and identification: only an authentic, fresh request learns our
#: address from a signed reply (docs/protocol-decisions.md §4).
VALIDITY_STEPS: tuple[Step, ...] = (
    poorly_formed,
    mobile_node_authentic,
    identification_fresh,
    addressed_to_us,
    foreign_agent_authentic,
    vendor_extensions_understood,
)
#: Lifetime 0, once valid: no policy applies to giving up service.
DEREGISTRATION_STEPS: tuple[Step, ...] = (deregistration_names_home_address,)
#: Lifetime > 0, once valid: the home agent's policy (§3.8.2.2, RFC 3024).
REGISTRATION_STEPS: tuple[Step, ...] = (
    home_agent_enabled,
    care_of_address_usable,
    home_address_allowed,
    care_of_access_allowed,
    reverse_tunnel_allowed,
    encapsulation_offered,
    simultaneous_bindings_allowed,
    binding_limit,
)


def _first_denial(steps: tuple[Step, ...]) -> Callable[[Examination], Deny | None]:
    """A function returning the first denial of ``steps``: ``s0(x) or s1(x) or ...``, compiled once.

    Equivalent to ``next(filter(None, (step(x) for step in steps)), None)``, about a fifth of
    :func:`decide`'s own time faster: each step gets its own call site, which CPython 3.11 specialises
    for that one function (a loop's single call site, seeing every step, is not).  ``dataclasses``
    compiles its generated methods the same way.
    """
    names = {f"step{index}": step for index, step in enumerate(steps)}
    body = " or ".join(f"{name}(x)" for name in names) or "None"
    namespace: dict[str, object] = {}
    exec(f"def first_denial(x):\n    return {body}\n", dict(names), namespace)
    function = namespace["first_denial"]
    assert callable(function)
    return function


#: Steps that can deny nothing under some policies, or for the usual request (see :func:`decide`), with
#: the test telling so ``(policy, usual) -> idle``: a plan leaves them out.
IDLE_UNDER: dict[Step, Callable[[HomeAgentPolicy, bool], bool]] = {
    poorly_formed: lambda policy, usual: usual,
    home_agent_enabled: lambda policy, usual: policy.enabled,
    binding_limit: lambda policy, usual: policy.max_bindings is None,
    foreign_agent_authentic: lambda policy, usual: usual,
    vendor_extensions_understood: lambda policy, usual: usual,
    care_of_access_allowed: lambda policy, usual: usual and not policy.care_of_access,
    reverse_tunnel_allowed: lambda policy, usual: usual and policy.reverse_tunnel is _ALLOWED,
    encapsulation_offered: lambda policy, usual: usual and Encapsulation.IP_IN_IP in policy.encapsulations,
    simultaneous_bindings_allowed: lambda policy, usual: usual,
}
_plans: dict[tuple[Step, ...], Callable[[Examination], Deny | None]] = {}


def plan(
    steps: tuple[Step, ...], policy: HomeAgentPolicy, usual: bool
) -> Callable[[Examination], Deny | None]:
    """``steps`` without those idle under ``policy`` (:data:`IDLE_UNDER`), compiled once per distinct
    chain (:func:`_first_denial`): every policy carries its own in ``plans``, built with it."""
    kept = tuple(step for step in steps if not (step in IDLE_UNDER and IDLE_UNDER[step](policy, usual)))
    chain = _plans.get(kept)
    if chain is None:
        chain = _plans[kept] = _first_denial(kept)
    return chain


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

    Runs :data:`VALIDITY_STEPS`, then :data:`DEREGISTRATION_STEPS` or :data:`REGISTRATION_STEPS`; the
    first denial wins (steps idle under ``policy``, or for the usual request, are left out: :func:`plan`).
    ``bindings_in_use`` is the virtual router's current binding count (for ``max_bindings``);
    ``fresh_nonce`` a 32-bit random number from the caller, used only by nonce associations.
    ``mn_aaa_verified``: RADIUS accepted this very request's MN-AAA authenticator (RFC 4721 §8, as
    CHAP); the MN-AAA extension is then the authorization-enabling one and the mobile
    node's (AAA-learnt) association signs the reply.
    """
    x = Examination(
        request,
        policy,
        mobile_node,
        foreign_agent,
        arrival,
        now,
        wallclock,
        bindings_in_use,
        fresh_nonce,
        mn_aaa_verified,
    )
    registration, deregistration, usual = policy.plans
    if request.lifetime == 0:
        return deregistration(x) or _deregistration(x)
    if (  # the usual request: its MN-HA extension alone (or after an RFC 3519 UDP Tunnel Request, which
        # no step reads), from no foreign agent we share a key with, a home address, neither S nor M
        # nor G, for a known node without per-host care-of access or reverse tunnel settings
        foreign_agent is None
        and request.layout
        and not x.flags & _UNUSUAL_FLAGS
        and x.home != _UNSPECIFIED
        and mobile_node is not None
        and mobile_node.care_of_access is None
        and mobile_node.reverse_tunnel is None
    ):
        return usual(x) or _registration(x)
    return registration(x) or _registration(x)


#: ``Accept(...)`` by keyword without the dict a class call with keywords builds (~400 ns for its 13
#: fields on Python 3.11): ``_init_accept(_new(Accept), request=..., ...)``, one frame, no wrapper.
_new = object.__new__
_init_accept = Accept.__init__


def _deregistration(x: Examination) -> Accept:
    """The acceptance of a valid deregistration: this care-of address, or every one (care-of = home)."""
    request, replay = x.request, x.replay
    assert replay is not None and x.named_sa is not None
    everything = x.coa == x.home
    verdict = _new(Accept)
    _init_accept(
        verdict,
        request=request,
        code=_ACCEPTED,
        action=BindingAction.DEREGISTER_ALL if everything else BindingAction.DEREGISTER,
        lifetime=0,
        expires_at=None,
        home_address=request.home_address,
        assign=False,
        flags=REQUEST_FLAGS[x.flags],
        encapsulation=Encapsulation.IP_IN_IP,
        replace_existing=everything,
        security_association=x.named_sa,
        fa_security_association=x.named_fa_sa,
        replay=replay,
    )
    return verdict


def _registration(x: Examination) -> Accept:
    """The acceptance of a registration that passed every step, with the lifetime granted."""
    request, replay, policy = x.request, x.replay, x.policy
    mobile_node = x.mobile_node
    assert replay is not None and x.named_sa is not None and mobile_node is not None
    flags = x.flags if policy.broadcast_forwarding else x.flags & ~_B
    ceiling = policy.max_lifetime  # the per-host maximum may only lower it
    host = mobile_node.max_lifetime
    if host is not None and host < ceiling:
        ceiling = host
    lifetime = request.lifetime if request.lifetime < ceiling else ceiling  # min(), without the call
    verdict = _new(Accept)
    _init_accept(
        verdict,
        request=request,
        code=x.code,
        action=_REGISTER,
        lifetime=lifetime,
        expires_at=None if lifetime == INFINITE_LIFETIME else x.now + lifetime,
        home_address=x.home_address,
        assign=x.assign,
        flags=REQUEST_FLAGS[flags],
        encapsulation=x.encapsulation,
        replace_existing=not x.simultaneous,
        security_association=x.named_sa,
        fa_security_association=x.named_fa_sa,
        replay=replay,
    )
    return verdict


def with_home_address(accept: Accept, home_address: IPv4Address) -> Accept:
    """The verdict once the engine has reserved ``home_address`` from the mobile node's pool."""
    if not accept.assign:
        raise ValueError("this acceptance did not ask for an address assignment")
    if accept.home_address is not None and accept.home_address != home_address:
        raise ValueError(f"the request asked for {accept.home_address}, not {home_address}")
    a = accept  # built field by field: dataclasses.replace reads the fields anew on every call (~5x)
    return Accept(
        a.request,
        a.code,
        a.action,
        a.lifetime,
        a.expires_at,
        home_address,
        False,
        a.flags,
        a.encapsulation,
        a.replace_existing,
        a.security_association,
        a.fa_security_association,
        a.replay,
        a.udp_tunnel,
        a.revocation,
    )
