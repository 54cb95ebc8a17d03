"""Statistics keeps its counters in slots built from COUNTERS; the type checker reads the annotations
beside them: both must name the same counters."""

from __future__ import annotations

from ha.engine.statistics import COUNTERS, Statistics


def test_statistics_declares_every_counter() -> None:
    declared = {name for name, kind in Statistics.__annotations__.items() if kind == "int"}
    assert declared == {name.replace("-", "_") for name in COUNTERS}
    assert all(getattr(Statistics(), name) == 0 for name in declared)
