"""Run in a fresh process by test_xml_names.py: how much the process grows while it takes in XML full of
names it never saw before (lxml/libxml2 intern every element, attribute, prefix and namespace name).

    python xml_names_probe.py parse ours|raw COUNT      # parse_message vs one lxml parser in this thread
    python xml_names_probe.py session ours|raw COUNT    # RPCs through an in-process NETCONF session

``raw`` parses in the calling thread with one hardened parser (what the server did before
server/xmlparse.py's parse thread), ``ours`` goes through parse_message.  Prints the RSS growth in bytes
after a warm-up, the process's own baseline.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from lxml import etree  # noqa: E402

import server.xmlparse as xmlparse  # noqa: E402

#: unique names per RPC in the session probe: filter elements, and attributes of the <rpc> (which the
#: server echoes on its <rpc-reply>)
NAMES_PER_RPC = 40
ATTRIBUTES_PER_RPC = 20


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def message(i: int) -> bytes:
    """An <rpc> with a new element name, attribute name, prefix and namespace."""
    return (
        b'<rpc xmlns="urn:ietf:params:xml:ns:netconf:base:1.0" message-id="1" a%d="v" xmlns:p%d="urn:p:%d">'
        b"<x%d p%d:b='1'/></rpc>" % (i, i, i, i, i)
    )


def rpc_body(i: int) -> str:
    names = "".join(f"<n{i}x{k}/>" for k in range(NAMES_PER_RPC))
    return (
        "<get-config><source><running/></source>"
        f'<filter type="subtree"><q{i} xmlns="urn:q:{i}">{names}</q{i}></filter></get-config>'
    )


def probe_parse(count: int) -> int:
    for i in range(2000):  # warm-up: the first parse thread, lxml's caches
        xmlparse.parse_message(message(-i - 1))
    gc.collect()
    start = rss()
    for i in range(count):
        xmlparse.parse_message(message(i))
    gc.collect()
    return rss() - start


def probe_session(count: int) -> int:
    from nc_harness import NC_NS, Harness

    h = Harness()
    try:
        client = h.client()

        def rpc(i: int) -> None:
            extra = "".join(f' a{i}x{k}="1"' for k in range(ATTRIBUTES_PER_RPC))
            attrs = f'message-id="{i}"{extra} xmlns:p{i}="urn:p:{i}" p{i}:b="2"'
            client.send(f'<rpc xmlns="{NC_NS}" {attrs}>{rpc_body(i)}</rpc>'.encode())
            reply = client._next()  # bytes: parsing the reply here would intern its names in this thread
            assert b"<data" in reply, reply[:300]

        for i in range(500):
            rpc(-i - 1)
        gc.collect()
        start = rss()
        for i in range(count):
            rpc(i)
        gc.collect()
        return rss() - start
    finally:
        h.close()


def main() -> None:
    probe, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "raw":
        parser = xmlparse.new_parser(huge_tree=True, collect_ids=False)
        xmlparse._THREAD.parse = lambda data: etree.fromstring(data, parser)  # type: ignore[method-assign]
    growth = probe_parse(count) if probe == "parse" else probe_session(count)
    print(growth)


if __name__ == "__main__":
    main()
