"""Config subscribers: how the daemon's engine takes part in every change of the running datastore.

FRR northbound / sysrepo style. A commit to running is one Transaction that the datastore layer drives:

1. every subscriber's `validate(txn)` (pure checks that need the environment; may refuse),
2. every subscriber's `prepare(txn)` (reserve resources; may refuse),
3. on any refusal: `abort(txn)` on the subscribers whose prepare *succeeded*, in reverse order
   (the one that failed never gets abort), the datastore stays exactly as before, and the
   refusal's RpcError reaches the client;
4. otherwise the new config is published and every subscriber's `apply(txn)` runs (must not fail;
   an exception there is logged as a bug, as in FRR).

Every method may be a coroutine (or return an awaitable): the driver awaits it. The driver itself is
async; with plain methods it never suspends.

A subscriber refuses by raising `server.errors.RpcError` (any other exception becomes
operation-failed). The transaction gives the old and new trees (read-only: never mutate them) and a
lazily computed, keyed diff.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol

from lxml import etree

from server.errors import RpcError
from server.schema import Schema, SchemaNode
from server.tree import Forest, child_text

log = logging.getLogger(__name__)
_txn_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Change:
    """One node created, deleted or modified: the keyed diff a config subscriber receives.

    - `op`: "created" (the node and its whole subtree are new), "deleted" (the node and its subtree
      are gone), "modified" (a leaf's value changed; containers and list entries never are "modified":
      their changed descendants are listed instead).
    - `path`: instance identifier with module-name prefixes and key predicates,
      `/m:virtual-routers/m:virtual-router[name='vr1']/m:mobile-node[name='x']/m:nai`.
    - `schema_path`: the same without predicates (`/m:virtual-routers/m:virtual-router/m:mobile-node/m:nai`),
      what a subscriber dispatches on.
    - `keys`: the key values of every list entry on the path, outermost first (a leaf-list entry
      contributes its value), e.g. `(("vr1",), ("x",))`.
    - `old` / `new`: the node before / after (None when absent). Read-only. A `new` element is the
      live datastore node: read it during the transaction, keep values rather than the element.
    - `old_value` / `new_value`: a leaf's (or leaf-list entry's) text before / after; None otherwise.
    - `parent`: for a deleted node, the live element of the new tree it was removed from (None when
      that went too, or is not known): a subscriber finds the changed list entry without a look-up.
    """

    op: Literal["created", "deleted", "modified"]
    path: str
    old: etree._Element | None
    new: etree._Element | None
    schema_path: str = ""
    keys: tuple[tuple[str, ...], ...] = ()
    old_value: str | None = None
    new_value: str | None = None
    parent: etree._Element | None = None

    @property
    def name(self) -> str:
        """Local name of the node (`mobile-node`, `nai`, ...)."""
        return self.schema_path.rpartition(":")[2]


@dataclass
class Transaction:
    """Old and new running config plus who asked; `diff` computed on first use."""

    old: Forest
    new: Forest
    schema: Schema
    session_id: int = 0
    user: str = ""
    id: int = field(default_factory=lambda: next(_txn_ids))
    resources: dict[object, object] = field(default_factory=dict)  # per-subscriber scratch space
    #: the keyed diff when the datastore already knows it (an edit records what it changed)
    changes: list[Change] | None = field(default=None, repr=False)

    @cached_property
    def diff(self) -> list[Change]:
        """The keyed diff old → new (see Change): what the edit recorded, else computed from the trees."""
        if self.changes is not None:
            return self.changes
        return list(diff_forests(self.old, self.new, self.schema))

    def changes_under(self, schema_path: str) -> list[Change]:
        """The changes at or below `schema_path` (a Change.schema_path prefix)."""
        return [
            c
            for c in self.diff
            if c.schema_path == schema_path or c.schema_path.startswith(schema_path + "/")
        ]


class ConfigSubscriber(Protocol):
    """Implemented by the daemon's glue; each method may raise RpcError except `apply`.

    Any method may be a coroutine function (or return an awaitable): the driver awaits it, so a
    prepare can do kernel work (netlink, TUN devices) and refuse with the kernel's answer."""

    def validate(self, txn: Transaction) -> Awaitable[None] | None: ...
    def prepare(self, txn: Transaction) -> Awaitable[None] | None: ...
    def abort(self, txn: Transaction) -> Awaitable[None] | None: ...
    def apply(self, txn: Transaction) -> Awaitable[None] | None: ...


class NoOpPhases:
    """For subscribers with nothing to check, reserve or undo: validate, prepare and abort do
    nothing; a subscriber overrides the phases it takes part in (at least `apply`)."""

    def validate(self, txn: Transaction) -> None:
        return None

    def prepare(self, txn: Transaction) -> None:
        return None

    def abort(self, txn: Transaction) -> None:
        return None


async def run_transaction(subscribers: list[ConfigSubscriber], txn: Transaction) -> None:
    """validate → prepare → (abort on refusal); raise the refusing subscriber's RpcError.

    Cancellation (the session was killed or lost) during validate or prepare is a refusal too: the
    subscribers whose prepare completed get abort, then CancelledError propagates. A prepare that is
    itself interrupted (by RpcError, another exception or CancelledError) must undo its own partial
    work: it never gets abort."""
    for sub in subscribers:
        await _call(sub.validate, txn)
    prepared: list[ConfigSubscriber] = []
    try:
        for sub in subscribers:
            await _call(sub.prepare, txn)
            prepared.append(sub)
    except (RpcError, asyncio.CancelledError):
        await abort_transaction(prepared, txn)
        raise


async def abort_transaction(prepared: list[ConfigSubscriber], txn: Transaction) -> None:
    """abort, in reverse order, on the subscribers whose prepare succeeded; failures are only logged.
    Runs to the end even if the calling task is cancelled meanwhile (resources must be released);
    such a cancellation is absorbed (the caller raises its own error next)."""
    await _every(reversed(prepared), "abort", txn, "subscriber %r failed in abort (transaction %d)")


async def apply_transaction(subscribers: list[ConfigSubscriber], txn: Transaction) -> None:
    """Every apply, in order. Once running has been swapped the transaction is committed: this phase
    runs to the end even if the calling task is cancelled meanwhile, and that cancellation is
    absorbed so the caller also finishes its bookkeeping (events, confirmed-commit state)."""
    await _every(subscribers, "apply", txn, "BUG: subscriber %r failed in apply (transaction %d)")


async def _every(subs: Iterable[ConfigSubscriber], method: str, txn: Transaction, msg: str) -> None:
    """Call `method` on each subscriber, never stopping early: an exception is logged, a cancellation
    of the caller is absorbed. Plain methods cost no task."""
    cancelled = False
    for sub in subs:
        try:
            result = getattr(sub, method)(txn)
            if inspect.isawaitable(result):
                cancelled |= await _to_completion(result)
        except Exception:
            log.exception(msg, sub, txn.id)
    if cancelled:
        log.info("transaction %d: %s finished although its session was cancelled meanwhile", txn.id, method)


async def _to_completion(aw: Awaitable[object]) -> bool:
    """Await `aw` to its end even if the caller is cancelled meanwhile; re-raise its exception.
    Returns True when a cancellation of the caller was held back."""
    fut = asyncio.ensure_future(aw)
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancelled |= not fut.done()
        except Exception:
            break
    if cancelled:
        if not fut.cancelled() and fut.exception() is not None:
            log.error("subscriber failed while its caller was cancelled", exc_info=fut.exception())
        return True
    if fut.cancelled():
        raise RuntimeError("the subscriber's awaitable was cancelled")
    fut.result()
    return False


async def _maybe_await(result: object) -> None:
    if inspect.isawaitable(result):
        await result


async def _call(fn: Callable[[Transaction], object], txn: Transaction) -> None:
    try:
        await _maybe_await(fn(txn))
    except RpcError:
        raise
    except Exception as exc:
        log.exception("subscriber %s raised", fn)
        raise RpcError("operation-failed", f"{type(exc).__name__}: {exc}", type="application") from exc


# -- diff ---------------------------------------------------------------------------------------------
def _key(el: etree._Element, sn: SchemaNode | None) -> tuple:
    if sn is None:
        return (el.tag,)
    if sn.kind == "list":
        return (el.tag, *((child_text(el, f"{{{sn.ns}}}{k}") or "").strip() for k in sn.keys))
    if sn.kind == "leaf-list":
        return (el.tag, (el.text or "").strip())
    return (el.tag,)


def _child_sn(parent: SchemaNode | None, schema: Schema, el: etree._Element) -> SchemaNode | None:
    ns, _, name = el.tag[1:].partition("}")
    if parent is None:
        return schema.root(ns, name)
    return parent.children.get((ns, name))


def path_step(el: etree._Element, sn: SchemaNode | None) -> tuple[str, str, tuple[str, ...] | None]:
    """(instance step, schema step, list key values or None) of one node."""
    name = el.tag.rpartition("}")[2]
    pfx = sn.module if sn is not None else ""
    s = f"/{pfx}:{name}" if pfx else f"/{name}"
    plain = s
    keys: tuple[str, ...] | None = None
    if sn is not None and sn.kind == "list":
        keys = tuple((child_text(el, f"{{{sn.ns}}}{k}") or "").strip() for k in sn.keys)
        for k, v in zip(sn.keys, keys, strict=True):
            s += f"[{k}='{v}']"
    elif sn is not None and sn.kind == "leaf-list":
        keys = ((el.text or "").strip(),)
        s += f"[.='{keys[0]}']"
    return s, plain, keys


def _value(el: etree._Element | None, sn: SchemaNode | None) -> str | None:
    if el is None or sn is None or sn.kind not in ("leaf", "leaf-list"):
        return None
    return (el.text or "").strip()


def make_change(op, el_old, el_new, sn, path, schema_path, keys, parent=None) -> Change:
    return Change(op, path, el_old, el_new, schema_path, keys, _value(el_old, sn), _value(el_new, sn), parent)


def _pairs(old_children, new_children, parent_sn, schema):
    old = {_key(e, _child_sn(parent_sn, schema, e)): e for e in old_children if isinstance(e.tag, str)}
    new = {_key(e, _child_sn(parent_sn, schema, e)): e for e in new_children if isinstance(e.tag, str)}
    for k, o in old.items():
        yield o, new.get(k)
    for k, n in new.items():
        if k not in old:
            yield None, n


def diff_forests(old: Forest, new: Forest, schema: Schema) -> Iterator[Change]:
    """Keyed diff in Python (libyang's diff is quadratic on large lists)."""
    yield from diff_level(list(old), list(new), None, schema, "", "", ())


def diff_level(
    old_children, new_children, parent_sn, schema, path, spath, keys, parent=None
) -> Iterator[Change]:
    """The keyed diff of two sibling sets below the node at `path` (schema path `spath`); `parent`:
    the new tree's element holding `new_children` (None at the top)."""
    for o, n in _pairs(old_children, new_children, parent_sn, schema):
        el = o if o is not None else n
        sn = _child_sn(parent_sn, schema, el)
        step, plain, k = path_step(el, sn)
        p, sp, ks = path + step, spath + plain, keys if k is None else (*keys, k)
        if o is None:
            yield make_change("created", None, n, sn, p, sp, ks)
        elif n is None:
            yield make_change("deleted", o, None, sn, p, sp, ks, parent)
        elif sn is None or sn.kind in ("leaf", "anydata"):
            if (o.text or "").strip() != (n.text or "").strip() or (
                sn is not None and sn.kind == "anydata" and etree.tostring(o) != etree.tostring(n)
            ):
                yield make_change("modified", o, n, sn, p, sp, ks)
        elif sn.kind in ("container", "list"):
            yield from diff_level(list(o), list(n), sn, schema, p, sp, ks, n)
