"""Media types (RFC 8040 §5.2) and the JSON (RFC 7951) ↔ XML conversion, done by libyang.

The NETCONF layer speaks XML; a JSON request body is parsed by libyang against the schema (with the
ancestors of the resource around it, so a fragment parses in place) and printed as XML for the edit
path; a reply is the NETCONF layer's XML, parsed by libyang and printed as JSON.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import libyang
from libyang import DataType
from lxml import etree

from server.errors import RpcError, malformed
from server.restconf.errors import HttpError, http_error
from server.restconf.uri import Step, Target
from server.schema import SchemaNode
from server.xmlparse import parse_message
from server.xmlsafe import new_parser

JSON = "application/yang-data+json"
XML = "application/yang-data+xml"
PATCH_JSON = "application/yang-patch+json"
PATCH_XML = "application/yang-patch+xml"
_ALIASES = {JSON: "json", XML: "xml", "application/json": "json", "application/xml": "xml", "text/xml": "xml"}


def media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


def body_format(content_type: str | None, *, patch: bool = False) -> str:
    """'json' | 'xml' for a request body; 415 for anything else."""
    mt = media_type(content_type)
    if patch and mt in (PATCH_JSON, PATCH_XML):
        return "yang-patch-" + ("json" if mt == PATCH_JSON else "xml")
    if mt in _ALIASES:
        return _ALIASES[mt]
    raise http_error(415, "invalid-value", f"unsupported media type {mt or '(none)'}")


def reply_format(accept: str | None, default: str = "json") -> str:
    """'json' | 'xml' from Accept (q-values honoured, first best wins); 406 when none fits."""
    if not accept or not accept.strip():
        return default
    best: tuple[float, str] | None = None
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        mt, q = parts[0].lower(), 1.0
        for p in parts[1:]:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        fmt = _ALIASES.get(mt) or (default if mt in ("*/*", "application/*") else None)
        if fmt is not None and q > 0 and (best is None or q > best[0]):
            best = (q, fmt)
    if best is None:
        raise http_error(406, "invalid-value", f"cannot answer in any of: {accept}")
    return best[1]


def content_type(fmt: str) -> str:
    return JSON if fmt == "json" else XML


# -- request bodies -------------------------------------------------------------------------------------
def parse_xml(body: bytes) -> etree._Element:
    """A client's XML body, parsed as NETCONF messages are (server/xmlparse.py: hardened, and on the
    parse thread whose name dictionary is recycled, so invented names cannot grow the server)."""
    try:
        return parse_message(body)
    except RpcError as err:
        raise HttpError.of(err) from None


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError.of(malformed(f"JSON parse error: {exc}")) from None


def _libyang_error(exc: Exception) -> RpcError:
    msg = str(exc).removeprefix("failed to parse data tree: ")
    if "not found as a child" in msg or "No module" in msg or "not found" in msg.split(".")[0]:
        return RpcError("unknown-element", msg, type="application")
    if "missing its key" in msg:
        return RpcError("missing-element", msg, type="protocol")
    return RpcError("invalid-value", msg, type="application")


def _json_chain(steps: Iterable[Step], inner: dict[str, Any]) -> dict[str, Any]:
    """`inner` (members of the innermost object) wrapped in the instances of `steps`."""
    steps = list(steps)
    obj = inner
    for i in range(len(steps) - 1, -1, -1):
        sn, keys = steps[i].sn, steps[i].keys
        name = sn.name if i and steps[i - 1].sn.ns == sn.ns else f"{sn.module}:{sn.name}"
        if sn.kind == "list":
            entry = dict(zip(sn.keys, keys or (), strict=True))
            entry.update(obj)
            obj = {name: [entry]}
        else:
            obj = {name: obj}
    return obj


def json_to_xml(ctx: libyang.Context, parent: Target, members: dict[str, Any]) -> list[etree._Element]:
    """The JSON members (module-qualified, RFC 7951) of a node placed under `parent`, checked by
    libyang against the schema (unknown nodes, types, state data) and returned as XML elements."""
    doc = _json_chain(parent.steps, members)
    try:
        tree = ctx.parse_data_mem(json.dumps(doc), "json", parse_only=True, strict=True, no_state=True)
    except libyang.LibyangError as exc:
        raise HttpError.of(_libyang_error(exc)) from None
    if tree is None:
        return []
    try:
        xml = tree.print_mem("xml", with_siblings=True, pretty=False)
    finally:
        tree.free()
    printed = b"<x>" + _utf8(xml) + b"</x>"
    holder = parse_printed(printed) if _names_from_schema(parent) else parse_xml(printed)
    _own_namespace_values(holder)
    node: etree._Element | None = holder
    for step in parent.steps:
        node = node.find(f"{{{step.sn.ns}}}{step.sn.name}") if node is not None else None
    if node is None:
        return []
    return [c for c in node if isinstance(c.tag, str) and not _is_key_of(c, parent)]


_QNAME = re.compile(r"([A-Za-z_][\w.-]*):[A-Za-z_][\w.-]*")


def _own_namespace_values(holder: etree._Element) -> None:
    """An identityref value of the element's own namespace loses its prefix (`sn:encode-json` in an
    ietf-subscribed-notifications leaf → `encode-json`, the same QName, resolved against the default
    namespace): libyang declares that prefix on the leaf, and lxml drops such a declaration as
    redundant when the node moves under the edit's <config>, which would leave the value unbound."""
    for el in holder.iter():
        text = el.text
        if len(el) or not text or ":" not in text:
            continue
        m = _QNAME.fullmatch(text)
        if m is None:
            continue
        ns = el.nsmap.get(m.group(1))
        parent = el.getparent()
        own = parent is None or parent.nsmap.get(m.group(1)) != ns  # declared on the leaf itself
        if ns is not None and own and ns == el.nsmap.get(None):
            el.text = text[len(m.group(1)) + 1 :]


_LOCAL = threading.local()
#: schema node → whether configuration anydata lies below it (its content keeps the client's names)
_ANYDATA: weakref.WeakKeyDictionary[SchemaNode, bool] = weakref.WeakKeyDictionary()


def _anydata_below(sn: SchemaNode) -> bool:
    found = _ANYDATA.get(sn)
    if found is None:
        found = _ANYDATA[sn] = sn.kind == "anydata" or any(_anydata_below(c) for c in sn.children.values())
    return found


def _names_from_schema(parent: Target) -> bool:
    """Does every name in a body placed under `parent` come from the schema? Not when configuration
    anydata may hold it (ietf-subscribed-notifications' subtree filters), nor for a whole datastore."""
    return bool(parent.steps) and not _anydata_below(parent.steps[-1].sn)


def parse_printed(xml: bytes) -> etree._Element:
    """XML that libyang printed from a tree it parsed strictly against the schema, with no anydata:
    parsed here, on the caller's thread. Its element and namespace names are the schema's, so it
    cannot grow the parser's name dictionary as a client's own names could (those go to the recycled
    parse thread of server/xmlparse.py, a hand-over that costs more than the parse of a small body)."""
    parser = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = _LOCAL.parser = new_parser(huge_tree=True, collect_ids=False)
    return etree.fromstring(xml, parser)


def _is_key_of(el: etree._Element, parent: Target) -> bool:
    """A list key leaf the chain itself put into the innermost entry."""
    last = parent.steps[-1] if parent.steps else None
    return last is not None and last.sn.kind == "list" and etree.QName(el).localname in last.sn.keys


def rpc_input_to_xml(ctx: libyang.Context, module: str, name: str, members: dict[str, Any]) -> bytes:
    """`{"<module>:input": {...}}` of an operation → the XML rpc element (checked by libyang)."""
    inner = members.get(f"{module}:input", {}) if members else {}
    if members and set(members) != {f"{module}:input"}:
        raise http_error(400, "unknown-element", f'an operation\'s body is {{"{module}:input": ...}}')
    try:
        tree = ctx.parse_op_mem("json", json.dumps({f"{module}:{name}": inner}), dtype=DataType.RPC_YANG)
    except libyang.LibyangError as exc:
        raise HttpError.of(_libyang_error(exc)) from None
    try:
        return tree.print_mem("xml", pretty=False).encode()
    finally:
        tree.free()


# -- replies --------------------------------------------------------------------------------------------
def print_json(ctx: libyang.Context, xml: bytes, xpath: str | None) -> bytes | None:
    """XML data (top-level elements, no wrapper) → RFC 7951 JSON of the node(s) at `xpath`, or of the
    whole as ietf-restconf:data when `xpath` is None; None when nothing is at `xpath`."""
    try:
        tree = ctx.parse_data_mem(xml, "xml", parse_only=True, strict=True) if xml.strip() else None
    except libyang.LibyangError as exc:
        raise HttpError.of(RpcError("operation-failed", f"cannot encode the reply: {exc}")) from None
    if tree is None:
        return b'{"ietf-restconf:data":{}}' if xpath is None else None
    try:
        if xpath is None:
            body = tree.print_mem("json", with_siblings=True, pretty=False, keep_empty_containers=True)
            return b'{"ietf-restconf:data":' + _utf8(body) + b"}"
        nodes = list(tree.find_all(xpath))
        if not nodes:
            return None
        parts = [_utf8(n.print_mem("json", pretty=False, keep_empty_containers=True)) for n in nodes]
        return parts[0] if len(parts) == 1 else _join_json_arrays(parts)
    finally:
        tree.free()


def _utf8(printed: str | bytes) -> bytes:
    """libyang's print_mem gives str for the text formats."""
    return printed.encode() if isinstance(printed, str) else printed


def _join_json_arrays(parts: list[bytes]) -> bytes:
    """Several entries of one list (or leaf-list) printed alone each → one member with all of them."""
    docs = [json.loads(p) for p in parts]
    name = next(iter(docs[0]))
    return json.dumps({name: [v for d in docs for v in d[name]]}).encode()


def rpc_output_to_json(ctx: libyang.Context, module: str, ns: str, name: str, output_xml: bytes) -> bytes:
    """An rpc handler's output elements → `{"<module>:output": {...}}` (checked by libyang)."""
    reply = b'<%s xmlns="%s">%s</%s>' % (name.encode(), ns.encode(), output_xml, name.encode())
    return _output_json(ctx, reply.decode(), module)


def _output_json(ctx: libyang.Context, reply: str, module: str) -> bytes:
    """A reply (rpc or action, XML) checked by libyang and printed as `{"<module>:output": {...}}`."""
    try:
        tree = ctx.parse_op_mem("xml", reply, dtype=DataType.REPLY_YANG)
    except libyang.LibyangError as exc:
        raise HttpError.of(RpcError("operation-failed", f"cannot encode the reply: {exc}")) from None
    try:
        out = json.loads(tree.print_mem("json", pretty=False))
    finally:
        tree.free()
    return json.dumps({f"{module}:output": next(iter(out.values()), {})}).encode()


def notification_to_json(ctx: libyang.Context, event_time: str, body: bytes) -> bytes:
    """One event (the notification's content element) as RFC 8040 §6.4 JSON."""
    try:
        tree = ctx.parse_op_mem("xml", body.decode(), dtype=DataType.NOTIF_YANG)
        content = json.loads(tree.print_mem("json", pretty=False))
        tree.free()
    except libyang.LibyangError:  # replayComplete / notificationComplete (RFC 5277, no YANG module)
        content = {f"nc-notifications:{etree.QName(etree.fromstring(body)).localname}": [None]}
    return json.dumps({"ietf-restconf:notification": {"eventTime": event_time, **content}}).encode()


# -- actions (RFC 8040 §3.6) -----------------------------------------------------------------------------
def _action_name(target: Target, action: SchemaNode) -> str:
    parent = target.node
    return (
        action.name
        if parent is not None and parent.module == action.module
        else f"{action.module}:{action.name}"
    )


def action_input_to_xml(
    ctx: libyang.Context, target: Target, action: SchemaNode, members: dict[str, Any]
) -> bytes:
    """`{"<module>:input": {...}}` of the action at `target` → the XML data tree down to the action with
    its input (checked by libyang: the instance the path names, then the input inside it)."""
    if members and set(members) != {f"{action.module}:input"}:
        raise http_error(400, "unknown-element", f'an action\'s body is {{"{action.module}:input": ...}}')
    inner = members.get(f"{action.module}:input", {}) if members else {}
    xpath = _libyang_path(target)
    try:
        top = ctx.create_data_path(xpath)
    except libyang.LibyangError as exc:
        raise HttpError.of(_libyang_error(exc)) from None
    assert top is not None  # a path of at least one node
    try:
        parent = top.find_path(xpath)
        doc = json.dumps({f"{action.module}:{action.name}": inner})
        ctx.parse_op_mem("json", doc, dtype=DataType.RPC_YANG, parent=parent)
        return _utf8(top.print_mem("xml", pretty=False))
    except libyang.LibyangError as exc:
        raise HttpError.of(_libyang_error(exc)) from None
    finally:
        top.free()


def _libyang_path(target: Target) -> str:
    """The libyang data path of an instance (module names on every step: valid in any module mix)."""
    out = []
    for step in target.steps:
        sn = step.sn
        keys = "".join(f"[{k}={_quoted(v)}]" for k, v in zip(sn.keys, step.keys or (), strict=False))
        out.append(f"{sn.module}:{sn.name}{keys}")
    return "/" + "/".join(out)


def _quoted(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise http_error(400, "invalid-value", "a key value holding both quote characters")


def action_output_to_json(
    ctx: libyang.Context, target: Target, action: SchemaNode, output_xml: bytes
) -> bytes:
    """An action handler's output elements → `{"<module>:output": {...}}` (checked by libyang)."""
    holder = etree.Element("holder")
    node = etree.SubElement(
        target.chain_all(holder), f"{{{action.ns}}}{action.name}", nsmap={None: action.ns}
    )
    node.extend(list(parse_printed(b"<x>" + output_xml + b"</x>")))
    return _output_json(ctx, etree.tostring(holder[0]).decode(), action.module)
