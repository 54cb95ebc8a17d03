"""Changes of data nodes as YANG-Push carries them: an instance path (`Step`s), its RESTCONF api-path
(RFC 8040 §3.5.3, the `target` of a YANG Patch edit, RFC 8072) and the edit's XML.

A path is a tuple of steps `(namespace, name, keys)` from a top-level node down to the changed node;
`keys` holds the (key-leaf, value) pairs of a list entry, empty otherwise.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from lxml import etree

from server.schema import Schema, SchemaNode
from server.tree import Forest, child_text

Step = tuple[str, str, tuple[tuple[str, str], ...]]
Value: TypeAlias = etree._Element | bytes | None
#: RFC 3986 sub-delims and pchar, minus "," "=" "/" (the key separators of an api-path)
_SAFE = "-._~!$&'()*+;:@"
#: nothing to percent-encode (addresses, most names)
_PLAIN = re.compile(r"[A-Za-z0-9._~:@-]*")


@dataclass(slots=True)
class Edit:
    """One change: `op` on the node at `steps`. `value` is the node after the change (an element, or a
    function building it when a subscriber first needs it; None from that function: the node is gone
    again and a later edit says so); `old` the node before a delete, for filters that match on it.
    `datastores`: the datastores the node belongs to (state: operational only)."""

    op: str
    steps: tuple[Step, ...]
    #: the node (an element or its XML), or a function returning either
    value: Value | Callable[[], Value] = None
    old: etree._Element | None = None
    datastores: frozenset[str] = frozenset({"operational"})
    _built: bool = field(default=False, repr=False)
    _path: str | None = field(default=None, repr=False)
    _spath: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)

    @property
    def schema_path(self) -> tuple[tuple[str, str], ...]:
        if self._spath is None:
            self._spath = tuple((ns, name) for ns, name, _ in self.steps)
        return self._spath

    def _value(self) -> Value:
        if not self._built:
            if callable(self.value):
                self.value = self.value()
            self._built = True
        return self.value  # a function's result once built

    def element(self) -> etree._Element | None:
        """The value as an element, built once (every subscription shares it; never mutate it)."""
        value = self._value()
        if isinstance(value, bytes):
            value = self.value = etree.fromstring(value)
        return value

    def xml(self) -> bytes | None:
        """The value serialised (what a subscription that sees all of it sends)."""
        value = self._value()
        if isinstance(value, etree._Element):
            value = self.value = etree.tostring(value)
        return value

    def target(self, schema: Schema) -> str:
        if self._path is None:
            self._path = api_path(self.steps, schema)
        return self._path


def steps_of(schema_path: str, keys: tuple[tuple[str, ...], ...], schema: Schema) -> tuple[Step, ...]:
    """The path of a node from its schema path (`/module:name/module:name...`, as a config `Change`
    gives it) and the key values of the list entries on it, outermost first."""
    values = iter(keys)
    out: list[Step] = []
    sn: SchemaNode | None = None
    for part in schema_path.strip("/").split("/"):
        module, _, name = part.rpartition(":")
        ns = schema.module_to_ns.get(module, "") if module else (sn.ns if sn is not None else "")
        sn = schema.root(ns, name) if not out else (sn.children.get((ns, name)) if sn is not None else None)
        step_keys: tuple[tuple[str, str], ...] = ()
        if sn is not None and sn.kind == "list":
            step_keys = tuple(zip(sn.keys, next(values), strict=True))
        elif sn is not None and sn.kind == "leaf-list":
            step_keys = (("", next(values)[0]),)
        out.append((ns, name, step_keys))
    return tuple(out)


def api_path(steps: tuple[Step, ...], schema: Schema) -> str:
    """`/module:name/name=key1,key2/...`: the module is named on the first step and where it changes."""
    parts, module = [], None
    for ns, name, keys in steps:
        mod = schema.ns_to_module.get(ns, ns)
        seg = f"{mod}:{name}" if mod != module else name
        module = mod
        if keys:
            seg += "=" + ",".join(
                v if _PLAIN.fullmatch(v) else urllib.parse.quote(v, safe=_SAFE) for _, v in keys
            )
        parts.append(seg)
    return "/" + "/".join(parts)


def wrap(steps: tuple[Step, ...], leaf: etree._Element | None) -> etree._Element:
    """The node (`leaf`, or its keys alone when None) inside its ancestors, each list entry with its keys:
    a one-path tree that filters and NACM evaluate like a datastore. Returns the top-level element."""
    top: etree._Element | None = None
    parent: etree._Element | None = None
    for i, (ns, name, keys) in enumerate(steps):
        last = i == len(steps) - 1
        if last and leaf is not None:
            el = leaf
        else:
            el = etree.Element(f"{{{ns}}}{name}", nsmap={None: ns} if parent is None else None)
            for k, v in keys:
                if k:
                    etree.SubElement(el, f"{{{ns}}}{k}").text = v
                else:
                    el.text = v
        if parent is None:
            top = el
        else:
            parent.append(el)
        parent = el
    assert top is not None
    return top


def find(data: Forest, steps: tuple[Step, ...]) -> etree._Element | None:
    """The node at `steps` in `data` (None when a filter or NACM removed it)."""
    level: Iterator[etree._Element] = iter(data)
    node = None
    for ns, name, keys in steps:
        tag = f"{{{ns}}}{name}"
        node = next((c for c in level if c.tag == tag and _keys_match(c, ns, keys)), None)
        if node is None:
            return None
        level = iter(node)
    return node


def _keys_match(el: etree._Element, ns: str, keys: tuple[tuple[str, str], ...]) -> bool:
    for k, v in keys:
        got = (el.text if not k else child_text(el, f"{{{ns}}}{k}")) or ""
        if got.strip() != v:
            return False
    return True
