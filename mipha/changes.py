"""The server's keyed diff of a running-datastore transaction → what changed, per virtual router, typed.

The diff (``server.subscribers.Transaction.diff``) names the created, deleted and modified data nodes
with their elements.  :func:`router_changes` folds it into one :class:`RouterChange` per virtual router
that changed: a new virtual router (every entry built, as on the first load), a removed one, or a
:class:`~ha.engine.config.ConfigChange` carrying only the list entries the diff touches, each built from
its element in the new tree, plus the router's own settings when one of them changed.  Nothing else of
the new tree is read: one mobile node added is one ``MobileNode`` built, whatever is configured besides.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from lxml import etree

from ha.engine.config import ConfigChange, VirtualRouterConfig
from server.subscribers import Change

from .yang_config import ENTRIES, NS, router_settings, virtual_router

_Q = f"{{{NS}}}"
_VRS, _VR = _Q + "virtual-routers", _Q + "virtual-router"
#: An entry whose only changes were deletions of its leaves, when the diff does not name the element
#: they were removed from: its element in the new tree is looked up (a walk of the list).
_LOOK_UP = object()


@dataclass
class RouterChange:
    """One virtual router's part of a transaction: ``whole`` (new), ``removed``, or ``change``.

    ``mode`` is the data plane's proxy-ARP mode when the settings were read (new router, or a setting
    changed), else None (unchanged)."""

    name: str
    removed: bool = False
    whole: VirtualRouterConfig | None = None
    change: ConfigChange | None = None
    mode: str | None = None


@dataclass
class _Edits:
    """The diff's changes of one virtual router, still as elements."""

    removed: bool = False
    whole: etree._Element | None = None
    settings: bool = False
    element: etree._Element | None = None  # the virtual-router element of the new tree, when seen
    entries: dict[str, dict[str, object]] = field(default_factory=lambda: {local: {} for local in ENTRIES})


def _name(vr: etree._Element) -> str:
    """A virtual router's key: its first child in a validated tree (YANG puts keys first); ``find``
    would look through 100k mobile-node siblings (~15 ms)."""
    first = next(iter(vr), None)
    found = first if first is not None and first.tag == _Q + "name" else vr.find(_Q + "name")
    return (found.text or "").strip() if found is not None else ""


def _ancestor(el: etree._Element, up: int) -> etree._Element:
    for _ in range(up):
        parent = el.getparent()
        assert parent is not None
        el = parent
    return el


def _collect(diff: Iterable[Change]) -> dict[str, _Edits]:
    """Fold the diff per virtual router, by its schema paths and keys (a change deeper than a list
    entry marks the entry; the entry's element in the new tree is found from the changed node up)."""
    edits: dict[str, _Edits] = {}
    for change in diff:
        steps = [step.rpartition(":")[2] for step in change.schema_path.split("/")[1:]]
        if not steps or steps[0] != "virtual-routers" or etree.QName(_node(change)).namespace != NS:
            continue  # another module's data
        created = change.new is not None
        if len(steps) == 1:  # the whole container
            for vr in _node(change).iterfind(_VR):
                one = edits.setdefault(_name(vr), _Edits())
                one.whole, one.removed = (vr, False) if created else (None, True)
            continue
        one = edits.setdefault(change.keys[0][0], _Edits())
        depth = len(steps)
        if depth == 2:
            one.whole, one.removed = (change.new, False) if created else (None, True)
            continue
        if created:
            one.element = _ancestor(change.new, depth - 2)
        elif change.parent is not None:  # a deletion: the element it was removed from is live
            one.element = _ancestor(change.parent, depth - 3)
        local = steps[2]
        if local not in ENTRIES:
            one.settings = one.settings or local != "name"
            continue
        keyed = one.entries[local]
        key = change.keys[1][0]
        if depth == 3:
            keyed[key] = change.new  # a whole entry created, or deleted (None)
        elif created:
            keyed[key] = _ancestor(change.new, depth - 3)
        elif keyed.get(key, _LOOK_UP) is _LOOK_UP:  # a deletion below the entry, the entry stays
            keyed[key] = _LOOK_UP if change.parent is None else _ancestor(change.parent, depth - 4)
    return edits


def _node(change: Change) -> etree._Element:
    el = change.new if change.new is not None else change.old
    assert el is not None
    return el


def _find_router(roots: Iterable[etree._Element], name: str) -> etree._Element:
    for top in roots:
        if top.tag == _VRS:
            for vr in top.iterfind(_VR):
                if _name(vr) == name:
                    return vr
    raise LookupError(f"virtual router {name} is not in the new configuration")


def _find_entry(vr: etree._Element, local: str, key_leaf: str, key: str) -> etree._Element:
    found = vr.xpath(f"m:{local}[m:{key_leaf}=$key]", namespaces={"m": NS}, key=key)
    if not found:
        raise LookupError(f"{local} {key} is not in the new configuration")
    return found[0]


def router_changes(diff: Iterable[Change], new: Iterable[etree._Element]) -> dict[str, RouterChange]:
    """Per virtual router that changed, what changed (typed); raises ValueError on a value the engine's
    types refuse."""
    out: dict[str, RouterChange] = {}
    for name, one in _collect(diff).items():
        if one.whole is not None:
            config, mode = virtual_router(one.whole)
            out[name] = RouterChange(name, whole=config, mode=mode)
        elif one.removed:
            out[name] = RouterChange(name, removed=True)
        else:
            rc = _typed(name, one, new)
            if rc.change:
                out[name] = rc
    return out


def _typed(name: str, one: _Edits, new: Iterable[etree._Element]) -> RouterChange:
    """The changed entries built from their elements; the settings read when one of them changed."""
    vr = one.element
    looked_up = any(el is _LOOK_UP for keyed in one.entries.values() for el in keyed.values())
    if vr is None and (one.settings or looked_up):
        vr = _find_router(new, name)
    change = ConfigChange(name)
    rc = RouterChange(name, change=change)
    if one.settings:
        assert vr is not None
        change.settings, rc.mode = router_settings(vr)
    targets: dict[str, dict[Any, Any]] = {  # entries by name / address, None = removed
        "mobile-node": change.mobile_nodes,
        "address-pool": change.address_pools,
        "foreign-agent": change.foreign_agents,
    }
    for local, keyed in one.entries.items():
        build, key_leaf = ENTRIES[local]
        for key, el in keyed.items():
            if el is _LOOK_UP:
                assert vr is not None
                el = _find_entry(vr, local, key_leaf, key)
            typed_key = IPv4Address(key) if local == "foreign-agent" else key
            targets[local][typed_key] = build(el) if el is not None else None
    return rc
