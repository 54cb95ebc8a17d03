"""RFC 8040 §7 errors: the NETCONF error vocabulary (server/errors.py) mapped to HTTP status codes,
rendered as ietf-restconf:errors in JSON or XML."""

from __future__ import annotations

import json
from collections.abc import Iterable

from lxml import etree

from server.errors import RpcError, _reprefix_path
from server.schema import Schema

RESTCONF_NS = "urn:ietf:params:xml:ns:yang:ietf-restconf"

#: error-tag → status (RFC 8040 §7); where the RFC lists several, the request decides (HttpError)
STATUS: dict[str, int] = {
    "in-use": 409,
    "invalid-value": 400,
    "too-big": 413,
    "missing-attribute": 400,
    "missing-element": 400,  # not in RFC 8040's table: a request's fault like its neighbours
    "bad-attribute": 400,
    "unknown-attribute": 400,
    "bad-element": 400,
    "unknown-element": 400,
    "unknown-namespace": 400,
    "access-denied": 403,
    "lock-denied": 409,
    "resource-denied": 409,
    "rollback-failed": 500,
    "data-exists": 409,
    "data-missing": 409,
    "operation-not-supported": 501,
    "operation-failed": 500,
    "partial-operation": 500,
    "malformed-message": 400,
}


class HttpError(Exception):
    """A request answered with an error status and ietf-restconf:errors (or no body)."""

    def __init__(
        self, status: int, errors: Iterable[RpcError] = (), headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.errors = list(errors)
        self.headers = headers or {}
        super().__init__(f"{status}: {self.errors[0].message if self.errors else ''}")

    @classmethod
    def of(cls, err: RpcError, status: int | None = None) -> HttpError:
        if status is None and err.tag == "operation-failed" and err.type == "application":
            status = 400  # the data model refuses the request (a must, a unique): not a server fault
        return cls(status or STATUS.get(err.tag, 500), err.all())


def http_error(status: int, tag: str, message: str, type: str = "protocol", **kw) -> HttpError:
    return HttpError(status, [RpcError(tag, message, type=type, **kw)])


def not_found(message: str = "no such resource") -> HttpError:
    """RFC 8040 §4.3: a data resource that does not exist is 404 with error-tag invalid-value."""
    return http_error(404, "invalid-value", message, type="application")


def json_path(err: RpcError, schema: Schema) -> str | None:
    """error-path with module names as prefixes (RFC 7951 §6.11 instance-identifier)."""
    if not err.path:
        return None
    rename = {
        p: schema.ns_to_module[ns]
        for p, ns in (err.path_nsmap or {}).items()
        if p and ns in schema.ns_to_module
    }
    return _reprefix_path(err.path, rename) if rename else err.path


def render_json(errs: list[RpcError], schema: Schema) -> bytes:
    out = []
    for e in errs:
        item: dict[str, object] = {"error-type": e.type, "error-tag": e.tag}
        if e.app_tag:
            item["error-app-tag"] = e.app_tag
        path = json_path(e, schema)
        if path:
            item["error-path"] = path
        if e.message:
            item["error-message"] = e.message
        if e.info:
            item["error-info"] = dict(e.info)
        out.append(item)
    return json.dumps({"ietf-restconf:errors": {"error": out}}, indent=2).encode()


def render_xml(errs: list[RpcError]) -> bytes:
    q = f"{{{RESTCONF_NS}}}"
    root = etree.Element(q + "errors", nsmap={None: RESTCONF_NS})
    for e in errs:
        el = etree.SubElement(root, q + "error")
        etree.SubElement(el, q + "error-type").text = e.type
        etree.SubElement(el, q + "error-tag").text = e.tag
        if e.app_tag:
            etree.SubElement(el, q + "error-app-tag").text = e.app_tag
        if e.path:
            nsmap = {k: v for k, v in (e.path_nsmap or {}).items() if k}
            etree.SubElement(el, q + "error-path", nsmap=nsmap).text = e.path
        if e.message:
            etree.SubElement(el, q + "error-message").text = e.message
        if e.info:
            info = etree.SubElement(el, q + "error-info")
            for name, text in e.info:
                etree.SubElement(info, q + name).text = text
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
