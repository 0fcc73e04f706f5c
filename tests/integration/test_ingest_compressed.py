"""``ingest`` of compressed files (gzip, xz, bzip2, zstd: detected by content) and of damaged
ones: every complete line the damaged file still holds is committed, once, and the file is
reported with exit 1. The real command line against real SQLite and MariaDB."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tests.support.daemon import cli
from tests.support.databases import DbHandle
from tests.support.loggen import Counts, LineFactory, write_log

COUNT = "SELECT COUNT(*) FROM module_usage"
REJECTED = "SELECT COUNT(*) FROM rejected_line"

#: How each format is written: bzip2 with 100 kB blocks, so that a cut file keeps blocks;
#: zstd with its checksum, as the zstd command writes it.
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "xz": lzma.compress,
    "bzip2": lambda data: bz2.compress(data, 1),
    "zstd": zstandard.ZstdCompressor(write_checksum=True).compress,
}


def _decodable(fmt: str, packed: bytes) -> bytes:
    """Everything the format's own decoder makes of ``packed`` in one call (a cut stream is
    no error to these decoders: they return what they could decode)."""
    if fmt == "gzip":
        return zlib.decompressobj(31).decompress(packed)
    if fmt == "xz":
        return lzma.LZMADecompressor().decompress(packed)
    if fmt == "bzip2":
        return bz2.BZ2Decompressor().decompress(packed)
    return zstandard.ZstdDecompressor().decompressobj().decompress(packed)


def _lines(n: int, seed: int) -> tuple[bytes, Counts]:
    lines, counts = LineFactory(seed=seed, start_epoch=1_700_000_000 + seed * 10_000_000
                                ).mixed(n, foreign_every=40, malformed_every=150)
    return b"".join(lines), counts


def _first_lines(content: bytes, seed: int) -> Counts:
    """The kinds of the complete lines at the start of ``content`` (generated with ``seed``)."""
    k = content.count(b"\n")
    lines, counts = LineFactory(seed=seed, start_epoch=1_700_000_000 + seed * 10_000_000
                                ).mixed(k, foreign_every=40, malformed_every=150)
    assert content.startswith(b"".join(lines))
    return counts


def _summary(proc: subprocess.CompletedProcess[str], path: Path) -> str:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"{path}:")]
    assert len(lines) == 1, f"one summary line for {path} expected:\n{proc.stdout}{proc.stderr}"
    return lines[0]


def _counts(line: str) -> str:
    return re.sub(r"^.*?: ", "", line).split(";")[0]


@pytest.mark.parametrize("fmt", list(COMPRESS))
def test_truncated_file_keeps_every_complete_line_once(db: DbHandle, tmp_path: Path,
                                                       fmt: str) -> None:
    content, _ = _lines(20_000, seed=11)
    packed = COMPRESS[fmt](content)
    cut = tmp_path / "lmod.log-20261120.part"  # the name says nothing of the format
    cut.write_bytes(packed[:len(packed) * 3 // 5])
    readable = _decodable(fmt, cut.read_bytes())
    assert content.startswith(readable) and 0.3 < len(readable) / len(content) < 0.9
    complete = readable[:readable.rfind(b"\n") + 1]
    partial = len(readable) - len(complete)
    assert partial, "the cut should fall inside a line"
    expected = _first_lines(complete, seed=11)
    good = tmp_path / "lmod.log-20261121"
    expected_good = write_log(good, 3_000, seed=12)

    # A good file after the damaged one is read all the same; the run exits 1.
    proc = cli(db.env, "ingest", str(cut), str(good), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _summary(proc, cut)
    assert _counts(line) == (f"{expected.valid} events, 0 duplicates skipped,"
                             f" {expected.foreign} foreign, {expected.malformed} rejected")
    assert f"unterminated last line held back ({partial} bytes)" in line
    assert f"damaged: {fmt} data truncated after byte {len(readable)} of the content" in line
    assert _counts(_summary(proc, good)).startswith(f"{expected_good.valid} events,")
    assert db.scalar(COUNT) == expected.valid + expected_good.valid
    assert db.scalar(REJECTED) == expected.malformed + expected_good.malformed

    # Again: the checkpoint says where; nothing new, the same report.
    again = cli(db.env, "ingest", str(cut), check=False)
    assert again.returncode == 1, again.stdout + again.stderr
    line = _summary(again, cut)
    assert _counts(line) == (f"0 events, 0 duplicates skipped, 0 foreign, 0 rejected"
                             f" (resumed at byte {len(complete)})")
    assert f"damaged: {fmt} data truncated" in line
    assert db.scalar(COUNT) == expected.valid + expected_good.valid

    # The whole file, later (the copy or the compression finished): the rest, from the
    # line that was held back.
    whole = tmp_path / "lmod.log-20261120.xyz"
    whole.write_bytes(packed)
    done = cli(db.env, "ingest", str(whole))
    line = _summary(done, whole)
    assert f"(resumed at byte {len(complete)})" in line and "damaged" not in line
    total = _first_lines(content, seed=11)
    assert db.scalar(COUNT) == total.valid + expected_good.valid
    assert db.scalar(REJECTED) == total.malformed + expected_good.malformed


@pytest.mark.parametrize("fmt", ["xz", "bzip2", "zstd"])
def test_each_format_round_trips(db: DbHandle, tmp_path: Path, fmt: str) -> None:
    """Two streams one after the other (``cat a.xz b.xz``, pzstd), named like a plain file."""
    content, counts = _lines(12_000, seed=21)
    half = content.index(b"\n", len(content) // 2) + 1
    path = tmp_path / "lmod.log-20261122"
    path.write_bytes(COMPRESS[fmt](content[:half]) + COMPRESS[fmt](content[half:]))

    proc = cli(db.env, "ingest", str(path))
    assert _summary(proc, path).endswith(
        f": {counts.valid} events, 0 duplicates skipped, {counts.foreign} foreign,"
        f" {counts.malformed} rejected")
    assert db.scalar(COUNT) == counts.valid
    assert db.scalar(REJECTED) == counts.malformed
    again = _summary(cli(db.env, "ingest", str(path)), path)
    assert again.endswith(f"0 events, 0 duplicates skipped, 0 foreign, 0 rejected"
                          f" (resumed at byte {len(content)})")
    assert db.scalar(COUNT) == counts.valid


@pytest.mark.parametrize("fmt", list(COMPRESS))
def test_trailing_garbage_is_ignored_with_a_warning(sqlite_db: DbHandle, tmp_path: Path,
                                                    fmt: str) -> None:
    """Like ``gzip -d``: the data before it is kept, the garbage named; nothing is lost, so
    the run succeeds."""
    content, counts = _lines(2_000, seed=31)
    junk = b"\x00\x00this is not compressed\n" * 10  # NULs after a stream are padding
    path = tmp_path / "lmod.log-20261123"
    path.write_bytes(COMPRESS[fmt](content) + junk)
    line = _summary(cli(sqlite_db.env, "ingest", str(path)), path)
    assert _counts(line) == (f"{counts.valid} events, 0 duplicates skipped,"
                             f" {counts.foreign} foreign, {counts.malformed} rejected")
    assert line.endswith(f"; {len(junk) - 2} bytes of trailing garbage after the {fmt} data"
                         " ignored")
    assert sqlite_db.scalar(COUNT) == counts.valid


@pytest.mark.parametrize("fmt", list(COMPRESS))
def test_corrupt_file_keeps_what_comes_before(sqlite_db: DbHandle, tmp_path: Path,
                                              fmt: str) -> None:
    """Bytes overwritten late in the file: what was decoded before is committed, the file is
    reported damaged (exit 1), the next file is read, a re-run adds nothing."""
    content, counts = _lines(20_000, seed=41)
    packed = bytearray(COMPRESS[fmt](content))
    at = len(packed) * 4 // 5
    packed[at:at + 64] = bytes(range(64, 128))
    bad = tmp_path / "lmod.log-20261124"
    bad.write_bytes(bytes(packed))
    good = tmp_path / "lmod.log-20261125"
    expected_good = write_log(good, 1_000, seed=42)

    proc = cli(sqlite_db.env, "ingest", str(bad), str(good), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _summary(proc, bad)
    assert f"damaged: corrupt {fmt} data after byte " in line, line
    assert _counts(_summary(proc, good)).startswith(f"{expected_good.valid} events,")
    committed = sqlite_db.scalar(COUNT) - expected_good.valid
    assert counts.valid // 2 < committed <= counts.valid

    again = cli(sqlite_db.env, "ingest", str(bad), check=False)
    assert again.returncode == 1 and "damaged: corrupt" in _summary(again, bad)
    assert _counts(_summary(again, bad)).startswith("0 events,")
    assert sqlite_db.scalar(COUNT) == committed + expected_good.valid
