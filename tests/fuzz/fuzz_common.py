"""What both fuzz targets share: the failure rules, the RSS probe and the atheris entry point.

A target is a class with ``seeds()`` (valid inputs written into the corpus before the campaign, so
libFuzzer starts from the protocol's real shapes) and ``one(data)`` (one input; raises on a bug).
A bug is any exception escaping the code under test, any ERROR log line from ``ha`` or ``server``
(their broad handlers log there before turning a bug into a reply), a rise of an ``internal_errors``
counter, or a broken invariant the target checks.  libFuzzer turns the exception into a crash
report and saves the input under ``-artifact_prefix``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import time
import types
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: every this many inputs the campaign prints one progress line (RSS, rate)
REPORT_EVERY = 50_000


class BugFound(AssertionError):
    """The code under test misbehaved on this input."""


class ErrorLog(logging.Handler):
    """Collects ERROR (and worse) records of the loggers the targets watch."""

    def __init__(self, *names: str) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.loggers = [logging.getLogger(name) for name in names]
        for logger in self.loggers:
            logger.addHandler(self)

    def close(self) -> None:
        for logger in self.loggers:
            logger.removeHandler(self)
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def check(self) -> None:
        if self.records:
            record, self.records = self.records[0], []
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                raise BugFound(f"error logged: {text}") from record.exc_info[1]
            raise BugFound(f"error logged: {text}")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Progress:
    """Counts inputs; prints RSS and the rate every REPORT_EVERY inputs (the campaign's memory record)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.started = time.monotonic()
        self.rss_start = 0

    def tick(self) -> None:
        self.count += 1
        if self.count == 1000:
            self.rss_start = rss_bytes()  # after warm-up: imports, first sessions, caches
        if self.count % REPORT_EVERY == 0:
            elapsed = time.monotonic() - self.started
            rss = rss_bytes()
            print(
                f"#fuzz {self.name} inputs {self.count} elapsed {elapsed:.0f}s rate {self.count / elapsed:.0f}/s "
                f"rss {rss / 2**20:.1f} MiB growth-since-1k {(rss - self.rss_start) / 2**20:+.1f} MiB",
                file=sys.stderr,
                flush=True,
            )


def write_seeds(corpus: Path, seeds: Iterable[bytes]) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(seed)


def run_atheris(name: str, make_target: Callable[[], object], argv: list[str]) -> None:
    """``python tests/fuzz/fuzz_X.py [libFuzzer flags] [corpus dirs]``: seed the first corpus
    directory (or a fresh one under .fuzz/) and fuzz until libFuzzer's -runs / -max_total_time."""
    import atheris

    logging.getLogger().addHandler(logging.NullHandler())  # expected warnings (bad hellos) stay quiet
    target = make_target()
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if not dirs:
        corpus = ROOT / ".fuzz" / name / "corpus"
        argv = [*argv, str(corpus)]
        dirs = [str(corpus)]
    if not Path(dirs[0]).is_file():  # a corpus directory; files given are inputs to replay
        write_seeds(Path(dirs[0]), target.seeds())
    progress = Progress(name)

    def one(data: bytes) -> None:
        progress.tick()
        target.one(data)

    atheris.Setup(argv, one)
    atheris.Fuzz()


def _executable_lines(path: Path) -> set[int]:
    """Lines of function bodies that carry bytecode (co_lines of every function's code object; module
    and class bodies run at import, before any input)."""
    lines: set[int] = set()
    stack = [compile(path.read_text(), str(path), "exec")]
    while stack:
        code = stack.pop()
        if code.co_flags & inspect.CO_OPTIMIZED:
            lines.update(line for _, _, line in code.co_lines() if line is not None)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return lines


def line_coverage(
    target: object, inputs: Iterable[bytes], packages: Iterable[str]
) -> list[tuple[str, int, int]]:
    """Replay ``inputs`` with a line tracer; (file, lines run, executable lines) for each module of
    ``packages`` (directories under the repository) that ran at all."""
    roots = tuple(str(ROOT / package) + os.sep for package in packages)
    hits: dict[str, set[int]] = {}

    def tracer(frame: types.FrameType, event: str, _arg: object):
        filename = frame.f_code.co_filename
        if not filename.startswith(roots):
            return None
        lines = hits.setdefault(filename, set())

        def local(frame: types.FrameType, event: str, _arg: object):
            if event == "line":
                lines.add(frame.f_lineno)
            return local

        lines.add(frame.f_lineno)
        return local

    sys.settrace(tracer)
    try:
        for data in inputs:
            with contextlib.suppress(BugFound):  # a crash input: the campaign reported it
                target.one(data)
    finally:
        sys.settrace(None)
    out = []
    for filename in sorted(hits):
        executable = _executable_lines(Path(filename))
        out.append((str(Path(filename).relative_to(ROOT)), len(hits[filename] & executable), len(executable)))
    return out
