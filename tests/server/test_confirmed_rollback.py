"""The confirmed commit's rollback point is a change set (server/confirmed.py, Datastores.begin_rollback):
a rollback hands the subscribers the inverse of what was committed, not a diff of two whole trees, and
rollback.xml names a commit of the journal instead of holding a copy of running."""

from __future__ import annotations

from nc_harness import HA, Harness, cfg, edit, mn, vr

NC = "urn:ietf:params:xml:ns:netconf:base:1.0"
NODES = 2_000


class Recorder:
    """A config subscriber keeping each transaction's diff as (op, schema path) pairs."""

    def __init__(self) -> None:
        self.diffs: list[list[tuple[str, str]]] = []

    def validate(self, txn) -> None:
        self.diffs.append([(ch.op, ch.schema_path.rpartition(":")[2]) for ch in txn.diff])

    def prepare(self, txn) -> None: ...
    def abort(self, txn) -> None: ...
    def apply(self, txn) -> None: ...


def many() -> str:
    return "".join(mn(f"n{i}", f"10.{1 + i // 60000}.{i // 250 % 240}.{i % 250 + 1}") for i in range(NODES))


def running_names(c) -> list[str]:
    d = c.data("<get-config><source><running/></source></get-config>")
    return [e.text for e in d.iterfind(".//{urn:mipha:yang:mipha-home-agent}mobile-node/{*}name")]


def test_cancel_hands_back_the_inverse_of_what_was_committed(tmp_path) -> None:
    rec = Recorder()
    h = Harness(tmp_path, subscribers=[rec])
    try:
        c = h.client()
        c.ok(edit(vr(HA + many())))
        before = running_names(c)
        c.ok(edit(vr(mn("added", "10.99.0.1")), target="candidate"))
        gone = f"<mobile-node xmlns:nc='{NC}' nc:operation='delete'><name>n5</name></mobile-node>"
        c.ok(edit(vr(gone), target="candidate"))
        c.ok("<commit><confirmed/><persist>p1</persist></commit>")
        marker = (tmp_path / "rollback.xml").read_bytes()
        assert marker.startswith(b"<!-- rollback-to journal-seq ") and len(marker) < 100  # not a copy
        # a change straight into running meanwhile is rolled back too (RFC 6241 §8.4)
        c.ok(edit(vr("<mobile-node><name>n7</name><nai>seven@example.net</nai></mobile-node>")))
        c.ok("<cancel-commit><persist-id>p1</persist-id></cancel-commit>")
        assert sorted(rec.diffs[-1]) == [
            ("created", "mobile-node"),
            ("deleted", "mobile-node"),
            ("deleted", "nai"),
        ]
        assert running_names(c) == before
        assert not (tmp_path / "rollback.xml").exists()
    finally:
        h.close()
    h = Harness(tmp_path)  # what the journal replays is the rolled back configuration (ordered-by system)
    try:
        assert sorted(running_names(h.client())) == sorted(before)
    finally:
        h.close()


def test_a_stop_before_confirmation_restarts_from_the_journal_position(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        c = h.client()
        c.ok(edit(vr(HA + many())))
        before = running_names(c)
        c.ok(edit(vr(mn("unconfirmed", "10.99.0.2")), target="candidate"))
        c.ok("<commit><confirmed/><persist>p2</persist></commit>")
        c.ok(edit(vr(mn("also-unconfirmed", "10.99.0.3"))))
        assert len((tmp_path / "rollback.xml").read_bytes()) < 100
    finally:
        h.close()  # the server stops before anyone confirms
    h = Harness(tmp_path)
    try:
        assert running_names(h.client()) == before
        assert not (tmp_path / "rollback.xml").exists()
    finally:
        h.close()
    h = Harness(tmp_path)  # and it stays so (the journal was cut at the rollback point)
    try:
        assert running_names(h.client()) == before
    finally:
        h.close()


def test_running_replaced_whole_meanwhile_is_rolled_back_whole(tmp_path) -> None:
    rec = Recorder()
    h = Harness(tmp_path, subscribers=[rec])
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
        c.ok(edit(vr(mn("b", "10.0.0.6")), target="candidate"))
        c.ok("<commit><confirmed/><persist>p3</persist></commit>")
        c.ok(
            f"<copy-config><target><running/></target><source>{cfg(vr(HA + mn('c', '10.0.0.7')))}</source></copy-config>"
        )
        assert b"<name>a</name>" in (tmp_path / "rollback.xml").read_bytes()  # the whole point now
        c.ok("<cancel-commit><persist-id>p3</persist-id></cancel-commit>")
        assert running_names(c) == ["a"]
    finally:
        h.close()
    h = Harness(tmp_path)
    try:
        assert running_names(h.client()) == ["a"]
    finally:
        h.close()


def test_a_restart_with_a_startup_file_keeps_the_journaled_running(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        c = h.client()
        c.ok(edit(vr(HA + mn("a", "10.0.0.5"))))
        c.ok("<copy-config><target><startup/></target><source><running/></source></copy-config>")
        c.ok(edit(vr(mn("b", "10.0.0.6"))))  # running only, journaled
    finally:
        h.close()
    h = Harness(tmp_path)
    try:
        assert running_names(h.client()) == ["a", "b"]
    finally:
        h.close()
