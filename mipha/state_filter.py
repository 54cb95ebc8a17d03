"""Filter push-down for the operational state: what a ``<get>`` / ``<get-data>`` filter names.

The server applies the request's filter again on what the provider returns, so the hints derived here
only need to describe a superset: a subtree filter (or XPath predicate) naming one virtual router and one
home address narrows the walk to one binding lookup; a filter selecting only ``statistics`` never touches
the binding table.  :func:`raw_plan` says when the filter below ``binding`` is one the XML writer applies
exactly, so bindings can go out as raw bytes the server splices without filtering them again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from lxml import etree

from mipha.model import NAMESPACE as MIPHA_NAMESPACE
from server.operational import StateRequest

NS = MIPHA_NAMESPACE
SECTIONS = ("bindings", "tunnels", "statistics", "security-violations", "receive-path")


@dataclass
class Wanted:
    """What a request needs: ``None`` sets mean "all"."""

    routers: set[str] | None = None
    sections: set[str] | None = None  # of SECTIONS, plus "address-pool"
    home_addresses: set[IPv4Address] | None = None
    care_of_addresses: set[IPv4Address] | None = None
    nothing: bool = False
    pools: set[str] | None = field(default=None)
    nodes: set[str] | None = field(default=None)  # mobile-node names
    #: address sets a filter named only with values no binding can hold (not addresses): they stay
    #: empty (nothing matches) instead of meaning "not named"
    unmatchable: set[str] = field(default_factory=set)

    def section(self, name: str) -> bool:
        return self.sections is None or name in self.sections


def wanted_from(request: StateRequest) -> Wanted:
    """Derive push-down hints from a subtree filter or an XPath expression."""
    if request.subtree is not None:
        return _wanted_from_subtree(request.subtree)
    if request.xpath:
        return _wanted_from_xpath(request.xpath)
    return Wanted()


BINDING_LEAVES = (
    "home-address",
    "care-of-address",
    "mobile-node",
    "nai",
    "source-address",
    "lifetime-granted",
    "lifetime-remaining",
    "registered-at",
    "identification",
    "flags",
    "encapsulation",
    "tunnel-interface",
    "authentication",
    "key-source",
    "address-source",
    "acct-session-id",
    "udp-tunnel",
    "nat-address",
    "nat-port",
)
_KEYS = ("home-address", "care-of-address")


@dataclass(frozen=True)
class RawPlan:
    """The request's filter below ``bindings`` is one the provider applies exactly: bindings can then
    be written straight to bytes.  ``leaves`` None = every leaf; keys are always written."""

    leaves: frozenset[str] | None = None


def raw_plan(request: StateRequest) -> RawPlan | None:
    """A RawPlan when the filter below ``binding`` is exact-able: none, or a single ``binding`` filter
    holding only key content matches and selection leaves.  Else None (lxml path, server filters)."""
    if request.xpath:
        return None
    if request.subtree is None:
        return RawPlan()
    binding_filters = [
        el
        for el in request.subtree.iter()
        if isinstance(el.tag, str) and etree.QName(el).localname == "binding"
    ]
    if not binding_filters:
        return RawPlan()
    if len(binding_filters) > 1:
        return None
    selected: set[str] = set()
    seen: set[str] = set()
    for child in binding_filters[0]:
        if not isinstance(child.tag, str) or etree.QName(child).namespace not in (NS, None):
            return None
        name = etree.QName(child).localname
        if name not in BINDING_LEAVES or name in seen or len(child):
            return None
        seen.add(name)
        if (child.text or "").strip():
            if name not in _KEYS:
                return None  # a content match on a non-key leaf: let the server filter
        else:
            selected.add(name)
    return RawPlan(frozenset(selected) if selected else None)


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and etree.QName(c).localname == name]


def _content(el: etree._Element, name: str) -> str | None:
    for c in _children(el, name):
        if len(c) == 0 and (c.text or "").strip():
            return c.text.strip()
    return None


def _wanted_from_subtree(filter_el: etree._Element) -> Wanted:
    tops = [
        c
        for c in filter_el
        if isinstance(c.tag, str)
        and etree.QName(c).localname == "virtual-routers"
        and etree.QName(c).namespace in (NS, None)
    ]
    if not tops:
        # Another module's subtree (or an empty filter): our state is not needed.
        return Wanted(nothing=True)
    wanted = Wanted(
        routers=set(), sections=set(), home_addresses=set(), care_of_addresses=set(), pools=set(), nodes=set()
    )
    for top in tops:
        entries = _children(top, "virtual-router")
        if not list(top) or not entries:
            return Wanted()  # selection node: everything
        for vr in entries:
            name = _content(vr, "name")
            if name is None:
                wanted.routers = None
            elif wanted.routers is not None:
                wanted.routers.add(name)
            selectors = [c for c in vr if isinstance(c.tag, str) and etree.QName(c).localname != "name"]
            if not selectors:
                wanted.sections = None
                wanted.home_addresses = wanted.care_of_addresses = wanted.pools = wanted.nodes = None
                continue
            for sel in selectors:
                local = etree.QName(sel).localname
                if local == "address-pool":
                    _add(wanted, "sections", "address-pool")
                    pool = _content(sel, "name")
                    if pool is None:
                        wanted.pools = None
                    elif wanted.pools is not None:
                        wanted.pools.add(pool)
                elif local == "home-agent":
                    _home_agent_hints(sel, wanted)
                elif local == "aaa":
                    _add(wanted, "sections", "aaa")
                elif local == "mobile-node":
                    _add(wanted, "sections", "mobile-node")
                    node = _content(sel, "name")
                    if node is None:
                        wanted.nodes = None
                    elif wanted.nodes is not None:
                        wanted.nodes.add(node)
    for attr in ("home_addresses", "care_of_addresses", "pools", "nodes"):
        if getattr(wanted, attr) == set() and attr not in wanted.unmatchable:
            setattr(wanted, attr, None)
    return wanted


def _home_agent_hints(sel: etree._Element, wanted: Wanted) -> None:
    parts = [c for c in sel if isinstance(c.tag, str)]
    if not parts:
        wanted.sections = None
        wanted.home_addresses = wanted.care_of_addresses = None
        return
    for part in parts:
        local = etree.QName(part).localname
        if local not in SECTIONS:
            continue  # a config leaf of home-agent: the server answers it from running
        _add(wanted, "sections", local)
        if local != "bindings":
            continue
        bindings = _children(part, "binding")
        if not bindings:
            wanted.home_addresses = wanted.care_of_addresses = None
        for b in bindings:
            home, coa = _content(b, "home-address"), _content(b, "care-of-address")
            _add_address(wanted, "home_addresses", home)
            _add_address(wanted, "care_of_addresses", coa)


def _add(wanted: Wanted, attr: str, value: str) -> None:
    current = getattr(wanted, attr)
    if current is not None:
        current.add(value)


def _add_address(wanted: Wanted, attr: str, text: str | None) -> None:
    current = getattr(wanted, attr)
    if current is None:
        return
    if text is None:
        setattr(wanted, attr, None)
        return
    try:
        current.add(IPv4Address(text))
    except ValueError:  # a content match no binding's (canonical) address can equal
        wanted.unmatchable.add(attr)


_XPATH_NAME = re.compile(r"virtual-router\[(?:\w+:)?name\s*=\s*['\"]([^'\"]+)['\"]\]")
_XPATH_HOME = re.compile(r"binding\[[^\]]*?(?:\w+:)?home-address\s*=\s*['\"]([^'\"]+)['\"]")


def _wanted_from_xpath(xpath: str) -> Wanted:
    """Conservative hints from an XPath: only unambiguous, single-branch predicates narrow anything."""
    if "|" in xpath or " or " in xpath:
        return Wanted()
    wanted = Wanted()
    names = _XPATH_NAME.findall(xpath)
    if len(names) == 1:
        wanted.routers = {names[0]}
    homes = _XPATH_HOME.findall(xpath)
    if len(homes) == 1:
        try:
            wanted.home_addresses = {IPv4Address(homes[0])}
            wanted.sections = {"bindings"}
        except ValueError:
            pass
    return wanted
