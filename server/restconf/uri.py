"""RFC 8040 §3.5.3 api-path → schema nodes and instance keys, and what the NETCONF layer needs of it:
a subtree filter (reads), the ancestor chain of an edit, a libyang path (locating the node).

`/restconf/data/example-jukebox:jukebox/library/artist=Foo%20Fighters/album=Wasting%20Light` is
split at "/" first, each segment's keys at "," next, and only then percent-decoded, so that a key
holding "/" or "," travels encoded (RFC 8040's own example module).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from lxml import etree

from server.errors import RpcError
from server.schema import Schema, SchemaNode
from server.xmlns import NC_NS

_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True)
class Step:
    """One data node of the path; `keys`: the list keys or the leaf-list value (None: not given)."""

    sn: SchemaNode
    keys: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Target:
    """A resolved data resource; no steps = the datastore itself."""

    steps: tuple[Step, ...]

    @property
    def node(self) -> SchemaNode | None:
        return self.steps[-1].sn if self.steps else None

    @property
    def is_instance(self) -> bool:
        """The path names one instance (every list and leaf-list on it has its keys)."""
        return all(s.keys is not None or s.sn.kind not in ("list", "leaf-list") for s in self.steps)

    def child(self, sn: SchemaNode, keys: tuple[str, ...] | None) -> Target:
        return Target((*self.steps, Step(sn, keys)))

    def xpath(self, schema: Schema) -> str:
        """The libyang data path of the resource (module-qualified where the module changes)."""
        out, ns = [], None
        for step in self.steps:
            sn = step.sn
            name = sn.name if sn.ns == ns else f"{sn.module}:{sn.name}"
            ns = sn.ns
            if step.keys is not None and sn.kind == "list":
                name += "".join(f"[{k}={_literal(v)}]" for k, v in zip(sn.keys, step.keys, strict=True))
            elif step.keys is not None:
                name += f"[.={_literal(step.keys[0])}]"
            out.append(name)
        return "/" + "/".join(out)

    def uri(self) -> str:
        """The api-path of the resource (Location of a created resource)."""
        from urllib.parse import quote

        out, ns = [], None
        for step in self.steps:
            sn = step.sn
            seg = sn.name if sn.ns == ns else f"{sn.module}:{sn.name}"
            ns = sn.ns
            if step.keys is not None:
                seg += "=" + ",".join(quote(k, safe="") for k in step.keys)
            out.append(seg)
        return "/".join(out)

    def filter_element(self) -> etree._Element | None:
        """A subtree filter selecting exactly the resource (None: the whole datastore)."""
        if not self.steps:
            return None
        top = etree.Element(f"{{{NC_NS}}}filter", type="subtree")
        self._chain(top, leaf_value=False)
        return top

    def chain(self, holder: etree._Element) -> etree._Element:
        """Elements for every step but the last under `holder` (list entries with their keys); the
        parent of the resource's own element is returned."""
        parent = holder
        for step in self.steps[:-1]:
            parent = _instance(parent, step)
        return parent

    def chain_all(self, holder: etree._Element) -> etree._Element:
        """Elements for every step under `holder`; the resource's own element is returned."""
        parent = holder
        for step in self.steps:
            parent = _instance(parent, step)
        return parent

    def _chain(self, holder: etree._Element, *, leaf_value: bool) -> None:
        parent = self.chain(holder)
        last = self.steps[-1]
        if last.sn.kind == "leaf-list":
            el = etree.SubElement(parent, f"{{{last.sn.ns}}}{last.sn.name}", nsmap={None: last.sn.ns})
            if last.keys is not None:
                el.text = last.keys[0]
        else:
            _instance(parent, last)


def _instance(parent: etree._Element, step: Step) -> etree._Element:
    sn = step.sn
    el = etree.SubElement(parent, f"{{{sn.ns}}}{sn.name}", nsmap={None: sn.ns})
    if sn.kind == "list" and step.keys is not None:
        for k, v in zip(sn.keys, step.keys, strict=True):
            etree.SubElement(el, f"{{{sn.ns}}}{k}").text = v
    return el


def _literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise RpcError("invalid-value", "a key value holding both quote characters", type="protocol")


def _bad(message: str, tag: str = "invalid-value") -> RpcError:
    return RpcError(tag, message, type="protocol")


def _identifier(text: str) -> tuple[str | None, str]:
    prefix, sep, name = text.partition(":")
    module: str | None = prefix
    if not sep:
        module, name = None, text
    for part in (module, name):
        if part is not None and (not part or not set(part) <= _IDENT_CHARS or part[0].isdigit()):
            raise _bad(f"bad identifier {text!r} in the path")
    return module, name


def parse_api_path(schema: Schema, path: str, base: Target | None = None) -> Target:
    """Resolve an api-path (without the leading `{+restconf}/data/`; relative to `base`, a YANG
    Patch edit's target); RpcError on a path the schema does not have (unknown-element), a wrong
    key count or a key on a node that has none."""
    steps: list[Step] = list(base.steps) if base is not None else []
    parent: SchemaNode | None = steps[-1].sn if steps else None
    for raw in [s for s in path.split("/") if s] if path.strip("/") else []:
        ident, eq, key_text = raw.partition("=")
        module, name = _identifier(unquote(ident))
        if module is None and parent is None:
            raise _bad(f"{name}: the first node of a path needs its module name")
        ns = parent.ns if module is None and parent is not None else schema.module_to_ns.get(module or "")
        if ns is None:
            raise RpcError(
                "unknown-namespace",
                f"unknown module {module}",
                type="protocol",
                info=(("bad-element", name),),
            )
        sn = schema.root(ns, name) if parent is None else parent.child(ns, name)
        if sn is None:
            raise RpcError(
                "unknown-element",
                f"{name}: no such node in the schema",
                type="protocol",
                info=(("bad-element", name),),
            )
        keys: tuple[str, ...] | None = None
        if eq:
            keys = tuple(unquote(k) for k in key_text.split(","))
            want = len(sn.keys) if sn.kind == "list" else 1 if sn.kind == "leaf-list" else 0
            if want == 0:
                raise _bad(f"{name} is not a list: it takes no key")
            if len(keys) != want:
                raise _bad(f"{name} needs {want} key value(s), got {len(keys)}")
        if steps and steps[-1].sn.kind in ("list", "leaf-list") and steps[-1].keys is None:
            raise _bad(f"{steps[-1].sn.name} lacks its keys")
        steps.append(Step(sn, keys))
        parent = sn
    return Target(tuple(steps))
