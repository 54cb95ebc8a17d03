"""RFC 8341 NACM: the /nacm configuration compiled once per change, and its three checks.

`/nacm` (ietf-netconf-acm) lives in running like any configuration. The first request after running
changed compiles it (`Policy`); each principal's group set gets a `View` holding only the rules of its
rule-lists, in order. A View decides, per schema node and access type, *statically* (the first
matching rule has no list-key predicate, or no rule matches and the defaults decide) or *dynamically*
(a path rule with predicates such as `[name='vr1']` comes first: the instance's keys decide).
Decisions are cached per schema node, so filtering a 100k-entry reply costs a few compiled
location paths over the tree (libxml2), not a rule evaluation per node; pre-serialised state (raw
splices) under a uniformly readable node is never opened.

Processing follows RFC 8341 §3.4: the superuser group (the recovery session, from the bootstrap) and
`enable-nacm false` bypass everything; groups come from the transport (the bootstrap users'
`groups`, when `enable-external-groups` is true) and from /nacm/groups; rule-lists and rules are
taken in order and the first match wins; without a match `nacm:default-deny-all` /
`default-deny-write` (inherited by descendants), kill-session and delete-config are denied, and
read-default / write-default / exec-default decide. A read-denied node is omitted with its
descendants; a list entry whose key is unreadable is omitted whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from lxml import etree

from server.errors import RpcError
from server.schema import Schema, SchemaNode
from server.schemapaths import ancestry, locator, node_at, walk
from server.tree import Forest
from server.xmlns import NC_NS

NACM_NS = "urn:ietf:params:xml:ns:yang:ietf-netconf-acm"
NACM_TAG = f"{{{NACM_NS}}}nacm"
READ, CREATE, UPDATE, DELETE, EXEC = 1, 2, 4, 8, 16
ALL = READ | CREATE | UPDATE | DELETE | EXEC
_OPS = {"read": READ, "create": CREATE, "update": UPDATE, "delete": DELETE, "exec": EXEC}
_NOTIFICATION_ENDS = {
    ("urn:ietf:params:xml:ns:netmod:notification", "replayComplete"),
    ("urn:ietf:params:xml:ns:netmod:notification", "notificationComplete"),
}
_STEP = re.compile(r"/(?:([\w.-]+):)?([\w.-]+)((?:\[[^\]]*\])*)")
_PRED = re.compile(r"\[\s*(?:(?:([\w.-]+):)?([\w.-]+)|(\.))\s*=\s*(?:'([^']*)'|\"([^\"]*)\")\s*\]")


@dataclass(frozen=True)
class Principal:
    """Who a session runs as: the SSH user and the groups the transport (bootstrap) gives it."""

    user: str
    groups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Step:
    """One path step: a node and the (namespace, name, value) predicates on its instance."""

    ns: str
    name: str
    preds: tuple[tuple[str | None, str, str], ...] = ()


@dataclass(frozen=True)
class Rule:
    name: str
    module: str  # "*" or a module name
    kind: str  # "any" | "rpc" | "notification" | "path"
    target: str = "*"  # rpc-name / notification-name
    steps: tuple[Step, ...] = ()
    ops: int = ALL
    permit: bool = False

    @property
    def dynamic(self) -> bool:
        return any(s.preds for s in self.steps)


@dataclass
class Policy:
    """The compiled /nacm configuration (defaults of ietf-netconf-acm when /nacm is absent)."""

    enabled: bool = True
    read_default: bool = True
    write_default: bool = False
    exec_default: bool = True
    external_groups: bool = True
    members: dict[str, set[str]] = field(default_factory=dict)  # user -> /nacm groups
    rule_lists: list[tuple[frozenset[str], tuple[Rule, ...]]] = field(default_factory=list)


@dataclass
class Counters:
    """The /nacm state counters (RFC 8341 §3.5.1: since the server started)."""

    denied_operations: int = 0
    denied_data_writes: int = 0
    denied_notifications: int = 0


# -- compiling /nacm ------------------------------------------------------------------------------------
def _text(el: etree._Element, name: str) -> str | None:
    c = el.find(f"{{{NACM_NS}}}{name}")
    return None if c is None else (c.text or "").strip()


def _flag(el: etree._Element, name: str, default: bool, yes: str = "true") -> bool:
    t = _text(el, name)
    return default if t is None else t == yes


def compile_policy(nacm: etree._Element | None, schema: Schema) -> Policy:
    p = Policy()
    if nacm is None:
        return p
    p.enabled = _flag(nacm, "enable-nacm", True)
    p.read_default = _flag(nacm, "read-default", True, "permit")
    p.write_default = _flag(nacm, "write-default", False, "permit")
    p.exec_default = _flag(nacm, "exec-default", True, "permit")
    p.external_groups = _flag(nacm, "enable-external-groups", True)
    for g in nacm.iterfind(f"{{{NACM_NS}}}groups/{{{NACM_NS}}}group"):
        for u in g.iterfind(f"{{{NACM_NS}}}user-name"):
            p.members.setdefault((u.text or "").strip(), set()).add(_text(g, "name") or "")
    for rl in nacm.iterfind(f"{{{NACM_NS}}}rule-list"):
        groups = frozenset((g.text or "").strip() for g in rl.iterfind(f"{{{NACM_NS}}}group"))
        rules = tuple(_rule(r, schema) for r in rl.iterfind(f"{{{NACM_NS}}}rule"))
        p.rule_lists.append((groups, rules))
    return p


def _rule(el: etree._Element, schema: Schema) -> Rule:
    ops_text = _text(el, "access-operations") or "*"
    ops = ALL if ops_text == "*" else sum(_OPS.get(o, 0) for o in set(ops_text.split()))
    rule = Rule(
        name=_text(el, "name") or "",
        module=_text(el, "module-name") or "*",
        kind="any",
        ops=ops,
        permit=_text(el, "action") == "permit",
    )
    for kind, leaf in (("rpc", "rpc-name"), ("notification", "notification-name")):
        if (t := _text(el, leaf)) is not None:
            return replace(rule, kind=kind, target=t)
    path_el = el.find(f"{{{NACM_NS}}}path")
    if path_el is not None:
        steps = parse_path((path_el.text or "").strip(), path_el.nsmap, schema)
        return replace(rule, kind="path", steps=steps)
    return rule


def parse_path(text: str, nsmap: dict, schema: Schema) -> tuple[Step, ...]:
    """An instance-identifier (`/m:a/m:b[m:k='v']/m:c`): prefixes from the XML scope of the leaf, else
    a module's prefix or name; an unprefixed step keeps its parent's namespace. A path that names no
    schema node matches nothing (compiled to an impossible step)."""

    def ns_of(pfx: str | None, inherited: str | None) -> str | None:
        if pfx is None:
            return inherited
        if pfx in nsmap and pfx is not None:
            return nsmap[pfx]
        if pfx in schema.module_to_ns:
            return schema.module_to_ns[pfx]
        mod = next((m for m, p in schema.module_prefix.items() if p == pfx), None)
        return schema.module_to_ns.get(mod) if mod else None

    steps: list[Step] = []
    ns: str | None = None
    pos = 0
    text = text.strip()
    if text in ("", "/"):
        return ()
    while pos < len(text):
        m = _STEP.match(text, pos)
        if m is None:
            return (Step("", "\0invalid"),)
        ns = ns_of(m.group(1), ns)
        if ns is None:
            return (Step("", "\0invalid"),)
        preds: list[tuple[str | None, str, str]] = []
        for pm in _PRED.finditer(m.group(3)):
            value = pm.group(4) if pm.group(4) is not None else pm.group(5)
            if pm.group(3):
                preds.append((None, ".", value))
            else:
                preds.append((ns_of(pm.group(1), ns), pm.group(2), value))
        steps.append(Step(ns, m.group(2), tuple(preds)))
        pos = m.end()
    return tuple(steps)


# -- one principal's view ------------------------------------------------------------------------------
PERMIT, DENY, DYNAMIC = 1, 0, 2


@dataclass
class ReadPlan:
    """How one view filters a reply: whole top-level trees dropped, tags stripped in C (every schema
    node with that tag is unreadable), and located nodes (a compiled path each) to drop or decide."""

    drop_roots: set[str] = field(default_factory=set)
    strip: dict[str, list[str]] = field(default_factory=dict)  # root tag -> tags
    located: list[tuple[str, etree.XPath, SchemaNode, int]] = field(default_factory=list)
    state_below: bool = False  # a decision concerns config false nodes (raw content may hold them)

    @property
    def empty(self) -> bool:
        return not (self.drop_roots or self.strip or self.located)


def _tag(sn: SchemaNode) -> str:
    return f"{{{sn.ns}}}{sn.name}"


class View:
    """The rules that apply to one group set, with per-schema-node decisions cached."""

    def __init__(self, nacm: Nacm, policy: Policy, groups: set[str]) -> None:
        self.nacm, self.policy = nacm, policy
        self.rules = [r for gs, rules in policy.rule_lists if "*" in gs or gs & groups for r in rules]
        self._static: dict[tuple[int, int], tuple[int, list[Rule], bool]] = {}
        self._ops: dict[tuple[str, str], bool] = {}
        self._read_plan: ReadPlan | None = None
        self._whole: dict[tuple[tuple[str, str], ...], bool] = {}

    # rpcs and notifications: the rules whose type matches, first one decides
    def may_call(self, ns: str, name: str) -> bool:
        got = self._ops.get((ns, name))
        if got is None:
            mod = self.nacm.schema.ns_to_module.get(ns, "")
            rule = self._first(EXEC, mod, "rpc", name)
            if rule is not None:
                got = rule.permit
            elif (ns, name) in self.nacm.denied_rpcs:
                got = False
            else:
                got = self.policy.exec_default
            self._ops[(ns, name)] = got
        return got

    def may_receive(self, ns: str, name: str) -> bool:
        key = ("notification:" + ns, name)
        got = self._ops.get(key)
        if got is None:
            mod = self.nacm.schema.ns_to_module.get(ns, "")
            rule = self._first(READ, mod, "notification", name)
            got = rule.permit if rule is not None else self.policy.read_default
            self._ops[key] = got
        return got

    def _first(self, op: int, module: str, kind: str, name: str) -> Rule | None:
        for r in self.rules:
            if (
                r.ops & op
                and r.module in ("*", module)
                and (r.kind == "any" or (r.kind == kind and r.target in ("*", name)))
            ):
                return r
        return None

    # data nodes
    def static(self, sn: SchemaNode, op: int) -> tuple[int, list[Rule], bool]:
        """(PERMIT | DENY | DYNAMIC, the candidate rules in order, the default when none matches)."""
        key = (id(sn), op)
        got = self._static.get(key)
        if got is None:
            chain = ancestry(sn)
            cands = [
                r
                for r in self.rules
                if r.ops & op
                and r.module in ("*", sn.module)
                and (r.kind == "any" or (r.kind == "path" and _prefix_of(r.steps, chain)))
            ]
            default = self._default(chain, op)
            state = PERMIT if default else DENY
            for r in cands:
                if r.dynamic:
                    state = DYNAMIC
                    break
                state = PERMIT if r.permit else DENY
                break
            if op == READ and state != DENY and sn.kind == "list":
                for k in sn.keys:  # an entry whose key may not be read is not shown at all
                    ks = sn.children.get((sn.ns, k))
                    kstate = self.static(ks, op)[0] if ks is not None else PERMIT
                    if kstate == DENY:
                        state = DENY
                    elif kstate == DYNAMIC:
                        state = DYNAMIC
            got = self._static[key] = (state, cands, default)
        return got

    def _default(self, chain: list[SchemaNode], op: int) -> bool:
        if any(n.deny_all for n in chain):
            return False
        if op == EXEC:  # an action (RFC 8341 §3.4.5): exec-default, as for a protocol operation
            return self.policy.exec_default
        if op != READ:
            return not any(n.deny_write for n in chain) and self.policy.write_default
        return self.policy.read_default

    def decide(self, sn: SchemaNode, op: int, el: etree._Element | None) -> bool:
        """May `op` be done on instance `el` of `sn` (its ancestors give the path rules' keys)?"""
        state, cands, default = self.static(sn, op)
        if state != DYNAMIC:
            return state == PERMIT
        chain = _instance_chain(el, len(ancestry(sn))) if el is not None else None
        for r in cands:
            if not r.dynamic or (chain is not None and _preds_match(r.steps, chain)):
                return r.permit
        if op == READ and sn.kind == "list" and el is not None:
            for k in sn.keys:
                ks = sn.children.get((sn.ns, k))
                kel = el.find(f"{{{sn.ns}}}{k}")
                if ks is not None and kel is not None and not self.decide(ks, op, kel):
                    return False
        return default

    # reading: which schema nodes to look at, found once per view
    def read_plan(self) -> ReadPlan:
        """Where this view's read decisions differ from the parent's (or depend on the instance)."""
        if self._read_plan is None:
            plan = ReadPlan()
            for root in self.nacm.schema.roots.values():
                rtag = f"{{{root.ns}}}{root.name}"
                if self.static(root, READ)[0] == DENY:
                    plan.drop_roots.add(rtag)
                    continue
                denied: dict[str, bool] = {}  # tag -> every schema node with it is unreadable
                found = []
                for sn in walk(root):
                    got = self.static(sn, READ)
                    parent = self.static(sn.parent, READ) if sn.parent is not None else (PERMIT, [], True)
                    gone = got[0] == DENY or (sn.parent is not None and denied.get(_tag(sn.parent)) is True)
                    denied[_tag(sn)] = denied.get(_tag(sn), True) and gone
                    if got[0] == DYNAMIC and got == parent and not _keys_differ(self, sn):
                        continue  # decided by the same rules on the same ancestors as its parent
                    if (got[0] == DENY and parent[0] != DENY) or got[0] == DYNAMIC:
                        found.append((rtag, sn, got[0]))
                for rtag, sn, state in found:
                    if state == DENY and denied[_tag(sn)]:  # its tag is nowhere readable: removed in C
                        plan.strip.setdefault(rtag, []).append(_tag(sn))
                    else:
                        plan.located.append((rtag, locator(ancestry(sn)), sn, state))
                    plan.state_below |= any(not n.config for n in walk(sn))
            self._read_plan = plan
        return self._read_plan

    def reads_whole(self, spath: tuple[tuple[str, str], ...]) -> bool:
        """Does this view read every instance of the schema node at `spath` as it is? True when no
        part of the read plan touches the node, its ancestors or its descendants: the push feed then
        sends a change as it came, without building a tree to prune (a check per change, cached)."""
        got = self._whole.get(spath)
        if got is None:
            got = self._whole[spath] = self._untouched(spath)
        return got

    def _untouched(self, spath: tuple[tuple[str, str], ...]) -> bool:
        plan = self.read_plan()
        rtag = f"{{{spath[0][0]}}}{spath[0][1]}"
        node = node_at(self.nacm.schema, spath)
        if node is None or rtag in plan.drop_roots:
            return False
        nodes = [*ancestry(node), *walk(node)]
        if {_tag(n) for n in nodes} & set(plan.strip.get(rtag, ())):
            return False
        ids = {id(n) for n in nodes}
        return not any(r == rtag and id(sn) in ids for r, _, sn, _ in plan.located)

    def hides_any(self, data: Forest) -> bool:
        plan = self.read_plan()
        for root in data:
            if root.tag in plan.drop_roots:
                return True
            for tag in plan.strip.get(root.tag, ()):
                if next(root.iter(tag), None) is not None:
                    return True
            for rtag, xp, sn, state in plan.located:
                if root.tag != rtag:
                    continue
                if any(state == DENY or not self.decide(sn, READ, el) for el in xp(root)):
                    return True
        return False

    def prune(self, data: Forest, raw=None) -> Forest:
        """Remove what this view may not read (mutates `data`); raw content under a node whose subtree
        is not uniformly readable is parsed into elements first (see `_open_raw`)."""
        plan = self.read_plan()
        if plan.empty:
            return data
        if raw and plan.state_below:
            self._open_raw(data, raw)
        for root in list(data):
            if root.tag in plan.drop_roots:
                data.remove(root)
                continue
            doomed = [
                el
                for rtag, xp, sn, state in plan.located
                if root.tag == rtag
                for el in xp(root)
                if state == DENY or not self.decide(sn, READ, el)
            ]
            for el in doomed:
                parent = el.getparent()
                if parent is not None:
                    parent.remove(el)
                elif el is root:
                    data.remove(root)
            tags = plan.strip.get(root.tag)
            if tags:
                etree.strip_elements(root, *tags, with_tail=False)
        return data

    def _open_raw(self, data: Forest, raw) -> None:
        plan = self.read_plan()
        planned = {id(e[2]) for e in plan.located}
        stripped = {t for tags in plan.strip.values() for t in tags}
        for root in data:
            for el in raw.placeholders(root):
                sn = self.nacm.schema_of(el)
                if sn is None or not any(id(n) in planned or _tag(n) in stripped for n in walk(sn)):
                    continue  # uniformly readable below: the bytes go out as they are
                raw.materialize(el)

    # writing
    def check_write(self, changes: Iterator[tuple[SchemaNode, int, etree._Element]]) -> None:
        for sn, op, el in changes:
            if not self.decide(sn, op, el):
                what = {CREATE: "create", UPDATE: "update", DELETE: "delete"}[op]
                raise RpcError(
                    "access-denied",
                    f"{what} of {sn.name} is not allowed for this user",
                    type="application",
                    path=instance_path(el, self.nacm.schema),
                    path_nsmap=instance_nsmap(el, self.nacm.schema),
                )


def _keys_differ(view: View, sn: SchemaNode) -> bool:
    if sn.kind != "list":
        return False
    mine = view.static(sn, READ)
    return any(view.static(k, READ) != mine for k in sn.children.values() if k.name in sn.keys)


def _prefix_of(steps: tuple[Step, ...], chain: list[SchemaNode]) -> bool:
    if len(steps) > len(chain):
        return False
    return all(s.ns == n.ns and s.name == n.name for s, n in zip(steps, chain, strict=False))


def _instance_chain(el: etree._Element, depth: int) -> list[etree._Element]:
    chain = [el]
    for anc in el.iterancestors():
        if len(chain) == depth:
            break
        chain.append(anc)
    chain.reverse()
    return chain


def _preds_match(steps: tuple[Step, ...], chain: list[etree._Element]) -> bool:
    for step, el in zip(steps, chain, strict=False):
        for ns, name, value in step.preds:
            got = (el.text or "").strip() if name == "." else (el.findtext(f"{{{ns}}}{name}") or "").strip()
            if got != value:
                return False
    return True


def instance_path(el: etree._Element, schema: Schema, depth: int | None = None) -> str:
    """The instance-identifier of `el`, list keys included (the error-path of a denied write).
    `depth`: how many elements from the top-level data node down to `el` (when `el` sits in a
    wrapper, as in an <action> request); default all of its ancestors."""
    steps = []
    sn: SchemaNode | None = None
    chain = [*reversed(list(el.iterancestors())), el]
    if depth is not None:
        chain = chain[-depth:]
    for e in chain:
        q = etree.QName(e)
        qn = (q.namespace, q.localname)
        sn = schema.roots.get(qn) if sn is None else sn.children.get(qn, sn.actions.get(qn))
        pfx = schema.module_prefix.get(schema.ns_to_module.get(q.namespace or "", ""), "ns")
        preds = ""
        if sn is not None and sn.kind == "list":
            for k in sn.keys:
                v = e.findtext(f"{{{sn.ns}}}{k}") or ""
                preds += f"[{pfx}:{k}='{v}']" if "'" not in v else f'[{pfx}:{k}="{v}"]'
        steps.append(f"/{pfx}:{q.localname}{preds}")
        if sn is None:
            break
    return "".join(steps)


def instance_nsmap(el: etree._Element, schema: Schema) -> dict[str, str]:
    out = {}
    for e in [el, *el.iterancestors()]:
        ns = etree.QName(e).namespace or ""
        mod = schema.ns_to_module.get(ns)
        if mod:
            out[schema.module_prefix[mod]] = ns
    return out


# -- the server's NACM ---------------------------------------------------------------------------------
class Nacm:
    """Access decisions for every session; the policy is recompiled when running's /nacm changed."""

    def __init__(
        self,
        schema: Schema,
        superuser_group: str = "admin",
        running: Callable[[], Forest] | None = None,
        generation: Callable[[], int] | None = None,
    ) -> None:
        self.schema = schema
        self.superuser_group = superuser_group
        self._running = running or Forest
        self._generation = generation or (lambda: 0)  # running changes in place: its change count
        self.counters = Counters()
        self._seen: tuple[int, int, int] | None = None  # (id of running, of its /nacm, generation)
        self._source: bytes | None = None
        self._policy = Policy()
        self._views: dict[frozenset[str], View] = {}
        self.compilations = 0
        # protocol operations: those whose schema carries default-deny-all, plus the two that RFC 8341
        # §3.2.4 restricts by default although ietf-netconf (2011) predates the extension
        self.denied_rpcs: set[tuple[str, str]] = {(NC_NS, "kill-session"), (NC_NS, "delete-config")}
        from _libyang import lib  # rpc schema nodes are not data nodes: read them here

        for mod in schema.ctx:
            if not mod.implemented():
                continue
            for rpc in mod.children(types=(lib.LYS_RPC,)):
                if any(
                    e.name() == "default-deny-all" and e.module().name() == "ietf-netconf-acm"
                    for e in rpc.extensions()
                ):
                    self.denied_rpcs.add((schema.module_to_ns[mod.name()], rpc.name()))

    # -- policy ---------------------------------------------------------------------------------------
    def policy(self) -> Policy:
        running = self._running()
        el = running.find(NACM_TAG)
        seen = (id(running), id(el), self._generation())
        if seen != self._seen:
            source = etree.tostring(el) if el is not None else None
            if source != self._source:
                self._policy = compile_policy(el, self.schema)
                self._views.clear()
                self.compilations += 1
                self._source = source
            self._seen = seen
        return self._policy

    def is_superuser(self, who: Principal) -> bool:
        return self.superuser_group in who.groups

    def view(self, who: Principal) -> View | None:
        """None: full access (the superuser group, or NACM disabled)."""
        if self.is_superuser(who):
            return None
        policy = self.policy()
        if not policy.enabled:
            return None
        groups = set(policy.members.get(who.user, ()))
        if policy.external_groups:
            groups |= who.groups
        key = frozenset(groups)
        v = self._views.get(key)
        if v is None:
            v = self._views[key] = View(self, policy, groups)
        return v

    def schema_of(self, el: etree._Element) -> SchemaNode | None:
        chain = [*reversed(list(el.iterancestors())), el]
        q = etree.QName(chain[0])
        sn = self.schema.roots.get((q.namespace, q.localname))
        for e in chain[1:]:
            if sn is None:
                return None
            q = etree.QName(e)
            sn = sn.children.get((q.namespace, q.localname))
        return sn

    # -- the checks -----------------------------------------------------------------------------------
    def may_call(self, who: Principal, op: tuple[str, str]) -> bool:
        """RFC 8341 §3.4.4; a denial counts in denied-operations."""
        if op == (NC_NS, "close-session"):
            return True
        v = self.view(who)
        if v is None or v.may_call(*op):
            return True
        self.counters.denied_operations += 1
        return False

    def check_action(self, who: Principal, action: SchemaNode, el: etree._Element) -> None:
        """RFC 8341 §3.4.5 for a YANG 1.1 action: read access to every ancestor data node instance of
        the action and exec access to the action node itself. `el` is the action's element in the
        request (its ancestors name the instance, list keys included). Raises access-denied (counted
        in denied-operations) with the error-path of the node refused."""
        v = self.view(who)
        if v is None:
            return
        nodes = ancestry(action)
        for depth, (sn, inst) in enumerate(zip(nodes, _instance_chain(el, len(nodes)), strict=True), 1):
            if not v.decide(sn, EXEC if sn is action else READ, inst):
                self.counters.denied_operations += 1
                what = "execution of" if sn is action else "read access to"
                raise RpcError(
                    "access-denied",
                    f"{what} {sn.name} is not allowed for this user",
                    type="application",
                    path=instance_path(inst, self.schema, depth),
                    path_nsmap=instance_nsmap(inst, self.schema),
                )

    def may_receive(self, who: Principal, body: etree._Element) -> bool:
        """RFC 8341 §3.4.6; a dropped notification counts in denied-notifications."""
        q = etree.QName(body)
        if (q.namespace, q.localname) in _NOTIFICATION_ENDS:
            return True
        v = self.view(who)
        if v is None or v.may_receive(q.namespace or "", q.localname):
            return True
        self.counters.denied_notifications += 1
        return False

    def may_write(self, who: Principal, sn: SchemaNode) -> bool:
        """The edit engine's per-node hook: writes are checked on the edit's effect (`check_write`)."""
        return True

    def reads_all(self, who: Principal, sn: SchemaNode) -> bool:
        """May this principal read every instance of `sn`, of its ancestors and of all below it, by
        the rules alone (no instance-dependent rule)?  A read of such a subtree needs no pruning."""
        v = self.view(who)
        return v is None or all(v.static(n, READ)[0] == PERMIT for n in (*ancestry(sn), *walk(sn)))

    def hides_any(self, who: Principal, data: Forest) -> bool:
        """Does `data` hold a node this principal may not read?"""
        v = self.view(who)
        return v is not None and v.hides_any(data)

    def prune(self, who: Principal, data: Forest, raw=None) -> Forest:
        """Remove the nodes the principal may not read (mutates and returns `data`)."""
        v = self.view(who)
        return data if v is None else v.prune(data, raw)

    def check_write(
        self, who: Principal, before: Forest, after: Forest, request: etree._Element | None = None
    ) -> None:
        """RFC 8341 §3.4.5 on the effective change from `before` to `after` (only the subtrees the
        request names are compared when given). Raises access-denied; counts in denied-data-writes."""
        v = self.view(who)
        if v is None:
            return
        try:
            v.check_write(changes(self.schema, before, after, request))
        except RpcError:
            self.counters.denied_data_writes += 1
            raise

    def writes_checked(self, who: Principal) -> bool:
        """Do rules apply to this principal's writes (False: `check_write*` would pass anything)?"""
        return self.view(who) is not None

    def check_write_items(
        self, who: Principal, items: Iterator[tuple[SchemaNode, int, etree._Element]]
    ) -> None:
        """`check_write` on (schema node, CREATE | UPDATE | DELETE, instance) items (an in-place edit's
        recorded change, see `nacm_items`)."""
        v = self.view(who)
        if v is None:
            return
        try:
            v.check_write(items)
        except RpcError:
            self.counters.denied_data_writes += 1
            raise

    def state(self) -> etree._Element:
        """The config false counters of /nacm."""
        top = etree.Element(NACM_TAG, nsmap={None: NACM_NS})
        c = self.counters
        for name, value in (
            ("denied-operations", c.denied_operations),
            ("denied-data-writes", c.denied_data_writes),
            ("denied-notifications", c.denied_notifications),
        ):
            etree.SubElement(top, f"{{{NACM_NS}}}{name}").text = str(value)
        return top


# -- the effective change of an edit ----------------------------------------------------------------------
def _key(el: etree._Element, sn: SchemaNode) -> tuple:
    if sn.kind == "leaf-list":
        return (el.tag, (el.text or "").strip())
    if sn.kind == "list":
        return (el.tag, *((el.findtext(f"{{{sn.ns}}}{k}") or "").strip() for k in sn.keys))
    return (el.tag,)


def _child_sn(parent: SchemaNode | None, el: etree._Element, schema: Schema) -> SchemaNode | None:
    q = etree.QName(el)
    if parent is None:
        return schema.roots.get((q.namespace, q.localname))
    return parent.children.get((q.namespace, q.localname))


def _index(parent, psn: SchemaNode | None, schema: Schema) -> dict[tuple, tuple[etree._Element, SchemaNode]]:
    out = {}
    for el in parent:
        if isinstance(el.tag, str) and (sn := _child_sn(psn, el, schema)) is not None:
            out[_key(el, sn)] = (el, sn)
    return out


_FINDERS: dict[int, etree.XPath] = {}


def _find(parent, sn: SchemaNode, key: tuple) -> etree._Element | None:
    """The child of `parent` with this key, found in C (a list of 100k entries is not walked here)."""
    if isinstance(parent, Forest):
        return next((r for r in parent if r.tag == key[0]), None)
    if sn.kind not in ("list", "leaf-list"):
        return parent.find(key[0])
    xp = _FINDERS.get(id(sn))
    if xp is None:
        conds = ["$v0=."] if sn.kind == "leaf-list" else [f"m:{k}=$v{i}" for i, k in enumerate(sn.keys)]
        xp = _FINDERS[id(sn)] = etree.XPath(f"m:{sn.name}[{' and '.join(conds)}]", namespaces={"m": sn.ns})
    got = xp(parent, **{f"v{i}": v for i, v in enumerate(key[1:])})
    return got[0] if got else None


def changes(
    schema: Schema, before: Forest, after: Forest, request: etree._Element | None
) -> Iterator[tuple[SchemaNode, int, etree._Element]]:
    """(schema node, CREATE | UPDATE | DELETE, instance) for every node the edit changes. With a
    request (a merge-style <config>), only the subtrees it names are compared; an element with an
    nc:operation other than merge has its whole subtree compared."""
    yield from _diff(before, after, None, schema, request)


def _pairs(old_parent, new_parent, psn, schema, request):
    if request is None:
        old, new = _index(old_parent, psn, schema), _index(new_parent, psn, schema)
        for k in [*new, *(k for k in old if k not in new)]:
            o, n = old.get(k), new.get(k)
            yield (o[0] if o else None), (n[0] if n else None), (n or o)[1], None
        return
    for r in request:
        if not isinstance(r.tag, str) or (sn := _child_sn(psn, r, schema)) is None:
            continue
        key = _key(r, sn)
        yield _find(old_parent, sn, key), _find(new_parent, sn, key), sn, r


def _diff(old_parent, new_parent, psn, schema, request) -> Iterator:
    for o, n, sn, req in _pairs(old_parent, new_parent, psn, schema, request):
        if o is None and n is None:
            continue
        if o is None:
            yield from _subtree(sn, n, CREATE)
        elif n is None:
            yield from _subtree(sn, o, DELETE)
        elif sn.kind in ("leaf", "leaf-list", "anydata"):
            if sn.kind != "leaf-list" and (o.text or "").strip() != (n.text or "").strip():
                yield sn, UPDATE, n
        else:
            merge = req is not None and req.get(f"{{{NC_NS}}}operation") in (None, "merge") and len(req)
            yield from _diff(o, n, sn, schema, req if merge else None)


def nacm_items(schema: Schema, diff, side: str) -> Iterator[tuple[SchemaNode, int, etree._Element]]:
    """The write-check items of a keyed diff (server.subscribers.Change list): `side` "old" for the
    deletions (their nodes attached again), "new" for creations and modifications."""
    for c in diff:
        el = c.old if side == "old" else c.new
        if el is None:
            continue
        sn: SchemaNode | None = None
        for e in [*reversed(list(el.iterancestors())), el]:
            q = etree.QName(e)
            sn = (
                schema.roots.get((q.namespace, q.localname))
                if sn is None
                else sn.children.get((q.namespace, q.localname))
            )
            if sn is None:
                break
        if sn is None:
            continue
        if c.op == "modified":
            yield sn, UPDATE, el
        else:
            yield from _subtree(sn, el, CREATE if c.op == "created" else DELETE)


def _subtree(sn: SchemaNode, el: etree._Element, op: int) -> Iterator[tuple[SchemaNode, int, etree._Element]]:
    yield sn, op, el
    for c in el:
        if isinstance(c.tag, str):
            q = etree.QName(c)
            csn = sn.children.get((q.namespace, q.localname))
            if csn is not None:
                yield from _subtree(csn, c, op)
