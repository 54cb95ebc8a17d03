"""The edit-config engine (RFC 6241 §7.2) over a Forest, guided by the schema.

Operations merge / replace / create / delete / remove, default-operation merge / replace / none and the
three error-options. The caller passes a *copy* of the target: the engine mutates it freely and the
datastore layer decides whether to keep it. Children of each parent are indexed once (list entries by
key tuple, leaf-list entries by value), so a 100k-entry edit stays linear.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeAlias

from lxml import etree

from server.errors import RpcError
from server.oplog import Entries, KeyIndex, OpLog
from server.schema import Schema, SchemaNode
from server.tree import Forest, child
from server.xmlns import NC_NS, WD_ATTR_NS
from server.xmlsafe import new_parser

OP_ATTR = f"{{{NC_NS}}}operation"
YANG_NS = "urn:ietf:params:xml:ns:yang:1"
#: RFC 7950 §7.8.6 / §7.7.9: where an entry of an ordered-by user list or leaf-list goes
YANG_INSERT, YANG_KEY, YANG_VALUE = f"{{{YANG_NS}}}insert", f"{{{YANG_NS}}}key", f"{{{YANG_NS}}}value"
_NOWHERE = object()  # _position could not place the entry (the error is reported)
_KEY_PRED = re.compile(r"""\[\s*(?:[\w.-]+:)?([\w.-]+)\s*=\s*(?:'([^']*)'|"([^"]*)")\s*\]""")
WD_DEFAULT = f"{{{WD_ATTR_NS}}}default"
EDIT_OPS = frozenset({"merge", "replace", "create", "delete", "remove"})
DEFAULT_OPS = frozenset({"merge", "replace", "none"})
ERROR_OPTIONS = frozenset({"stop-on-error", "continue-on-error", "rollback-on-error"})

Parent: TypeAlias = "etree._Element | Forest"


def split_tag(tag: str) -> tuple[str | None, str]:
    if tag[:1] == "{":
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


class PathBuilder:
    """Builds error-path instance-identifiers with the request's own prefixes."""

    def __init__(self, schema: Schema, request_nsmap: Mapping[str | None, str]) -> None:
        self.schema = schema
        self.prefix_of: dict[str, str] = {}
        for pfx, ns in request_nsmap.items():
            if pfx and ns not in self.prefix_of:
                self.prefix_of[ns] = pfx
        self.nsmap: dict[str, str] = {}

    def prefix(self, ns: str | None, hint: str | None = None) -> str | None:
        if ns is None:
            return None
        if hint:
            self.nsmap[hint] = ns
            return hint
        pfx = self.prefix_of.get(ns)
        if pfx is None:
            mod = self.schema.ns_to_module.get(ns)
            pfx = self.schema.module_prefix.get(mod, "ns") if mod else "ns"
            self.prefix_of[ns] = pfx
        self.nsmap[pfx] = ns
        return pfx

    def step(
        self, ns: str | None, name: str, keys: Iterable[tuple[str, str]] = (), hint: str | None = None
    ) -> str:
        """One path step; `hint` is the prefix the request itself used on that element."""
        pfx = self.prefix(ns, hint)
        qn = f"{pfx}:{name}" if pfx else name
        preds = "".join(f"[{qn.split(':')[0] + ':' if pfx else ''}{k}={_quote(v)}]" for k, v in keys)
        return f"/{qn}{preds}"


def _quote(v: str) -> str:
    return f"'{v}'" if "'" not in v else f'"{v}"'


class _Index:
    """Children of one parent: list / leaf-list entries by key through the datastore's KeyIndex
    (built from `iterchildren(tag)`, C-level filtering, and kept for large lists)."""

    __slots__ = ("keys", "parent")

    def __init__(self, parent: Parent, keys: KeyIndex) -> None:
        self.parent, self.keys = parent, keys

    def entries(self, tag: str, sn: SchemaNode) -> Entries:
        return self.keys.entries(self.parent, tag, sn)


class EditEngine:
    """Applies one <config> to a target Forest; collects RpcErrors according to the error-option."""

    def __init__(
        self,
        schema: Schema,
        *,
        error_option: str = "stop-on-error",
        may_write: Callable[[SchemaNode], bool] | None = None,
        request_nsmap: Mapping[str | None, str] | None = None,
        log: OpLog | None = None,
    ) -> None:
        self.schema = schema
        #: every mutation, in place and reversible (the caller undoes it when the edit is refused)
        self.log = log if log is not None else OpLog(KeyIndex())
        self.error_option = error_option
        self.may_write = may_write or (lambda _sn: True)
        self.paths = PathBuilder(schema, request_nsmap or {})
        self.errors: list[RpcError] = []
        self._denied_tags: set[str] | None = None
        self.changed = False

    # -- entry point ---------------------------------------------------------------------------------
    def apply(self, target: Forest, config: etree._Element, default_op: str = "merge") -> list[RpcError]:
        """Apply every child of `config` to `target`; return the errors (empty list = success)."""
        if default_op == "replace":
            # default-operation replace: the config becomes the whole datastore content.
            for el in config:
                if isinstance(el.tag, str):
                    el.set(OP_ATTR, el.get(OP_ATTR, "replace"))
            for root in list(target):
                if not any(self._same_root(root, el) for el in config if isinstance(el.tag, str)):
                    sn = self._schema_for(None, root)
                    if sn is not None and sn.deny_below and not self._subtree_writable(root, sn):
                        self._fail(self._denied("", sn))
                        continue
                    self.log.remove(target, root, sn)
                    self.changed = True
            default_op = "merge"
        for el in config:
            if not isinstance(el.tag, str):
                continue
            try:
                self._edit(target, el, None, default_op, "")
            except RpcError as err:
                if self.error_option != "continue-on-error":
                    return [*self.errors, err] if self.errors else err.all()
                self.errors.append(err)
        return self.errors

    # -- helpers -------------------------------------------------------------------------------------
    def _fail(self, err: RpcError) -> None:
        if self.error_option == "continue-on-error":
            self.errors.append(err)
            return
        raise err

    def _err(
        self, tag: str, msg: str, path: str, bad: str | None = None, app_tag: str | None = None
    ) -> RpcError:
        info = (("bad-element", bad),) if bad else ()
        return RpcError(
            tag,
            msg,
            type="application",
            path=path or "/",
            path_nsmap=dict(self.paths.nsmap),
            info=info,
            app_tag=app_tag,
        )

    def _denied(self, path: str, sn: SchemaNode) -> RpcError:
        return RpcError(
            "access-denied",
            f"access to {sn.name} denied by NACM (default-deny)",
            type="application",
            path=path or "/",
            path_nsmap=dict(self.paths.nsmap),
        )

    def _same_root(self, root: etree._Element, el: etree._Element) -> bool:
        return root.tag == el.tag

    def _schema_for(self, parent_sn: SchemaNode | None, el: etree._Element) -> SchemaNode | None:
        ns, name = split_tag(el.tag)
        if parent_sn is None:
            return self.schema.root(ns, name) if ns else None
        return parent_sn.child(ns, name) if ns else None

    def _keys_of(self, el: etree._Element, sn: SchemaNode) -> tuple[str, ...] | None:
        out = []
        for k in sn.keys:
            kel = el.find(f"{{{sn.ns}}}{k}")
            if kel is None:
                return None
            out.append((kel.text or "").strip())
        return tuple(out)

    def _index(self, parent: Parent, parent_sn: SchemaNode | None) -> _Index:
        return _Index(parent, self.log.index)

    def _lookup(self, idx: _Index, el: etree._Element, sn: SchemaNode, key: tuple[str, ...] | None):
        if sn.kind in ("list", "leaf-list"):
            return idx.entries(el.tag, sn).get(key) if key is not None else None
        parent = idx.parent
        return parent.find(el.tag) if isinstance(parent, Forest) else child(parent, el.tag)

    def _add(self, parent: Parent, idx: _Index, new: etree._Element, sn: SchemaNode, key, before=None):
        new = self.log.insert(parent, new, sn, before)
        self.changed = True
        return new

    def _drop(self, parent: Parent, idx: _Index, old: etree._Element, sn: SchemaNode, key) -> None:
        self.log.remove(parent, old, sn)
        self.changed = True

    def _subtree_writable(self, el: etree._Element, sn: SchemaNode) -> bool:
        """False when `el` (existing data) holds a node this user may not write."""
        if not sn.deny_below:
            return True
        if (sn.deny_all or sn.deny_write) and not self.may_write(sn):
            return False
        for ch in el:
            if isinstance(ch.tag, str):
                csn = self._schema_for(sn, ch)
                if csn is not None and not self._subtree_writable(ch, csn):
                    return False
        return True

    # -- the recursive edit --------------------------------------------------------------------------
    def _edit(
        self, parent: Parent, el: etree._Element, parent_sn: SchemaNode | None, inherited: str, path: str
    ):
        ns, name = split_tag(el.tag)
        sn = self._schema_for(parent_sn, el)
        if sn is None:
            if ns is not None and parent_sn is None and ns not in self.schema.ns_to_module:
                err = RpcError(
                    "unknown-namespace",
                    f"unknown namespace {ns}",
                    type="application",
                    info=(("bad-element", name), ("bad-namespace", ns)),
                )
            else:
                err = self._err("unknown-element", f"unknown element {name}", path or "/", bad=name)
            return self._fail(err)
        op = el.get(OP_ATTR)
        if op is not None and op not in EDIT_OPS:
            return self._fail(
                RpcError(
                    "bad-attribute",
                    f"bad operation {op!r}",
                    type="protocol",
                    info=(("bad-attribute", "operation"), ("bad-element", name)),
                )
            )
        op = op or inherited
        if sn.kind == "leaf" and el.get(WD_DEFAULT) in ("true", "1"):
            # RFC 6243 §4.5.3: a leaf tagged wd:default="true" asks for the schema default; keeping
            # it explicit would contradict basic-mode explicit, so it is removed (its default applies)
            if sn.default is None or (el.text or "").strip() != sn.default:
                return self._fail(
                    self._err(
                        "invalid-value", f"{name}: wd:default only with the default value", path, bad=name
                    )
                )
            if op in ("merge", "replace", "create"):
                op = "remove"
        key: tuple[str, ...] | None = None
        keys_pairs: list[tuple[str, str]] = []
        value_predicate = ""  # a leaf-list entry's path names its value
        if sn.kind == "list":
            key = self._keys_of(el, sn)
            if key is None:
                missing = next(k for k in sn.keys if el.find(f"{{{sn.ns}}}{k}") is None)
                return self._fail(
                    RpcError(
                        "missing-element",
                        f"list {name} entry lacks key {missing}",
                        type="protocol",
                        path=(path + self.paths.step(ns, name, (), el.prefix)) or "/",
                        path_nsmap=dict(self.paths.nsmap),
                        info=(("bad-element", missing),),
                    )
                )
            keys_pairs = list(zip(sn.keys, key, strict=True))
        elif sn.kind == "leaf-list":
            key = ((el.text or "").strip(),)
            value_predicate = f"[.={_quote(key[0])}]"
        my_path = path + self.paths.step(ns, name, keys_pairs, el.prefix) + value_predicate
        if not sn.config:
            return self._fail(self._err("invalid-value", f"{name} is state data, not configuration", my_path))
        idx = self._index(parent, parent_sn)
        existing = self._lookup(idx, el, sn, key)

        if op in ("delete", "remove"):
            if existing is None:
                if op == "delete":
                    self._fail(self._err("data-missing", f"{name} does not exist", my_path))
                return None
            if not self._subtree_writable(existing, sn):
                return self._fail(self._denied(my_path, sn))
            if sn.kind == "leaf" and sn.parent is not None and sn.name in sn.parent.keys:
                return self._fail(self._err("invalid-value", f"cannot delete list key {name}", my_path))
            self._drop(parent, idx, existing, sn, key)
            return None
        if (sn.deny_all or sn.deny_write) and not self.may_write(sn):
            return self._fail(self._denied(my_path, sn))
        if op == "create" and existing is not None:
            return self._fail(self._err("data-exists", f"{name} already exists", my_path))
        insert = el.get(YANG_INSERT)
        if op == "replace" and existing is not None:
            if not self._subtree_writable(existing, sn):
                return self._fail(self._denied(my_path, sn))
            nxt = existing.getnext() if not isinstance(parent, Forest) else None
            if insert is not None:
                place = self._position(parent, idx, el, sn, insert, my_path, existing)
                if place is _NOWHERE:
                    return None
                nxt = nxt if place is existing else place
            self._drop(parent, idx, existing, sn, key)
            return self._create(parent, idx, el, sn, key, "merge", my_path, before=nxt)
        if insert is not None and op != "none":
            before = self._position(parent, idx, el, sn, insert, my_path, existing)
            if before is _NOWHERE:
                return None
            if existing is not None:  # a move (RFC 7950 §7.8.6), unless it is in that place already
                if before is not existing:
                    self._drop(parent, idx, existing, sn, key)
                    existing = self._add(parent, idx, existing, sn, key, before)
            else:
                return self._create(
                    parent, idx, el, sn, key, "merge" if op == "create" else op, my_path, before=before
                )
        if existing is None:
            if op == "none":
                if sn.kind in ("leaf", "leaf-list"):
                    return None
                # create the parent only if a descendant edit creates something
                node = self._create(parent, idx, el, sn, key, "none", my_path, shell=True)
                if node is not None and len(node) <= len(sn.keys):
                    self._drop(parent, idx, node, sn, key)
                return None
            return self._create(parent, idx, el, sn, key, "merge" if op == "create" else op, my_path)
        # merge / none / create-not-existing handled; existing node: merge into it
        if sn.kind == "leaf":
            if op == "merge" or op == "create":
                text, extra = _leaf_value(el, existing)
                if (existing.text or "") != (text or ""):
                    parent_el = existing.getparent()
                    if extra and parent_el is not None:  # a prefix the stored tree lacks: a new leaf
                        repl = etree.Element(el.tag, nsmap={el.prefix: sn.ns, **extra})
                        repl.text = text
                        nxt = existing.getnext()
                        self.log.remove(parent_el, existing, sn)
                        self.log.insert(parent_el, repl, sn, before=nxt)
                    else:
                        self.log.set_text(existing, text, sn)
                    self.changed = True
            return None
        if sn.kind == "leaf-list":
            return None
        if sn.kind == "anydata":
            if op in ("merge", "create"):
                self._drop(parent, idx, existing, sn, key)
                self._create(parent, idx, el, sn, key, "merge", my_path)
            return None
        for ch in el:
            if isinstance(ch.tag, str):
                if sn.kind == "list" and ch.tag.rpartition("}")[2] in sn.keys and ch.get(OP_ATTR) is None:
                    continue
                self._edit(existing, ch, sn, op, my_path)
        return None

    def _position(
        self,
        parent: Parent,
        idx: _Index,
        el: etree._Element,
        sn: SchemaNode,
        insert: str,
        path: str,
        moving: etree._Element | None = None,
    ):
        """Where an entry with the YANG `insert` attribute goes: the element to insert it before
        (`moving` itself: it is there already), None: at the end, or _NOWHERE after reporting why it
        cannot (RFC 7950 §7.8.6, §15.7). `moving`: the entry when it exists (a move)."""
        name = sn.name
        if not sn.user_ordered or sn.kind not in ("list", "leaf-list"):
            self._fail(self._bad_insert("insert", name, f"{name} is not ordered-by user", path))
            return _NOWHERE
        if insert not in ("first", "last", "before", "after"):
            self._fail(self._bad_insert("insert", name, f"bad insert value {insert!r}", path))
            return _NOWHERE
        entries = [e for e in parent.iterchildren(el.tag) if e is not moving]
        if insert == "first":
            return entries[0] if entries else None
        if insert == "last":
            return entries[-1].getnext() if entries and not isinstance(parent, Forest) else None
        attr = YANG_KEY if sn.kind == "list" else YANG_VALUE
        ref = el.get(attr)
        anchor_key = _insert_key(ref, sn) if ref is not None else None
        anchor = idx.entries(el.tag, sn).get(anchor_key) if anchor_key is not None else None
        if anchor is None or anchor is moving:
            what = attr.rpartition("}")[2]
            self._fail(self._bad_insert(what, name, f"{what} {ref!r} names no entry of {name}", path))
            return _NOWHERE
        if insert == "before":
            return anchor
        return anchor.getnext() if not isinstance(parent, Forest) else None

    def _bad_insert(self, attr: str, name: str, message: str, path: str) -> RpcError:
        return RpcError(
            "bad-attribute",
            message,
            type="application",
            app_tag="missing-instance" if attr != "insert" else None,
            path=path or "/",
            path_nsmap=dict(self.paths.nsmap),
            info=(("bad-attribute", attr), ("bad-element", name)),
        )

    def _create(
        self, parent, idx, el, sn: SchemaNode, key, child_op: str, path: str, before=None, shell=False
    ):
        """Create `el` under parent. Fast path: a subtree without operation attributes is copied whole."""
        if not shell and sn.kind in ("leaf", "leaf-list", "anydata"):
            text, extra = _leaf_value(el, parent)
            new = etree.Element(el.tag, nsmap={el.prefix: sn.ns, **extra})
            new.text = text
            if sn.kind == "anydata":
                new = copy.deepcopy(el)
                new.attrib.pop(OP_ATTR, None)
            return self._add(parent, idx, new, sn, key, before)
        if not shell and self._plain_subtree(el, sn, path):
            new = _clean_copy(el, sn, parent)
            return self._add(parent, idx, new, sn, key, before)
        if self.errors and self.error_option != "continue-on-error":
            return None
        new = etree.Element(el.tag, nsmap={el.prefix: sn.ns})
        for k in sn.keys:
            kel = el.find(f"{{{sn.ns}}}{k}")
            etree.SubElement(new, kel.tag).text = kel.text
        new = self._add(parent, idx, new, sn, key, before)
        for ch in el:
            if isinstance(ch.tag, str):
                if sn.kind == "list" and ch.tag.rpartition("}")[2] in sn.keys and ch.get(OP_ATTR) is None:
                    continue
                self._edit(new, ch, sn, child_op if child_op != "create" else "merge", path)
        return new

    def _plain_subtree(self, el: etree._Element, sn: SchemaNode, path: str) -> bool:
        """True when `el`'s subtree can be copied whole: no operation attributes below it and no node
        this user may not write. Checked in C (XPath / tag iteration); unknown elements, state data,
        missing inner keys and duplicates are left to libyang, which validates the whole result."""
        if not sn.config or (_HAS_ATTRIBUTE(el) and _HAS_OP(el)):
            return False
        if sn.kind == "list" and any(el.find(f"{{{sn.ns}}}{k}") is None for k in sn.keys):
            return False  # the slow path reports missing-element with a path
        if self._denied_tags is None:
            self._denied_tags = {
                f"{{{n.ns}}}{n.name}" for n in self.schema.deny_nodes if not self.may_write(n)
            }
        if self._denied_tags:
            for _ in el.iter(*self._denied_tags):
                return False
        return True


def _insert_key(ref: str, sn: SchemaNode) -> tuple[str, ...] | None:
    """The key tuple of a `yang:key` predicate string ("[name='a']") or a `yang:value`."""
    if sn.kind == "leaf-list":
        return (ref.strip(),)
    found = {
        m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _KEY_PRED.finditer(ref)
    }
    if set(found) != set(sn.keys):
        return None
    return tuple(found[k] for k in sn.keys)


_HAS_OP = etree.XPath(  # below the element itself (its own operation attribute is consumed)
    "boolean(.//*/@nc:operation | .//*/@wd:default | .//*/@yang:insert)",
    namespaces={"nc": NC_NS, "wd": WD_ATTR_NS, "yang": YANG_NS},
)
#: any attribute below the element: one walk, half the cost of _HAS_OP's union (a bulk load has none)
_HAS_ATTRIBUTE = etree.XPath("boolean(.//*/@*)")


_PREFIX_USE = re.compile(r"(?<![\w.:-])([A-Za-z_][\w.-]*):(?=[A-Za-z_])")


def _leaf_value(el: etree._Element, dest) -> tuple[str | None, dict[str, str]]:
    """A leaf's text for the stored tree at `dest`: prefixes in the value (instance-identifier,
    identityref) rewritten to the ones `dest` already binds to the same namespace (lxml drops a
    declaration that repeats an ancestor's namespace); the declarations still needed come back."""
    text = el.text
    if not text or ":" not in text:
        return text, {}
    used = {p for p in _PREFIX_USE.findall(text) if p in el.nsmap}
    if not used:
        return text, {}
    scope = dest.nsmap if isinstance(dest, etree._Element) else {}
    by_uri = {u: p for p, u in scope.items() if p}
    extra: dict[str, str] = {}

    def swap(m: re.Match) -> str:
        p = m.group(1)
        if p not in used:
            return m.group(0)
        q = by_uri.get(el.nsmap[p])
        if q is None:
            extra[p] = el.nsmap[p]
            return m.group(0)
        return f"{q}:"

    return _PREFIX_USE.sub(swap, text), extra


#: a new subtree of more elements than this is copied by serialising and parsing it
_LARGE_SUBTREE = etree.XPath("boolean(descendant::*[10001])")


def _copy(el: etree._Element) -> etree._Element:
    """A copy of `el` for the datastore. A large one is parsed from its serialisation: the parser keeps
    a short text inside its node (libxml2's compact text nodes) where a deep copy allocates every
    text apart (100k mobile nodes created whole: 10 MB less, 0.03-0.06 s more CPU)."""
    if _LARGE_SUBTREE(el):
        return etree.fromstring(etree.tostring(el, with_tail=False), new_parser(huge_tree=True))
    return copy.deepcopy(el)


def _clean_copy(el: etree._Element, sn: SchemaNode, dest=None) -> etree._Element:
    """Copy a new subtree, list keys moved first in every entry (RFC 7950 §7.8.5 XML encoding)."""
    new = _copy(el)
    for attr in (OP_ATTR, YANG_INSERT, YANG_KEY, YANG_VALUE):
        if attr in new.attrib:
            del new.attrib[attr]
    # drop declarations only the request envelope needed (xmlns:nc), keeping those that values use
    # (instance-identifier and identityref values such as a NACM rule's path: `/m:virtual-routers`)
    declared = _declared(el)
    keep = _value_prefixes(declared, new)
    missing = {p: declared[p] for p in keep if p not in new.nsmap}
    if missing:  # declared on an ancestor in the request, or dropped by the copy: declare it on the copy
        root = etree.Element(new.tag, attrib=dict(new.attrib), nsmap={**new.nsmap, **missing})
        root.text = new.text
        root.extend(list(new))
        new = root
    if keep and isinstance(dest, etree._Element):  # values naming a namespace dest binds otherwise
        bound = {u for p, u in dest.nsmap.items() if p}
        if any(new.nsmap.get(p) in bound and dest.nsmap.get(p) != new.nsmap.get(p) for p in keep):
            for leaf in new.iter():
                if len(leaf) == 0 and leaf.text and ":" in leaf.text:
                    leaf.text = _leaf_value(leaf, dest)[0]
    etree.cleanup_namespaces(new, keep_ns_prefixes=keep or None)
    if sn.kind == "list" and sn.keys:
        _keys_first(new, sn)
    _entries_keys_first(new, _lists_below(sn))
    return new


def _declared(el: etree._Element) -> dict[str, str]:
    """The prefixes declared for `el` (a request's subtree), in the request around it or inside it:
    its copy drops an inner declaration that repeats an outer namespace
    (`xmlns:sn` inside a default namespace `sn` names), a value may still use it."""
    declared = {p: u for p, u in el.nsmap.items() if p}
    for _event, (prefix, uri) in etree.iterwalk(el, events=("start-ns",)):
        if prefix:
            declared.setdefault(prefix, uri)
    return declared


def _value_prefixes(declared: dict[str, str], new: etree._Element) -> set[str]:
    """The prefixes among `declared` that values in `new` use: only a declared prefix can matter.
    The text is searched only when there is one (a bulk load of 100k entries usually declares none)."""
    if not declared:
        return set()
    text = " ".join(new.itertext())  # apart: "1" then "hn:https" must not read as "1hn:https"
    if not any(f"{p}:" in text for p in declared):
        return set()
    return {p for p in _PREFIX_USE.findall(text) if p in declared}


def _entries_keys_first(new: etree._Element, lists: list[SchemaNode]) -> None:
    """Every entry of `lists` below `new` with its keys first. A one-key list is checked from its key
    elements (one walk of the tree, nothing built for an entry already in order); others entry by entry."""
    by_first: dict[str, list[SchemaNode]] = {}
    for lsn in lists:
        if len(lsn.keys) == 1:
            by_first.setdefault(f"{{{lsn.ns}}}{lsn.keys[0]}", []).append(lsn)
        else:
            for entry in new.iter(f"{{{lsn.ns}}}{lsn.name}"):
                if entry is not new:
                    _keys_first(entry, lsn)
    if not by_first:
        return
    for key in new.iter(*by_first):
        if key.getprevious() is None:
            continue  # first in its parent: whoever's key it is, it is in place
        entry = key.getparent()
        for lsn in by_first[key.tag]:
            if entry is not None and entry is not new and entry.tag == f"{{{lsn.ns}}}{lsn.name}":
                _keys_first(entry, lsn)


def _lists_below(sn: SchemaNode) -> list[SchemaNode]:
    """Keyed lists strictly below `sn` (cached on the schema node)."""
    got = sn.lists_below
    if got is None:
        got = []
        stack = list(sn.children.values())
        while stack:
            n = stack.pop()
            if n.kind == "list" and n.keys:
                got.append(n)
            stack.extend(n.children.values())
        sn.lists_below = got
    return got


def _keys_first(el: etree._Element, sn: SchemaNode) -> None:
    for i, k in enumerate(sn.keys):
        kel = el.find(f"{{{sn.ns}}}{k}")
        if kel is not None and el.index(kel) != i:
            el.insert(i, kel)
