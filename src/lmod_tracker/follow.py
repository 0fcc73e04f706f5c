"""Reading one file's content: complete lines from an offset, into chunks for the writer.

:class:`LineCutter` decides where the complete lines of a buffer end (and skips over lines too
long to keep); :class:`Follower` applies it to one open file identity with ``pread``, so the
position lives in one integer that moves only past whole lines.
"""

from __future__ import annotations

import contextlib
import os
import time

from lmod_tracker.events import Chunk, FileKey, Rejected
from lmod_tracker.files import Change, classify, read_fingerprint
from lmod_tracker.parse import Parser


class LineCutter:
    """Cuts a byte stream into complete lines, bounding how long a line may grow.

    A line longer than ``max_line`` is rejected once (its first bytes kept) and skipped up to
    its newline, however long it is, so memory never depends on the input.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.skipping = False

    def cut(self, data: bytes, offset: int, *, final: bool = False
            ) -> tuple[bytes, int, int, Rejected | None]:
        """``data`` starts at file ``offset``. Returns ``(lines, lines_offset, consumed, reject)``.

        ``lines`` are complete lines starting at ``lines_offset``; the caller moves its position
        by ``consumed``. With ``final`` a last line without newline counts as complete.
        """
        skipped = 0
        if self.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                return b"", offset, len(data), None
            self.skipping = False
            skipped = nl + 1
            data = data[skipped:]
            offset += skipped
        end = len(data) if final else data.rfind(b"\n") + 1
        if end == 0:
            if len(data) > self.max_line:
                self.skipping = True
                reject = Rejected(offset, f"line longer than {self.max_line} bytes", data[:4096])
                return b"", offset, skipped + len(data), reject
            return b"", offset, skipped, None
        return data[:end], offset, skipped + end, None


class Follower:
    """One file content being read: an open descriptor, its identity and the read offset.

    ``offset`` is where the next read starts; what is committed lives in the database. All
    methods block (they do file I/O) and are meant to run on a worker thread.
    """

    def __init__(self, path: str, fd: int, dev: int, ino: int, key: FileKey | None,
                 offset: int, parser: Parser, block_bytes: int) -> None:
        self.path = path
        self.fd = fd
        self.dev = dev
        self.ino = ino
        self.key = key
        self.offset = offset
        self.parser = parser
        self.block_bytes = block_bytes
        self.cutter = LineCutter(parser.max_line_bytes)
        self.present = True           # matched by the last directory scan
        self.idle_since = time.monotonic()
        self.size = 0

    def __repr__(self) -> str:
        return f"Follower({self.path!r}, ino={self.ino}, offset={self.offset})"

    def check(self) -> Change:
        """Look at the file again: truncated or replaced content restarts at offset 0."""
        self.size = os.fstat(self.fd).st_size
        fingerprint = read_fingerprint(self.fd)
        if self.key is None:
            if fingerprint is not None:
                self.key = FileKey(self.dev, self.ino, fingerprint)
            return Change.NONE
        change = classify(self.offset, self.size, self.key.fingerprint, fingerprint)
        if change is not Change.NONE:
            self.offset = 0
            self.cutter = LineCutter(self.parser.max_line_bytes)
            self.key = None if fingerprint is None else FileKey(self.dev, self.ino, fingerprint)
        return change

    def read_chunk(self, *, final: bool = False) -> Chunk | None:
        """The next chunk of complete lines, or None when there is nothing complete to read."""
        if self.key is None:
            return None
        while True:
            data = os.pread(self.fd, self.block_bytes, self.offset)
            if not data:
                return None
            lines, at, consumed, reject = self.cutter.cut(data, self.offset, final=final)
            if consumed == 0:
                return None
            self.offset += consumed
            self.idle_since = time.monotonic()
            if lines or reject is not None:
                break
        parsed = self.parser.parse_block(lines, at)
        rejects = parsed.rejects if reject is None else [reject, *parsed.rejects]
        return Chunk(self.key, self.path, self.offset, parsed.events, rejects, parsed.foreign,
                     consumed, time.time())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
