"""mipha/changes.py on the server's recorded diff: a leaf deleted inside a list entry is built from the
entry the diff names (Change.parent), never looked up by a walk of the list."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from nc_harness import Harness, edit, mn, vr

import mipha.changes
from mipha.changes import router_changes

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"


class Recorder:
    """A config subscriber keeping what the glue's conversion makes of each transaction."""

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def validate(self, txn) -> None:
        self.seen.append(router_changes(txn.diff, txn.new))

    def prepare(self, txn) -> None: ...
    def abort(self, txn) -> None: ...
    def apply(self, txn) -> None: ...


def test_a_leaf_deleted_in_an_entry_builds_that_entry_without_a_look_up(monkeypatch) -> None:
    rec = Recorder()
    h = Harness(subscribers=[rec])
    try:
        c = h.client()
        nodes = "".join(mn(f"mn{i}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(300))
        c.ok(edit(vr(nodes)))
        c.ok(edit(vr("<mobile-node><name>mn7</name><nai>seven@example.net</nai></mobile-node>")))
        assert rec.seen[-1]["default"].change.mobile_nodes["mn7"].nai == "seven@example.net"

        def walk(*args):
            raise AssertionError("the entry was looked up by a walk of the list")

        monkeypatch.setattr(mipha.changes, "_find_entry", walk)
        monkeypatch.setattr(mipha.changes, "_find_router", walk)
        gone = f"<mobile-node><name>mn7</name><nai xmlns:nc='{NC}' nc:operation='delete'/></mobile-node>"
        c.ok(edit(vr(gone)))
        change = rec.seen[-1]["default"].change
        assert list(change.mobile_nodes) == ["mn7"]
        node = change.mobile_nodes["mn7"]
        assert node.nai is None and str(node.home_address) == "10.1.0.8"
        # in one edit: an entry deleted whole, and a leaf of another entry
        c.ok(edit(vr("<mobile-node><name>mn9</name><nai>nine@example.net</nai></mobile-node>")))
        both = (
            f"<mobile-node xmlns:nc='{NC}' nc:operation='delete'><name>mn8</name></mobile-node>"
            f"<mobile-node><name>mn9</name><nai xmlns:nc='{NC}' nc:operation='remove'/></mobile-node>"
        )
        c.ok(edit(vr(both)))
        change = rec.seen[-1]["default"].change
        assert change.mobile_nodes["mn8"] is None
        assert change.mobile_nodes["mn9"].nai is None and change.mobile_nodes["mn9"].name == "mn9"
    finally:
        h.close()
