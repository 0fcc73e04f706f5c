"""Helpers for the data-model tests: a store on a test database, lines with every fact, and the
check that the daily rollup equals a GROUP BY over the facts."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from lmod_tracker.config import load_settings
from lmod_tracker.events import Chunk, FileKey, LoadEvent
from lmod_tracker.pipeline import END, Stats, Writer
from lmod_tracker.service import make_store
from tests.support.databases import DbHandle

_DAY = {"mysql": "DATE_FORMAT(DATE(load_time), '%Y-%m-%d')", "sqlite": "substr(load_time, 1, 10)"}
_TIME = {"mysql": "DATE_FORMAT({}, '%Y-%m-%d %H:%i:%s.%f')", "sqlite": "{}"}


def store_for(db: DbHandle) -> Any:
    """The store lmod-tracker would use for ``db`` (HOME must not hold a ~/.ingest.env)."""
    env = {k.removeprefix("LMOD_TRACKER_").lower() if k.startswith("LMOD_TRACKER_") else k: v
           for k, v in db.env.items()}
    return make_store(load_settings(**env))


def facts_grouped(db: DbHandle) -> list[tuple[Any, ...]]:
    """What usage_daily must hold: module_usage grouped by (UTC day, cluster, package, user)."""
    t = _TIME[db.kind]
    rows = db.rows(
        f"SELECT {_DAY[db.kind]}, IFNULL(cluster_id, 0), package_id, user_id, COUNT(*),"
        f" COUNT(CASE WHEN userload = 1 THEN 1 END), {t.format('MIN(load_time)')},"
        f" {t.format('MAX(load_time)')} FROM module_usage GROUP BY 1, 2, 3, 4")
    return sorted(_norm(r) for r in rows)


def rollup(db: DbHandle) -> list[tuple[Any, ...]]:
    t = _TIME[db.kind]
    day = "DATE_FORMAT(day, '%Y-%m-%d')" if db.kind == "mysql" else "day"
    rows = db.rows(
        f"SELECT {day}, cluster_id, package_id, user_id, loads, user_loads,"
        f" {t.format('first_load')}, {t.format('last_load')} FROM usage_daily")
    return sorted(_norm(r) for r in rows)


def _norm(row: tuple[Any, ...]) -> tuple[Any, ...]:
    day, cluster, package, user, loads, user_loads, first, last = row
    return (str(day), int(cluster), int(package), int(user), int(loads), int(user_loads),
            str(first), str(last))


def assert_rollup_agrees(db: DbHandle) -> None:
    got, want = rollup(db), facts_grouped(db)
    assert got == want, f"rollup {len(got)} rows vs facts {len(want)} groups"


def line(n: int, *, t: str, user: str = "", module: str = "", jobid: str | None = None,
         extra: str = "", host: str = "") -> str:
    job = "" if jobid is None else f" jobid={jobid}"
    return (f"Nov 14 18:13:20 node1 ModuleUsageTracking: user={user or f'u{n % 7}'}{job}"
            f" module={module or f'pkg{n % 5}/{n % 3}'} path=/m/p{n % 5}/{n % 3}.lua"
            f" host={host or f'n{n % 4}.c{n % 2}.example.org'} time={t}{extra}\n")


def mixed_lines(count: int, seed: int = 1) -> list[str]:
    """Valid lines over three UTC days with clusters, userload, job ids of several schedulers,
    loads that differ only in jobid or modulefile in one microsecond, and lines logged twice."""
    rng = random.Random(seed)
    out: list[str] = []
    t0 = 1_700_000_000  # 2023-11-14 22:13:20 UTC: the run crosses midnight
    for n in range(count):
        t = f"{t0 + n * 200}.{rng.randrange(10**6):06d}"
        extra = rng.choice(["", " userload=yes", " userload=no", " cluster=frontera",
                            " syshost=ls6 userload=1", " userload=maybe"])
        job = rng.choice([None, "nil", str(1000 + n), f"{1000 + n}_{n % 4}", f"{n}.pbs1",
                          f"{n}+1", "interactive"])
        out.append(line(n, t=t, jobid=job, extra=extra))
        if n % 17 == 0:  # two jobs of one user, one node, one microsecond
            out.append(line(n, t=t, jobid=f"9{n}", extra=extra))
        if n % 23 == 0:  # the same load from another modulefile tree
            out.append(line(n, t=t, jobid=job, extra=extra).replace("path=/m/", "path=/home/"))
        if n % 29 == 0:  # a line logged twice: one load
            out.append(out[-1])
    return out


def distinct_loads(lines: list[str]) -> int:
    return len(set(lines))


#: The file identity of the chunks :func:`write_two_chunks` queues.
CHUNK_KEY = FileKey(1, 2, "00112233aabbccdd")


async def write_two_chunks(store: Any, instance: str, events: list[LoadEvent]) -> Stats:
    """Commit ``events`` through a real :class:`Writer`, queued as two chunks of one file
    (checkpoints 1000 and 2000), with short retries; the writer's stats."""
    queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
    stats = Stats()
    writer = Writer(store, instance, queue, batch_size=5000, batch_timeout=0.05,
                    retry_initial=0.05, retry_max=0.1, stats=stats)
    half = len(events) // 2
    await queue.put(Chunk(CHUNK_KEY, "lmod.log", 1000, events[:half], [], 0, 1000, 0.0))
    await queue.put(Chunk(CHUNK_KEY, "lmod.log", 2000, events[half:], [], 0, 1000, 0.0))
    await queue.put(END)
    await asyncio.wait_for(writer.run(), 120)
    return stats
