"""The keyed diff of an edit, read from the OpLog it recorded (never from a comparison of whole trees).

Net effect per node: an element inserted and removed again is nothing; a list entry removed and one
with the same key inserted (operation replace) is the fine-grained diff of the two entries; nodes
inserted or removed inside an element this edit created are part of that creation.
"""

from __future__ import annotations

from lxml import etree

from server.oplog import Op, OpLog
from server.schema import Schema, SchemaNode
from server.subscribers import Change, diff_level, make_change, path_step
from server.tree import Forest


def node_path(el: etree._Element, schema: Schema) -> tuple[str, str, tuple, SchemaNode | None]:
    """(instance path, schema path, keys, schema node) of a node of a datastore tree."""
    chain = [el, *el.iterancestors()]
    chain.reverse()
    keys: tuple = ()
    path, spath, sn = "", "", None
    for node in chain:
        ns, _, name = node.tag[1:].partition("}")
        sn = (
            schema.root(ns, name)
            if sn is None and node is chain[0]
            else (sn.children.get((ns, name)) if sn else None)
        )
        step, plain, k = path_step(node, sn)
        path, spath = path + step, spath + plain
        if k is not None:
            keys = (*keys, k)
    return path, spath, keys, sn


def _under(el: etree._Element, ids: dict[int, Op]) -> bool:
    return any(id(a) in ids for a in el.iterancestors())


def _attached(el: etree._Element, roots: set[int]) -> bool:
    top = el
    for a in el.iterancestors():
        top = a
    return id(top) in roots


def recorded_diff(log: OpLog, schema: Schema, forest: Forest) -> list[Change]:
    """The keyed diff of the mutations in `log` (applied to `forest`), in the order they were made."""
    roots = {id(r) for r in forest}
    created: dict[int, Op] = {}  # id(el) -> its insertion
    removed: list[tuple[Op, str, str, tuple, SchemaNode | None]] = []
    texts: dict[int, list] = {}  # id(el) -> [el, sn, first old, last new]
    order: list[tuple[str, int]] = []
    for op in log:
        if op.kind == "ins":
            if isinstance(op.parent, etree._Element) and (
                id(op.parent) in created or _under(op.parent, created)
            ):
                continue
            created[id(op.el)] = op
            order.append(("c", id(op.el)))
        elif op.kind == "rm":
            if id(op.el) in created:
                del created[id(op.el)]
                continue
            if isinstance(op.parent, etree._Element) and (
                id(op.parent) in created or _under(op.parent, created)
            ):
                continue
            if isinstance(op.parent, Forest):
                p, sp, ks, sn = node_path(op.el, schema)
            else:
                pp, psp, pks, psn = node_path(op.parent, schema)
                ns, _, name = op.el.tag[1:].partition("}")
                sn = psn.children.get((ns, name)) if psn else None
                step, plain, k = path_step(op.el, sn)
                p, sp, ks = pp + step, psp + plain, pks if k is None else (*pks, k)
            removed.append((op, p, sp, ks, sn))
            order.append(("d", len(removed) - 1))
        else:
            if id(op.el) in created or _under(op.el, created):
                continue
            t = texts.get(id(op.el))
            if t is None:
                texts[id(op.el)] = [op.el, op.sn, op.old, op.new]
                order.append(("m", id(op.el)))
            else:
                t[3] = op.new
    out: list[Change] = []
    new_by_path: dict[str, tuple[etree._Element, SchemaNode | None, str, tuple]] = {}
    for kind, ref in order:
        if kind == "c" and ref in created:
            el = created[ref].el
            if not _attached(el, roots):
                continue  # removed again along with an ancestor
            p, sp, ks, sn = node_path(el, schema)
            new_by_path[p] = (el, sn, sp, ks)
    paired: set[str] = set()
    for _op, p, _sp, _ks, _sn in removed:
        if p in new_by_path:
            paired.add(p)
    for kind, ref in order:
        if kind == "d":
            op, p, sp, ks, sn = removed[ref]
            if p in paired:
                new_el, _nsn, _, _ = new_by_path[p]
                if sn is not None and sn.kind in ("container", "list"):
                    out.extend(diff_level(list(op.el), list(new_el), sn, schema, p, sp, ks, new_el))
                elif (op.el.text or "").strip() != (new_el.text or "").strip():
                    out.append(make_change("modified", op.el, new_el, sn, p, sp, ks))
            else:
                parent = op.parent if isinstance(op.parent, etree._Element) else None
                if parent is not None and not _attached(parent, roots):
                    parent = None
                out.append(make_change("deleted", op.el, None, sn, p, sp, ks, parent))
        elif kind == "c" and ref in created:
            el = created[ref].el
            p, sp, ks, sn = node_path(el, schema)
            if p in new_by_path and p not in paired and new_by_path[p][0] is el:
                out.append(make_change("created", None, el, sn, p, sp, ks))
        elif kind == "m":
            el, sn, old, new = texts[ref]
            if (old or "").strip() == (new or "").strip() or not _attached(el, roots):
                continue
            p, sp, ks, _ = node_path(el, schema)
            out.append(Change("modified", p, None, el, sp, ks, (old or "").strip(), (new or "").strip()))
    return out
