"""RFC 7951 JSON request bodies straight to the XML elements the edit path takes, for plain data.

libyang's conversion (codec.json_to_xml: serialise the body again with its ancestors, parse it
against the schema, print it as XML, parse that) costs more than the rest of a one-node PATCH
outside the edit itself. Most bodies are plain: containers, lists and leaves of strings,
enumerations, 8- to 32-bit integers and booleans. Those are written here directly, from the
server's schema, each value checked by libyang's own type check (`lyd_value_validate`: patterns,
ranges, lengths, enumerations) exactly as its JSON parser checks it; the nodes come out in schema
order, keys first, as libyang prints them.

`convert` answers None whenever the body is not plain or is not right (an unknown or misplaced
member, a state node, a value of the wrong JSON type, a value the type refuses, a list entry without
its keys or twice in the body, anydata, metadata, a type whose canonical form may differ from what
was sent, a carriage return): the caller then takes libyang's path, which stores the same and
reports errors as it always did. tests/restconf/test_json_body.py compares the two conversions,
tests/restconf/test_restconf.py sends bodies through both and through NETCONF.
"""

from __future__ import annotations

import weakref
from typing import Any
from xml.sax.saxutils import escape

import libyang
from libyang.util import ffi, lib, str2c
from lxml import etree

from server.restconf.codec import parse_printed
from server.restconf.uri import Target
from server.schema import Schema, SchemaNode

#: the 8- to 32-bit integer types (a JSON number; the 64-bit ones and decimal64 are strings)
_INTS = frozenset(
    (
        libyang.Type.INT8,
        libyang.Type.INT16,
        libyang.Type.INT32,
        libyang.Type.UINT8,
        libyang.Type.UINT16,
        libyang.Type.UINT32,
    )
)
#: typedefs whose every valid value is its own canonical form (ietf-inet-types' IPv4 addresses:
#: the pattern allows no leading zeros); the built-in string and enumeration are too
_SAME_CANONICAL = frozenset(("string", "ipv4-address", "ipv4-address-no-zone"))
#: a leaf of the built-in string type in a module every server loads
_PLAIN_STRING_LEAF = "/ietf-netconf-acm:nacm/rule-list/rule/comment"


class _Leaf:
    """What the fast path needs of a leaf or leaf-list: its JSON kind and libyang's schema node."""

    __slots__ = ("kind", "snode")

    def __init__(self, kind: str, snode: Any) -> None:
        self.kind, self.snode = kind, snode


_CONVERTERS: weakref.WeakKeyDictionary[Schema, Converter] = weakref.WeakKeyDictionary()


def convert(schema: Schema, parent: Target, members: dict[str, Any]) -> list[etree._Element] | None:
    """Converter.convert with the schema's converter (made on first use)."""
    conv = _CONVERTERS.get(schema)
    if conv is None:
        conv = _CONVERTERS[schema] = Converter(schema)
    return conv.convert(parent, members)


class Converter:
    """The fast path over one schema; leaf facts are looked up in libyang once, on first use."""

    def __init__(self, schema: Schema) -> None:
        self.module_to_ns = schema.module_to_ns
        self.ctx = schema.ctx
        self._leaves: dict[SchemaNode, _Leaf | None] = {}
        self._order: dict[SchemaNode, dict[SchemaNode, int]] = {}  # a node's children → schema position
        self._plain_plugins: set[int] = set()  # type plugins (addresses) that keep values as written
        seed = lib.lys_find_path(self.ctx.cdata, ffi.NULL, str2c(_PLAIN_STRING_LEAF), False)
        if seed != ffi.NULL:  # the built-in string's plugin, which typedefs of string share
            self._same_canonical(seed, ffi.cast("struct lysc_node_leaf *", seed).type)

    def convert(self, parent: Target, members: dict[str, Any]) -> list[etree._Element] | None:
        """The elements of `members` (a JSON object's members) placed under `parent`, or None."""
        psn = parent.node
        if psn is None or psn.kind not in ("container", "list") or not self._keys_ok(parent):
            return None
        out = ["<h>"]
        if not self._fill(psn, members, out, top=True):
            return None
        out.append("</h>")
        try:  # names from the schema only: parsed on this thread (codec.parse_printed)
            holder = parse_printed("".join(out).encode())
        except (etree.XMLSyntaxError, ValueError):  # a character XML cannot hold: libyang's path says it
            return None
        return list(holder)

    def _keys_ok(self, parent: Target) -> bool:
        """The URI's key values pass their types (libyang's parse checks them in the full path)."""
        for step in parent.steps:
            if step.sn.kind != "list" or step.keys is None:
                continue
            for name, value in zip(step.sn.keys, step.keys, strict=True):
                ksn = step.sn.children.get((step.sn.ns, name))
                if ksn is None or self._text(ksn, value) is None:
                    return False
        return True

    def _fill(self, psn: SchemaNode, obj: dict[str, Any], out: list[str], top: bool = False) -> bool:
        """Write `obj`'s members (children of `psn`) as XML into `out`, in schema order."""
        found: list[tuple[SchemaNode, Any]] = []
        for name, value in obj.items():
            module, sep, local = name.rpartition(":")
            if sep:
                ns = self.module_to_ns.get(module)
                if ns is None or (ns == psn.ns and not top):  # RFC 7951 §4: qualified only on a change
                    return False
            else:
                if top:
                    return False
                ns = psn.ns
            sn = psn.children.get((ns, local))  # "@..." metadata: no such child
            if sn is None or not sn.config or (top and psn.kind == "list" and local in psn.keys):
                return False  # a key of the entry the URI names: libyang's path decides
            found.append((sn, value))
        if len(found) > 1:  # as libyang prints: in schema order
            order = self._order.get(psn)
            if order is None:
                order = self._order[psn] = {c: i for i, c in enumerate(psn.children.values())}
            found.sort(key=lambda item: order[item[0]])
        return all(self._node(sn, value, out, top or sn.ns != psn.ns) for sn, value in found)

    def _node(self, sn: SchemaNode, value: Any, out: list[str], declare: bool) -> bool:
        start = f'<{sn.name} xmlns="{sn.ns}">' if declare else f"<{sn.name}>"
        end = f"</{sn.name}>"
        kind = sn.kind
        if kind == "leaf":
            return self._leaf(sn, value, out, start, end)
        if kind == "container":
            if not isinstance(value, dict):
                return False
            out.append(start)
            ok = self._fill(sn, value, out)
            out.append(end)
            return ok
        if kind == "leaf-list":
            if not isinstance(value, list) or not value or len(set(map(repr, value))) != len(value):
                return False
            return all(self._leaf(sn, v, out, start, end) for v in value)
        if kind != "list" or not isinstance(value, list) or not value:
            return False  # anydata, or not a JSON array: libyang's path
        keys = sn.keys
        seen: set[tuple[str, ...]] = set()
        for entry in value:
            if not isinstance(entry, dict) or any(k not in entry for k in keys):
                return False
            ident = tuple(repr(entry[k]) for k in keys)
            if ident in seen:  # twice in one body
                return False
            seen.add(ident)
            out.append(start)
            for k in keys:  # keys first, in their order
                if not self._leaf(sn.children[(sn.ns, k)], entry[k], out, f"<{k}>", f"</{k}>"):
                    return False
            rest = {m: v for m, v in entry.items() if m not in keys}
            if rest and not self._fill(sn, rest, out):
                return False
            out.append(end)
        return True

    def _leaf(self, sn: SchemaNode, value: Any, out: list[str], start: str, end: str) -> bool:
        text = self._text(sn, value)
        if text is None:
            return False
        out += (start, escape(text), end)
        return True

    def _text(self, sn: SchemaNode, value: Any) -> str | None:
        """The XML text of a JSON value of leaf `sn`, when its JSON type is right and libyang's type
        check accepts it; None otherwise."""
        leaf = self._leaf_of(sn)
        if leaf is None:
            return None
        if leaf.kind == "str" and isinstance(value, str):
            text = value
        elif leaf.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        elif leaf.kind == "bool" and isinstance(value, bool):
            text = "true" if value else "false"
        else:
            return None
        if "\r" in text:  # libyang's XML round trip makes it a LF: its path stores what it always did
            return None
        try:
            raw = text.encode()
        except UnicodeEncodeError:  # a lone surrogate (JSON allows its escape): libyang's path refuses it
            return None
        ret = lib.lyd_value_validate(self.ctx.cdata, leaf.snode, raw, len(raw), ffi.NULL, ffi.NULL, ffi.NULL)
        if ret != lib.LY_SUCCESS:
            lib.ly_err_clean(self.ctx.cdata, ffi.NULL)  # libyang's own parse reports it, alone
            return None
        return text

    def _leaf_of(self, sn: SchemaNode) -> _Leaf | None:
        try:
            return self._leaves[sn]
        except KeyError:
            leaf = self._leaves[sn] = self._lookup(sn)
            return leaf

    def _lookup(self, sn: SchemaNode) -> _Leaf | None:
        if sn.kind not in ("leaf", "leaf-list"):
            return None
        names: list[str] = []
        node: SchemaNode | None = sn
        while node is not None:
            parent = node.parent
            names.append(
                node.name if parent is not None and parent.ns == node.ns else f"{node.module}:{node.name}"
            )
            node = parent
        snode = lib.lys_find_path(self.ctx.cdata, ffi.NULL, str2c("/" + "/".join(reversed(names))), False)
        if snode == ffi.NULL:
            return None
        ctype = ffi.cast("struct lysc_node_leaf *", snode).type  # a leaf-list's type is at the same place
        base = ctype.basetype
        if base == libyang.Type.BOOL:
            return _Leaf("bool", snode)
        if base in _INTS:
            return _Leaf("int", snode)
        if base == libyang.Type.ENUM or (base == libyang.Type.STRING and self._same_canonical(snode, ctype)):
            return _Leaf("str", snode)
        return None

    def _same_canonical(self, snode: Any, ctype: Any) -> bool:
        """Does the leaf's type store every valid value as it was written? Its type plugin is the
        built-in string's (no canonical form of its own), or that of an _SAME_CANONICAL typedef."""
        plugin = int(ffi.cast("uintptr_t", ctype.plugin))
        if plugin in self._plain_plugins:
            return True
        leaf = libyang.SNode.new(self.ctx, snode)
        if not isinstance(leaf, libyang.SLeaf | libyang.SLeafList):
            return False
        if leaf.type().name().rpartition(":")[2] in _SAME_CANONICAL:
            self._plain_plugins.add(plugin)
            return True
        return False
