"""The `mipha` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mipha", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("validate", help="validate a configuration document against the YANG model")
    sub.add_parser("mn", help="mobile-node simulator and load generator", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "validate":
        from server.cli_validate import main as validate_main

        return validate_main(rest)
    if args.command == "mn":
        from ha.mn.cli import main as mn_main

        return mn_main(rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())
