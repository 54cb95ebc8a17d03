"""Shared by the example scripts: connect to mipha's NETCONF server with ncclient."""

from __future__ import annotations

import argparse

from ncclient import manager
from ncclient.transport import session

session.TICK = 0.001  # ncclient polls every TICK seconds; its default 0.1 s adds 100 ms per RPC

NS = "urn:mipha:yang:mipha-home-agent"


def arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=830)
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="admin", help="lab default; never use it in production")
    return parser


def connect(args: argparse.Namespace) -> manager.Manager:
    return manager.connect(
        host=args.host,
        port=args.port,
        username=args.user,
        password=args.password,
        hostkey_verify=False,  # lab only: pin the host key (known_hosts) in production
        allow_agent=False,
        look_for_keys=False,
        timeout=30,
    )
