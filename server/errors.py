"""The one error type of the NETCONF layer, raised internally and turned into <rpc-error> in one place.

Modelled on h11's LocalProtocolError: code anywhere in server/ raises an RpcError carrying everything
RFC 6241 Appendix A needs; `rpc.py` renders it. Several errors in one reply travel as RpcErrors.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from lxml import etree

from server.xmlns import NC_NS

ERROR_TAGS = frozenset(
    {
        "in-use",
        "invalid-value",
        "too-big",
        "missing-attribute",
        "bad-attribute",
        "unknown-attribute",
        "missing-element",
        "bad-element",
        "unknown-element",
        "unknown-namespace",
        "access-denied",
        "lock-denied",
        "resource-denied",
        "rollback-failed",
        "data-exists",
        "data-missing",
        "operation-not-supported",
        "operation-failed",
        "partial-operation",
        "malformed-message",
    }
)
ERROR_TYPES = frozenset({"transport", "rpc", "protocol", "application"})


@dataclass
class RpcError(Exception):
    """One <rpc-error>; `info` holds error-info children as (local-name, text) pairs."""

    tag: str
    message: str = ""
    type: str = "application"
    app_tag: str | None = None
    path: str | None = None
    path_nsmap: Mapping[str, str] | None = None  # error-path prefixes: never the default namespace
    info: tuple[tuple[str, str], ...] = ()
    severity: str = "error"
    #: structured error-info in other namespaces (RFC 8639 §2.4.6 yang-data), after `info`
    info_xml: tuple[etree._Element, ...] = ()
    extra: tuple[RpcError, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.tag not in ERROR_TAGS:
            raise ValueError(f"unknown error-tag {self.tag!r}")
        if self.type not in ERROR_TYPES:
            raise ValueError(f"unknown error-type {self.type!r}")
        Exception.__init__(self, f"{self.tag}: {self.message}")

    def all(self) -> list[RpcError]:
        """This error followed by the others carried with it (continue-on-error)."""
        return [self, *self.extra]

    def to_xml(self) -> etree._Element:
        """Render as an <rpc-error> element in the base namespace."""
        q = f"{{{NC_NS}}}"
        err = etree.Element(q + "rpc-error", nsmap={None: NC_NS})
        etree.SubElement(err, q + "error-type").text = self.type
        etree.SubElement(err, q + "error-tag").text = self.tag
        etree.SubElement(err, q + "error-severity").text = self.severity
        if self.app_tag:
            etree.SubElement(err, q + "error-app-tag").text = self.app_tag
        if self.path:
            nsmap = {k: v for k, v in (self.path_nsmap or {}).items() if k}
            p = etree.SubElement(err, q + "error-path", nsmap=nsmap)
            p.text = self.path
        if self.message:
            m = etree.SubElement(err, q + "error-message")
            m.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
            m.text = self.message
        if self.info or self.info_xml:
            info = etree.SubElement(err, q + "error-info")
            for name, text in self.info:
                etree.SubElement(info, q + name).text = text
            for el in self.info_xml:
                info.append(copy.deepcopy(el))
        return err


def combine(errors: Iterable[RpcError]) -> RpcError:
    """Fold several errors into one raisable RpcError whose `all()` yields each of them."""
    errs = list(errors)
    if not errs:
        raise ValueError("no errors to combine")
    first = errs[0]
    return RpcError(
        tag=first.tag,
        message=first.message,
        type=first.type,
        app_tag=first.app_tag,
        path=first.path,
        path_nsmap=first.path_nsmap,
        info=first.info,
        severity=first.severity,
        info_xml=first.info_xml,
        extra=tuple(e for err in errs[1:] for e in err.all()) + first.extra,
    )


_TOKEN = re.compile(r"([A-Za-z_][\w.-]*):(?=[A-Za-z_])")


def _reprefix_path(path: str, rename: dict[str, str]) -> str:
    """Rename prefixes outside quoted key values ('2001:db8::1' stays as it is)."""
    parts = re.split(r"('[^']*'|\"[^\"]*\")", path)
    for i in range(0, len(parts), 2):
        parts[i] = _TOKEN.sub(lambda m: rename.get(m.group(1), m.group(1)) + ":", parts[i])
    return "".join(parts)


def with_request_prefixes(err: RpcError, prefix_of: dict[str, str]) -> RpcError:
    """Rewrite every error's path (and non-unique info) into the prefixes the request used.

    `prefix_of` maps namespace → the request's prefix for it; prefixes of other namespaces stay."""
    out = []
    for e in err.all():
        nsmap = dict(e.path_nsmap or {})
        rename = {p: prefix_of[ns] for p, ns in nsmap.items() if p and ns in prefix_of}
        if not rename or not e.path:
            out.append(replace(e, extra=()))
            continue
        new_nsmap = {rename.get(p, p): ns for p, ns in nsmap.items()}
        info = tuple((k, _reprefix_path(v, rename) if k == "non-unique" else v) for k, v in e.info)
        out.append(replace(e, path=_reprefix_path(e.path, rename), path_nsmap=new_nsmap, info=info, extra=()))
    return combine(out)


def malformed(message: str) -> RpcError:
    return RpcError("malformed-message", message, type="rpc")


def missing_element(name: str, message: str = "", type: str = "protocol") -> RpcError:
    return RpcError(
        "missing-element", message or f"missing element {name}", type=type, info=(("bad-element", name),)
    )


def bad_element(name: str, message: str, type: str = "protocol") -> RpcError:
    return RpcError("bad-element", message, type=type, info=(("bad-element", name),))


def invalid_value(
    message: str, type: str = "protocol", path: str | None = None, bad: str | None = None
) -> RpcError:
    """invalid-value; `bad`: the element whose value it is (error-info bad-element)."""
    return RpcError(
        "invalid-value", message, type=type, path=path, info=(("bad-element", bad),) if bad else ()
    )


def bad_attribute(attribute: str, element: str, message: str, *, missing: bool = False) -> RpcError:
    """bad-attribute / missing-attribute (error-info bad-attribute and bad-element)."""
    return RpcError(
        "missing-attribute" if missing else "bad-attribute",
        message,
        type="protocol",
        info=(("bad-attribute", attribute), ("bad-element", element)),
    )


def access_denied(message: str, type: str = "application", path: str | None = None) -> RpcError:
    return RpcError("access-denied", message, type=type, path=path)


def in_use(message: str, type: str = "protocol") -> RpcError:
    return RpcError("in-use", message, type=type)


def operation_not_supported(message: str, type: str = "protocol") -> RpcError:
    return RpcError("operation-not-supported", message, type=type)
