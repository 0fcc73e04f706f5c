"""File identity and the decisions a follower makes about it, as pure functions.

A file's content is identified by device, inode and the fingerprint of its first line. The inode
follows a file through a rename (logrotate ``create``); the fingerprint tells a file truncated
and refilled in place (``copytruncate``) or a recycled inode from the content read before.

Identity alone can be fooled: two contents may share their first line (a template without
timestamps, a header), an inode is reused, a file is truncated and regrows past the old offset
between two looks. So an offset is never trusted on identity alone. Every checkpoint carries the
*tail*: a hash of the :data:`TAIL_BYTES` bytes just before its offset (the end of the last line
read). An offset is used only where the file holds those same bytes before it
(:func:`resume_point`), and a follower checks its own tail on every look (content rewritten in
place reads from the start). A copy of a file (``copytruncate``'s copy, a gzip of a rotated
file) resumes from the original's checkpoint only when its bytes prove it.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import os
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

#: How many leading bytes the fingerprint covers at most (the first line, or this many bytes).
FINGERPRINT_BYTES = 1024
#: How many bytes before an offset its tail hash covers: several fields of the last line read
#: (its time= to the microsecond), so two different contents practically never share one.
TAIL_BYTES = 64
_GZIP_MAGIC = b"\x1f\x8b"


def fingerprint_of(head: bytes, limit: int = FINGERPRINT_BYTES) -> str | None:
    """Fingerprint of a file's first line, from its first bytes.

    ``None`` while the first line is still incomplete (shorter than ``limit`` and without a
    newline): such a file is not read until its first line is complete.
    """
    end = head.find(b"\n", 0, limit)
    if end >= 0:
        head = head[:end + 1]
    elif len(head) >= limit:
        head = head[:limit]
    else:
        return None
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def read_fingerprint(fd: int, limit: int = FINGERPRINT_BYTES) -> str | None:
    """The fingerprint of the file open as ``fd`` (reads at offset 0, leaves no position)."""
    return fingerprint_of(os.pread(fd, limit, 0), limit)


class Change(enum.Enum):
    """What happened to a followed file since the last look."""

    NONE = "none"            # same content, maybe grown
    TRUNCATED = "truncated"  # smaller than what was read: copytruncate or `> file`
    REPLACED = "replaced"    # first line differs: truncated and refilled, or inode reused


def classify(read_offset: int, size: int, old_fingerprint: str,
             new_fingerprint: str | None) -> Change:
    """Decide what happened to a file between two looks at it."""
    if size < read_offset:
        return Change.TRUNCATED
    if new_fingerprint is None:
        # The first line is gone (the file is now shorter than one line): truncated.
        return Change.TRUNCATED if size < FINGERPRINT_BYTES else Change.NONE
    if new_fingerprint != old_fingerprint:
        return Change.REPLACED
    return Change.NONE


class Checkpoint(NamedTuple):
    """A recorded read position: where, the tail hash of the bytes before it, and whether it
    was recorded for this very file identity (or for another with the same first line)."""

    offset: int
    tail: str
    exact: bool


def tail_hash(before: bytes) -> str:
    """The tail of an offset, from the bytes before it ('' at offset 0)."""
    if not before:
        return ""
    return hashlib.blake2b(before[-TAIL_BYTES:], digest_size=8).hexdigest()


def read_tail(fd: int, offset: int) -> str:
    """The tail hash of ``offset`` in the file open as ``fd`` ('' if the file is shorter)."""
    if offset <= 0:
        return ""
    start = max(0, offset - TAIL_BYTES)
    data = os.pread(fd, offset - start, start)
    return tail_hash(data) if len(data) == offset - start else "\0short"


def stream_tail(stream: BinaryIO, offset: int) -> str:
    """The tail hash of ``offset`` in a seekable stream (plain or gzip); leaves the stream at
    ``offset`` when it is that long."""
    if offset <= 0:
        stream.seek(0)
        return ""
    start = max(0, offset - TAIL_BYTES)
    stream.seek(start)
    data = stream.read(offset - start)
    return tail_hash(data) if len(data) == offset - start else "\0short"


def proves(checkpoint: Checkpoint, tail: str) -> bool:
    """Whether a file whose bytes before ``checkpoint.offset`` hash to ``tail`` is the content
    the checkpoint was recorded for. A checkpoint written before tails were recorded ('') is
    trusted only for its own file identity."""
    if checkpoint.tail:
        return checkpoint.tail == tail
    return checkpoint.exact


def resume_point(candidates: list[Checkpoint], tail_at: Callable[[int], str], size: int | None
                 ) -> Checkpoint | None:
    """The first candidate the file's bytes prove (candidates come best first), or None."""
    for c in candidates:
        if size is not None and c.offset > size:
            continue
        if proves(c, tail_at(c.offset)):
            return c
    return None


def start_offset(checkpoint: int | None, size: int, *, new_file_at_end: bool) -> int:
    """Where to start reading a file seen for the first time by this process, given the
    proven checkpoint (None when there is none)."""
    if checkpoint is not None and checkpoint <= size:
        return checkpoint
    if checkpoint is None and new_file_at_end:
        return size
    return 0


def is_gzip(head: bytes) -> bool:
    """True when the bytes start like a gzip stream (detected by content, not by name)."""
    return head[:2] == _GZIP_MAGIC


def open_stream(path: str) -> tuple[BinaryIO, BinaryIO]:
    """Open a log for one-shot reading: ``(stream of lines, raw file for progress)``.

    Gzip is recognised by its magic bytes, whatever the file is called.
    """
    raw = open(path, "rb")  # noqa: SIM115 - the caller closes both
    try:
        head = raw.read(2)
        raw.seek(0)
        if is_gzip(head):
            return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    except BaseException:
        raw.close()
        raise
    return raw, raw


def path_text(path: str) -> str:
    """A file name as text for the database, logs and status, losslessly.

    File names are bytes. One that is valid UTF-8 without a backslash is shown as it is;
    otherwise backslashes are doubled and undecodable bytes written as ``\\xNN``, so that
    ``lmod.log-\\xff`` names the file whose last byte is 0xff, and no two names look alike.
    """
    raw = os.fsencode(path)
    if b"\\" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def split_complete(buf: bytes) -> int:
    """Length of the prefix of ``buf`` that holds complete lines (0 if none)."""
    return buf.rfind(b"\n") + 1
