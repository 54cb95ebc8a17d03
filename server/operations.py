"""RFC 6241 operations (plus get-schema, create-subscription, get-data), one handler per RPC.

Handlers receive the session and the operation element and return None (→ <ok/>), an element, or
bytes already serialised (big <data> replies skip building a wrapper tree). They raise RpcError; the
session turns it into <rpc-error> in one place. The table `HANDLERS` is keyed by (namespace, name).

Reads are plain functions (answered inline, no task). Everything that changes a configuration
datastore or a lock is a coroutine run under the core's `txn_lock` (`@_serialised`): the subscribers
it drives may await kernel work, and no other change may interleave with it meanwhile.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeAlias

from lxml import etree

from server import notifications as ev
from server.datastore import DATASTORES
from server.defaults import MODES as WD_MODES
from server.edit import DEFAULT_OPS, ERROR_OPTIONS, EditEngine
from server.errors import (
    RpcError,
    access_denied,
    bad_attribute,
    bad_element,
    combine,
    in_use,
    invalid_value,
    missing_element,
    operation_not_supported,
    with_request_prefixes,
)
from server.filters import SubtreeFilter, xpath_filter
from server.monitoring import get_schema
from server.nacm import nacm_items
from server.operational import StateRequest
from server.oplog import OpLog
from server.rawstate import NO_SPLICES, RawSplices
from server.tree import Forest
from server.xmlns import DS_NS, MON_NS, NC_NS, NMDA_NS, NOTIF_NS, WD_NS

if TYPE_CHECKING:
    from server.protocol import NetconfSession

#: a reply body in parts written one after the other: a list, or a generator producing them while
#: the reply is written (NetconfSession streams it)
Parts = list[bytes] | Iterator[bytes]
#: what a handler answers: an element, serialised bytes, Parts, or None (<ok/>)
Reply: TypeAlias = "etree._Element | bytes | Parts | None"
#: a plain function, or a coroutine function / function returning an awaitable of the same
Handler = Callable[
    ["NetconfSession", etree._Element], "etree._Element | bytes | Parts | Awaitable[Reply] | None"
]
_NC_DATA = b'<data xmlns="%s">' % NC_NS.encode()
_NMDA_DATA = b'<data xmlns="%s">' % NMDA_NS.encode()
TEST_OPTIONS = frozenset({"test-then-set", "set", "test-only"})


def nc(name: str) -> str:
    return f"{{{NC_NS}}}{name}"


def _child(op: etree._Element, name: str, ns: str = NC_NS) -> etree._Element | None:
    return op.find(f"{{{ns}}}{name}")


def _text(op: etree._Element, name: str, ns: str = NC_NS) -> str | None:
    el = _child(op, name, ns)
    return None if el is None else (el.text or "").strip()


def _missing(name: str) -> RpcError:
    return missing_element(name, f"missing <{name}>")


def _datastore_ref(op: etree._Element, which: str, *, allow_config: bool = False) -> str | etree._Element:
    """<source>/<target>: a datastore name, or (when allowed) the inline <config> element."""
    holder = _child(op, which)
    if holder is None:
        raise _missing(which)
    kids = [c for c in holder if isinstance(c.tag, str)]
    if len(kids) != 1:
        raise bad_element(which, f"<{which}> needs exactly one child")
    k = kids[0]
    name = k.tag.rpartition("}")[2]
    if name == "url":
        raise operation_not_supported(":url is not supported")
    if name == "config" and allow_config:
        return k
    if k.tag != nc(name) or name not in DATASTORES:
        raise bad_element(name, f"unknown datastore {name}")
    return name


def request_prefixes(el: etree._Element) -> dict[str, str]:
    """namespace → the prefix the request bound to it (walked only when an error is reported)."""
    out: dict[str, str] = {}
    for e in el.iter():
        for p, ns in e.nsmap.items():
            if p and ns not in out:
                out[ns] = p
    return out


def _wd_mode(op: etree._Element) -> str:
    mode = _text(op, "with-defaults", WD_NS)
    if mode is None:
        return "explicit"
    if mode not in WD_MODES:
        raise invalid_value(f"bad with-defaults {mode}", bad="with-defaults")
    return mode


# -- reading ----------------------------------------------------------------------------------------------
def read_pipeline(
    sess: NetconfSession,
    data: Forest,
    filter_el: etree._Element | None,
    wd_mode: str,
    *,
    owned: bool = False,
    config_only: bool = False,
    max_depth: int | None = None,
    raw: RawSplices = NO_SPLICES,
) -> Parts:
    """with-defaults → NACM read filter → filter → depth limit → serialise (raw state spliced in).
    `owned`: data may be mutated (and taken apart by the filter).  The reply body comes back as
    parts written one after the other (raw state is never copied into one byte string)."""
    core = sess.core
    if wd_mode != "explicit":
        if not owned:
            data, owned = data.copy(), True
        core.wd.apply(data, wd_mode, config_only=config_only)
    if owned or core.nacm.hides_any(sess.principal, data):
        if not owned:
            data, owned = data.copy(), True
        core.nacm.prune(sess.principal, data, raw)
    if filter_el is not None:
        ftype = filter_el.get("type", "subtree")
        if ftype == "subtree":
            sub = SubtreeFilter(filter_el, core.schema, raw=raw)
            data = sub.prune(data) if owned else sub.apply(data)
        elif ftype == "xpath":
            select = filter_el.get("select")
            if select is None:
                raise bad_attribute("select", "filter", "xpath filter needs select", missing=True)
            data = xpath_filter(data, select, filter_el.nsmap, core.schema, raw)
        else:
            raise bad_attribute("type", "filter", f"unknown filter type {ftype}", missing=False)
    if max_depth is not None:
        data = _limit_depth(data if filter_el is not None or owned else data.copy(), max_depth, raw)
    return raw.splice(data.to_bytes("data")) if raw else data.to_parts("data")


def _limit_depth(data: Forest, depth: int, raw: RawSplices = NO_SPLICES) -> Forest:
    """RFC 8526 max-depth: top-level nodes are depth 1; deeper nodes are dropped."""

    def cut(el: etree._Element, level: int) -> None:
        if level >= depth and raw and raw.is_placeholder(el):
            raw.drop_content(el)
        for ch in list(el):
            if level >= depth:
                el.remove(ch)
            else:
                cut(ch, level + 1)

    for root in data:
        cut(root, 1)
    return data


def op_get_config(sess: NetconfSession, op: etree._Element) -> Parts:
    src = _datastore_ref(op, "source")
    filter_el, wd = _child(op, "filter"), _wd_mode(op)
    with sess.core.ds.reading(src) as data:
        return read_pipeline(sess, data, filter_el, wd, config_only=True)


def op_get(sess: NetconfSession, op: etree._Element) -> Parts:
    filter_el = _child(op, "filter")
    wd = _wd_mode(op)
    with sess.core.ds.reading("running"):
        data, owned, raw = _operational(sess, filter_el, wd)
        return read_pipeline(sess, data, filter_el, wd, owned=owned, raw=raw)


def _operational(
    sess: NetconfSession, filter_el: etree._Element | None, wd: str
) -> tuple[Forest, bool, RawSplices]:
    """Running merged with provider state, holding at least what the filter selects; the flag tells
    whether it is a private copy (no copy is made when no state root meets a configuration root).

    With a subtree filter, running is cut down first (a superset of what the filter can select once
    state is merged and defaults are added, see SubtreeFilter), so a <get> of one binding costs what
    that binding's entry costs, not a copy of 100k configured mobile nodes. The exact filter runs
    afterwards in read_pipeline, on that small merged result."""
    core = sess.core
    request = _state_request(filter_el, wd)
    state = core.state_roots(sess, request)
    raw = RawSplices.claim(state, request.raw)
    if filter_el is not None and filter_el.get("type", "subtree") == "subtree":
        pre = SubtreeFilter(filter_el, core.schema, superset=True, defaults=wd.startswith("report-all"))
        return core.merge_into(pre.apply(core.ds.running), state), True, raw
    data, owned = core.merge_state(core.ds.running, state)
    return data, owned, raw


def _state_request(filter_el: etree._Element | None, wd: str) -> StateRequest:
    if filter_el is None:
        return StateRequest(with_defaults=wd)
    if filter_el.get("type") == "xpath":
        nsmap = tuple((k, v) for k, v in filter_el.nsmap.items() if k)
        return StateRequest(xpath=filter_el.get("select"), nsmap=nsmap, with_defaults=wd)
    return StateRequest(subtree=filter_el, with_defaults=wd)


# -- writing ----------------------------------------------------------------------------------------------
def _engine(
    sess: NetconfSession, error_option: str, config_el: etree._Element, log: OpLog | None = None
) -> EditEngine:
    core = sess.core
    return EditEngine(
        core.schema,
        error_option=error_option,
        may_write=lambda sn: core.nacm.may_write(sess.principal, sn),
        request_nsmap=config_el.nsmap,
        log=log,
    )


def _errors_in_request_prefixes(config_of: Callable[[etree._Element], etree._Element | None]):
    """Decorator: error-paths (also those from validation of the whole datastore, which speak the
    stored data's prefixes) are rewritten into the prefixes of the request's config."""

    def rewrite(err: RpcError, op: etree._Element) -> RpcError:
        config = config_of(op)
        return err if config is None else with_request_prefixes(err, request_prefixes(config))

    def wrap(fn: Handler) -> Handler:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_handler(sess: NetconfSession, op: etree._Element):
                try:
                    return await fn(sess, op)
                except RpcError as err:
                    raise rewrite(err, op) from None

            return async_handler

        @functools.wraps(fn)
        def handler(sess: NetconfSession, op: etree._Element):
            try:
                return fn(sess, op)
            except RpcError as err:
                raise rewrite(err, op) from None

        return handler

    return wrap


def _serialised(fn: Callable[[NetconfSession, etree._Element], Awaitable[None]]) -> Handler:
    """The whole operation (reading the datastore it edits included) runs under `txn_lock`."""

    @functools.wraps(fn)
    async def handler(sess: NetconfSession, op: etree._Element) -> None:
        async with sess.core.txn_lock:
            return await fn(sess, op)

    return handler


def _config_of_edit(op: etree._Element) -> etree._Element | None:
    return _child(op, "config")


def _config_of_source(op: etree._Element) -> etree._Element | None:
    src = _child(op, "source")
    return None if src is None else src.find(nc("config"))


async def edit_config(sess: NetconfSession, op: etree._Element, more: Sequence[etree._Element] = ()) -> None:
    """<edit-config> with `txn_lock` already held by the caller (RESTCONF checks its preconditions
    and the resource's existence in the same transaction); `op_edit_config` takes the lock itself.
    `more`: further <config> elements applied after the op's own, in order, in the same transaction
    (a YANG Patch's edits); an error of the edit engine carries `edit_index`, the config it met."""
    core = sess.core
    target = _datastore_ref(op, "target")
    if target == "startup":
        raise operation_not_supported("edit-config on startup: use copy-config")
    default_op = _text(op, "default-operation") or "merge"
    if default_op not in DEFAULT_OPS:
        raise invalid_value(f"bad default-operation {default_op}", bad="default-operation")
    test_option = _text(op, "test-option") or "test-then-set"
    if test_option not in TEST_OPTIONS:
        raise invalid_value(f"bad test-option {test_option}", bad="test-option")
    error_option = _text(op, "error-option") or "stop-on-error"
    if error_option not in ERROR_OPTIONS:
        raise invalid_value(f"bad error-option {error_option}", bad="error-option")
    config_el = _child(op, "config")
    if config_el is None:
        if _child(op, "url") is not None:
            raise operation_not_supported(":url is not supported")
        raise _missing("config")
    sess.core.check_lock(sess, target)
    current, log = core.ds.begin_edit(target)
    engine = _engine(sess, error_option, config_el, log)
    settled = False  # the edit was undone, committed or kept: nothing left to undo
    try:
        errs: list[RpcError] = []
        for index, config in enumerate((config_el, *more)):
            errs = engine.apply(current, config, default_op)
            if errs and error_option != "continue-on-error":
                err = combine(errs)
                err.edit_index = index  # type: ignore[attr-defined]
                raise err
        _check_write(sess, log, current)
        validate = test_option != "set" or target == "running"
        if test_option == "test-only":
            verrs = core.ds.validate_edit(target, log)
            if errs or verrs:
                raise combine(errs + verrs)
            settled = True
            core.ds.abort_edit(target, log)
            return None
        if not engine.changed:
            settled = True
            core.ds.abort_edit(target, log)
            if errs:
                raise combine(errs)
            return None
        if target == "running":
            settled = True  # commit_edit undoes a refused change itself
            try:
                await core.ds.commit_edit(
                    log, session_id=sess.id, user=sess.principal.user, validate=validate
                )
            except RpcError as err:
                raise combine(errs + err.all()) from None  # continue-on-error: report the edit errors too
            targets = [t for config in (config_el, *more) for t in _edit_targets(config, default_op)]
            core.publish_config_change(sess, "running", targets)
        else:
            if validate:
                verrs = core.ds.validate_edit(target, log)
                if verrs:
                    raise combine(errs + verrs)
            settled = True
            core.ds.end_edit_candidate(log, sess.id, validated=validate and not errs)
    except BaseException:
        if not settled:
            core.ds.abort_edit(target, log)
        raise
    if errs:
        raise combine(errs)  # continue-on-error: the rest was applied, report what failed
    return None


op_edit_config = _errors_in_request_prefixes(_config_of_edit)(_serialised(edit_config))


def _check_write(sess: NetconfSession, log: OpLog, forest: Forest) -> None:
    """NACM (RFC 8341 §3.4.5) on the edit's effective change, read from its OpLog: deletions are
    checked with the edit undone (the deleted nodes in their place, for paths and key rules)."""
    nacm = sess.core.nacm
    if not nacm.writes_checked(sess.principal):
        return
    changes = sess.core.ds.changes_of(log, forest)
    gone = [c for c in changes if c.op == "deleted"]
    if gone:
        log.undo()
        try:
            nacm.check_write_items(sess.principal, nacm_items(sess.core.schema, gone, "old"))
        finally:
            log.redo()
    nacm.check_write_items(
        sess.principal, nacm_items(sess.core.schema, [c for c in changes if c.op != "deleted"], "new")
    )


def _edit_targets(config_el: etree._Element, default_op: str) -> list[tuple[str, str]]:
    out = []
    for el in config_el:
        if isinstance(el.tag, str):
            op = el.get(nc("operation")) or (default_op if default_op != "none" else "merge")
            out.append((el.tag, op))
    return out


def _inline_config(sess: NetconfSession, config_el: etree._Element) -> Forest:
    """An inline <config> checked against the schema (unknown nodes, state data, NACM)."""
    new = Forest()
    errs = _engine(sess, "stop-on-error", config_el).apply(new, config_el, "merge")
    if errs:
        raise combine(errs)
    return new


@_errors_in_request_prefixes(_config_of_source)
@_serialised
async def op_copy_config(sess: NetconfSession, op: etree._Element) -> None:
    core = sess.core
    target = _datastore_ref(op, "target")
    source = _datastore_ref(op, "source", allow_config=True)
    if isinstance(source, str):
        if source == target:
            raise invalid_value("source and target are the same datastore")
        with core.ds.reading(source) as src:
            data = src.copy()
        # a non-superuser may not copy deny-all nodes it cannot read
        if core.nacm.hides_any(sess.principal, data):
            raise access_denied("source holds nodes this user may not read")
    else:
        data = _inline_config(sess, source)
    sess.core.check_lock(sess, target)
    core.nacm.check_write(sess.principal, core.ds.get(target), data)
    if target == "running":
        await core.ds.commit_running(data, session_id=sess.id, user=sess.principal.user)
        core.publish_config_change(sess, "running", [])
    elif target == "candidate":
        verrs = core.ds.validate(data)
        if verrs:
            raise combine(verrs)
        core.ds.set_candidate(data, sess.id, validated=True)
    else:
        core.ds.set_startup(data)
        core.publish_config_change(sess, "startup", [])
    return None


@_serialised
async def op_delete_config(sess: NetconfSession, op: etree._Element) -> None:
    target = _datastore_ref(op, "target")
    if target != "startup":
        raise operation_not_supported(f"cannot delete the {target} datastore")
    sess.core.check_lock(sess, target)
    sess.core.ds.delete_startup()
    sess.core.publish_config_change(sess, "startup", [])
    return None


@_serialised
async def op_lock(sess: NetconfSession, op: etree._Element) -> None:
    sess.core.lock(sess, _datastore_ref(op, "target"))
    return None


@_serialised
async def op_unlock(sess: NetconfSession, op: etree._Element) -> None:
    sess.core.unlock(sess, _datastore_ref(op, "target"))
    return None


def op_close_session(sess: NetconfSession, op: etree._Element) -> None:
    sess.close_after_reply = True
    return None


def op_kill_session(sess: NetconfSession, op: etree._Element) -> None:
    text = _text(op, "session-id")
    if text is None:
        raise _missing("session-id")
    if not text.isdigit():
        raise invalid_value("session-id must be a number", bad="session-id")
    sid = int(text)
    if sid == sess.id:
        raise invalid_value("a session cannot kill itself: use close-session", bad="session-id")
    if sid not in sess.core.sessions:
        raise invalid_value(f"no session {sid}", bad="session-id")
    sess.core.kill(sid, by=sess.id)
    return None


@_serialised
async def op_commit(sess: NetconfSession, op: etree._Element) -> None:
    confirmed = _child(op, "confirmed") is not None
    timeout_text = _text(op, "confirm-timeout")
    timeout = 600
    if timeout_text is not None:
        if not timeout_text.isdigit() or int(timeout_text) < 1:
            raise invalid_value("confirm-timeout must be a positive integer", bad="confirm-timeout")
        timeout = int(timeout_text)
    await sess.core.commit(
        sess,
        confirmed=confirmed,
        timeout=timeout,
        persist=_text(op, "persist"),
        persist_id=_text(op, "persist-id"),
    )
    return None


@_serialised
async def op_cancel_commit(sess: NetconfSession, op: etree._Element) -> None:
    await sess.core.cancel_commit(sess, _text(op, "persist-id"))
    return None


@_serialised
async def op_discard_changes(sess: NetconfSession, op: etree._Element) -> None:
    sess.core.check_lock(sess, "candidate")
    sess.core.ds.reset_candidate()
    return None


@_errors_in_request_prefixes(_config_of_source)
def op_validate(sess: NetconfSession, op: etree._Element) -> None:
    source = _datastore_ref(op, "source", allow_config=True)
    if isinstance(source, str):
        with sess.core.ds.reading(source) as data:
            errs = sess.core.ds.validate(data)
    else:
        errs = sess.core.ds.validate(_inline_config(sess, source))
    if errs:
        raise combine(errs)
    return None


def op_get_schema(sess: NetconfSession, op: etree._Element) -> etree._Element:
    return get_schema(sess.core.schema, op)


def op_create_subscription(sess: NetconfSession, op: etree._Element) -> None:
    stream = _text(op, "stream", NOTIF_NS) or ev.STREAM
    if stream != ev.STREAM:
        raise invalid_value(f"no stream {stream}", type="application", bad="stream")
    if sess.subscription is not None and sess.subscription.active:
        raise in_use("this session already has a subscription")
    start_t = _text(op, "startTime", NOTIF_NS)
    stop_t = _text(op, "stopTime", NOTIF_NS)
    now = ev.utcnow()
    start = ev.parse_time(start_t, "startTime") if start_t is not None else None
    stop = ev.parse_time(stop_t, "stopTime") if stop_t is not None else None
    if stop is not None and start is None:
        raise missing_element("startTime", "stopTime needs startTime")
    if start is not None and start > now:
        raise bad_element("startTime", "startTime is in the future")
    if start is not None and stop is not None and stop < start:
        raise bad_element("stopTime", "stopTime before startTime")
    filt = _child(op, "filter", NOTIF_NS)
    if filt is None:
        filt = _child(op, "filter")  # some clients (ncclient) put it in the base namespace
    xpath = None
    filter_el = None
    if filt is not None:
        if filt.get("type") == "xpath":
            xpath = (filt.get("select") or "", dict(filt.nsmap))
        else:
            filter_el = filt
    sess.core.subscribe(sess, filter_el=filter_el, xpath=xpath, start=start, stop=stop)
    return None


def op_get_data(sess: NetconfSession, op: etree._Element) -> Parts:
    """RFC 8526 <get-data> on ds:running / ds:candidate / ds:startup / ds:operational."""
    name = _nmda_datastore(op)
    filter_el = None
    sub = _child(op, "subtree-filter", NMDA_NS)
    xp = _child(op, "xpath-filter", NMDA_NS)
    if sub is not None:
        filter_el = etree.Element(nc("filter"), type="subtree")
        for c in sub:
            filter_el.append(copy.deepcopy(c))
    elif xp is not None:
        filter_el = etree.Element(nc("filter"), type="xpath", select=(xp.text or "").strip(), nsmap=xp.nsmap)
    wd = _wd_mode(op)
    cfg_filter = _text(op, "config-filter", NMDA_NS)
    with sess.core.ds.reading("running" if name == "operational" else name) as stored:
        return _get_data(sess, op, name, stored, filter_el, wd, cfg_filter)


def _get_data(sess, op, name, stored, filter_el, wd, cfg_filter) -> Parts:
    core = sess.core
    raw = NO_SPLICES
    if name == "operational":
        data, owned, raw = _operational(sess, filter_el, wd)
        if cfg_filter == "false":
            data, owned = core.strip_config(data), True
    else:
        data, owned = stored, False
    if _child(op, "with-origin", NMDA_NS) is not None:
        raise operation_not_supported("with-origin: the origin feature is not supported")
    depth_text = _text(op, "max-depth", NMDA_NS)
    max_depth = None
    if depth_text is not None and depth_text != "unbounded":
        if not depth_text.isdigit() or not 1 <= int(depth_text) <= 65535:
            raise invalid_value(f"bad max-depth {depth_text}", bad="max-depth")
        max_depth = int(depth_text)
    body = read_pipeline(
        sess,
        data,
        filter_el,
        wd,
        owned=owned,
        config_only=name != "operational",
        max_depth=max_depth,
        raw=raw,
    )
    if isinstance(body, list):
        body[0] = _nmda_data(body[0])
        return body
    return _first_part(body, _nmda_data)


def _nmda_datastore(op: etree._Element) -> str:
    """The name (running, candidate, startup, operational) of an NMDA <datastore> identity."""
    ds_el = _child(op, "datastore", NMDA_NS)
    if ds_el is None:
        raise _missing("datastore")
    pfx, _, name = (ds_el.text or "").strip().rpartition(":")
    if ds_el.nsmap.get(pfx or None) != DS_NS or name not in (*DATASTORES, "operational"):
        raise invalid_value(f"unknown datastore {(ds_el.text or '').strip()}", bad="datastore")
    return name


async def op_edit_data(sess: NetconfSession, op: etree._Element) -> None:
    """RFC 8526 <edit-data> on ds:running or ds:candidate: edit-config's engine, validation and
    transaction (test-then-set, stop-on-error) with the NMDA request's <config> content."""
    name = _nmda_datastore(op)
    if name not in ("running", "candidate"):
        raise operation_not_supported(f"edit-data on {name}: only ds:running and ds:candidate are writable")
    if _child(op, "url", NMDA_NS) is not None:
        raise operation_not_supported(":url is not supported")
    content = _child(op, "config", NMDA_NS)
    if content is None:
        raise _missing("config")
    edit = etree.Element(nc("edit-config"))
    etree.SubElement(etree.SubElement(edit, nc("target")), nc(name))
    default_op = _text(op, "default-operation", NMDA_NS)
    if default_op is not None:
        etree.SubElement(edit, nc("default-operation")).text = default_op
    config = etree.SubElement(edit, nc("config"), nsmap=content.nsmap)
    for child in list(content):
        config.append(child)  # moved: the request is ours
    return await op_edit_config(sess, edit)


def _nmda_data(first: bytes) -> bytes:
    """get-data's <data> is ietf-netconf-nmda's: its start tag heads the first part."""
    return first.replace(_NC_DATA, _NMDA_DATA, 1)


def _first_part(parts: Iterator[bytes], change: Callable[[bytes], bytes]) -> Iterator[bytes]:
    yield change(next(parts, b""))
    yield from parts


HANDLERS: dict[tuple[str, str], Handler] = {
    (NC_NS, "get"): op_get,
    (NC_NS, "get-config"): op_get_config,
    (NC_NS, "edit-config"): op_edit_config,
    (NC_NS, "copy-config"): op_copy_config,
    (NC_NS, "delete-config"): op_delete_config,
    (NC_NS, "lock"): op_lock,
    (NC_NS, "unlock"): op_unlock,
    (NC_NS, "close-session"): op_close_session,
    (NC_NS, "kill-session"): op_kill_session,
    (NC_NS, "commit"): op_commit,
    (NC_NS, "cancel-commit"): op_cancel_commit,
    (NC_NS, "discard-changes"): op_discard_changes,
    (NC_NS, "validate"): op_validate,
    (MON_NS, "get-schema"): op_get_schema,
    (NOTIF_NS, "create-subscription"): op_create_subscription,
    (NMDA_NS, "get-data"): op_get_data,
    (NMDA_NS, "edit-data"): op_edit_data,
}
