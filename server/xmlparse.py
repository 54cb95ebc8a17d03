"""Hardened XML parsing for everything a client sends.

No entity expansion, no DTD loading, no network, and any DOCTYPE refused outright (XXE and
billion-laughs payloads never reach a tree). `huge_tree` is on because the framer already bounds a
message's size; lxml's own 10 MB text-node limit would otherwise refuse legitimate large edits.

Memory: libxml2 interns every element, attribute, prefix and namespace name it parses in a name
dictionary, and lxml keeps one per thread that never shrinks (~55 B per distinct name), so a client
sending ever-new names would grow the server without bound.  Messages are therefore parsed on a
`_ParseThread`: its dictionary is its own (lxml gives every other thread a sub-dictionary of the main
thread's), and the thread is replaced after RECYCLE_BYTES of input, which frees that dictionary once
the last tree parsed there is gone.  Trees the server keeps (the datastores) re-intern only the
schema's names into their own documents when nodes move in.
"""

from __future__ import annotations

import os
import threading

from lxml import etree

from server.errors import malformed
from server.xmlsafe import new_parser

#: input one parse thread reads before it is replaced (with its name dictionary): the names it holds
#: come from at most this much XML plus the message being parsed
RECYCLE_BYTES = 256 * 1024


class _Worker:
    """One parse thread; the caller hands a message over and waits for its tree.  Two locks carry the
    message there and back (a Future's condition variables cost ten times more per message)."""

    def __init__(self) -> None:
        self.parsed = 0  # bytes handed over
        self.broken = False  # a caller stopped waiting: the hand-over is out of step
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._data: bytes | None = None
        self._result: etree._Element | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="xml-parse", daemon=True).start()

    def parse(self, data: bytes) -> etree._Element:
        self.parsed += len(data)
        self._data = data
        self._go.release()
        try:
            self._done.acquire()
        except BaseException:  # KeyboardInterrupt while waiting: never reuse this worker
            self.broken = True
            raise
        result, error, self._result, self._error = self._result, self._error, None, None
        if error is not None:
            raise error
        assert result is not None
        return result

    def stop(self) -> None:
        self._data = None
        self._go.release()

    def _run(self) -> None:
        parser = new_parser(huge_tree=True, collect_ids=False)  # holds this thread's dictionary
        while True:
            self._go.acquire()
            data = self._data
            if data is None:
                return  # the thread ends: lxml drops its dictionary context, the parser goes too
            try:
                self._result = etree.fromstring(data, parser)
            except BaseException as exc:  # handed to the caller, which raises it
                self._error = exc
            finally:
                self._done.release()


class _ParseThread:
    """The current worker, replaced after RECYCLE_BYTES (and in a forked child, which has no thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one message at a time
        self._worker: _Worker | None = None
        self._pid = 0

    def parse(self, data: bytes) -> etree._Element:
        with self._lock:
            worker = self._worker
            if worker is None or worker.broken or worker.parsed >= RECYCLE_BYTES or self._pid != os.getpid():
                if worker is not None and not worker.broken and self._pid == os.getpid():
                    worker.stop()
                worker = self._worker = _Worker()
                self._pid = os.getpid()
            return worker.parse(data)


_THREAD = _ParseThread()


def parse_message(data: bytes) -> etree._Element:
    """Parse one framed message into an element; raise RpcError(malformed-message) on any fault."""
    data = data.lstrip()
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data[:4096]:
        raise malformed("DOCTYPE and entity declarations are not accepted")
    try:
        root = _THREAD.parse(data)
    except etree.XMLSyntaxError as exc:
        raise malformed(f"XML parse error: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise malformed("DOCTYPE is not accepted")
    return root


def local(tag: object) -> str:
    """Local name of an element tag (Clark notation aware)."""
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2]


def ns_of(tag: object) -> str | None:
    if not isinstance(tag, str) or not tag.startswith("{"):
        return None
    return tag[1 : tag.index("}")]
