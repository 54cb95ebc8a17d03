"""The `mipha` command line: run the daemon, simulate mobile nodes, validate configurations, lab."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import getpass
import logging
import logging.handlers
import os
import socket
import sys
from pathlib import Path


class LogfmtFormatter(logging.Formatter):
    """One line per event, ``key=value`` pairs: easy for people and for log pipelines."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().replace("\n", " ")
        line = f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} level={record.levelname.lower()} "
        line += f'logger={record.name} msg="{msg.replace(chr(34), chr(39))}"'
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", " | ")
            line += f' exc="{exc.replace(chr(34), chr(39))}"'
        return line


class Rfc5424Formatter(LogfmtFormatter):
    """The RFC 5424 header after <PRI> (which SysLogHandler adds): version, UTC time with
    microseconds, host, app-name, procid, no msgid, no structured data, then the logfmt line."""

    def __init__(self) -> None:
        super().__init__()
        self.host = socket.gethostname() or "-"

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="microseconds")
        return f"1 {ts.replace('+00:00', 'Z')} {self.host} mipha {os.getpid()} - - {super().format(record)}"


def syslog_handler(path: str) -> logging.Handler:
    """RFC 5424 messages to the local syslog socket (facility daemon); OSError if nothing listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        probe.connect(path)  # SysLogHandler would only print the error at the first message
    handler = logging.handlers.SysLogHandler(address=path, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    handler.append_nul = False
    handler.setFormatter(Rfc5424Formatter())
    return handler


def setup_logging(level: str, syslog: str | None = None) -> None:
    """stderr (logfmt), and with `syslog` (a socket path) the local syslog too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if syslog is not None:
        root.handlers.append(syslog_handler(syslog))
    root.setLevel(level.upper())
    logging.getLogger("asyncssh").setLevel(max(logging.WARNING, root.level))


def cmd_run(argv: list[str]) -> int:
    from .bootstrap import BACKENDS, LOG_LEVELS, BootstrapError, load, parse_listen

    parser = argparse.ArgumentParser(prog="mipha run", description="run the home agent daemon")
    parser.add_argument("--config", type=Path, required=True, help="bootstrap file (TOML)")
    parser.add_argument("--listen", help="NETCONF HOST:PORT (overrides the file)")
    parser.add_argument("--state-dir", type=Path, help="state directory (overrides the file)")
    parser.add_argument("--startup", type=Path, help="first-start configuration (overrides the file)")
    parser.add_argument("--dataplane", choices=BACKENDS, help="data plane backend (overrides the file)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="log level (overrides the file)")
    args = parser.parse_args(argv)
    try:
        boot = load(args.config)
        if args.listen:
            boot.listen_host, boot.listen_port = parse_listen(args.listen, "--listen")
        if args.state_dir:
            old = boot.state_dir
            boot.state_dir = args.state_dir.resolve()
            if boot.host_key is not None and boot.host_key.parent == old:
                boot.host_key = boot.state_dir / boot.host_key.name
        if args.startup:
            boot.startup = args.startup.resolve()
        if args.dataplane:
            boot.dataplane = args.dataplane
        if args.log_level:
            boot.log_level = args.log_level
    except BootstrapError as exc:
        print(f"mipha run: {exc}", file=sys.stderr)
        return 2
    try:
        setup_logging(boot.log_level, boot.syslog_socket if boot.log_syslog else None)
    except OSError as exc:
        print(
            f"mipha run: [log] syslog: cannot use {boot.syslog_socket}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    from .daemon import Daemon

    try:
        asyncio.run(Daemon(boot).run_forever())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        logging.getLogger("mipha").critical("daemon failed: %s", exc, exc_info=True)
        return 1
    return 0


def cmd_hash_password(argv: list[str]) -> int:
    from server.auth import hash_password

    parser = argparse.ArgumentParser(prog="mipha hash-password", description="hash a NETCONF password")
    parser.add_argument("--stdin", action="store_true", help="read the password from standard input")
    args = parser.parse_args(argv)
    password = sys.stdin.readline().rstrip("\n") if args.stdin else getpass.getpass("password: ")
    if not password:
        print("mipha hash-password: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mipha", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon (NETCONF + home agent)", add_help=False)
    sub.add_parser("mn", help="mobile-node simulator and load generator", add_help=False)
    sub.add_parser(
        "validate", help="validate a configuration document against the YANG model", add_help=False
    )
    sub.add_parser("hash-password", help="hash a password for the bootstrap file", add_help=False)
    sub.add_parser("lab", help="lab topology in network namespaces: up | demo | down", add_help=False)
    sub.add_parser(
        "show", help="bindings, statistics, violations, tunnels, pools, a mobile node", add_help=False
    )
    sub.add_parser("clear", help="clear bindings or statistics", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "run":
        return cmd_run(rest)
    if args.command == "validate":
        from server.cli_validate import main as validate_main

        return validate_main(rest, prog="mipha validate")
    if args.command == "mn":
        from ha.mn.cli import main as mn_main

        return mn_main(rest)
    if args.command == "hash-password":
        return cmd_hash_password(rest)
    if args.command in ("show", "clear"):
        from .show import main as show_main

        return show_main(rest, f"mipha {args.command}")
    if args.command == "lab":
        from .lab_cli import main as lab_main

        return lab_main(rest)
    return 2


if __name__ == "__main__":
    sys.exit(main())
