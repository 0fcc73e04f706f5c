"""The database cost of schema version 3's data model, measured on its own.

    .venv/bin/python bench/datamodel_cost.py [--rows 1000000] [--batch 10000] [--runs 3]

Inserts the same generated fact rows through the store's statements (binary bulk executes,
as MySQLStore sends them) into a fresh MariaDB database per variant, and prints rows/s:

* ``v2 key``          -- module_usage with schema 2's natural key (load_time, host, user, package)
* ``v3 key``          -- schema 3's key (adds jobid and modulefile through invisible columns)
* ``v3 key + rollup`` -- and the usage_daily upsert of each batch, in the same transaction

Connection: DB_HOST, DB_PORT, DB_USER, DB_PASS (default 127.0.0.1:3306, root, no password).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from pathlib import Path

import asyncmy  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from lmod_tracker.store.base import rollup_rows  # noqa: E402
from lmod_tracker.store.mysql import _UPSERT_DAILY, _usage_statement  # noqa: E402

V2_KEY = "UNIQUE KEY uq_module_usage_natural (load_time, host_id, user_id, package_id),"
V3_KEY = ("jobid_key VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
          " AS (IFNULL(jobid, '')) VIRTUAL INVISIBLE,"
          " modulefile_key BIGINT UNSIGNED AS (IFNULL(modulefile_id, 0)) VIRTUAL INVISIBLE,"
          " UNIQUE KEY uq_module_usage_natural (load_time, host_id, user_id, package_id,"
          " jobid_key, modulefile_key),")
TABLE = ("CREATE TABLE module_usage (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
         " user_id BIGINT UNSIGNED NOT NULL, package_id BIGINT UNSIGNED NOT NULL,"
         " host_id BIGINT UNSIGNED NOT NULL, modulefile_id BIGINT UNSIGNED NULL,"
         " jobid VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,"
         " load_time DATETIME(6) NOT NULL, cluster_id BIGINT UNSIGNED NULL, userload TINYINT NULL,"
         " {key} KEY ix_module_usage_package_time (package_id, load_time),"
         " KEY ix_module_usage_user_time (user_id, load_time)) ENGINE=InnoDB")
DAILY = ("CREATE TABLE usage_daily (day DATE NOT NULL, cluster_id BIGINT UNSIGNED NOT NULL"
         " DEFAULT 0, package_id BIGINT UNSIGNED NOT NULL, user_id BIGINT UNSIGNED NOT NULL,"
         " loads BIGINT UNSIGNED NOT NULL, user_loads BIGINT UNSIGNED NOT NULL,"
         " first_load DATETIME(6) NOT NULL, last_load DATETIME(6) NOT NULL,"
         " PRIMARY KEY (day, cluster_id, package_id, user_id),"
         " KEY ix_usage_daily_package_day (package_id, day),"
         " KEY ix_usage_daily_user_day (user_id, day)) ENGINE=InnoDB")


def rows(n: int) -> list[tuple[object, ...]]:
    """Fact rows like bench/gen.py's: ~2000 users, ~3000 packages, 300 hosts, a load every
    ~100 us on average, jobids on most rows, 3 clusters, userload on half."""
    rng = random.Random(1)
    t = 1_700_000_000_000_000
    out = []
    for i in range(n):
        t += rng.randrange(1, 200)
        s, us = divmod(t, 10**6)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s)) + f".{us:06d}"
        pkg = int(rng.paretovariate(1.1)) % 3000 + 1
        out.append((rng.randrange(1, 2001), pkg, rng.randrange(1, 301), pkg,
                    str(1_000_000 + i // 8) if i % 5 else None, stamp, i % 3 + 1,
                    (1, 0, None, None)[i % 4]))
    return out


async def one(variant: str, data: list[tuple[object, ...]], batch: int) -> float:
    conn = await asyncmy.connect(host=os.environ.get("DB_HOST", "127.0.0.1"),
                                 port=int(os.environ.get("DB_PORT", "3306")),
                                 user=os.environ.get("DB_USER", "root"),
                                 password=os.environ.get("DB_PASS", ""), autocommit=False,
                                 stmt_cache_size=64)
    name = f"dmcost_{os.getpid()}"
    async with conn.cursor() as cur:
        await cur.execute(f"DROP DATABASE IF EXISTS {name}")
        await cur.execute(f"CREATE DATABASE {name}")
        await cur.execute(f"USE {name}")
        await cur.execute(TABLE.format(key=V2_KEY if variant == "v2 key" else V3_KEY))
        await cur.execute(DAILY)
        start = time.perf_counter()
        for i in range(0, len(data), batch):
            part = data[i:i + batch]
            await cur.executemany(*_usage_statement(part))
            if variant.endswith("rollup"):
                await cur.executemany(_UPSERT_DAILY, rollup_rows(part))
            await conn.commit()
        elapsed = time.perf_counter() - start
        await cur.execute(f"DROP DATABASE {name}")
    conn.close()
    return len(data) / elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    data = rows(args.rows)
    variants = ("v2 key", "v3 key", "v3 key + rollup")
    results: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.runs):
        for v in variants:  # interleaved, so a noisy neighbour hurts every variant alike
            results[v].append(await one(v, data, args.batch))
            print(f"{v}: {results[v][-1]:,.0f} rows/s", file=sys.stderr)
    base = max(results["v2 key"])
    print(f"| variant | rows/s (best of {args.runs}) | all runs | vs v2 key |")
    print("|---|---|---|---|")
    for v in variants:
        best = max(results[v])
        runs = ", ".join(f"{r / 1000:.0f}k" for r in results[v])
        print(f"| {v} | {best:,.0f} | {runs} | {100 * (best / base - 1):+.1f}% |")


if __name__ == "__main__":
    asyncio.run(main())
