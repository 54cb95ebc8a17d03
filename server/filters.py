"""<get>/<get-config> filters: subtree filtering exactly per RFC 6241 §6 and :xpath filtering.

Subtree: content-match nodes (leaves with text) are ANDed; containment nodes recurse; selection nodes
(empty) select whole subtrees; sibling filter nodes with the same name are OR-ed; a filter element in
the NETCONF base namespace (no xmlns of its own) matches any namespace. XPath: evaluated by lxml on each
top-level tree with the request's own prefixes; the result holds the selected nodes with their
ancestors (list ancestors keep their keys).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Mapping

from lxml import etree

from server.errors import RpcError
from server.rawstate import NO_SPLICES, RawSplices
from server.schema import Schema, SchemaNode
from server.tree import Forest
from server.xmlns import NC_NS


def _ns_name(tag: str) -> tuple[str | None, str]:
    if tag[:1] == "{":
        ns, _, name = tag[1:].partition("}")
        return (None if ns == NC_NS else ns), name
    return None, tag


def _matches(filter_el: etree._Element, data_el: etree._Element) -> bool:
    fns, fname = _ns_name(filter_el.tag)
    if fns is None:
        return data_el.tag.rpartition("}")[2] == fname
    return data_el.tag == filter_el.tag


def _is_content_match(f: etree._Element) -> bool:
    return len(f) == 0 and bool((f.text or "").strip())


def _attrs_match(f: etree._Element, d: etree._Element) -> bool:
    for k, v in f.attrib.items():
        if k.startswith(f"{{{NC_NS}}}") or k in ("type", "select"):
            continue
        if d.get(k) != v:
            return False
    return True


class SubtreeFilter:
    """Applies one <filter type="subtree"> to data; list keys of selected entries are always kept.

    Children of a data node are picked in C (`iterchildren` with the filter's tags), so the cost is
    that of what the filter names, not of the siblings it skips (100k mobile nodes beside a binding).

    - `superset=True` (the configuration pre-filter of <get>): content matches on state leaves (and,
      with `defaults`, on leaves with a YANG default that are absent) count as matched, and a
      containment naming a node with defaults below keeps its entry, so that the result holds every
      configuration node the exact filter can select once state is merged and defaults added.
    - `raw`: placeholders of raw provider content (server/rawstate.py) are kept whole when the filter
      selects them or names anything below them, dropped when a containment through them finds an
      empty one.
    """

    def __init__(
        self,
        filter_el: etree._Element,
        schema: Schema | None = None,
        *,
        superset: bool = False,
        defaults: bool = False,
        raw: RawSplices = NO_SPLICES,
    ) -> None:
        self.filter_el = filter_el
        self.schema = schema
        self.superset = superset and schema is not None
        self.defaults = defaults and self.superset
        self.raw = raw

    def apply(self, data: Forest) -> Forest:
        out = Forest()
        if not len(data):
            return out
        # only the top-level filter nodes that can match some data root (by local name)
        names = {d.tag.rpartition("}")[2] for d in data}
        self.top = [c for c in self.filter_el if isinstance(c.tag, str) and c.tag.rpartition("}")[2] in names]
        if not self.top:
            return out  # an empty filter selects nothing (RFC 6241 §6.4.2)
        for d in data:
            res = self._filter_children_of(self.top, d, self._root_schema(d))
            if res is not None:
                out.append(res)
        return out

    def prune(self, data: Forest) -> Forest:
        """Exact filtering of a private copy, in place: children the filter does not select are
        removed instead of the selected ones being copied (a <get> of 100k bindings copies nothing).
        `data` is consumed; the result holds its surviving roots."""
        out = Forest()
        names = {d.tag.rpartition("}")[2] for d in data}
        top = [c for c in self.filter_el if isinstance(c.tag, str) and c.tag.rpartition("}")[2] in names]
        for d in data:
            r = self._pruned(top, d, self._root_schema(d))
            if r is not None:
                out.append(r)
        return out

    def _pruned(
        self, filters: list[etree._Element], d: etree._Element, sn: SchemaNode | None
    ) -> etree._Element | None:
        """`d` pruned in place (one filter names it), a filtered copy (several do: their union), or
        None (nothing selected)."""
        matching = [f for f in filters if _matches(f, d)]
        if len(matching) == 1:
            return d if self._prune(matching[0], d, sn) else None
        return self._filter_children_of(matching, d, sn) if matching else None

    def _prune(self, f: etree._Element, d: etree._Element, sn: SchemaNode | None) -> bool:
        """The in-place twin of `_filter` (exact mode): True when `d`, now pruned, is selected."""
        if not _attrs_match(f, d):
            return False
        children = [c for c in f if isinstance(c.tag, str)]
        if self.raw and self.raw.is_placeholder(d):
            return not children or self.raw.has_content(d)
        if not children:
            return not _is_content_match(f) or (d.text or "").strip() == f.text.strip()
        content = [c for c in children if _is_content_match(c)]
        others = [c for c in children if not _is_content_match(c)]
        for c in content:
            want = c.text.strip()
            if not any((dc.text or "").strip() == want for dc in d.iterchildren(_child_tag(c))):
                return False
        if not others:
            return True  # only content matches: the whole entry
        keys = set(sn.keys) if sn is not None and sn.kind == "list" else set()
        tags = {_child_tag(c) for c in children} | {f"{{*}}{k}" for k in keys}
        keep: list[etree._Element] = []
        produced = replaced = False
        for dc in list(d.iterchildren(*tags)):
            if dc.tag.rpartition("}")[2] in keys or any(_matches(c, dc) for c in content):
                keep.append(dc)
                produced = produced or any(_matches(c, dc) for c in others)
                continue
            csn = sn.children.get(_ns_name(dc.tag)) if sn is not None else None
            r = self._pruned(others, dc, csn)
            if r is not None:
                keep.append(r)
                produced = True
                replaced = replaced or r is not dc
        if not produced:
            return False
        if replaced or len(keep) != len(d):
            d[:] = keep  # the removal runs in C
        return True

    def _root_schema(self, d: etree._Element) -> SchemaNode | None:
        if self.schema is None:
            return None
        ns, name = _ns_name(d.tag)
        return self.schema.root(ns, name)

    def _filter_children_of(
        self, filters: list[etree._Element], d: etree._Element, sn: SchemaNode | None
    ) -> etree._Element | None:
        """Sibling filters competing for data node `d`: OR over the ones whose name matches."""
        result: etree._Element | None = None
        for f in filters:
            if not _matches(f, d):
                continue
            r = self._filter(f, d, sn)
            if r is None:
                continue
            result = r if result is None else _union(result, r)
        return result

    def _filter(self, f: etree._Element, d: etree._Element, sn: SchemaNode | None) -> etree._Element | None:
        if not _attrs_match(f, d):
            return None
        children = [c for c in f if isinstance(c.tag, str)]
        if self.raw and self.raw.is_placeholder(d):
            # raw content is already filtered by its provider: keep it unless a containment finds it empty
            return copy.deepcopy(d) if not children or self.raw.has_content(d) else None
        if not children:
            if _is_content_match(f):
                return copy.deepcopy(d) if (d.text or "").strip() == f.text.strip() else None
            return copy.deepcopy(d)  # selection node
        content = [c for c in children if _is_content_match(c)]
        others = [c for c in children if not _is_content_match(c)]
        for c in content:
            want = c.text.strip()
            # iterchildren(tag) filters in C: a key match on a list entry does not walk its siblings
            candidates = list(d.iterchildren(_child_tag(c)))
            if any((dc.text or "").strip() == want for dc in candidates):
                continue
            if self.superset and self._may_match_later(c, candidates, sn):
                continue
            if self.defaults and candidates and _has_default(_schema_child(sn, c)):
                return self._evidence(d, sn, candidates)
            return None
        if not others:
            return copy.deepcopy(d)  # only content matches: the whole entry
        out = etree.Element(d.tag, attrib=dict(d.attrib), nsmap=d.nsmap)
        out.text = d.text
        keys = set(sn.keys) if sn is not None and sn.kind == "list" else set()
        tags = {_child_tag(c) for c in children} | {f"{{*}}{k}" for k in keys}
        produced = False
        for dc in d.iterchildren(*tags):
            lname = dc.tag.rpartition("}")[2]
            if lname in keys or any(_matches(c, dc) for c in content):
                out.append(copy.deepcopy(dc))
                # a key named by a selection node is selected, not only carried along
                produced = produced or any(_matches(c, dc) for c in others)
                continue
            csn = sn.children.get(_ns_name(dc.tag)) if sn is not None else None
            r = self._filter_children_of(others, dc, csn)
            if r is not None:
                out.append(r)
                produced = True
        if not produced and self.superset and any(self._may_appear(c, sn, bool(content)) for c in others):
            produced = True  # state or with-defaults may add what the filter selects: keep keys and matches
        return out if produced else None

    def _may_match_later(self, c: etree._Element, found: list, sn: SchemaNode | None) -> bool:
        """Superset mode: a content match the configuration cannot decide (state, or a default)."""
        csn = _schema_child(sn, c)
        if csn is None:
            return False
        if not csn.config:
            return True
        return self.defaults and not found and csn.default is not None

    def _evidence(self, d: etree._Element, sn: SchemaNode | None, leaves: list) -> etree._Element:
        """Superset mode with defaults: an entry whose configured leaf fails a content match is kept
        with its keys and that leaf. Dropped here, the merge could bring the entry back from state
        without the leaf, and with-defaults would then add its default, which might match."""
        out = etree.Element(d.tag, attrib=dict(d.attrib), nsmap=d.nsmap)
        keys = set(sn.keys) if sn is not None and sn.kind == "list" else set()
        for dc in d.iterchildren(*{f"{{*}}{k}" for k in keys}, *{x.tag for x in leaves}):
            out.append(copy.deepcopy(dc))
        return out

    def _may_appear(self, c: etree._Element, sn: SchemaNode | None, matched: bool) -> bool:
        """Superset mode: can the node filter `c` names appear once state is merged / defaults added?
        State alone matters only when this entry had content matches (the merge brings the entry's
        keys, not its matched configuration leaves)."""
        csn = _schema_child(sn, c)
        if csn is None:
            return False
        return (matched and _below(csn, _STATE, lambda n: not n.config)) or (
            self.defaults and _below(csn, _DEFAULTS, _has_default)
        )


def _has_default(sn: SchemaNode | None) -> bool:
    return sn is not None and (sn.default is not None or bool(sn.defaults))


def _child_tag(f: etree._Element) -> str:
    """The tag a filter node selects data children by (any namespace when it has none of its own)."""
    ns, name = _ns_name(f.tag)
    return f"{{*}}{name}" if ns is None else f.tag


def _schema_child(sn: SchemaNode | None, f: etree._Element) -> SchemaNode | None:
    if sn is None:
        return None
    return sn.child(*_ns_name(f.tag))


_DEFAULTS: weakref.WeakKeyDictionary[SchemaNode, bool] = weakref.WeakKeyDictionary()
_STATE: weakref.WeakKeyDictionary[SchemaNode, bool] = weakref.WeakKeyDictionary()


def _below(sn: SchemaNode, cache: weakref.WeakKeyDictionary, test) -> bool:
    """Does `test` hold for this schema node or a descendant (cached per node)?"""
    got = cache.get(sn)
    if got is None:
        got = test(sn) or any(_below(c, cache, test) for c in sn.children.values())
        cache[sn] = got
    return got


def _union(a: etree._Element, b: etree._Element) -> etree._Element:
    """Merge two filtered copies of the same data node (children in data order of `a` then new ones)."""
    seen = {etree.tostring(c) for c in a}
    for c in b:
        s = etree.tostring(c)
        if s not in seen:
            a.append(copy.deepcopy(c))
            seen.add(s)
    return a


def xpath_filter(
    data: Forest,
    select: str,
    nsmap: Mapping[str | None, str],
    schema: Schema,
    raw: RawSplices = NO_SPLICES,
) -> Forest:
    """Nodes selected by `select` plus their ancestors (ancestors that are list entries keep keys).

    Raw placeholders (their provider filtered their content with this XPath) count as selected when
    they hold something."""
    ns = {k: v for k, v in nsmap.items() if k}
    try:
        compiled = etree.XPath(select, namespaces=ns)
    except etree.XPathSyntaxError as exc:
        raise RpcError(
            "invalid-value",
            f"bad XPath in select: {exc}",
            type="protocol",
            info=(("bad-attribute", "select"),),
        ) from None
    out = Forest()
    for root in data:
        try:
            hits = compiled(root)
        except etree.XPathEvalError as exc:
            raise RpcError("invalid-value", f"XPath evaluation failed: {exc}", type="protocol") from None
        if not isinstance(hits, list):
            continue
        nodes = []
        for h in hits:
            if isinstance(h, etree._Element):
                nodes.append(h)
            elif hasattr(h, "getparent") and h.getparent() is not None:
                nodes.append(h.getparent())  # text or attribute result: its element
        nodes.extend(p for p in raw.placeholders(root) if raw.has_content(p))
        if nodes:
            out.append(_project(root, nodes, schema.root(*_ns_name(root.tag))))
    return out


def _project(root: etree._Element, nodes: list[etree._Element], root_sn: SchemaNode | None) -> etree._Element:
    selected = set(nodes)
    keep: set[etree._Element] = set()
    for n in nodes:
        p = n.getparent()
        while p is not None and p not in keep:
            keep.add(p)
            p = p.getparent()

    def build(el: etree._Element, sn: SchemaNode | None) -> etree._Element:
        if el in selected:
            return copy.deepcopy(el)
        out = etree.Element(el.tag, nsmap=el.nsmap)
        keys = set(sn.keys) if sn is not None and sn.kind == "list" else set()
        for c in el:
            if not isinstance(c.tag, str):
                continue
            if c in selected or c in keep:
                csn = sn.children.get(_ns_name(c.tag)) if sn is not None else None
                out.append(build(c, csn))
            elif c.tag.rpartition("}")[2] in keys:
                out.append(copy.deepcopy(c))
        return out

    return build(root, root_sn)
