"""A Python view of the compiled YANG schema, built once from the libyang context.

The edit engine, filters, with-defaults and NACM need per-node facts quickly (is this a list, what
are its keys, what is the default, is it `nacm:default-deny-all`): walking libyang's C structures on
every element would dominate a 100k-entry edit, so they are copied into plain objects here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import libyang
from libyang.util import c2str

_KINDS = {
    "container": "container",
    "list": "list",
    "leaf": "leaf",
    "leaf-list": "leaf-list",
    "anydata": "anydata",
    "anyxml": "anydata",
}


@dataclass(eq=False)
class SchemaNode:
    """Facts about one data node of the schema; children keyed by (namespace, local-name)."""

    name: str
    ns: str
    module: str
    kind: str
    config: bool
    keys: tuple[str, ...] = ()
    presence: bool = False
    default: str | None = None
    defaults: tuple[str, ...] = ()
    deny_all: bool = False
    deny_write: bool = False
    user_ordered: bool = False
    children: dict[tuple[str | None, str], SchemaNode] = field(default_factory=dict)  # ns None: none
    parent: SchemaNode | None = field(default=None, repr=False)

    def child(self, ns: str | None, name: str) -> SchemaNode | None:
        if ns is None:
            for (_, n), c in self.children.items():
                if n == name:
                    return c
            return None
        return self.children.get((ns, name))

    deny_below: bool = False  # this node or a descendant is nacm default-deny-all / -write
    lists_below: list[SchemaNode] | None = field(default=None, repr=False)  # cache for the edit engine
    #: the YANG 1.1 actions of a container or list (kind "action", parent this node); not `children`:
    #: they are operations, not data (server/actions.py)
    actions: dict[tuple[str, str], SchemaNode] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> str:
        """The schema path, module names where the module changes (libyang's form):
        `/ietf-subscribed-notifications:subscriptions/subscription/receivers/receiver/reset`."""
        own = self.name if self.parent is not None and self.parent.module == self.module else None
        head = self.parent.path if self.parent is not None else ""
        return f"{head}/{own or f'{self.module}:{self.name}'}"


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    revision: str | None
    namespace: str
    prefix: str
    filepath: str | None
    implemented: bool
    features: tuple[str, ...]


def _canonical(ctx: libyang.Context, value: object) -> str | None:
    from libyang.util import ffi, lib  # local: cffi handles only needed here

    if value == ffi.NULL:
        return None
    s = lib.lyd_value_get_canonical(ctx.cdata, value)
    return c2str(s) if s else None


class Schema:
    """The data-node tree of every implemented module in a libyang context."""

    def __init__(self, ctx: libyang.Context) -> None:
        self.ctx = ctx
        self.roots: dict[tuple[str, str], SchemaNode] = {}
        self.modules: list[ModuleInfo] = []
        self.ns_to_module: dict[str, str] = {}
        self.module_to_ns: dict[str, str] = {}
        self.module_prefix: dict[str, str] = {}
        self.deny_nodes: list[SchemaNode] = []  # nacm default-deny-all / -write nodes
        for mod in ctx:
            ns = self._module_ns(mod)
            revs = [r.date() for r in mod.revisions()]
            feats = tuple(f.name() for f in mod.features() if f.state()) if mod.implemented() else ()
            self.modules.append(
                ModuleInfo(
                    name=mod.name(),
                    revision=revs[0] if revs else None,
                    namespace=ns,
                    prefix=mod.prefix(),
                    filepath=mod.filepath(),
                    implemented=mod.implemented(),
                    features=feats,
                )
            )
            self.ns_to_module[ns] = mod.name()
            self.module_to_ns[mod.name()] = ns
            self.module_prefix[mod.name()] = mod.prefix()
            if not mod.implemented():
                continue
            for snode in mod.children():
                node = self._build(snode, None)
                if node is not None:
                    self.roots[(node.ns, node.name)] = node
        ident = "\n".join(
            f"{m.name}@{m.revision}:{m.implemented}:{','.join(m.features)}" for m in self.modules
        )
        #: stable identifier of this module set (yang-library content-id, RFC 8525)
        self.content_id = hashlib.sha256(ident.encode()).hexdigest()[:16]

    @staticmethod
    def _module_ns(mod: libyang.Module) -> str:
        from libyang.util import c2str as _c2str

        return _c2str(mod.cdata.ns)

    def _build(self, snode: libyang.SNode, parent: SchemaNode | None) -> SchemaNode | None:
        kind = _KINDS.get(snode.keyword())
        if kind is None:
            return None
        mod = snode.module()
        node = SchemaNode(
            name=snode.name(),
            ns=self.module_to_ns.get(mod.name()) or self._module_ns(mod),
            module=mod.name(),
            kind=kind,
            config=not snode.config_false(),
            parent=parent,
        )
        for ext in snode.extensions():
            if ext.module().name() == "ietf-netconf-acm":
                if ext.name() == "default-deny-all":
                    node.deny_all = True
                elif ext.name() == "default-deny-write":
                    node.deny_write = True
        node.deny_below = node.deny_all or node.deny_write
        if node.deny_below:
            self.deny_nodes.append(node)
        if isinstance(snode, libyang.SLeaf):
            node.default = _canonical(self.ctx, snode.cdata_leaf.dflt)
        elif isinstance(snode, libyang.SLeafList):
            node.defaults = tuple(str(d) for d in snode.defaults() if d is not None)
            node.user_ordered = snode.ordered()
        elif isinstance(snode, libyang.SList):
            node.keys = tuple(k.name() for k in snode.keys())  # noqa: SIM118 (libyang API)
            node.user_ordered = snode.ordered()
        elif isinstance(snode, libyang.SContainer):
            node.presence = snode.presence() is not None
        if kind in ("container", "list"):
            assert isinstance(snode, libyang.SContainer | libyang.SList)  # what those keywords are
            for child in snode.children():
                if child.nodetype() == libyang.SNode.ACTION:
                    act = self._action(child, node)
                    node.actions[(act.ns, act.name)] = act
                    continue
                c = self._build(child, node)
                if c is not None:
                    node.children[(c.ns, c.name)] = c
                    node.deny_below = node.deny_below or c.deny_below
        return node

    def _action(self, snode: libyang.SNode, parent: SchemaNode) -> SchemaNode:
        mod = snode.module()
        node = SchemaNode(
            name=snode.name(),
            ns=self.module_to_ns.get(mod.name()) or self._module_ns(mod),
            module=mod.name(),
            kind="action",
            config=False,
            parent=parent,
        )
        node.deny_all = any(
            e.module().name() == "ietf-netconf-acm" and e.name() == "default-deny-all"
            for e in snode.extensions()
        )
        return node

    def root(self, ns: str | None, name: str) -> SchemaNode | None:
        if ns is None:
            for (_, n), c in self.roots.items():
                if n == name:
                    return c
            return None
        return self.roots.get((ns, name))

    def yang_text(self, name: str, revision: str | None = None) -> str | None:
        """The YANG source of a module (for get-schema), read from the file libyang loaded."""
        for m in self.modules:
            if m.name == name and (revision is None or revision == m.revision):
                if m.filepath and Path(m.filepath).is_file():
                    return Path(m.filepath).read_text()
                try:
                    return cast(str, self.ctx.get_module(name).print_mem("yang"))  # text: str
                except Exception:
                    return None
        return None
