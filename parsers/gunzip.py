"""A gzip file's text as a stream, inflated by zlib in one pass.

gzip.GzipFile inflates raw deflate and then runs a second pass over every byte for the
CRC; zlib checks the gzip wrapper (header, CRC, length) as it inflates. On a bill's text
that is about a quarter less CPU, in the process that feeds the parse's workers. The file
is read as GzipFile reads it: members one after another, zero bytes after a member
skipped; a file cut short is an EOFError, corrupt data or a wrong CRC a zlib.error.
"""

from __future__ import annotations

import io
import zlib
from typing import IO

_BLOCK = 64 << 10  # compressed bytes read at a time (fastest here of 64 KiB to 1 MiB)
_GZIP = 16 + zlib.MAX_WBITS  # zlib's window bits for a gzip member


class GunzipStream(io.RawIOBase):
    """Read-only, forward-only (rewinding to the start aside) text of a gzip file."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        super().__init__()
        self.fileobj = fileobj  # the compressed file, read up to fileobj.tell()
        self._start()

    def _start(self) -> None:
        self._inflate = zlib.decompressobj(_GZIP)
        self._input = b""  # read from the file, not yet given to zlib
        self._out = b""  # inflated, from self._at on not yet handed out
        self._at = 0

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Closes the compressed file too (it was opened for this stream)."""
        try:
            self.fileobj.close()
        finally:
            super().close()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Only back to the start (a reader peeking at the first bytes)."""
        if offset != 0 or whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a gzip stream seeks only back to its start")
        self.fileobj.seek(0)
        self._start()
        return 0

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        with memoryview(buffer) as view, view.cast("B") as out:
            want = len(out)
            if want == 0:
                return 0
            if self._at >= len(self._out):
                self._out, self._at = self._inflated(want), 0
            n = min(want, len(self._out) - self._at)
            with memoryview(self._out) as text:
                out[:n] = text[self._at : self._at + n]
            self._at += n
            return n

    def _inflated(self, most: int) -> bytes:
        """Up to ``most`` more bytes of text (at least one); b"" at the end of the file.
        ``most`` also bounds what a small, very compressible input expands to in memory."""
        while True:
            inflate = self._inflate
            if inflate.eof:
                if not self._next_member(inflate.unused_data):
                    return b""
                continue
            data = inflate.unconsumed_tail or self._input or self.fileobj.read(_BLOCK)
            self._input = b""
            if not data:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            out = inflate.decompress(data, most)
            if out:
                return out

    def _next_member(self, rest: bytes) -> bool:
        """After a member: zero bytes are skipped, and whatever follows starts another
        member (a zlib.error if it is not one). False at the end of the file."""
        rest = rest.lstrip(b"\0")
        while not rest:
            rest = self.fileobj.read(_BLOCK)
            if not rest:
                return False
            rest = rest.lstrip(b"\0")
        self._inflate = zlib.decompressobj(_GZIP)
        self._input = rest
        return True
