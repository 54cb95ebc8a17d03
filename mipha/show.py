"""``mipha show ...`` / ``mipha clear ...``: the operator's view of a running daemon, over NETCONF.

What ``show ip mobile binding`` / ``show ip mobile traffic`` are on JUNOSe and IOS: each command is
one NETCONF ``<get>`` (or rpc) whose subtree filter names exactly what the table needs, so the
daemon's state provider answers from its indexes (one binding out of 100k by home address costs a
lookup, not a walk) and sends only the selected leaves. Output: aligned tables (``--json`` and
``--xml`` for scripts); large tables are printed page by page as they are formatted, through
``$PAGER`` when the output is a terminal.

Connection settings, first found wins: command-line flags, environment (``MIPHA_HOST``,
``MIPHA_PORT``, ``MIPHA_USER``, ``MIPHA_PASSWORD``, ``MIPHA_KEY``), the client file
(``--client-config``, ``$MIPHA_CLIENT_CONFIG``, else ``~/.config/mipha/client.toml``)::

    host = "127.0.0.1"
    port = 830
    user = "noc1"
    key = "~/.ssh/id_ed25519"     # or password = "..." (keep the file mode 0600)
    host-key-check = true         # against ~/.ssh/known_hosts (false: lab only)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from xml.sax.saxutils import escape

from lxml import etree

from mipha.model import NAMESPACE as NS

Q = f"{{{NS}}}"
DEFAULT_CONFIG = Path("~/.config/mipha/client.toml")
PAGE = 1000


class ShowError(Exception):
    """Bad arguments or a failed NETCONF exchange; the message is for the operator."""


@dataclass
class Connection:
    host: str = "127.0.0.1"
    port: int = 830
    user: str | None = None
    password: str | None = None
    key: str | None = None
    host_key_check: bool = True


def connection_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Connection:
    """Flags, then environment, then the client file (see the module docstring)."""
    env = os.environ if env is None else env
    path = args.client_config or env.get("MIPHA_CLIENT_CONFIG")
    file: dict = {}
    cfg_path = Path(path).expanduser() if path else DEFAULT_CONFIG.expanduser()
    if cfg_path.exists():
        try:
            file = tomllib.loads(cfg_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ShowError(f"{cfg_path}: {exc}") from None
        unknown = set(file) - {"host", "port", "user", "password", "key", "host-key-check"}
        if unknown:
            raise ShowError(f"{cfg_path}: unknown key(s) {', '.join(sorted(unknown))}")
        if "password" in file and cfg_path.stat().st_mode & 0o077:
            print(f"warning: {cfg_path} holds a password and others may read it (chmod 600)", file=sys.stderr)
    elif path:
        raise ShowError(f"{cfg_path}: no such file")

    def pick(flag, env_name: str, key: str, default=None):
        if flag is not None:
            return flag
        if env_name and env.get(env_name):
            return env[env_name]
        return file.get(key, default)

    conn = Connection(
        host=pick(args.host, "MIPHA_HOST", "host", "127.0.0.1"),
        port=int(pick(args.port, "MIPHA_PORT", "port", 830)),
        user=pick(args.user, "MIPHA_USER", "user"),
        password=pick(args.password, "MIPHA_PASSWORD", "password"),
        key=pick(args.key, "MIPHA_KEY", "key"),
        host_key_check=not args.no_host_key_check and bool(file.get("host-key-check", True)),
    )
    if conn.user is None:
        raise ShowError("no user: give --user, MIPHA_USER or `user` in the client file")
    return conn


def connect(conn: Connection):
    from ncclient import manager
    from ncclient.transport import session as nc_session

    nc_session.TICK = 0.001  # the default 0.1 s poll adds 100 ms to every RPC
    try:
        return manager.connect(
            host=conn.host,
            port=conn.port,
            username=conn.user,
            password=conn.password,
            key_filename=str(Path(conn.key).expanduser()) if conn.key else None,
            hostkey_verify=conn.host_key_check,
            allow_agent=False,
            look_for_keys=False,
            timeout=60,
        )
    except Exception as exc:  # ncclient raises many unrelated types
        raise ShowError(f"cannot open a NETCONF session to {conn.host}:{conn.port}: {exc}") from None


# -- filters -----------------------------------------------------------------------------------------------
def _vr_filter(vr: str | None, inner: str) -> str:
    name = f"<name>{escape(vr)}</name>" if vr else "<name/>"
    return f'<virtual-routers xmlns="{NS}"><virtual-router>{name}{inner}</virtual-router></virtual-routers>'


def _address(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    try:
        return str(IPv4Address(text))
    except ValueError:
        raise ShowError(f"{what}: {text!r} is not an IPv4 address") from None


BINDING_COLUMNS = (
    ("virtual-router", "VR"),
    ("home-address", "HOME ADDRESS"),
    ("care-of-address", "CARE-OF ADDRESS"),
    ("mobile-node", "MOBILE NODE"),
    ("nai", "NAI"),
    ("lifetime-granted", "GRANTED"),
    ("lifetime-remaining", "REMAINING"),
    ("flags", "FLAGS"),
    ("encapsulation", "ENCAP"),
    ("identification", "IDENTIFICATION"),
)


def bindings_filter(
    vr: str | None, home: str | None, coa: str | None, leaves: Iterable[str], nai: str | None = None
) -> str:
    """Keys as content matches (pushed down to the engine's index), the other leaves selected."""
    parts = [f"<home-address>{home}</home-address>" if home else "<home-address/>"]
    parts.append(f"<care-of-address>{coa}</care-of-address>" if coa else "<care-of-address/>")
    if nai is not None:
        parts.append(f"<nai>{escape(nai)}</nai>")
    parts += [f"<{leaf}/>" for leaf in leaves if leaf not in ("home-address", "care-of-address", "nai")]
    return _vr_filter(
        vr, f"<home-agent><bindings><binding>{''.join(parts)}</binding></bindings></home-agent>"
    )


# -- reading replies ---------------------------------------------------------------------------------------
def _routers(data: etree._Element) -> Iterator[etree._Element]:
    yield from data.iterfind(f"{Q}virtual-routers/{Q}virtual-router")


def _leaves(el: etree._Element) -> dict[str, str]:
    return {etree.QName(c).localname: (c.text or "").strip() for c in el if len(c) == 0}


def binding_rows(data: etree._Element) -> Iterator[dict[str, str]]:
    for vr in _routers(data):
        name = vr.findtext(f"{Q}name") or ""
        for b in vr.iterfind(f"{Q}home-agent/{Q}bindings/{Q}binding"):
            yield {"virtual-router": name, **_leaves(b)}


def rows_of(data: etree._Element, path: str) -> Iterator[dict[str, str]]:
    for vr in _routers(data):
        name = vr.findtext(f"{Q}name") or ""
        for el in vr.iterfind(path):
            yield {"virtual-router": name, **_leaves(el)}


# -- output ------------------------------------------------------------------------------------------------
def table(
    rows: Iterable[dict[str, str]], columns: tuple[tuple[str, str], ...], page: int = PAGE
) -> Iterator[str]:
    """Aligned text, a page of rows at a time (each page aligned on its own widest cell)."""
    batch: list[dict[str, str]] = []
    first = True
    for row in rows:
        batch.append(row)
        if len(batch) == page:
            yield from _page(batch, columns, first)
            batch, first = [], False
    if batch or first:
        yield from _page(batch, columns, first)


def _page(rows: list[dict[str, str]], columns, header: bool) -> Iterator[str]:
    widths = [max([len(title)] + [len(r.get(key) or "-") for r in rows]) for key, title in columns]
    if header:
        yield "  ".join(t.ljust(w) for (_k, t), w in zip(columns, widths, strict=True)).rstrip()
    for r in rows:
        cells = ((r.get(k) or "-").ljust(w) for (k, _t), w in zip(columns, widths, strict=True))
        yield "  ".join(cells).rstrip()


def emit(lines: Iterable[str], out=None) -> None:
    """Print, through $PAGER when the output is a terminal (and the table does not fit)."""
    out = out or sys.stdout
    if not out.isatty():
        for line in lines:
            out.write(line + "\n")
        return
    lines = list(lines)
    if len(lines) < shutil.get_terminal_size().lines - 1:
        out.write("".join(line + "\n" for line in lines))
        return
    pager = os.environ.get("PAGER", "less -FRSX")
    proc = subprocess.Popen(pager, shell=True, stdin=subprocess.PIPE, text=True)
    assert proc.stdin is not None  # stdin=PIPE
    try:
        for line in lines:
            proc.stdin.write(line + "\n")
        proc.stdin.close()
    except BrokenPipeError:
        pass
    proc.wait()


def render(args, data: etree._Element, rows: Iterable[dict[str, str]], columns) -> None:
    if args.xml or args.json:
        dump(args, data, rows)
    else:
        emit(table(rows, columns, args.page_size))


def dump(args, data: etree._Element, rows: Iterable[Mapping[str, object]]) -> None:
    """--xml: the reply's data as it came; --json: the rows (a cell may hold a nested list of rows)."""
    if args.xml:
        sys.stdout.write(etree.tostring(data, pretty_print=True).decode())
    else:
        json.dump(list(rows), sys.stdout, indent=1)
        sys.stdout.write("\n")


# -- commands ----------------------------------------------------------------------------------------------
def get(m, flt: str) -> etree._Element:
    from ncclient.operations.rpc import RPCError

    try:
        return m.get(filter=("subtree", flt)).data_ele
    except RPCError as exc:
        raise ShowError(f"the daemon refused: {exc.tag}: {exc.message or ''}".strip()) from None


def show_bindings(m, args) -> None:
    home = _address(args.home_address, "--home-address")
    coa = _address(args.care_of_address, "--care-of-address")
    nai = None
    if args.nai is not None:
        home = _home_of_nai(m, args.vr, args.nai)
        nai = args.nai if home is None else None  # pool-assigned: the daemon filters on the leaf
    leaves = ("home-address", "care-of-address") if args.summary else [k for k, _ in BINDING_COLUMNS[1:]]
    data = get(m, bindings_filter(args.vr, home, coa, leaves, nai))
    rows: Iterable[dict[str, str]] = binding_rows(data)
    if args.summary:
        counts: dict[str, list] = {}
        for r in rows:
            c = counts.setdefault(r["virtual-router"], [0, set(), set()])
            c[0] += 1
            c[1].add(r.get("home-address"))
            c[2].add(r.get("care-of-address"))
        rows = [
            {
                "virtual-router": vr,
                "bindings": str(n),
                "home-addresses": str(len(h)),
                "care-of-addresses": str(len(co)),
            }
            for vr, (n, h, co) in counts.items()
        ]
        cols = (
            ("virtual-router", "VR"),
            ("bindings", "BINDINGS"),
            ("home-addresses", "HOME ADDRESSES"),
            ("care-of-addresses", "CARE-OF ADDRESSES"),
        )
        render(args, data, rows, cols)
        return
    render(args, data, rows, BINDING_COLUMNS)


def _home_of_nai(m, vr: str | None, nai: str) -> str | None:
    """A statically addressed node's home address (the binding is then found by key); None when the
    node draws from a pool (the daemon then filters the bindings on the nai leaf)."""
    flt = _vr_filter(vr, f"<mobile-node><nai>{escape(nai)}</nai><name/><home-address/></mobile-node>")
    for vr_el in _routers(get(m, flt)):
        for node in vr_el.iterfind(f"{Q}mobile-node"):
            home = node.findtext(f"{Q}home-address")
            if home:
                return home.strip()
    return None


STAT_COLUMNS = (
    ("virtual-router", "VR"),
    ("requests-received", "REQUESTS"),
    ("deregistrations-received", "DEREGS"),
    ("accepted", "ACCEPTED"),
    ("denied", "DENIED"),
    ("mn-auth-failures", "MN AUTH FAIL"),
    ("fa-auth-failures", "FA AUTH FAIL"),
    ("identification-mismatches", "ID MISMATCH"),
    ("poorly-formed", "POORLY FORMED"),
    ("discarded", "DISCARDED"),
    ("replies-sent", "REPLIES"),
)


RECEIVE_PATH_COLUMNS = (
    ("virtual-router", "VR"),
    ("path", "RECEIVE PATH"),
    ("renewals-answered-in-c", "ANSWERED IN C"),
    ("reason", "WHY"),
)


def show_statistics(m, args) -> None:
    data = get(m, _vr_filter(args.vr, "<home-agent><statistics/><receive-path/></home-agent>"))
    rows, codes, paths = [], [], []
    for vr in _routers(data):
        name = vr.findtext(f"{Q}name") or ""
        path = vr.find(f"{Q}home-agent/{Q}receive-path")
        if path is not None:  # which code answers registrations (C or Python, and why)
            paths.append({"virtual-router": name, **_leaves(path)})
        st = vr.find(f"{Q}home-agent/{Q}statistics")
        if st is None:
            continue
        rows.append({"virtual-router": name, **_leaves(st)})
        for code in st.iterfind(f"{Q}denied-by-code/{Q}code"):
            codes.append({"virtual-router": name, **_leaves(code)})
    if args.xml or args.json:
        receive = {p["virtual-router"]: {k: v for k, v in p.items() if k != "virtual-router"} for p in paths}
        dump(
            args,
            data,
            [
                {
                    **r,
                    "denied-by-code": [c for c in codes if c["virtual-router"] == r["virtual-router"]],
                    "receive-path": receive.get(r["virtual-router"], {}),
                }
                for r in rows
            ],
        )
        return
    lines = list(table(rows, STAT_COLUMNS, args.page_size))
    if codes:
        lines += ["", *table(codes, (("virtual-router", "VR"), ("code", "DENIED CODE"), ("count", "COUNT")))]
    if paths:
        lines += ["", *table(paths, RECEIVE_PATH_COLUMNS)]
    emit(lines)


def show_simple(m, args, inner: str, path: str, columns) -> None:
    data = get(m, _vr_filter(args.vr, inner))
    render(args, data, rows_of(data, path), columns)


VIOLATION_COLUMNS = (
    ("virtual-router", "VR"),
    ("index", "INDEX"),
    ("time", "TIME"),
    ("peer", "PEER"),
    ("home-address", "HOME ADDRESS"),
    ("spi", "SPI"),
    ("reason", "REASON"),
)
TUNNEL_COLUMNS = (
    ("virtual-router", "VR"),
    ("care-of-address", "CARE-OF ADDRESS"),
    ("interface", "INTERFACE"),
    ("binding-count", "BINDINGS"),
    ("in-packets", "IN PKTS"),
    ("in-octets", "IN OCTETS"),
    ("out-packets", "OUT PKTS"),
    ("out-octets", "OUT OCTETS"),
)
POOL_COLUMNS = (
    ("virtual-router", "VR"),
    ("name", "POOL"),
    ("size", "SIZE"),
    ("in-use", "IN USE"),
    ("free", "FREE"),
)


def show_mobile_node(m, args) -> None:
    flt = _vr_filter(args.vr, f"<mobile-node><name>{escape(args.name)}</name></mobile-node>")
    data = get(m, flt)
    found = [
        (vr.findtext(f"{Q}name"), node) for vr in _routers(data) for node in vr.iterfind(f"{Q}mobile-node")
    ]
    if not found:
        raise ShowError(f"no mobile node {args.name!r}" + (f" in {args.vr}" if args.vr else ""))
    bindings: list[dict[str, str]] = []
    for vr, node in found:
        home = node.findtext(f"{Q}home-address")
        if home:
            flt = bindings_filter(vr, home.strip(), None, [k for k, _ in BINDING_COLUMNS[1:]])
            bindings += binding_rows(get(m, flt))
    if args.xml:
        sys.stdout.write(etree.tostring(data, pretty_print=True).decode())
        return
    nodes = []
    for vr, node in found:
        info = {"virtual-router": vr or "", **_leaves(node)}
        info["security-associations"] = ",".join(
            sa.findtext(f"{Q}spi") or "" for sa in node.iterfind(f"{Q}security-association")
        )
        nodes.append(info)
    if args.json:
        json.dump({"mobile-nodes": nodes, "bindings": bindings}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    lines = []
    for info in nodes:
        width = max(len(k) for k in info)
        lines += [f"{k.ljust(width)}  {v}" for k, v in info.items() if v]
        lines.append("")
    lines += list(table(bindings, BINDING_COLUMNS)) if bindings else ["no binding"]
    emit(lines)


def clear(m, args) -> None:
    from ncclient.operations.rpc import RPCError
    from ncclient.xml_ import to_ele

    if args.what == "bindings":
        if not args.vr:
            raise ShowError("clear bindings needs --vr")
        sel = ""
        if args.home_address:
            sel = f"<home-address>{_address(args.home_address, '--home-address')}</home-address>"
        elif args.nai:
            sel = f"<nai>{escape(args.nai)}</nai>"
        elif args.care_of_address:
            sel = f"<care-of-address>{_address(args.care_of_address, '--care-of-address')}</care-of-address>"
        vr = f"<virtual-router>{escape(args.vr)}</virtual-router>"
        body = f'<clear-bindings xmlns="{NS}">{vr}{sel}</clear-bindings>'
    else:
        vr = f"<virtual-router>{escape(args.vr)}</virtual-router>" if args.vr else ""
        body = f'<clear-statistics xmlns="{NS}">{vr}</clear-statistics>'
    try:
        reply = m.dispatch(to_ele(body))
    except RPCError as exc:
        raise ShowError(f"the daemon refused: {exc.tag}: {exc.message or ''}".strip()) from None
    cleared = etree.fromstring(reply.xml.encode()).findtext(f".//{Q}cleared")
    if args.json:
        print(json.dumps({"cleared": int(cleared)} if cleared is not None else {"ok": True}))
    elif cleared is not None:
        print(f"{cleared} binding(s) cleared")


# -- argument parsing --------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (else MIPHA_* environment, else the client file)")
    g.add_argument("--host")
    g.add_argument("--port", type=int)
    g.add_argument("--user")
    g.add_argument("--password")
    g.add_argument("--key", help="SSH private key file")
    g.add_argument("--client-config", help=f"client file (default {DEFAULT_CONFIG})")
    g.add_argument("--no-host-key-check", action="store_true", help="do not verify the host key (lab)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON for scripts")
    out.add_argument("--xml", action="store_true", help="the NETCONF <data> as received")
    p.add_argument("--page-size", type=int, default=PAGE, help="rows aligned and printed together")
    p.add_argument("--vr", help="one virtual router (default: all)")


def _selector(p: argparse.ArgumentParser) -> None:
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--home-address")
    sel.add_argument("--nai")
    sel.add_argument("--care-of-address")


def parser(prog: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="operator view of a running mipha, over NETCONF")
    sub = ap.add_subparsers(dest="what", required=True)
    if prog.endswith("show"):
        b = sub.add_parser("bindings", help="mobility bindings")
        _common(b)
        _selector(b)
        b.add_argument("--summary", action="store_true", help="counts per virtual router")
        for name, help_ in (
            ("statistics", "registration counters and the receive path (C or Python, why)"),
            ("violations", "security violations (the last ones recorded, oldest first)"),
            ("tunnels", "tunnels and their traffic"),
            ("pools", "address pool usage"),
        ):
            _common(sub.add_parser(name, help=help_))
        mn = sub.add_parser("mobile-node", help="one mobile node's configuration and bindings")
        mn.add_argument("name")
        _common(mn)
    else:
        b = sub.add_parser("bindings", help="remove bindings (all of a virtual router, or the selected ones)")
        _common(b)
        _selector(b)
        _common(sub.add_parser("statistics", help="reset the counters"))
    return ap


def main(argv: list[str], prog: str = "mipha show") -> int:
    args = parser(prog).parse_args(argv)
    try:
        conn = connection_from(args)
        m = connect(conn)
        try:
            if prog.endswith("clear"):
                clear(m, args)
            elif args.what == "bindings":
                show_bindings(m, args)
            elif args.what == "statistics":
                show_statistics(m, args)
            elif args.what == "violations":
                show_simple(
                    m,
                    args,
                    "<home-agent><security-violations/></home-agent>",
                    f"{Q}home-agent/{Q}security-violations/{Q}violation",
                    VIOLATION_COLUMNS,
                )
            elif args.what == "tunnels":
                show_simple(
                    m,
                    args,
                    "<home-agent><tunnels/></home-agent>",
                    f"{Q}home-agent/{Q}tunnels/{Q}tunnel",
                    TUNNEL_COLUMNS,
                )
            elif args.what == "pools":
                show_simple(m, args, "<address-pool/>", f"{Q}address-pool", POOL_COLUMNS)
            elif args.what == "mobile-node":
                show_mobile_node(m, args)
        finally:
            if m.connected:
                m.close_session()
    except ShowError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    return 0
