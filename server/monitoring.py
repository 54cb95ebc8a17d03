"""ietf-netconf-monitoring (RFC 6022) state and get-schema, and ietf-yang-library (RFC 8525) data.

Both are built on request from the server's live state (sessions, locks, counters) and the schema.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from lxml import etree

from server.errors import RpcError
from server.schema import Schema
from server.xmlns import MON_NS


@dataclass
class Counters:
    """Per-session and global counters of RFC 6022."""

    in_rpcs: int = 0
    in_bad_rpcs: int = 0
    out_rpc_errors: int = 0
    out_notifications: int = 0


@dataclass
class GlobalStats:
    start_time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    in_bad_hellos: int = 0
    in_sessions: int = 0
    dropped_sessions: int = 0
    totals: Counters = field(default_factory=Counters)


@dataclass(frozen=True)
class SessionInfo:
    session_id: int
    user: str
    source_host: str | None
    login_time: dt.datetime
    counters: Counters


@dataclass(frozen=True)
class LockInfo:
    datastore: str
    session_id: int
    locked_time: dt.datetime


def _t(d: dt.datetime) -> str:
    return d.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
    el = etree.SubElement(parent, f"{{{MON_NS}}}{name}")
    if text is not None:
        el.text = text
    return el


def _counters(parent: etree._Element, c: Counters) -> None:
    _sub(parent, "in-rpcs", str(c.in_rpcs))
    _sub(parent, "in-bad-rpcs", str(c.in_bad_rpcs))
    _sub(parent, "out-rpc-errors", str(c.out_rpc_errors))
    _sub(parent, "out-notifications", str(c.out_notifications))


def netconf_state(
    capabilities: list[str],
    locks: list[LockInfo],
    schema: Schema,
    sessions: list[SessionInfo],
    stats: GlobalStats,
    datastores: tuple[str, ...] = ("running", "candidate", "startup"),
) -> etree._Element:
    root = etree.Element(f"{{{MON_NS}}}netconf-state", nsmap={None: MON_NS})
    caps = _sub(root, "capabilities")
    for c in capabilities:
        _sub(caps, "capability", c)
    dss = _sub(root, "datastores")
    for name in datastores:
        ds = _sub(dss, "datastore")
        _sub(ds, "name", name)
        lk = next((x for x in locks if x.datastore == name), None)
        if lk is not None:
            locks_el = _sub(ds, "locks")
            g = _sub(locks_el, "global-lock")
            _sub(g, "locked-by-session", str(lk.session_id))
            _sub(g, "locked-time", _t(lk.locked_time))
    schemas = _sub(root, "schemas")
    for m in schema.modules:
        s = _sub(schemas, "schema")
        _sub(s, "identifier", m.name)
        _sub(s, "version", m.revision or "")
        _sub(s, "format", "yang")
        _sub(s, "namespace", m.namespace)
        _sub(s, "location", "NETCONF")
    sess = _sub(root, "sessions")
    for si in sessions:
        s = _sub(sess, "session")
        _sub(s, "session-id", str(si.session_id))
        _sub(s, "transport", "netconf-ssh")
        _sub(s, "username", si.user)
        if si.source_host:
            _sub(s, "source-host", si.source_host)
        _sub(s, "login-time", _t(si.login_time))
        _counters(s, si.counters)
    st = _sub(root, "statistics")
    _sub(st, "netconf-start-time", _t(stats.start_time))
    _sub(st, "in-bad-hellos", str(stats.in_bad_hellos))
    _sub(st, "in-sessions", str(stats.in_sessions))
    _sub(st, "dropped-sessions", str(stats.dropped_sessions))
    _counters(st, stats.totals)
    # identityref values (format yang, transport netconf-ssh) are unprefixed: the default namespace in
    # effect is the monitoring module's, where those identities live (RFC 7950 §9.10.3)
    return root


def get_schema(schema: Schema, op: etree._Element) -> etree._Element:
    """<get-schema>: identifier, optional version, optional format (only yang)."""
    ident = (op.findtext(f"{{{MON_NS}}}identifier") or "").strip()
    if not ident:
        raise RpcError(
            "missing-element",
            "identifier is required",
            type="protocol",
            info=(("bad-element", "identifier"),),
        )
    version = op.findtext(f"{{{MON_NS}}}version")
    fmt = (op.findtext(f"{{{MON_NS}}}format") or "yang").strip()
    if fmt.rpartition(":")[2] != "yang":
        raise RpcError("invalid-value", f"format {fmt} not supported", type="protocol")
    version = version.strip() if version and version.strip() else None
    matches = [m for m in schema.modules if m.name == ident and (version is None or m.revision == version)]
    if not matches:
        raise RpcError("invalid-value", f"no schema {ident}", type="protocol")
    if len(matches) > 1:
        raise RpcError(
            "operation-failed", f"more than one schema {ident}", type="protocol", app_tag="data-not-unique"
        )
    text = schema.yang_text(ident, matches[0].revision)
    if text is None:
        raise RpcError("operation-failed", f"source of {ident} unavailable")
    data = etree.Element(f"{{{MON_NS}}}data", nsmap={None: MON_NS})
    data.text = text
    return data


def yang_library(schema: Schema) -> list[etree._Element]:
    """ietf-yang-library data (RFC 8525 plus the deprecated modules-state) from libyang."""
    from server.xmlparse import parse_message

    dnode = schema.ctx.get_yanglib_data(schema.content_id)  # a format without %: used verbatim
    try:
        xml = dnode.print_mem("xml", with_siblings=True)
    finally:
        dnode.free()
    wrapper = parse_message(b"<w>" + xml.encode() + b"</w>")
    return [c for c in wrapper]
