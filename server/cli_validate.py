"""Offline check of configuration documents, errors as NETCONF would report them (a `validate` command)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .validation import Validator
from .xmlsafe import UnsafeXmlError


def main(argv: list[str] | None = None, prog: str = "validate") -> int:
    """`prog`: the command as the application names it (its usage line)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="XML documents (<config> or bare data)")
    parser.add_argument("--json", action="store_true", help="print the errors as JSON")
    args = parser.parse_args(argv)
    validator = Validator()
    status = 0
    report = {}
    for path in args.files:
        try:
            errors = validator.validate(path.read_bytes())
        except (OSError, UnsafeXmlError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            status = 2
            continue
        report[str(path)] = [
            {"error-tag": e.tag, "error-app-tag": e.app_tag, "error-path": e.path, "error-message": e.message}
            | ({"bad-element": e.bad_element} if e.bad_element else {})
            for e in errors
        ]
        if errors:
            status = max(status, 1)
        if not args.json:
            print(f"{path}: {'valid' if not errors else f'{len(errors)} error(s)'}")
            for e in errors:
                tag = e.tag + (f" ({e.app_tag})" if e.app_tag else "")
                print(f"  {tag} at {e.path or '/'}: {e.message}")
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    return status


if __name__ == "__main__":
    sys.exit(main())
