"""Incremental validation: check what a change touches, with libyang's own verdicts.

A committed datastore is valid, so after a change only these can be violated:
- constraints inside the list entries the change touched (types, ranges, patterns, mandatory, must,
  choices, leafrefs into the entry's context) and in the context those entries live in;
- constraints across entries (`unique`, leafrefs whose target entry was removed).

The checker builds a *partial document* holding the touched entries of the "sparse" lists (lists
whose entries are independent of each other apart from the cross-entry constraints covered here),
the whole context around them (every node that is not an entry of a sparse list: the virtual
router's settings, its address pools), and the other entries a cross-entry constraint ties them to,
found through value indexes (same NAI, same home address, a pool reference to a removed pool). That
document goes through the same Validator as a whole datastore, so the error-tag, error-app-tag,
error-path and message are libyang's. A test derives the module's cross-entry constraints from the
schema and fails if one appears that this checker does not cover (`Coverage.uncovered`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import libyang
from _libyang import ffi
from libyang.util import c2str, ly_array_iter
from lxml import etree

from server.oplog import KeyIndex, OpLog
from server.schema import Schema, SchemaNode
from server.tree import Forest

#: more touched entries than this: validating the whole datastore is as cheap
MAX_TOUCHED = 2000
_UPS = re.compile(r"(?:\.\./)+|\.\.(?![\w/])")
_ABSOLUTE = re.compile(r"(?:^|[\s(\[,=<>!+*|-])/[A-Za-z_]")
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")


@dataclass(frozen=True)
class Constraint:
    """A constraint of the module that reaches across list entries."""

    kind: str  # unique | leafref | must | when | min-elements | max-elements
    node: str  # libyang schema path of the node carrying it
    detail: str  # the unique leaves, the leafref path, the expression (whitespace collapsed)
    ups: int = 0  # how many levels a relative path climbs
    absolute: bool = False


def _walk(node: libyang.SNode):
    yield node
    if hasattr(node, "children"):
        for c in node.children():
            yield from _walk(c)


def _climb(expr: str) -> tuple[int, bool]:
    """(deepest `..` climb, has an absolute path) of an XPath expression, strings ignored."""
    bare = _STRING.sub("''", expr)
    ups = max((m.group(0).count("..") for m in _UPS.finditer(bare)), default=0)
    return ups, bool(_ABSOLUTE.search(bare))


def _depth_in_entry(node: libyang.SNode) -> int:
    """Levels from `node` up to its nearest list entry (0 for a list itself)."""
    d = 0
    n: libyang.SNode | None = node
    while n is not None and not isinstance(n, libyang.SList):
        n = n.parent()
        d += 1
    return d if n is not None else 10**6  # no list above: nothing to cross


def cross_entry_constraints(ctx: libyang.Context, modules: tuple[str, ...]) -> list[Constraint]:
    """Every config constraint of `modules` that may involve more than one list entry."""
    out: list[Constraint] = []
    for name in modules:
        mod = ctx.get_module(name)
        for top in mod.children():
            if top.keyword() in ("rpc", "action", "notification"):
                continue
            for n in _walk(top):
                if n.config_false():
                    continue
                path = n.schema_path()
                if isinstance(n, libyang.SList):
                    cl = ffi.cast("struct lysc_node_list *", n.cdata)
                    for u in ly_array_iter(cl.uniques):
                        leaves = " ".join(
                            c2str(ffi.cast("struct lysc_node *", lf).name) for lf in ly_array_iter(u)
                        )
                        out.append(Constraint("unique", path, leaves))
                    if cl.min:
                        out.append(Constraint("min-elements", path, str(cl.min)))
                    if cl.max != 0xFFFFFFFF:
                        out.append(Constraint("max-elements", path, str(cl.max)))
                lp = n.type().leafref_path() if isinstance(n, libyang.SLeaf | libyang.SLeafList) else None
                if lp is not None:  # None unless a leafref
                    ups, absolute = _climb(lp)
                    if absolute or ups > _depth_in_entry(n):
                        out.append(Constraint("leafref", path, lp, ups, absolute))
                for kind, exprs in (("must", n.must_conditions()), ("when", n.when_conditions())):
                    for e in exprs:
                        ups, absolute = _climb(e)
                        if absolute or ups > _depth_in_entry(n) - (1 if kind == "when" else 0):
                            out.append(Constraint(kind, path, " ".join(e.split()), ups, absolute))
    return out


def _bare(path: str) -> tuple[str, ...]:
    """libyang schema path → bare node names."""
    return tuple(s.split(":")[-1] for s in path.strip("/").split("/"))


@dataclass
class Coverage:
    """How each cross-entry constraint is checked; `uncovered` must stay empty."""

    sparse: set[tuple[str, ...]] = field(default_factory=set)  # lists checked per entry
    uniques: dict[tuple[str, ...], list[tuple[str, ...]]] = field(default_factory=dict)
    #: leafrefs from sparse entries into their context: (source list, leaf name, target list, target leaf)
    refs: list[tuple[tuple[str, ...], str, tuple[str, ...], str]] = field(default_factory=list)
    covered: dict[Constraint, str] = field(default_factory=dict)
    uncovered: list[Constraint] = field(default_factory=list)


def _descents(c: Constraint) -> list[tuple[str, ...]]:
    """The node names a relative path walks down after climbing (`../../address-pool/range` →
    ("address-pool", "range")); for an expression, every such path in it."""
    bare = _strip_prefixes(_STRING.sub("''", c.detail))
    out = [
        tuple(m.group(1).split("/"))
        for m in re.finditer(r"(?:\.\./)+([A-Za-z_][\w.-]*(?:/[A-Za-z_][\w.-]*)*)", bare)
    ]
    return out or [()]


def plan(ctx: libyang.Context, modules: tuple[str, ...]) -> Coverage:
    """Decide which lists are sparse and how each cross-entry constraint is covered.

    A list is sparse unless a crossing path reads into its entries from above them, or it carries
    min/max-elements. A sparse entry is validated with its whole context (everything below it but
    the entries of sparse lists), so a constraint whose paths stay inside the innermost sparse entry
    around it is covered by that context; `unique` on a sparse list by a value index; a leafref from
    a sparse entry into its enclosing entry's context by that context (forward) and a reverse value
    index (removed targets). Anything else is uncovered: the checker then validates everything."""
    cons = cross_entry_constraints(ctx, modules)
    lists: set[tuple[str, ...]] = set()
    for name in modules:
        for top in ctx.get_module(name).children():
            lists |= {
                _bare(n.schema_path())
                for n in _walk(top)
                if isinstance(n, libyang.SList) and not n.config_false()
            }
    reached: set[tuple[str, ...]] = set()
    for c in cons:
        if c.kind in ("must", "when", "leafref") and not c.absolute:
            node = _bare(c.node)
            base = node[: len(node) - c.ups]
            for d in _descents(c):
                target = base + d
                reached |= {target[:i] for i in range(len(base) + 1, len(target) + 1) if target[:i] in lists}
    cov = Coverage()
    counted = {_bare(c.node) for c in cons if c.kind in ("min-elements", "max-elements")}
    cov.sparse = {lst for lst in lists if lst not in reached and lst not in counted}
    for c in cons:
        node = _bare(c.node)
        if c.kind == "unique":
            cov.covered[c] = (
                "value index: the entries sharing the values are validated together"
                if node in cov.sparse
                else "the list is validated whole with its context"
            )
            if node in cov.sparse:
                cov.uniques.setdefault(node, []).append(tuple(c.detail.split()))
            continue
        if c.kind in ("min-elements", "max-elements"):
            if node not in cov.sparse and _enclosing(node[:-1], cov.sparse) is not None:
                cov.covered[c] = "the list is validated whole with its context"
            else:
                cov.uncovered.append(c)
            continue
        if c.absolute:
            cov.uncovered.append(c)
            continue
        base = node[: len(node) - c.ups]
        own = _enclosing(node, cov.sparse)  # innermost sparse list at or above the node
        targets = [base + d for d in _descents(c)]
        into_sparse = any(t[:i] in cov.sparse for t in targets for i in range(len(base) + 1, len(t) + 1))
        if own is not None and len(own) <= len(base) and not into_sparse:
            cov.covered[c] = "its paths stay inside one sparse entry, validated with its context"
        elif c.kind == "leafref" and own is not None and not into_sparse:
            outer = _enclosing(own[:-1], cov.sparse)
            tgt = targets[0]
            tgt_list = _enclosing(tgt, lists)
            if outer is not None and len(outer) <= len(base) and tgt_list is not None:
                cov.refs.append(
                    (
                        own,
                        node[-1] if len(node) == len(own) + 1 else "/".join(node[len(own) :]),
                        tgt_list,
                        tgt[-1],
                    )
                )
                cov.covered[c] = (
                    "target validated with the enclosing context; removed targets: reverse value index"
                )
            else:
                cov.uncovered.append(c)
        else:
            cov.uncovered.append(c)
    return cov


def _strip_prefixes(path: str) -> str:
    return re.sub(r"[A-Za-z_][\w.-]*:", "", path)


def _enclosing(node: tuple[str, ...], lists) -> tuple[str, ...] | None:
    for i in range(len(node), 0, -1):
        if node[:i] in lists:
            return node[:i]
    return None


class IncrementalChecker:
    """Validates a change applied in place (an OpLog) to a valid datastore."""

    def __init__(self, schema: Schema, ctx: libyang.Context, modules: tuple[str, ...]) -> None:
        self.schema = schema
        self.coverage = plan(ctx, modules)
        self._sparse_sn: set[int] = set()
        self._uniques: dict[int, list[tuple[str, ...]]] = {}
        self._refs: dict[int, list[tuple[SchemaNode, str]]] = {}  # target list -> (source list, leaf)
        for sn in self._schema_nodes():
            bare = self._bare_of(sn)
            if bare in self.coverage.sparse:
                self._sparse_sn.add(id(sn))
            if bare in self.coverage.uniques:
                self._uniques[id(sn)] = self.coverage.uniques[bare]
        by_bare = {self._bare_of(sn): sn for sn in self._schema_nodes()}
        for src, leaf, tgt, _tleaf in self.coverage.refs:
            self._refs.setdefault(id(by_bare[tgt]), []).append((by_bare[src], leaf))
        self.complete = not self.coverage.uncovered
        self._keys: KeyIndex = KeyIndex()  # the index of the change being checked
        self._whole: set[int] = set()  # inserted elements (ids, live during one partial())

    def _schema_nodes(self):
        stack = list(self.schema.roots.values())
        while stack:
            n = stack.pop()
            yield n
            stack.extend(n.children.values())

    @staticmethod
    def _bare_of(sn: SchemaNode) -> tuple[str, ...]:
        out = []
        n: SchemaNode | None = sn
        while n is not None:
            out.append(n.name)
            n = n.parent
        return tuple(reversed(out))

    # -- the partial document ----------------------------------------------------------------------
    def partial(self, forest: Forest, log: OpLog) -> list[etree._Element] | None:
        """The partial document for `log` (applied to `forest`), or None: validate everything."""
        self._whole.clear()
        if not self.complete:
            return None
        roots = {id(r): r for r in forest}
        self._keys = log.index
        marked: dict[int, etree._Element] = {}  # sparse entries to include (and their sparse ancestors)
        whole_roots: dict[int, etree._Element] = {}
        values = log.index.values
        for op in log:
            node = op.el if op.kind != "rm" else op.parent
            if op.kind == "rm" and isinstance(op.parent, Forest):
                continue
            if op.kind == "rm" and op.sn is not None and id(op.sn) in self._refs:
                self._mark_referrers(op, marked, roots, values)
            if not self._mark(node, marked, whole_roots, roots):
                continue
            if op.kind == "ins":
                if len(op.el) and _LARGE(op.el):
                    return None  # a large new subtree: validating everything costs no more, copies nothing
                self._whole.add(id(op.el))  # a new subtree is validated whole
            if len(marked) > MAX_TOUCHED:
                return None
        for el in list(marked.values()):
            sn = self._sn(el)
            if sn is not None and id(sn) in self._uniques and el.getparent() is not None:
                for fields in self._uniques[id(sn)]:
                    for peer in values.same(el.getparent(), sn, fields, el):
                        self._mark(peer, marked, whole_roots, roots)
        if len(marked) > MAX_TOUCHED:
            return None
        out = []
        try:
            for r in forest:
                if id(r) in whole_roots:
                    out.append(_deep(r))
                elif any(self._top(e) is r for e in marked.values()):
                    out.append(self._copy(r, self._sn(r), marked))
        finally:
            self._whole.clear()
        return out

    def _mark(self, node, marked, whole_roots, roots) -> bool:
        """Mark the sparse entries at and above `node`; False when `node` left the tree."""
        chain = [node, *node.iterancestors()]
        if id(chain[-1]) not in roots:
            return False
        sn = None
        for el in reversed(chain):
            ns, _, name = el.tag[1:].partition("}")
            sn = self.schema.root(ns, name) if sn is None else sn.children.get((ns, name))
            if sn is None:
                whole_roots[id(chain[-1])] = chain[-1]
                return True
            if id(sn) in self._sparse_sn:
                marked[id(el)] = el
        if not any(id(e) in marked for e in chain):
            whole_roots[id(chain[-1])] = chain[-1]
        return True

    def _mark_referrers(self, op, marked, roots, values) -> None:
        """A removed leafref target entry: the entries still referring to it are validated too."""
        parent = op.parent
        if not isinstance(parent, etree._Element) or id(self._top(parent)) not in roots:
            return
        key = (op.el.findtext(f"{{{op.sn.ns}}}{op.sn.keys[0]}") or "").strip() if op.sn.keys else ""
        for src_sn, leaf in self._refs[id(op.sn)]:
            # the source list's parent is the target list's parent in this module shape
            for holder in self._holders(parent, op.sn, src_sn):
                for el in values.lookup(holder, src_sn, (leaf,), (key,)):
                    marked[id(el)] = el
                    for a in el.iterancestors():
                        asn = self._sn(a)
                        if asn is not None and id(asn) in self._sparse_sn:
                            marked[id(a)] = a

    def _holders(self, tgt_parent, tgt_sn: SchemaNode, src_sn: SchemaNode):
        """Parents of source-list entries in the same context as a target entry's parent."""
        if src_sn.parent is tgt_sn.parent:
            return [tgt_parent]
        return []

    def _sn(self, el: etree._Element) -> SchemaNode | None:
        chain = [el, *el.iterancestors()]
        sn = None
        for e in reversed(chain):
            ns, _, name = e.tag[1:].partition("}")
            sn = self.schema.root(ns, name) if sn is None else sn.children.get((ns, name))
            if sn is None:
                return None
        return sn

    @staticmethod
    def _top(el: etree._Element) -> etree._Element:
        top = el
        for a in el.iterancestors():
            top = a
        return top

    @staticmethod
    def _with_company(el: etree._Element, tag: str, mine: list[etree._Element]) -> list[etree._Element]:
        """libyang checks `unique` pairwise when a list has two entries and by hash when it has more,
        and the two blame different entries; repairs between rounds remove entries. So a short list
        is taken whole, and a long one gets 3 untouched entries besides the touched ones: both
        documents then stay in the same regime through every repair (untouched entries are valid
        with each other and with the touched ones, whose peers are already in)."""
        first = list(itertools.islice(el.iterchildren(tag), len(mine) + 4))
        if len(first) < len(mine) + 4:
            return first  # the whole list, in document order
        ids = {id(m) for m in mine}
        head, others = [], 0
        for e in first:  # a prefix of the list, in document order, holding 3 untouched entries
            head.append(e)
            others += id(e) not in ids
            if others == 3:
                break
        in_head = {id(e) for e in head}
        tail = [m for m in mine if id(m) not in in_head]
        if len(tail) > 1:
            tail.sort(key=_position)  # entries tied by a unique: their order decides the blame
        return head + tail

    def _copy(self, el: etree._Element, sn: SchemaNode | None, marked) -> etree._Element:
        """`el` without the unmarked entries of sparse lists below it (marked ones in document order)."""
        sparse_children = [c for c in (sn.children.values() if sn else ()) if id(c) in self._sparse_sn]
        if not sparse_children or id(el) in self._whole:
            return _deep(el)
        new = etree.Element(el.tag, nsmap=el.nsmap)
        new.text = el.text
        skip = frozenset(f"{{{c.ns}}}{c.name}" for c in sparse_children)
        for ch in self._keys.shell(el, skip):  # kept by the index: 100k skipped siblings cost nothing
            new.append(_deep(ch))
        for c in sparse_children:
            tag = f"{{{c.ns}}}{c.name}"
            mine = [e for e in marked.values() if e.tag == tag and e.getparent() is el]
            if mine and id(c) in self._uniques:
                mine = self._with_company(el, tag, mine)
            elif len(mine) > 1:
                mine.sort(key=_position)
            for e in mine:
                new.append(self._copy(e, c, marked))
        return new


_POSITION = etree.XPath("count(preceding-sibling::*)")
#: more than MAX_TOUCHED * 8 nodes in the subtree (libxml2 stops at that node: no count of 100k entries)
_LARGE = etree.XPath(f"boolean(descendant::*[{MAX_TOUCHED * 8 + 1}])")


def _position(el: etree._Element) -> float:
    return _POSITION(el)


def _deep(el: etree._Element) -> etree._Element:
    import copy

    return copy.deepcopy(el)
