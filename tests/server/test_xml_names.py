"""An authenticated client cannot grow the server's memory by sending ever-new XML names.

libxml2 interns every name it parses in a dictionary that lxml keeps per thread and never shrinks;
server/xmlparse.py parses on a thread it replaces after so much input.  Each test measures, in fresh
processes, the RSS growth of the same input through the server's path and through one lxml parser in
the calling thread (the unbounded baseline), and requires a tenth of the baseline at most.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lxml import etree

from server.errors import RpcError
from server.xmlparse import RECYCLE_BYTES, parse_message

PROBE = Path(__file__).with_name("xml_names_probe.py")
MIB = 2**20


def growth(probe: str, mode: str, count: int) -> int:
    done = subprocess.run(
        [sys.executable, str(PROBE), probe, mode, str(count)],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split()[-1])


def test_parsing_new_names_does_not_grow_the_process():
    """100,000 messages, each with a new element, attribute, prefix and namespace name."""
    raw = growth("parse", "raw", 100_000)
    ours = growth("parse", "ours", 100_000)
    assert raw > 5 * MIB, f"the baseline should grow (~55 B per name): {raw / MIB:.1f} MiB"
    assert ours < raw / 10, f"parse_message grew {ours / MIB:.2f} MiB, one lxml parser {raw / MIB:.2f} MiB"


def test_netconf_session_with_new_names_does_not_grow_the_server():
    """10,000 <get-config> RPCs through a real NetconfSession, each with 41 new element names in its
    subtree filter and 21 new attribute names, a prefix and a namespace on the <rpc> (the reply echoes
    them)."""
    raw = growth("session", "raw", 10_000)
    ours = growth("session", "ours", 10_000)
    assert raw > 8 * MIB, f"the baseline should grow: {raw / MIB:.1f} MiB"
    assert ours < raw / 10, (
        f"the server grew {ours / MIB:.2f} MiB, parsing in its own thread {raw / MIB:.2f} MiB"
    )


def parse_threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate() if t.name == "xml-parse"}


def test_the_parse_thread_is_replaced_after_its_budget():
    """Parsing happens on an "xml-parse" thread, a new one once the last one read RECYCLE_BYTES."""
    message = b"<r>" + b"<a/>" * 1000 + b"</r>"
    parse_message(message)
    first = parse_threads()
    assert first, "no parse thread"
    seen: set[int | None] = set()
    for _ in range(RECYCLE_BYTES // len(message) + 2):
        parse_message(message)
        seen |= parse_threads()
    assert seen - first, "no new parse thread after RECYCLE_BYTES of input"


def test_errors_still_reach_the_caller():
    """A malformed message and a DOCTYPE are malformed-message errors, as before; the parse thread
    keeps working after them."""
    with pytest.raises(RpcError) as bad:
        parse_message(b"<rpc><unclosed></rpc>")
    assert bad.value.tag == "malformed-message"
    with pytest.raises(RpcError):
        parse_message(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    root = parse_message(b"<rpc><get/></rpc>")
    assert root.tag == "rpc" and etree.tostring(root) == b"<rpc><get/></rpc>"
