"""Property tests for LineCutter: random byte streams cut at random places against a model.

The model reads the whole stream at once with the rules written out plainly (a line ends at a
newline or a NUL; NULs are garbage; a line longer than ``max_line`` is skipped; a fragment
before a NUL is never a line; the unterminated end is held back, or rejected when final). The
cutter, fed the same stream in random blocks the way the daemon and ``ingest`` feed it, must
agree exactly, account for every byte, and never raise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmod_tracker.events import Rejected
from lmod_tracker.follow import CUT_BY_NUL, INCOMPLETE, RAW_BYTES, Cut, LineCutter

TAG = b"ModuleUsageTracking"


def is_ours(prefix: bytes) -> bool:
    return TAG in prefix


@dataclass
class Outcome:
    lines: list[tuple[int, bytes]] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    foreign: int = 0
    garbage: int = 0
    consumed: int = 0


def model(stream: bytes, max_line: int, raw_bytes: int, *, final: bool) -> Outcome:
    """What the cutter must make of ``stream``, read in one piece, rule by rule."""
    out = Outcome()
    n = len(stream)
    i = 0
    while i < n:
        if stream[i] == 0:
            j = i
            while j < n and stream[j] == 0:
                j += 1
            out.garbage += j - i
            i = j
            continue
        ends = [k for k in (stream.find(b"\n", i), stream.find(b"\0", i)) if k >= 0]
        j = min(ends) if ends else n
        newline = j < n and stream[j] == 10
        if j - i > max_line:  # too long, whatever ends it
            if j == n and j - i < raw_bytes and not final:
                break  # held back until raw_bytes of it are there
            raw = stream[i:j][:raw_bytes]
            if is_ours(raw):
                out.rejects.append(Rejected(i, f"line longer than {max_line} bytes", raw))
            else:
                out.foreign += 1
            i = j + 1 if newline else j
        elif newline:
            out.lines.append((i, stream[i:j + 1]))
            i = j + 1
        elif j < n:  # cut short by a NUL
            raw = stream[i:j][:raw_bytes]
            if is_ours(raw):
                out.rejects.append(Rejected(i, CUT_BY_NUL, raw))
            else:
                out.foreign += 1
            i = j
        elif final:
            out.rejects.append(Rejected(i, INCOMPLETE, stream[i:][:raw_bytes]))
            i = n
        else:
            break  # held back
    out.consumed = i
    return out


def split_lines(cut: Cut) -> list[tuple[int, bytes]]:
    found = []
    for at, block in cut.lines:
        assert block.endswith(b"\n")
        pos = at
        for line in _newline_split(block):
            found.append((pos, line))
            pos += len(line)
    return found


def _newline_split(block: bytes) -> list[bytes]:
    """Lines ending in ``\n`` only (``splitlines`` would also split at ``\r``)."""
    return [line + b"\n" for line in block.split(b"\n")[:-1]]


def feed(stream: bytes, sizes: list[int], max_line: int, raw_bytes: int = RAW_BYTES, *,
         final: bool) -> Outcome:
    """Feed ``stream`` like ``ingest`` does: held-back bytes are carried into the next block."""
    cutter = LineCutter(max_line, is_ours, raw_bytes=raw_bytes)
    out = Outcome()
    carry = b""
    pos = 0
    read = 0
    sizes = [*sizes, len(stream)]
    for size in sizes:
        piece = stream[read:read + size]
        read += len(piece)
        last = read == len(stream)
        data = carry + piece
        cut = cutter.cut(data, pos, final=final and last)
        check_accounting(cut, data, cutter)
        out.lines += split_lines(cut)
        out.rejects += cut.rejects
        out.foreign += cut.foreign
        out.garbage += cut.garbage_bytes
        carry = data[cut.consumed:]
        pos += cut.consumed
        assert pos + len(carry) == read
        if last:
            break
    assert cutter.garbage_bytes == out.garbage
    out.consumed = pos
    return out


def feed_reads(stream: bytes, extra: int, max_line: int, raw_bytes: int, *,
               final: bool) -> Outcome:
    """Feed ``stream`` like the follower does: reads at the position, of at least the
    cutter's window."""
    cutter = LineCutter(max_line, is_ours, raw_bytes=raw_bytes)
    block = cutter.window + extra - 1
    out = Outcome()
    pos = 0
    while True:
        data = stream[pos:pos + block]
        if not data:
            break
        cut = cutter.cut(data, pos, final=final and len(data) < block)
        check_accounting(cut, data, cutter)
        if not cut.consumed:
            break
        out.lines += split_lines(cut)
        out.rejects += cut.rejects
        out.foreign += cut.foreign
        out.garbage += cut.garbage_bytes
        pos += cut.consumed
    out.consumed = pos
    return out


def check_accounting(cut: Cut, data: bytes, cutter: LineCutter) -> None:
    line_bytes = sum(len(b) for _, b in cut.lines)
    assert line_bytes + cut.rejected_bytes + cut.foreign_bytes + cut.garbage_bytes == (
        cut.consumed)
    assert cut.consumed + cutter.held_back == len(data)
    assert cut.garbage_bytes <= data.count(b"\0")
    assert cutter.held_back < cutter.window
    assert b"\0" not in data[cut.consumed:]
    for _, b in cut.lines:
        assert b"\0" not in b
        assert all(len(line) <= cutter.max_line + 1 for line in _newline_split(b))


def _word(draw: st.DrawFn, alphabet: str, lo: int, hi: int) -> bytes:
    return draw(st.text(alphabet, min_size=lo, max_size=hi)).encode()


@st.composite
def streams(draw: st.DrawFn, max_line: int) -> bytes:
    """A mix of valid, partial, foreign, long and damaged lines."""
    parts = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(
            ["ours", "ours", "foreign", "partial", "nul", "long", "cr", "empty", "bytes"]))
        text = _word(draw, "abc =./0123", 0, max(1, max_line - len(TAG) - 2))
        if kind == "ours":
            parts.append(TAG + b": " + text[:max(0, max_line - len(TAG) - 2)] + b"\n")
        elif kind == "foreign":
            parts.append(text + b"\n")
        elif kind == "partial":
            parts.append(draw(st.sampled_from([TAG, b""])) + text)
        elif kind == "nul":
            parts.append(b"\0" * draw(st.sampled_from([1, 2, max_line, 3 * max_line + 7])))
        elif kind == "long":
            length = draw(st.integers(max_line - 2, 4 * max_line))
            body = draw(st.sampled_from([TAG, b"x"])) + b"y" * length
            parts.append(body + draw(st.sampled_from([b"\n", b"", b"\0"])))
        elif kind == "cr":
            parts.append(text + b"\r\n" + b"\r")
        elif kind == "empty":
            parts.append(b"\n")
        else:
            parts.append(draw(st.binary(max_size=2 * max_line)))
    return b"".join(parts)


class Case(NamedTuple):
    stream: bytes
    max_line: int
    raw_bytes: int
    sizes: list[int]
    final: bool


@st.composite
def cases(draw: st.DrawFn) -> Case:
    max_line = draw(st.sampled_from([1, 8, 40, 64]))
    raw_bytes = draw(st.sampled_from([1, 5, 30, 100, 300]))
    stream = draw(streams(max_line))
    sizes = draw(st.lists(st.integers(0, 3 * max_line + 10), max_size=40))
    return Case(stream, max_line, raw_bytes, sizes, draw(st.booleans()))


def _same(got: Outcome, want: Outcome) -> None:
    assert got.lines == want.lines
    assert got.rejects == want.rejects
    assert (got.foreign, got.garbage, got.consumed) == (want.foreign, want.garbage,
                                                        want.consumed)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_random_blocks_agree_with_the_model(case: Case) -> None:
    stream, max_line, raw, sizes, final = case
    want = model(stream, max_line, raw, final=final)
    _same(feed(stream, sizes, max_line, raw, final=final), want)
    _same(feed(stream, [], max_line, raw, final=final), want)  # one block
    _same(feed(stream, [1] * len(stream), max_line, raw, final=final), want)  # byte by byte
    # Every byte is a line, a reject, foreign, garbage or held back; lines are the
    # newline-terminated, NUL-free, short-enough pieces.
    assert want.garbage == stream[:want.consumed].count(b"\0")
    if final:
        assert want.consumed == len(stream)
    else:
        assert b"\n" not in stream[want.consumed:] and b"\0" not in stream[want.consumed:]


@settings(max_examples=200, deadline=None)
@given(cases(), st.integers(1, 200))
def test_reads_at_the_position_agree_with_the_model(case: Case, extra: int) -> None:
    got = feed_reads(case.stream, extra, case.max_line, case.raw_bytes, final=case.final)
    _same(got, model(case.stream, case.max_line, case.raw_bytes, final=case.final))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 100), st.integers(1, 200),
       st.lists(st.integers(0, 500)), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, max_line: int, raw: int, sizes: list[int],
                                     final: bool) -> None:
    _same(feed(data, sizes, max_line, raw, final=final),
          model(data, max_line, raw, final=final))
