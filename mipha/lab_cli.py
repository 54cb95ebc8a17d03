"""``mipha lab``'s command line: the single lab (:mod:`mipha.lab`) or, with ``--redundant`` (or when
the lab directory records a redundant lab), two home agents on etcd (:mod:`mipha.lab_redundant`).

Its own module so that the redundant lab builds on the single one and neither imports the other back.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import lab_redundant
from .lab import Lab, LabError, demo, down, step, up


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mipha lab", description="the whole feature on one machine, in network namespaces"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", default="mipha-lab", help="namespace name prefix (default mipha-lab)")
    common.add_argument("--dir", type=Path, help="lab directory (default /run/mipha-lab/PREFIX)")
    sub = parser.add_subparsers(dest="action", required=True)
    for name, text in (
        ("up", "build the namespaces and start the daemon"),
        ("demo", "up, register, ping, show"),
    ):
        p = sub.add_parser(name, help=text, parents=[common])
        p.add_argument(
            "--port", type=int, help="NETCONF port on 127.0.0.1 (default 8830, or the running lab's)"
        )
        p.add_argument("--dataplane", choices=("auto", "ipip", "tun"), default="auto")
        p.add_argument(
            "--nat", action="store_true", help="a masquerading NAT before the mobile node (RFC 3519)"
        )
        p.add_argument(
            "--redundant", action="store_true", help="two home agents in hot standby on etcd (lab_redundant)"
        )
        if name == "demo":
            p.add_argument("--count", type=int, default=3, help="pings to send (default 3)")
    sub.add_parser("down", help="stop the processes, delete the lab's namespaces", parents=[common])
    status = sub.add_parser("status", help="the redundant lab's daemons, roles and etcd", parents=[common])
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument("--port", type=int, help="NETCONF port of the first daemon (default: the lab's)")
    sub.add_parser(
        "tunnel", help="a mobile node tunnel endpoint in the foreground (ha.mn.tunnel)", add_help=False
    )
    return parser


def vars_of(lab: Lab) -> dict:
    return {"prefix": lab.prefix, "port": lab.port, "dataplane": lab.dataplane, "directory": lab.directory}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tunnel"]:
        from ha.mn.tunnel import main as tunnel_main

        return tunnel_main(argv[1:])
    args = _parser().parse_args(argv)
    lab = Lab(prefix=args.prefix, dataplane=getattr(args, "dataplane", "auto"), directory=args.dir)
    port = getattr(args, "port", None) or lab.recorded_port() or 8830
    nat = getattr(args, "nat", False) or (args.action == "down" and bool(lab.recorded_nat()))
    lab = Lab(prefix=lab.prefix, port=port, dataplane=lab.dataplane, directory=lab.directory, nat=nat)
    redundant = None
    if getattr(args, "redundant", False) or args.action == "status" or lab_redundant.is_redundant(lab):
        lab = redundant = lab_redundant.RedundantLab(**vars_of(lab))
    try:
        if redundant is not None:
            lab_redundant.main(args, redundant)
        elif args.action == "up":
            up(lab)
            extra = "" if lab.prefix == "mipha-lab" else f" --prefix {lab.prefix}"
            step(f"lab up: next, `mipha lab demo{extra}`")
        elif args.action == "demo":
            demo(lab, args.count)
        else:
            down(lab)
    except LabError as exc:
        print(f"mipha lab {args.action} FAILED: {exc}", file=sys.stderr, flush=True)
        if args.action != "down":
            print(f"mipha lab: {lab.cleanup_hint()}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"mipha lab {args.action}: interrupted; {lab.cleanup_hint()}", file=sys.stderr, flush=True)
        return 130
    return 0
