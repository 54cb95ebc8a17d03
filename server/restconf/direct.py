"""Direct reads: a state resource that a provider writes straight in the reply's format.

A GET of a large state list (100k bindings) through the generic path is the NETCONF <get-data>
plus libyang's parse and print of the whole reply (~16 µs an entry in JSON; lxml's parse for
XML).  When the resource is a provider's raw list (server/operational.py), or entries of it
named by their keys, the reply holds nothing but that list: it is asked of the providers alone
(the running configuration has nothing below a `config false` node) with `StateRequest.json`
set, and the provider's entries go out as they are written, page by page, in JSON (`RawJson`)
or XML (the raw parts), wrapped in the resource's own member or element.

Anything this path cannot answer exactly, it leaves to the generic path (None): a query
parameter other than `content=all|nonconfig` or `with-defaults=explicit`, a principal some
NACM rule could hide a part of the resource from, a resource deeper than a list entry, an
answer the provider gives as elements rather than raw content, keyed entries whose keys do not
all match (a provider's push-down is a superset only).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping

from lxml import etree

from server.operational import RAW_PREFIX, RAW_SUFFIX, RawContent, RawJson, StateRequest
from server.restconf.session import RestconfSession, as_netconf
from server.restconf.uri import Target
from server.xmlsafe import new_parser

#: what a direct read answers: the reply as parts written one after the other
Parts = Iterator[bytes]


def read(
    sess: RestconfSession, store: str, target: Target, query: Mapping[str, str], fmt: str
) -> Parts | None:
    """The reply to a GET of `target` as parts, or None: the generic path answers (also a 404)."""
    if not _eligible(sess, store, target, query):
        return None
    request = StateRequest(subtree=target.filter_element(), json=fmt == "json")
    roots = sess.core.state_roots(as_netconf(sess), request)
    found = _placeholder(roots, target)
    if found is None:
        return None
    el, key, below = found
    content = request.raw.get(key)
    last = target.steps[-1]
    if fmt == "json":
        if not isinstance(content, RawJson) or (below and content.name != (last.sn.ns, last.sn.name)):
            return None
        return _json(target, content, below)
    if content is None or isinstance(content, RawJson):
        return None
    return _xml(target, el, content, below)


def _eligible(sess: RestconfSession, store: str, target: Target, query: Mapping[str, str]) -> bool:
    node = target.node
    if store not in ("data", "operational") or node is None or node.config:
        return False
    if any(k not in ("content", "with-defaults") for k in query):
        return False
    if query.get("content", "all") not in ("all", "nonconfig"):
        return False
    if query.get("with-defaults", "explicit") != "explicit":
        return False
    if any(step.keys is None and step.sn.kind in ("list", "leaf-list") for step in target.steps[:-1]):
        return False
    return sess.core.nacm.reads_all(sess.principal, node)


def _placeholder(roots: list[etree._Element], target: Target) -> tuple[etree._Element, str, bool] | None:
    """The raw placeholder the resource is (below=False) or whose entries it names (below=True),
    with its key in `request.raw`; None when the providers' answer has another shape."""
    steps = target.steps
    level = roots
    for i, step in enumerate(steps):
        tag = f"{{{step.sn.ns}}}{step.sn.name}"
        matches = [el for el in level if el.tag == tag]
        if step.keys is not None and step.sn.kind == "list":
            matches = [el for el in matches if _keys_of(el, step.sn.ns, step.sn.keys) == step.keys]
        if len(matches) != 1:
            return None
        el = matches[0]
        key = _raw_key(el)
        if key is not None:
            if i == len(steps) - 1:
                return el, key, False
            if i == len(steps) - 2 and steps[-1].sn.kind == "list":
                return el, key, True
            return None
        level = list(el)
    return None


def _keys_of(el: etree._Element, ns: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple((el.findtext(f"{{{ns}}}{k}") or "").strip() for k in keys)


def _raw_key(el: etree._Element) -> str | None:
    text = (el.text or "").strip()
    if len(el) or not text.startswith(RAW_PREFIX) or not text.endswith(RAW_SUFFIX):
        return None
    return text[len(RAW_PREFIX) : -len(RAW_SUFFIX)]


def _parts(content: RawContent) -> tuple[list[bytes], Iterator[bytes]]:
    """The parts up to the first non-blank one (produced now), and the rest (produced as written)."""
    it = iter([content] if isinstance(content, bytes) else content)
    head: list[bytes] = []
    for part in it:
        head.append(part)
        if part and not part.isspace():
            break
    return head, it


def _json(target: Target, content: RawJson, below: bool) -> Parts | None:
    head, rest = _parts(content.parts)
    empty = not any(p.strip() for p in head)
    last = target.steps[-1].sn
    member = f'"{last.module}:{last.name}"'.encode()
    if below:  # entries of the list: a 404 when none; the keys checked (push-down is a superset)
        if empty:
            return None
        keys = target.steps[-1].keys
        if keys is not None:
            entries = json.loads(b"[" + b"".join([*head, *rest]) + b"]")
            if not all(tuple(str(e.get(k)) for k in last.keys) == keys for e in entries):
                return None
            return iter([b"{" + member + b":[", b"".join(head), b"]}"])
        return _chain([b"{" + member + b":["], head, rest, [b"]}"])
    if empty:
        return iter([b"{" + member + b":{}}"])
    name = f'"{content.name[1]}"'.encode()
    return _chain([b"{" + member + b":{" + name + b":["], head, rest, [b"]}}"])


def _xml(target: Target, el: etree._Element, content: RawContent, below: bool) -> Parts | None:
    head, rest = _parts(content)
    empty = not any(p.strip() for p in head)
    last = target.steps[-1]
    if below:
        if empty:
            return None
        if last.keys is not None:
            data = b"".join([*head, *rest])
            holder = etree.fromstring(b"<x>" + data + b"</x>", new_parser())
            if not all(_keys_of(e, last.sn.ns, last.sn.keys) == last.keys for e in holder):
                return None
            return iter([data])
        return _chain(head, rest)
    tag = f'{last.sn.name} xmlns="{last.sn.ns}"'.encode()
    if empty:
        return iter([b"<" + tag + b"/>"])
    return _chain([b"<" + tag + b">"], head, rest, [f"</{last.sn.name}>".encode()])


def _chain(*parts: Iterable[bytes]) -> Parts:
    for group in parts:
        for part in group:
            if part:
                yield part
