"""File identity and rotation decisions."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

from lmod_tracker.files import (
    FINGERPRINT_BYTES,
    TAIL_BYTES,
    Change,
    Checkpoint,
    classify,
    fingerprint_of,
    open_stream,
    read_tail,
    resume_point,
    start_offset,
    tail_hash,
)


def test_fingerprint_needs_a_complete_first_line() -> None:
    assert fingerprint_of(b"partial line") is None
    a = fingerprint_of(b"first line\nsecond")
    assert a is not None
    assert a == fingerprint_of(b"first line\nother second line\n")
    assert a != fingerprint_of(b"first line!\n")


def test_fingerprint_of_a_long_first_line_uses_the_limit() -> None:
    head = b"x" * FINGERPRINT_BYTES
    assert fingerprint_of(head) == fingerprint_of(head + b"more")


def test_classify() -> None:
    assert classify(100, 150, "a", "a") is Change.NONE
    assert classify(100, 50, "a", "a") is Change.TRUNCATED
    assert classify(100, 0, "a", None) is Change.TRUNCATED
    assert classify(100, 500, "a", "b") is Change.REPLACED


def test_start_offset() -> None:
    assert start_offset(None, 500, new_file_at_end=False) == 0
    assert start_offset(None, 500, new_file_at_end=True) == 500
    assert start_offset(300, 500, new_file_at_end=True) == 300
    assert start_offset(900, 500, new_file_at_end=False) == 0  # checkpoint past the end


def test_gzip_detected_by_content(tmp_path: Path) -> None:
    plain = tmp_path / "lmod.log.gz"  # misleading name, plain content
    plain.write_bytes(b"a\nb\n")
    packed = tmp_path / "lmod.log-20261120"  # no .gz suffix, gzip content
    packed.write_bytes(gzip.compress(b"c\nd\n"))
    for path, text in ((plain, b"a\nb\n"), (packed, b"c\nd\n")):
        stream, raw = open_stream(str(path))
        with raw, stream:
            assert stream.read() == text


# -- checkpoints prove their content ----------------------------------------------------------

def _tails(data: bytes) -> Callable[[int], str]:
    return lambda off: tail_hash(data[max(0, off - TAIL_BYTES):off]) if off <= len(data) \
        else "short"


def test_a_checkpoint_is_used_only_where_its_bytes_are() -> None:
    old = b"same first line\n" + b"".join(b"line %d of the old content\n" % i for i in range(50))
    new = b"same first line\n" + b"".join(b"line %d of the NEW content\n" % i for i in range(90))
    cp = Checkpoint(len(old), tail_hash(old[-TAIL_BYTES:]), exact=True)
    assert resume_point([cp], _tails(old), len(old)) == cp
    # The same file rewritten in place, longer than before: the offset is not this content's.
    assert resume_point([cp], _tails(new), len(new)) is None
    # Shorter than the checkpoint: not used whatever the tail says.
    assert resume_point([cp], _tails(old[:100]), 100) is None


def test_a_copy_resumes_only_from_a_checkpoint_its_bytes_prove() -> None:
    content = b"header\n" + b"".join(b"load %d\n" % i for i in range(100))
    other = b"header\n" + b"".join(b"other %d\n" % i for i in range(300))
    mine = Checkpoint(500, tail_hash(content[500 - TAIL_BYTES:500]), exact=False)
    theirs = Checkpoint(2000, tail_hash(other[2000 - TAIL_BYTES:2000]), exact=False)
    # Best first is the larger offset, but only the copy's own bytes decide.
    assert resume_point([theirs, mine], _tails(content), len(content)) == mine
    assert resume_point([theirs], _tails(content), len(content)) is None


def test_checkpoints_from_before_tails_are_trusted_only_for_their_own_file() -> None:
    data = b"x\n" * 100
    assert resume_point([Checkpoint(50, "", exact=True)], _tails(data), 200) == \
        Checkpoint(50, "", True)
    assert resume_point([Checkpoint(50, "", exact=False)], _tails(data), 200) is None


def test_read_tail_matches_tail_hash(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = bytes(range(256)) * 3
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in (0, 1, 63, 64, 65, 700, len(data)):
            assert read_tail(fd, off) == tail_hash(data[max(0, off - TAIL_BYTES):off])
        assert read_tail(fd, len(data) + 1) != tail_hash(data[-TAIL_BYTES:])
    finally:
        os.close(fd)
