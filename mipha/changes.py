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

from lxml import etree

from ha.engine.config import ConfigChange, VirtualRouterConfig
from server.subscribers import Change

from .yang_config import ENTRIES, NS, router_settings, virtual_router

_Q = f"{{{NS}}}"
_VRS, _VR = _Q + "virtual-routers", _Q + "virtual-router"
#: An entry whose only changes were deletions of its leaves: its element in the new tree is looked up.
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


def _text(el: etree._Element, name: str) -> str:
    found = el.find(_Q + name)
    return (found.text or "").strip() if found is not None else ""


def _chain(el: etree._Element) -> list[etree._Element]:
    """``el`` and its ancestors, from the top-level node down."""
    chain = [el]
    parent = el.getparent()
    while parent is not None:
        chain.append(parent)
        parent = parent.getparent()
    chain.reverse()
    return chain


def _collect(diff: Iterable[Change]) -> dict[str, _Edits]:
    edits: dict[str, _Edits] = {}
    for change in diff:
        created = change.new is not None
        el = change.new if created else change.old
        assert el is not None
        chain = _chain(el)
        if chain[0].tag != _VRS:
            continue  # another module's data
        if len(chain) == 1:  # the whole container
            for vr in el.iterfind(_VR):
                one = edits.setdefault(_text(vr, "name"), _Edits())
                one.whole, one.removed = (vr, False) if created else (None, True)
            continue
        vr_el = chain[1]
        one = edits.setdefault(_text(vr_el, "name"), _Edits())
        if len(chain) == 2:
            one.whole, one.removed = (vr_el, False) if created else (None, True)
            continue
        if created:
            one.element = vr_el
        entry = chain[2]
        local = etree.QName(entry).localname
        spec = ENTRIES.get(local)
        if spec is None:
            one.settings = one.settings or local != "name"
            continue
        keyed = one.entries[local]
        key = _text(entry, spec[1])
        if len(chain) == 3 or created:
            keyed[key] = entry if created else None
        else:
            keyed.setdefault(key, _LOOK_UP)
    return edits


def _find_router(roots: Iterable[etree._Element], name: str) -> etree._Element:
    for top in roots:
        if top.tag == _VRS:
            for vr in top.iterfind(_VR):
                if _text(vr, "name") == name:
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
    targets = {
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
            targets[local][typed_key] = build(el) if el is not None else None  # type: ignore[arg-type]
    return rc
