"""Typed, frozen configuration of one virtual router, mirroring the ``mipha-home-agent`` YANG contract.

The NETCONF glue builds these objects from the validated datastore; the engine never sees XML.  Field
names follow the YANG leaf names (``max-lifetime`` → ``max_lifetime``) and defaults are the YANG
defaults, so a test can build a configuration with a few keyword arguments.  Objects check only what
YANG cannot express or what the engine relies on; everything else is libyang's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from itertools import pairwise
from types import MappingProxyType
from typing import Protocol

from ha.aaa.config import AaaConfig, Authentication
from ha.protocol.auth import SecurityAssociation
from ha.protocol.constants import (
    REGISTRATION_PORT,
    AuthAlgorithm,
    Encapsulation,
    ReplayProtection,
    ReverseTunnelPolicy,
)
from ha.protocol.revocation import RevocationPolicy
from ha.protocol.udp_tunnel import NatTraversalPolicy

__all__ = [
    "AddressPool",
    "AuthAlgorithm",
    "ConfigChange",
    "Encapsulation",
    "ForeignAgent",
    "HomeAgentConfig",
    "MobileNode",
    "NatTraversalPolicy",
    "ReplayProtection",
    "ReverseTunnelPolicy",
    "RevocationPolicy",
    "RouterSettings",
    "SecurityAssociation",
    "SpiMap",
    "VirtualRouterConfig",
]

DEFAULT_MAX_LIFETIME = 36000
_NAT_DEFAULT = NatTraversalPolicy()
_REVOCATION_DEFAULT = RevocationPolicy()
DEFAULT_REPLAY_TOLERANCE = 7


def _frozen_map(items: Mapping | Iterable, key: str) -> Mapping:
    """Accept a mapping or an iterable of objects keyed by attribute ``key``; return a read-only map.

    A read-only view is kept as it is: the engine shares its mobile-node map between successive
    configurations instead of copying 100k entries per change (see :class:`ConfigChange`)."""
    if isinstance(items, MappingProxyType):
        return items
    if isinstance(items, Mapping):
        mapping = dict(items)
    else:
        mapping = {}
        for item in items:
            item_key = getattr(item, key)
            if item_key in mapping:
                raise ValueError(f"duplicate {key} {item_key}")
            mapping[item_key] = item
    return MappingProxyType(mapping)


class SpiMap(Mapping):
    """Security associations by SPI, read-only, held as the tuple they were configured in: a mobile
    node has one or two, and a tuple costs a fraction of a dict behind a mapping proxy (100k nodes)."""

    __slots__ = ("associations",)

    def __init__(self, associations: Iterable[SecurityAssociation] = ()) -> None:
        associations = tuple(associations)
        if len(associations) > 1:
            spis = [sa.spi for sa in associations]
            if len(set(spis)) != len(spis):
                raise ValueError(f"duplicate spi in {sorted(spis)}")
        self.associations = associations

    def __getitem__(self, spi: int) -> SecurityAssociation:
        for sa in self.associations:
            if sa.spi == spi:
                return sa
        raise KeyError(spi)

    def __iter__(self) -> Iterator[int]:
        return (sa.spi for sa in self.associations)

    def __len__(self) -> int:
        return len(self.associations)

    def __repr__(self) -> str:
        return f"SpiMap({self.associations!r})"


def _associations(items: Mapping | Iterable) -> SpiMap:
    kind = type(items)
    if kind is SpiMap:
        return items  # type: ignore[return-value]
    if kind is list or kind is tuple or not isinstance(items, Mapping):
        return SpiMap(items)
    return SpiMap(items.values())


@dataclass(frozen=True, slots=True, eq=True)
class AddressPool:
    """A dynamic home address pool (``address-pool``): inclusive ranges minus excluded addresses."""

    name: str
    ranges: tuple[tuple[IPv4Address, IPv4Address], ...] = ()
    excludes: frozenset[IPv4Address] = frozenset()

    def __post_init__(self) -> None:
        ranges = tuple(sorted((IPv4Address(a), IPv4Address(b)) for a, b in self.ranges))
        for start, end in ranges:
            if start > end:
                raise ValueError(f"pool {self.name}: range start {start} is after its end {end}")
        for (_, previous_end), (start, _) in pairwise(ranges):
            if start <= previous_end:
                raise ValueError(f"pool {self.name}: range starting {start} overlaps the previous one")
        object.__setattr__(self, "ranges", ranges)
        object.__setattr__(self, "excludes", frozenset(IPv4Address(a) for a in self.excludes))

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, IPv4Address) or address in self.excludes:
            return False
        return any(start <= address <= end for start, end in self.ranges)

    @property
    def size(self) -> int:
        """Addresses that can be handed out (YANG ``size``)."""
        total = sum(int(end) - int(start) + 1 for start, end in self.ranges)
        return total - sum(1 for address in self.excludes if self._in_ranges(address))

    def _in_ranges(self, address: IPv4Address) -> bool:
        return any(start <= address <= end for start, end in self.ranges)


@dataclass(frozen=True, slots=True, eq=True)
class MobileNode:
    """A mobile node (JUNOSe ``ip mobile host``): exactly one of ``home_address`` / ``address_pool``.

    ``max_lifetime``, ``reverse_tunnel`` and ``care_of_access`` are per-host overrides; ``None`` /
    empty means "use the home agent's setting".
    """

    name: str
    home_address: IPv4Address | None = None
    address_pool: str | None = None
    nai: str | None = None
    max_lifetime: int | None = None
    reverse_tunnel: ReverseTunnelPolicy | None = None
    care_of_access: tuple[IPv4Network, ...] = ()
    security_associations: Mapping[int, SecurityAssociation] = field(default_factory=dict)
    #: The associations as a tuple, in configuration order: what ``MobileNodeRecord`` takes, derived
    #: once here instead of for every request.
    association_tuple: tuple[SecurityAssociation, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.home_address is None) == (self.address_pool is None):
            raise ValueError(f"mobile node {self.name}: exactly one of home-address and address-pool")
        if self.address_pool is not None and self.nai is None:
            raise ValueError(f"mobile node {self.name}: an address-pool needs an NAI (RFC 2794)")
        if self.home_address is not None and type(self.home_address) is not IPv4Address:
            object.__setattr__(self, "home_address", IPv4Address(self.home_address))
        if self.reverse_tunnel is not None:
            object.__setattr__(self, "reverse_tunnel", ReverseTunnelPolicy(self.reverse_tunnel))
        coas = self.care_of_access
        if coas and (type(coas) is not tuple or any(type(p) is not IPv4Network for p in coas)):
            object.__setattr__(self, "care_of_access", tuple(IPv4Network(p) for p in coas))
        associations = _associations(self.security_associations)
        object.__setattr__(self, "security_associations", associations)
        object.__setattr__(self, "association_tuple", associations.associations)

    __hash__ = None  # type: ignore[assignment]  # holds a mapping


class EngineNode(Protocol):
    """What the engine reads of a mobile node: a configured :class:`MobileNode` or an AAA-learnt
    ``ha.engine.aaa.Subscriber`` (same attribute names)."""

    @property
    def name(self) -> str: ...
    @property
    def home_address(self) -> IPv4Address | None: ...
    @property
    def address_pool(self) -> str | None: ...
    @property
    def nai(self) -> str | None: ...
    @property
    def max_lifetime(self) -> int | None: ...
    @property
    def reverse_tunnel(self) -> ReverseTunnelPolicy | None: ...
    @property
    def care_of_access(self) -> tuple[IPv4Network, ...]: ...
    @property
    def security_associations(self) -> Mapping[int, SecurityAssociation]: ...
    @property
    def association_tuple(self) -> tuple[SecurityAssociation, ...]: ...


@dataclass(frozen=True, slots=True, eq=True)
class ForeignAgent:
    """A foreign agent the home agent shares security associations with (ext 34 required)."""

    address: IPv4Address
    security_associations: Mapping[int, SecurityAssociation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", IPv4Address(self.address))
        object.__setattr__(self, "security_associations", _associations(self.security_associations))

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True, eq=True)
class HomeAgentConfig:
    """The ``home-agent`` presence container: the feature is on in this virtual router.

    ``home_prefix`` is not a YANG leaf: it is the home link's prefix (read from ``home-interface`` by
    the glue), needed to recognise subnet-directed broadcast discovery requests (code 136).
    """

    address: IPv4Address
    home_interface: str | None = None
    udp_port: int = REGISTRATION_PORT
    max_lifetime: int = DEFAULT_MAX_LIFETIME
    replay_tolerance: int = DEFAULT_REPLAY_TOLERANCE
    reverse_tunnel: ReverseTunnelPolicy = ReverseTunnelPolicy.ALLOWED
    encapsulations: frozenset[Encapsulation] = frozenset({Encapsulation.IP_IN_IP})
    simultaneous_bindings: int = 0
    max_bindings: int | None = None
    care_of_access: tuple[IPv4Network, ...] = ()
    home_prefix: IPv4Network | None = None
    authentication: Authentication = Authentication.LOCAL
    nat_traversal: NatTraversalPolicy = _NAT_DEFAULT  # RFC 3519
    revocation: RevocationPolicy = _REVOCATION_DEFAULT  # RFC 3543
    #: False = drain for maintenance: registrations and renewals denied 129, bindings kept until they go.
    enabled: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", IPv4Address(self.address))
        object.__setattr__(self, "authentication", Authentication(self.authentication))
        if not 5 <= self.max_lifetime <= 0xFFFF:
            raise ValueError(f"max-lifetime {self.max_lifetime} is outside 5..65535")
        if not 1 <= self.replay_tolerance <= 255:
            raise ValueError(f"replay-tolerance {self.replay_tolerance} is outside 1..255")
        if not 0 <= self.simultaneous_bindings <= 8:
            raise ValueError(f"simultaneous-bindings {self.simultaneous_bindings} is outside 0..8")
        if not 0 <= self.udp_port <= 0xFFFF:
            raise ValueError(f"udp-port {self.udp_port} is outside 0..65535")
        object.__setattr__(self, "reverse_tunnel", ReverseTunnelPolicy(self.reverse_tunnel))
        encapsulations = frozenset(Encapsulation(e) for e in self.encapsulations)
        object.__setattr__(self, "encapsulations", encapsulations or frozenset({Encapsulation.IP_IN_IP}))
        object.__setattr__(self, "care_of_access", tuple(IPv4Network(p) for p in self.care_of_access))
        if self.home_prefix is not None:
            object.__setattr__(self, "home_prefix", IPv4Network(self.home_prefix, strict=False))


@dataclass(frozen=True, slots=True, eq=True)
class VirtualRouterConfig:
    """One ``virtual-router`` list entry; ``home_agent`` None = the feature is off in this VR."""

    name: str
    netns: str | None = None
    router_id: IPv4Address | None = None
    home_agent: HomeAgentConfig | None = None
    address_pools: Mapping[str, AddressPool] = field(default_factory=dict)
    mobile_nodes: Mapping[str, MobileNode] = field(default_factory=dict)
    foreign_agents: Mapping[IPv4Address, ForeignAgent] = field(default_factory=dict)
    aaa: AaaConfig | None = None

    def __post_init__(self) -> None:
        if self.router_id is not None:
            object.__setattr__(self, "router_id", IPv4Address(self.router_id))
        object.__setattr__(self, "address_pools", _frozen_map(self.address_pools, "name"))
        object.__setattr__(self, "mobile_nodes", _frozen_map(self.mobile_nodes, "name"))
        object.__setattr__(self, "foreign_agents", _frozen_map(self.foreign_agents, "address"))

    __hash__ = None  # type: ignore[assignment]

    @property
    def namespace(self) -> str | None:
        """The Linux network namespace: None for VR ``default``, else ``netns`` or ``mipha-<name>``."""
        if self.netns is not None:
            return self.netns
        return None if self.name == "default" else f"mipha-{self.name}"

    @property
    def settings(self) -> RouterSettings:
        return RouterSettings(self.netns, self.router_id, self.home_agent, self.aaa)


@dataclass(frozen=True, slots=True, eq=True)
class RouterSettings:
    """A virtual router's own settings, what is not a list entry: ``netns``, ``router-id``,
    ``home-agent``, ``aaa``."""

    netns: str | None = None
    router_id: IPv4Address | None = None
    home_agent: HomeAgentConfig | None = None
    aaa: AaaConfig | None = None


def merged_entries(current: Mapping, changes: Mapping) -> dict:
    """``current`` with keyed ``changes`` (None deletes) applied: a new dict."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


@dataclass(slots=True)
class ConfigChange:
    """What one transaction changes in one virtual router, entry by entry: the keyed diff as typed objects.

    A value of None deletes the entry; ``settings`` is None when the router's own settings did not
    change.  One mobile node added is one :class:`MobileNode` here, whatever is configured besides.
    """

    name: str
    settings: RouterSettings | None = None
    address_pools: dict[str, AddressPool | None] = field(default_factory=dict)
    mobile_nodes: dict[str, MobileNode | None] = field(default_factory=dict)
    foreign_agents: dict[IPv4Address, ForeignAgent | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.settings is not None or self.address_pools or self.mobile_nodes or self.foreign_agents
        )

    @property
    def entries_only(self) -> bool:
        """Only mobile nodes and foreign agents change: the engine can apply it entry by entry."""
        return self.settings is None and not self.address_pools

    def applied_to(self, config: VirtualRouterConfig) -> VirtualRouterConfig:
        """The whole configuration after this change (copies every entry map: for the rare changes
        that need the whole picture, such as the home agent's settings or a pool)."""
        settings = self.settings if self.settings is not None else config.settings
        return VirtualRouterConfig(
            name=config.name,
            netns=settings.netns,
            router_id=settings.router_id,
            home_agent=settings.home_agent,
            aaa=settings.aaa,
            address_pools=merged_entries(config.address_pools, self.address_pools),
            mobile_nodes=merged_entries(config.mobile_nodes, self.mobile_nodes),
            foreign_agents=merged_entries(config.foreign_agents, self.foreign_agents),
        )
