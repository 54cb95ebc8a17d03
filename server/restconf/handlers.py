"""RFC 8040 methods on data resources, translated into the NETCONF layer's own operations.

Reads are <get-data> (RFC 8526) with a subtree filter selecting the resource: the same NACM read
filter, with-defaults handling and state providers as NETCONF. Writes are <edit-config> (through
`server.operations.edit_config`, under the core's transaction lock) on the resource's element with
the operation RFC 8040 §4 gives the method: the same locks, edit engine, NACM write checks,
validation, subscribers, journal and netconf-config-change notification as NETCONF.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from lxml import etree

from server.actions import YANG_NS
from server.edit import YANG_INSERT, YANG_KEY, YANG_VALUE
from server.errors import RpcError
from server.operations import edit_config, op_get_data
from server.restconf import codec, json_body
from server.restconf.errors import RESTCONF_NS, HttpError, http_error, not_found
from server.restconf.session import RestconfSession, as_netconf
from server.restconf.shape import Fields, apply_fields, check_fields, limit_depth, parse_fields
from server.restconf.uri import Target, _literal, parse_api_path
from server.schema import Schema, SchemaNode
from server.tree import child
from server.xmlns import DS_NS, NC_NS, NMDA_NS, WD_ATTR_NS, WD_NS
from server.xmlparse import parse_message
from server.xmlsafe import new_parser

OP_ATTR = f"{{{NC_NS}}}operation"
WD_DEFAULT = f"{{{WD_ATTR_NS}}}default"
WD_MODES = ("report-all", "trim", "explicit", "report-all-tagged")
#: the datastores of RFC 8527 `{+restconf}/ds/ietf-datastores:<name>`; "data" is RFC 8040's
#: unified {+restconf}/data (running for writes, operational for reads)
STORES = ("data", "running", "candidate", "startup", "operational")
#: plain JSON bodies are converted by server/restconf/json_body.py (False: always by libyang; the
#: tests run bodies both ways)
FAST_JSON = True
_NMDA_HEAD = b'<data xmlns="%s">' % NMDA_NS.encode()
_RESTCONF_DATA = b'<data xmlns="%s">' % RESTCONF_NS.encode()


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def bad_param(name: str, message: str) -> HttpError:
    return http_error(400, "invalid-value", message, info=(("bad-attribute", name),))


def _check_params(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    for name in query:
        if name not in allowed:
            raise bad_param(name, f"query parameter {name} is not allowed here")


# -- reading ----------------------------------------------------------------------------------------------
def read(
    sess: RestconfSession, store: str, target: Target, query: Mapping[str, str], fmt: str
) -> tuple[int, Callable[[], bytes]]:
    """GET: the resource's data is gathered now (through the NETCONF layer, on the event loop) and
    encoded in `fmt` by the returned function (libyang; the caller may run it in a worker thread:
    it touches no shared state). Also returned: the size of the XML to encode. 404 when the
    resource does not exist (or NACM hides it)."""
    _check_params(query, ("depth", "fields", "content", "with-defaults"))
    content = query.get("content", "all")
    if content not in ("all", "config", "nonconfig"):
        raise bad_param("content", f"bad content {content}")
    depth = _depth(query.get("depth"))
    wd = query.get("with-defaults")
    if wd is not None and wd not in WD_MODES:
        raise bad_param("with-defaults", f"bad with-defaults {wd}")
    schema = sess.core.schema
    fields = None
    if "fields" in query:
        fields = parse_fields(query["fields"], schema.module_to_ns)
        check_fields(fields, target.node, schema)
    name = store if store != "data" else ("running" if content == "config" else "operational")
    if name != "operational" and content == "nonconfig":
        name, content = "operational", "nonconfig"
    op = _get_data_op(name, target, wd, nonconfig=content == "nonconfig")
    try:
        body = b"".join(op_get_data(as_netconf(sess), op))
    except RpcError as err:
        raise HttpError.of(err) from None
    shaping = _Shaping(depth, fields, wd == "report-all-tagged")
    return len(body), lambda: _encode(schema, body, target, fmt, shaping)


@dataclass(frozen=True)
class _Shaping:
    depth: int | None
    fields: Fields | None
    tagged: bool  # with-defaults report-all-tagged: wd:default marks to carry into the reply

    @property
    def none(self) -> bool:
        return self.depth is None and self.fields is None and not self.tagged


def _encode(schema: Schema, body: bytes, target: Target, fmt: str, shaping: _Shaping) -> bytes:
    """The <get-data> reply `body` → the resource in `fmt`. XML is the NETCONF layer's own (lxml);
    JSON is libyang's (RFC 7951). Runs in a worker thread for large replies: its own parser."""
    xpath = target.xpath(schema) if target.steps else None
    if fmt == "json" and shaping.none:
        inner = body[len(_NMDA_HEAD) : -len(b"</data>")] if body.startswith(_NMDA_HEAD) else b""
        return _print(schema, inner, xpath)
    wrapper = etree.fromstring(body, new_parser(huge_tree=True, collect_ids=False))
    nodes = _locate(wrapper, target)
    if not nodes:
        raise not_found()
    for el in nodes:
        if shaping.fields is not None:
            apply_fields(el, target.node, shaping.fields, schema)
        if shaping.depth is not None:
            limit_depth(el, target.node, shaping.depth, schema, level=0 if target.node is None else 1)
    if fmt == "xml":  # report-all-tagged: the wd:default attributes are there already (RFC 8040 §4.8.9)
        if target.steps:
            return b"".join(etree.tostring(n) for n in nodes)
        return b"".join([_RESTCONF_DATA, *(etree.tostring(c) for c in wrapper), b"</data>"])
    # the elements themselves are kept: an lxml proxy's id() is stable only while it is referenced
    tagged = [el for el in wrapper.iter() if el.attrib.pop(WD_DEFAULT, None) in ("true", "1")]
    inner = b"".join(etree.tostring(c) for c in wrapper if isinstance(c.tag, str))
    out = _print(schema, inner, xpath)
    if not tagged:
        return out
    roots = nodes if target.steps else [wrapper]
    return _tag_defaults(out, roots, bool(target.steps), tagged, schema)


def _print(schema: Schema, inner: bytes, xpath: str | None) -> bytes:
    out = codec.print_json(schema.ctx, inner, xpath)
    if out is None:
        raise not_found()
    return out


def _tag_defaults(
    out: bytes, roots: list[etree._Element], below: bool, tagged: list[etree._Element], schema
) -> bytes:
    """RFC 8040 §4.8.9 report-all-tagged in JSON: the NETCONF layer's wd:default marks (on `tagged`,
    taken off before libyang encoded `roots`) as `"@leaf": {"ietf-netconf-with-defaults:default":
    true}` beside each marked leaf."""
    marked = {id(el) for el in tagged}
    doc = json.loads(out)
    holder = doc if below else doc["ietf-restconf:data"]
    _annotate(holder, roots if below else list(roots[0]), None, marked, schema)
    return json.dumps(doc).encode()


def _annotate(obj: dict, els: list[etree._Element], parent_ns: str | None, marked: set[int], schema) -> None:
    """RFC 8040 §4.8.9 in JSON: `"@leaf": {"ietf-netconf-with-defaults:default": true}` beside each
    leaf the NETCONF layer tagged (its elements `els`, in the order libyang printed them)."""
    groups: dict[tuple[str, str], list[etree._Element]] = {}
    for el in els:
        if isinstance(el.tag, str):
            q = etree.QName(el)
            groups.setdefault((q.namespace or "", q.localname), []).append(el)
    for (ns, local), group in groups.items():
        key = local if ns == parent_ns else f"{schema.ns_to_module.get(ns, '')}:{local}"
        val = obj.get(key)
        if isinstance(val, list) and val and isinstance(val[0], dict):
            for entry, el in zip(val, group, strict=False):
                _annotate(entry, list(el), ns, marked, schema)
        elif isinstance(val, dict):
            _annotate(val, list(group[0]), ns, marked, schema)
        elif val is not None and any(id(el) in marked for el in group):
            obj["@" + key] = {"ietf-netconf-with-defaults:default": True}


def _depth(text: str | None) -> int | None:
    if text is None or text == "unbounded":
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise bad_param("depth", f"bad depth {text}")
    return int(text)


def _get_data_op(name: str, target: Target, wd: str | None, *, nonconfig: bool) -> etree._Element:
    op = etree.Element(_q(NMDA_NS, "get-data"), nsmap={None: NMDA_NS, "ds": DS_NS})
    etree.SubElement(op, _q(NMDA_NS, "datastore")).text = f"ds:{name}"
    flt = target.filter_element()
    if flt is not None:
        sub = etree.SubElement(op, _q(NMDA_NS, "subtree-filter"))
        sub.extend(list(flt))
    if nonconfig:
        etree.SubElement(op, _q(NMDA_NS, "config-filter")).text = "false"
    if wd is not None:
        etree.SubElement(op, _q(WD_NS, "with-defaults")).text = wd
    return op


def _locate(wrapper: etree._Element, target: Target) -> list[etree._Element]:
    """The elements of the resource in a reply (several: a list or leaf-list named without keys)."""
    if not target.steps:
        return [wrapper]
    level = [wrapper]
    for step in target.steps:
        sn, tag = step.sn, _q(step.sn.ns, step.sn.name)
        found = []
        for parent in level:
            for el in parent.iterchildren(tag):
                if step.keys is None or _keys_match(el, sn, step.keys):
                    found.append(el)
        level = found
    return level


def _keys_match(el: etree._Element, sn: SchemaNode, keys: tuple[str, ...]) -> bool:
    if sn.kind == "leaf-list":
        return (el.text or "").strip() == keys[0]
    for k, v in zip(sn.keys, keys, strict=True):
        kel = child(el, _q(sn.ns, k))
        if kel is None or (kel.text or "").strip() != v:
            return False
    return True


def exists(sess: RestconfSession, store: str, target: Target) -> bool:
    """Is the resource in the datastore a write goes to (under the transaction lock)?"""
    if not target.steps:
        return True
    with sess.core.ds.reading(_write_store(store)) as data:
        level: list = [data]
        for i, step in enumerate(target.steps):
            tag = _q(step.sn.ns, step.sn.name)
            nxt = []
            for parent in level:
                for el in parent.iterchildren(tag):
                    if step.keys is None or _keys_match(el, step.sn, step.keys):
                        nxt.append(el)
                        if step.keys is not None:
                            break
            if not nxt:  # a non-presence container exists as soon as its parent does (RFC 7950 §7.5.1)
                last = i == len(target.steps) - 1
                return last and step.sn.kind == "container" and not step.sn.presence
            level = nxt
        return True


# -- writing ----------------------------------------------------------------------------------------------
def _write_store(store: str) -> str:
    if store in ("data", "running"):
        return "running"
    if store == "candidate":
        return "candidate"
    raise http_error(405, "operation-not-supported", f"the {store} datastore is not writable")


def body_nodes(sess: RestconfSession, parent: Target, body: bytes, fmt: str) -> list[etree._Element]:
    """The data nodes of a request body, to be placed under `parent` (their schema checked against
    `parent` by the caller)."""
    if not body.strip():
        raise http_error(400, "malformed-message", "the request needs a body")
    if fmt == "xml":
        root = codec.parse_xml(body)
        if (
            not parent.steps
            and etree.QName(root).localname == "data"
            and etree.QName(root).namespace
            in (
                RESTCONF_NS,
                NC_NS,
            )
        ):
            return [c for c in root if isinstance(c.tag, str)]
        return [root]
    doc = codec.parse_json(body)
    if not isinstance(doc, dict) or not doc:
        raise http_error(400, "malformed-message", "the JSON body must be an object naming the resource")
    if not parent.steps and set(doc) == {"ietf-restconf:data"}:
        doc = doc["ietf-restconf:data"]
        if not isinstance(doc, dict):
            raise http_error(400, "malformed-message", "ietf-restconf:data must be an object")
    nodes = json_body.convert(sess.core.schema, parent, doc) if FAST_JSON else None
    return nodes if nodes is not None else codec.json_to_xml(sess.core.schema.ctx, parent, doc)


def _schema_of(el: etree._Element, parent: SchemaNode | None, schema: Schema) -> SchemaNode | None:
    q = etree.QName(el)
    return schema.root(q.namespace, q.localname) if parent is None else parent.child(q.namespace, q.localname)


def _edit_op(store: str, config: etree._Element, default_op: str | None = None) -> etree._Element:
    op = etree.Element(_q(NC_NS, "edit-config"), nsmap={None: NC_NS})
    etree.SubElement(etree.SubElement(op, _q(NC_NS, "target")), _q(NC_NS, _write_store(store)))
    if default_op:
        etree.SubElement(op, _q(NC_NS, "default-operation")).text = default_op
    op.append(config)
    return op


def new_config(schema: Schema) -> etree._Element:
    """An empty <config>: every node below declares its own default namespace, so that what is
    stored is what a NETCONF client's edit stores (prefixes on the config would be adopted by
    the nodes moved under it). Error paths get the modules' prefixes; JSON renders module names."""
    del schema
    return etree.Element(_q(NC_NS, "config"), nsmap={None: NC_NS})


def config_for(
    schema: Schema,
    parent: Target,
    nodes: list[etree._Element],
    operation: str | None,
    insert: dict[str, str] | None = None,
) -> etree._Element:
    """<config> holding `nodes` under the instance `parent`, each with `operation` (None: the
    default operation) and the YANG insert attributes of `insert`."""
    config = new_config(schema)
    holder = parent.chain_all(config)
    for el in nodes:
        if operation is not None:
            el.set(OP_ATTR, operation)
        for k, v in (insert or {}).items():
            el.set(k, v)
        holder.append(el)
    return config


def child_target(target: Target, nodes: list[etree._Element], schema: Schema) -> Target:
    """POST: the one child resource the body creates (§4.4.1), as a Target (its Location)."""
    if len(nodes) != 1:
        raise http_error(400, "invalid-value", "a POST body holds exactly one child resource")
    el = nodes[0]
    if target.node is not None and target.node.kind not in ("container", "list"):
        raise http_error(400, "invalid-value", f"{target.node.name} has no child resources")
    sn = _schema_of(el, target.node, schema)
    if sn is None:
        raise http_error(400, "unknown-element", f"{etree.QName(el).localname} is not a child here")
    if not sn.config:
        raise http_error(400, "invalid-value", f"{sn.name} is not configuration")
    keys: tuple[str, ...] | None = None
    if sn.kind == "list":
        vals = []
        for k in sn.keys:
            kel = child(el, _q(sn.ns, k))
            if kel is None:
                raise http_error(
                    400, "missing-element", f"{sn.name} lacks its key {k}", info=(("bad-element", k),)
                )
            vals.append((kel.text or "").strip())
        keys = tuple(vals)
    elif sn.kind == "leaf-list":
        keys = ((el.text or "").strip(),)
    return target.child(sn, keys)


def insert_point(query: Mapping[str, str], target: Target | None, schema: Schema) -> dict[str, str] | None:
    """`insert` / `point` (RFC 8040 §4.8.5/6) of a POST or PUT as the YANG insert attributes of the
    entry (RFC 7950 §7.8.6): only on an ordered-by user list or leaf-list (400 otherwise); `point`
    is the api-path of an entry of the same list instance."""
    insert, point = query.get("insert"), query.get("point")
    if insert is None and point is None:
        return None
    sn = target.node if target is not None else None
    if sn is None or target is None or sn.kind not in ("list", "leaf-list") or not sn.user_ordered:
        raise bad_param(
            "insert" if insert is not None else "point", "insert/point need an ordered-by user list"
        )
    insert = insert or "last"
    if insert not in ("first", "last", "before", "after"):
        raise bad_param("insert", f"bad insert {insert}")
    if (point is None) != (insert in ("first", "last")):
        raise bad_param("point", "point is required with before/after, and only then")
    if point is None:
        return {YANG_INSERT: insert}
    return position_attrs(
        schema, target, insert, parse_api_path(schema, point.removeprefix("/restconf/data"))
    )


def position_attrs(schema: Schema, target: Target, where: str, point: Target) -> dict[str, str]:
    """The insert attributes placing `target` `where` (before / after) the entry `point`."""
    sn = target.node
    if sn is None or point.node is not sn or point.steps[:-1] != target.steps[:-1] or not point.is_instance:
        raise bad_param("point", "point must name an entry of the same list")
    keys = point.steps[-1].keys or ()
    if sn.kind == "leaf-list":
        return {YANG_INSERT: where, YANG_VALUE: keys[0]}
    pred = "".join(f"[{k}={_literal(v)}]" for k, v in zip(sn.keys, keys, strict=True))
    return {YANG_INSERT: where, YANG_KEY: pred}


def delete_config(
    schema: Schema, target: Target, operation: str = "delete", attrs: dict[str, str] | None = None
) -> etree._Element:
    """<config> naming the resource (its keys only) with `operation` (delete, remove; merge with
    insert attributes: a move)."""
    config = new_config(schema)
    holder = target.chain(config)
    last = target.steps[-1]
    el = etree.SubElement(holder, _q(last.sn.ns, last.sn.name), nsmap={None: last.sn.ns})
    if last.sn.kind == "leaf-list":
        el.text = (last.keys or ("",))[0]
    elif last.sn.kind == "list" and last.keys is not None:
        for k, v in zip(last.sn.keys, last.keys, strict=True):
            etree.SubElement(el, _q(last.sn.ns, k)).text = v
    el.set(OP_ATTR, operation)
    for k, v in (attrs or {}).items():
        el.set(k, v)
    return config


def check_body_is_target(nodes: list[etree._Element], target: Target, schema: Schema) -> None:
    """PUT / PATCH: the body is exactly one instance of the target, with the URI's keys (§4.5)."""
    sn = target.node
    if sn is None:
        return
    if len(nodes) != 1:
        raise http_error(400, "invalid-value", f"the body must hold exactly one {sn.name}")
    el = nodes[0]
    if _schema_of(el, sn.parent, schema) is not sn:
        raise http_error(
            400, "invalid-value", f"the body holds {etree.QName(el).localname}, the URI names {sn.name}"
        )
    keys = target.steps[-1].keys
    if sn.kind == "list" and keys is not None:
        kids = [child(el, _q(sn.ns, k)) for k in sn.keys]
        got = tuple((kid.text or "").strip() if kid is not None else None for kid in kids)
        if got != keys:
            raise http_error(400, "invalid-value", "the key values in the body differ from those in the URI")
    if sn.kind == "leaf-list" and keys is not None and (el.text or "").strip() != keys[0]:
        raise http_error(400, "invalid-value", "the value in the body differs from the one in the URI")


async def run_edit(
    sess: RestconfSession,
    store: str,
    config: etree._Element,
    default_op: str | None = None,
    more: tuple[etree._Element, ...] = (),
) -> None:
    """The NETCONF edit path (the caller holds the transaction lock); RpcError → HttpError."""
    try:
        await edit_config(as_netconf(sess), _edit_op(store, config, default_op), more)
    except RpcError as err:
        http = HttpError.of(err)
        http.edit_index = getattr(err, "edit_index", None)  # type: ignore[attr-defined]
        raise http from None


# -- operations -------------------------------------------------------------------------------------------
def rpc_names(sess: RestconfSession) -> list[tuple[str, str, str]]:
    """(module, namespace, name) of every rpc the application registered (not NETCONF's own)."""
    schema = sess.core.schema
    out = []
    for ns, name in sess.core.rpc_handlers:
        module = schema.ns_to_module.get(ns)
        if module and not module.startswith("ietf-") and ns not in (NC_NS, YANG_NS):  # YANG_NS: <action>
            out.append((module, ns, name))
    return sorted(out)


async def invoke(
    sess: RestconfSession, module: str, name: str, body: bytes, fmt: str, out_fmt: str
) -> bytes | None:
    """POST {+restconf}/operations/<module>:<name>: input → the registered handler → output."""
    core, schema = sess.core, sess.core.schema
    ns = schema.module_to_ns.get(module)
    handler = core.rpc_handlers.get((ns or "", name))
    if ns is None or handler is None or (module, ns, name) not in rpc_names(sess):
        raise not_found(f"no operation {module}:{name}")
    if not core.nacm.may_call(sess.principal, (ns, name)):
        raise http_error(403, "access-denied", f"{name} is not allowed for this user")
    rpc = rpc_input(sess, module, ns, name, body, fmt)
    out = await _invoked(lambda: handler(as_netconf(sess), rpc))
    if out is None:
        return None
    if out_fmt == "json":
        return codec.rpc_output_to_json(schema.ctx, module, ns, name, out)
    return b'<output xmlns="%s">%s</output>' % (ns.encode(), out)


async def _invoked(call: Callable[[], Any]) -> bytes | None:
    """Run an rpc's or action's handler (maybe a coroutine): its output's children, None for none."""
    try:
        result = call()
        if inspect.isawaitable(result):
            result = await result
    except RpcError as err:
        raise HttpError.of(err) from None
    if result is None:
        return None
    return result if isinstance(result, bytes) else etree.tostring(result)


def rpc_input(
    sess: RestconfSession, module: str, ns: str, name: str, body: bytes, fmt: str
) -> etree._Element:
    if not body.strip():
        return etree.Element(_q(ns, name), nsmap={None: ns})
    if fmt == "json":
        doc = codec.parse_json(body)
        if not isinstance(doc, dict):
            raise http_error(400, "malformed-message", "the input must be a JSON object")
        return parse_message(codec.rpc_input_to_xml(sess.core.schema.ctx, module, name, doc))
    root = codec.parse_xml(body)
    if root.tag != _q(ns, "input"):
        raise http_error(400, "unknown-element", f"the body of {name} is its <input> element")
    # the input's namespace declarations come along: prefixes in values (identityrefs) stay bound
    rpc = etree.Element(_q(ns, name), nsmap={**root.nsmap, None: ns})
    rpc.extend(list(root))
    return rpc


# -- actions (RFC 8040 §3.6) ------------------------------------------------------------------------------
def action_at(schema: Schema, path: str) -> tuple[Target, SchemaNode] | None:
    """The data resource and the action when the api-path's last segment names an action of the node
    before it (None otherwise: the path is a data resource, or not one at all)."""
    head, _, last = path.rstrip("/").rpartition("/")
    if not head or "=" in last:
        return None
    try:
        target = parse_api_path(schema, head)
    except RpcError:
        return None
    module, _, name = unquote(last).rpartition(":")
    parent = target.node
    if parent is None:
        return None
    ns = schema.module_to_ns.get(module) if module else parent.ns
    action = parent.actions.get((ns or "", name))
    return (target, action) if action is not None else None


def action_request(
    sess: RestconfSession, target: Target, action: SchemaNode, body: bytes, fmt: str
) -> etree._Element:
    """The <action> element (RFC 7950 §7.15.2) for the action at `target` with the body's input."""
    holder = etree.Element(_q(YANG_NS, "action"), nsmap={None: YANG_NS})
    if body.strip() and fmt == "json":
        doc = codec.parse_json(body)
        if not isinstance(doc, dict):
            raise http_error(400, "malformed-message", "the input must be a JSON object")
        holder.append(
            codec.parse_printed(codec.action_input_to_xml(sess.core.schema.ctx, target, action, doc))
        )
        return holder
    node = etree.SubElement(target.chain_all(holder), _q(action.ns, action.name), nsmap={None: action.ns})
    if body.strip():
        root = codec.parse_xml(body)
        if root.tag != _q(action.ns, "input"):
            raise http_error(400, "unknown-element", f"the body of {action.name} is its <input> element")
        for c in list(root):
            node.append(c)
    return holder


async def invoke_action(
    sess: RestconfSession, target: Target, action: SchemaNode, body: bytes, fmt: str, out_fmt: str
) -> bytes | None:
    """POST {+restconf}/data/<path>/<action>: input → the registered handler (server/actions.py) → output."""
    if not target.is_instance:
        raise http_error(400, "missing-element", f"{target.node.name if target.node else ''} lacks its keys")
    if not sess.core.nacm.may_call(sess.principal, (YANG_NS, "action")):  # as NETCONF's <action>
        raise http_error(403, "access-denied", "actions are not allowed for this user")
    holder = action_request(sess, target, action, body, fmt)
    out = await _invoked(lambda: sess.core.actions.run(as_netconf(sess), holder))
    if out is None:
        return None
    if out_fmt == "json":
        return codec.action_output_to_json(sess.core.schema.ctx, target, action, out)
    return b'<output xmlns="%s">%s</output>' % (action.ns.encode(), out)
