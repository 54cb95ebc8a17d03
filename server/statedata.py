"""How operational state from providers meets configuration in a <get> / <get-data> reply.

State subtrees are merged into a copy of running, or of the part of running a subtree filter can
select (list entries matched by key, without the config-only checks of edit-config); `strip_config`
implements get-data's config-filter=false; `filter_roots` tells which providers a subtree filter can
possibly select from.
"""

from __future__ import annotations

import copy

from lxml import etree

from server.edit import EditEngine
from server.operational import StateRequest
from server.schema import Schema, SchemaNode
from server.tree import Forest, view
from server.xmlns import NC_NS


def merge_state(schema: Schema, running: Forest, state: list[etree._Element]) -> tuple[Forest, bool]:
    """Config plus state roots; state under a config root is merged into a copy of that root.
    Returns (data, owned): owned means `data` is a private copy the caller may mutate."""
    config_tags = {r.tag for r in running}
    if not any(s.tag in config_tags for s in state):
        return view([*running, *state]), False
    return merge_into(schema, running.copy(), state), True


def merge_into(schema: Schema, data: Forest, state: list[etree._Element]) -> Forest:
    """Merge provider state into `data` (a private copy, e.g. running already cut down by the
    request's filter), in place. Entries and containers missing from `data` are taken from the
    state subtrees (list keys included) by moving them, not copying: the provider's elements belong
    to the server once returned."""
    engine = EditEngine(schema)
    for s in state:
        _merge_into(data, s, engine)
    return data


def strip_config(schema: Schema, data: Forest) -> Forest:
    """config-filter=false: drop config leaves, keeping keys and containers that hold state."""
    out = Forest()
    for r in data:
        sn = schema.root(*_split(r.tag))
        if sn is None:
            continue
        kept = _strip(r, sn)
        if kept is not None:
            out.append(kept)
    return out


def filter_roots(request: StateRequest) -> set[tuple[str, str]] | None:
    """Top-level (namespace, name) pairs a subtree filter can select; None when unknown (no filter,
    XPath, or a top-level filter node without its own namespace)."""
    if request.subtree is None:
        return None
    roots = set()
    for f in request.subtree:
        if not isinstance(f.tag, str):
            continue
        ns, name = _split(f.tag)
        if ns is None or ns == NC_NS:
            return None
        roots.add((ns, name))
    return roots


def _split(tag: str) -> tuple[str | None, str]:
    if tag[:1] == "{":
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def _merge_into(data: Forest, state: etree._Element, engine: EditEngine) -> None:
    """Merge a state subtree into config (lists matched by key), without config-only checks."""

    def merge(parent, el, parent_sn):
        sn = engine._schema_for(parent_sn, el)
        if sn is None:
            return
        idx = engine._index(parent, parent_sn)
        key = None
        if sn.kind == "list":
            key = engine._keys_of(el, sn)
        elif sn.kind == "leaf-list":
            key = ((el.text or "").strip(),)
        existing = engine._lookup(idx, el, sn, key)
        if existing is None:
            engine._add(parent, idx, el, sn, key)  # moved out of the provider's tree
            return
        if sn.kind in ("container", "list"):
            for ch in list(el):
                if isinstance(ch.tag, str):
                    merge(existing, ch, sn)
        elif sn.kind == "leaf":
            existing.text = el.text

    merge(data, state, None)


def _strip(el: etree._Element, sn: SchemaNode) -> etree._Element | None:
    if not sn.config:
        return el
    if sn.kind in ("leaf", "leaf-list", "anydata"):
        return None
    out = etree.Element(el.tag, nsmap=el.nsmap)
    found = False
    for ch in el:
        if not isinstance(ch.tag, str):
            continue
        csn = sn.children.get(_split(ch.tag))
        if csn is None:
            continue
        if sn.kind == "list" and csn.name in sn.keys:
            out.append(copy.deepcopy(ch))
            continue
        kept = _strip(ch, csn)
        if kept is not None:
            out.append(kept if kept is not ch else copy.deepcopy(ch))
            found = True
    return out if found else None
