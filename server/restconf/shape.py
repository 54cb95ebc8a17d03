"""The `depth` and `fields` query parameters (RFC 8040 §4.8.2, §4.8.3) applied to reply XML.

Both work on the target resource's element(s); list keys always stay (an entry without its keys
names nothing, and libyang would not encode it)."""

from __future__ import annotations

from lxml import etree

from server.errors import RpcError
from server.schema import Schema, SchemaNode

#: a parsed `fields` expression: child (ns or None, name) → its own sub-selection (None: all of it)
Fields = dict[tuple[str | None, str], "Fields | None"]


def _bad(message: str) -> RpcError:
    return RpcError("invalid-value", message, type="protocol", info=(("bad-attribute", "fields"),))


def parse_fields(text: str, schema_ns: dict[str, str]) -> Fields:
    """fields-expr = path "(" fields-expr ")" / path ";" fields-expr / path; path = id *("/" id)."""
    pos = 0

    def expr() -> Fields:
        nonlocal pos
        out: Fields = {}
        while True:
            names = []
            start = pos
            while pos < len(text) and text[pos] not in ";()":
                pos += 1
            for seg in text[start:pos].split("/"):
                prefix, sep, name = seg.partition(":")
                mod: str | None = prefix
                if not sep:
                    mod, name = None, seg
                if not name or (mod is not None and mod not in schema_ns):
                    raise _bad(f"bad fields path {text[start:pos]!r}")
                names.append((schema_ns[mod] if mod else None, name))
            sub: Fields | None = None
            if pos < len(text) and text[pos] == "(":
                pos += 1
                sub = expr()
                if pos >= len(text) or text[pos] != ")":
                    raise _bad("unbalanced parentheses in fields")
                pos += 1
            node = out
            for n in names[:-1]:
                nxt = node.get(n)
                if nxt is None:
                    nxt = node[n] = {}
                node = nxt
            last = names[-1]
            if last in node and node[last] is not None and sub is not None:
                node[last].update(sub)  # type: ignore[union-attr]
            else:
                node[last] = sub if last not in node or sub is not None else node[last]
            if pos < len(text) and text[pos] == ";":
                pos += 1
                continue
            return out

    result = expr()
    if pos != len(text):
        raise _bad(f"unexpected {text[pos]!r} in fields")
    return result


def check_fields(fields: Fields, sn: SchemaNode | None, schema: Schema) -> None:
    """Every name of `fields` must be a child of its node in the schema (400 otherwise)."""
    for (ns, name), sub in fields.items():
        child = schema.root(ns, name) if sn is None else sn.child(ns, name)
        if child is None:
            raise _bad(f"fields: {name} is not a child of {sn.name if sn else 'the datastore'}")
        if sub is not None:
            check_fields(sub, child, schema)


def _local(el: etree._Element) -> tuple[str, str]:
    q = etree.QName(el)
    return q.namespace or "", q.localname


def _child_sn(sn: SchemaNode | None, el: etree._Element, schema: Schema) -> SchemaNode | None:
    ns, name = _local(el)
    return schema.root(ns, name) if sn is None else sn.child(ns, name)


def _keys(sn: SchemaNode | None) -> tuple[str, ...]:
    return sn.keys if sn is not None and sn.kind == "list" else ()


def apply_fields(el: etree._Element, sn: SchemaNode | None, fields: Fields, schema: Schema) -> None:
    """Keep the children `fields` names (and list keys) of `el`, the element of `sn` (None: the
    datastore wrapper)."""
    keys = _keys(sn)
    for ch in list(el):
        if not isinstance(ch.tag, str):
            continue
        ns, name = _local(ch)
        if name in keys:
            continue
        key = (ns, name) if (ns, name) in fields else (None, name)
        if key not in fields:
            el.remove(ch)
            continue
        sub = fields[key]
        if sub is not None:
            apply_fields(ch, _child_sn(sn, ch, schema), sub, schema)


def limit_depth(
    el: etree._Element, sn: SchemaNode | None, depth: int, schema: Schema, level: int = 1
) -> None:
    """Children deeper than `depth` (the target itself at 1) are dropped; list keys stay."""
    keys = _keys(sn)
    for ch in list(el):
        if not isinstance(ch.tag, str):
            continue
        if level >= depth:
            if _local(ch)[1] not in keys:
                el.remove(ch)
        else:
            limit_depth(ch, _child_sn(sn, ch, schema), depth, schema, level + 1)
