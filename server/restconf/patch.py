"""YANG Patch (RFC 8072): several edits of one resource as one transaction, answered with
yang-patch-status. The edits become <config> elements applied in order by the NETCONF edit path
(`edit_config(..., more=...)`), so a refused edit leaves nothing of the others."""

from __future__ import annotations

from lxml import etree

from server.errors import RpcError
from server.restconf import codec, handlers
from server.restconf.errors import STATUS, HttpError, http_error, json_path
from server.restconf.session import RestconfSession
from server.restconf.uri import Target, parse_api_path

YP_NS = "urn:ietf:params:xml:ns:yang:ietf-yang-patch"
OPERATIONS = ("create", "delete", "insert", "merge", "move", "replace", "remove")


def _edits(body: bytes, fmt: str) -> tuple[str, list[dict]]:
    """(patch-id, [{edit-id, operation, target, value: json members | xml elements, ...}])."""
    if fmt == "yang-patch-json":
        doc = codec.parse_json(body)
        patch = doc.get("ietf-yang-patch:yang-patch") if isinstance(doc, dict) else None
        if not isinstance(patch, dict) or not isinstance(patch.get("edit", []), list):
            raise http_error(400, "malformed-message", 'the body is {"ietf-yang-patch:yang-patch": {...}}')
        return str(patch.get("patch-id", "")), [e for e in patch.get("edit", []) if isinstance(e, dict)]
    root = codec.parse_xml(body)
    if root.tag != f"{{{YP_NS}}}yang-patch":
        raise http_error(400, "malformed-message", "the body is a <yang-patch> element")
    edits = []
    for e in root.iterchildren(f"{{{YP_NS}}}edit"):
        item: dict = {
            c.tag.rpartition("}")[2]: (c.text or "").strip() for c in e if c.tag != f"{{{YP_NS}}}value"
        }
        value = e.find(f"{{{YP_NS}}}value")
        if value is not None:
            item["value"] = [c for c in value if isinstance(c.tag, str)]
        edits.append(item)
    return (root.findtext(f"{{{YP_NS}}}patch-id") or "").strip(), edits


def _config(sess: RestconfSession, base: Target, edit: dict, fmt: str) -> etree._Element:
    schema = sess.core.schema
    op = edit.get("operation")
    if op not in OPERATIONS:
        raise http_error(400, "invalid-value", f"bad operation {op!r}")
    path = str(edit.get("target", ""))
    target = base if path.strip("/") == "" else parse_api_path(schema, path, base)
    if not target.steps:
        raise http_error(400, "invalid-value", "an edit's target must be a data node")
    if op in ("delete", "remove"):
        return handlers.delete_config(schema, target, op)
    attrs = _position(schema, base, target, edit) if op in ("insert", "move") else None
    if op == "move":  # the entry stays as it is, only its place changes
        return handlers.delete_config(schema, target, "merge", attrs)
    if "value" not in edit:
        raise http_error(400, "missing-element", f"{op} needs a value", info=(("bad-element", "value"),))
    parent = Target(target.steps[:-1])
    value = edit["value"]
    if fmt == "yang-patch-json":
        if not isinstance(value, dict):
            raise http_error(400, "malformed-message", "an edit's value is a JSON object")
        nodes = codec.json_to_xml(schema.ctx, parent, value)
    else:
        nodes = list(value)
    handlers.check_body_is_target(nodes, target, schema)
    return handlers.config_for(schema, parent, nodes, "create" if op == "insert" else op, attrs)


def _position(schema, base: Target, target: Target, edit: dict) -> dict[str, str]:
    """RFC 8072 `where` / `point` of an insert or move as YANG insert attributes."""
    where = edit.get("where", "last")
    node = target.node
    if node is None or node.kind not in ("list", "leaf-list") or not node.user_ordered:
        raise http_error(400, "invalid-value", f"{edit.get('operation')} needs an ordered-by user list")
    if where in ("first", "last"):
        return {handlers.YANG_INSERT: where}
    if where not in ("before", "after") or "point" not in edit:
        raise http_error(
            400, "invalid-value", "where before/after needs a point", info=(("bad-element", "point"),)
        )
    point = parse_api_path(schema, str(edit["point"]), base)
    return handlers.position_attrs(schema, target, where, point)


async def yang_patch(
    sess: RestconfSession, store: str, target: Target, body: bytes, fmt: str, out_fmt: str
) -> tuple[int, bytes]:
    """Apply the patch (the caller holds the transaction lock); (status, yang-patch-status)."""
    patch_id, edits = _edits(body, fmt)
    if not edits:
        raise http_error(400, "missing-element", "a YANG Patch needs at least one edit")
    ids = [str(e.get("edit-id", i)) for i, e in enumerate(edits)]
    if len(set(ids)) != len(ids):
        raise http_error(400, "invalid-value", "edit-id values must be unique")
    configs: list[etree._Element] = []
    for i, e in enumerate(edits):
        try:
            configs.append(_config(sess, target, e, fmt))
        except HttpError as err:
            return err.status, _status(sess, patch_id, out_fmt, err.errors, ids[i])
        except RpcError as err:
            return STATUS.get(err.tag, 400), _status(sess, patch_id, out_fmt, err.all(), ids[i])
    try:
        await handlers.run_edit(sess, store, configs[0], more=tuple(configs[1:]))
    except HttpError as err:
        index = getattr(err, "edit_index", None)
        return err.status, _status(
            sess, patch_id, out_fmt, err.errors, ids[index] if index is not None else None
        )
    return 200, _status(sess, patch_id, out_fmt, [], None)


def _status(
    sess: RestconfSession, patch_id: str, fmt: str, errs: list[RpcError], edit_id: str | None
) -> bytes:
    import json

    schema = sess.core.schema
    if fmt == "json":
        st: dict = {"patch-id": patch_id}
        if not errs:
            st["ok"] = [None]
        else:
            items = []
            for e in errs:
                item = {"error-type": e.type, "error-tag": e.tag}
                if e.app_tag:
                    item["error-app-tag"] = e.app_tag
                path = json_path(e, schema)
                if path:
                    item["error-path"] = path
                if e.message:
                    item["error-message"] = e.message
                items.append(item)
            if edit_id is None:
                st["errors"] = {"error": items}
            else:
                st["edit-status"] = {"edit": [{"edit-id": edit_id, "errors": {"error": items}}]}
        return json.dumps({"ietf-yang-patch:yang-patch-status": st}, indent=2).encode()
    q = f"{{{YP_NS}}}"
    root = etree.Element(q + "yang-patch-status", nsmap={None: YP_NS})
    etree.SubElement(root, q + "patch-id").text = patch_id
    if not errs:
        etree.SubElement(root, q + "ok")
        return etree.tostring(root)
    holder = root
    if edit_id is not None:
        edit = etree.SubElement(etree.SubElement(root, q + "edit-status"), q + "edit")
        etree.SubElement(edit, q + "edit-id").text = edit_id
        holder = edit
    errors = etree.SubElement(holder, q + "errors")
    for e in errs:
        el = etree.SubElement(errors, q + "error")
        etree.SubElement(el, q + "error-type").text = e.type
        etree.SubElement(el, q + "error-tag").text = e.tag
        if e.path:
            nsmap = {k: v for k, v in (e.path_nsmap or {}).items() if k}
            etree.SubElement(el, q + "error-path", nsmap=nsmap).text = e.path
        if e.message:
            etree.SubElement(el, q + "error-message").text = e.message
    return etree.tostring(root)
