"""Reading one file: complete lines only, bounded lines, NUL garbage, truncation, replacement."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmod_tracker.events import Chunk, Rejected
from lmod_tracker.files import Change, read_fingerprint
from lmod_tracker.follow import (
    CUT_BY_NUL,
    INCOMPLETE,
    RAW_BYTES,
    Cut,
    Follower,
    LineCutter,
    parse_cuts,
)
from lmod_tracker.parse import HEADER_BYTES, Parser

LINE = b"Apr 27 03:22:57 n1 ModuleUsageTracking: user=u module=m/1 host=h time=%d.5\n"
OURS = b"Apr 27 03:22:57 n1 ModuleUsageTracking: "
SSHD = b"Apr 27 03:22:57 n1 sshd[1]: "
HALF = b"Apr 27 03:22:57 n1 ModuleUsageTracking: user=u module=m/1 host=h time=1700000123.0001"
M = 128  # max_line in the tables
LONG = f"line longer than {M} bytes"


def tagged(prefix: bytes) -> bool:
    return b"ModuleUsageTracking:" in prefix


@dataclass(frozen=True)
class Want:
    """What feeding a stream in blocks must give: lines as (offset, line), rejects as
    (offset, reason), foreign lines, NUL bytes, the held-back tail."""

    lines: list[tuple[int, bytes]]
    rejects: list[tuple[int, str]] = field(default_factory=list)
    foreign: int = 0
    garbage: int = 0
    held: int = 0


def feed(blocks: list[bytes], *, max_line: int = M, final: bool = False) -> Want:
    """Feed blocks the way ``ingest`` does (held-back bytes come again with the next block),
    checking that every byte of every block is accounted for."""
    cutter = LineCutter(max_line, tagged)
    lines: list[tuple[int, bytes]] = []
    rejects: list[tuple[int, str]] = []
    foreign = garbage = pos = 0
    carry = b""
    for i, block in enumerate(blocks):
        data = carry + block
        cut = cutter.cut(data, pos, final=final and i == len(blocks) - 1)
        _accounted(cut, data, cutter)
        for at, run in cut.lines:
            for line in run.split(b"\n")[:-1]:
                lines.append((at, line + b"\n"))
                at += len(line) + 1
        rejects += [(r.offset, r.reason) for r in cut.rejects]
        foreign += cut.foreign
        garbage += cut.garbage_bytes
        pos += cut.consumed
        carry = data[cut.consumed:]
    assert garbage == cutter.garbage_bytes
    return Want(lines, rejects, foreign, garbage, cutter.held_back)


def _accounted(cut: Cut, data: bytes, cutter: LineCutter) -> None:
    in_lines = sum(len(run) for _, run in cut.lines)
    assert in_lines + cut.rejected_bytes + cut.foreign_bytes + cut.garbage_bytes == cut.consumed
    assert cut.consumed + cutter.held_back == len(data)


V = b"Apr 27 n1 ModuleUsageTracking: ok\n"  # a short line of ours
F = b"Apr 27 n1 sshd: ok\n"                 # a short foreign line

# Rule 1: partial lines are never data; only a final call gives them up, as a reject.
PARTIAL = {
    "partial tail held back": ([b"a\nb\npart"], False,
                               Want([(0, b"a\n"), (2, b"b\n")], held=4)),
    "nothing but a partial line": ([b"part"], False, Want([], held=4)),
    "final gives the tail up as a reject": (
        [b"a\npart"], True, Want([(0, b"a\n")], [(2, INCOMPLETE)])),
    "final without tail": ([b"a\n"], True, Want([(0, b"a\n")])),
    "empty final": ([b""], True, Want([])),
    "completed in the next block": ([b"a\npa", b"rt\n"], False,
                                    Want([(0, b"a\n"), (2, b"part\n")])),
    "crlf is part of the line": ([b"a\r\nb\r"], False, Want([(0, b"a\r\n")], held=2)),
    "the half-written time is held": ([HALF], False, Want([], held=len(HALF))),
    "and rejected when final": ([HALF], True, Want([], [(0, INCOMPLETE)])),
}

# Rule 2: NUL runs are garbage of any length and end a line; they never cost a valid line.
NULS = {
    "copytruncate hole before a line": (
        [b"\0" * 100000 + V], False, Want([(100000, V)], garbage=100000)),
    "hole split across blocks": (
        [b"\0" * 70, b"\0" * 70 + V[:5], V[5:]], False, Want([(140, V)], garbage=140)),
    "NULs after the last line": ([V + b"\0" * 9], False, Want([(0, V)], garbage=9)),
    "NULs then a partial line": ([V + b"\0\0par"], False, Want([(0, V)], garbage=2, held=3)),
    "fragment of ours before NULs": (
        [OURS + b"user=u\0\0" + V], False,
        Want([(len(OURS) + 8, V)], [(0, CUT_BY_NUL)], garbage=2)),
    "foreign fragment before NULs": (
        [b"abc\0" + V], False, Want([(4, V)], foreign=1, garbage=1)),
    "fragment waits for its NUL in the next block": (
        [b"abc", b"\0" + V], False, Want([(4, V)], foreign=1, garbage=1)),
    "empty line before NULs": ([b"\n\0" + F], False, Want([(0, b"\n"), (2, F)], garbage=1)),
    "NULs alone": ([b"\0" * 5, b"\0"], False, Want([], garbage=6)),
    "NULs at the end, final": ([V + b"\0"], True, Want([(0, V)], garbage=1)),
}

# Rule 3: over-long lines are skipped to their end; only ours become rejects.
LONGS = {
    "long line of ours, unterminated": (
        [OURS + b"x" * 5000], False, Want([], [(0, LONG)])),
    "long foreign line, unterminated": ([SSHD + b"x" * 5000], False, Want([], foreign=1)),
    "long line held until its first 4 KiB are seen": (
        [OURS + b"x" * 200], False, Want([], held=len(OURS) + 200)),
    "and decided by them": (
        [OURS + b"x" * 200, b"x" * 4000], False, Want([], [(0, LONG)])),
    "long line skipped across blocks": (
        [OURS + b"x" * 200, b"y" * 500, b"zz\n" + V], False,
        Want([(len(OURS) + 703, V)], [(0, LONG)])),
    "complete long line inside a block": (
        [V + SSHD + b"x" * 200 + b"\n" + V], False,
        Want([(0, V), (len(V) + len(SSHD) + 201, V)], foreign=1)),
    "long line ended by NULs": (
        [OURS + b"x" * 200, b"x\0\0" + V], False,
        Want([(len(OURS) + 203, V)], [(0, LONG)], garbage=2)),
    "exactly max_line is a line": ([b"x" * M + b"\n"], False, Want([(0, b"x" * M + b"\n")])),
    "max_line + 1 is too long": ([b"x" * (M + 1) + b"\n"], False, Want([], foreign=1)),
    "max_line + 1 of ours": ([OURS + b"x" * (M + 1 - len(OURS)) + b"\n"], False,
                             Want([], [(0, LONG)])),
    "max_line held back, not skipped": ([b"x" * M], False, Want([], held=M)),
    "long tail with final is one reject": ([OURS + b"x" * 200], True, Want([], [(0, LONG)])),
}


@pytest.mark.parametrize(("blocks", "final", "want"), [
    pytest.param(*case, id=name)
    for table in (PARTIAL, NULS, LONGS) for name, case in table.items()])
def test_cutter_rules(blocks: list[bytes], final: bool, want: Want) -> None:
    assert feed(blocks, final=final) == want
    # The same stream in one block, or byte by byte, gives the same result.
    stream = b"".join(blocks)
    assert feed([stream], final=final) == want
    if len(stream) < 2000:
        single = [stream[i:i + 1] for i in range(len(stream))] or [b""]
        assert feed(single, final=final) == want


def test_cutter_reject_keeps_the_first_bytes_and_the_offset() -> None:
    c = LineCutter(8192, tagged)
    line = OURS + b"x" * 10000
    cut = c.cut(line, 500)
    assert cut.rejects == [Rejected(500, "line longer than 8192 bytes", line[:4096])]
    assert (cut.consumed, c.held_back, c.skipping) == (len(line), 0, True)
    cut = c.cut(b"y" * 50, 500 + len(line))  # still inside the long line
    assert (cut.consumed, cut.rejects, cut.rejected_bytes) == (50, [], 50)
    cut = c.cut(b"zz\nok\n", 550 + len(line))
    assert cut.lines == [(553 + len(line), b"ok\n")] and not c.skipping


def test_cutter_fragment_and_tail_rejects_keep_their_bytes() -> None:
    c = LineCutter(8192, tagged)
    cut = c.cut(HALF + b"\0\0" + HALF, 10, final=True)
    assert cut.rejects == [Rejected(10, CUT_BY_NUL, HALF),
                           Rejected(12 + len(HALF), INCOMPLETE, HALF)]
    assert (cut.lines, cut.consumed, cut.garbage_bytes) == ([], 2 * len(HALF) + 2, 2)


def test_cutter_reset_keeps_the_counters() -> None:
    c = LineCutter(10, tagged, raw_bytes=5)
    c.cut(b"\0\0" + b"x" * 20, 0)
    assert c.skipping and c.garbage_bytes == 2
    c.reset()
    assert not c.skipping and c.garbage_bytes == 2
    assert c.cut(b"ok\n", 0).lines == [(0, b"ok\n")]


def test_cutter_shows_is_ours_more_than_the_header() -> None:
    """The parser answers for the whole line from a prefix longer than its header limit."""
    assert RAW_BYTES > HEADER_BYTES


def test_cutter_default_counts_every_long_line_as_ours() -> None:
    cut = LineCutter(4).cut(b"foreign line\n", 0)
    assert [r.reason for r in cut.rejects] == ["line longer than 4 bytes"] and cut.foreign == 0


def test_parse_cuts_merges_in_file_order() -> None:
    parser = _parser()
    c = LineCutter(parser.max_line_bytes, parser.is_ours)
    bad = OURS + b"user=u module=m/1\n"
    data = bad + LINE % 1 + OURS + b"cut\0" + F + bad + HALF
    parsed = parse_cuts(parser, [c.cut(data, 0, final=True)])
    assert [r.offset for r in parsed.rejects] == sorted(r.offset for r in parsed.rejects)
    assert [r.reason for r in parsed.rejects] == [
        "missing time=", CUT_BY_NUL, "missing time=", INCOMPLETE]
    assert len(parsed.events) == 1 and parsed.foreign == 1


def _parser(max_line_bytes: int = 8192) -> Parser:
    return Parser(max_line_bytes=max_line_bytes)


def _follower(path: Path, block: int = 4096, max_line: int = 1024) -> Follower:
    fd = os.open(path, os.O_RDONLY)
    st = os.fstat(fd)
    return Follower(str(path), fd, st.st_dev, st.st_ino, None, 0, _parser(max_line), block)


def _read_all(f: Follower, *, final: bool = False) -> list[Chunk]:
    """Every chunk up to the end; each chunk's end offset is the last one's plus its bytes."""
    chunks = []
    at = f.offset
    while (chunk := f.read_chunk(final=final)) is not None:
        assert chunk.end_offset == at + chunk.nbytes == f.offset
        at = chunk.end_offset
        chunks.append(chunk)
    return chunks


def test_follower_keeps_a_half_written_time_until_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    log.write_bytes(LINE % 1 + HALF)
    f = _follower(log)
    try:
        f.check()
        [chunk] = _read_all(f)
        assert len(chunk.events) == 1 and chunk.end_offset == len(LINE % 1)
        assert f.held_back == len(HALF)
        with log.open("ab") as fh:
            fh.write(b"9\n")
        [chunk] = _read_all(f)
        assert [e.load_time for e in chunk.events] == ["2023-11-14 22:15:23.000190"]
        assert f.held_back == 0 and f.offset == log.stat().st_size
    finally:
        f.close()


def test_follower_gives_up_an_unfinished_line_only_when_final(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    log.write_bytes(LINE % 1 + HALF)
    f = _follower(log, block=1100)
    try:
        f.check()
        assert len(_read_all(f)) == 1
        [chunk] = _read_all(f, final=True)
        assert chunk.events == [] and chunk.rejects == [
            Rejected(len(LINE % 1), INCOMPLETE, HALF)]
        assert f.offset == log.stat().st_size and f.held_back == 0
    finally:
        f.close()


def test_follower_skips_nul_holes_and_long_lines(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    hole = b"\0" * 200_000  # copytruncate with a writer that does not append
    long_foreign = SSHD + b"x" * 5000 + b"\n"
    long_ours = OURS + b"x" * 5000 + b"\n"
    content = (LINE % 1 + hole + LINE % 2 + long_foreign + LINE % 3 + long_ours
               + OURS + b"user=u mo\0\0" + LINE % 4 + b"\0" * 10)
    log.write_bytes(content)
    f = _follower(log)
    try:
        f.check()
        chunks = _read_all(f)
        assert f.offset == len(content) and f.garbage_bytes == len(hole) + 12
        events = [e.load_time[-8:] for c in chunks for e in c.events]
        assert events == ["1.500000", "2.500000", "3.500000", "4.500000"]
        assert [r.reason for c in chunks for r in c.rejects] == [
            "line longer than 1024 bytes", CUT_BY_NUL]
        assert sum(c.foreign for c in chunks) == 1
        assert sum(c.nbytes for c in chunks) == len(content)
    finally:
        f.close()


def test_follower_reads_a_line_longer_than_its_block(tmp_path: Path) -> None:
    """A read must hold max_line + 1 bytes, or a line between the two would wait for ever."""
    log = tmp_path / "lmod.log"
    line = LINE % 1
    line = line[:-1] + b" " * (900 - len(line)) + b"\n"
    log.write_bytes(line)
    f = _follower(log, block=100, max_line=1000)
    try:
        f.check()
        [chunk] = _read_all(f)
        assert len(chunk.events) == 1
    finally:
        f.close()


def test_follower_reads_complete_lines_and_detects_truncation(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    log.write_bytes(LINE % 1 + LINE % 2 + b"Apr 27 partial")
    f = _follower(log)
    try:
        assert f.check() is Change.NONE and f.key is not None
        chunk = f.read_chunk()
        assert chunk is not None and len(chunk.events) == 2
        assert chunk.end_offset == 2 * len(LINE % 1)
        assert f.read_chunk() is None  # the partial line waits
        with log.open("ab") as fh:
            fh.write(b" line\n")
        chunk = f.read_chunk()
        assert chunk is not None and chunk.foreign == 1
        old_key = f.key
        log.write_bytes(LINE % 9)  # copytruncate: smaller than what was read
        assert f.check() is Change.TRUNCATED
        assert f.offset == 0 and f.key != old_key
        chunk = f.read_chunk()
        assert chunk is not None and [e.load_time[-8:] for e in chunk.events] == ["9.500000"]
    finally:
        f.close()


def test_follower_detects_refilled_content(tmp_path: Path) -> None:
    log = tmp_path / "lmod.log"
    log.write_bytes(LINE % 1)
    f = _follower(log)
    try:
        f.check()
        assert f.read_chunk() is not None
        with log.open("r+b") as fh:  # truncated and refilled past the old offset
            fh.truncate(0)
            fh.write((LINE % 7) * 3)
        assert f.check() is Change.REPLACED
        chunk = f.read_chunk()
        assert chunk is not None and len(chunk.events) == 3
        assert f.key is not None and f.key.fingerprint == read_fingerprint(f.fd)
    finally:
        f.close()


def test_unreadable_file_is_reported_once_and_others_are_read() -> None:
    """A file the daemon may not read is logged (not at every poll) and does not stop the
    others; a log directory it cannot read is a configuration error. Run as an unprivileged
    user (root reads everything)."""
    base = Path(tempfile.mkdtemp(prefix="lt-perm-"))
    try:
        base.chmod(0o777)
        log_dir = base / "log"
        log_dir.mkdir(mode=0o755)
        (log_dir / "lmod.log").write_bytes(LINE % 1)
        (log_dir / "lmod.log").chmod(0o644)
        blocked = log_dir / "lmod.log-1"
        blocked.write_bytes(LINE % 2)
        blocked.chmod(0)
        env = {"PATH": os.environ["PATH"], "HOME": str(base), "LMOD_TRACKER_STATUS_SOCKET": "",
               "LMOD_TRACKER_SQLITE_PATH": str(base / "t.db"), "LMOD_TRACKER_POLL_INTERVAL": "0.1"}
        prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        if os.geteuid() != 0:
            prefix = []
        cmd = [*prefix, sys.executable, "-m", "lmod_tracker", "run", "--once", "--log-dir"]
        proc = subprocess.run([*cmd, str(log_dir)], env=env, capture_output=True, text=True,
                              timeout=60)
        # The readable file is committed; the run says it did not read everything (exit 1).
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.count("cannot open log file") == 1
        assert proc.stderr.splitlines()[-1].endswith(
            f"{blocked}: cannot open: Permission denied; committed: 1 events into"
            f" sqlite:{base / 't.db'}")
        log_dir.chmod(0o700)
        proc = subprocess.run(cmd[:-1], env={**env, "LMOD_TRACKER_LOG_DIR": str(log_dir)},
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.strip().endswith(
            "cannot be read: Permission denied (set LMOD_TRACKER_LOG_DIR or --log-dir)")
        assert proc.stderr.count("\n") == 1
    finally:
        shutil.rmtree(base, ignore_errors=True)

