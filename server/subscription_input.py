"""The input of establish-subscription / modify-subscription (RFC 8639 + RFC 8641 augments), read into
a `Request`, and the errors of RFC 8639 §2.4.6: an rpc-error whose error-app-tag names the identity
and whose error-info holds the yang-data structure with the reason (and hints)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from lxml import etree

from server import notifications as ev
from server.errors import RpcError
from server.tree import Forest, child_text
from server.xmlns import DS_NS, NC_NS

SN_NS = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notifications"
YP_NS = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
SN, YP = f"{{{SN_NS}}}", f"{{{YP_NS}}}"
MODULES = {SN_NS: "ietf-subscribed-notifications", YP_NS: "ietf-yang-push"}
#: error identity → error-tag (RFC 8640 §2.? table of error identities and their tags)
ERROR_TAGS = {
    "encoding-unsupported": "invalid-value",
    "filter-unsupported": "invalid-value",
    "insufficient-resources": "resource-denied",
    "no-such-subscription": "invalid-value",
    "replay-unsupported": "operation-not-supported",
    "stream-unavailable": "invalid-value",
    "datastore-not-subscribable": "invalid-value",
    "no-such-subscription-resync": "invalid-value",
    "on-change-unsupported": "operation-not-supported",
    "period-unsupported": "invalid-value",
    "cant-exclude": "operation-not-supported",
}
DATASTORES = ("running", "operational")
STREAM_CHILDREN = {"stream", "stream-filter-name", "stream-subtree-filter", "stream-xpath-filter"}
DS_CHILDREN = {"datastore", "selection-filter-ref", "datastore-subtree-filter", "datastore-xpath-filter"}


def sub_error(
    identity: str,
    message: str,
    container: tuple[str, str] | None,
    hints: tuple[tuple[str, str], ...] = (),
) -> RpcError:
    """`identity` of ietf-subscribed-notifications or ietf-yang-push; `container`: (namespace, name) of
    the yang-data put into error-info (None: none)."""
    ns = YP_NS if identity in _YP_IDENTITIES else SN_NS
    module = MODULES[ns]
    info: tuple[etree._Element, ...] = ()
    if container is not None:
        pfx = "yp" if ns == YP_NS else "sn"
        c = etree.Element(f"{{{container[0]}}}{container[1]}", nsmap={None: container[0], pfx: ns})
        etree.SubElement(c, f"{{{container[0]}}}reason").text = f"{pfx}:{identity}"
        for name, text in hints:
            etree.SubElement(c, f"{{{container[0]}}}{name}").text = text
        info = (c,)
    tag = ERROR_TAGS.get(identity, "invalid-value")
    return RpcError(tag, message, type="application", app_tag=f"{module}:{identity}", info_xml=info)


_YP_IDENTITIES = {
    "datastore-not-subscribable",
    "no-such-subscription-resync",
    "on-change-unsupported",
    "on-change-sync-unsupported",
    "period-unsupported",
    "update-too-big",
    "sync-too-big",
    "unchanging-selection",
    "cant-exclude",
}


@dataclass
class Request:
    """What an establish- or modify-subscription asks for (None: not given)."""

    stream: str | None = None
    #: the filter as <get> takes it: <filter type="subtree"> with the filter's content, or type="xpath"
    filter_el: etree._Element | None = None
    filter_given: bool = False
    datastore: str | None = None
    replay_start: dt.datetime | None = None
    stop_time: dt.datetime | None = None
    encoding: str | None = None
    period: int | None = None
    anchor: dt.datetime | None = None
    on_change: bool = False
    dampening: int | None = None
    sync_on_start: bool = True
    excluded: frozenset[str] = field(default_factory=frozenset)

    @property
    def periodic(self) -> bool:
        return self.period is not None


#: the encodings of RFC 8639 a transport may offer (which one does: its session's `encodings`)
ENCODINGS = ("encode-xml", "encode-json")


def read_request(
    op: etree._Element, running: Forest, errors: tuple[str, str], ignore: frozenset[str] = frozenset()
) -> Request:
    """Parse the rpc input (or a configured subscription, whose other children are `ignore`d);
    `errors`: (namespace, name) of its datastore yang-data error container."""
    req = Request()
    kids = {
        name: c for c in op if isinstance(c.tag, str) and (name := etree.QName(c).localname) not in ignore
    }
    known = (
        STREAM_CHILDREN
        | DS_CHILDREN
        | {"replay-start-time", "stop-time", "encoding", "periodic", "on-change", "id"}
    )
    for name in kids:
        if name not in known:
            raise RpcError(
                "unknown-element",
                f"{name} is not supported",
                type="application",
                info=(("bad-element", name),),
            )
    if kids.keys() & STREAM_CHILDREN and kids.keys() & DS_CHILDREN:
        raise RpcError(
            "bad-element",
            "give either a stream or a datastore",
            type="application",
            info=(("bad-element", "datastore"),),
        )
    req.stream = _text(kids.get("stream"))
    req.datastore = _datastore(kids.get("datastore"), errors)
    _filters(req, kids, running)
    req.replay_start = _time(kids.get("replay-start-time"), "replay-start-time")
    req.stop_time = _time(kids.get("stop-time"), "stop-time")
    req.encoding = _encoding(kids.get("encoding"))
    _trigger(req, kids.get("periodic"), kids.get("on-change"))
    return req


def _text(el: etree._Element | None) -> str | None:
    return None if el is None else (el.text or "").strip()


def _time(el: etree._Element | None, name: str) -> dt.datetime | None:
    return None if el is None else ev.parse_time(el.text or "", name)


def _identity(el: etree._Element, ns: str) -> str | None:
    """The local name of an identityref value whose prefix maps to `ns` (None: another module's)."""
    pfx, _, name = (el.text or "").strip().rpartition(":")
    return name if el.nsmap.get(pfx or None) == ns else None


def _datastore(el: etree._Element | None, errors: tuple[str, str]) -> str | None:
    if el is None:
        return None
    name = _identity(el, DS_NS)
    if name not in DATASTORES:
        raise sub_error(
            "datastore-not-subscribable",
            f"datastore {(el.text or '').strip()} cannot be subscribed to",
            errors,
        )
    return name


def _encoding(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    name = _identity(el, SN_NS)
    if name not in ENCODINGS:
        raise sub_error("encoding-unsupported", f"no encoding {(el.text or '').strip()}", None)
    return name


def _filters(req: Request, kids: dict[str, etree._Element], running: Forest) -> None:
    for sub, xp, ref in (
        ("stream-subtree-filter", "stream-xpath-filter", "stream-filter-name"),
        ("datastore-subtree-filter", "datastore-xpath-filter", "selection-filter-ref"),
    ):
        if ref in kids:
            kids = {**kids, **_by_reference(ref, (kids[ref].text or "").strip(), running, (sub, xp))}
        if sub in kids:
            req.filter_el = subtree_filter(kids[sub])
            req.filter_given = True
        elif xp in kids:
            req.filter_el = etree.Element(f"{{{NC_NS}}}filter", type="xpath", nsmap=kids[xp].nsmap)
            req.filter_el.set("select", (kids[xp].text or "").strip())
            req.filter_given = True


def subtree_filter(anydata: etree._Element) -> etree._Element:
    """An anydata filter's content as the <filter type="subtree"> element <get> takes."""
    f = etree.Element(f"{{{NC_NS}}}filter", type="subtree")
    for c in anydata:
        f.append(etree.fromstring(etree.tostring(c)))
    return f


def _by_reference(ref: str, name: str, running: Forest, leaves: tuple[str, str]) -> dict[str, etree._Element]:
    """A filter configured in /sn:filters (stream-filter by name, yp:selection-filter by filter-id)."""
    filters = running.find(SN + "filters")
    ns, entry, key = (
        (SN, "stream-filter", "name")
        if ref == "stream-filter-name"
        else (YP, "selection-filter", "filter-id")
    )
    for e in filters.iterchildren(ns + entry) if filters is not None else ():
        if (child_text(e, ns + key) or "").strip() == name:
            return {etree.QName(c).localname: c for c in e if etree.QName(c).localname in leaves}
    raise RpcError(
        "invalid-value",
        f"no {entry} {name!r} is configured",
        type="application",
        app_tag="instance-required",
        info=(("bad-element", ref),),
    )


def _trigger(req: Request, periodic: etree._Element | None, on_change: etree._Element | None) -> None:
    if periodic is not None:
        req.period = _centiseconds(periodic.find(YP + "period"), "period")
        if req.period is None:
            raise RpcError(
                "missing-element",
                "periodic needs a period",
                type="application",
                info=(("bad-element", "period"),),
            )
        req.anchor = _time(periodic.find(YP + "anchor-time"), "anchor-time")
    if on_change is not None:
        req.on_change = True
        req.dampening = _centiseconds(on_change.find(YP + "dampening-period"), "dampening-period")
        sync = _text(on_change.find(YP + "sync-on-start"))
        if sync not in (None, "true", "false"):
            raise RpcError(
                "invalid-value",
                "sync-on-start is a boolean",
                type="application",
                info=(("bad-element", "sync-on-start"),),
            )
        req.sync_on_start = sync != "false"
        req.excluded = frozenset(
            (e.text or "").strip() for e in on_change.iterchildren(YP + "excluded-change")
        )


def _centiseconds(el: etree._Element | None, name: str) -> int | None:
    text = _text(el)
    if text is None:
        return None
    if not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise RpcError(
            "invalid-value",
            f"{name} is a uint32 of centiseconds",
            type="application",
            info=(("bad-element", name),),
        )
    return int(text)
