"""NACM-style protection of `nacm:default-deny-all` / `default-deny-write` nodes (RFC 8341 §3.5.1).

The protected nodes are found from the schema extension (never a hard-coded path). Users outside the
configured superuser group cannot read deny-all nodes (they are pruned from every reply) nor write
deny-all / deny-write nodes (the edit engine raises access-denied), nor invoke deny-all operations
(kill-session and delete-config by RFC 8341's defaults, and any rpc marked so in a module).
Full NACM rule lists (groups, rule lists, per-operation rules) are not implemented yet; see
docs/netconf.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from server.schema import Schema, SchemaNode
from server.schemapaths import ancestry, locator, walk
from server.tree import Forest
from server.xmlns import NC_NS


@dataclass(frozen=True)
class Principal:
    """Who a session runs as: the SSH user and the groups it belongs to."""

    user: str
    groups: frozenset[str] = frozenset()


class Nacm:
    """Decides read/write access to default-deny nodes for a principal."""

    def __init__(self, schema: Schema, superuser_group: str = "admin") -> None:
        self.superuser_group = superuser_group
        self._hidden: list[tuple[tuple[str, str], etree.XPath]] = []
        for root in schema.roots.values():
            for sn in walk(root):
                if sn.deny_all:
                    self._hidden.append(((root.ns, root.name), locator(ancestry(sn))))

        # protocol operations: those whose schema carries default-deny-all, plus the two that RFC 8341
        # §3.2.4 restricts by default although ietf-netconf (2011) predates the extension
        self.denied_rpcs: set[tuple[str, str]] = {(NC_NS, "kill-session"), (NC_NS, "delete-config")}
        from _libyang import lib  # rpc schema nodes are not data nodes: read them here

        for mod in schema.ctx:
            if not mod.implemented():
                continue
            for rpc in mod.children(types=(lib.LYS_RPC,)):
                if any(
                    e.name() == "default-deny-all" and e.module().name() == "ietf-netconf-acm"
                    for e in rpc.extensions()
                ):
                    self.denied_rpcs.add((schema.module_to_ns[mod.name()], rpc.name()))

    def may_call(self, who: Principal, op: tuple[str, str]) -> bool:
        return op not in self.denied_rpcs or self.is_superuser(who)

    def is_superuser(self, who: Principal) -> bool:
        return self.superuser_group in who.groups

    def may_write(self, who: Principal, sn: SchemaNode) -> bool:
        return self.is_superuser(who) or not (sn.deny_all or sn.deny_write)

    def hides_any(self, who: Principal, data: Forest) -> bool:
        """Does `data` hold a node this principal may not read?"""
        if self.is_superuser(who):
            return False
        for root in data:
            for (ns, name), xp in self._hidden:
                if root.tag == f"{{{ns}}}{name}" and xp(root):
                    return True
        return False

    def prune(self, who: Principal, data: Forest) -> Forest:
        """Remove deny-all nodes the principal may not read (mutates and returns `data`)."""
        if self.is_superuser(who) or not self._hidden:
            return data
        for root in data:
            for (ns, name), xp in self._hidden:
                if root.tag != f"{{{ns}}}{name}":
                    continue
                for el in xp(root):
                    el.getparent().remove(el)
        return data
