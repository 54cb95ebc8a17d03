"""The home agent of one virtual router: bindings, pools, replay state, counters — no I/O.

Like aioquic's ``QuicConnection`` it is driven by three kinds of input, each carrying the time:

* ``handle_datagram(data, source=..., received_on=..., now=..., wallclock=...)`` — a UDP payload that
  arrived on port 434; returns the reply to send (or None);
* ``handle_timer(now)`` — the time returned by ``get_timer()`` has come: expire bindings;
* configuration transactions (``prepare`` / ``abort`` / ``apply``) and the RPCs ``clear_bindings`` /
  ``clear_statistics``.

Its outputs are queued: ``next_intent()`` gives data plane intents (``ha.dataplane.intents``) in the
order they must be carried out, ``next_event()`` gives past-tense events for notifications.  ``now`` is
the monotonic clock (lifetimes, timers), ``wallclock`` Unix time (timestamp replay protection,
``registered-at``); neither is ever read here.

The protocol package decides (RFC 5944 §3.8 checks, 130 for ``max-bindings``, 135); this module owns
what needs state: address assignment (130 when the pool is empty), the binding rules of §3.8.2.2
(add / replace / simultaneous / deregister one or all), retransmissions, expiry and data plane intents.

Choices made here (RFC latitude):

* Lifetime 0xffff ("infinity") is granted only when requested *and* allowed by both maxima (a
  ``max-lifetime`` of 65535); such a binding never expires and has no heap entry.  Any smaller
  maximum shortens it like any other lifetime.
* A retransmission (same Identification as the last accepted request, same care-of address, still
  authentic) of a nonce or ``none`` node gets the same reply again and changes nothing (§3.6.3: nonces
  resend unchanged).  Under timestamps a repeated Identification is a replay: 133 (§5.7).
* A pool node asking for a specific non-zero home address gets it if that address is free in its
  pool (e.g. after a home agent restart), else 130.  Its address is released with its last binding.
* Replay state (last Identification, HA nonce) is kept per mobile node and survives its bindings; it
  is forgotten when the node is removed from the configuration.
* An accepted request the engine then fails to carry out (an internal error, i.e. a bug) is counted
  (``internal-errors``) and logged with its traceback.  With ``raise_internal_errors`` (the test
  suite's setting, ``MIPHA_RAISE_INTERNAL_ERRORS=1``) it raises :class:`InternalError`, so no test
  can pass over a bug; otherwise it is answered 128 (reason unspecified), signed, and the datagram
  loop keeps running.  Replay state stored before the failure is kept.
* The data plane's :class:`~ha.dataplane.base.Capabilities` shape the policy ``decide`` sees: an
  encapsulation the backend cannot build is not offered (139), S without copies is code 1, T without
  reverse tunnelling 137; a configuration asking for an encapsulation no backend builds is refused at
  commit.  A binding the backend still fails to program after the reply left is withdrawn
  (:meth:`HomeAgent.data_plane_failed`: ``data-plane-failures``, ``binding-removed`` with reason
  ``data-plane-failure``), never kept as a binding that forwards nothing.
* ``gratuitous-arps-sent`` counts gratuitous ARP bursts the data plane actually started
  (:meth:`HomeAgent.gratuitous_arp_sent`, called by the backend), not intents: a came-home burst
  whose node never answered ARP, or one on a virtual router without a home interface, is not counted.
* ``registered-at`` is derived from the monotonic registration time and the latest wallclock offset.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from types import MappingProxyType
from typing import Literal, Protocol, cast

from ha import fastpath
from ha.aaa.config import Authentication
from ha.aaa.mn_aaa import MnAaaUnusable, chap_credentials, mn_aaa_extension
from ha.aaa.profile import AaaProfile
from ha.dataplane.base import Capabilities, DesiredBinding
from ha.dataplane.intents import Encapsulation as PlaneEncapsulation
from ha.dataplane.intents import (
    EnsureTunnel,
    GratuitousArp,
    Intent,
    ProxyArp,
    ReleaseTunnel,
    RemoveHomeRoute,
    SetHomeRoute,
)
from ha.protocol import (
    Accept,
    Arrival,
    BindingAction,
    Deny,
    ForeignAgentRecord,
    HomeAgentPolicy,
    MobileNodeRecord,
    ProtocolError,
    RegistrationRequest,
    ReplyCode,
    RequestFlags,
    ReverseTunnelPolicy,
    decide,
    encode_malformed_reply,
    encode_reply,
    pull_registration_request,
    reply_address,
    verify,
    with_home_address,
)
from ha.protocol.constants import Encapsulation as ProtocolEncapsulation
from ha.protocol.constants import MessageType, ReplayProtection, SecurityViolation
from ha.protocol.errors import ProtocolError as _RevocationError
from ha.protocol.messages import MobileHomeAuth, ipv4
from ha.protocol.replay import ReplayVerdict, check_timestamp
from ha.protocol.revocation import (
    RevocationAck,
    pull_revocation,
    pull_revocation_ack,
    push_revocation_ack,
    revocation_step,
    verify_fa_ha,
)
from ha.protocol.udp_tunnel import udp_tunnel_step

from .aaa import AAA_NODE_PREFIX, AaaAccepted, AaaLookup, AaaOutcome, AaaRejected, Pending, Subscriber
from .bindings import NO_SIMULTANEOUS, UDP_TUNNEL, Binding, BindingTable, make_key
from .config import ConfigChange, EngineNode, MobileNode, VirtualRouterConfig
from .errors import ConfigRefused
from .events import BindingCreated, BindingRemoved, Event, RegistrationDenied, RemovalReason
from .pools import PoolAllocator
from .renewals import CAPACITY as _RENEWALS_CAPACITY
from .renewals import REQUEST_LENGTH as _RENEWAL_LENGTH
from .renewals import Renewal, cacheable_layouts
from .revocations import Negotiated, RevocationState
from .statistics import Statistics, ViolationRing
from .transaction import EntryUpdate, Prepared, prepare_change, prepare_config

log = logging.getLogger(__name__)


class InternalError(RuntimeError):
    """A bug met while carrying out an accepted request (raised only with ``raise_internal_errors``)."""


def _raise_internal_errors_default() -> bool:
    """The test suite sets ``MIPHA_RAISE_INTERNAL_ERRORS=1`` (tests/conftest.py): bugs must be loud."""
    return os.environ.get("MIPHA_RAISE_INTERNAL_ERRORS") == "1"


#: Until the daemon passes its backend's (set_capabilities): all but minimal encapsulation, as tun and none.
_DEFAULT_CAPABILITIES = Capabilities()

_UNSPECIFIED = 0
_T_BIT = int(RequestFlags.T)  # plain int: IntFlag arithmetic allocates an enum member per call
# Enum members read per request, bound once: reading one off its class costs ~70 ns in Python 3.11.
_REGISTRATION_REQUEST = int(MessageType.REGISTRATION_REQUEST)
_REVOCATION = int(MessageType.REGISTRATION_REVOCATION)
_REVOCATION_ACK = int(MessageType.REVOCATION_ACKNOWLEDGEMENT)
_IP_IN_UDP = PlaneEncapsulation.IP_IN_UDP
_REGISTER = BindingAction.REGISTER
_ACCEPTED_NO_SIMULTANEOUS = ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS
_TIMESTAMP = ReplayProtection.TIMESTAMP
_REASON_UNSPECIFIED = ReplyCode.REASON_UNSPECIFIED


def _values(encapsulations: Iterable[PlaneEncapsulation]) -> frozenset[str]:
    return frozenset(e.value for e in encapsulations)


_NONCE = ReplayProtection.NONCE


def _uses_nonces(node: EngineNode) -> bool:
    return any(sa.replay_protection is _NONCE for sa in node.association_tuple)


def _care_of(binding: Binding) -> int:
    return binding.care_of_address


def _tunnel_end(binding: Binding) -> tuple[IPv4Address, PlaneEncapsulation, int]:
    """Where a binding's tunnel goes: its care-of address, or its NAT mapping (RFC 3519)."""
    if binding.flags & UDP_TUNNEL:
        return ipv4(binding.source >> 16), _IP_IN_UDP, binding.source & 0xFFFF
    return ipv4(binding.care_of_address), binding.encapsulation, 0


#: Granted lifetimes are few distinct values: bindings share one int object per value.
_LIFETIMES: dict[int, int] = {}
_PLANE_ENCAPSULATION = {e: PlaneEncapsulation(e.value) for e in ProtocolEncapsulation}
#: what a binding's request asked for (a UDP tunnel, RFC 3519, carries IP-in-IP)
_ASKED = {plane: asked for asked, plane in _PLANE_ENCAPSULATION.items()} | {
    PlaneEncapsulation.IP_IN_UDP: ProtocolEncapsulation.IP_IN_IP
}
_DENIAL_COUNTERS = {
    ReplyCode.MN_FAILED_AUTHENTICATION: "mn_auth_failures",
    ReplyCode.FA_FAILED_AUTHENTICATION: "fa_auth_failures",
    ReplyCode.IDENTIFICATION_MISMATCH: "identification_mismatches",
    ReplyCode.POORLY_FORMED_REQUEST: "poorly_formed",
    ReplyCode.UNKNOWN_HOME_AGENT_ADDRESS: "unknown_ha",
}
#: Source addresses kept parsed (a cache, cleared when full).
_PEER_CACHE = 65536
#: Seconds added to the millisecond expiry so ``handle_timer(get_timer())`` always finds it due.
_TIMER_SLACK = 0.00001


@dataclass(slots=True)
class Outgoing:
    """A reply datagram and its RFC 5944 §3.8.3.1 addressing (the transport sends it with IP_PKTINFO).

    One per request, so not frozen (a frozen dataclass costs ~350 ns more to build); read-only all
    the same.
    """

    data: bytes
    destination: tuple[str, int]
    source: IPv4Address
    source_port: int


@dataclass(frozen=True, slots=True)
class BindingInfo:
    """A read-only snapshot of one binding with every YANG ``bindings/binding`` leaf."""

    home_address: IPv4Address
    care_of_address: IPv4Address
    mobile_node: str
    nai: str | None
    source_address: IPv4Address
    source_port: int
    lifetime_granted: int
    lifetime_remaining: int
    registered_at: float  # Unix time
    identification: int
    flags: RequestFlags
    encapsulation: str
    accepted_no_simultaneous: bool
    #: Where the key and the home address came from: "local", or the RADIUS attributes (AAA nodes).
    authentication: str = "local"
    key_source: str | None = None
    address_source: str | None = None
    udp_tunnel: bool = False  # RFC 3519: tunnelled in UDP to the NAT mapping (source address/port)
    revocation: bool = False  # RFC 3543 negotiated with the foreign agent

    @property
    def key(self) -> tuple[IPv4Address, IPv4Address]:
        return self.home_address, self.care_of_address


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """Operational state of an ``address-pool``."""

    size: int
    in_use: int
    free: int


@dataclass(frozen=True, slots=True)
class ReplayState:
    """A mobile node's replay protection state (what hot standby replicates with its bindings)."""

    identification: int | None  # the last accepted Identification
    ha_nonce: int | None  # the nonce sent with the reply to it (nonces): the one expected next
    offered_nonce: int | None  # the nonce sent with a 133 since (also accepted)


class BindingSnapshot(Protocol):
    """What :meth:`HomeAgent.restore_binding` reads (``mipha.journal.BindingRecord`` has it)."""

    home_address: str
    care_of_address: str
    mobile_node: str
    source_address: str
    source_port: int
    lifetime: int
    registered_at: float
    identification: int
    flags: int
    encapsulation: str


class _Peer:
    """What one request source and destination determine, worked out once and kept (a cache).

    The ``Arrival`` given to ``decide``, the foreign agent that source is (if any), the packed source
    a binding stores (one int shared by every binding from this peer) and the reply's addressing
    (RFC 5944 §3.8.3.1).  Entries depend on the configuration: ``_install`` drops them all.
    """

    __slots__ = (
        "arrival",
        "foreign_agent",
        "key",
        "port",
        "received_on",
        "reply_port",
        "reply_source",
        "reply_to",
        "source",
    )

    def __init__(
        self, source: tuple[str, int], received_on: IPv4Address, port: int, engine: HomeAgent
    ) -> None:
        policy = engine._policy
        assert policy is not None
        address = IPv4Address(source[0])
        self.key = source  # its entry's key in the engine's cache of peers
        self.arrival = Arrival(address, source[1], received_on, port)
        self.received_on = received_on
        self.port = port
        self.foreign_agent = engine._foreign_agents.get(address)
        self.source = (int(address) << 16) | source[1]
        if received_on == policy.address:  # the common case: sent to our unicast address
            self.reply_to: tuple[str, int] = source
            self.reply_source = policy.address
            self.reply_port = port
        else:
            reply = reply_address(self.arrival, policy)
            self.reply_to = (str(reply.destination), reply.destination_port)
            self.reply_source = reply.source
            self.reply_port = reply.source_port


class AaaCounters:
    """Engine-side AAA counters (per server counters live with the RADIUS client)."""

    __slots__ = ("absorbed", "accepted", "lookups", "overflows", "rejected", "unavailable")

    def __init__(self) -> None:
        self.lookups = 0  # Access-Requests asked for
        self.absorbed = 0  # requests that arrived while their NAI's look-up was pending
        self.accepted = 0
        self.rejected = 0
        self.unavailable = 0  # every server timed out
        self.overflows = 0  # pending limit or cache full (130)


class _NodeState:
    """Runtime state of one mobile node: replay protection and its assigned (pool) address."""

    __slots__ = (
        "accepted",
        "assigned",
        "coas",
        "denied",
        "ha_nonce",
        "last_identification",
        "last_reply_code",
        "last_request_time",
        "offered_nonce",
    )

    def __init__(self) -> None:
        # YANG mobile-node/statistics (MIP-MIB haCounterTable): requests answered 0/1, denied, the
        # latest reply code and when (Unix time) the latest request came.
        self.accepted = 0
        self.denied = 0
        self.last_reply_code: int | None = None
        self.last_request_time: float | None = None
        self.last_identification: int | None = None
        self.ha_nonce: int | None = None  # sent with the last reply to an authentic, fresh request
        self.offered_nonce: int | None = None  # sent with a 133 since; also accepted (RFC 5944 §5.7)
        self.assigned: int | None = None
        #: Care-of addresses of its bindings, kept in step with the table so the hot path needs no
        #: range query: None, one int (the common case, shared with the binding), or a tuple.
        self.coas: int | tuple[int, ...] | None = None

    def care_of_addresses(self) -> tuple[int, ...]:
        coas = self.coas
        if coas is None:
            return ()
        return (coas,) if isinstance(coas, int) else coas


class HomeAgent:
    """Mobile IPv4 home agent state for one virtual router (see the module docstring)."""

    def __init__(
        self,
        config: VirtualRouterConfig,
        *,
        nonce: Callable[[], int] = lambda: secrets.randbits(32),
        violation_capacity: int = 256,
        event_capacity: int = 65536,
        capabilities: Capabilities = _DEFAULT_CAPABILITIES,
        raise_internal_errors: bool | None = None,
        renewal_cache: bool = True,
    ) -> None:
        self._nonce = nonce
        self._capabilities = capabilities
        self._raise_internal_errors = (
            _raise_internal_errors_default() if raise_internal_errors is None else raise_internal_errors
        )
        self.statistics = Statistics()
        self.violations = ViolationRing(violation_capacity)
        self._table = BindingTable()
        self._intents: deque[Intent] = deque()  # never dropped: the data plane must see every one
        self._events: deque[Event] = deque(maxlen=event_capacity)
        self.events_dropped = 0
        self._nodes: dict[str, _NodeState] = {}
        #: Mobile nodes whose replay state changed since taken; None = not tracked (hot standby).
        self._replay_changed: set[str] | None = None
        self._wall_offset = 0.0
        self._now = 0.0
        # Filled by _install():
        self.config = config
        self._policy: HomeAgentPolicy | None = None  # the configured policy within the capabilities
        self._configured_policy: HomeAgentPolicy | None = None
        self._port = 0
        self._pools: dict[str, PoolAllocator] = {}
        self._by_home: dict[int, EngineNode] = {}
        self._by_nai: dict[str, EngineNode] = {}
        self._by_assigned: dict[int, EngineNode] = {}
        self._foreign_agents: dict[IPv4Address, ForeignAgentRecord] = {}
        self._nonce_nodes: set[str] = set()
        self._node_map: dict[str, MobileNode] = {}
        self._peers: dict[tuple[str, int], _Peer] = {}
        #: Renewals in place the full path carried out, by the request's first 16 bytes (renewals.py);
        #: ``renewal_cache`` False: every request takes the full path (the tests' reference).
        self._renewals: dict[bytes, Renewal] | None = {} if renewal_cache else None
        #: whether remembered renewals get their C copy (ha/fastpath.py: built, MIPHA_FASTPATH not 0)
        self.fast_renewals = renewal_cache and fastpath.enabled()
        #: the binding _register added or renewed in place for the request being decided: a repeat of
        #: that request renews it in place (the renewal cache remembers it)
        self._bound: Binding | None = None
        #: Bumped by every change a remembered renewal could depend on — every call into the engine
        #: other than a renewal answered from the cache (a datagram the full path takes, a timer, a
        #: RADIUS answer, a configuration, a clear, a restore, a new peer): a Renewal whose generation
        #: is the engine's has been checked since, and only renewals in place ran meanwhile, which
        #: change nothing it reads but its node's Identification (checked every time).
        self._generation = 0
        # AAA (ha/engine/aaa.py): None = local authentication only.
        self._aaa_mode: Authentication | None = None
        self._subscribers: dict[str, Subscriber] = {}  # by node name (AAA_NODE_PREFIX + NAI)
        self._subscribers_by_nai: dict[str, Subscriber] = {}
        self._aaa_pending: dict[str, Pending] = {}
        self._aaa_lookups: deque[AaaLookup] = deque()
        self._aaa_verified: str | None = None  # the NAI whose MN-AAA RADIUS just checked
        self._aaa_cache_size = 0
        self._aaa_max_pending = 0
        self._aaa_unreachable: str | None = None  # why no RADIUS server can be asked now (set by the shell)
        self._sessions = 0
        self.aaa_counters = AaaCounters()
        self._revocations = RevocationState()
        self._datagrams: deque[Outgoing] = deque()  # revocations to send (not replies)
        self._install(prepare_config(self, config))

    # --- inputs: datagrams -----------------------------------------------------------------------

    def handle_datagram(
        self,
        data: bytes,
        *,
        source: tuple[str, int],
        received_on: IPv4Address,
        now: float,
        wallclock: float,
        destination_port: int | None = None,
        parsed: RegistrationRequest | None = None,
    ) -> Outgoing | None:
        """Process one UDP payload; return the reply to send, or None (discarded).

        ``received_on`` is the IP destination the request was sent to (from IP_PKTINFO): the reply
        comes from it, unless it was a broadcast (discovery), then from the HA's unicast address.
        ``parsed``: ``data`` already parsed (a request that waited for RADIUS), decided as it is.
        """
        self._now = now
        self._wall_offset = wallclock - now
        stats = self.statistics
        policy = self._policy
        if policy is None or not data or data[0] != _REGISTRATION_REQUEST:
            if policy is not None and data and data[0] in (_REVOCATION, _REVOCATION_ACK):
                self._generation += 1
                return self._revocation_message(data, source, now, wallclock)
            stats.discarded += 1
            return None
        stats.requests_received += 1
        port = destination_port if destination_port is not None else self._port
        peer = self._peers.get(source)
        if (
            peer is None
            or peer.port != port
            or (peer.received_on is not received_on and peer.received_on != received_on)
        ):
            peer = self._peer(source, received_on, port)
        renewals = self._renewals
        if parsed is None and renewals and len(data) >= _RENEWAL_LENGTH:
            renewal = renewals.get(data[:16])
            if renewal is not None:
                answered = self._renew_cached(renewal, data, peer, now, wallclock)
                if answered is not None:
                    return answered
        self._generation += 1  # the full path: whatever it changes, remembered renewals check again
        if parsed is not None:
            request = parsed
        else:
            try:
                request = pull_registration_request(data)
            except ProtocolError as error:
                return self._malformed(error, peer)
        if request.lifetime == 0:
            stats.deregistrations_received += 1

        node = self._resolve(request)
        # Unknown, or cached but authenticated by MN-AAA: RADIUS; configured and cached nodes: local.  A
        # request whose last extension is Mobile-Home has no MN-AAA (the codec refuses both, 134): a
        # cached node's usual renewal costs a configured node's.
        if self._aaa_mode is not None and (
            node is None or (type(node) is Subscriber and type(request.extensions[-1]) is not MobileHomeAuth)
        ):
            outgoing = self._aaa_gate(data, request, node, peer, source, received_on, port, now)
            if outgoing is not False:
                return outgoing
        state = None
        if node is not None:
            state = self._nodes.get(node.name)
            if state is not None and state.last_identification == request.identification:
                outgoing = self._retransmission(request, node, state, peer)
                if outgoing is not None:
                    return outgoing

        # The binding count matters only to enforce max-bindings (and len() is a Python call here).
        in_use = len(self._table) if policy.max_bindings is not None else 0
        verdict = decide(
            request,
            policy=policy,
            mobile_node=self._record(node, state, request) if node is not None else None,
            foreign_agent=peer.foreign_agent,
            arrival=peer.arrival,
            now=now,
            wallclock=wallclock,
            bindings_in_use=in_use,
            fresh_nonce=self._nonce() if node is not None and node.name in self._nonce_nodes else 0,
            mn_aaa_verified=self._aaa_verified is not None and self._aaa_verified == request.nai,
        )
        if node is not None:
            replay = verdict.replay if type(verdict) is Accept else verdict  # (Accept's are properties)
            accepted, ha_nonce = replay.accepted_identification, replay.ha_nonce
            if accepted is not None or ha_nonce is not None:
                if state is None:
                    state = self._state(node.name)
                if self._replay_changed is not None:
                    self._replay_changed.add(node.name)
                if accepted is not None:
                    state.last_identification = accepted
                if ha_nonce is None:
                    pass
                elif accepted is not None:  # authentic and fresh: the nonce it gets is the one expected
                    state.ha_nonce, state.offered_nonce = ha_nonce, None
                else:  # a 133: offer a new nonce, keep the expected one (a replay costs the node nothing)
                    state.offered_nonce = ha_nonce
        if type(verdict) is Accept and len(request.extensions) > 1:
            if verdict.fa_security_association is None:  # RFC 3519 alone (RFC 3543 needs an agent)
                ha_config = self.config.home_agent
                assert ha_config is not None
                verdict = udp_tunnel_step(
                    verdict, peer.arrival, ha_config.nat_traversal, self._capabilities.udp_tunnels
                )
            else:
                verdict = self._rfc3519_3543(verdict, peer, wallclock)
        if type(verdict) is Accept:
            assert node is not None  # decide() never accepts an unknown mobile node
            if state is None:
                state = self._state(node.name)
            self._bound = None
            try:
                verdict = self._apply_accept(verdict, node, state, peer)
            except Exception as error:  # a bug: counted, logged with its traceback, raised under test
                stats.internal_errors += 1
                log.exception("internal error: accepted request from %s not carried out", peer.arrival.source)
                if self._raise_internal_errors:
                    raise InternalError(f"accepted request from {peer.arrival.source}: {error!r}") from error
                verdict = cast(Accept, verdict).deny(_REASON_UNSPECIFIED, f"internal error: {error!r}")
        if node is not None:
            if state is None:
                state = self._state(node.name)
            state.last_reply_code, state.last_request_time = int(verdict.code), wallclock
            if type(verdict) is Deny:
                state.denied += 1
            else:
                state.accepted += 1
        if type(verdict) is Deny:
            self._count_denial(verdict, peer.arrival, wallclock)
        else:
            if verdict.code == _ACCEPTED_NO_SIMULTANEOUS:
                stats.accepted_no_simultaneous += 1
            else:
                stats.accepted += 1  # code 0 only, as its YANG description says
            if verdict.action is not _REGISTER:
                stats.deregistration_replies_sent += 1
            if verdict.udp_tunnel is not None:
                stats.udp_tunnel_accepted += 1
        stats.replies_sent += 1
        reply = encode_reply(verdict)
        bound = self._bound
        if bound is not None:  # set by _register for this request when its verdict is an Accept
            self._bound = None
            if type(verdict) is Accept and node is not None and state is not None:
                self._remember_renewal(bound, node, state, peer, verdict, data, reply, request)
        return Outgoing(reply, peer.reply_to, peer.reply_source, peer.reply_port)

    # --- renewals in place, answered from what the full path did last time (renewals.py) ---------

    def _remember_renewal(
        self,
        binding: Binding,
        node: EngineNode,
        state: _NodeState,
        peer: _Peer,
        verdict: Accept,
        data: bytes,
        reply: bytes,
        request: RegistrationRequest,
    ) -> None:
        """Keep what this registration (a new binding or a renewal in place) read and did, when a repeat
        can be answered from it: a remembered layout (renewals.py) from a node with a timestamp
        association (configured or AAA), directly (no foreign agent), no revocation, one binding."""
        renewals = self._renewals
        sa = verdict.security_association
        udp_tunnel = verdict.udp_tunnel is not None
        if (
            renewals is None
            or len(renewals) >= _RENEWALS_CAPACITY
            or not cacheable_layouts(data, reply, udp_tunnel)
            or self._revocations.negotiated
            or peer.foreign_agent is not None
            or sa.replay_protection is not _TIMESTAMP
            or verdict.revocation is not None
            or state.coas != binding.care_of_address
            or self._policy is None
        ):
            return
        policy = self._policy
        renewal = Renewal(
            node=node,
            state=state,
            binding=binding,
            policy=policy,
            peer=peer,
            security_association=sa,
            request=data,
            reply=reply,
            code=int(verdict.code),
            nai=None if request.layout else node.nai if node.nai == request.nai else request.nai,  # shared
            nat=self.config.home_agent.nat_traversal if udp_tunnel and self.config.home_agent else None,
        )
        if self.fast_renewals and peer.received_on == policy.address:  # replies go back to the source
            renewal.fast = fastpath.entry(
                sa,
                tolerance=policy.replay_tolerance,
                last=binding.identification,
                extension=renewal.extension,
                reply_head=renewal.reply_head,
                reply_extension=renewal.reply_extension,
                source=peer.arrival.source,
                port=peer.arrival.source_port,
            )
        renewal.generation = self._generation
        renewals[data[:16]] = renewal

    def _renewal_holds(self, renewal: Renewal, peer: _Peer) -> bool:
        """Whether everything a remembered renewal depends on is as it was (``_renew_cached``'s
        docstring); the request's layout is the caller's check.  The node's Identification is checked
        every time (a renewal in place of another of its requests changes it); the rest only when the
        engine's generation moved since the entry last held (``self._generation``)."""
        state: _NodeState = renewal.state  # type: ignore[assignment]
        binding = renewal.binding
        last = renewal.identification
        if state.last_identification != last or binding.identification != last or renewal.peer is not peer:
            return False
        if renewal.generation == self._generation:
            return True
        if not (
            renewal.policy is self._policy
            and state.coas == binding.care_of_address
            and self._table.at_key(renewal.table_key) is binding
            and self._named(renewal.nai, renewal.home) is renewal.node
            and self._nodes.get(renewal.node.name) is state
            and not self._revocations.negotiated
            and (renewal.nat is None or renewal.nat is getattr(self.config.home_agent, "nat_traversal", None))
        ):
            return False
        renewal.generation = self._generation
        return True

    def _renew_cached(
        self, renewal: Renewal, data: bytes, peer: _Peer, now: float, wallclock: float
    ) -> Outgoing | None:
        """Answer a repeat of a remembered renewal in place, or None: the full path decides it.

        The entry holds only while everything ``decide`` and the binding rules read is unchanged:
        the peer, the policy, the node the request names (configured, or the AAA subscriber cached)
        and its state, its binding (renewed by nothing else: the Identifications match), no
        revocation, and for a UDP-tunnelled one the
        ``nat-traversal`` policy (the peer is the NAT mapping: the same one, so the same tunnel); the
        authenticator must verify and the Identification be fresh (as ``mobile_node_authentic`` /
        ``identification_fresh``).
        """
        if data[24:-16] != renewal.extension or not self._renewal_holds(renewal, peer):
            renewals = self._renewals
            assert renewals is not None  # the entry came from it
            del renewals[data[:16]]
            return None
        sa = renewal.security_association
        if not hmac.compare_digest(sa.authenticator(data[:-16]), data[-16:]):
            return None
        identification = int.from_bytes(data[16:24], "big")
        replay = check_timestamp(
            identification,
            wallclock=wallclock,
            tolerance=renewal.policy.replay_tolerance,
            last_accepted=renewal.identification,
        )
        if not replay.ok:
            return None
        self._renew_apply(renewal, identification, now, wallclock)
        fast = renewal.fast
        if fast is not None:
            fast.last = identification
        covered = renewal.reply_head + data[16:24] + renewal.reply_extension  # the request's Identification
        reply = covered + sa.authenticator(covered)
        return Outgoing(reply, peer.reply_to, peer.reply_source, peer.reply_port)

    def _renew_apply(self, renewal: Renewal, identification: int, now: float, wallclock: float) -> None:
        """Carry out a remembered renewal whose checks passed: the binding, the node, the counters."""
        state: _NodeState = renewal.state  # type: ignore[assignment]
        binding = renewal.binding
        renewal.identification = state.last_identification = identification
        if self._replay_changed is not None:
            self._replay_changed.add(renewal.node.name)
        registered, previous = binding.registered, binding.lifetime
        binding.registered = now
        binding.lifetime = renewal.lifetime
        binding.identification = identification
        self._table.reschedule(binding, registered, previous)
        code = renewal.code
        state.last_reply_code, state.last_request_time = code, wallclock
        state.accepted += 1
        stats = self.statistics
        if code == _ACCEPTED_NO_SIMULTANEOUS:
            stats.accepted_no_simultaneous += 1
        else:
            stats.accepted += 1
        if renewal.nat is not None:
            stats.udp_tunnel_accepted += 1
        stats.replies_sent += 1

    @property
    def renewal_cache(self) -> dict[bytes, Renewal]:
        """The remembered renewals by the request's first 16 bytes (empty without the cache): the C
        path (ha/fastpath.py) looks its datagrams up in it."""
        return self._renewals if self._renewals is not None else {}

    def renew_batch(
        self, hits: list, *, now: float, wallclock: float, received_on: IPv4Address, port: int
    ) -> int:
        """Apply renewals the C path matched (ha/fastpath.py), in order: each hit is ``(index,
        renewal, identification, last)``, its layout, peer address, authenticator and freshness
        against ``last`` checked in C.  Stops at the first one whose Python state no longer holds
        (the caller hands its datagram to :meth:`handle_datagram`); returns how many it applied."""
        self._now = now
        self._wall_offset = wallclock - now
        peers, stats, generation = self._peers, self.statistics, self._generation
        applied = 0
        for _index, renewal, identification, last in hits:
            peer = renewal.peer
            state: _NodeState = renewal.state
            if (
                renewal.identification != last
                or state.last_identification != last
                or renewal.binding.identification != last
                or peer.port != port
                or (peer.received_on is not received_on and peer.received_on != received_on)
            ):
                break
            # the rest of _renewal_holds when something else ran since the entry last held; the peer
            # as handle_datagram finds it (the peers change only with the generation)
            if renewal.generation != generation:
                current = peers.get(peer.key)
                if current is not peer or current is None or not self._renewal_holds(renewal, current):
                    break
            stats.requests_received += 1
            self._renew_apply(renewal, identification, now, wallclock)
            applied += 1
        return applied

    def _rfc3519_3543(self, verdict: Accept, peer: _Peer, wallclock: float) -> Accept | Deny:
        """UDP tunnelling (RFC 3519) and revocation support (RFC 3543) on an accepted request."""
        ha = self.config.home_agent
        assert ha is not None
        outcome = udp_tunnel_step(
            verdict, peer.arrival, ha.nat_traversal, available=self._capabilities.udp_tunnels
        )
        if type(outcome) is Accept and outcome.fa_security_association is not None:  # only with an agent
            outcome = revocation_step(outcome, int(wallclock), enabled=ha.revocation.enabled)
        return outcome

    def _peer(self, source: tuple[str, int], received_on: IPv4Address, port: int) -> _Peer:
        peers = self._peers
        if len(peers) >= _PEER_CACHE:
            peers.clear()
        peer = peers[source] = _Peer(source, received_on, port, self)
        self._generation += 1  # a remembered renewal's peer may be the one replaced
        return peer

    def _malformed(self, error: ProtocolError, peer: _Peer) -> Outgoing | None:
        data = encode_malformed_reply(error)
        if data is None:
            self.statistics.discarded += 1
            return None
        stats = self.statistics
        stats.poorly_formed += 1
        stats.denied += 1
        stats.denied_by_code[ReplyCode.POORLY_FORMED_REQUEST] += 1
        header = error.header
        self._event(
            RegistrationDenied(
                ReplyCode.POORLY_FORMED_REQUEST,
                peer.arrival.source,
                None,
                header.home_address if header is not None else None,
            )
        )
        return self._send(data, peer)

    def _send(self, data: bytes, peer: _Peer) -> Outgoing:
        self.statistics.replies_sent += 1
        return Outgoing(data, peer.reply_to, peer.reply_source, peer.reply_port)

    def _count_denial(self, verdict: Deny, arrival: Arrival, wallclock: float) -> None:
        stats = self.statistics
        stats.denied += 1
        stats.denied_by_code[int(verdict.code)] += 1
        counter = _DENIAL_COUNTERS.get(verdict.code)
        if counter is not None:
            setattr(stats, counter, getattr(stats, counter) + 1)
        home = verdict.request.home_address
        if verdict.violation is not None:
            violation = self.violations.record(
                time=wallclock,
                peer=arrival.source,
                spi=verdict.spi,
                reason=verdict.violation,
                home_address=None if int(home) == 0 else home,
                identification=verdict.request.identification,
                reply_code=int(verdict.code),
            )
            stats.security_violations_total += 1
            # RFC 5944 §3.8.2.1: the home agent SHOULD log authentication failures as security events.
            log.warning(
                "security violation %d: %s from %s (SPI %s, home address %s, identification %#018x), "
                "answered %d",
                violation.index,
                violation.reason,
                violation.peer,
                violation.spi,
                violation.home_address,
                violation.identification,
                violation.reply_code,
            )
        self._event(
            RegistrationDenied(
                int(verdict.code), arrival.source, verdict.spi, None if int(home) == 0 else home
            )
        )

    # --- mobile node look-ups --------------------------------------------------------------------

    def _resolve(self, request: RegistrationRequest) -> EngineNode | None:
        """The mobile node a request names: by NAI when present (RFC 2794), else by home address."""
        # the usual layouts (an MN-HA extension alone, or RFC 3519's: a UDP Tunnel Request before it)
        # name no NAI: no search for one
        return self._named(None if request.layout else request.nai, request.integers[0])

    def _named(self, nai: str | None, home: int) -> EngineNode | None:
        """The mobile node named by ``nai`` if not None, else by the home address ``home``."""
        mode = self._aaa_mode
        if mode is None:
            if nai is not None:
                return self._by_nai.get(nai)
            return self._by_home.get(home) or self._by_assigned.get(home)
        if mode is Authentication.LOCAL_THEN_AAA:
            if nai is not None:
                local = self._by_nai.get(nai)
                if local is not None:
                    return local
            else:
                local = self._by_home.get(home) or self._by_assigned.get(home)
                if local is not None and local.name not in self._subscribers:
                    return local
        return None if nai is None else self._subscribers_by_nai.get(nai)  # the subscriber is the node

    def node(self, name: str) -> EngineNode | None:
        """A configured mobile node, or an AAA-learnt one (``aaa:<NAI>``), by name."""
        node = self.config.mobile_nodes.get(name)
        if node is None:
            subscriber = self._subscribers.get(name)
            return subscriber.node if subscriber is not None else None
        return node

    def subscribers(self) -> Iterator[tuple[str, Subscriber]]:
        """Every AAA-learnt subscriber, by mobile node name."""
        return iter(list(self._subscribers.items()))

    def subscriber(self, name: str) -> Subscriber | None:
        """The AAA-learnt subscriber behind a mobile node name, if it is one."""
        return self._subscribers.get(name)

    def _state(self, name: str) -> _NodeState:
        state = self._nodes.get(name)
        if state is None:
            state = self._nodes[name] = _NodeState()
        return state

    def _home_of(self, node: EngineNode, state: _NodeState | None) -> int | None:
        if node.home_address is not None:
            return int(node.home_address)
        return state.assigned if state is not None else None

    def _record(
        self, node: EngineNode, state: _NodeState | None, request: RegistrationRequest
    ) -> MobileNodeRecord:
        """What ``decide`` needs to know about a mobile node: its configuration and runtime state."""
        home_address = node.home_address
        if state is None:
            return MobileNodeRecord(
                node.name,
                node.association_tuple,
                home_address,
                node.address_pool is not None,
                (),
                None,
                None,
                node.max_lifetime,
                node.reverse_tunnel,
                node.care_of_access or None,
            )
        coas = state.coas
        if coas is None:
            addresses: tuple[IPv4Address, ...] = ()
        elif coas == request.integers[2]:  # a renewal: reuse the parsed address object
            addresses = (request.care_of_address,)
        else:
            addresses = tuple(ipv4(c) for c in state.care_of_addresses())
        if home_address is None and state.assigned is not None:
            home_address = ipv4(state.assigned)
        return MobileNodeRecord(
            node.name,
            node.association_tuple,
            home_address,
            node.address_pool is not None,
            addresses,
            state.last_identification,
            state.ha_nonce,
            node.max_lifetime,
            node.reverse_tunnel,
            node.care_of_access or None,
            state.offered_nonce,
        )

    # --- retransmissions -------------------------------------------------------------------------

    def _retransmission(
        self,
        request: RegistrationRequest,
        node: EngineNode,
        state: _NodeState,
        peer: _Peer,
    ) -> Outgoing | None:
        """Answer a retransmission of the last accepted request again, changing nothing.

        RFC 5944 §3.6.3: with nonces an unanswered request is resent unchanged and "does not count as
        a new registration".  With timestamps a retransmission carries a new Identification, so a
        repeated one is a replay: the normal path answers it 133 (§5.7; docs/protocol-decisions.md
        §5).  The request must still authenticate (MN-HA, and FA-HA when an FA association exists);
        otherwise the normal path answers it (131/132).
        """
        mn_ha = request.mn_ha_auth
        sa = node.security_associations.get(mn_ha.spi) if mn_ha is not None else None
        if mn_ha is None or sa is None or sa.replay_protection is ReplayProtection.TIMESTAMP:
            return None
        if not verify(request.raw, mn_ha, sa):
            return None
        fa_sa = None
        foreign_agent = peer.foreign_agent
        if foreign_agent is not None:
            fa_ha = request.fa_ha_auth
            fa_sa = foreign_agent.security_association(fa_ha.spi) if fa_ha is not None else None
            if fa_ha is None or fa_sa is None or not verify(request.raw, fa_ha, fa_sa):
                return None
        home = self._home_of(node, state)
        if home is None:
            return None
        coa = int(request.care_of_address)
        binding = None if request.lifetime == 0 else self._table.get(home, coa)
        if request.lifetime != 0 and (binding is None or binding.identification != request.identification):
            return None
        if request.lifetime == 0:
            # A deregistration was carried out: nothing it removed may still be there.
            if request.deregisters_all and self._table.count_for_home(home):
                return None
            if self._table.get(home, coa) is not None:
                return None
        if sa.replay_protection is ReplayProtection.NONCE and state.ha_nonce is not None:
            reply_identification = (state.ha_nonce << 32) | (request.identification & 0xFFFF_FFFF)
        else:
            reply_identification = request.identification
        code = ReplyCode.ACCEPTED
        if binding is not None and binding.flags & NO_SIMULTANEOUS:
            code = ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS
        verdict = Accept(
            request=request,
            code=code,
            action=BindingAction.REGISTER if binding is not None else BindingAction.DEREGISTER,
            lifetime=binding.lifetime if binding is not None else 0,
            expires_at=None,
            home_address=IPv4Address(home),
            assign=False,
            flags=request.flags,
            encapsulation=(
                _ASKED[binding.encapsulation] if binding is not None else ProtocolEncapsulation.IP_IN_IP
            ),
            replace_existing=False,
            security_association=sa,
            fa_security_association=fa_sa,
            replay=ReplayVerdict(True, reply_identification),
        )
        stats = self.statistics
        if code == ReplyCode.ACCEPTED_NO_SIMULTANEOUS_BINDINGS:
            stats.accepted_no_simultaneous += 1
        else:
            stats.accepted += 1
        if binding is None:
            stats.deregistration_replies_sent += 1
        state.accepted += 1
        state.last_reply_code, state.last_request_time = int(code), self._now + self._wall_offset
        return self._send(encode_reply(verdict), peer)

    # --- binding rules (RFC 5944 §3.8.2.2) -------------------------------------------------------

    def _apply_accept(
        self, verdict: Accept, node: EngineNode, state: _NodeState, peer: _Peer
    ) -> Accept | Deny:
        """Carry out an accepted request; 130 instead when the node's pool cannot give it an address."""
        if verdict.action is _REGISTER:
            if verdict.assign:
                home = self._assign(node, state, verdict.home_address)
                if home is None:
                    reason = f"address pool {node.address_pool} has no free address"
                    if verdict.home_address is not None:
                        reason = f"{verdict.home_address} is not free in pool {node.address_pool}"
                    return verdict.deny(ReplyCode.INSUFFICIENT_RESOURCES, reason)
                verdict = with_home_address(verdict, IPv4Address(home))
            self._register(verdict, node, state, peer.source)
            return verdict
        assert verdict.home_address is not None  # a deregistration names its home address
        home = int(verdict.home_address)
        coa = int(verdict.care_of_address)
        if verdict.action is BindingAction.DEREGISTER_ALL:
            self._remove_bindings(
                home, self._table.care_of_addresses(home), RemovalReason.DEREGISTERED, at_home=True
            )
        else:
            self._remove_bindings(home, [coa], RemovalReason.DEREGISTERED)
        return verdict

    def _assign(self, node: EngineNode, state: _NodeState, wanted: IPv4Address | None) -> int | None:
        """The node's pool address: the one it holds, the one it asks for if free, or a new one."""
        if state.assigned is not None and (wanted is None or int(wanted) == state.assigned):
            return state.assigned
        pool = self._pools.get(node.address_pool or "")
        if pool is None:
            return None
        address: int | None
        if wanted is not None:
            if not pool.claim(int(wanted)):
                return None
            address = int(wanted)
        else:
            address = pool.allocate()
            if address is None:
                return None
        if state.assigned is not None:  # moved to another address: the old one is bound no more
            self._remove_bindings(
                state.assigned, self._table.care_of_addresses(state.assigned), RemovalReason.REPLACED
            )
        state.assigned = address
        self._by_assigned[address] = node
        return address

    def _register(self, verdict: Accept, node: EngineNode, state: _NodeState, source: int) -> None:
        """Add or renew the binding ``verdict`` grants; ``source`` is the peer's packed address and port."""
        table = self._table
        request = verdict.request
        request_home, _agent, coa = request.integers
        home_ip = verdict.home_address
        assert home_ip is not None  # assigned before an accepted registration is applied
        home = request_home if home_ip is request.home_address else int(home_ip)
        lifetime = _LIFETIMES.setdefault(verdict.lifetime, verdict.lifetime)
        encapsulation = _PLANE_ENCAPSULATION[verdict.encapsulation]
        flags = int(verdict.flags) | (NO_SIMULTANEOUS if verdict.code == _ACCEPTED_NO_SIMULTANEOUS else 0)
        if verdict.udp_tunnel is not None:
            flags |= UDP_TUNNEL
        current = table.get(home, coa)
        if verdict.revocation is not None or self._revocations.negotiated:
            self._negotiate(verdict, make_key(home, coa), source)
        if (
            current is not None
            and current.encapsulation == encapsulation
            and (current.flags ^ flags) & (_T_BIT | UDP_TUNNEL) == 0
            and (not flags & UDP_TUNNEL or current.source == source)
            and (not verdict.replace_existing or isinstance(state.coas, int))
        ):  # a plain renewal: nothing changes but the binding's own fields (no intents, no events)
            registered, previous_lifetime = current.registered, current.lifetime
            current.registered = self._now
            current.lifetime = lifetime
            current.identification = request.identification
            current.flags = flags
            current.source = source
            table.reschedule(current, registered, previous_lifetime)
            self._bound = current
            return

        # A new binding keeps int objects it can share, not the request's: the configuration's (or
        # the pool's) for the home address, the parsed address cache's for the care-of address.
        home = int(node.home_address) if node.home_address is not None else int(home_ip)
        coa = int(verdict.care_of_address)

        binding = Binding(
            home,
            coa,
            node.name,
            source=source,
            lifetime=lifetime,
            registered=self._now,
            identification=request.identification,
            flags=flags,
            encapsulation=encapsulation,
        )
        coa_ip = verdict.care_of_address
        if state.coas is None:  # the node's first binding (the usual case): nothing to compare with
            before: list[Binding] = []
            replaced: list[Binding] = []
            after = [binding]
            route: tuple[IPv4Address, ...] = (_tunnel_end(binding)[0],)
        else:
            before = [b for b in (table.get(home, c) for c in state.care_of_addresses()) if b is not None]
            replaced = [b for b in before if b.care_of_address != coa] if verdict.replace_existing else []
            kept = [b for b in before if b.care_of_address != coa and b not in replaced]
            after = sorted([*kept, binding], key=_care_of)
            route = tuple(_tunnel_end(b)[0] for b in after)
        for old in replaced:
            table.remove(home, old.care_of_address)
        table.add(binding)
        self._set_coas(state, after)

        intents = self._intents
        end = _tunnel_end(binding)
        old_end = _tunnel_end(current) if current is not None else None
        new_tunnel = old_end is None or old_end[:2] != end[:2]
        reverse_before = any(b.flags & _T_BIT for b in before)
        reverse_after = any(b.flags & _T_BIT for b in after)
        if new_tunnel:
            intents.append(EnsureTunnel(end[0], end[1]))
        if current is None or replaced or reverse_before != reverse_after or old_end != end:
            intents.append(SetHomeRoute(home_ip, route, reverse_after, end[2] if len(after) == 1 else 0))
        if old_end is not None and new_tunnel:
            intents.append(ReleaseTunnel(old_end[0], old_end[1]))
        for old in replaced:
            old_ip = IPv4Address(old.care_of_address)
            old_tunnel = _tunnel_end(old)
            intents.append(ReleaseTunnel(old_tunnel[0], old_tunnel[1]))
            self._forget_revocation(old)
            self._event(BindingRemoved(home_ip, old_ip, old.mobile_node, RemovalReason.REPLACED, node.nai))
        if not before:
            intents.append(ProxyArp(home_ip, True))
            self.statistics.proxy_arps_sent += 1
            intents.append(GratuitousArp(home_ip))
        if current is None:
            self._event(BindingCreated(home_ip, coa_ip, node.name, node.nai, lifetime))
        # A repeat of this request (new Identification) takes the plain renewal above: the same
        # verdict (decide reads nothing this changed but the node's own care-of addresses, which
        # now include this one: renewals pass the binding limits), the same binding renewed in place.
        self._bound = binding

    @staticmethod
    def _set_coas(state: _NodeState, bindings: list[Binding]) -> None:
        """Store a node's care-of addresses (in key order) after its bindings changed."""
        if not bindings:
            state.coas = None
        elif len(bindings) == 1:
            state.coas = bindings[0].care_of_address
        else:
            state.coas = tuple(b.care_of_address for b in bindings)

    def _remove_bindings(
        self, home: int, care_of_addresses: Iterable[int], reason: RemovalReason, *, at_home: bool = False
    ) -> int:
        """Remove some bindings of one home address, emitting intents and events; returns how many."""
        removed = [b for b in (self._table.remove(home, coa) for coa in list(care_of_addresses)) if b]
        if removed:
            self._after_removal(home, removed, reason, at_home=at_home)
        return len(removed)

    def _after_removal(
        self, home: int, removed: list[Binding], reason: RemovalReason, *, at_home: bool = False
    ) -> None:
        """Intents and events once ``removed`` left the table; releases a pool address with the last one."""
        intents = self._intents
        remaining = self._table.for_home(home)
        name = removed[0].mobile_node
        state = self._nodes.get(name)
        if state is not None:
            self._set_coas(state, remaining)
        address = IPv4Address(home)
        nai = self._nai(removed[0])
        if remaining:
            ends = [_tunnel_end(b) for b in remaining]
            intents.append(
                SetHomeRoute(
                    address,
                    tuple(e[0] for e in ends),
                    any(b.flags & _T_BIT for b in remaining),
                    ends[0][2] if len(ends) == 1 else 0,
                )
            )
        else:
            intents.append(RemoveHomeRoute(address))
        for binding in removed:
            care_of = IPv4Address(binding.care_of_address)
            tunnel = _tunnel_end(binding)
            intents.append(ReleaseTunnel(tunnel[0], tunnel[1]))
            if self._revocations.negotiated:
                self._revoke(binding, reason)
            self._event(BindingRemoved(address, care_of, binding.mobile_node, reason, nai))
        if remaining:
            return
        intents.append(ProxyArp(address, False))
        if at_home:
            intents.append(GratuitousArp(address, for_mobile_node=True))
        self._release_address(name, home)
        if name in self._subscribers and reason is not RemovalReason.REPLACED:
            self._forget_subscriber(name)

    def _nai(self, binding: Binding) -> str | None:
        node = self.node(binding.mobile_node)
        return node.nai if node is not None else None

    def _release_address(self, name: str, home: int) -> None:
        state = self._nodes.get(name)
        if state is None or state.assigned != home:
            return
        state.assigned = None
        self._by_assigned.pop(home, None)
        node = self.node(name)
        pool = self._pools.get(node.address_pool or "") if node is not None else None
        if pool is not None:
            pool.release(home)

    # --- RFC 3543 registration revocation ---------------------------------------------------------

    def _negotiate(self, verdict: Accept, key: int, source: int) -> None:
        """Remember (or forget) that this binding's foreign agent negotiated revocation."""
        offered = verdict.revocation
        if offered is None:
            self._revocations.negotiated.pop(key, None)
            return
        for extension in verdict.request.extensions:  # the agent's own extension: its timestamp
            if type(extension) is type(offered):
                self._revocations.negotiated[key] = Negotiated(
                    ipv4(source >> 16),
                    extension.timestamp,
                    offered.timestamp,
                    bool(offered.flags & offered.I_BIT),
                )
                return

    def revocation_record(self, binding: Binding) -> dict | None:
        """The binding's RFC 3543 negotiation as plain values (for the journal), or None."""
        negotiated = self._revocations.negotiated.get(make_key(binding.home_address, binding.care_of_address))
        if negotiated is None:
            return None
        return {
            "foreign_agent": str(negotiated.foreign_agent),
            "fa_timestamp": negotiated.fa_timestamp,
            "ha_timestamp": negotiated.ha_timestamp,
            "inform": negotiated.inform,
        }

    def _restore_revocation(self, key: int, record: object) -> None:
        """Take back a journaled negotiation; one that is unreadable or names an agent the configuration
        no longer has is dropped (the binding is then never revoked, it still expires)."""
        if not isinstance(record, dict):
            return
        try:
            agent = IPv4Address(record["foreign_agent"])
            fa_timestamp, ha_timestamp = int(record["fa_timestamp"]), int(record["ha_timestamp"])
            inform = bool(record["inform"])
        except (KeyError, TypeError, ValueError):
            return
        if agent in self._foreign_agents:
            self._revocations.negotiated[key] = Negotiated(agent, fa_timestamp, ha_timestamp, inform)

    def _forget_revocation(self, binding: Binding) -> None:
        self._revocations.negotiated.pop(make_key(binding.home_address, binding.care_of_address), None)

    def _revoke(self, binding: Binding, reason: RemovalReason) -> None:
        """Tell the foreign agent a binding it relayed is gone, when it is our decision (``cleared``)."""
        negotiated = self._revocations.negotiated.pop(
            make_key(binding.home_address, binding.care_of_address), None
        )
        if negotiated is None or reason is not RemovalReason.CLEARED or self.config.home_agent is None:
            return
        agent = self._foreign_agents.get(negotiated.foreign_agent)
        if agent is None or not agent.security_associations:
            self.statistics.revocations_discarded += 1  # no association left to sign with
            return
        ha = self.config.home_agent
        pending = self._revocations.revoke(
            negotiated,
            home_address=ipv4(binding.home_address),
            ha_address=ha.address,
            sa=agent.security_associations[0],
            policy=ha.revocation,
            now=self._now,
            wallclock=self._now + self._wall_offset,
        )
        self.statistics.revocations_sent += 1
        self._datagrams.append(self._to_agent(pending.data, pending.foreign_agent))

    def _to_agent(self, data: bytes, agent: IPv4Address) -> Outgoing:
        ha = self.config.home_agent
        assert ha is not None
        return Outgoing(data, (str(agent), 434), ha.address, self._port)

    def _retransmit_revocations(self, now: float) -> None:
        ha = self.config.home_agent
        if ha is None:
            self._revocations.pending.clear()
            return
        again, exhausted = self._revocations.due(now, ha.revocation)
        self.statistics.revocations_unacknowledged += exhausted
        for pending in again:
            self.statistics.revocations_retransmitted += 1
            self._datagrams.append(self._to_agent(pending.data, pending.foreign_agent))

    def _revocation_message(
        self, data: bytes, source: tuple[str, int], now: float, wallclock: float
    ) -> Outgoing | None:
        """A Registration Revocation (7) or Acknowledgement (15) from a foreign agent (RFC 3543 §4.2)."""
        stats = self.statistics
        agent_ip = IPv4Address(source[0])
        agent = self._foreign_agents.get(agent_ip)
        try:
            message = pull_revocation_ack(data) if data[0] == _REVOCATION_ACK else pull_revocation(data)
        except _RevocationError:
            stats.revocations_discarded += 1
            return None
        if not verify_fa_ha(message, agent):
            stats.revocations_discarded += 1
            return None
        assert agent is not None
        if type(message) is RevocationAck:
            if self._revocations.acknowledged(agent_ip, message.home_address, message.revocation_id):
                stats.revocation_acks_received += 1
            else:
                stats.revocations_discarded += 1
            return None
        if message.home_agent_revoking:  # A set: a home agent's message, not an agent's
            stats.revocations_discarded += 1
            return None
        stats.revocations_received += 1
        home = int(message.home_address)
        negotiated = self._revocations.negotiated
        revoked = [
            b
            for b in self._table.for_home(home)
            if (n := negotiated.get(make_key(home, b.care_of_address))) is not None
            and n.foreign_agent == agent_ip
        ]
        registered = min(
            (negotiated[make_key(home, b.care_of_address)].fa_timestamp for b in revoked), default=0
        )
        if not self._revocations.fresh(agent_ip, message.revocation_id, registered):
            stats.revocations_discarded += 1
            return None
        for binding in revoked:
            negotiated.pop(make_key(home, binding.care_of_address), None)
        if revoked:
            self._now = now
            self._remove_bindings(home, [b.care_of_address for b in revoked], RemovalReason.REVOKED)
        ack = push_revocation_ack(
            RevocationAck(message.home_address, message.revocation_id, False), agent.security_associations[0]
        )
        stats.revocation_acks_sent += 1
        stats.replies_sent += 1
        return Outgoing(ack, source, self.config.home_agent.address, self._port)  # type: ignore[union-attr]

    def drain_datagrams(self) -> list[Outgoing]:
        """Datagrams the engine sends on its own (RFC 3543 revocations), oldest first."""
        datagrams = list(self._datagrams)
        self._datagrams.clear()
        return datagrams

    # --- inputs: time ----------------------------------------------------------------------------

    def get_timer(self, *, settled: bool = True) -> float | None:
        """When ``handle_timer`` must next be called (monotonic), or None when nothing can expire.

        ``settled`` False: a time that may be early (the earliest expiry entry, perhaps of a binding
        renewed since; a ``handle_timer`` then settles it) but never late, without the settling work
        — what a shell that calls this after every burst of renewals wants.
        """
        table = self._table
        due = table.next_expiry() if settled else table.earliest_entry()
        if self._revocations.pending:
            resend = self._revocations.next_due()
            if resend is not None and (due is None or resend < due):
                due = resend
        return None if due is None else due + _TIMER_SLACK

    def handle_timer(self, now: float, *, limit: int | None = None) -> int:
        """Expire bindings whose lifetime has run out by ``now`` (earliest first); returns how many.

        With ``limit`` at most that many are expired; ``get_timer()`` then still returns a due time,
        so a shell can interleave a mass expiry with other work instead of blocking on it.
        """
        self._now = now
        count = 0
        if self._revocations.pending:
            self._generation += 1
            self._retransmit_revocations(now)
        if limit is not None and limit <= 0:
            return 0
        for binding in self._table.pop_expired(now):  # (settling renewed bindings' entries changes nothing)
            self._generation += 1
            self._after_removal(binding.home_address, [binding], RemovalReason.EXPIRED)
            count += 1
            if count == limit:
                break
        return count

    # --- AAA (ha/engine/aaa.py) -------------------------------------------------------------------

    def _aaa_gate(
        self,
        data: bytes,
        request: RegistrationRequest,
        node: EngineNode | None,
        peer: _Peer,
        source: tuple[str, int],
        received_on: IPv4Address,
        port: int,
        now: float,
    ) -> Outgoing | Literal[False] | None:
        """False: decide locally.  Else the request waits for (or starts) a RADIUS look-up: None, or a
        denial when it cannot be looked up."""
        nai = request.nai
        if nai is None or self._aaa_verified == nai:
            return False  # RADIUS needs an NAI; or it just answered for this one
        mn_aaa = mn_aaa_extension(request) is not None
        if node is not None:
            if not mn_aaa:
                return False  # cached: decided with its key (only MN-AAA needs RADIUS every time)
        elif request.lifetime == 0 and not mn_aaa:
            return False  # nothing to deregister: decide() answers 131
        counters = self.aaa_counters
        pending = self._aaa_pending.get(nai)
        if pending is not None:
            counters.absorbed += 1
            if not pending.mn_aaa:  # answer the latest (MN-AAA: the one whose CHAP RADIUS checks)
                pending.data, pending.request, pending.source, pending.received_on, pending.port = (
                    data,
                    request,
                    source,
                    received_on,
                    port,
                )
            return None
        chap = None
        if mn_aaa:
            try:
                chap = chap_credentials(request)
            except MnAaaUnusable as exc:
                return self._aaa_deny(request, peer, ReplyCode.MN_FAILED_AUTHENTICATION, str(exc), True)
        if self._aaa_unreachable is not None:  # known before asking: deny now, in this burst
            counters.unavailable += 1
            return self._aaa_deny(
                request, peer, ReplyCode.INSUFFICIENT_RESOURCES, self._aaa_unreachable, False
            )
        if len(self._aaa_pending) >= self._aaa_max_pending:
            counters.overflows += 1
            return self._aaa_deny(
                request, peer, ReplyCode.INSUFFICIENT_RESOURCES, "too many AAA look-ups pending", False
            )
        self._aaa_pending[nai] = Pending(data, request, source, received_on, port, mn_aaa, now)
        home = request.home_address
        self._aaa_lookups.append(AaaLookup(nai, None if request.integers[0] == 0 else home, chap))
        counters.lookups += 1
        return None

    def _aaa_deny(
        self, request: RegistrationRequest, peer: _Peer, code: ReplyCode, reason: str, violation: bool
    ) -> Outgoing:
        """A denial without a key to sign it (RFC 5944 §3.8.3.1: an unauthenticated 131 is unsigned)."""
        mn_ha = request.mn_ha_auth
        extension = mn_ha if mn_ha is not None else mn_aaa_extension(request)
        verdict = Deny(
            request,
            code,
            reason,
            request.identification,
            request.home_agent,
            None,
            None,
            SecurityViolation.OTHER if violation else None,
            extension.spi if extension is not None else None,
        )
        self._count_denial(verdict, peer.arrival, self._now + self._wall_offset)
        return self._send(encode_reply(verdict), peer)

    def set_aaa_unreachable(self, reason: str | None) -> None:
        """The shell knows no RADIUS server can be asked now (each failed and waits for a Status-Server
        answer): new look-ups are denied 130 at once instead of becoming look-ups; None: ask again."""
        self._aaa_unreachable = reason

    def next_aaa_lookup(self) -> AaaLookup | None:
        """The next RADIUS look-up to make; None when drained."""
        return self._aaa_lookups.popleft() if self._aaa_lookups else None

    def drain_aaa_lookups(self) -> list[AaaLookup]:
        lookups = list(self._aaa_lookups)
        self._aaa_lookups.clear()
        return lookups

    @property
    def aaa_pending(self) -> int:
        """Registrations waiting for RADIUS."""
        return len(self._aaa_pending)

    @property
    def aaa_subscribers(self) -> int:
        """AAA-learnt mobile nodes in the cache."""
        return len(self._subscribers)

    def handle_aaa_answer(
        self, nai: str, outcome: AaaOutcome, *, now: float, wallclock: float
    ) -> Outgoing | None:
        """RADIUS answered (or every server timed out) for ``nai``: decide the waiting request."""
        pending = self._aaa_pending.pop(nai, None)
        if pending is None:
            return None  # cleared meanwhile
        self._generation += 1
        self._now = now
        self._wall_offset = wallclock - now
        counters = self.aaa_counters
        if type(outcome) is AaaAccepted:
            counters.accepted += 1
            refused = self._admit(outcome.profile, wallclock)
            if refused is None:
                return self._replay_pending(nai, pending, now, wallclock)
            code, reason, violation = refused[0], refused[1], False
        elif type(outcome) is AaaRejected:
            counters.rejected += 1
            code, reason, violation = ReplyCode.MN_FAILED_AUTHENTICATION, outcome.reason, True
        else:
            counters.unavailable += 1
            # 130: the home agent lacks a resource it needs for this registration right now (RFC 5944
            # §3.4); the node was not refused by policy (129) nor shown to be unauthentic (131).
            code, reason, violation = ReplyCode.INSUFFICIENT_RESOURCES, outcome.reason, False
        return self._aaa_deny(pending.request, self._peer_for(pending), code, reason, violation)

    def _peer_for(self, pending: Pending) -> _Peer:
        peer = self._peers.get(pending.source)
        if peer is None or peer.port != pending.port or peer.received_on != pending.received_on:
            peer = self._peer(pending.source, pending.received_on, pending.port)
        return peer

    def _replay_pending(self, nai: str, pending: Pending, now: float, wallclock: float) -> Outgoing | None:
        """Decide the waiting request now that its subscriber is known (counted once, on arrival)."""
        stats = self.statistics
        stats.requests_received -= 1
        if len(pending.data) > 4 and pending.data[2:4] == b"\0\0":
            stats.deregistrations_received -= 1
        self._aaa_verified = nai if pending.mn_aaa else None
        try:
            out = self.handle_datagram(
                pending.data,
                source=pending.source,
                received_on=pending.received_on,
                now=now,
                wallclock=wallclock,
                destination_port=pending.port,
                parsed=pending.request,
            )
        finally:
            self._aaa_verified = None
        subscriber = self._subscribers_by_nai.get(nai)
        if subscriber is not None and not self._holds_bindings(subscriber):
            self._forget_subscriber(subscriber.node.name)  # denied: kept only while it has bindings
        return out

    def _holds_bindings(self, subscriber: Subscriber) -> bool:
        state = self._nodes.get(subscriber.node.name)
        return state is not None and state.coas is not None

    def _admit(self, profile: AaaProfile, wallclock: float) -> tuple[ReplyCode, str] | None:
        """Cache what RADIUS granted; (code, reason) when it cannot be used here."""
        name = AAA_NODE_PREFIX + profile.nai
        existing = self._subscribers.get(name)
        home = profile.home_address
        prohibited = ReplyCode.ADMINISTRATIVELY_PROHIBITED
        if home is not None:
            h = int(home)
            owner = self._by_home.get(h) or self._by_assigned.get(h)
            if owner is not None and owner.name != name:
                return prohibited, f"Framed-IP-Address {home} is the home address of {owner.name}"
            if any(home in pool for pool in self.config.address_pools.values()):
                return prohibited, f"Framed-IP-Address {home} lies in an address-pool (use Framed-Pool)"
            if any(b.mobile_node != name for b in self._table.for_home(h)):
                return prohibited, f"Framed-IP-Address {home} is bound to another mobile node"
            if self._policy is not None and h == self._policy.address_integer:
                return prohibited, f"Framed-IP-Address {home} is the home agent's address"
        if existing is None and len(self._subscribers) >= self._aaa_cache_size:
            self.aaa_counters.overflows += 1
            return ReplyCode.INSUFFICIENT_RESOURCES, "the AAA subscriber cache is full"
        if existing is not None:
            subscriber = Subscriber(profile, existing.session, existing.session_start)
            self._subscriber_changed(existing)
        else:
            self._sessions += 1
            session = (int(wallclock) & 0xFFFFFFFF) << 32 | (self._sessions & 0xFFFFFFFF)
            subscriber = Subscriber(profile, session, wallclock)
        self._subscribers[name] = subscriber
        self._subscribers_by_nai[profile.nai] = subscriber
        return None

    def _subscriber_changed(self, subscriber: Subscriber) -> None:
        """RADIUS answered again for a bound subscriber (MN-AAA): its bindings are reported changed,
        not renewed in place, so a journal writes them whole with the new key; a renewal in place
        leaves the subscriber a binding's record carries as it is (a ``renew`` line keeps it)."""
        changed = self._table.changed
        if changed is None:
            return
        home = self._home_of(subscriber, self._nodes.get(subscriber.name))
        if home is not None:
            changed.update(make_key(home, coa) for coa in self._table.care_of_addresses(home))

    def _forget_subscriber(self, name: str) -> None:
        subscriber = self._subscribers.pop(name, None)
        if subscriber is not None:
            self._subscribers_by_nai.pop(subscriber.nai, None)
            state = self._nodes.pop(name, None)
            if state is not None and state.assigned is not None:
                self._by_assigned.pop(state.assigned, None)
            if self._replay_changed is not None:
                self._replay_changed.add(name)

    def _restore_subscriber(self, saved: dict | str) -> bool:
        """``saved`` as journaled (a dict), or a rebuilt router's record (the subscriber's JSON text)."""
        try:
            subscriber = Subscriber.from_dict(json.loads(saved) if isinstance(saved, str) else saved)
        except (KeyError, TypeError, ValueError):
            return False
        self._subscribers[subscriber.node.name] = subscriber
        self._subscribers_by_nai[subscriber.nai] = subscriber
        return True

    def _install_aaa(self, config: VirtualRouterConfig) -> None:
        ha = config.home_agent
        mode = ha.authentication if ha is not None else Authentication.LOCAL
        aaa = config.aaa
        self._aaa_mode = None if mode is Authentication.LOCAL or aaa is None else mode
        if aaa is not None:
            self._aaa_cache_size, self._aaa_max_pending = aaa.cache_size, aaa.max_pending
        if self._aaa_mode is None:  # AAA switched off: its subscribers lose their bindings
            self._aaa_pending.clear()
            self._aaa_lookups.clear()
            for name in list(self._subscribers):
                self._drop_node_bindings(name)
                self._forget_subscriber(name)

    # --- outputs ---------------------------------------------------------------------------------

    def next_intent(self) -> Intent | None:
        """The next data plane intent to carry out, in order; None when drained."""
        return self._intents.popleft() if self._intents else None

    def drain_intents(self) -> list[Intent]:
        """Every queued intent, in order (what a backend's ``apply`` takes as a batch)."""
        intents = list(self._intents)
        self._intents.clear()
        return intents

    def _event(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self.events_dropped += 1  # the oldest one falls off: notifications are best effort
        self._events.append(event)

    def next_event(self) -> Event | None:
        """The next binding / denial event; None when drained (the queue keeps the newest 65536)."""
        return self._events.popleft() if self._events else None

    def drain_events(self) -> list[Event]:
        """Every queued event, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    # --- persistence (the daemon's binding journal) ----------------------------------------------

    def track_changes(self) -> None:
        """Start recording which bindings change, for :meth:`take_binding_changes`."""
        if self._table.changed is None:
            self._table.changed = set()
            self._table.renewed = {}

    def take_changed_bindings(self) -> list[int]:
        """Packed keys ``(home << 32) | care_of`` of bindings added, renewed or removed since the last
        call; :meth:`raw_binding` tells which (None = removed)."""
        changed, renewed = self.take_binding_changes()
        changed.extend(make_key(b.home_address, b.care_of_address) for b in renewed)
        return changed

    def take_binding_changes(self) -> tuple[list[int], list[Binding]]:
        """What changed since the last call: packed keys of bindings added, removed or otherwise
        changed (:meth:`raw_binding` tells which: None = removed), and the bindings only renewed in
        place since — a new registration time, lifetime, Identification, request flags and source,
        nothing else (a journal records just those fields for them)."""
        table = self._table
        changed, renewed = table.changed, table.renewed
        keys = list(changed) if changed else []
        if not renewed:
            if changed:
                changed.clear()
            return keys, []
        assert changed is not None
        if changed:  # added or removed in the same burst: the key's own record covers the renewal
            bindings = [b for k, b in renewed.items() if k not in changed]
            changed.clear()
        else:
            bindings = list(renewed.values())
        renewed.clear()
        return keys, bindings

    def track_replay(self) -> None:
        """Start recording which mobile nodes' replay state changed, or lost a binding that may have
        carried it, for :meth:`take_replay_changes` (hot standby replicates replay state)."""
        if self._replay_changed is None:
            self._replay_changed = set()
            self._table.gone = set()

    def take_replay_changes(self) -> list[tuple[str, ReplayState | None]]:
        """Each node recorded since the last call with its replay state now (None: none or forgotten)."""
        changed, gone = self._replay_changed, self._table.gone
        if not changed and not gone:
            return []
        names = set(changed or ()) | set(gone or ())
        for tracked in (changed, gone):
            if tracked:
                tracked.clear()
        return [(name, self.replay_state(name)) for name in names]

    def replay_state(self, name: str) -> ReplayState | None:
        state = self._nodes.get(name)
        if state is None or (
            state.last_identification is None and state.ha_nonce is None and state.offered_nonce is None
        ):
            return None
        return ReplayState(state.last_identification, state.ha_nonce, state.offered_nonce)

    def carried_nonce(self, binding: Binding) -> int | None:
        """The HA nonce sent with the reply that made ``binding`` (its node's expected nonce), when
        the node's replay state is still the one that binding's request left; else None."""
        state = self._nodes.get(binding.mobile_node)
        if state is None or state.last_identification != binding.identification:
            return None
        return state.ha_nonce

    def restore_replay(self, name: str, replay: ReplayState) -> bool:
        """Install a replicated replay state (hot standby takeover); False for an unknown node."""
        if self.node(name) is None:
            return False
        self._generation += 1
        state = self._state(name)
        state.last_identification = replay.identification
        state.ha_nonce = replay.ha_nonce
        state.offered_nonce = replay.offered_nonce
        return True

    def reset_replay(self) -> None:
        """Forget every node's replay state (before installing the group's: a standby's own is stale)."""
        self._generation += 1
        for state in self._nodes.values():
            state.last_identification = state.ha_nonce = state.offered_nonce = None

    def raw_binding(self, key: int) -> Binding | None:
        """The binding object for a packed key (read-only; see :meth:`raw_bindings_after`)."""
        return self._table.get(key >> 32, key & 0xFFFFFFFF)

    def restore_binding(self, record: BindingSnapshot, *, now: float, wallclock: float) -> bool:
        """Re-create a journaled binding after a restart; False when the configuration disowns it.

        No intents are queued: the caller reconciles the data plane with ``desired_bindings()``.
        The node's replay state resumes from the binding's identification, so a request captured
        before the restart cannot be replayed after it.
        """
        self._now = now
        self._wall_offset = wallclock - now
        self._generation += 1
        aaa = getattr(record, "aaa", None)
        if (
            aaa is not None
            and record.mobile_node not in self._subscribers
            and not self._restore_subscriber(aaa)
        ):
            return False
        node = self.node(record.mobile_node)
        if node is None:
            return False
        home = int(IPv4Address(record.home_address))
        coa = int(IPv4Address(record.care_of_address))
        state = self._state(node.name)
        if node.home_address is not None:
            if int(node.home_address) != home:
                return False
        elif state.assigned != home:
            pool = self._pools.get(node.address_pool or "")
            if state.assigned is not None or pool is None or not pool.claim(home):
                return False
            state.assigned = home
            self._by_assigned[home] = node
        try:
            encapsulation = PlaneEncapsulation(record.encapsulation)
        except ValueError:
            return False
        binding = Binding(
            home,
            coa,
            node.name,
            source=(int(IPv4Address(record.source_address)) << 16) | (record.source_port & 0xFFFF),
            lifetime=record.lifetime,
            registered=now - (wallclock - record.registered_at),
            identification=record.identification,
            flags=record.flags & (0xFF | UDP_TUNNEL),
            encapsulation=encapsulation,
        )
        self._table.add(binding)
        self._set_coas(state, self._table.for_home(home))
        revocation = getattr(record, "revocation", None)
        if revocation is not None:
            self._restore_revocation(make_key(home, coa), revocation)
        if state.last_identification is None or record.identification > state.last_identification:
            state.last_identification = record.identification
        return True

    # --- operational state -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._table)

    @property
    def binding_count(self) -> int:
        return len(self._table)

    def _info(self, binding: Binding, now: float) -> BindingInfo:
        node = self.node(binding.mobile_node)
        subscriber = self._subscribers.get(binding.mobile_node)
        source, port = binding.source_address
        return BindingInfo(
            home_address=IPv4Address(binding.home_address),
            care_of_address=IPv4Address(binding.care_of_address),
            mobile_node=binding.mobile_node,
            nai=node.nai if node is not None else None,
            source_address=source,
            source_port=port,
            lifetime_granted=binding.lifetime,
            lifetime_remaining=binding.remaining(now),
            registered_at=binding.registered + self._wall_offset,
            identification=binding.identification,
            flags=RequestFlags(binding.flags & 0xFF),
            encapsulation=str(binding.encapsulation),
            accepted_no_simultaneous=bool(binding.flags & NO_SIMULTANEOUS),
            authentication="local" if subscriber is None else "aaa",
            key_source=None if subscriber is None else subscriber.key_source,
            address_source=None if subscriber is None else subscriber.address_source,
            udp_tunnel=bool(binding.flags & UDP_TUNNEL),
            revocation=make_key(binding.home_address, binding.care_of_address)
            in self._revocations.negotiated,
        )

    def binding(
        self, key: tuple[IPv4Address, IPv4Address], *, now: float | None = None
    ) -> BindingInfo | None:
        """One binding by its YANG key ``(home-address, care-of-address)`` (a keyed ``<get>``)."""
        found = self._table.get(int(key[0]), int(key[1]))
        return None if found is None else self._info(found, self._now if now is None else now)

    def bindings_after(
        self,
        key: tuple[IPv4Address, IPv4Address] | None = None,
        limit: int = 100,
        *,
        now: float | None = None,
    ) -> list[BindingInfo]:
        """Up to ``limit`` bindings after ``key`` in key order; resume with the last key returned."""
        packed = None if key is None else make_key(int(key[0]), int(key[1]))
        when = self._now if now is None else now
        return [self._info(b, when) for b in self._table.after(packed, limit)]

    def raw_bindings_after(self, key: int | None, limit: int) -> list[Binding]:
        """The binding objects themselves after packed key ``(home << 32) | care_of``, in key order.

        For bulk serialisers (a ``<get>`` of every binding) that cannot afford a :class:`BindingInfo`
        per entry: treat them as read-only and do not hold them across a yield.  ``registered`` is
        monotonic: add :attr:`wall_offset` for Unix time.
        """
        return self._table.after(key, limit)

    def raw_binding_pages(self, page: int = 1024) -> Iterator[list[Binding]]:
        """Every binding object in key order, in pages each fetched after the previous page's last
        key (see above): the table may change between pages."""
        after = None
        while True:
            batch = self._table.after(after, page)
            if batch:
                yield batch
            if len(batch) < page:
                return
            after = (batch[-1].home_address << 32) | batch[-1].care_of_address

    @property
    def wall_offset(self) -> float:
        """Unix time minus monotonic time, as last seen by the engine."""
        return self._wall_offset

    def bindings_of(self, home_address: IPv4Address, *, now: float | None = None) -> list[BindingInfo]:
        """Every binding of one home address (its care-of addresses, ascending)."""
        when = self._now if now is None else now
        return [self._info(b, when) for b in self._table.for_home(int(home_address))]

    def desired_bindings(self) -> Iterator[DesiredBinding]:
        """What the data plane must hold, one entry per bound home address in key order.

        The input of ``DataPlane.resync`` after a backend restart (or to repair drift): it restates
        the effect of every intent emitted so far.  The encapsulation is that of the first binding.
        """
        return self._grouped(self._table)

    @classmethod
    def _grouped(cls, bindings: Iterable[Binding]) -> Iterator[DesiredBinding]:
        """One DesiredBinding per home address of ``bindings`` (in key order)."""
        group: list[Binding] = []
        for binding in bindings:
            if group and group[0].home_address != binding.home_address:
                yield cls._desired(group)
                group = []
            group.append(binding)
        if group:
            yield cls._desired(group)

    @staticmethod
    def _desired(group: list[Binding]) -> DesiredBinding:
        ends = [_tunnel_end(b) for b in group]
        return DesiredBinding(
            IPv4Address(group[0].home_address),
            tuple(e[0] for e in ends),
            ends[0][1],
            any(b.flags & _T_BIT for b in group),
            ends[0][2],
        )

    @classmethod
    def desired_of(cls, records: Iterable[BindingSnapshot]) -> list[DesiredBinding]:
        """What :meth:`desired_bindings` would give once ``records`` are restored, without an engine
        or a configuration (a hot standby programs its kernel from the group's copy with it)."""
        bindings = sorted(
            (
                Binding(
                    int(IPv4Address(r.home_address)),
                    int(IPv4Address(r.care_of_address)),
                    r.mobile_node,
                    source=(int(IPv4Address(r.source_address)) << 16) | (r.source_port & 0xFFFF),
                    lifetime=r.lifetime,
                    registered=0.0,
                    identification=r.identification,
                    flags=r.flags & (0xFF | UDP_TUNNEL),
                    encapsulation=PlaneEncapsulation(r.encapsulation),
                )
                for r in records
            ),
            key=lambda b: (b.home_address << 32) | b.care_of_address,
        )
        return list(cls._grouped(bindings))

    def pool_usage(self, name: str) -> PoolUsage | None:
        pool = self._pools.get(name)
        return None if pool is None else PoolUsage(pool.size, pool.in_use, pool.free)

    def gratuitous_arp_sent(self, intent: object = None) -> None:
        """The data plane sent (the first frame of) a gratuitous ARP burst: count it."""
        self.statistics.gratuitous_arps_sent += 1

    def node_statistics(self, name: str) -> tuple[int, int, int | None, float | None] | None:
        """A mobile node's ``statistics``: accepted, denied, last reply code, last request time (Unix);
        None before its first request."""
        state = self._nodes.get(name)
        if state is None:
            return None
        return state.accepted, state.denied, state.last_reply_code, state.last_request_time

    def assigned_address(self, name: str) -> IPv4Address | None:
        """The pool address currently assigned to a mobile node, if any."""
        state = self._nodes.get(name)
        return IPv4Address(state.assigned) if state is not None and state.assigned is not None else None

    # --- RPCs ------------------------------------------------------------------------------------

    def clear_bindings(
        self,
        *,
        home_address: IPv4Address | None = None,
        nai: str | None = None,
        care_of_address: IPv4Address | None = None,
    ) -> int:
        """The ``clear-bindings`` RPC: remove matching bindings (all when no filter); returns the count."""
        self._generation += 1
        if nai is not None:
            node = self._by_nai.get(nai)
            if node is None and nai in self._subscribers_by_nai:
                node = self._subscribers_by_nai[nai].node
            home = self._home_of(node, self._nodes.get(node.name)) if node is not None else None
            if home is None or (home_address is not None and int(home_address) != home):
                return 0
            homes = [home]
        elif home_address is not None:
            homes = [int(home_address)]
        else:
            homes = sorted({b.home_address for b in self._table})
        count = 0
        for home in homes:
            coas = self._table.care_of_addresses(home)
            if care_of_address is not None:
                coas = [c for c in coas if c == int(care_of_address)]
            count += self._remove_bindings(home, coas, RemovalReason.CLEARED)
        return count

    def clear_bindings_page(
        self,
        *,
        before: float,
        after: int | None,
        limit: int,
        care_of_address: IPv4Address | None = None,
    ) -> tuple[int, int | None]:
        """One page of a ``clear-bindings`` of the whole table (or of every binding to
        ``care_of_address``), so that the shell can let registrations run between pages: of the next
        ``limit`` bindings in key order after key ``after``, clear those last registered or renewed
        before ``before`` (engine time: when the clear began).  A binding registered or renewed since
        is the answer to a request that came after the clear began, and stays.  Returns how many were
        cleared and the key to go on after (None: the table's end)."""
        self._generation += 1
        page = self._table.after(after, limit)
        coa = int(care_of_address) if care_of_address is not None else None
        count, home = 0, -1
        group: list[int] = []
        for b in page:
            if b.registered >= before or (coa is not None and b.care_of_address != coa):
                continue
            if b.home_address != home:
                if group:
                    count += self._remove_bindings(home, group, RemovalReason.CLEARED)
                home, group = b.home_address, []
            group.append(b.care_of_address)
        if group:
            count += self._remove_bindings(home, group, RemovalReason.CLEARED)
        last = page[-1] if len(page) == limit else None
        return count, None if last is None else make_key(last.home_address, last.care_of_address)

    def clear_statistics(self, *, wallclock: float | None = None) -> None:
        """The ``clear-statistics`` RPC (the violation ring is kept: it is a log, not a counter; the
        per-peer violation totals are counters and restart).

        ``wallclock`` (Unix time of the reset) becomes the YANG ``discontinuity-time``.
        """
        self.statistics.clear(wallclock)
        self.violations.peers.clear()

    # --- configuration transactions --------------------------------------------------------------

    def prepare(self, config: VirtualRouterConfig) -> Prepared:
        """Check a new configuration against the live state; raise ConfigRefused, change nothing."""
        return self._check_capabilities(prepare_config(self, config))

    # --- data plane capabilities ---------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def set_capabilities(self, capabilities: Capabilities) -> None:
        """Decide from now on within what this data plane can do (the daemon calls it with its backend's)."""
        self._capabilities = capabilities
        self._generation += 1
        if self._configured_policy is not None:
            self._policy = self._capable(self._configured_policy)
        self._peers.clear()

    def _capable(self, policy: HomeAgentPolicy) -> HomeAgentPolicy:
        """The configured policy narrowed to the data plane's capabilities (defects 3/4 of issue 11)."""
        caps = self._capabilities
        offered = frozenset(e for e in policy.encapsulations if e.value in _values(caps.encapsulations))
        changes: dict[str, object] = {}
        if offered != policy.encapsulations:
            changes["encapsulations"] = offered
        if not caps.simultaneous_bindings and policy.simultaneous_bindings:
            changes["simultaneous_bindings"] = 0  # S answered with code 1 (RFC 5944 §3.8.2.2)
        if not caps.reverse_tunnel and policy.reverse_tunnel is not ReverseTunnelPolicy.DISABLED:
            changes["reverse_tunnel"] = ReverseTunnelPolicy.DISABLED
        ha = self.config.home_agent
        if ha is not None and not ha.enabled:
            changes["enabled"] = False  # draining (YANG home-agent/enabled)
        return replace(policy, **changes) if changes else policy  # type: ignore[arg-type]

    def check_capabilities(self) -> None:
        """Raise ConfigRefused when the running configuration asks for what the data plane cannot do
        (the daemon calls it when a virtual router starts, once it knows its backend)."""
        if self._configured_policy is not None:
            self._refuse_unavailable(self._configured_policy, self.config.name)

    def _check_capabilities(self, txn: Prepared) -> Prepared:
        """Refuse at commit an encapsulation no data plane builds (RFC 2004 minimal: none does)."""
        if txn.policy is not None:
            self._refuse_unavailable(txn.policy, txn.config.name)
        return txn

    def _refuse_unavailable(self, policy: HomeAgentPolicy, router: str) -> None:
        built = _values(self._capabilities.encapsulations)
        missing = sorted(e.value for e in policy.encapsulations if e.value not in built)
        if missing:
            raise ConfigRefused(
                f"encapsulation {', '.join(missing)} is not available in this data plane "
                f"(it builds {', '.join(sorted(built))})",
                path=f"/mipha:virtual-routers/virtual-router[name='{router}']/home-agent/encapsulation",
                app_tag="encapsulation-unavailable",
            )

    def data_plane_failed(self, intents: Iterable[Intent], error: str) -> int:
        """The data plane refused ``intents`` after their replies left: withdraw every binding they were
        for (reason ``data-plane-failure``), count it, return how many were withdrawn.

        The mobile node was told code 0; a binding that forwards nothing would black-hole its traffic
        until it expires, so the home agent drops it and says so (``binding-removed`` notification);
        the node re-registers and gets a fresh answer.
        """
        self._generation += 1
        homes = {
            int(intent.home_address)
            for intent in intents
            if isinstance(intent, (SetHomeRoute, ProxyArp, GratuitousArp)) and intent.home_address is not None
        }
        coas = {int(intent.care_of_address) for intent in intents if isinstance(intent, EnsureTunnel)}
        for coa in coas:  # a tunnel that failed takes every binding through it
            homes.update(b.home_address for b in self._table if b.care_of_address == coa)
        withdrawn = 0
        for home in sorted(homes):
            withdrawn += self._remove_bindings(
                home, self._table.care_of_addresses(home), RemovalReason.DATA_PLANE_FAILURE
            )
        self.statistics.data_plane_failures += 1
        log.error("data plane failed (%s): %d binding(s) withdrawn", error, withdrawn)
        return withdrawn

    def abort(self, txn: Prepared) -> None:
        """Forget a prepared change.  Nothing was reserved, so there is nothing to release."""
        txn.aborted = True

    def apply(self, txn: Prepared) -> None:
        """Switch to the prepared configuration.  Never raises on a prepared transaction.

        Bindings keep what they were granted; only mobile nodes that were removed or whose home
        address changed lose their bindings (reason ``cleared``).
        """
        if txn.aborted:
            raise ValueError("this transaction was aborted")
        self._generation += 1
        for name in txn.drop_nodes:
            self._drop_node_bindings(name)
        for name in txn.forget_nodes:
            self._nodes.pop(name, None)
            if self._replay_changed is not None:
                self._replay_changed.add(name)
        if txn.entries is not None:
            self._install_entries(txn, txn.entries)
        else:
            self._install(txn)

    def prepare_change(self, change: ConfigChange) -> Prepared:
        """Check a keyed change against the live state; raise ConfigRefused, change nothing.

        A change of mobile nodes and foreign agents costs what it touches (see ``prepare_change``
        in :mod:`ha.engine.transaction`); others are checked as a whole new configuration."""
        return self._check_capabilities(prepare_change(self, change))

    def _install_entries(self, txn: Prepared, update: EntryUpdate) -> None:
        """Apply a keyed change to the indexes in place: the node map shared with ``config``, by home
        address, by NAI, by assigned address, the nonce set."""
        nodes, by_home, by_nai = self._node_map, self._by_home, self._by_nai
        for home in update.homes_gone:
            by_home.pop(home, None)
        for nai in update.nais_gone:
            by_nai.pop(nai, None)
        by_home.update(txn.by_home)
        by_nai.update(txn.by_nai)
        self._by_assigned.update(update.assigned)
        nonce = self._nonce_nodes
        for name, node in update.nodes.items():
            if node is None:
                nodes.pop(name, None)
                nonce.discard(name)
                continue
            nodes[name] = node
            if _uses_nonces(node):
                nonce.add(name)
            else:
                nonce.discard(name)
        if update.foreign_agents:
            self.config = txn.config
            self._foreign_agents = txn.foreign_agents
            self._peers.clear()  # they hold foreign agent records
        if update.settings:  # the router's own settings: policy, port, AAA (the entry maps are shared)
            self.config = txn.config
            self._peers.clear()  # they hold the policy's address
            self._configured_policy = txn.policy
            self._policy = self._capable(txn.policy) if txn.policy is not None else None
            self._port = txn.port
            self._install_aaa(txn.config)

    def _drop_node_bindings(self, name: str) -> None:
        node = self.node(name)
        if node is None:
            return
        state = self._nodes.get(name)
        home = self._home_of(node, state)
        if home is not None:
            self._remove_bindings(home, self._table.care_of_addresses(home), RemovalReason.CLEARED)
        if state is not None and state.assigned is not None:
            self._release_address(name, state.assigned)

    def _install(self, txn: Prepared) -> None:
        for name, state in self._nodes.items():  # a node that changes pool gives its address back
            before = self.config.mobile_nodes.get(name)
            after = txn.config.mobile_nodes.get(name)
            if (
                state.assigned is not None
                and before is not None
                and after is not None
                and before.address_pool != after.address_pool
                and before.address_pool in self._pools
            ):
                self._pools[before.address_pool].release(state.assigned)
        # the engine's own node map, shared by its later configurations and updated in place by keyed
        # changes (_install_entries)
        self._node_map = dict(txn.config.mobile_nodes)
        self.config = replace(txn.config, mobile_nodes=MappingProxyType(self._node_map))
        self._peers.clear()  # they hold the policy's address and foreign agent records
        self._configured_policy = txn.policy
        self._policy = self._capable(txn.policy) if txn.policy is not None else None
        self._port = txn.port
        self._by_home = txn.by_home
        self._by_nai = txn.by_nai
        self._foreign_agents = txn.foreign_agents
        self._nonce_nodes = {name for name, node in self._node_map.items() if _uses_nonces(node)}
        pools: dict[str, PoolAllocator] = {}
        for name, pool_config in txn.config.address_pools.items():
            old = self._pools.get(name)
            pools[name] = old if old is not None and old.config == pool_config else PoolAllocator(pool_config)
        reused = {id(p) for p in pools.values() if p in self._pools.values()}
        self._pools = pools
        self._by_assigned = {}
        lost: list[str] = []
        for name, state in self._nodes.items():
            if state.assigned is None:
                continue
            node = txn.config.mobile_nodes.get(name) or self.node(name)
            pool = pools.get(node.address_pool or "") if node is not None else None
            kept = pool is not None and id(pool) in reused and pool.is_allocated(state.assigned)
            if kept or (pool is not None and pool.claim(state.assigned)):
                assert node is not None  # a pool was found through it
                self._by_assigned[state.assigned] = node
            else:
                lost.append(name)
        for name in lost:  # assigned after prepare() to an address the new pool lacks: drop it
            state = self._nodes[name]
            home = state.assigned
            assert home is not None
            state.assigned = None
            coas = self._table.care_of_addresses(home)
            removed = [b for b in (self._table.remove(home, c) for c in coas) if b is not None]
            if removed:
                self._after_removal(home, removed, RemovalReason.CLEARED)
        if self._policy is None:
            self.clear_bindings()
        self._install_aaa(txn.config)
