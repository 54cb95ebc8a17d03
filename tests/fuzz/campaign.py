"""Run one coverage-guided fuzz campaign with atheris (libFuzzer) on mipha's own code.

    .venv/bin/python tests/fuzz/campaign.py registration -runs=1000000
    .venv/bin/python tests/fuzz/campaign.py netconf -runs=1000000 [corpus-dir ...]
    .venv/bin/python tests/fuzz/campaign.py fastpath -runs=1000000   # the C path against the Python path

    .venv/bin/python tests/fuzz/campaign.py registration --line-coverage   # replay the corpus, lines run

Any other ``-flag=value`` is libFuzzer's (``-max_total_time``, ``-seed``, ``-artifact_prefix``...).
The corpus defaults to ``.fuzz/<target>/corpus`` (seeded with valid inputs each run); libFuzzer prints
``cov:`` (edges of the instrumented Python code reached) and ``exec/s``; every REPORT_EVERY inputs the
campaign prints the process RSS.  A crash stops the campaign with exit status 1 and saves the input.
`make fuzz` runs the campaigns at 1,000,000 inputs each; tests/fuzz/test_fuzz.py runs them briefly.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fuzz_common import ROOT, line_coverage, run_atheris  # noqa: E402

#: what each campaign instruments (the code under test), its module and the longest input
TARGETS = {
    "registration": (("ha", "registration_target", "engine_helpers"), 2048),
    "netconf": (("server", "netconf_target", "nc_harness"), 4096),
    # the C code is not instrumented (libFuzzer sees the Python it reaches: fastpath.run, renew_batch,
    # the Python path of every datagram C hands back)
    "fastpath": (("ha", "fastpath_target", "engine_helpers"), 1024),
}


def _target(name: str):
    if name == "registration":
        from registration_target import RegistrationTarget as target
    elif name == "fastpath":
        from fastpath_target import FastpathTarget as target
    else:
        from netconf_target import NetconfTarget as target
    return target


def netconf_dictionary(path: Path) -> None:
    """libFuzzer dictionary: the element names of the YANG modules and NETCONF, as tags."""
    names = {"rpc", "hello", "capabilities", "capability", "filter", "config", "source", "target"}
    namespaces = set()
    for yang in (ROOT / "yang").glob("**/*.yang"):  # mipha's module and the IETF ones (NACM, NMDA...)
        text = yang.read_text()
        names |= set(re.findall(r"\b(?:container|list|leaf|leaf-list|rpc|input)\s+([\w-]+)", text))
        namespaces |= set(re.findall(r'\bnamespace\s+"([^"]+)"', text))
    tokens = [f'"<{n}>"' for n in sorted(names)] + [f'"</{n}>"' for n in sorted(names)]
    tokens += ['"]]>]]>"', '"\\x0a##\\x0a"', '"\\x0a#"', '"operation=\\"delete\\""', '"xmlns=\\""']
    values = ("ds:running", "ds:candidate", "ds:operational", "report-all", "trim", "permit", "deny", "exec")
    tokens += [f'"{v}"' for v in values] + [
        f'"operation=\\"{op}\\""' for op in ("create", "remove", "replace")
    ]
    tokens += [f'"xmlns=\\"{ns}\\""' for ns in sorted(namespaces)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(tokens) + "\n")


def report_line_coverage(name: str, package: str) -> None:
    """Replay the campaign's corpus under a line tracer: how much of the package it reaches."""
    target = _target(name)
    corpus = sorted((ROOT / ".fuzz" / name / "corpus").iterdir())
    rows = line_coverage(target(), (path.read_bytes() for path in corpus), [package])
    for path, run, executable in rows:
        print(f"{path:40s} {run:5d} / {executable:5d} lines  {100 * run / executable:5.1f} %")
    run, executable = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(
        f"{len(corpus)} corpus inputs; modules of {package}/ that ran: {run} / {executable} lines, "
        f"{100 * run / executable:.1f} %"
    )


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(TARGETS)}}} [libFuzzer flags] [corpus dirs]")
    name = sys.argv[1]
    packages, max_len = TARGETS[name]
    if "--line-coverage" in sys.argv:
        return report_line_coverage(name, packages[0])
    argv = [sys.argv[0], *sys.argv[2:]]
    work = ROOT / ".fuzz" / name
    work.mkdir(parents=True, exist_ok=True)
    defaults = {
        "-max_len": str(max_len),
        "-timeout": "60",
        "-artifact_prefix": f"{work}/",
        "-print_final_stats": "1",
    }
    if name == "netconf":
        netconf_dictionary(work / "netconf.dict")
        defaults["-dict"] = str(work / "netconf.dict")
    given = {a.split("=", 1)[0] for a in argv[1:] if a.startswith("-")}
    argv += [f"{flag}={value}" for flag, value in defaults.items() if flag not in given]
    with atheris.instrument_imports(include=list(packages)):
        target = _target(name)
    run_atheris(name, target, argv)


if __name__ == "__main__":
    main()
