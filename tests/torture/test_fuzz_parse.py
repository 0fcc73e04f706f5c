"""Fuzzing the read path end to end: the line cutter and the parser together.

tests/unit/test_cutter_fuzz.py proves the cutter alone against a model of its rules. Here the
stream is made of pieces whose fate is known -- valid loads (each a unique line of
tests/support/torture.py), malformed lines of ours, foreign lines, empty lines, CRLF endings,
over-long lines of ours and of others, runs of NULs, half lines cut short by NULs, random
bytes, and a half line at the end -- and it goes through what the daemon runs (a
:class:`~lmod_tracker.follow.Follower` on a real file that grows in random pieces, looked at
after each) and what ``ingest`` runs (:class:`~lmod_tracker.follow.LineCutter` and
:func:`~lmod_tracker.follow.parse_cuts` on random blocks). Both must give exactly the expected
events (values included), rejects (at their exact offsets, with their raw bytes), foreign lines
and NUL bytes; chunks must chain (each starts where the previous ended); every byte is
consumed or held back as the unterminated last line; nothing raises, whatever the bytes.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmod_tracker.files import FINGERPRINT_BYTES, fingerprint_of, read_fingerprint
from lmod_tracker.follow import (
    CUT_BY_NUL,
    INCOMPLETE,
    RAW_BYTES,
    Cut,
    Follower,
    LineCutter,
    parse_cuts,
)
from lmod_tracker.parse import Parser
from tests.support.torture import expected_row, foreign_line, malformed_line, valid_line

MAX_LINE = 256
LONG = f"line longer than {MAX_LINE} bytes"
PARSER = Parser("ModuleUsageTracking", "last", MAX_LINE)
CI = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              max_examples=int(os.environ.get("LMT_TORTURE_FUZZ_EXAMPLES", "300")))


@dataclass
class Want:
    """What reading a stream must give."""

    events: list[tuple[str, ...]] = field(default_factory=list)
    rejects: list[tuple[int, str | None]] = field(default_factory=list)  # reason None: any
    foreign: int = 0
    garbage: int = 0
    tail: int = 0  # bytes of the unterminated last line


@dataclass
class Got:
    events: list[tuple[str, ...]] = field(default_factory=list)
    rejects: list[tuple[int, str, bytes]] = field(default_factory=list)
    foreign: int = 0
    garbage: int = 0
    consumed: int = 0

    def same_as(self, want: Want, stream: bytes, *, final: bool) -> None:
        assert self.events == want.events
        got = [(o, r) for o, r, _ in self.rejects]
        assert len(got) == len(want.rejects), (got, want.rejects)
        for (o, r), (wo, wr) in zip(got, want.rejects, strict=True):
            assert o == wo and (wr is None or r == wr), (got, want.rejects)
        for o, _, raw in self.rejects:  # the raw bytes are the file's, at that offset
            assert stream[o:o + len(raw)] == raw
        assert self.foreign == want.foreign
        assert self.garbage == want.garbage
        expected_consumed = len(stream) if final else len(stream) - want.tail
        assert self.consumed == expected_consumed


def _event(e: Any) -> tuple[str, ...]:
    return (e.user, e.package, e.version, e.host, e.load_time)


def _fate(line: bytes) -> tuple[str, Any]:
    """What the parser makes of one complete line on its own (the oracle for random bytes)."""
    parsed = PARSER.parse_block(line, 0)
    total = len(parsed.events) + len(parsed.rejects) + parsed.foreign
    assert total == 1, (line, parsed)
    if parsed.events:
        return "event", _event(parsed.events[0])
    if parsed.rejects:
        return "reject", None
    return "foreign", None


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, Want]:
    """A stream of pieces, each starting at a line start, and what it must give."""
    out = bytearray()
    want = Want()
    n = draw(st.integers(1, 10**6))
    for _ in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(
            ["valid", "valid", "valid", "crlf", "malformed", "foreign", "empty", "long_ours",
             "long_foreign", "nul", "frag_nul", "random"]))
        at = len(out)
        n += 1
        if kind in ("valid", "crlf"):
            line = valid_line(n)
            if kind == "crlf":
                line = line[:-1] + b"\r\n"
            out += line
            want.events.append(expected_row(n))
        elif kind == "malformed":
            out += malformed_line(n)
            want.rejects.append((at, None))
        elif kind == "foreign":
            out += foreign_line(n)
            want.foreign += 1
        elif kind == "empty":
            out += b"\n"
            want.foreign += 1
        elif kind in ("long_ours", "long_foreign"):
            head = valid_line(n)[:-1] if kind == "long_ours" else foreign_line(n)[:-1]
            length = draw(st.sampled_from([MAX_LINE + 1, 2 * MAX_LINE, RAW_BYTES + 10, 12_000]))
            out += head + b"x" * max(0, length - len(head)) + b"\n"
            if kind == "long_ours":
                want.rejects.append((at, LONG))
            else:
                want.foreign += 1
        elif kind == "nul":
            k = draw(st.sampled_from([1, 7, MAX_LINE + 5, 5000]))
            out += b"\0" * k
            want.garbage += k
        elif kind == "frag_nul":
            line = valid_line(n)
            frag = line[:draw(st.integers(1, len(line) - 1))]
            k = draw(st.sampled_from([1, 100, 9000]))
            out += frag + b"\0" * k
            if PARSER.is_ours(frag):
                want.rejects.append((at, CUT_BY_NUL))
            else:
                want.foreign += 1
            want.garbage += k
        else:
            body = draw(st.binary(max_size=MAX_LINE)).replace(b"\n", b" ").replace(b"\0", b" ")
            line = body + b"\n"
            what, value = _fate(line)
            out += line
            if what == "event":
                want.events.append(value)
            elif what == "reject":
                want.rejects.append((at, None))
            else:
                want.foreign += 1
    if draw(st.booleans()):  # a half line at the end, still being written
        line = valid_line(n + 1)
        frag = line[:draw(st.integers(1, len(line) - 1))]
        want.tail = len(frag)
        out += frag
    return bytes(out), want


def _final_want(want: Want, stream: bytes) -> Want:
    """With ``final``, the unterminated last line is given up as a reject."""
    if not want.tail:
        return want
    return Want(want.events, [*want.rejects, (len(stream) - want.tail, INCOMPLETE)],
                want.foreign, want.garbage, 0)


def _collect(got: Got, cuts: list[Cut], parser: Parser = PARSER) -> None:
    parsed = parse_cuts(parser, cuts)
    got.events += [_event(e) for e in parsed.events]
    got.rejects += [(r.offset, r.reason, r.raw) for r in parsed.rejects]
    got.foreign += parsed.foreign
    for cut in cuts:  # the parser sees whole lines only, each counted once
        lines = sum(b.count(b"\n") for _, b in cut.lines)
        alone = [PARSER.parse_block(b, at) for at, b in cut.lines]
        assert lines == sum(len(p.events) + len(p.rejects) + p.foreign for p in alone)
        got.garbage += cut.garbage_bytes


def follow(stream: bytes, splits: list[int], *, final: bool) -> Got:
    """The daemon's way: the file grows piece by piece; after each piece the follower looks
    and reads until it has nothing more."""
    got = Got()
    fd_w = -1
    with tempfile.TemporaryDirectory(prefix="lt-fuzz-") as tmp:
        path = os.path.join(tmp, "lmod.log")
        fd_w = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fd = os.open(path, os.O_RDONLY)
        try:
            st_ = os.fstat(fd)
            follower = Follower(path, fd, st_.st_dev, st_.st_ino, None, 0, PARSER, 4096)
            end = 0
            pos = 0
            for size in [*splits, len(stream)]:
                piece = stream[pos:pos + size]
                pos += len(piece)
                os.write(fd_w, piece)
                last = pos >= len(stream)
                while True:
                    assert follower.check().value == "none"
                    chunk = follower.read_chunk(final=final and last)
                    if chunk is None:
                        break
                    assert chunk.end_offset - chunk.nbytes == end  # chunks chain
                    end = chunk.end_offset
                    got.events += [_event(e) for e in chunk.events]
                    got.rejects += [(r.offset, r.reason, r.raw) for r in chunk.rejects]
                    got.foreign += chunk.foreign
                if last:
                    break
            got.garbage = follower.garbage_bytes
            got.consumed = follower.offset
            assert end == follower.offset
            if not final and read_fingerprint(fd) is not None:
                assert follower.offset + follower.held_back == len(stream)
        finally:
            os.close(fd)
            os.close(fd_w)
    return got


def ingest_like(stream: bytes, sizes: list[int], *, final: bool) -> Got:
    """``ingest``'s way: blocks of any size, held-back bytes handed in again."""
    cutter = LineCutter(PARSER.max_line_bytes, PARSER.is_ours)
    got = Got()
    carry = b""
    pos = read = 0
    for size in [*sizes, len(stream)]:
        piece = stream[read:read + size]
        read += len(piece)
        last = read >= len(stream)
        data = carry + piece
        cut = cutter.cut(data, pos, final=final and last)
        _collect(got, [cut])
        carry = data[cut.consumed:]
        pos += cut.consumed
        assert pos + len(carry) == read
        if last:
            break
    got.consumed = pos
    return got


def _no_identity(stream: bytes) -> bool:
    """A file whose first line is still incomplete is not read at all (it has no identity)."""
    return fingerprint_of(stream[:FINGERPRINT_BYTES]) is None


@CI
@given(streams(), st.lists(st.integers(1, 3000), max_size=12), st.booleans())
def test_follower_reads_exactly_what_the_pieces_say(case: tuple[bytes, Want],
                                                    splits: list[int], final: bool) -> None:
    stream, want = case
    if final:
        want = _final_want(want, stream)
    got = follow(stream, splits, final=final)
    if _no_identity(stream):
        assert got.consumed == 0 and not got.events
        return
    got.same_as(want, stream, final=final)


@CI
@given(streams(), st.lists(st.integers(0, 5000), max_size=20), st.booleans())
def test_ingest_blocks_read_exactly_what_the_pieces_say(case: tuple[bytes, Want],
                                                        sizes: list[int], final: bool) -> None:
    stream, want = case
    if final:
        want = _final_want(want, stream)
    ingest_like(stream, sizes, final=final).same_as(want, stream, final=final)


@CI
@given(st.binary(max_size=4000), st.lists(st.integers(1, 700), max_size=10), st.booleans())
def test_arbitrary_bytes_the_same_whatever_the_reads(data: bytes, splits: list[int],
                                                    final: bool) -> None:
    """Any bytes: no exception; the follower (file growing in pieces) and ingest (one block)
    agree on everything; rejects point at their own bytes."""
    whole = ingest_like(data, [], final=final)
    for o, _, raw in whole.rejects:
        assert data[o:o + len(raw)] == raw
    got = follow(data, splits, final=final)
    if _no_identity(data):
        assert got.consumed == 0
        return
    assert (got.events, got.rejects, got.foreign, got.garbage, got.consumed) == (
        whole.events, whole.rejects, whole.foreign, whole.garbage, whole.consumed)


@CI
@given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=40),
       st.integers(0, 10**9))
def test_parse_block_counts_every_line_once(lines: list[bytes], base: int) -> None:
    """parse_block never raises and counts every line once; rejects carry the offset of their
    line and its first bytes."""
    block = b"".join(line + b"\n" for line in lines)
    parsed = PARSER.parse_block(block, base)
    assert len(parsed.events) + len(parsed.rejects) + parsed.foreign == len(lines)
    starts = {}
    pos = base
    for line in lines:
        starts[pos] = line
        pos += len(line) + 1
    for r in parsed.rejects:
        assert r.offset in starts
        assert starts[r.offset][:len(r.raw)] == r.raw
    for line in lines:
        PARSER.parse_line(line)  # never raises
