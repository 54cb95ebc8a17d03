"""Whole-document YANG validation with libyang, reported as NETCONF-ready structured errors.

libyang 2.1 (Debian 12) stops at the first error and has no multi-error mode, yet an operator
wants every violation of a rejected commit at once.  So validation runs in two stages and repairs
the document between rounds:

1. *parse* (``LYD_PARSE_ONLY | LYD_PARSE_STRICT``): XML → typed tree; catches unknown elements and
   namespaces, bad values (types, ranges, patterns, enums).  On an error the offending element is
   removed from a scratch copy of the document, which is parsed again.
2. *validate* (``lyd_validate_all``): must, unique, leafref, mandatory, min/max-elements,
   duplicates.  On an error the offending data node is freed from the tree, which is validated again.

Each round reports one violation, so a valid document costs exactly one parse and one validation
(linear, see ``bench/validate.py``) and an invalid one costs one round per violation, capped at
:data:`MAX_ERRORS`.  A violation whose fix hides another (an error inside a list entry that also
violates a ``must`` on the entry) is reported once the first is fixed.

Errors follow RFC 6241 Appendix A and RFC 7950 section 15: error-tag, error-app-tag, error-path in
the document's own prefixes (the module prefix where the document used a default namespace), and
``bad-element`` / ``non-unique`` information.  Values of ``nacm:default-deny-all`` nodes (keys)
never appear in messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libyang
from _libyang import ffi, lib
from lxml import etree

from . import yang
from .xmlsafe import parse_xml

NC_NS = "urn:ietf:params:xml:ns:netconf:base:1.0"
NACM_MODULE = "ietf-netconf-acm"

#: Rounds of repair-and-retry before giving up on listing further violations.
MAX_ERRORS = 64

_PARSE_FLAGS = lib.LYD_PARSE_ONLY | lib.LYD_PARSE_STRICT | lib.LYD_PARSE_NO_STATE
_VALIDATE_FLAGS = lib.LYD_VALIDATE_NO_STATE

_LOCATION_RE = re.compile(r'^(Data|Schema) location "(?P<path>.*)"(?:, line number (?P<line>\d+))?\.?$', re.S)
_UNKNOWN_CHILD_RE = re.compile(r'^Node "(?P<name>[^"]+)" not found as a child of')
_UNKNOWN_NS_RE = re.compile(r'^No module with namespace "(?P<ns>[^"]*)"')
_UNIQUE_RE = re.compile(
    r'^Unique data leaf\(s\) "(?P<leaves>[^"]+)" not satisfied in "(?P<a>[^"]+)" and "(?P<b>[^"]+)"'
)
_MANDATORY_RE = re.compile(r'^Mandatory node "(?P<name>[^"]+)" instance does not exist')
_MANDATORY_CHOICE_RE = re.compile(r'^Mandatory choice "(?P<name>[^"]+)" data do not exist')
_DUPLICATE_RE = re.compile(r"^Duplicate instance of")
_TOO_MANY_RE = re.compile(r"^Too many")
_TOO_FEW_RE = re.compile(r"^Too few")


@dataclass(frozen=True, slots=True)
class ValidationError:
    """One violation, shaped like a NETCONF ``rpc-error`` (RFC 6241 Appendix A)."""

    tag: str
    path: str | None
    message: str
    app_tag: str | None = None
    bad_element: str | None = None
    type: str = "application"
    #: Prefix → namespace for every prefix used in :attr:`path` (declare them on ``error-path``).
    nsmap: Mapping[str, str] = field(default_factory=dict)
    #: Extra ``error-info`` children as (local name, text), e.g. ("non-unique", path).
    info: tuple[tuple[str, str], ...] = ()


class ValidationFailed(Exception):
    """Raised by :meth:`Validator.parse` with every violation found."""

    def __init__(self, errors: Sequence[ValidationError]):
        super().__init__("; ".join(e.message for e in errors) or "invalid configuration")
        self.errors = list(errors)


@dataclass(slots=True)
class _LyError:
    message: str
    app_tag: str | None
    location: str | None  # "Data" | "Schema"
    path: str | None
    line: int | None
    vecode: int


class Validator:
    """Validates configuration documents against the loaded YANG modules.

    One instance per process is enough; it is not thread-safe (libyang's error list is per
    context), so the NETCONF server calls it from one thread.
    """

    def __init__(self, yang_dir: Path | None = None, modules: tuple[str, ...] = yang.IMPLEMENTED_MODULES):
        self.ctx: libyang.Context = yang.shared_context(yang_dir or yang.YANG_DIR, modules)
        self._module_by_name: dict[str, libyang.Module] = {m.name(): m for m in self.ctx}
        self._ns_by_module: dict[str, str] = {m.name(): module_namespace(m) for m in self.ctx}
        self.protected_paths: frozenset[str] = frozenset(_protected_schema_paths(self.ctx))

    # -- public API -------------------------------------------------------------------------

    def validate(
        self, config: etree._Element | bytes | str | Iterable[etree._Element]
    ) -> list[ValidationError]:
        """Every violation in ``config`` (empty list = valid)."""
        errors, tree = self._run(config)
        if tree is not None:
            lib.lyd_free_all(tree)
        return errors

    def parse(self, config: etree._Element | bytes | str | Iterable[etree._Element]) -> libyang.DNode | None:
        """The validated libyang tree (None for an empty document); raises :class:`ValidationFailed`.

        The caller owns the tree: free it with ``tree.free()`` (the whole forest of siblings).
        """
        errors, tree = self._run(config)
        if errors:
            if tree is not None:
                lib.lyd_free_all(tree)
            raise ValidationFailed(errors)
        if tree is None:
            return None
        return libyang.DNode.new(self.ctx, tree)

    # -- the two stages -----------------------------------------------------------------------

    def _run(self, config) -> tuple[list[ValidationError], object | None]:
        elements = top_level_elements(config)
        nsmap = _document_prefixes(elements)
        data = b"".join(etree.tostring(e) for e in elements)
        errors: list[ValidationError] = []
        # Data paths (libyang form) removed to get past an error: later errors at, above or below
        # them are consequences of the repair, not violations of the document.
        repaired: list[str] = []
        tree = None
        lined = False
        while True:
            tree, ly_errors = self._parse_only(data)
            if not ly_errors:
                break
            if len(errors) >= MAX_ERRORS:
                return errors, None
            # libyang reports line numbers of ``data``: re-read it so sourcelines match.
            scratch = etree.fromstring(b"<r>" + data + b"</r>", _SCRATCH_PARSER)
            if not lined:
                # a line number names one element only if each element starts a line of its own
                lined = True
                _one_per_line(scratch)
                data = b"".join(etree.tostring(e) for e in scratch)
                continue
            err = ly_errors[0]
            if not _tainted(err.path, repaired):
                errors.append(self._convert(err, nsmap))
            culprit = _remove_parse_culprit(scratch, err, self._is_key)
            if culprit is None:
                return errors, None
            repaired.append(culprit)
            data = b"".join(etree.tostring(e) for e in scratch)
        if tree is None:
            return errors, None
        tree_ptr = ffi.new("struct lyd_node **", tree)
        while True:
            ret = lib.lyd_validate_all(tree_ptr, self.ctx.cdata, _VALIDATE_FLAGS, ffi.NULL)
            ly_errors = self._collect()
            if ret == lib.LY_SUCCESS:
                break
            if not ly_errors or len(errors) >= MAX_ERRORS:
                if not ly_errors:
                    errors.append(ValidationError("operation-failed", None, "validation failed"))
                break
            err = ly_errors[0]
            errors.extend(
                e for e, p in self._convert_validation(err, tree_ptr[0], nsmap) if not _tainted(p, repaired)
            )
            removed = self._remove_validation_culprit(tree_ptr, err)
            if not removed:
                break
            repaired.extend(removed)
        return errors, (tree_ptr[0] if tree_ptr[0] != ffi.NULL else None)

    def _parse_only(self, data: bytes) -> tuple[object | None, list[_LyError]]:
        if not data.strip():
            return None, []
        inp = ffi.new("struct ly_in **")
        if lib.ly_in_new_memory(data, inp) != lib.LY_SUCCESS:
            raise MemoryError("libyang could not read the input")
        node = ffi.new("struct lyd_node **")
        try:
            ret = lib.lyd_parse_data(self.ctx.cdata, ffi.NULL, inp[0], lib.LYD_XML, _PARSE_FLAGS, 0, node)
        finally:
            lib.ly_in_free(inp[0], 0)
        errors = self._collect()
        if ret != lib.LY_SUCCESS:
            if node[0] != ffi.NULL:
                lib.lyd_free_all(node[0])
            return None, errors or [_LyError("invalid document", None, None, None, None, 0)]
        return (node[0] if node[0] != ffi.NULL else None), []

    def _collect(self) -> list[_LyError]:
        out: list[_LyError] = []
        err = lib.ly_err_first(self.ctx.cdata)
        while err:
            if err.level == lib.LY_LLERR:
                where = _LOCATION_RE.match(_str(err.path) or "")
                out.append(
                    _LyError(
                        message=" ".join((_str(err.msg) or "").split()),
                        app_tag=_str(err.apptag),
                        location=where.group(1) if where else None,
                        path=where.group("path") if where else None,
                        line=int(where.group("line")) if where and where.group("line") else None,
                        vecode=err.vecode,
                    )
                )
            err = err.next
        lib.ly_err_clean(self.ctx.cdata, ffi.NULL)
        return out

    # -- error conversion ---------------------------------------------------------------------

    def _convert(self, err: _LyError, nsmap: Mapping[str, str]) -> ValidationError:
        """A parse-stage error: unknown element/namespace or a bad value."""
        path, used = self._doc_path(err.path, nsmap) if err.path else (None, {})
        m = _UNKNOWN_CHILD_RE.match(err.message)
        if m:
            return ValidationError(
                "unknown-element", path, err.message, bad_element=m.group("name"), nsmap=used
            )
        m = _UNKNOWN_NS_RE.match(err.message)
        if m:
            return ValidationError(
                "unknown-namespace",
                path,
                err.message,
                info=(("bad-namespace", m.group("ns")),),
                nsmap=used,
            )
        if _DUPLICATE_RE.match(err.message):
            return ValidationError("data-exists", path, err.message, nsmap=used)
        message = self._redact(err, err.message)
        leaf = _last_step_name(err.path) if err.path else None
        return ValidationError(
            "invalid-value", path, message, app_tag=err.app_tag, bad_element=leaf, nsmap=used
        )

    def _convert_validation(
        self, err: _LyError, tree, nsmap: Mapping[str, str]
    ) -> list[tuple[ValidationError, str | None]]:
        """A validation-stage error (RFC 7950 section 15 tags and app-tags), with its libyang path."""
        msg = err.message
        m = _MANDATORY_RE.match(msg) or _MANDATORY_CHOICE_RE.match(msg)
        if m and err.location == "Schema" and err.path:
            app_tag = "missing-choice" if msg.startswith("Mandatory choice") else None
            out: list[tuple[ValidationError, str | None]] = []
            for parent_path in self._instances_missing(tree, err.path):
                ly_path = parent_path + "/" + _last_step(err.path).split(":")[-1]
                path, used = self._doc_path(ly_path, nsmap)
                out.append((ValidationError("data-missing", path, msg, app_tag=app_tag, nsmap=used), ly_path))
            return out or [(ValidationError("data-missing", None, msg, app_tag=app_tag), None)]
        return [(e, err.path) for e in self._convert_located(err, nsmap)]

    def _convert_located(self, err: _LyError, nsmap: Mapping[str, str]) -> list[ValidationError]:
        msg = err.message
        path, used = self._doc_path(err.path, nsmap) if err.path else (None, {})
        m = _UNIQUE_RE.match(msg)
        if m:
            others = []
            for p in (m.group("a"), m.group("b")):
                doc_p, more = self._doc_path(p, nsmap)
                used = {**used, **more}
                others.append(("non-unique", doc_p))
            return [
                ValidationError(
                    "operation-failed", path, msg, app_tag="data-not-unique", nsmap=used, info=tuple(others)
                )
            ]
        if _DUPLICATE_RE.match(msg):
            return [ValidationError("data-exists", path, msg, nsmap=used)]
        if err.app_tag == "instance-required" or msg.startswith("Invalid leafref value"):
            return [ValidationError("data-missing", path, msg, app_tag="instance-required", nsmap=used)]
        if _TOO_MANY_RE.match(msg):
            return [ValidationError("operation-failed", path, msg, app_tag="too-many-elements", nsmap=used)]
        if _TOO_FEW_RE.match(msg):
            return [ValidationError("operation-failed", path, msg, app_tag="too-few-elements", nsmap=used)]
        # must (error-message / error-app-tag from the module, or libyang's defaults) and the rest.
        return [
            ValidationError(
                "operation-failed", path, msg, app_tag=err.app_tag or "must-violation", nsmap=used
            )
        ]

    def _redact(self, err: _LyError, message: str) -> str:
        if err.path and _schema_of(err.path) in self.protected_paths and not err.app_tag:
            return f"Invalid value for {_last_step_name(err.path)} (value not shown)"
        return message

    # -- repairs between rounds -----------------------------------------------------------------

    def _remove_validation_culprit(self, tree_ptr, err: _LyError) -> list[str]:
        """Free the data nodes an error blames; the paths freed (empty: could not repair)."""
        if err.location == "Schema" and err.path:
            paths = self._instances_missing(tree_ptr[0], err.path)
        elif not err.path:
            return []
        elif m := _UNIQUE_RE.match(err.message):  # drop the duplicated leaves of the blamed entry
            paths = [f"{err.path}/{leaf}" for leaf in m.group("leaves").split()]
        else:
            paths = [err.path]
        return [p for p in paths if self._free_path(tree_ptr, p)]

    def _free_path(self, tree_ptr, path: str) -> bool:
        found = ffi.new("struct lyd_node **")
        if tree_ptr[0] == ffi.NULL:
            return False
        if lib.lyd_find_path(tree_ptr[0], path.encode(), 0, found) != lib.LY_SUCCESS or found[0] == ffi.NULL:
            self._collect()
            return False
        node = found[0]
        if node == tree_ptr[0]:
            tree_ptr[0] = node.next if node.next != ffi.NULL else ffi.NULL
        lib.lyd_free_tree(node)
        return True

    def _instances_missing(self, tree, schema_path: str) -> list[str]:
        """Data paths of the parents of ``schema_path`` that lack that child."""
        if tree == ffi.NULL:
            return []
        parent_schema, _, child = schema_path.rpartition("/")
        child = child.split(":")[-1]
        dnode = libyang.DNode.new(self.ctx, tree)
        out = []
        try:
            for parent in dnode.find_all(parent_schema):
                if not any(c.name() == child for c in _children(parent)):
                    out.append(parent.path())
        except libyang.LibyangError:
            self._collect()
        return out

    def _is_key(self, ly_path: str) -> bool:
        """Is the node at this libyang data path a list key?"""
        schema_path = "/" + "/".join(split_predicates(step)[0] for step in split_steps(ly_path))
        try:
            node = next(iter(self.ctx.find_path(schema_path)), None)
        except libyang.LibyangError:
            self._collect()
            return False
        return bool(node is not None and getattr(node, "is_key", lambda: False)())

    # -- paths --------------------------------------------------------------------------------

    def _doc_path(self, ly_path: str, nsmap: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """Rewrite a libyang data path into the document's prefixes: every step and key prefixed."""
        used: dict[str, str] = {}
        out = []
        module = None
        for step in split_steps(ly_path):
            mod_name, _, rest = step.partition(":") if ":" in step.split("[", 1)[0] else ("", "", step)
            if mod_name:
                module = self._module_by_name.get(mod_name)
            if module is None:
                return ly_path, {}
            ns = self._ns_by_module[module.name()]
            prefix = nsmap.get(ns) or module.prefix()
            used[prefix] = ns
            name, preds = split_predicates(rest)
            rendered = "".join(f"[{prefix}:{k}={v}]" if k != "." else f"[.={v}]" for k, v in preds)
            out.append(f"{prefix}:{name}{rendered}")
        return "/" + "/".join(out), used


# -- helpers --------------------------------------------------------------------------------------

_SCRATCH_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=True, remove_comments=True
)


def top_level_elements(
    config: etree._Element | bytes | str | Iterable[etree._Element],
) -> list[etree._Element]:
    """The data nodes of a document: children of a NETCONF ``<config>``/``<data>`` root, or the root."""
    if isinstance(config, (bytes, str)):
        config = parse_xml(config.encode() if isinstance(config, str) else config)
    if isinstance(config, etree._ElementTree):
        config = config.getroot()
    if isinstance(config, etree._Element):
        qname = etree.QName(config)
        if qname.namespace == NC_NS and qname.localname in ("config", "data"):
            return [c for c in config if isinstance(c.tag, str)]
        return [config]
    return [e for e in config if isinstance(e, etree._Element) and isinstance(e.tag, str)]


def _document_prefixes(elements: Sequence[etree._Element]) -> dict[str, str]:
    """namespace → the prefix the document bound to it (if it used one)."""
    out: dict[str, str] = {}
    for el in elements:
        for prefix, ns in el.nsmap.items():
            if prefix and ns not in out:
                out[ns] = prefix
    return out


def _remove_parse_culprit(
    scratch: etree._Element, err: _LyError, is_key: Callable[[str], bool]
) -> str | None:
    """Remove from the scratch document the element a parse-stage error points at.

    Returns the libyang-style path of what was removed ("" when unknown), None when nothing could be.
    """
    if err.line is None:
        return None
    m = _UNKNOWN_CHILD_RE.match(err.message)
    if m:
        wanted = m.group("name").split(":")[-1]
    elif _UNKNOWN_NS_RE.match(err.message):
        wanted = None
    elif err.path:
        wanted = _last_step_name(err.path)
    else:
        return None
    candidates = [
        el
        for el in scratch.iter()
        if isinstance(el.tag, str)
        and el is not scratch
        and el.sourceline == err.line
        and (wanted is None or etree.QName(el).localname == wanted)
    ]
    if not candidates:
        return None
    victim = candidates[0]
    parent = victim.getparent()
    removed_path = err.path or ""
    if m and removed_path:
        removed_path = f"{removed_path}/{wanted}"
    elif err.path and parent is not None and parent is not scratch and is_key(err.path):
        # A bad list key makes the whole entry unusable: drop the entry, not just the key.
        victim, parent = parent, parent.getparent()
        removed_path = err.path.rsplit("/", 1)[0]
    if parent is None:
        return None
    parent.remove(victim)
    return removed_path


def _one_per_line(root: etree._Element) -> None:
    """Start every element on a line of its own (whitespace between elements only)."""
    for el in root.iter():
        if el is not root and (el.tail is None or not el.tail.strip()):
            el.tail = "\n"
        if len(el) and (el.text is None or not el.text.strip()):
            el.text = "\n"


def _tainted(ly_path: str | None, repaired: Sequence[str]) -> bool:
    """Is ``ly_path`` at, above or below something removed by an earlier repair?"""
    if not ly_path:
        return False
    for r in repaired:
        if r and (r == ly_path or r.startswith(ly_path + "/") or ly_path.startswith(r + "/")):
            return True
    return False


def _children(node: libyang.DNode) -> Iterator[libyang.DNode]:
    return node.children() if hasattr(node, "children") else iter(())


def module_namespace(module: libyang.Module) -> str:
    """The XML namespace of a module (the Python binding does not expose it)."""
    return ffi.string(module.cdata.ns).decode()


def split_steps(path: str) -> list[str]:
    """Split ``/a:b/c[k='x/y']/d`` on slashes outside quotes and brackets."""
    steps, buf, quote, depth = [], [], "", 0
    for ch in path.lstrip("/"):
        if quote:
            buf.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            buf.append(ch)
        elif ch == "[":
            depth += 1
            buf.append(ch)
        elif ch == "]":
            depth -= 1
            buf.append(ch)
        elif ch == "/" and depth == 0:
            steps.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if buf:
        steps.append("".join(buf))
    return steps


def split_predicates(step: str) -> tuple[str, list[tuple[str, str]]]:
    """``name[k='v'][k2="w"]`` → (name, [(k, "'v'"), (k2, '"w"')]); values keep their quotes."""
    name, bracket, rest = step.partition("[")
    preds: list[tuple[str, str]] = []
    rest = bracket + rest
    i = 0
    while i < len(rest) and rest[i] == "[":
        eq = rest.index("=", i)
        key = rest[i + 1 : eq].strip()
        quote = rest[eq + 1]
        end = rest.index(quote, eq + 2)
        preds.append((key.split(":")[-1], rest[eq + 1 : end + 1]))
        i = rest.index("]", end) + 1
    return name, preds


def _last_step(path: str) -> str:
    steps = split_steps(path)
    return steps[-1] if steps else path


def _last_step_name(path: str) -> str:
    return split_predicates(_last_step(path))[0].split(":")[-1]


def _schema_of(data_path: str) -> str:
    """Data path → schema path with bare names (what :func:`_protected_schema_paths` yields)."""
    return "/" + "/".join(split_predicates(s)[0].split(":")[-1] for s in split_steps(data_path))


def _protected_schema_paths(ctx: libyang.Context) -> Iterator[str]:
    """Schema paths (bare names) of nodes marked ``nacm:default-deny-all``."""

    def walk(cnode) -> Iterator:
        yield cnode
        child = lib.lysc_node_child(cnode)
        while child != ffi.NULL:
            yield from walk(child)
            child = child.next

    for module in ctx:
        if not module.implemented():
            continue
        for cnode in (c for top in module.children() for c in walk(top.cdata)):
            if cnode.nodetype in (lib.LYS_CHOICE, lib.LYS_CASE):
                continue
            node = libyang.SNode.new(ctx, cnode)
            if node.get_extension("default-deny-all", prefix=NACM_MODULE) is not None:
                yield _schema_of(node.schema_path())


def _str(cdata) -> str | None:
    return ffi.string(cdata).decode("utf-8", "replace") if cdata else None
