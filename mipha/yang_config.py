"""Validated ``mipha-home-agent`` configuration (lxml) → the engine's typed config objects.

The one place that knows both YANG node names and :mod:`ha.engine.config`.  Input has already passed
libyang validation, so types and references hold; what is left is reading the YANG defaults in and
converting text to Python values.  A commit converts only what it changed (mipha/changes.py hands
over the changed entries): one mobile node added is one :class:`MobileNode` built.
"""

from __future__ import annotations

import socket
import sys
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType
from typing import TypeVar

from lxml import etree

from ha.aaa.config import AaaConfig, AaaServer
from ha.engine.config import (
    AddressPool,
    AuthAlgorithm,
    ForeignAgent,
    HomeAgentConfig,
    MobileNode,
    ReplayProtection,
    ReverseTunnelPolicy,
    RouterSettings,
    SecurityAssociation,
    SpiMap,
    VirtualRouterConfig,
)
from ha.protocol.revocation import RevocationPolicy
from ha.protocol.udp_tunnel import DEFAULT_KEEPALIVE_INTERVAL, NatTraversalPolicy
from mipha.model import NAMESPACE as MIPHA_NAMESPACE

NS = MIPHA_NAMESPACE
_Q = f"{{{NS}}}"
K = TypeVar("K")
V = TypeVar("V")


def _text(parent: etree._Element, name: str) -> str | None:
    el = parent.find(_Q + name)
    if el is None or el.text is None:
        return None
    return el.text.strip()


def _texts(parent: etree._Element, name: str) -> list[str]:
    return [(el.text or "").strip() for el in parent.iterfind(_Q + name)]


def _hex_key(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ipv4(text: str) -> IPv4Address:
    """Fast path for addresses libyang already validated (IPv4Address(str) costs ~10 µs)."""
    return IPv4Address(int.from_bytes(socket.inet_aton(text), "big"))


def _fields(el: etree._Element) -> dict[str, list[etree._Element]]:
    """Children by local name, in one pass (``find`` per leaf is several times slower)."""
    out: dict[str, list[etree._Element]] = {}
    for child in el:
        tag = child.tag
        if isinstance(tag, str) and tag.startswith(_Q):
            out.setdefault(tag[len(_Q) :], []).append(child)
    return out


def _leaf(fields: dict[str, list[etree._Element]], name: str) -> str | None:
    found = fields.get(name)
    if not found or found[0].text is None:
        return None
    return found[0].text.strip()


def _leaf_list(fields: dict[str, list[etree._Element]], name: str) -> list[str]:
    return [(el.text or "").strip() for el in fields.get(name, ())]


_SPI, _KEY, _ALGORITHM, _REPLAY = (_Q + n for n in ("spi", "key", "algorithm", "replay-protection"))
_ALGORITHMS = {a.value: a for a in AuthAlgorithm}
_PROTECTIONS = {p.value: p for p in ReplayProtection}


def _security_association(el: etree._Element) -> SecurityAssociation:
    """One pass over the children, enum members looked up: 100k nodes are converted in one commit."""
    spi, key, algorithm, replay = "0", "", AuthAlgorithm.HMAC_MD5, ReplayProtection.TIMESTAMP
    for child in el:
        tag, text = child.tag, (child.text or "").strip()
        if tag == _SPI:
            spi = text
        elif tag == _KEY:
            key = text
        elif tag == _ALGORITHM:
            algorithm = _ALGORITHMS.get(text) or AuthAlgorithm(text)
        elif tag == _REPLAY:
            replay = _PROTECTIONS.get(text) or ReplayProtection(text)
    return SecurityAssociation(int(spi), _hex_key(key), algorithm, replay)


def security_associations(parent: etree._Element) -> SpiMap:
    return SpiMap(_security_association(sa) for sa in parent.iterfind(_Q + "security-association"))


#: How many distinct care-of-access lists are kept shared; the cache is emptied when full.
_SHARED_LIMIT = 1 << 12
_care_of_access_lists: dict[tuple[str, ...], tuple[IPv4Network, ...]] = {}


def _care_of_access(prefixes: tuple[str, ...]) -> tuple[IPv4Network, ...]:
    """One tuple of networks per distinct list: nodes that repeat the same prefixes (the usual case)
    share it, where each would hold its own (~250 B for one prefix, times 100k nodes)."""
    networks = _care_of_access_lists.get(prefixes)
    if networks is None:
        if len(_care_of_access_lists) >= _SHARED_LIMIT:
            _care_of_access_lists.clear()
        networks = _care_of_access_lists[prefixes] = tuple(IPv4Network(p) for p in prefixes)
    return networks


_NAME, _HOME, _POOL, _NAI, _LIFETIME, _REVERSE = (
    _Q + n for n in ("name", "home-address", "address-pool", "nai", "max-lifetime", "reverse-tunnel")
)
_NODE_SA, _NODE_COA = _Q + "security-association", _Q + "care-of-access"


def mobile_node(el: etree._Element) -> MobileNode:
    """One pass over the entry's children into locals (``find`` per leaf is several times slower;
    100k nodes are converted at the first load)."""
    name = home = pool = nai = lifetime = reverse = None
    associations: list[SecurityAssociation] = []
    coas: list[str] = []
    for child in el:
        tag = child.tag
        if tag == _NAME:
            name = child.text
        elif tag == _HOME:
            home = child.text
        elif tag == _NODE_SA:
            associations.append(_security_association(child))
        elif tag == _NAI:
            nai = (child.text or "").strip()
        elif tag == _POOL:
            pool = sys.intern((child.text or "").strip())  # one string for all the pool's nodes
        elif tag == _LIFETIME:
            lifetime = child.text
        elif tag == _REVERSE:
            reverse = ReverseTunnelPolicy((child.text or "").strip())
        elif tag == _NODE_COA:
            coas.append((child.text or "").strip())
    home = (home or "").strip()
    lifetime = (lifetime or "").strip()
    return MobileNode(
        (name or "").strip(),
        _ipv4(home) if home else None,
        pool,
        nai,
        int(lifetime) if lifetime else None,
        reverse,
        _care_of_access(tuple(coas)) if coas else (),
        SpiMap(associations),
    )


def address_pool(el: etree._Element) -> AddressPool:
    ranges = []
    for r in el.iterfind(_Q + "range"):
        ranges.append((IPv4Address(_text(r, "start")), IPv4Address(_text(r, "end"))))
    return AddressPool(
        name=_text(el, "name") or "",
        ranges=tuple(ranges),
        excludes=frozenset(IPv4Address(a) for a in _texts(el, "exclude")),
    )


def home_agent(el: etree._Element, router_id: IPv4Address | None) -> HomeAgentConfig:
    address = _text(el, "address")
    kwargs: dict = {
        "address": IPv4Address(address) if address else router_id,
        "home_interface": _text(el, "home-interface"),
        "care_of_access": tuple(IPv4Network(p) for p in _texts(el, "care-of-access")),
    }
    for leaf, attr in (
        ("udp-port", "udp_port"),
        ("max-lifetime", "max_lifetime"),
        ("replay-tolerance", "replay_tolerance"),
        ("simultaneous-bindings", "simultaneous_bindings"),
        ("max-bindings", "max_bindings"),
    ):
        value = _text(el, leaf)
        if value is not None:
            kwargs[attr] = int(value)
    reverse = _text(el, "reverse-tunnel")
    if reverse is not None:
        kwargs["reverse_tunnel"] = reverse
    if _text(el, "enabled") == "false":
        kwargs["enabled"] = False
    authentication = _text(el, "authentication")
    if authentication is not None:
        kwargs["authentication"] = authentication
    encapsulations = _texts(el, "encapsulation")
    if encapsulations:
        kwargs["encapsulations"] = frozenset(encapsulations)
    nat = el.find(_Q + "nat-traversal")
    if nat is not None:
        kwargs["nat_traversal"] = NatTraversalPolicy(
            enabled=_text(nat, "enabled") != "false",
            force_allowed=_text(nat, "force-allowed") != "false",
            keepalive_interval=int(_text(nat, "keepalive-interval") or DEFAULT_KEEPALIVE_INTERVAL),
        )
    revocation = el.find(_Q + "revocation")
    if revocation is not None:
        kwargs["revocation"] = RevocationPolicy(
            enabled=_text(revocation, "enabled") != "false",
            retransmit_interval=float(_text(revocation, "retransmit-interval") or 1),
            max_attempts=int(_text(revocation, "max-attempts") or 5),
        )
    return HomeAgentConfig(**kwargs)


def aaa(el: etree._Element) -> AaaConfig:
    """``virtual-router/aaa`` (server order is the configured, ordered-by-user order)."""
    servers = [
        AaaServer(
            address=_ipv4(_text(s, "address") or ""),
            secret=(_text(s, "secret") or "").encode(),
            auth_port=int(_text(s, "auth-port") or 1812),
            acct_port=int(_text(s, "acct-port") or 1813),
        )
        for s in el.iterfind(_Q + "server")
    ]
    accounting = _text(el, "accounting")
    return AaaConfig(
        servers=tuple(servers),
        lookup_password=(_text(el, "lookup-password") or "").encode(),
        timeout_ms=int(_text(el, "timeout") or 2000),
        retries=int(_text(el, "retries") or 2),
        accounting=accounting != "false",
        cache_size=int(_text(el, "cache-size") or 100_000),
        max_pending=int(_text(el, "max-pending") or 4096),
        disconnect_port=int(_text(el, "disconnect-port") or 3799),
    )


def _proxy_arp_mode(ha_el: etree._Element | None) -> str:
    proxy_arp = _text(ha_el, "proxy-arp") if ha_el is not None else None
    return "interface" if proxy_arp == "interface" else "entry"


_SETTINGS = tuple(_Q + n for n in ("router-id", "netns", "home-agent", "aaa"))


def router_settings(vr: etree._Element) -> tuple[RouterSettings, str]:
    """A ``virtual-router`` element's own settings, and its data plane proxy-ARP mode (not engine
    configuration)."""
    found: dict[str, etree._Element] = {}
    for child in vr.iterchildren(*_SETTINGS):  # one walk in C over 100k entries (``find`` per leaf: 4)
        found.setdefault(child.tag[len(_Q) :], child)
    router_id_text = (found["router-id"].text or "").strip() if "router-id" in found else None
    router_id = IPv4Address(router_id_text) if router_id_text else None
    ha_el = found.get("home-agent")
    home = home_agent(ha_el, router_id) if ha_el is not None else None
    aaa_el = found.get("aaa")
    aaa_config = aaa(aaa_el) if aaa_el is not None else None
    netns = found.get("netns")
    netns_text = (netns.text or "").strip() if netns is not None and netns.text is not None else None
    return RouterSettings(netns_text, router_id, home, aaa_config), _proxy_arp_mode(ha_el)


def foreign_agent(el: etree._Element) -> ForeignAgent:
    return ForeignAgent(IPv4Address(_text(el, "address")), security_associations(el))


#: The list entries of a virtual router that a change carries one by one: builder and key leaf.
ENTRIES = {
    "mobile-node": (mobile_node, "name"),
    "address-pool": (address_pool, "name"),
    "foreign-agent": (foreign_agent, "address"),
}


def virtual_router(vr: etree._Element) -> tuple[VirtualRouterConfig, str]:
    """A whole ``virtual-router`` element (a new virtual router, the first load): every entry built."""
    settings, mode = router_settings(vr)
    pools: dict[str, AddressPool] = {}
    nodes: dict[str, MobileNode] = {}
    agents: dict[IPv4Address, ForeignAgent] = {}
    for child in vr:
        tag = child.tag
        if tag == _MOBILE_NODE:
            node = mobile_node(child)
            _file(nodes, node.name, node)
        elif tag == _ADDRESS_POOL:
            pool = address_pool(child)
            _file(pools, pool.name, pool)
        elif tag == _FOREIGN_AGENT:
            agent = foreign_agent(child)
            _file(agents, agent.address, agent)
    config = VirtualRouterConfig(
        name=_text(vr, "name") or "",
        netns=settings.netns,
        router_id=settings.router_id,
        home_agent=settings.home_agent,
        aaa=settings.aaa,
        # read-only views the engine keeps as they are (no copy of 100k entries)
        address_pools=MappingProxyType(pools),
        mobile_nodes=MappingProxyType(nodes),
        foreign_agents=MappingProxyType(agents),
    )
    return config, mode


_MOBILE_NODE, _ADDRESS_POOL, _FOREIGN_AGENT = (_Q + "mobile-node", _Q + "address-pool", _Q + "foreign-agent")


def _file(entries: dict[K, V], key: K, entry: V) -> None:
    if key in entries:  # the datastore's keys are unique: a second entry is a defect, refused
        raise ValueError(f"duplicate list entry {key}")
    entries[key] = entry
