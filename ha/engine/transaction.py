"""Configuration transactions for one virtual router: PREPARE checks, APPLY swaps (FRR northbound).

:func:`prepare_config` (a whole new configuration) and :func:`prepare_change` (a keyed change) are pure
with respect to the engine: they read the live state (bindings, assigned pool addresses), refuse what
cannot be applied with :class:`~ha.engine.errors.ConfigRefused` (carrying the YANG path of the offending
node), and precompute everything ``apply`` needs so that applying cannot fail.  Nothing is reserved, so
aborting is free.  A change of mobile nodes and foreign agents only costs what it touches: the checks
use the engine's indexes (by home address, NAI, assigned address) instead of walking every node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from ha.protocol import ForeignAgentRecord, HomeAgentPolicy

from .config import AddressPool, ConfigChange, EngineNode, MobileNode, VirtualRouterConfig
from .config import merged_entries as _merged
from .errors import ConfigRefused

if TYPE_CHECKING:
    from .home_agent import HomeAgent

_MAX_NAMED = 8  # addresses listed in one error message


@dataclass(slots=True)
class Prepared:
    """A prepared change (the ``Txn``): the new configuration and its derived look-up tables.

    ``drop_nodes`` lose their bindings on apply (removed, or their home address changed);
    ``forget_nodes`` also lose their replay state (removed from the configuration).  ``rebind`` tells
    the daemon that the UDP endpoint (HA address or port, or the feature itself) changed: it must
    open a new socket (and close the old one) after ``apply``.
    """

    config: VirtualRouterConfig
    policy: HomeAgentPolicy | None
    port: int
    by_home: dict[int, EngineNode]
    by_nai: dict[str, EngineNode]
    foreign_agents: dict[IPv4Address, ForeignAgentRecord]
    drop_nodes: tuple[str, ...] = ()
    forget_nodes: tuple[str, ...] = ()
    rebind: bool = False
    aborted: bool = field(default=False)
    #: Set for a keyed change (then ``by_home`` / ``by_nai`` hold only the entries it adds).
    entries: EntryUpdate | None = None


@dataclass(slots=True)
class EntryUpdate:
    """What applying a keyed change does to the engine's indexes, entry by entry."""

    nodes: dict[str, MobileNode | None]
    homes_gone: list[int] = field(default_factory=list)
    nais_gone: list[str] = field(default_factory=list)
    assigned: dict[int, MobileNode] = field(default_factory=dict)
    #: The whole foreign-agent table when the change touches one (a few entries), else None.
    foreign_agents: bool = False
    #: The router's own settings change (policy, port, AAA): installed without a walk of the entries.
    settings: bool = False


def _vr_path(config: VirtualRouterConfig) -> str:
    return f"/mipha:virtual-routers/virtual-router[name='{config.name}']"


def _policy(config: VirtualRouterConfig) -> HomeAgentPolicy | None:
    ha = config.home_agent
    if ha is None:
        return None
    broadcasts = frozenset({ha.home_prefix.broadcast_address}) if ha.home_prefix is not None else frozenset()
    return HomeAgentPolicy(
        address=ha.address,
        broadcast_addresses=broadcasts,
        max_lifetime=ha.max_lifetime,
        replay_tolerance=ha.replay_tolerance,
        reverse_tunnel=ha.reverse_tunnel,
        encapsulations=ha.encapsulations,
        simultaneous_bindings=ha.simultaneous_bindings,
        max_bindings=ha.max_bindings,
        care_of_access=ha.care_of_access,
    )


def _check_references(config: VirtualRouterConfig) -> tuple[dict[int, EngineNode], dict[str, EngineNode]]:
    """Leafref / unique checks libyang also does; repeated so the engine never trusts its caller.

    Returns the mobile nodes by static home address and by NAI: the engine's look-ups per request.
    """
    path = _vr_path(config)
    by_home: dict[int, EngineNode] = {}
    by_nai: dict[str, EngineNode] = {}
    for name, node in config.mobile_nodes.items():
        node_path = f"{path}/mobile-node[name='{name}']"
        if node.address_pool is not None and node.address_pool not in config.address_pools:
            raise ConfigRefused(
                f"mobile node {name}: address pool {node.address_pool} does not exist",
                path=f"{node_path}/address-pool",
                app_tag="instance-required",
            )
        if node.home_address is not None:
            other = by_home.setdefault(int(node.home_address), node).name
            if other != name:
                raise ConfigRefused(
                    f"home address {node.home_address} is configured for both {other} and {name}",
                    path=f"{node_path}/home-address",
                    app_tag="data-not-unique",
                )
        if node.nai is not None:
            other = by_nai.setdefault(node.nai, node).name
            if other != name:
                raise ConfigRefused(
                    f"NAI {node.nai} is configured for both {other} and {name}",
                    path=f"{node_path}/nai",
                    app_tag="data-not-unique",
                )
    return by_home, by_nai


def _foreign_agent_records(config: VirtualRouterConfig) -> dict[IPv4Address, ForeignAgentRecord]:
    return {
        address: ForeignAgentRecord(address, tuple(fa.security_associations.values()))
        for address, fa in config.foreign_agents.items()
    }


def _endpoint(config: VirtualRouterConfig) -> tuple[IPv4Address, int] | None:
    ha = config.home_agent
    return None if ha is None else (ha.address, ha.udp_port)


def _named(addresses: list[int]) -> str:
    shown = ", ".join(str(IPv4Address(a)) for a in sorted(addresses)[:_MAX_NAMED])
    more = len(addresses) - _MAX_NAMED
    return shown + (f" and {more} more" if more > 0 else "")


def prepare_config(engine: HomeAgent, new: VirtualRouterConfig) -> Prepared:
    """Validate ``new`` against ``engine``'s live state and precompute the apply step."""
    old = engine.config
    path = _vr_path(new)
    if new.name != old.name:
        raise ConfigRefused(f"this engine runs virtual router {old.name}, not {new.name}", path=path)
    by_home, by_nai = _check_references(new)
    policy = _policy(new)

    assigned = {name: state.assigned for name, state in engine._nodes.items() if state.assigned is not None}
    drop: list[str] = []
    forget: list[str] = []
    shrinking: dict[str, list[int]] = {}
    for name, before in old.mobile_nodes.items():
        after = new.mobile_nodes.get(name)
        if after is None:
            drop.append(name)
            forget.append(name)
            continue
        if policy is None:
            drop.append(name)
            continue
        if before.home_address != after.home_address:
            drop.append(name)
            continue
        address = assigned.get(name)
        if address is None or after.address_pool is None:
            continue
        pool: AddressPool = new.address_pools[after.address_pool]
        if IPv4Address(address) in pool:
            continue
        if before.address_pool == after.address_pool:
            shrinking.setdefault(after.address_pool, []).append(address)
        else:
            drop.append(name)  # moved to a pool that does not hold its address: it registers again
    for pool_name, addresses in sorted(shrinking.items()):
        raise ConfigRefused(
            f"address pool {pool_name} would no longer contain bound addresses {_named(addresses)}; "
            "clear those bindings first",
            path=f"{path}/address-pool[name='{pool_name}']",
            app_tag="pool-address-in-use",
        )
    dropped = set(drop)
    holders = {address: name for name, address in assigned.items() if name not in dropped}
    for home, node in by_home.items():  # a new static address must not be someone's pool address
        holder = holders.get(home)
        if holder is not None and holder != node.name:
            raise ConfigRefused(
                f"home address {IPv4Address(home)} of {node.name} is assigned to {holder} from a pool",
                path=f"{path}/mobile-node[name='{node.name}']/home-address",
                app_tag="address-in-use",
            )
    foreign_agents = _foreign_agent_records(new)
    port = new.home_agent.udp_port if new.home_agent is not None else 0
    rebind = _endpoint(old) != _endpoint(new) or old.namespace != new.namespace
    return Prepared(
        config=new,
        policy=policy,
        port=port,
        by_home=by_home,
        by_nai=by_nai,
        foreign_agents=foreign_agents,
        drop_nodes=tuple(drop),
        forget_nodes=tuple(forget),
        rebind=rebind,
    )


def _unique(
    index: dict, claimed: dict, key: object, node: MobileNode, changing: Mapping, what: str, leaf: str,
    path: str,
) -> None:  # fmt: skip
    """``key`` (a home address or NAI) of a changed ``node``: claimed once in the change, and not held by
    a node the change leaves alone."""
    other = claimed.setdefault(key, node)
    holder = index.get(key)
    if other is node and (holder is None or holder.name in changing):
        return
    if other is not node:
        name = other.name
    else:
        assert holder is not None  # a change-only claim returned above
        name = holder.name
    raise ConfigRefused(
        f"{what} is configured for both {name} and {node.name}",
        path=f"{path}/mobile-node[name='{node.name}']/{leaf}",
        app_tag="data-not-unique",
    )


def _needs_whole(engine: HomeAgent, change: ConfigChange) -> bool:
    """Pools change, the feature is off or goes off, or a node holding a pool address moves to
    another pool: every binding may be concerned. (The router's other settings are installed in
    place: they reach the bindings through the policy, as with a whole configuration.)"""
    settings = change.settings
    if (
        change.address_pools
        or engine._policy is None
        or (settings is not None and settings.home_agent is None)
    ):
        return True
    before_of = engine.config.mobile_nodes.get
    for name, after in change.mobile_nodes.items():
        before, state = before_of(name), engine._nodes.get(name)
        if before is None or after is None or state is None or state.assigned is None:
            continue
        if before.address_pool != after.address_pool:
            return True
    return False


def prepare_change(engine: HomeAgent, change: ConfigChange) -> Prepared:
    """Validate a keyed change against ``engine``'s live state, looking only at what it touches
    (the whole-configuration path, :func:`prepare_config`, when :func:`_needs_whole`)."""
    old = engine.config
    if change.name != old.name:
        message = f"this engine runs virtual router {old.name}, not {change.name}"
        raise ConfigRefused(message, path=_vr_path(old))
    if _needs_whole(engine, change):
        return prepare_config(engine, change.applied_to(old))
    path = _vr_path(old)
    update = EntryUpdate(dict(change.mobile_nodes), foreign_agents=bool(change.foreign_agents))
    by_home: dict[int, EngineNode] = {}
    by_nai: dict[str, EngineNode] = {}
    drop: list[str] = []
    forget: list[str] = []
    changing = change.mobile_nodes
    for name, after in changing.items():
        before = old.mobile_nodes.get(name)
        if before is not None:
            if before.home_address is not None:
                update.homes_gone.append(int(before.home_address))
            if before.nai is not None:
                update.nais_gone.append(before.nai)
            if after is None:
                forget.append(name)
            if after is None or before.home_address != after.home_address:
                drop.append(name)
        if after is None:
            continue
        if after.address_pool is not None and after.address_pool not in old.address_pools:
            raise ConfigRefused(
                f"mobile node {name}: address pool {after.address_pool} does not exist",
                path=f"{path}/mobile-node[name='{name}']/address-pool",
                app_tag="instance-required",
            )
        if after.home_address is not None:
            home = int(after.home_address)
            _unique(engine._by_home, by_home, home, after, changing, f"home address {after.home_address}",
                    "home-address", path)  # fmt: skip
        if after.nai is not None:
            _unique(engine._by_nai, by_nai, after.nai, after, changing, f"NAI {after.nai}", "nai", path)
        state = engine._nodes.get(name)
        if state is not None and state.assigned is not None and name not in drop:
            update.assigned[state.assigned] = after
    _check_pool_holders(engine, by_home, set(drop), path)
    foreign_agents = engine._foreign_agents
    config = old
    if change.foreign_agents:
        config = replace(old, foreign_agents=_merged(old.foreign_agents, change.foreign_agents))
        foreign_agents = _foreign_agent_records(config)
    policy, port, rebind = engine._policy, engine._port, False
    settings = change.settings
    if settings is not None:  # the entry maps are shared, not copied
        config = replace(config, netns=settings.netns, router_id=settings.router_id,
                         home_agent=settings.home_agent, aaa=settings.aaa)  # fmt: skip
        policy = _policy(config)
        port = settings.home_agent.udp_port if settings.home_agent is not None else 0
        rebind = _endpoint(old) != _endpoint(config) or old.namespace != config.namespace
        update.settings = True
    return Prepared(
        config=config,
        policy=policy,
        port=port,
        by_home=by_home,
        by_nai=by_nai,
        foreign_agents=foreign_agents,
        drop_nodes=tuple(drop),
        forget_nodes=tuple(forget),
        rebind=rebind,
        entries=update,
    )


def _check_pool_holders(
    engine: HomeAgent, by_home: dict[int, EngineNode], dropped: set[str], path: str
) -> None:
    """A new static address must not be another node's pool address."""
    for home, node in by_home.items():
        holder = engine._by_assigned.get(home)
        if holder is not None and holder.name != node.name and holder.name not in dropped:
            raise ConfigRefused(
                f"home address {IPv4Address(home)} of {node.name} is assigned to {holder.name} from a pool",
                path=f"{path}/mobile-node[name='{node.name}']/home-address",
                app_tag="address-in-use",
            )
