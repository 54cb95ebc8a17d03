"""Reversible in-place changes of a configuration tree, and the key index that finds list entries.

A datastore is changed in place: the edit engine records every primitive mutation (an element
inserted, an element removed, a leaf's text set) in an OpLog, which can undo them (a refused edit, a
read that must see the configuration before a pending transaction) and redo them (a candidate kept as a
change set over running). So one edit costs what it changes, never a copy of 100k list entries.

The KeyIndex keeps the entries of large lists by key tuple across edits, so looking up one mobile node
among 100k never scans its siblings. Every mutation of a list's children goes through the OpLog, which
keeps the index in step.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from lxml import etree

from server.schema import SchemaNode
from server.tree import Forest, child_text

Parent: TypeAlias = "etree._Element | Forest"
Key = tuple[str, ...]
#: lists with at least this many entries keep their key index between edits
PERSIST_MIN = 64


def entry_key(el: etree._Element, sn: SchemaNode) -> Key:
    """The key tuple of a list entry (a leaf-list entry: its value)."""
    if sn.kind == "leaf-list":
        return ((el.text or "").strip(),)
    return tuple((child_text(el, f"{{{sn.ns}}}{k}") or "").strip() for k in sn.keys)


#: index slots are 30-bit hashes: ints of 28 B, where a copy of a key or value string costs 56 B and more
_SLOT_MASK = 0x3FFFFFFF


def _slot_of(text: str) -> int:
    return hash(text) & _SLOT_MASK


def _key_slot(key: Key) -> int:
    """Where an Entries files the entry with `key` (a one-key list: no tuple of one string)."""
    return _slot_of(key[0]) if len(key) == 1 else hash(key) & _SLOT_MASK


class Entries:
    """The entries of one keyed list by key, filed by a 30-bit hash of the key: an int instead of a
    copy of the key's strings (100k mobile nodes: 2.4 MB, more for longer names). `get` compares the
    entry's own key, so keys that share a slot are told apart."""

    __slots__ = ("_slots", "_sn")

    def __init__(self, sn: SchemaNode) -> None:
        self._sn = sn
        self._slots: dict[int, etree._Element | list[etree._Element]] = {}

    @classmethod
    def of(cls, parent: Parent, tag: str, sn: SchemaNode) -> Entries:
        """`parent`'s entries of list `tag` (one walk; a one-key list's keys hashed as they are read)."""
        out = cls(sn)
        slots = out._slots
        if sn.kind == "list" and len(sn.keys) == 1:
            key_tag = f"{{{sn.ns}}}{sn.keys[0]}"
            for ch in parent.iterchildren(tag):
                slot = _slot_of((child_text(ch, key_tag) or "").strip())
                if slot in slots:
                    out.put(entry_key(ch, sn), ch)
                else:
                    slots[slot] = ch
        else:
            for ch in parent.iterchildren(tag):
                out.put(entry_key(ch, sn), ch)
        return out

    def __len__(self) -> int:
        """Slots in use (entries, but for the rare ones sharing a slot)."""
        return len(self._slots)

    def get(self, key: Key) -> etree._Element | None:
        got = self._slots.get(_key_slot(key))
        if got is None:
            return None
        for el in got if isinstance(got, list) else (got,):
            if entry_key(el, self._sn) == key:
                return el
        return None

    def put(self, key: Key, el: etree._Element) -> None:
        """File `el` under `key`, in place of an entry filed with the same key."""
        slot = _key_slot(key)
        got = self._slots.get(slot)
        if got is None:
            self._slots[slot] = el
        elif not isinstance(got, list):
            self._slots[slot] = el if got is el or entry_key(got, self._sn) == key else [got, el]
        else:
            same = [i for i, e in enumerate(got) if e is el or entry_key(e, self._sn) == key]
            if same:
                got[same[0]] = el
            else:
                got.append(el)

    def drop(self, key: Key, el: etree._Element) -> None:
        """Forget `el` if it is what `key` is filed as."""
        slot = _key_slot(key)
        got = self._slots.get(slot)
        if got is el:
            del self._slots[slot]
        elif isinstance(got, list) and any(e is el for e in got):
            got.remove(el)
            if len(got) == 1:
                self._slots[slot] = got[0]


class ValueIndex:
    """List entries by the values of some of their leaves (a `unique`'s leaves, a leafref), per
    (parent, list, leaves). A superset: every node an OpLog touches is noted (`touch`) and its
    entries are re-filed under their current values at the next lookup; stale entries (moved away,
    value changed) are dropped when a lookup meets them."""

    def __init__(self) -> None:
        self._maps: dict[tuple[int, str, tuple[str, ...]], tuple[Parent, SchemaNode, dict]] = {}
        self._by_list: dict[tuple[int, str], list[tuple[str, ...]]] = {}
        self._dirty: list[etree._Element] = []

    def touch(self, el: etree._Element) -> None:
        if self._maps:
            self._dirty.append(el)
            if len(self._dirty) > 500_000:  # nobody looked up for long: rebuild on demand instead
                self._maps.clear()
                self._by_list.clear()
                self._dirty = []

    def _values(self, el: etree._Element, sn: SchemaNode, fields: tuple[str, ...]) -> tuple[str, ...] | None:
        vals = []
        for f in fields:
            v = child_text(el, f"{{{sn.ns}}}{f}")
            if v is None:
                return None  # a unique applies only when all its leaves exist
            vals.append(v.strip())
        return tuple(vals)

    def _map(self, parent: Parent, sn: SchemaNode, fields: tuple[str, ...]) -> dict:
        self._flush()
        tag = f"{{{sn.ns}}}{sn.name}"
        k = (id(parent), tag, fields)
        got = self._maps.get(k)
        if got is None:
            m: dict = {}
            for ch in parent.iterchildren(tag):
                v = self._values(ch, sn, fields)
                if v is not None:
                    _file(m, v, ch)
            got = self._maps[k] = (parent, sn, m)
            self._by_list.setdefault((id(parent), tag), []).append(fields)
        return got[2]

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for d in dirty:
            for el in (d, *d.iterancestors()):
                p = el.getparent()
                if p is None:
                    break
                for fields in self._by_list.get((id(p), el.tag), ()):
                    _parent, sn, m = self._maps[(id(p), el.tag, fields)]
                    v = self._values(el, sn, fields)
                    if v is not None:
                        _file(m, v, el)

    def lookup(self, parent: Parent, sn: SchemaNode, fields: tuple[str, ...], value: tuple[str, ...]):
        """The entries of `parent`'s list `sn` whose `fields` hold `value` now."""
        m = self._map(parent, sn, fields)
        k = _slot(value)
        got = m.get(k)
        if got is None:
            return []
        got = got if isinstance(got, list) else [got]
        live, kept = [], []  # kept: the slot's entries still filed right (other values may share it)
        for e in got:
            v = self._values(e, sn, fields) if e.getparent() is parent else None
            if v == value:
                live.append(e)
            if v is not None and _slot(v) == k:
                kept.append(e)
        if len(kept) != len(got):
            if kept:
                m[k] = kept if len(kept) > 1 else kept[0]
            else:
                del m[k]
        return live

    def same(self, parent: Parent, sn: SchemaNode, fields: tuple[str, ...], el: etree._Element):
        """The other entries with `el`'s values of `fields`."""
        v = self._values(el, sn, fields)
        if v is None:
            return []
        return [e for e in self.lookup(parent, sn, fields, v) if e is not el]

    def forget_below(self, el: etree._Element) -> None:
        for k, (parent, _sn, _m) in list(self._maps.items()):
            if parent is el or (isinstance(parent, etree._Element) and _is_below(parent, el)):
                del self._maps[k]
                fl = self._by_list.get((k[0], k[1]))
                if fl is not None and k[2] in fl:
                    fl.remove(k[2])


def _slot(value: tuple[str, ...]) -> int:
    """Where a ValueIndex files entries with `value`: a 30-bit hash, a small int instead of a copy of
    the value's strings (100k home addresses: 3 MB less); a lookup compares the live values anyway,
    so entries of values that share a slot are told apart there."""
    return hash(value) & _SLOT_MASK


def _file(m: dict, value: tuple[str, ...], el: etree._Element) -> None:
    """File `el` under `value`: one element as is, a list only where several share it (memory:
    100k mobile nodes' NAIs and addresses cost one dict entry each)."""
    k = _slot(value)
    got = m.get(k)
    if got is None:
        m[k] = el
    elif isinstance(got, list):
        if all(e is not el for e in got):
            got.append(el)
    elif got is not el:
        m[k] = [got, el]


@functools.cache
def _others(skip: frozenset[str]) -> etree.XPath:
    """The child elements whose tag is not in `skip`, the tags tested inside libxml2: reading `.tag`
    in Python caches the tag string in the element's proxy, which the key index keeps alive (100k
    mobile nodes: 9 MB of copies of one string)."""
    tags = [etree.QName(t) for t in sorted(skip)]
    namespaces = {f"s{i}": q.namespace for i, q in enumerate(tags) if q.namespace}
    tests = " or ".join(
        f"self::s{i}:{q.localname}" if q.namespace else f"self::{q.localname}" for i, q in enumerate(tags)
    )
    return etree.XPath(f"*[not({tests})]" if tests else "*", namespaces=namespaces)


class KeyIndex:
    """Entries of keyed lists, per (parent, list tag). Large lists are kept across edits; small ones
    only until `forget_small()` (the end of an edit), so 100k mobile nodes' own small lists cost nothing.
    `values` indexes entries by leaf values for the incremental validation."""

    def __init__(self) -> None:
        self._kept: dict[tuple[int, str], tuple[Parent, Entries]] = {}
        self._small: dict[tuple[int, str], tuple[Parent, Entries]] = {}
        self.values = ValueIndex()
        self._shells: dict[int, tuple[etree._Element, frozenset[str], list[etree._Element]]] = {}

    def shell(self, parent: etree._Element, skip: frozenset[str]) -> list[etree._Element]:
        """The children of `parent` whose tag is not in `skip` (the entries of its large lists), in
        document order: one walk, then kept until a child of such a tag is inserted or removed."""
        got = self._shells.get(id(parent))
        if got is None or got[0] is not parent or got[1] != skip:
            got = self._shells[id(parent)] = (parent, skip, _others(skip)(parent))
        return got[2]

    def child_moved(self, parent: Parent, el: etree._Element) -> None:
        got = self._shells.get(id(parent))
        if got is not None and got[0] is parent and el.tag not in got[1]:
            del self._shells[id(parent)]

    def entries(self, parent: Parent, tag: str, sn: SchemaNode) -> Entries:
        """`parent`'s entries of list `tag` by key."""
        k = (id(parent), tag)
        got = self._kept.get(k) or self._small.get(k)
        if got is not None:
            return got[1]
        d = Entries.of(parent, tag, sn)
        (self._kept if len(d) >= PERSIST_MIN else self._small)[k] = (parent, d)
        return d

    def known(self, parent: Parent, tag: str) -> Entries | None:
        k = (id(parent), tag)
        got = self._kept.get(k) or self._small.get(k)
        return None if got is None else got[1]

    def forget_small(self) -> None:
        self._small.clear()

    def forget_below(self, el: etree._Element) -> None:
        """`el` left the tree: drop the indexes of lists at or below it (kept ones are few)."""
        self.values.forget_below(el)
        for shell, (parent, _skip, _kids) in list(self._shells.items()):
            if parent is el or _is_below(parent, el):
                del self._shells[shell]
        for store in (self._kept, self._small):
            for k, (parent, _) in list(store.items()):
                if parent is el or (isinstance(parent, etree._Element) and _is_below(parent, el)):
                    del store[k]

    def clear(self) -> None:
        self._kept.clear()
        self._small.clear()
        self._shells.clear()
        self.values = ValueIndex()


def _is_below(node: etree._Element, anc: etree._Element) -> bool:
    return any(a is anc for a in node.iterancestors())


@dataclass(slots=True)
class Op:
    kind: str  # "ins", "rm", "txt"
    parent: Parent | None
    el: etree._Element
    sn: SchemaNode | None
    before: etree._Element | int | None = None  # ins: next sibling; rm: previous sibling / root index
    old: str | None = None
    new: str | None = None

    def at(self) -> Parent:
        """The parent an insertion or a removal changed (a text change has none)."""
        assert self.parent is not None, self.kind
        return self.parent


@dataclass
class OpLog:
    """The primitive mutations of one edit (or of a candidate's edits), applied in place."""

    index: KeyIndex
    ops: list[Op] = field(default_factory=list)
    applied: bool = True

    def insert(
        self, parent: Parent, el: etree._Element, sn: SchemaNode | None, before=None
    ) -> etree._Element:
        el = _insert(parent, el, before)
        self._indexed(parent, el, sn, add=True)
        self.index.values.touch(el)
        self.ops.append(Op("ins", parent, el, sn, before))
        return el

    def remove(self, parent: Parent, el: etree._Element, sn: SchemaNode | None) -> None:
        if isinstance(parent, Forest):
            where: etree._Element | int | None = parent.index(el)
        else:
            where = el.getprevious()
        self._indexed(parent, el, sn, add=False)
        parent.remove(el)
        self.index.forget_below(el)
        self.ops.append(Op("rm", parent, el, sn, where))

    def set_text(self, el: etree._Element, text: str | None, sn: SchemaNode | None) -> None:
        self.ops.append(Op("txt", None, el, sn, None, el.text, text))
        el.text = text
        self.index.values.touch(el)

    def restore(self, rm: Op) -> None:
        """Put back where it was what the removal `rm` took out (the tree as right after `rm`),
        recorded as an insertion."""
        parent, el = rm.at(), rm.el
        _put_back(parent, el, rm.before)
        before = rm.before if isinstance(parent, Forest) else el.getnext()
        self._indexed(parent, el, rm.sn, add=True)
        self.index.values.touch(el)
        self.ops.append(Op("ins", parent, el, rm.sn, before))

    def extend(self, other: OpLog) -> None:
        self.ops.extend(other.ops)

    # -- undo / redo ---------------------------------------------------------------------------------
    def undo(self) -> None:
        for op in reversed(self.ops):
            if op.kind == "ins":
                self._indexed(op.at(), op.el, op.sn, add=False)
                op.at().remove(op.el)
                self.index.forget_below(op.el)
            elif op.kind == "rm":
                _put_back(op.at(), op.el, op.before)
                self._indexed(op.at(), op.el, op.sn, add=True)
                self.index.values.touch(op.el)
            else:
                op.el.text = op.old
                self.index.values.touch(op.el)
        self.applied = False

    def redo(self) -> None:
        for op in self.ops:
            if op.kind == "ins":
                _insert(op.at(), op.el, op.before)
                self._indexed(op.at(), op.el, op.sn, add=True)
                self.index.values.touch(op.el)
            elif op.kind == "rm":
                self._indexed(op.at(), op.el, op.sn, add=False)
                op.at().remove(op.el)
                self.index.forget_below(op.el)
            else:
                op.el.text = op.new
                self.index.values.touch(op.el)
        self.applied = True

    def _indexed(self, parent: Parent, el: etree._Element, sn: SchemaNode | None, *, add: bool) -> None:
        self.index.child_moved(parent, el)
        if sn is None or sn.kind not in ("list", "leaf-list"):
            return
        d = self.index.known(parent, el.tag)
        if d is None:
            return
        if add:
            d.put(entry_key(el, sn), el)
        else:
            d.drop(entry_key(el, sn), el)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)


def _insert(parent: Parent, el: etree._Element, before) -> etree._Element:
    if isinstance(parent, Forest):
        if before is None:
            return parent.append(el)
        return parent.insert(before if isinstance(before, int) else parent.index(before), el)
    if before is None:
        parent.append(el)
    else:
        before.addprevious(el)
    return el


def _put_back(parent: Parent, el: etree._Element, where: etree._Element | int | None) -> None:
    """Insert `el` where a removal took it from: a root at index `where` of a Forest, else right after
    its previous sibling `where` (first when None)."""
    if isinstance(parent, Forest):
        assert isinstance(where, int)
        parent.insert(where, el)
    elif where is None:
        parent.insert(0, el)
    else:
        assert not isinstance(where, int)
        where.addnext(el)


def inverse(logs: list[OpLog], index: KeyIndex) -> OpLog:
    """An OpLog that undoes `logs` (applied one after the other) by the opposite mutations, applied
    and recorded like an edit: its keyed diff is what undoing them changes (a confirmed commit's
    rollback costs what the commit changed)."""
    out = OpLog(index)
    for log in reversed(logs):
        for op in reversed(log.ops):
            if op.kind == "ins":
                out.remove(op.at(), op.el, op.sn)
            elif op.kind == "rm":
                out.restore(op)
            else:
                out.set_text(op.el, op.old, op.sn)
    return out
