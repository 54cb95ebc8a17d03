"""Incremental validation gives whole-document libyang's verdicts (differential, Hypothesis), and
covers every cross-entry constraint of the module (derived from the schema)."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from server.datastore import validation_errors
from server.edit import EditEngine
from server.incremental import IncrementalChecker, cross_entry_constraints, plan
from server.oplog import KeyIndex, OpLog
from server.schema import Schema
from server.tree import Forest, view
from server.validation import Validator

M = "urn:mipha:yang:mipha-home-agent"
NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
SEQUENCES = int(__import__("os").environ.get("MIPHA_DIFF_SEQUENCES", "10000"))


@pytest.fixture(scope="module")
def env():
    validator = Validator()
    schema = Schema(validator.ctx)
    mods = tuple(m.name for m in schema.modules if m.implemented)
    return schema, validator, IncrementalChecker(schema, validator.ctx, mods), mods


def test_every_cross_entry_constraint_of_the_module_is_covered(env):
    _schema, validator, checker, mods = env
    found = cross_entry_constraints(validator.ctx, mods)
    # the module's known ones are found (the derivation works) ...
    kinds = {(c.kind, c.node.rsplit("/", 1)[-1], c.detail.split("(")[0][:14]) for c in found}
    assert ("unique", "mobile-node", "nai") in kinds and ("unique", "mobile-node", "home-address") in kinds
    assert ("leafref", "address-pool", "../../address-") in kinds
    assert any(c.kind == "must" and c.node.endswith("/range") for c in found)
    # ... and each is covered by the checker: a new one it cannot check fails here
    cov = plan(validator.ctx, mods)
    assert cov.uncovered == []
    assert set(cov.covered) == set(found)
    assert checker.complete


def test_an_uncovered_constraint_is_detected(tmp_path, env):
    """A module with a must that reads other list entries from outside them: reported uncovered."""
    (tmp_path / "t.yang").write_text(
        """module t { yang-version 1.1; namespace "urn:t"; prefix t;
          container top { list a { key n; leaf n { type string; } }
                          leaf total { type uint8; must "count(/t:top/t:a) < 5"; }
                          list b { key n; min-elements 1; leaf n { type string; } } } }"""
    )
    import libyang

    ctx = libyang.Context(str(tmp_path))
    ctx.load_module("t")
    cov = plan(ctx, ("t",))
    assert {c.kind for c in cov.uncovered} == {"must", "min-elements"}


# -- the differential test -------------------------------------------------------------------------
def _mn(name, ha=None, nai=None, pool=None, spi=None, key_ok=True):
    body = f"<name>{name}</name>"
    if nai is not None:
        body += f"<nai>{nai}</nai>"
    if ha is not None:
        body += f"<home-address>{ha}</home-address>"
    if pool is not None:
        body += f"<address-pool>{pool}</address-pool>"
    if spi is not None:
        key = ":".join(["ab"] * (16 if key_ok else 4))
        body += f"<security-association><spi>{spi}</spi><key>{key}</key></security-association>"
    return f"<mobile-node>{body}</mobile-node>"


def _pool(name, start, end):
    return f"<address-pool><name>{name}</name><range><start>{start}</start><end>{end}</end></range></address-pool>"


BASE = (
    f'<config xmlns="{NC}"><virtual-routers xmlns="{M}">'
    "<virtual-router><name>a</name><router-id>10.0.0.1</router-id><home-agent><address>10.0.0.1</address>"
    "</home-agent>"
    + _pool("p1", "10.1.0.1", "10.1.0.50")
    + _pool("p2", "10.2.0.1", "10.2.0.50")
    + _mn("m0", ha="10.0.0.10", nai="n0@x", spi=300)
    + _mn("m1", ha="10.0.0.11")
    + _mn("m2", nai="n2@x", pool="p1")
    + _mn("m3", nai="n3@x", pool="p2")
    + "</virtual-router>"
    "<virtual-router><name>b</name><home-agent><address>10.9.0.1</address></home-agent>"
    + _mn("m0", ha="10.0.0.10", nai="n0@x")
    + "</virtual-router></virtual-routers></config>"
)

NAMES = ["m0", "m1", "m2", "m3", "m4", "m5"]
ADDRS = [None, "10.0.0.10", "10.0.0.11", "10.0.0.12", "0.0.0.0", "10.0.0.300"]
NAIS = [None, "n0@x", "n2@x", "n4@x", "bad nai"]
POOLS = [None, "p1", "p2", "p3"]
SPIS = [None, 300, 301, 100]
OPS = ["merge", "replace", "create", "delete", "remove"]


def _mobile_node_edit(r: random.Random) -> str:
    op, name = r.choice(OPS), r.choice(NAMES)
    if op in ("delete", "remove"):
        return f'<mobile-node nc:operation="{op}"><name>{name}</name></mobile-node>'
    body = _mn(name, r.choice(ADDRS), r.choice(NAIS), r.choice(POOLS), r.choice(SPIS), r.random() < 0.7)
    return body.replace("<mobile-node>", f'<mobile-node nc:operation="{op}">', 1)


def _leaf_edit(r: random.Random) -> str:
    leaf = r.choice(["nai", "home-address", "address-pool"])
    op = r.choice(["delete", "remove"])
    return f'<mobile-node><name>{r.choice(NAMES)}</name><{leaf} nc:operation="{op}"/></mobile-node>'


def _pool_edit(r: random.Random) -> str:
    name = r.choice(["p1", "p2", "p3"])
    kind = r.choice(["delete", "remove", "create", "merge", "reversed"])
    if kind in ("delete", "remove"):
        return f'<address-pool nc:operation="{kind}"><name>{name}</name></address-pool>'
    a, b = r.randint(0, 3), r.randint(0, 3)
    start, end = f"10.{a}.0.1", f"10.{b}.0.40"
    if kind == "reversed":
        start, end = f"10.{a}.0.40", f"10.{a}.0.1"
    op = "create" if kind == "create" else "merge"
    return _pool(name, start, end).replace("<address-pool>", f'<address-pool nc:operation="{op}">', 1)


def _vr_edit(r: random.Random) -> str | None:
    return r.choice(
        [
            "<home-agent><address>0.0.0.0</address></home-agent>",
            '<home-agent><address nc:operation="remove"/></home-agent>',
            '<router-id nc:operation="remove"/>',
            "<router-id>10.0.0.2</router-id>",
            None,  # remove the whole virtual router
        ]
    )


def edit_doc(seed: int) -> str:
    """One random edit-config <config> (1-3 edits in one virtual router) from a seed Hypothesis drew:
    one draw per edit keeps 10,000 sequences affordable (Hypothesis' own drawing would dominate)."""
    r = random.Random(seed)
    vrn = r.choice(["a", "a", "a", "b"])
    kinds = [_mobile_node_edit, _mobile_node_edit, _leaf_edit, _pool_edit, _vr_edit]
    parts = [r.choice(kinds)(r) for _ in range(r.randint(1, 3))]
    if None in parts:
        inner = f'<virtual-router nc:operation="remove"><name>{vrn}</name></virtual-router>'
    else:
        inner = f"<virtual-router><name>{vrn}</name>{''.join(parts)}</virtual-router>"
    return f'<config xmlns="{NC}" xmlns:nc="{NC}"><virtual-routers xmlns="{M}">{inner}</virtual-routers></config>'


def _norm(errs):
    return sorted((e.tag, e.app_tag or "", e.path or "", e.message) for e in errs)


_BASE_FOREST = Forest.from_wrapper(etree.fromstring(BASE))
_stats = {"sequences": 0, "edits": 0, "invalid": 0, "partial": 0}


def _run_sequence(env, docs):
    schema, validator, checker, _ = env
    forest, keys = _BASE_FOREST.copy(), KeyIndex()
    for doc in docs:
        log = OpLog(keys)
        engine = EditEngine(schema, log=log)
        if engine.apply(forest, etree.fromstring(doc), "merge"):
            log.undo()  # the edit engine refused it (e.g. create of an existing node): not validation
            continue
        _stats["edits"] += 1
        partial = checker.partial(forest, log)
        full = validation_errors(validator, forest, schema)
        if partial is not None:
            _stats["partial"] += 1
            inc = validation_errors(validator, view(partial), schema) if partial else []
        else:
            inc = full
        assert _norm(inc) == _norm(full), doc
        if full:
            _stats["invalid"] += 1
            log.undo()  # a refused change leaves the datastore valid, as the server does
        keys.forget_small()
    _stats["sequences"] += 1


PER_EXAMPLE = 5  # sequences per Hypothesis example (its own per-example cost would double the time)


@settings(
    max_examples=SEQUENCES // PER_EXAMPLE,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.integers(0, 2**32), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def _differential(env, seeds):
    for seed in seeds:  # one sequence of 1-4 edits per seed
        r = random.Random(seed)
        _run_sequence(env, [edit_doc(r.randrange(2**32)) for _ in range(r.randint(1, 4))])


def test_incremental_verdicts_equal_whole_document_validation(env):
    t0 = time.monotonic()
    _differential(env)
    took = time.monotonic() - t0
    print(f"\n{_stats} in {took:.1f} s")
    assert _stats["sequences"] >= SEQUENCES
    # the generator reaches both verdicts, and the partial path (not only the whole-document fallback)
    assert _stats["invalid"] > 1000 and _stats["edits"] - _stats["invalid"] > 1000
    assert _stats["partial"] == _stats["edits"]


def test_a_duplicate_nai_against_an_untouched_entry_is_found_through_the_index(env):
    schema, validator, checker, _ = env
    forest, keys = _BASE_FOREST.copy(), KeyIndex()
    docs = [
        f'<config xmlns="{NC}"><virtual-routers xmlns="{M}"><virtual-router><name>a</name>'
        + _mn("m9", ha="10.0.0.99", nai="n3@x")
        + "</virtual-router></virtual-routers></config>",
    ]
    log = OpLog(keys)
    assert not EditEngine(schema, log=log).apply(forest, etree.fromstring(docs[0]), "merge")
    partial = checker.partial(forest, log)
    got = [etree.tostring(e) for e in partial]
    assert b"<name>m3</name>" in got[0]  # the NAI's holder joins (the list is short: taken whole)
    errs = validation_errors(validator, view(partial), schema)
    assert [(e.tag, e.app_tag) for e in errs] == [("operation-failed", "data-not-unique")]
    assert _norm(errs) == _norm(validation_errors(validator, forest, schema))


def test_removing_a_referenced_pool_reports_its_users(env):
    schema, validator, checker, _ = env
    forest, keys = _BASE_FOREST.copy(), KeyIndex()
    doc = (
        f'<config xmlns="{NC}" xmlns:nc="{NC}"><virtual-routers xmlns="{M}"><virtual-router><name>a</name>'
        '<address-pool nc:operation="delete"><name>p1</name></address-pool></virtual-router></virtual-routers></config>'
    )
    log = OpLog(keys)
    assert not EditEngine(schema, log=log).apply(forest, etree.fromstring(doc), "merge")
    errs = validation_errors(validator, view(checker.partial(forest, log)), schema)
    assert [(e.tag, e.app_tag, e.path) for e in errs] == [
        (
            "data-missing",
            "instance-required",
            "/mipha:virtual-routers/mipha:virtual-router[mipha:name='a']/mipha:mobile-node[mipha:name='m2']/mipha:address-pool",
        )
    ]
    assert _norm(errs) == _norm(validation_errors(validator, forest, schema))


def test_partial_document_of_one_node_among_many_is_small(env):
    schema, validator, checker, _ = env
    many = "".join(_mn(f"n{i}", ha=f"10.{i // 250 % 250}.{i % 250}.1", nai=f"u{i}@x") for i in range(3000))
    forest = Forest.from_wrapper(
        etree.fromstring(
            BASE.replace("</virtual-router><virtual-router>", many + "</virtual-router><virtual-router>", 1)
        )
    )
    keys = KeyIndex()
    doc = f'<config xmlns="{NC}"><virtual-routers xmlns="{M}"><virtual-router><name>a</name>{_mn("new", ha="10.200.0.1", nai="u7@x")}</virtual-router></virtual-routers></config>'
    log = OpLog(keys)
    assert not EditEngine(schema, log=log).apply(forest, etree.fromstring(doc), "merge")
    partial = checker.partial(forest, log)
    got = [e.findtext(f"{{{M}}}name") for e in partial[0].iter(f"{{{M}}}mobile-node")]
    # the new node, the NAI's holder, 3 untouched entries (the same unique-check regime as 3000)
    assert len(got) == 5 and "new" in got and "n7" in got
    assert _norm(validation_errors(validator, view(partial), schema)) == _norm(
        validation_errors(validator, forest, schema)
    )


def test_keys_and_values_that_share_an_index_slot_keep_their_verdicts(env, monkeypatch):
    """The key and value indexes file entries by a 30-bit hash: with every key and every value forced
    into one slot, lookups still tell them apart and no entry of another key or value is dropped."""
    import server.oplog

    monkeypatch.setattr(server.oplog, "_slot", lambda value: 7)
    monkeypatch.setattr(server.oplog, "_slot_of", lambda text: 7)
    before = dict(_stats)
    r = random.Random(20261204)
    for _ in range(300):
        _run_sequence(env, [edit_doc(r.randrange(2**32)) for _ in range(r.randint(2, 4))])
    assert _stats["invalid"] - before["invalid"] > 30  # unique and leafref violations among them
    assert _stats["partial"] - before["partial"] == _stats["edits"] - before["edits"]


def _apply_all(schema, docs):
    forest, keys = _BASE_FOREST.copy(), KeyIndex()
    for doc in docs:
        if EditEngine(schema, log=OpLog(keys)).apply(forest, etree.fromstring(doc), "merge"):
            continue
        keys.forget_small()
    return [etree.tostring(root, method="c14n") for root in forest]


def test_a_subtree_copied_through_the_parser_equals_its_deep_copy(env, monkeypatch):
    """A large new subtree is copied by serialising and parsing it (compact text nodes): forced on every
    copy, the same edits leave the same datastore as deep copies do."""
    import server.edit

    schema = env[0]
    r = random.Random(4122026)
    sequences = [[edit_doc(r.randrange(2**32)) for _ in range(r.randint(1, 4))] for _ in range(200)]
    sequences.append([BASE.replace("<virtual-router><name>a</name>", "<virtual-router><name>c</name>", 1)])
    monkeypatch.setattr(server.edit, "_LARGE_SUBTREE", lambda el: False)
    deep = [_apply_all(schema, docs) for docs in sequences]
    monkeypatch.setattr(server.edit, "_LARGE_SUBTREE", lambda el: True)
    parsed = [_apply_all(schema, docs) for docs in sequences]
    assert parsed == deep
    assert server.edit._copy(etree.fromstring(BASE)[0]).tail is None
