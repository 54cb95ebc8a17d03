"""YANG-Push (RFC 8641): periodic and on-change updates of one subscription, and the change feed.

`ChangeFeed` is where changes enter: the commit path puts in the keyed diff of every transaction
(configuration, in running and operational), the application its state changes as they happen —
precise `Edit`s (a binding created, removed, refreshed) or `touched` subtrees (counters: the feed
reads the subtree again and sends what differs). Nothing walks a datastore for an on-change update;
only `sync-on-start` and `resync-subscription` send the whole selection.

A subscription's selection (`Selection`) knows which schema subtrees it names; an edit elsewhere costs
a tuple comparison. `OnChange` coalesces per target within the dampening period (RFC 8641 §3.6: the
value at its end; created-then-deleted is nothing), then filters (subtree/XPath) and applies NACM on a
one-path tree holding the changed node, so a reader never receives a node it may not read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from xml.sax.saxutils import escape

from lxml import etree

from server import notifications as ev
from server.filters import SubtreeFilter, xpath_filter
from server.nacm import Nacm, Principal
from server.patch import Edit, Step, find, steps_of, wrap
from server.schema import Schema, SchemaNode
from server.schemapaths import node_at
from server.subscribers import Change, NoOpPhases, Transaction
from server.tree import Forest

log = logging.getLogger(__name__)
YP_NS = "urn:ietf:params:xml:ns:yang:ietf-yang-push"
SchemaPath = tuple[tuple[str, str], ...]
#: the feed reads touched subtrees at most this often (seconds)
TOUCH_INTERVAL = 0.01


def schema_path(sn: SchemaNode) -> SchemaPath:
    out = []
    node: SchemaNode | None = sn
    while node is not None:
        out.append((node.ns, node.name))
        node = node.parent
    return tuple(reversed(out))


def _related(a: SchemaPath, b: SchemaPath) -> bool:
    """One is an ancestor-or-self of the other."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


@dataclass
class Selection:
    """What a datastore subscription selects: datastore, filter (a <filter type=subtree|xpath> element
    as <get> takes it, or None: everything) and the schema subtrees the filter names (None: all).
    `exact`: the filter selects those subtrees whole, whatever their content (no content match, no
    predicate), so a change inside one needs no filter run."""

    datastore: str
    filter_el: etree._Element | None
    scopes: list[SchemaPath] | None

    def __post_init__(self) -> None:
        f = self.filter_el
        self.exact = f is None or (
            self.scopes is not None
            and (f.get("type") != "xpath" or "[" not in (f.get("select") or ""))
            and (f.get("type") == "xpath" or not _has_content_match(f))
        )

    def related(self, path: SchemaPath) -> bool:
        return self.scopes is None or any(_related(s, path) for s in self.scopes)

    def covers(self, path: SchemaPath) -> bool:
        """The filter selects the whole node at `path`."""
        return self.exact and (self.scopes is None or any(path[: len(s)] == s for s in self.scopes))

    def select(self, data: Forest, schema: Schema) -> Forest:
        f = self.filter_el
        if f is None:
            return data
        if f.get("type") == "xpath":
            return xpath_filter(data, f.get("select") or "", f.nsmap, schema)
        return SubtreeFilter(f, schema).apply(data)


def _has_content_match(f: etree._Element) -> bool:
    return any(isinstance(c.tag, str) and not len(c) and (c.text or "").strip() for c in f.iter())


def scopes_of(filter_el: etree._Element | None, schema: Schema) -> list[SchemaPath] | None:
    """The schema subtrees a filter names (deepest selection or containment nodes it reaches)."""
    if filter_el is None:
        return None
    if filter_el.get("type") == "xpath":
        return _xpath_scopes(filter_el.get("select") or "", filter_el.nsmap, schema)
    out: list[SchemaPath] = []
    for top in filter_el:
        if isinstance(top.tag, str):
            ns, _, name = top.tag[1:].partition("}")
            sn = schema.root(ns or None, name)
            if sn is not None:
                _subtree_scopes(top, sn, out)
    return out


def _subtree_scopes(f: etree._Element, sn: SchemaNode, out: list[SchemaPath]) -> None:
    kids = [(c, sn.child(c.tag[1:].partition("}")[0] or None, etree.QName(c).localname)) for c in f]
    deeper = [(c, s) for c, s in kids if isinstance(c.tag, str) and s is not None and len(c)]
    selections = [s for c, s in kids if isinstance(c.tag, str) and s is not None and not len(c)]
    content = [
        s for s in selections if s.kind == "leaf" and (f.find(f"{{{s.ns}}}{s.name}").text or "").strip()
    ]
    picked = [s for s in selections if s not in content]
    if not deeper and not picked:
        out.append(schema_path(sn))  # only content matches (or nothing): the whole node
        return
    out.extend(schema_path(s) for s in picked)
    for c, s in deeper:
        _subtree_scopes(c, s, out)


_XPATH_STEP = re.compile(r"^(?:([\w.-]+):)?([\w.-]+)(?:\[.*\])?$")


def _xpath_scopes(select: str, nsmap: dict, schema: Schema) -> list[SchemaPath] | None:
    """Location paths of `a | b` read step by step; anything else (axes, functions): everything."""
    out: list[SchemaPath] = []
    for alt in select.split("|"):
        steps = [s for s in re.split(r"/(?![^\[]*\])", alt.strip()) if s]
        if not alt.strip().startswith("/") or not steps:
            return None
        path: list[tuple[str, str]] = []
        sn: SchemaNode | None = None
        for s in steps:
            m = _XPATH_STEP.match(s)
            if m is None:
                return None
            ns = nsmap.get(m.group(1)) if m.group(1) else None
            sn = schema.root(ns, m.group(2)) if sn is None else sn.child(ns, m.group(2))
            if sn is None:
                return None
            path.append((sn.ns, sn.name))
        out.append(tuple(path))
    return out


def onchange_supported(scopes: list[SchemaPath] | None, capable: set[SchemaPath], schema: Schema) -> bool:
    """Every named subtree is configuration, on-change capable state, or holds some of either."""
    if scopes is None:
        return True
    return all(_scope_supported(s, capable, schema) for s in scopes)


def _scope_supported(scope: SchemaPath, capable: set[SchemaPath], schema: Schema) -> bool:
    if any(_related(scope, c) for c in capable):
        return True
    sn = node_at(schema, scope)
    return sn is not None and _has_config(sn)


def _has_config(sn: SchemaNode) -> bool:
    return sn.config and (
        sn.kind in ("leaf", "leaf-list")
        or not sn.children
        or any(_has_config(c) for c in sn.children.values())
    )


# -- notifications ----------------------------------------------------------------------------------------
def notification(body: bytes, now: dt.datetime | None = None) -> bytes:
    time = ev.format_time(now or ev.utcnow())
    return b'<notification xmlns="%s"><eventTime>%s</eventTime>%s</notification>' % (
        ev.NOTIF_NS.encode(),
        time.encode(),
        body,
    )


def push_update(sub_id: int, contents: bytes) -> bytes:
    """`contents`: the children of <datastore-contents>, serialised."""
    return notification(
        b'<push-update xmlns="%s"><id>%d</id><datastore-contents>%s</datastore-contents></push-update>'
        % (YP_NS.encode(), sub_id, contents)
    )


def push_change_update(sub_id: int, patch_id: int, edits: list[bytes]) -> bytes:
    return notification(
        b'<push-change-update xmlns="%s"><id>%d</id><datastore-changes><yang-patch>'
        b"<patch-id>patch-%d</patch-id>%s</yang-patch></datastore-changes></push-change-update>"
        % (YP_NS.encode(), sub_id, patch_id, b"".join(edits))
    )


def edit_xml(n: int, op: str, target: str, value: bytes | None) -> bytes:
    body = b"<edit><edit-id>edit-%d</edit-id><operation>%s</operation><target>%s</target>" % (
        n,
        op.encode(),
        escape(target).encode(),
    )
    if value is not None:
        body += b"<value>%s</value>" % value
    return body + b"</edit>"


# -- the feed ---------------------------------------------------------------------------------------------
class ChangeFeed:
    """Changes in, on-change subscriptions out. The application declares its on-change capable state
    subtrees (`declare`) and feeds `edit`s and `touched` subtrees; `listening(path)` lets it skip the
    work when no subscription selects anything there."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.jobs: list[OnChange] = []
        self.capable: set[SchemaPath] = set()
        self._touched: dict[tuple[Step, ...], Callable[[], etree._Element | None]] = {}
        self._last: dict[tuple[Step, ...], dict[str, bytes]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def declare(self, path: SchemaPath) -> None:
        self.capable.add(path)

    def listening(self, path: SchemaPath) -> bool:
        return any(job.selection.related(path) for job in self.jobs)

    def edit(self, edit: Edit) -> None:
        path = edit.schema_path
        for job in list(self.jobs):
            if job.selection.datastore in edit.datastores and job.selection.related(path):
                job.offer(edit)

    def touched(self, steps: tuple[Step, ...], read: Callable[[], etree._Element | None]) -> None:
        """The subtree at `steps` (a container of leaves: counters) may have changed: `read` builds it."""
        if not self.listening(tuple((ns, name) for ns, name, _ in steps)):
            self._last.pop(steps, None)  # nobody listens: the next listener starts from a full value
            return
        self._touched[steps] = read
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(TOUCH_INTERVAL, self._read_touched)

    def _read_touched(self) -> None:
        self._timer = None
        touched, self._touched = self._touched, {}
        for steps, read in touched.items():
            try:
                el = read()
            except Exception:
                log.exception("reading %s for on-change subscriptions failed", steps)
                continue
            if el is not None:
                self._diff(steps, el)

    def _diff(self, steps: tuple[Step, ...], el: etree._Element) -> None:
        """A merge edit holding the children that differ from the last reading (all at the first)."""
        now = {c.tag: etree.tostring(c) for c in el if isinstance(c.tag, str)}
        last = self._last.get(steps)
        self._last[steps] = now
        changed = [
            c for c in el if isinstance(c.tag, str) and (last is None or last.get(c.tag) != now[c.tag])
        ]
        if last is not None and not changed:
            return
        value = etree.Element(el.tag, nsmap=el.nsmap)
        value.extend(changed)
        self.edit(Edit("merge", steps, value))

    def committed(self, txn: Transaction) -> None:
        """Configuration changes of one commit (the keyed diff), in running and operational."""
        if not self.jobs:
            return
        for c in txn.diff:
            edit = self._config_edit(c)
            if edit is not None:
                self.edit(edit)

    def _config_edit(self, c: Change) -> Edit | None:
        steps = steps_of(c.schema_path, c.keys, self.schema)
        if not self.listening(tuple((ns, name) for ns, name, _ in steps)):
            return None
        both = frozenset({"running", "operational"})
        if c.op == "deleted":
            return Edit("delete", steps, None, _copy(c.old), datastores=both)
        op = "create" if c.op == "created" else "replace"
        return Edit(op, steps, _copy(c.new), datastores=both)


def _copy(el: etree._Element | None) -> etree._Element | None:
    """A node of a datastore, copied into a document of its own (the datastore changes in place)."""
    return None if el is None else etree.fromstring(etree.tostring(el))


class ConfigChanges(NoOpPhases):
    """The commit path's side of the feed: a config subscriber whose apply hands the diff over."""

    def __init__(self, feed: ChangeFeed) -> None:
        self.feed = feed

    def apply(self, txn: Transaction) -> None:
        self.feed.committed(txn)


# -- subscriptions' update jobs -----------------------------------------------------------------------------
class Job:
    """What a datastore subscription sends: `send` writes one notification to the receiver's session;
    `read` the selection's current contents (the children of <datastore-contents>, filtered, NACM applied)."""

    def __init__(self, sub_id: int, send: Callable[[bytes], None], read: Callable[[], bytes]) -> None:
        self.id, self.send, self.read = sub_id, send, read
        self.sent = 0
        self.loop = asyncio.get_running_loop()

    def push_update(self) -> None:
        self.send(push_update(self.id, self.read()))
        self.sent += 1

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Periodic(Job):
    """push-update every `period` centiseconds, on the grid anchored at `anchor` (RFC 8641 §3.5)."""

    def __init__(self, sub_id, send, read, period: int, anchor: dt.datetime | None = None) -> None:
        super().__init__(sub_id, send, read)
        self.period, self.anchor = period, anchor
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0

    def start(self) -> None:
        """The first update at the next anchor point (at once without anchor), then every period."""
        seconds = self.period / 100
        delay = 0.0
        if self.anchor is not None:
            since = (ev.utcnow() - self.anchor).total_seconds()
            delay = math.ceil(since / seconds) * seconds - since
        self._next = self.loop.time() + delay
        self._timer = self.loop.call_at(self._next, self._fire)

    def _fire(self) -> None:
        try:
            self.push_update()
        except Exception:
            log.exception("periodic update of subscription %d failed", self.id)
        seconds, now = self.period / 100, self.loop.time()
        self._next += seconds
        if self._next < now:  # late (a loaded loop): the next point of the grid, none sent twice
            self._next += math.ceil((now - self._next) / seconds) * seconds
        self._timer = self.loop.call_at(self._next, self._fire)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def modify(self, period: int, anchor: dt.datetime | None) -> None:
        self.stop()
        self.period, self.anchor = period, anchor
        self.start()


@runtime_checkable
class FlowControlled(Protocol):
    """A receiver's transport that says when it cannot take more now (an HTTPS-notif link with a
    notification waiting): on-change updates then hold their edits, coalesced per target, and go
    as one push-change-update when `when_idle` calls back, so a slow receiver gets fewer, larger
    updates instead of a growing queue of late ones."""

    def congested(self) -> bool: ...

    def when_idle(self, callback: Callable[[], None]) -> None: ...


class OnChange(Job):
    """push-change-update: the edits of a dampening period, coalesced per target, filtered, NACM applied."""

    def __init__(
        self,
        sub_id: int,
        send: Callable[[bytes], None],
        read: Callable[[], bytes],
        *,
        selection: Selection,
        schema: Schema,
        reader: Reader,
        dampening: int = 0,
        sync_on_start: bool = True,
        excluded: frozenset[str] = frozenset(),
        flow: FlowControlled | None = None,
    ) -> None:
        super().__init__(sub_id, send, read)
        self.selection, self.schema, self.reader = selection, schema, reader
        self.dampening, self.sync_on_start, self.excluded = dampening, sync_on_start, excluded
        self.flow = flow
        self._held = False  # edits wait for the transport's when_idle call
        self.pending: dict[tuple[Step, ...], tuple[str, Edit]] = {}  # target → (first op, last edit)
        self._timer: asyncio.Handle | None = None
        self._last_sent = -math.inf
        self.patches = 0

    def start(self) -> None:
        if self.sync_on_start:
            self.push_update()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held = False
        self.pending.clear()

    def offer(self, edit: Edit) -> None:
        key = edit.steps
        first = self.pending.get(key)
        if first is None:
            self.pending[key] = (edit.op, edit)
        elif first[0] == "create" and edit.op == "delete":
            del self.pending[key]  # created and gone again within the period: nothing happened
        else:
            op = "replace" if first[0] == "delete" and edit.op == "create" else first[0]
            self.pending[key] = (op, _merged(first[1], edit))
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None or self._held or not self.pending:
            return
        due = self._last_sent + self.dampening / 100
        now = self.loop.time()
        self._timer = self.loop.call_soon(self.flush) if due <= now else self.loop.call_at(due, self.flush)

    def flush(self) -> None:
        self._timer = None
        if self.flow is not None and self.flow.congested():
            self._held = True
            self.flow.when_idle(self._release)
            return
        pending, self.pending = self.pending, {}
        edits: list[bytes] = []
        for first, edit in pending.values():
            op = _final_op(first, edit.op)
            if op in self.excluded:
                continue
            xml = self._edit(len(edits) + 1, op, edit)
            if xml is not None:
                edits.append(xml)
        if edits:
            self.patches += 1
            self.send(push_change_update(self.id, self.patches, edits))
            self.sent += 1
            self._last_sent = self.loop.time()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._schedule()

    def _edit(self, n: int, op: str, edit: Edit) -> bytes | None:
        """The edit as this receiver may see it, or None (not selected, not readable, gone)."""
        whole = self.selection.covers(edit.schema_path) and self.reader.whole(edit.schema_path)
        if op == "delete":
            if not whole and self._visible(edit.steps, edit.old) is None:
                return None
            return edit_xml(n, "delete", edit.target(self.schema), None)
        if whole:
            xml = edit.xml()
            return None if xml is None else edit_xml(n, op, edit.target(self.schema), xml)
        value = edit.element()
        node = None if value is None else self._visible(edit.steps, value)
        if node is None:
            return None
        return edit_xml(n, op, edit.target(self.schema), etree.tostring(node))

    def _visible(self, steps: tuple[Step, ...], value: etree._Element | None) -> etree._Element | None:
        leaf = None if value is None else _detached(value)
        data = self.reader.visible(Forest([wrap(steps, leaf)]))
        data = self.selection.select(data, self.schema)
        return find(data, steps)


def _final_op(first: str, last: str) -> str:
    if last == "delete":
        return "delete"
    return first if first in ("create", "replace") else last


def _merged(old: Edit, new: Edit) -> Edit:
    """The later edit wins; two merges of leaves (counters) keep the leaves of both."""
    if old.op != "merge" or new.op != "merge":
        return new
    a, b = old.element(), new.element()
    if a is None or b is None:
        return new
    value = _detached(a)
    have = {c.tag: c for c in value}
    for c in b:
        if c.tag in have:
            value.replace(have[c.tag], _detached(c))
        else:
            value.append(_detached(c))
    return Edit("merge", new.steps, value, datastores=new.datastores)


def _detached(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))


class Reader:
    """NACM's read rules for one principal (a superuser, or NACM off, reads everything whole)."""

    def __init__(self, nacm: Nacm, principal: Principal) -> None:
        self.nacm, self.principal = nacm, principal

    def whole(self, spath: SchemaPath) -> bool:
        """May the principal read every instance of the node at `spath` and all below it?"""
        view = self.nacm.view(self.principal)
        return view is None or view.reads_whole(spath)

    def visible(self, data: Forest) -> Forest:
        """`data` (a private tree) without what the principal may not read, in place."""
        if self.nacm.hides_any(self.principal, data):
            self.nacm.prune(self.principal, data)
        return data
