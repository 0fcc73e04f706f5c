"""The directory watcher's wake-ups, on real files."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import lzma
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from lmod_tracker.events import Chunk
from lmod_tracker.parse import Parser
from lmod_tracker.pipeline import Stats, Writer
from lmod_tracker.store.sqlite import SQLiteStore
from lmod_tracker.watch import Selection, Tailer

LINE = b"Apr 27 03:22:57 n1 ModuleUsageTracking: user=u module=m/1 host=h time=1.5\n"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """The SQLite store the watcher looks checkpoints up in."""
    opened = SQLiteStore(tmp_path / "t.db")
    await opened.open()
    await opened.init_schema()
    yield opened
    await opened.close()


def tailer_for(log_dir: Path, store: SQLiteStore, queue: asyncio.Queue[Chunk | None], *,
               exclude: tuple[str, ...] = (), **kw: Any) -> Tailer:
    """A watcher of ``lmod.log*`` in ``log_dir`` that polls only when told to."""
    return Tailer(Selection(log_dir, "lmod.log*", exclude), store, "t", Parser(), queue,
                  block_bytes=4096, poll_interval=3600.0, **kw)


async def test_new_file_is_followed_as_soon_as_its_first_line_is_complete(
        store: SQLiteStore, tmp_path: Path) -> None:
    """A file seen empty is looked at again on the next growth, not only at the next poll:
    it may be renamed out of the followed names before that."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    log.write_bytes(b"")
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=8)
    tailer = tailer_for(log_dir, store, queue, rotate_wait=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(tailer.run(stop))
    try:
        await asyncio.sleep(0.2)
        # Held open from the first sight (a rename or compression cannot take it away), but
        # not read: there is no first line to identify its content by yet.
        (follower,) = tailer.followers.values()
        assert not follower.resolved and follower.key is None
        with log.open("ab") as fh:
            fh.write(LINE)
        tailer.notify(False)  # what a "modified" event does
        chunk = await asyncio.wait_for(queue.get(), 5)
        assert chunk is not None and len(chunk.events) == 1
    finally:
        stop.set()
        tailer.wake.set()
        await asyncio.wait_for(task, 5)
        tailer.close()


async def test_a_file_is_held_from_first_sight_and_read_after_it_is_gone(
        store: SQLiteStore, tmp_path: Path) -> None:
    """A file first seen with an incomplete first line, then completed, renamed away and
    deleted before the next look, is still read: the descriptor was kept from the first scan."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    log.write_bytes(LINE[:20])
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=8)
    tailer = tailer_for(log_dir, store, queue, exclude=("*.gz",), rotate_wait=0.0)
    never = asyncio.Event()
    try:
        await tailer.scan()
        with log.open("ab") as fh:
            fh.write(LINE[20:] + LINE)
        log.rename(log_dir / "lmod.log-1.gz")   # out of the followed names ...
        (log_dir / "lmod.log-1.gz").unlink()    # ... and gone
        await tailer.scan()
        await tailer.read_available(never)
        chunk = queue.get_nowait()
        assert chunk is not None and len(chunk.events) == 2
    finally:
        tailer.close()


async def test_a_file_gone_without_a_complete_line_is_closed(
        store: SQLiteStore, tmp_path: Path) -> None:
    """Quiet rotations leave empty files (logrotate's default ifempty); one that leaves the
    directory, or one with only part of a line, is closed after rotate_wait instead of being
    held for good (each would keep a descriptor and, at max_open, stop new files)."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "lmod.log-1").write_bytes(b"")
    (log_dir / "lmod.log-2").write_bytes(LINE[:20])
    (log_dir / "lmod.log").write_bytes(b"")
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=8)
    tailer = tailer_for(log_dir, store, queue, rotate_wait=0.3, max_open=3)
    never = asyncio.Event()
    try:
        await tailer.scan()
        assert len(tailer.followers) == 3
        (log_dir / "lmod.log-1").unlink()
        (log_dir / "lmod.log-2").unlink()
        await tailer.scan()
        assert len(tailer.followers) == 3  # within rotate_wait: a writer may still finish
        await asyncio.sleep(0.4)
        await tailer.scan()
        assert [f.path for f in tailer.followers.values()] == [str(log_dir / "lmod.log")]
        # the room is there for a new file, and it is read
        (log_dir / "lmod.log-3").write_bytes(LINE)
        await tailer.scan()
        await tailer.read_available(never)
        chunk = queue.get_nowait()
        assert chunk is not None and len(chunk.events) == 1
    finally:
        tailer.close()


@pytest.mark.parametrize("pack", [gzip.compress, lzma.compress, bz2.compress])
async def test_a_compressed_file_under_a_followed_name_is_skipped(
        store: SQLiteStore, tmp_path: Path, pack: Callable[[bytes], bytes]) -> None:
    """A custom compressext (lmod.log-2.gzip) escapes the exclude patterns: its bytes are not
    lines, so it is skipped (ingest reads it), never counted as foreign lines."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "lmod.log-2.packed").write_bytes(pack(LINE * 20))
    (log_dir / "lmod.log").write_bytes(LINE)
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
    tailer = tailer_for(log_dir, store, queue, rotate_wait=0.0)
    never = asyncio.Event()
    try:
        await tailer.scan()
        await tailer.read_available(never)
        chunks = [queue.get_nowait() for _ in range(queue.qsize())]
        assert [c.path for c in chunks if c is not None] == [str(log_dir / "lmod.log")]
        assert sum(c.foreign for c in chunks if c is not None) == 0
        assert [f.path for f in tailer.followers.values()] == [str(log_dir / "lmod.log")]
        await tailer.scan()  # unchanged: not opened again
        assert len(tailer.followers) == 1
    finally:
        tailer.close()


async def test_no_more_files_open_than_allowed_and_none_starves(
        store: SQLiteStore, tmp_path: Path) -> None:
    """With more files than may be held open, the files read to their end make room for the
    others, oldest first, until every file was read."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    for i in range(12):
        (log_dir / f"lmod.log-{i:02d}").write_bytes(b"".join(
            LINE.replace(b"time=1.5", b"time=%d.%06d" % (i + 1, j)) for j in range(i + 1)))
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
    stats = Stats()
    tailer = tailer_for(log_dir, store, queue, rotate_wait=0.0, stats=stats,
                    max_open=4)
    writer = Writer(store, "t", queue, batch_size=100, batch_timeout=0.01, stats=stats)
    writing = asyncio.create_task(writer.run())
    never = asyncio.Event()
    try:
        for _ in range(30):
            await tailer.scan()
            assert len(tailer.followers) <= 4
            await tailer.read_available(never)
            await asyncio.sleep(0.05)  # the writer commits: read files can be closed
            if stats.events == sum(range(1, 13)):
                break
        assert stats.events == sum(range(1, 13))
    finally:
        await queue.put(None)
        await asyncio.wait_for(writing, 10)
        tailer.close()


async def test_directory_made_again_is_watched_again(
        store: SQLiteStore, tmp_path: Path) -> None:
    """inotify watches an inode: after the directory is removed and made again, file events
    come only if the watcher starts watching the new one (else polling alone finds lines)."""
    log_dir = tmp_path / "log"
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
    tailer = tailer_for(log_dir, store, queue, rotate_wait=0.0)
    try:
        tailer.start_watching()  # not there yet: nothing watched, nothing failed
        assert tailer._watched is None
        log_dir.mkdir()
        await tailer._look()
        first = tailer._watched
        assert first is not None
        log_dir.rmdir()
        await asyncio.wait_for(tailer._scan_due.wait(), 5)  # the observer saw it go
        assert tailer._watched is None
        log_dir.mkdir()  # often with the same inode number
        await tailer._look()
        assert tailer._watched is not None
        tailer.wake.clear()
        (log_dir / "lmod.log").write_bytes(LINE)  # an event from the new directory
        await asyncio.wait_for(tailer.wake.wait(), 5)
    finally:
        tailer.close()
