"""Configuration transactions for one virtual router: PREPARE checks, APPLY swaps (FRR northbound).

:func:`prepare_config` is pure with respect to the engine: it reads the live state (bindings, assigned
pool addresses), refuses what cannot be applied with :class:`~ha.engine.errors.ConfigRefused` (carrying
the YANG path of the offending node), and precomputes everything ``apply`` needs so that applying
cannot fail.  Nothing is reserved, so aborting is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from ha.protocol import ForeignAgentRecord, HomeAgentPolicy

from .config import AddressPool, MobileNode, VirtualRouterConfig
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
    by_home: dict[int, MobileNode]
    by_nai: dict[str, MobileNode]
    foreign_agents: dict[IPv4Address, ForeignAgentRecord]
    drop_nodes: tuple[str, ...] = ()
    forget_nodes: tuple[str, ...] = ()
    rebind: bool = False
    aborted: bool = field(default=False)


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


def _check_references(config: VirtualRouterConfig) -> tuple[dict[int, MobileNode], dict[str, MobileNode]]:
    """Leafref / unique checks libyang also does; repeated so the engine never trusts its caller.

    Returns the mobile nodes by static home address and by NAI: the engine's look-ups per request.
    """
    path = _vr_path(config)
    by_home: dict[int, MobileNode] = {}
    by_nai: dict[str, MobileNode] = {}
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
    foreign_agents = {
        address: ForeignAgentRecord(address, tuple(fa.security_associations.values()))
        for address, fa in new.foreign_agents.items()
    }
    port = new.home_agent.udp_port if new.home_agent is not None else 0

    def endpoint(config: VirtualRouterConfig) -> tuple[IPv4Address, int] | None:
        ha = config.home_agent
        return None if ha is None else (ha.address, ha.udp_port)

    rebind = endpoint(old) != endpoint(new) or old.namespace != new.namespace
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
