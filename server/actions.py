"""YANG 1.1 actions (RFC 7950 §7.15): the NETCONF <action> operation and the registry of handlers.

An application serves an action by registering a handler for its schema path
(`core.register_action("/ietf-subscribed-notifications:subscriptions/subscription/receivers/receiver/reset",
handler)`), as it serves an rpc with `register_rpc`. RESTCONF (server/restconf/) invokes the same
handlers through `Actions.run`.

`<action xmlns="urn:ietf:params:xml:ns:yang:1">` holds the data tree down to exactly one action
node, list keys included, and the action's input inside that node. Serving one takes five steps,
each refusing with the error RFC 7950 §7.15.2 and RFC 6241 Appendix A give:
1. locate the action along the schema: nothing in <action>, or two nodes where one is expected
   (two actions) → missing-element / bad-element (protocol); a node the schema does not have →
   unknown-element (application), or operation-not-supported (protocol) when it exists only under a
   feature the server does not enable; a leaf where an action should be, a path that ends before an
   action, a list entry without its keys → bad-element / missing-element (application);
2. libyang parses the whole tree as an action (the input's nodes, types, mandatory leaves, the key
   values); the handler gets libyang's canonical print of it;
3. NACM (RFC 8341): read access to every ancestor instance and exec access to the action;
4. every configuration list entry (and presence container) on the path must be in running, else
   data-missing (application) with the entry's error-path; entries of state lists are the handler's
   to look up (`ActionRequest.missing` builds the same error);
5. the handler: it returns the output's elements (bytes or an element holding them) or None
   (<ok/>), may be a coroutine function, raises RpcError. An action of the schema that nobody
   registered is operation-not-supported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import libyang
from libyang import DataType
from lxml import etree

from server.errors import RpcError, bad_element, missing_element
from server.nacm import instance_nsmap, instance_path
from server.schema import Schema, SchemaNode
from server.schemapaths import ancestry
from server.tree import Forest
from server.xmlparse import parse_message

if TYPE_CHECKING:
    from server.core import NetconfCore

YANG_NS = "urn:ietf:params:xml:ns:yang:1"
ACTION_TAG = f"{{{YANG_NS}}}action"
Output: TypeAlias = bytes | etree._Element | None
ActionHandler = Callable[[Any, "ActionRequest"], Output | Awaitable[Output]]


@dataclass(frozen=True)
class ActionRequest:
    """One validated invocation: `node` the action, `element` its element (children: the input;
    ancestors up to the top-level data node: the instance, list keys included, canonical values)."""

    node: SchemaNode
    element: etree._Element
    schema: Schema

    def chain(self) -> list[etree._Element]:
        """The data node instances from the top-level one down to the action's parent."""
        depth = len(ancestry(self.node)) - 1
        return list(reversed([*self.element.iterancestors()][:depth]))

    def keys(self, list_name: str) -> tuple[str, ...]:
        """The key values of the entry of list `list_name` on the path (in the list's key order)."""
        for el, sn in zip(self.chain(), ancestry(self.node), strict=False):
            if sn.name == list_name and sn.kind == "list":
                return tuple(el.findtext(f"{{{sn.ns}}}{k}") or "" for k in sn.keys)
        raise KeyError(list_name)

    def missing(self, depth: int | None = None) -> RpcError:
        """data-missing for the instance at `depth` (1 = the top-level node; default the parent)."""
        chain = self.chain()
        el = chain[(depth or len(chain)) - 1]
        return _data_missing(el, self.schema, depth or len(chain))


def _data_missing(el: etree._Element, schema: Schema, depth: int) -> RpcError:
    return RpcError(
        "data-missing",
        f"no such {etree.QName(el).localname} instance",
        type="application",
        path=instance_path(el, schema, depth),
        path_nsmap=instance_nsmap(el, schema),
    )


class Actions:
    """The actions of one server: handlers by schema path, and the steps of the module docstring."""

    def __init__(self, core: NetconfCore) -> None:
        self.core = core
        self.handlers: dict[str, ActionHandler] = {}
        self._all_features: libyang.Context | None = None

    def exists(self, path: str) -> bool:
        """Does the schema (with the features enabled) have an action at `path`?"""
        return path in {a.path for a in _schema_actions(self.core.schema)}

    def register(self, path: str, handler: ActionHandler) -> None:
        """Serve the action at schema path `path` (libyang's form, module names where they change)."""
        if not self.exists(path):
            raise ValueError(f"{path} is not an action of the schema")
        if path in self.handlers:
            raise ValueError(f"action {path} already has a handler")
        self.handlers[path] = handler

    def run(self, sess: Any, op: etree._Element) -> Output | Awaitable[Output]:
        """Steps 1-5 on an <action> element: the NETCONF operation's handler, and RESTCONF's."""
        node, el = self.locate(op)
        handler = self.handlers.get(node.path)
        if handler is None:
            raise RpcError(
                "operation-not-supported", f"action {node.name} is not implemented", type="protocol"
            )
        req = self._canonical(node, el)
        self.core.nacm.check_action(sess.principal, node, req.element)
        self._check_exists(req)
        return handler(sess, req)

    # -- 1. locating the action --------------------------------------------------------------------------
    def locate(self, holder: etree._Element) -> tuple[SchemaNode, etree._Element]:
        """The action node and its element in `holder` (the <action> element)."""
        el = _one_child(holder, ())
        if el is None:
            raise missing_element("action", "<action> holds the data tree down to one action")
        depth = 1
        sn = self._node(self.core.schema.roots.get(_qname(el)), el, depth)
        while sn.kind != "action":
            if sn.kind not in ("container", "list"):
                raise bad_element(sn.name, f"{sn.name} is a {sn.kind}, not an action", type="application")
            _check_keys(sn, el, self.core.schema, depth)
            child = _one_child(el, sn.keys if sn.kind == "list" else ())
            if child is None:
                raise missing_element(sn.name, f"no action below {sn.name}", type="application")
            depth += 1
            sn = self._node(sn.children.get(_qname(child)) or sn.actions.get(_qname(child)), child, depth)
            el = child
        return sn, el

    def _node(self, sn: SchemaNode | None, el: etree._Element, depth: int) -> SchemaNode:
        if sn is not None:
            return sn
        name = etree.QName(el).localname
        if self._under_disabled_feature(el, depth):
            raise RpcError(
                "operation-not-supported",
                f"{name} needs a feature this server does not implement",
                type="protocol",
                info=(("bad-element", name),),
            )
        raise RpcError(
            "unknown-element", f"{name}: no such node in the schema", info=(("bad-element", name),)
        )

    def _under_disabled_feature(self, el: etree._Element, depth: int) -> bool:
        """Does the schema have `el` (at `depth` below the top) once every feature is enabled?"""
        steps = []
        for e in _top_down(el, depth):
            module = self.core.schema.ns_to_module.get(etree.QName(e).namespace or "")
            if module is None:
                return False
            steps.append(f"{module}:{etree.QName(e).localname}")
        try:
            return next(self._features_ctx().find_path("/" + "/".join(steps)), None) is not None
        except libyang.LibyangError:
            return False

    def _features_ctx(self) -> libyang.Context:
        """The server's modules with every feature enabled (built on first need)."""
        if self._all_features is None:
            schema = self.core.schema
            dirs = dict.fromkeys(str(Path(m.filepath).parent) for m in schema.modules if m.filepath)
            ctx = libyang.Context(":".join(dirs))
            for m in schema.modules:
                if m.implemented:
                    ctx.load_module(m.name).feature_enable_all()
            self._all_features = ctx
        return self._all_features

    # -- 2. libyang ---------------------------------------------------------------------------------------
    def _canonical(self, node: SchemaNode, el: etree._Element) -> ActionRequest:
        """The tree parsed by libyang as an action, printed back (canonical values) and re-located."""
        top = [el, *el.iterancestors()][len(ancestry(node)) - 1]
        ctx = self.core.schema.ctx
        try:
            op = ctx.parse_op_mem("xml", etree.tostring(top).decode(), dtype=DataType.RPC_YANG)
        except libyang.LibyangError as exc:
            raise _libyang_error(exc) from None
        try:
            root = op.root()
            printed = root.print_mem("xml", pretty=False)
        finally:
            op.free()
        holder = parse_message(b"<action xmlns='%s'>%s</action>" % (YANG_NS.encode(), _utf8(printed)))
        return ActionRequest(node, self.locate(holder)[1], self.core.schema)

    # -- 4. the instance exists ---------------------------------------------------------------------------
    def _check_exists(self, req: ActionRequest) -> None:
        here: Forest | etree._Element = self.core.ds.running
        for depth, (el, sn) in enumerate(zip(req.chain(), ancestry(req.node), strict=False), 1):
            if not sn.config:
                return  # state: the handler looks it up
            found = _find_instance(here, el, sn)
            if found is None and (sn.kind == "list" or sn.presence):
                raise _data_missing(el, self.core.schema, depth)
            if found is None:
                return  # a non-presence container holding nothing: nothing below exists either
            here = found


def _schema_actions(schema: Schema) -> list[SchemaNode]:
    out: list[SchemaNode] = []
    stack = list(schema.roots.values())
    while stack:
        sn = stack.pop()
        out.extend(sn.actions.values())
        stack.extend(sn.children.values())
    return out


def _qname(el: etree._Element) -> tuple[str, str]:
    q = etree.QName(el)
    return q.namespace or "", q.localname


def _one_child(el: etree._Element, keys: tuple[str, ...]) -> etree._Element | None:
    """The one element child of `el` that is not a key leaf; bad-element when there are several."""
    found = [c for c in el if isinstance(c.tag, str) and etree.QName(c).localname not in keys]
    if len(found) > 1:
        raise bad_element(
            etree.QName(found[1]).localname, "the path to an action names one node at each level"
        )
    return found[0] if found else None


def _top_down(el: etree._Element, depth: int) -> list[etree._Element]:
    """`el` and its ancestors up to `depth` levels, the top-level data node first."""
    return [el, *el.iterancestors()][:depth][::-1]


def _check_keys(sn: SchemaNode, el: etree._Element, schema: Schema, depth: int) -> None:
    for k in sn.keys:
        if el.find(f"{{{sn.ns}}}{k}") is None:
            raise RpcError(
                "missing-element",
                f"the {sn.name} entry needs its key {k}",
                type="application",
                path=_list_path(el, schema, depth),
                path_nsmap=instance_nsmap(el, schema),
                info=(("bad-element", k),),
            )


def _list_path(el: etree._Element, schema: Schema, depth: int) -> str:
    """The path of a list entry whose keys are missing (error-path without the keys)."""
    names = []
    for e in _top_down(el, depth):
        module = schema.ns_to_module[etree.QName(e).namespace or ""]
        names.append(f"/{schema.module_prefix[module]}:{etree.QName(e).localname}")
    return "".join(names)


def _find_instance(
    here: Forest | etree._Element, el: etree._Element, sn: SchemaNode
) -> etree._Element | None:
    tag = f"{{{sn.ns}}}{sn.name}"
    want = [(k, el.findtext(f"{{{sn.ns}}}{k}")) for k in sn.keys]
    for cand in here.iterchildren(tag):
        if all(cand.findtext(f"{{{sn.ns}}}{k}") == v for k, v in want):
            return cand
    return None


def _libyang_error(exc: libyang.LibyangError) -> RpcError:
    msg = str(exc).removeprefix("failed to parse input data: ")
    if "not found as a child" in msg or "No module" in msg:
        return RpcError("unknown-element", msg)
    if "Unexpected action element" in msg:
        return bad_element("action", msg, type="protocol")
    if ("missing" in msg.lower() and "mandatory" in msg.lower()) or "missing its key" in msg:
        return RpcError("missing-element", msg)
    return RpcError("invalid-value", msg)


def _utf8(printed: str | bytes) -> bytes:
    return printed.encode() if isinstance(printed, str) else printed
