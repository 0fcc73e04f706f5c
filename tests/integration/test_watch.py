"""The directory watcher's wake-ups, on real files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lmod_tracker.events import Chunk
from lmod_tracker.parse import Parser
from lmod_tracker.store.sqlite import SQLiteStore
from lmod_tracker.watch import Selection, Tailer

LINE = b"Apr 27 03:22:57 n1 ModuleUsageTracking: user=u module=m/1 host=h time=1.5\n"


async def test_new_file_is_followed_as_soon_as_its_first_line_is_complete(
        tmp_path: Path) -> None:
    """A file seen empty is looked at again on the next growth, not only at the next poll:
    it may be renamed out of the followed names before that."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    log = log_dir / "lmod.log"
    log.write_bytes(b"")
    store = SQLiteStore(tmp_path / "t.db")
    await store.open()
    await store.init_schema()
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue(maxsize=8)
    tailer = Tailer(Selection(log_dir, "lmod.log*", ()), store, "t", Parser(), queue,
                    block_bytes=4096, poll_interval=3600.0, rotate_wait=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(tailer.run(stop))
    try:
        await asyncio.sleep(0.2)
        assert not tailer.followers  # empty: nothing to identify it by yet
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
        await store.close()
