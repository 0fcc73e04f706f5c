"""Reading one file's content: complete lines from an offset, into chunks for the writer.

:class:`LineCutter` decides what every byte of a buffer is: part of a complete line for the
parser, of a line it must not parse (too long, cut short), NUL garbage, or of an unterminated
last line it holds back. :class:`Follower` applies it to one open file identity with ``pread``, so
the position lives in one integer that only ever moves past bytes the cutter accounted for.
The one-shot ``ingest`` path uses the same cutter, so a rule about partial, long or damaged
lines lives here once.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from lmod_tracker.events import Chunk, FileKey, LoadEvent, Rejected
from lmod_tracker.files import (
    TAIL_BYTES,
    Change,
    classify,
    read_fingerprint,
    read_tail,
    tail_hash,
)
from lmod_tracker.parse import ParsedBlock, Parser

#: How many leading bytes of a line the cutter keeps in a reject and shows to ``is_ours``
#: (more than :data:`lmod_tracker.parse.HEADER_BYTES`, so the answer is the whole line's).
RAW_BYTES = 4096
#: Reject reasons given by the cutter (the parser gives its own for lines it reads).
INCOMPLETE = "incomplete last line (no newline)"
CUT_BY_NUL = "line cut short by NUL bytes"

#: Blocks one :meth:`Follower.read_chunk` call reads at most while it finds nothing to report
#: (NUL runs, a long line being skipped), so other files get their turn.
MAX_SILENT_BLOCKS = 64

_NULS = re.compile(rb"\x00+")


def _tagged(prefix: bytes) -> bool:
    """The default ``is_ours``: every line counts as ours (rejected, never counted foreign)."""
    return True


class Cut(NamedTuple):
    """What :meth:`LineCutter.cut` made of one buffer.

    Every byte of the buffer is in exactly one place::

        sum(len(b) for _, b in lines) + rejected_bytes + foreign_bytes + garbage_bytes
            == consumed
        consumed + held_back == len(data)

    (``held_back`` is :attr:`LineCutter.held_back` after the call.)
    """

    #: Runs of complete lines for the parser: ``(file offset, bytes)``, each ending in a
    #: newline. Usually one run; more when skipped bytes lie between them.
    lines: list[tuple[int, bytes]]
    #: Lines with our tag that the parser must not see: too long, cut short by NULs, or an
    #: unterminated last line given up for good (``final``).
    rejects: list[Rejected]
    #: Lines without our tag skipped here (too long, or cut short by NULs).
    foreign: int
    #: How far the caller's position moves.
    consumed: int
    rejected_bytes: int
    foreign_bytes: int
    #: NUL bytes skipped.
    garbage_bytes: int


class _Out:
    """Accumulator for the general (slow) path of :meth:`LineCutter.cut`."""

    __slots__ = ("foreign", "foreign_bytes", "garbage", "lines", "rejected_bytes", "rejects")

    def __init__(self) -> None:
        self.lines: list[tuple[int, bytes]] = []
        self.rejects: list[Rejected] = []
        self.foreign = 0
        self.rejected_bytes = 0
        self.foreign_bytes = 0
        self.garbage = 0


class LineCutter:
    """Cuts a byte stream into complete lines; everything else is accounted for, never parsed.

    The caller hands in buffers that continue each other: each one starts where the previous
    one's consumed bytes ended (held-back bytes are handed in again). What comes out does not
    depend on where the stream is split into buffers. The rules:

    *A line ends at a newline.* Bytes after the last newline are held back, not consumed,
    however long the caller waits: a writer may still be in the middle of the line, and a half
    written ``time=1700000123.0001`` parses as a different, valid time. Only when the caller
    knows that no writer will ever finish the line (``final``) is it consumed, as a reject
    (:data:`INCOMPLETE`), never as a line to parse.

    *A line is at most ``max_line`` bytes* (without its newline). A longer one becomes one
    reject if ``is_ours`` says its first ``raw_bytes`` bytes carry our tag (they are kept in
    the reject), else one foreign line, and it is skipped to its end whatever its length, so
    memory never depends on the input. It is decided as soon as ``max_line + 1`` bytes and
    ``raw_bytes`` bytes of it (or its end) are seen; until then it is held back like any
    unfinished line.

    *NUL bytes are garbage, and a run of them ends a line.* NULs are what ``copytruncate``
    leaves when the writer does not append (the writer's next write lands at its old offset,
    the hole before it reads as NULs) and what a crash leaves when the file size reached the
    disk before the data did. In both cases the bytes after the NULs are a fresh line from a
    live writer, and the bytes before them, back to the last newline, are a line that writer
    never finished. Treating the run as a boundary keeps the fresh line (``NUL*100000 + line``
    is that line) and never glues the unfinished fragment to it, which would turn two damaged
    halves into a plausible but wrong event. The fragment is a partial line and partial lines
    are never data: a reject (:data:`CUT_BY_NUL`) if it carries our tag, else a foreign line.
    Dropping NULs inside a line instead would splice unrelated bytes together, and rejecting
    the whole line would lose the valid line that follows the run. The NUL bytes themselves
    are counted in :attr:`garbage_bytes`, in any number, and never held back.

    Counters: :attr:`garbage_bytes` (NUL bytes skipped so far) and :attr:`held_back` (bytes
    of the unterminated last line of the latest buffer, less than :attr:`window`).
    """

    def __init__(self, max_line: int, is_ours: Callable[[bytes], bool] = _tagged, *,
                 raw_bytes: int = RAW_BYTES) -> None:
        if max_line < 1 or raw_bytes < 1:
            raise ValueError("max_line and raw_bytes must be at least 1")
        self.max_line = max_line
        self.is_ours = is_ours
        self.raw_bytes = raw_bytes
        #: A buffer that starts at a line start and holds this many bytes is always cut into
        #: something (callers that read in blocks must read at least this much).
        self.window = max(max_line + 1, raw_bytes)
        #: Inside a line longer than ``max_line``: bytes are skipped up to its newline or NUL.
        self.skipping = False
        self._skip_ours = False
        self.garbage_bytes = 0
        self.held_back = 0

    def reset(self) -> None:
        """Forget the position in the stream (the content restarts); counters stay."""
        self.skipping = False
        self._skip_ours = False
        self.held_back = 0

    def cut(self, data: bytes, offset: int, *, final: bool = False) -> Cut:
        """Cut ``data``, which starts at stream ``offset``; see :class:`Cut` for the result.

        ``final`` says ``data`` runs to the end of a stream no writer will extend (a finished
        gzip file, a file that left the directory long ago): an unterminated last line is
        then consumed as a reject instead of held back.
        """
        if self.skipping or b"\0" in data:
            return self._cut_general(data, offset, final)
        # The hot path: no NULs, at a line start. Check in windows of max_line + 1 bytes that
        # every complete line fits (about len(data) / max_line rfind calls).
        n = len(data)
        limit = self.max_line + 1
        rfind = data.rfind
        pos = 0
        last = n - limit
        while pos <= last:
            nl = rfind(b"\n", pos, pos + limit)
            if nl < 0:
                return self._cut_general(data, offset, final)
            pos = nl + 1
        end = rfind(b"\n", pos) + 1 or pos
        if end < n and final:
            return self._cut_general(data, offset, final)
        self.held_back = n - end
        return Cut([(offset, data[:end])] if end else [], [], 0, end, 0, 0, 0)

    # -- the general path: NULs, long lines, final ---------------------------------------

    def _cut_general(self, data: bytes, offset: int, final: bool) -> Cut:
        out = _Out()
        n = len(data)
        has_nul = b"\0" in data
        pos = 0
        if self.skipping:
            pos = self._skip(data, has_nul, out)
        while pos < n:
            stop = data.find(b"\0", pos) if has_nul else -1
            if stop < 0:
                has_nul = False
                stop = n
            pos = self._region(data, offset, pos, stop, final, out)
            if pos < stop:
                break  # an unterminated last line, held back
            if stop < n:
                m = _NULS.match(data, stop)
                assert m is not None
                out.garbage += m.end() - stop
                pos = m.end()
        if final:
            self.skipping = False
        self.held_back = n - pos
        self.garbage_bytes += out.garbage
        return Cut(out.lines, out.rejects, out.foreign, pos, out.rejected_bytes,
                   out.foreign_bytes, out.garbage)

    def _skip(self, data: bytes, has_nul: bool, out: _Out) -> int:
        """Continue skipping a long line: up to and with its newline, or up to a NUL."""
        end = data.find(b"\n")
        if end >= 0:
            end += 1
        if has_nul:
            z = data.find(b"\0", 0, end if end >= 0 else len(data))
            if z >= 0:
                end = z
        if end < 0:
            end = len(data)
        else:
            self.skipping = False
        if self._skip_ours:
            out.rejected_bytes += end
        else:
            out.foreign_bytes += end
        return end

    def _region(self, data: bytes, offset: int, pos: int, stop: int, final: bool,
                out: _Out) -> int:
        """Cut ``data[pos:stop]`` (no NULs; ``pos`` is a line start, ``stop`` a NUL or the end).

        Returns where the consumed bytes end: ``stop``, or the start of a held-back line.
        """
        limit = self.max_line + 1
        run = pos  # start of the current run of complete lines
        while stop - pos >= limit:
            nl = data.rfind(b"\n", pos, pos + limit)
            if nl >= 0:
                pos = nl + 1
                continue
            # A line longer than max_line starts at pos.
            nl = data.find(b"\n", pos + limit, stop)
            content_end = stop if nl < 0 else nl
            if content_end == len(data) and content_end - pos < self.raw_bytes and not final:
                break  # held back until its first raw_bytes are here
            if pos > run:
                out.lines.append((offset + run, data[run:pos]))
            raw = data[pos:min(content_end, pos + self.raw_bytes)]
            ours = self.is_ours(raw)
            if ours:
                out.rejects.append(
                    Rejected(offset + pos, f"line longer than {self.max_line} bytes", raw))
            else:
                out.foreign += 1
            end = stop if nl < 0 else nl + 1
            if nl < 0 and stop == len(data):
                self.skipping = True  # goes on in the next buffer
                self._skip_ours = ours
            if ours:
                out.rejected_bytes += end - pos
            else:
                out.foreign_bytes += end - pos
            pos = run = end
        nl = data.rfind(b"\n", pos, stop)
        if nl >= 0:
            pos = nl + 1
        if pos > run:
            out.lines.append((offset + run, data[run:pos]))
        if pos == stop:
            return stop
        raw = data[pos:min(stop, pos + self.raw_bytes)]
        if stop < len(data):  # the line ends at a NUL: cut short
            if self.is_ours(raw):
                out.rejects.append(Rejected(offset + pos, CUT_BY_NUL, raw))
                out.rejected_bytes += stop - pos
            else:
                out.foreign += 1
                out.foreign_bytes += stop - pos
            return stop
        if final:
            out.rejects.append(Rejected(offset + pos, INCOMPLETE, raw))
            out.rejected_bytes += stop - pos
            return stop
        return pos


def parse_cuts(parser: Parser, cuts: Iterable[Cut]) -> ParsedBlock:
    """Parse the lines of ``cuts`` and merge in the cutter's rejects and foreign lines.

    Rejects come out in file order.
    """
    events: list[LoadEvent] = []
    rejects: list[Rejected] = []
    foreign = 0
    sources = 0
    for cut in cuts:
        if cut.rejects:
            rejects.extend(cut.rejects)
            sources += 1
        foreign += cut.foreign
        for at, block in cut.lines:
            parsed = parser.parse_block(block, at)
            if not events:
                events = parsed.events
            else:
                events.extend(parsed.events)
            if parsed.rejects:
                rejects.extend(parsed.rejects)
                sources += 1
            foreign += parsed.foreign
    if sources > 1:
        rejects.sort(key=_offset)
    return ParsedBlock(events, rejects, foreign)


def _offset(reject: Rejected) -> int:
    return reject.offset


class Read(NamedTuple):
    """Bytes of one file read and cut, not parsed yet: ``start`` to ``end``, and the tail hash
    of ``end``."""

    cuts: list[Cut]
    start: int
    end: int
    tail: str


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
        self.cutter = LineCutter(parser.max_line_bytes, parser.is_ours)
        # A read must hold what the cutter needs to decide about a line, or a line longer than
        # the block would be held back for ever.
        self.block_bytes = max(block_bytes, self.cutter.window)
        self.present = True           # matched by the last directory scan
        #: the start offset is known (False while the file is held open, waiting for its first
        #: line or for the database to say where to resume)
        self.resolved = True
        self.at_end = False           # start at the end if no checkpoint (start_position)
        self.idle_since = time.monotonic()
        self.size = 0
        #: hash of the bytes before ``offset``: checked on every look, so that content
        #: rewritten in place (truncated and regrown past the offset) is noticed
        self.tail = read_tail(fd, offset) if key is not None else ""

    def __repr__(self) -> str:
        return f"Follower({self.path!r}, ino={self.ino}, offset={self.offset})"

    @property
    def held_back(self) -> int:
        """Bytes of an unterminated last line waiting for its newline (after the last read)."""
        return self.cutter.held_back

    @property
    def garbage_bytes(self) -> int:
        """NUL bytes skipped in this file so far."""
        return self.cutter.garbage_bytes

    def check(self) -> Change:
        """Look at the file again: truncated or replaced content restarts at offset 0."""
        self.size = os.fstat(self.fd).st_size
        fingerprint = read_fingerprint(self.fd)
        if self.key is None:
            if fingerprint is not None:
                self.key = FileKey(self.dev, self.ino, fingerprint)
            return Change.NONE
        change = classify(self.offset, self.size, self.key.fingerprint, fingerprint)
        if change is Change.NONE and self.offset and read_tail(self.fd, self.offset) != self.tail:
            change = Change.REPLACED  # same first line, other bytes before the offset
        if change is not Change.NONE:
            self.offset = 0
            self.tail = ""
            self.cutter.reset()
            self.key = None if fingerprint is None else FileKey(self.dev, self.ino, fingerprint)
        return change

    def read_chunk(self, *, final: bool = False) -> Chunk | None:
        """The next chunk read from the file and parsed here, or None when no byte could be
        consumed (:meth:`read` and :meth:`chunk` for parsing elsewhere)."""
        read = self.read(final=final)
        return None if read is None else self.chunk(read, parse_cuts(self.parser, read.cuts))

    def chunk(self, read: Read, parsed: ParsedBlock) -> Chunk:
        """The chunk of a :meth:`read`, once its lines are parsed."""
        return Chunk(self.key, self.path, read.end, parsed.events,  # type: ignore[arg-type]
                     parsed.rejects, parsed.foreign, read.end - read.start, time.time(),
                     read.tail)

    def read(self, *, final: bool = False) -> Read | None:
        """Read and cut the next chunk's bytes, or None when no byte could be consumed.

        A chunk ends after the first block that has something to report, unless that block
        ends inside a line being skipped (then reading goes on to the line's end, so the
        checkpoint does not fall inside it): most chunks hold one block of lines, a chunk
        around a long line at most two. A chunk may hold no event at all when it only moves
        the offset past NULs or a long line (after at most :data:`MAX_SILENT_BLOCKS` blocks).
        ``final`` gives an unterminated last line up as a reject (see :meth:`LineCutter.cut`).
        """
        if self.key is None:
            return None
        start = self.offset
        size = self.block_bytes
        cuts: list[Cut] = []
        had_lines = False
        before = b""  # the bytes just before the new offset, from the last block read
        for _ in range(MAX_SILENT_BLOCKS):
            data = os.pread(self.fd, size, self.offset)
            if not data:
                break
            cut = self.cutter.cut(data, self.offset, final=final and len(data) < size)
            if not cut.consumed:
                break
            self.offset += cut.consumed
            before = data[max(0, cut.consumed - TAIL_BYTES):cut.consumed]
            cuts.append(cut)
            if (cut.lines or cut.rejects or cut.foreign) and (
                    not self.cutter.skipping or had_lines):
                break
            had_lines = had_lines or bool(cut.lines)
        if self.offset == start:
            return None
        self.idle_since = time.monotonic()
        self.tail = (tail_hash(before) if len(before) == TAIL_BYTES or len(before) == self.offset
                     else read_tail(self.fd, self.offset))
        return Read(cuts, start, self.offset, self.tail)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
