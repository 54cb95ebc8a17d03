"""<get>/<get-config> filters: subtree filtering exactly per RFC 6241 §6 and :xpath filtering.

Subtree: content-match nodes (leaves with text) are ANDed; containment nodes recurse; selection nodes
(empty) select whole subtrees; sibling filter nodes with the same name are OR-ed; a filter element in
the NETCONF base namespace (no xmlns of its own) matches any namespace. XPath: evaluated by lxml on each
top-level tree with the request's own prefixes; the result holds the selected nodes with their
ancestors (list ancestors keep their keys).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from lxml import etree

from server.errors import RpcError
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
    """Applies one <filter type="subtree"> to data; list keys of selected entries are always kept."""

    def __init__(self, filter_el: etree._Element, schema: Schema | None = None) -> None:
        self.filter_el = filter_el
        self.schema = schema

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
        if not children:
            if _is_content_match(f):
                return copy.deepcopy(d) if (d.text or "").strip() == f.text.strip() else None
            return copy.deepcopy(d)  # selection node
        content = [c for c in children if _is_content_match(c)]
        others = [c for c in children if not _is_content_match(c)]
        for c in content:
            want = c.text.strip()
            fns = _ns_name(c.tag)[0]
            # iterchildren(tag) filters in C: a key match on a list entry does not walk its siblings
            candidates = d.iterchildren(c.tag) if fns is not None else (x for x in d if _matches(c, x))
            if not any((dc.text or "").strip() == want for dc in candidates):
                return None
        if not others:
            return copy.deepcopy(d)  # only content matches: the whole entry
        out = etree.Element(d.tag, attrib=dict(d.attrib), nsmap=d.nsmap)
        out.text = d.text
        keys = set(sn.keys) if sn is not None and sn.kind == "list" else set()
        produced = False
        for dc in d:
            if not isinstance(dc.tag, str):
                continue
            lname = dc.tag.rpartition("}")[2]
            if lname in keys or any(_matches(c, dc) for c in content):
                out.append(copy.deepcopy(dc))
                continue
            csn = sn.children.get(_ns_name(dc.tag)) if sn is not None else None
            r = self._filter_children_of(others, dc, csn)
            if r is not None:
                out.append(r)
                produced = True
        return out if produced else None


def _union(a: etree._Element, b: etree._Element) -> etree._Element:
    """Merge two filtered copies of the same data node (children in data order of `a` then new ones)."""
    seen = {etree.tostring(c) for c in a}
    for c in b:
        s = etree.tostring(c)
        if s not in seen:
            a.append(copy.deepcopy(c))
            seen.add(s)
    return a


def xpath_filter(data: Forest, select: str, nsmap: Mapping[str | None, str], schema: Schema) -> Forest:
    """Nodes selected by `select` plus their ancestors (ancestors that are list entries keep keys)."""
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
