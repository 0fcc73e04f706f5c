"""The stores under concurrent use, as the daemon uses them: readers look up checkpoints while
the writer commits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lmod_tracker.config import load_settings
from lmod_tracker.events import Chunk, FileKey, LoadEvent
from lmod_tracker.parse import Parser
from lmod_tracker.service import make_store
from lmod_tracker.store.base import Batch
from tests.support.databases import DbHandle
from tests.support.loggen import write_log


async def test_checkpoint_lookups_during_commits(db: DbHandle, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in db.env.items():
        monkeypatch.setenv(key, value)
    store = make_store(load_settings())
    log = tmp_path / "lmod.log"
    counts = write_log(log, 30_000, seed=51)
    parsed = Parser().parse_block(log.read_bytes(), 0)
    await store.open()
    await store.init_schema()
    key = FileKey(1, 2, "f" * 16)

    async def writer() -> None:
        for i in range(0, len(parsed.events), 1000):
            batch = Batch()
            part = parsed.events[i:i + 1000]
            batch.add(Chunk(key, str(log), i + len(part), part, [], 0, 0, 0.0, f"{i:016x}"))
            await store.commit("test", batch)

    async def reader() -> list[int | None]:
        seen = []
        for _ in range(300):
            found = await store.checkpoint("test", key)
            assert len(found) <= 1 and all(c.exact for c in found)
            seen.append(found[0].offset if found else None)
            await asyncio.sleep(0)
        return seen

    try:
        _, *readers = await asyncio.gather(writer(), reader(), reader(), reader())
        for seen in readers:  # each reader sees the checkpoint only move forward
            offsets = [o for o in seen if o is not None]
            assert offsets == sorted(offsets)
        (last,) = await store.checkpoint("test", key)
        assert last.offset == len(parsed.events) and last.exact
        assert last.tail == f"{(len(parsed.events) - 1) // 1000 * 1000:016x}"
    finally:
        await store.close()
    assert db.scalar("SELECT COUNT(*) FROM module_usage") == counts.valid


async def test_huge_batch_of_long_values_stays_below_packet_limit(
        db: DbHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """20k rows with the longest paths accepted: ~18 MB of values, more than MariaDB's default
    max_allowed_packet (16 MB) in one statement."""
    for key, value in db.env.items():
        monkeypatch.setenv(key, value)
    store = make_store(load_settings())
    events = [LoadEvent(f"2024-01-01 00:00:{i // 1_000_000:02d}.{i % 1_000_000:06d}",
                        f"user{i % 50}", "pkg", str(i % 7), "host1",
                        f"/{i:08d}/" + "p" * 758, "j" * 64) for i in range(20_000)]
    await store.open()
    await store.init_schema()
    try:
        batch = Batch()
        batch.add(Chunk(FileKey(1, 2, "e" * 16), "/x", 1, events, [], 0, 0, 0.0))
        result = await store.commit("test", batch)
    finally:
        await store.close()
    assert result.inserted == 20_000
    assert db.scalar("SELECT COUNT(*) FROM modulefile") == 20_000
