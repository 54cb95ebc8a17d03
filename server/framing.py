"""Sans-I/O NETCONF message framing: RFC 6242 end-of-message (1.0) and chunked (1.1).

No sockets here (like h11): the session feeds bytes with `receive_data`, drains whole messages with
`next_message()` (bytes, or NEED_DATA), and frames outgoing messages with `frame()`. Receive is linear
in the input: bytes are appended to one bytearray consumed from a moving offset, the end-of-message
search resumes where the previous one stopped, and chunk bodies are collected then joined once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

EOM = b"]]>]]>"
MAX_CHUNK = 4294967295
#: parts at least this large get their chunk header written apart (not copied behind it)
_APART = 1 << 20


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = _Sentinel.NEED_DATA


class FramingError(Exception):
    """The peer broke the framing rules or exceeded the size limit; the session must be closed."""


class Framer:
    """Turns a byte stream into NETCONF messages and back; starts in 1.0 mode until `use_chunked()`."""

    def __init__(self, max_message_size: int = 64 * 1024 * 1024) -> None:
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed bytes in _buf
        self._scan = 0  # 1.0: where the next EOM search starts
        self._chunks: list[bytes | bytearray] = []  # 1.1: bodies of the message being received
        self._size = 0  # 1.1: bytes collected for the current message
        self._need = 0  # 1.1: bytes still missing from the current chunk body
        self.chunked = False
        self._reader: Callable[[], bytes | _Sentinel] = self._read_eom
        self.closed = False

    # -- input ---------------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Append bytes from the transport ("" means the peer closed)."""
        if not data:
            self.closed = True
            return
        if self._pos and self._pos > len(self._buf) // 2:
            del self._buf[: self._pos]
            self._scan = max(0, self._scan - self._pos)
            self._pos = 0
        self._buf += data

    @property
    def mid_message(self) -> bool:
        """True when a partial message is buffered (used to log an abrupt disconnect)."""
        return len(self._buf) > self._pos or bool(self._chunks) or self._need > 0

    def use_chunked(self) -> None:
        """Switch to 1.1 chunked framing (after both hellos advertised base:1.1)."""
        self.chunked = True
        self._reader = self._read_chunked

    def next_message(self) -> bytes | _Sentinel:
        """Return the next complete message, or NEED_DATA; raise FramingError on a framing fault."""
        return self._reader()

    # -- 1.0 -----------------------------------------------------------------------------------------
    def _read_eom(self) -> bytes | _Sentinel:
        start = max(self._pos, self._scan - (len(EOM) - 1))
        idx = self._buf.find(EOM, start)
        if idx < 0:
            self._scan = len(self._buf)
            if len(self._buf) - self._pos > self.max_message_size:
                raise FramingError(f"message exceeds {self.max_message_size} bytes")
            return NEED_DATA
        msg = bytes(self._buf[self._pos : idx])
        self._pos = idx + len(EOM)
        self._scan = self._pos
        if len(msg) > self.max_message_size:
            raise FramingError(f"message exceeds {self.max_message_size} bytes")
        return msg

    # -- 1.1 -----------------------------------------------------------------------------------------
    def _read_chunked(self) -> bytes | _Sentinel:
        buf = self._buf
        while True:
            if self._need:
                avail = len(buf) - self._pos
                if not avail:
                    return NEED_DATA
                take = min(avail, self._need)
                self._chunks.append(buf[self._pos : self._pos + take])
                self._pos += take
                self._need -= take
                continue
            # a chunk header: \n#<len>\n  or end of chunks: \n##\n
            if len(buf) - self._pos < 4:
                return NEED_DATA
            if buf[self._pos] != 0x0A or buf[self._pos + 1] != 0x23:
                raise FramingError("expected chunk header '\\n#'")
            if buf[self._pos + 2] == 0x23:
                if buf[self._pos + 3] != 0x0A:
                    raise FramingError("bad end-of-chunks marker")
                self._pos += 4
                if not self._chunks:
                    raise FramingError("end-of-chunks without a chunk")
                msg = b"".join(self._chunks)
                self._chunks = []
                self._size = 0
                return msg
            end = buf.find(b"\n", self._pos + 2, self._pos + 2 + 11)
            if end < 0:
                if len(buf) - self._pos > 2 + 11:
                    raise FramingError("chunk size too long")
                return NEED_DATA
            digits = bytes(buf[self._pos + 2 : end])
            if not digits.isdigit() or digits[:1] == b"0":
                raise FramingError(f"bad chunk size {digits[:16]!r}")
            size = int(digits)
            if size > MAX_CHUNK:
                raise FramingError("chunk size above 4294967295")
            self._size += size
            if self._size > self.max_message_size:
                raise FramingError(f"message exceeds {self.max_message_size} bytes")
            self._pos = end + 1
            self._need = size

    # -- output --------------------------------------------------------------------------------------
    def frame(self, payload: bytes) -> bytes:
        """Frame one outgoing message in the current mode."""
        if self.chunked:
            return b"\n#%d\n%s\n##\n" % (len(payload), payload)
        return payload + EOM

    def frame_parts(self, parts: list[bytes]) -> list[bytes]:
        """Frame one outgoing message given as parts, without joining them: in 1.1 each non-empty
        part becomes one chunk (its header joined to it; parts are the size of a provider's page)."""
        out = []
        for part in parts:
            if not part:
                continue
            if self.chunked and len(part) >= _APART:
                out.append(b"\n#%d\n" % len(part))  # the header apart: no copy of a 20 MB part
                out.append(part)
            else:
                out.append(self.frame_chunk(part))
        out.append(self.end_of_message())
        return out

    def frame_chunk(self, part: bytes) -> bytes:
        """One non-empty part of a message written piece by piece (1.1: one chunk)."""
        return b"\n#%d\n%s" % (len(part), part) if self.chunked else part

    def end_of_message(self) -> bytes:
        """What ends a message written piece by piece."""
        return b"\n##\n" if self.chunked else EOM
