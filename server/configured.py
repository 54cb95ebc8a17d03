"""Configured subscriptions (RFC 8639 §2.5, RFC 8641 for datastores): /sn:subscriptions in running.

`Configured` is a config subscriber: a commit that changes /sn:subscriptions (or the /sn:filters they
name) is validated here with the rules of establish-subscription (server/subscription_input.py and
`Subscriptions.check`: the same errors), plus what configuration adds: the transport (the `https`
identity of the module whose `https-receiver` is a receiver instance's transport: the only one),
each receiver's receiver-instance-ref naming a configured receiver instance (data-missing /
instance-required), an id no dynamic subscription holds. Apply then reconciles the subscriptions in
effect with running: new ones start, removed ones end (subscription-terminated), changed terms are
swapped in (subscription-modified), receivers come and go.

Each receiver of a subscription is a `server.https_notif.Link` with its own `Dynamic` (the same
stream receiver or periodic / on-change job a dynamic subscription has, producing only while its
link is active): filters, encodings and NACM work as for dynamic subscriptions. The data a receiver
gets is read as the NACM user named like its receiver instance.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

from lxml import etree

from server import notifications as ev
from server.actions import ActionHandler, ActionRequest
from server.errors import RpcError
from server.https_notif import Endpoint, Link
from server.nacm import Principal
from server.push import notification
from server.subscribers import NoOpPhases, Transaction
from server.subscription_input import SN, SN_NS, YP, YP_NS, Request, read_request
from server.subscriptions import Dynamic
from server.tree import Forest, child_text

if TYPE_CHECKING:
    import asyncio

    from server.core import NetconfCore

log = logging.getLogger(__name__)
SNR_NS = "urn:ietf:params:xml:ns:yang:ietf-subscribed-notif-receivers"
SNR = f"{{{SNR_NS}}}"
#: children of a configured subscription that are not establish-subscription input
_NOT_INPUT = frozenset({"transport", "purpose", "receivers", "source-address", "configured-replay"})
_PATH_NS = {"sn": SN_NS, "snr": SNR_NS}
#: the schema paths (Change.schema_path) whose change concerns configured subscriptions
_WATCHED = ("/ietf-subscribed-notifications:subscriptions", "/ietf-subscribed-notifications:filters")
_STREAM_ERR = (SN_NS, "establish-subscription-stream-error-info")
RESET_PATH = "/ietf-subscribed-notifications:subscriptions/subscription/receivers/receiver/reset"
_DS_ERR = (YP_NS, "establish-subscription-datastore-error-info")


@dataclass
class Spec:
    """What running says of one configured subscription."""

    id: int
    request: Request
    terms: bytes  # the entry without its receivers: a change of these is a subscription-modified
    receivers: dict[str, tuple[str, Endpoint]]  # receiver name → (receiver instance, endpoint)
    replay: bool = False
    purpose: str | None = None


@dataclass
class InEffect:
    """A configured subscription in effect: its links, one per receiver, each with its Dynamic."""

    spec: Spec
    links: dict[str, tuple[Link, Dynamic]] = field(default_factory=dict)
    stop_timer: asyncio.TimerHandle | None = None
    concluded: bool = False


class _Probe:
    """The session a subscription's terms are checked with in validate (nothing is sent)."""

    closed = True

    def __init__(self, core: NetconfCore) -> None:
        self.core, self.principal, self.id = core, Principal(""), 0

    def send_notification(self, payload: bytes) -> None:
        return None


class Configured(NoOpPhases):
    """The configured subscriptions of one server (create once per NetconfCore)."""

    def __init__(self, core: NetconfCore) -> None:
        self.core = core
        self.effect: dict[int, InEffect] = {}
        self._https: str | None = None

    @property
    def https_ns(self) -> str:
        """The namespace of the HTTPS transport's module: the one whose `https-receiver` is a case of a
        receiver instance's transport-type ("" when none is loaded: no transport, nothing configurable)."""
        if self._https is None:
            sn = self.core.schema.root(SN_NS, "subscriptions")
            for name in ("receiver-instances", "receiver-instance"):
                sn = sn.child(SNR_NS, name) if sn is not None else None
            found = [ns for ns, n in (sn.children if sn is not None else {}) if n == "https-receiver"]
            self._https = found[0] if found and found[0] else ""
        return self._https

    # -- config subscriber --------------------------------------------------------------------------------
    def validate(self, txn: Transaction) -> None:
        if not _touched(txn):
            return None
        specs = self._specs(txn.new)
        for spec in specs.values():
            if spec.id in self.core.subscriptions.all:
                raise RpcError(
                    "invalid-value",
                    f"subscription id {spec.id} is a dynamic subscription's",
                    type="application",
                    path=_path(spec.id) + "/sn:id",
                    path_nsmap=_PATH_NS,
                )
            errors = _STREAM_ERR if spec.request.stream is not None else _DS_ERR
            probe = Dynamic(spec.id, _Probe(self.core), spec.request)  # type: ignore[arg-type]
            try:
                self.core.subscriptions.check(probe, errors)
            except RpcError as err:
                raise _at(err, _path(spec.id)) from None
        txn.resources[self] = specs
        return None

    def apply(self, txn: Transaction) -> None:
        specs = txn.resources.get(self)
        if isinstance(specs, dict):
            self._reconcile(specs)

    def close(self) -> None:
        """The server stops: every link ends (without subscription-terminated)."""
        for sid in list(self.effect):
            self._end(sid, None)

    # -- reading running ------------------------------------------------------------------------------------
    def _specs(self, running: Forest) -> dict[int, Spec]:
        subs = running.find(SN + "subscriptions")
        if subs is None:
            return {}
        instances: dict[str, Endpoint] = {}
        holder = subs.find(SNR + "receiver-instances")
        for inst in holder.iterchildren(SNR + "receiver-instance") if holder is not None else ():
            https = inst.find(f"{{{self.https_ns}}}https-receiver")
            if https is not None:
                instances[child_text(inst, SNR + "name") or ""] = _endpoint(https, self.https_ns)
        return {
            spec.id: spec
            for spec in (self._spec(e, running, instances) for e in subs.iterchildren(SN + "subscription"))
        }

    def _spec(self, entry: etree._Element, running: Forest, instances: dict[str, Endpoint]) -> Spec:
        sid = int(child_text(entry, SN + "id") or "0")
        path = _path(sid)
        transport = entry.find(SN + "transport")
        if transport is None:
            raise RpcError(
                "data-missing",
                "a configured subscription needs a transport",
                type="application",
                app_tag="missing-element",
                path=path,
                path_nsmap=_PATH_NS,
            )
        pfx, _, name = (transport.text or "").strip().rpartition(":")
        if not self.https_ns or transport.nsmap.get(pfx or None) != self.https_ns or name != "https":
            module = self.core.schema.ns_to_module.get(self.https_ns, "")
            raise RpcError(
                "invalid-value",
                f"transport {(transport.text or '').strip()} is not supported ({module}:https is)",
                type="application",
                path=path + "/sn:transport",
                path_nsmap=_PATH_NS,
            )
        try:
            request = read_request(entry, running, _STREAM_ERR, _NOT_INPUT)
        except RpcError as err:
            raise _at(err, path) from None
        replay = entry.find(SN + "configured-replay") is not None
        source = child_text(entry, SN + "source-address")
        receivers: dict[str, tuple[str, Endpoint]] = {}
        for r in entry.iterfind(f"{SN}receivers/{SN}receiver"):
            rname = child_text(r, SN + "name") or ""
            ref = child_text(r, SNR + "receiver-instance-ref")
            if ref is None or ref not in instances:
                raise RpcError(
                    "data-missing",
                    f"receiver {rname!r} names no configured https receiver instance ({ref!r})",
                    type="application",
                    app_tag="instance-required",
                    path=f"{path}/sn:receivers/sn:receiver[sn:name={_quote(rname)}]/snr:receiver-instance-ref",
                    path_nsmap=_PATH_NS,
                )
            receivers[rname] = (ref, dataclasses.replace(instances[ref], source=source))
        terms = copy.deepcopy(entry)
        for r in terms.findall(SN + "receivers"):
            terms.remove(r)
        filters = running.find(SN + "filters")  # a filter by reference: its content is in the terms
        named = (
            terms.find(SN + "stream-filter-name") is not None
            or terms.find(YP + "selection-filter-ref") is not None
        )
        text = etree.tostring(terms) + (etree.tostring(filters) if named and filters is not None else b"")
        return Spec(sid, request, text, receivers, replay, child_text(entry, SN + "purpose"))

    # -- reconciling ---------------------------------------------------------------------------------------
    def _reconcile(self, specs: dict[int, Spec]) -> None:
        self.core.subscriptions.configured_ids = set(specs)
        for sid in [s for s in self.effect if s not in specs]:
            self._end(sid, "no-such-subscription")
        for sid, spec in specs.items():
            old = self.effect.get(sid)
            if old is None:
                self.effect[sid] = InEffect(spec)
                self._arm_stop(self.effect[sid])
                for rname in spec.receivers:
                    self._add_link(self.effect[sid], rname)
                continue
            modified = old.spec.terms != spec.terms
            old.spec = spec
            for rname, (link, dyn) in list(old.links.items()):
                if spec.receivers.get(rname) != (link.instance, link.endpoint):
                    del old.links[rname]
                    self._end_link(link, dyn, "no-such-subscription")
                elif modified and link.state == "disconnected":  # new terms: try that receiver again
                    del old.links[rname]
                    self._end_link(link, dyn, None)
                elif modified:
                    self._modify_link(old, link, dyn)
            if modified:
                old.concluded = False
                self._arm_stop(old)
            for rname in spec.receivers:
                if rname not in old.links:
                    self._add_link(old, rname)

    def _add_link(self, eff: InEffect, rname: str) -> None:
        spec = eff.spec
        instance, endpoint = spec.receivers[rname]
        link = Link(
            self.core,
            spec.id,
            rname,
            instance,
            endpoint,
            spec.request.encoding,
            started=self._started,
            on_active=self._active,
            on_suspend=self._suspended,
            on_resume=self._resumed,
            encode=self._encode,
        )
        dyn = Dynamic(spec.id, link, dataclasses.replace(spec.request))  # type: ignore[arg-type]
        self.core.subscriptions.check(dyn, _STREAM_ERR)
        eff.links[rname] = (link, dyn)
        if not eff.concluded:
            link.start()

    def _modify_link(self, eff: InEffect, link: Link, dyn: Dynamic) -> None:
        """New terms for a receiver that stays: the old producer stops, the new one starts (if the link
        is active), subscription-modified tells the receiver."""
        subs = self.core.subscriptions
        subs.pause(dyn)
        new = Dynamic(eff.spec.id, link, dataclasses.replace(eff.spec.request))  # type: ignore[arg-type]
        subs.check(new, _STREAM_ERR)
        eff.links[link.name] = (link, new)
        if link.state == "active":
            new.request.encoding = link.encodings[0]
            subs.state_notification(new, "subscription-modified", self._terms(eff, new))
            subs.start(new)  # an on-change one with sync-on-start: the new selection first

    def _end(self, sid: int, reason: str | None) -> None:
        eff = self.effect.pop(sid)
        if eff.stop_timer is not None:
            eff.stop_timer.cancel()
        for link, dyn in eff.links.values():
            self._end_link(link, dyn, reason)

    def _end_link(self, link: Link, dyn: Dynamic, reason: str | None) -> None:
        self.core.subscriptions.pause(dyn)
        last = None
        if reason is not None:
            note = (
                f'<subscription-terminated xmlns="{SN_NS}"><id>{dyn.id}</id>'
                f'<reason xmlns:sn="{SN_NS}">sn:{reason}</reason></subscription-terminated>'
            )
            last = notification(note.encode())
        self.core.spawn(link.stop(last), f"https-notif {link.name} ends")

    def _arm_stop(self, eff: InEffect) -> None:
        if eff.stop_timer is not None:
            eff.stop_timer.cancel()
            eff.stop_timer = None
        stop = eff.spec.request.stop_time
        if stop is not None:
            delay = max(0.0, (stop - ev.utcnow()).total_seconds())
            eff.stop_timer = self.core.event_loop().call_later(delay, self._complete, eff)

    def _complete(self, eff: InEffect) -> None:
        """stop-time reached: subscription-completed to the receivers; the subscription stays in
        running, concluded (RFC 8639 §2.5.5)."""
        eff.concluded, eff.stop_timer = True, None
        for link, dyn in eff.links.values():
            self.core.subscriptions.pause(dyn)
            if link.state == "active":
                self.core.subscriptions.state_notification(dyn, "subscription-completed")

    # -- the links' callbacks -----------------------------------------------------------------------------
    def _find(self, link: Link) -> tuple[InEffect, Dynamic] | None:
        eff = self.effect.get(link.sub_id)
        pair = eff.links.get(link.name) if eff is not None else None
        return (eff, pair[1]) if eff is not None and pair is not None and pair[0] is link else None

    def _started(self, link: Link) -> bytes:
        found = self._find(link)
        assert found is not None
        eff, dyn = found
        dyn.request.encoding = link.encodings[0]
        terms = self._terms(eff, dyn)
        body = f'<subscription-started xmlns="{SN_NS}"><id>{dyn.id}</id>{terms}</subscription-started>'
        return notification(body.encode())

    def _terms(self, eff: InEffect, dyn: Dynamic) -> str:
        out = self.core.subscriptions.policy(dyn)
        out += f'<transport xmlns:t="{self.https_ns}">t:https</transport>'
        if eff.spec.purpose:
            out += f"<purpose>{escape(eff.spec.purpose)}</purpose>"
        return out

    def _active(self, link: Link) -> None:
        found = self._find(link)
        if found is None or found[0].concluded:
            return
        eff, dyn = found
        if eff.spec.replay and dyn.stream is not None:
            dyn.request.replay_start = self.core.events.replay_start
        self.core.subscriptions.start(dyn)

    def _suspended(self, link: Link) -> None:
        found = self._find(link)
        if found is not None:
            self.core.subscriptions.pause(found[1])

    def _resumed(self, link: Link) -> None:
        found = self._find(link)
        if found is not None and not found[0].concluded:
            self.core.subscriptions.resume_one(found[1])

    def _encode(self, payload: bytes, encoding: str) -> bytes:
        if encoding == "encode-xml":
            return payload
        from server.restconf.subscribed import encode_event  # JSON as RESTCONF's subscriptions write it

        return encode_event(self.core.schema, payload, "json")

    # -- the reset action -----------------------------------------------------------------------------------
    def actions(self) -> dict[str, ActionHandler]:
        """The actions served here, by schema path (server/actions.py)."""
        return {RESET_PATH: self.reset}

    async def reset(self, sess: object, req: ActionRequest) -> bytes:
        """/sn:subscriptions/subscription/receivers/receiver/reset (RFC 8639 §2.5.1): the receiver goes
        back to connecting (https_notif.Link.reset); output `time`, when it did."""
        (sid,), (rname,) = req.keys("subscription"), req.keys("receiver")
        eff = self.effect.get(int(sid))
        pair = eff.links.get(rname) if eff is not None else None
        if pair is None:
            raise req.missing()
        at = await pair[0].reset()
        return f'<time xmlns="{SN_NS}">{ev.format_time(at)}</time>'.encode()

    # -- operational state --------------------------------------------------------------------------------
    def state(self) -> list[str]:
        """/sn:subscriptions/subscription entries: the state of each configured one and its receivers."""
        out = []
        for sid, eff in self.effect.items():
            rows = []
            for link, dyn in eff.links.values():
                excluded = dyn.stream.excluded if dyn.stream is not None else 0
                rows.append(
                    f"<receiver><name>{escape(link.name)}</name>"
                    f"<sent-event-records>{link.sent}</sent-event-records>"
                    f"<excluded-event-records>{excluded}</excluded-event-records><state>{link.state}</state>"
                    f'<dropped-event-records xmlns="{self.https_ns}">{link.dropped}</dropped-event-records>'
                    "</receiver>"
                )
            state = "concluded" if eff.concluded else "valid"
            out.append(
                f"<subscription><id>{sid}</id><configured-subscription-state>{state}</configured-subscription-state>"
                f"<receivers>{''.join(rows)}</receivers></subscription>"
            )
        return out


def _endpoint(https: etree._Element, ns: str) -> Endpoint:
    def text(name: str) -> str | None:
        return child_text(https, f"{{{ns}}}{name}")

    return Endpoint(
        host=text("remote-address") or "",
        port=int(text("remote-port") or 443),
        path=text("path") or "/",
        ca=text("ca-certificate"),
        cert=text("client-certificate"),
        key=text("client-key"),
    )


def _touched(txn: Transaction) -> bool:
    """Does the commit change /sn:subscriptions or /sn:filters? From the recorded diff when there is
    one: `txn.old` of an edit is a copy of running made on first use, which no commit should pay for."""
    if txn.changes is not None:
        return any(c.schema_path.startswith(_WATCHED) for c in txn.changes)
    return _fingerprint(txn.new) != _fingerprint(txn.old)


def _fingerprint(data: Forest) -> tuple[bytes, bytes]:
    """/sn:subscriptions and /sn:filters as bytes: a commit that changes neither costs this only."""
    subs, filters = data.find(SN + "subscriptions"), data.find(SN + "filters")
    return (
        b"" if subs is None else etree.tostring(subs),
        b"" if filters is None else etree.tostring(filters),
    )


def _path(sid: int) -> str:
    return f"/sn:subscriptions/sn:subscription[sn:id='{sid}']"


def _quote(value: str) -> str:
    return f"'{value}'" if "'" not in value else f'"{value}"'


def _at(err: RpcError, path: str) -> RpcError:
    """The subscription's error, its error-path the subscription entry (unless it names one)."""
    if err.path:
        return err
    return dataclasses.replace(err, path=path, path_nsmap=_PATH_NS)
