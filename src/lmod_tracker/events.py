"""The records that flow from the parser to the store.

They are plain named tuples: cheap to build on the hot path, readable everywhere else.
"""

from __future__ import annotations

from typing import NamedTuple


class LoadEvent(NamedTuple):
    """One ``module load`` as Lmod reported it.

    ``load_time`` is UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``: derived from the decimal ``time=``
    string without a float, so the same line always yields the same value. ``cluster`` is the
    cluster (Lmod's ``syshost``) or None when unknown; ``userload`` is 1 for a load the user
    asked for, 0 for one pulled in as a dependency, None when the line does not say.
    """

    load_time: str
    user: str
    package: str
    version: str
    host: str
    path: str | None
    jobid: str | None
    cluster: str | None = None
    userload: int | None = None


class Rejected(NamedTuple):
    """A line that carries our syslog tag but cannot be parsed; kept raw with its position."""

    offset: int
    reason: str
    raw: bytes


class FileKey(NamedTuple):
    """The identity of one file's content: device, inode and fingerprint of its first line."""

    dev: int
    ino: int
    fingerprint: str


class Chunk(NamedTuple):
    """What a reader hands to the writer: parsed lines of one file up to ``end_offset``."""

    key: FileKey
    path: str
    end_offset: int
    events: list[LoadEvent]
    rejects: list[Rejected]
    foreign: int
    nbytes: int
    read_at: float
    #: hash of the bytes just before ``end_offset`` (files.tail_hash), stored with the
    #: checkpoint so that a resume can prove it is reading the same content
    tail: str = ""
