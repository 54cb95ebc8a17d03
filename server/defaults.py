"""with-defaults (RFC 6243) reporting: basic-mode explicit, plus report-all, report-all-tagged and trim.

Datastores store exactly what was set (explicit). Defaults come from the YANG schema via libyang.
report-all adds default leaves under existing parents (creating non-presence containers on the way),
report-all-tagged also marks every node holding its default with wd:default="true", trim removes
leaves whose value equals the default.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from server.errors import RpcError
from server.schema import Schema, SchemaNode
from server.schemapaths import ancestry, locator, walk
from server.tree import Forest
from server.xmlns import WD_ATTR_NS

MODES = frozenset({"explicit", "report-all", "report-all-tagged", "trim"})
DEFAULT_ATTR = f"{{{WD_ATTR_NS}}}default"


@dataclass
class _DefaultLeaf:
    leaf: SchemaNode
    anchor: etree.XPath | None  # instances of the nearest list / presence-container ancestor (None: top)
    between: list[SchemaNode]  # non-presence containers from the anchor down to the leaf's parent
    top: SchemaNode
    exact: etree.XPath  # the leaf's own instances


class WithDefaults:
    """Precomputed per-schema; `apply(data, mode)` rewrites a reply's data forest in place."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._leaves: list[_DefaultLeaf] = []
        for root in schema.roots.values():
            for sn in walk(root):
                if not (
                    (sn.kind == "leaf" and sn.default is not None) or (sn.kind == "leaf-list" and sn.defaults)
                ):
                    continue
                chain = ancestry(sn)
                # find the nearest ancestor that must already exist (list entry or presence container)
                cut = 0
                for i, n in enumerate(chain[:-1]):
                    if n.kind == "list" or (n.kind == "container" and n.presence):
                        cut = i + 1
                anchor = locator(chain[:cut]) if cut else None
                between = chain[cut:-1]
                self._leaves.append(_DefaultLeaf(sn, anchor, between, chain[0], locator(chain)))

    def apply(self, data: Forest, mode: str, *, config_only: bool = False) -> Forest:
        if mode not in MODES:
            raise RpcError("invalid-value", f"bad with-defaults mode {mode!r}", type="protocol")
        if mode == "explicit":
            return data
        if mode == "trim":
            for root in data:
                for d in self._leaves:
                    if root.tag != f"{{{d.top.ns}}}{d.top.name}":
                        continue
                    if d.leaf.kind == "leaf-list":
                        by_parent: dict = {}
                        for el in d.exact(root):
                            by_parent.setdefault(el.getparent(), []).append(el)
                        for parent, els in by_parent.items():
                            if [(e.text or "").strip() for e in els] == list(d.leaf.defaults):
                                for e in els:
                                    parent.remove(e)
                        continue
                    for el in d.exact(root):
                        if (el.text or "").strip() == d.leaf.default:
                            el.getparent().remove(el)
            return data
        tagged = mode == "report-all-tagged"
        for d in self._leaves:
            if config_only and not d.leaf.config:
                continue
            roots = [r for r in data if r.tag == f"{{{d.top.ns}}}{d.top.name}"]
            if d.anchor is None:
                if not roots:
                    roots = [data.append(etree.Element(f"{{{d.top.ns}}}{d.top.name}"))]
                anchors = roots
                between = d.between[1:]
            else:
                anchors = [a for r in roots for a in d.anchor(r)]
                between = d.between
            tag = f"{{{d.leaf.ns}}}{d.leaf.name}"
            for a in anchors:
                parent = a
                for c in between:
                    ctag = f"{{{c.ns}}}{c.name}"
                    nxt = parent.find(ctag)
                    if nxt is None:
                        nxt = etree.SubElement(parent, ctag)
                    parent = nxt
                if d.leaf.kind == "leaf-list":
                    els = parent.findall(tag)
                    if not els:
                        for v in d.leaf.defaults:
                            el = etree.SubElement(parent, tag)
                            el.text = v
                            if tagged:
                                el.set(DEFAULT_ATTR, "true")
                    elif tagged and [(e.text or "").strip() for e in els] == list(d.leaf.defaults):
                        for e in els:
                            e.set(DEFAULT_ATTR, "true")
                    continue
                el = parent.find(tag)
                if el is None:
                    el = etree.SubElement(parent, tag)
                    el.text = d.leaf.default
                    if tagged:
                        el.set(DEFAULT_ATTR, "true")
                elif tagged and (el.text or "").strip() == d.leaf.default:
                    el.set(DEFAULT_ATTR, "true")
        if tagged:
            for root in data:
                etree.cleanup_namespaces(root, top_nsmap={"wd": WD_ATTR_NS})
        return data
