"""parsers.gunzip reads a gzip file as gzip.GzipFile does, and refuses what it refuses."""

from __future__ import annotations

import gzip
import io
import tracemalloc
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers.gunzip import GunzipStream

STREAM_ERRORS = (OSError, EOFError, zlib.error)


def reads(blob: bytes, step: int = 1 << 16) -> Iterator[bytes]:
    """The text, read ``step`` bytes at a time into one buffer, as iter_chunks does."""
    stream = GunzipStream(io.BytesIO(blob))
    buf = bytearray(step)
    while n := stream.readinto(buf):
        assert 0 < n <= step
        yield bytes(buf[:n])


def read_all(blob: bytes, step: int = 1 << 16) -> bytes:
    return b"".join(reads(blob, step))


_MEMBERS = st.lists(
    st.tuples(st.binary(max_size=3000), st.integers(0, 9), st.integers(0, 3)),
    min_size=1,
    max_size=3,
)


@settings(max_examples=150, deadline=None)
@given(members=_MEMBERS, step=st.integers(1, 5000))
def test_members_and_zero_padding_read_as_gzipfile_reads_them(
    members: list[tuple[bytes, int, int]], step: int
) -> None:
    """Members one after another, each maybe followed by zero bytes, in reads of any size."""
    blob = b"".join(gzip.compress(text, level) + b"\0" * pad for text, level, pad in members)
    text = b"".join(t for t, _, _ in members)
    assert read_all(blob, step) == text
    assert gzip.GzipFile(fileobj=io.BytesIO(blob)).read() == text


@settings(max_examples=150, deadline=None)
@given(text=st.binary(max_size=5000), level=st.integers(0, 9), data=st.data())
def test_a_file_cut_short_is_an_error_never_a_shorter_text(
    text: bytes, level: int, data: st.DataObject
) -> None:
    blob = gzip.compress(text, level)
    cut = data.draw(st.integers(1, len(blob) - 1))
    with pytest.raises(STREAM_ERRORS):
        read_all(blob[:cut])
    with pytest.raises(STREAM_ERRORS):  # as GzipFile refuses it
        gzip.GzipFile(fileobj=io.BytesIO(blob[:cut])).read()


def test_a_wrong_crc_or_size_is_an_error() -> None:
    blob = bytearray(gzip.compress(b"20240301,100.00\n" * 100))
    for at in (-8, -1):  # the CRC's first byte, the length's last
        bad = bytearray(blob)
        bad[at] ^= 0xFF
        with pytest.raises(zlib.error):
            read_all(bytes(bad))


def test_bytes_after_a_member_that_start_no_member_are_an_error() -> None:
    blob = gzip.compress(b"a,b\n") + b"\0\0garbage"
    with pytest.raises(zlib.error):
        read_all(blob)
    with pytest.raises(gzip.BadGzipFile):
        gzip.GzipFile(fileobj=io.BytesIO(blob)).read()


def test_rewinds_to_its_start_and_seeks_nowhere_else() -> None:
    stream = GunzipStream(io.BytesIO(gzip.compress(b"PK\x03\x04 not a zip, text")))
    assert stream.read(4) == b"PK\x03\x04"
    assert stream.seek(0) == 0
    assert stream.read() == b"PK\x03\x04 not a zip, text"
    with pytest.raises(io.UnsupportedOperation):
        stream.seek(4)
    with pytest.raises(io.UnsupportedOperation):
        stream.seek(0, io.SEEK_END)


def test_a_very_compressible_file_expands_only_as_far_as_each_read_asks() -> None:
    """256 MiB of zeros gzip to about 250 KiB: read in 64 KiB pieces, memory stays small."""
    blob = gzip.compress(bytes(256 << 20), 9)
    tracemalloc.start()
    try:
        total = sum(len(piece) for piece in reads(blob, 64 << 10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 256 << 20
    assert peak < 8 << 20


def test_closing_the_stream_closes_the_file() -> None:
    raw = io.BytesIO(gzip.compress(b"x"))
    with GunzipStream(raw) as stream:
        assert stream.read() == b"x"
    assert raw.closed
