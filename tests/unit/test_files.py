"""File identity and rotation decisions."""

from __future__ import annotations

import gzip
from pathlib import Path

from lmod_tracker.files import (
    FINGERPRINT_BYTES,
    Change,
    classify,
    fingerprint_of,
    open_stream,
    start_offset,
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
