"""Sans-I/O framing (RFC 6242): whole, byte at a time, with trailing data, and every fault."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.framing import NEED_DATA, Framer, FramingError


def drain(f: Framer) -> list[bytes]:
    out = []
    while (m := f.next_message()) is not NEED_DATA:
        out.append(m)
    return out


def feed(data: bytes, *, chunked: bool, step: int | None = None, max_size: int = 1 << 20) -> list[bytes]:
    f = Framer(max_size)
    if chunked:
        f.use_chunked()
    out: list[bytes] = []
    if step is None:
        f.receive_data(data)
        return drain(f)
    for i in range(0, len(data), step):
        f.receive_data(data[i : i + step])
        out.extend(drain(f))
    return out


EOM_STREAM = b"<a/>]]>]]><b>x]]>y</b>]]>]]>"
CHUNK_STREAM = b"\n#4\n<a/>\n##\n\n#3\n<b>\n#1\nx\n#4\n</b>\n##\n"


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7])
def test_eom_whole_and_incremental(step):
    assert feed(EOM_STREAM, chunked=False, step=step) == [b"<a/>", b"<b>x]]>y</b>"]


@pytest.mark.parametrize("step", [None, 1, 2, 5])
def test_chunked_whole_and_incremental(step):
    assert feed(CHUNK_STREAM, chunked=True, step=step) == [b"<a/>", b"<b>x</b>"]


def test_trailing_partial_message_waits():
    f = Framer()
    f.use_chunked()
    f.receive_data(b"\n#4\n<a/>\n##\n\n#10\n<b>")
    assert drain(f) == [b"<a/>"]
    assert f.mid_message
    f.receive_data(b"1234567\n##\n")
    assert drain(f) == [b"<b>1234567"]
    assert not f.mid_message


def test_switch_to_chunked_after_hello_keeps_buffered_bytes():
    f = Framer()
    f.receive_data(b"<hello/>]]>]]>\n#3\n<c/\n#1\n>\n##\n")
    assert f.next_message() == b"<hello/>"
    f.use_chunked()
    assert drain(f) == [b"<c/>"]


@pytest.mark.parametrize(
    "bad",
    [
        b"#4\n<a/>\n##\n",
        b"\n#0\n\n##\n",
        b"\n#04\n<a/>\n##\n",
        b"\n#x\n",
        b"\n##\n",
        b"\n#4294967296\n",
        b"\n#12345678901\n",
    ],
)
def test_chunked_faults(bad):
    f = Framer()
    f.use_chunked()
    f.receive_data(bad)
    with pytest.raises(FramingError):
        drain(f)


def test_size_limit_both_modes():
    f = Framer(max_message_size=10)
    f.receive_data(b"x" * 20)
    with pytest.raises(FramingError):
        f.next_message()
    f = Framer(max_message_size=10)
    f.use_chunked()
    f.receive_data(b"\n#6\nxxxxxx\n#6\nxxxxxx\n##\n")
    with pytest.raises(FramingError):
        drain(f)


def test_frame_output():
    f = Framer()
    assert f.frame(b"<a/>") == b"<a/>]]>]]>"
    f.use_chunked()
    assert f.frame(b"<a/>") == b"\n#4\n<a/>\n##\n"


def test_eom_search_does_not_rescan(monkeypatch):
    """Receive is linear: each byte is searched for the delimiter a bounded number of times."""
    scanned = 0
    f = Framer(1 << 30)

    class CountingBuf(bytearray):
        def find(self, sub, start=0, *a):  # type: ignore[override]
            nonlocal scanned
            scanned += len(self) - start
            return bytearray.find(self, sub, start, *a)

    f._buf = CountingBuf()
    for _ in range(2000):
        f.receive_data(b"y" * 100)
        assert f.next_message() is NEED_DATA
    f.receive_data(b"]]>]]>")
    assert f.next_message() == b"y" * 200_000
    assert scanned < 3 * 200_006  # quadratic rescanning would be ~2000x larger


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5),
    sizes=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=40),
)
def test_chunked_roundtrip_any_split(messages, sizes, cuts):
    """Any message, cut into any chunk sizes, delivered in any pieces, comes out whole and in order."""
    stream = b""
    for m in messages:
        pos, i = 0, 0
        while pos < len(m):
            n = sizes[i % len(sizes)]
            stream += b"\n#%d\n" % len(m[pos : pos + n]) + m[pos : pos + n]
            pos, i = pos + n, i + 1
        stream += b"\n##\n"
    f = Framer()
    f.use_chunked()
    out, pos, i = [], 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        f.receive_data(stream[pos : pos + n])
        out.extend(drain(f))
        pos, i = pos + n, i + 1
    assert out == messages


@pytest.mark.parametrize("chunked", [False, True])
def test_frame_parts_is_one_message(chunked):
    """A reply framed part by part (empty parts skipped: a 1.1 chunk is never empty) reads back as
    the one message the joined parts make."""
    out, back = Framer(), Framer()
    if chunked:
        out.use_chunked()
        back.use_chunked()
    parts = [b"<rpc-reply>", b"", b"<a>1</a>" * 1000, b"<b/>", b"</rpc-reply>"]
    framed = out.frame_parts(parts)
    if chunked:
        assert b"\n#0\n" not in b"".join(framed) and len(framed) == 5
    for piece in framed:
        back.receive_data(piece)
    assert back.next_message() == b"".join(parts)
    assert back.next_message() is NEED_DATA
