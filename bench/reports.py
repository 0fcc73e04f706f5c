"""Benchmark of ``lmod-tracker report``: a year of generated loads written straight into the
tables (facts and the usage_daily rollup, consistent by construction), then every report
command timed as an operator runs it (a new process each time), on MariaDB and SQLite.

    .venv/bin/python bench/reports.py                 # 10M loads (about 6 minutes)
    .venv/bin/python bench/reports.py --rows 1000000  # 1M loads
    .venv/bin/python bench/reports.py --quick         # 200k loads, CI: checks it works
    .venv/bin/python bench/reports.py --work /var/tmp/lmt-bench --buffer-pool 1G
        # keeps the generated files, the SQLite file and a private mariadbd's data directory
        # in /var/tmp/lmt-bench; run again with --reuse to time the reports without loading

The population: 2000 users (activity ~ 1/rank**0.8), 800 packages with 1-5 versions each
(popularity ~ 1/rank**1.1 over versions), 300 hosts on 3 clusters (each user
runs 95 % of their jobs on their home cluster). Each user keeps a personal
set of 3-24 module versions drawn by popularity, favours its first ones (log-uniform rank)
and takes 90 % of their loads from it (that is what makes the rollup much smaller than the
facts, as on real clusters); 70 % of loads are in a job, 60 % user-requested, 35 %
dependencies, 5 % unknown. Loads are spread over the 365
days up to today with more on weekdays.

The monthly rollup is then built by ``lmod-tracker db months`` (timed), as the daemon keeps
it; ``--no-months`` unlists every month instead, so the reports read ``usage_daily`` alone.

Loading: the schema is created by ``lmod-tracker db init``; facts go in with ``LOAD DATA
LOCAL INFILE`` (mariadb client) or ``executemany`` (SQLite), with the secondary indexes
dropped during the load and created again after it, so the tables end up exactly as the
schema defines them. Each command runs 3 times: the table shows the first (caches cold for
this query) and the best wall time, including Python's start (about 0.3 s of each figure).

MariaDB: by default the server of the tests (``discover_mysql``, 127.0.0.1:3306 as it is
configured). ``--buffer-pool SIZE`` starts a private ``mariadbd`` instead (data directory in
``WORK/mariadb``, a unix socket and a free TCP port, stopped at the end) with
``innodb_buffer_pool_size=SIZE``: a site holding a year of rollup (about 500 MiB at 10M loads)
sizes its buffer pool to hold it, and the shared server's 128 MiB default cannot.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmod_tracker.store.base import schema_statement  # noqa: E402
from tests.support.databases import (  # noqa: E402
    DbHandle,
    MysqlServer,
    create_mysql_database,
    discover_mysql,
    drop_mysql_database,
    mysql_handle,
    mysql_query,
    sqlite_handle,
)

N_USERS, N_PACKAGES, N_HOSTS = 2000, 800, 300
CLUSTERS = ("alpha", "beta", "gamma")
NULL = "\\N"  # LOAD DATA's NULL
_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ the population


@dataclass
class Population:
    users: list[str]
    packages: list[tuple[str, str]]  # (name, version), index + 1 = id, by popularity
    hosts: list[str]
    host_cluster: list[int]          # cluster id per host
    cum_packages: list[float]
    cum_users: list[float]
    personal: list[list[int]] = field(default_factory=list)


def population(rng: random.Random) -> Population:
    users = [f"u{i:04d}" for i in range(N_USERS)]
    syll = ("ba", "ce", "di", "fo", "gu", "ha", "ke", "li", "mo", "nu", "pa", "ro", "sa",
            "tu", "ve", "xo", "ze", "blast", "seq", "mol", "grid", "flux", "tensor")
    names: list[str] = ["gcc", "python", "openmpi", "cuda", "R", "intel", "matlab", "cmake"]
    while len(names) < N_PACKAGES:
        name = "".join(rng.choice(syll) for _ in range(rng.randrange(2, 4)))
        if rng.random() < 0.15:
            name = f"{rng.choice(('bio', 'chem', 'tools'))}/{name}"
        if name not in names:
            names.append(name)
    packages: list[tuple[str, str]] = []
    for name in names:
        versions = {f"{rng.randrange(1, 15)}.{rng.randrange(10)}.{rng.randrange(5)}"
                    for _ in range(rng.randrange(1, 6))}
        packages.extend((name, v) for v in sorted(versions))
    rng.shuffle(packages)  # popularity rank independent of the name
    hosts = [f"n{i:03d}.example.org" for i in range(N_HOSTS)]
    host_cluster = [1 + i * len(CLUSTERS) // N_HOSTS for i in range(N_HOSTS)]
    cum_p = list(itertools.accumulate(1 / (r ** 1.1) for r in range(1, len(packages) + 1)))
    cum_u = list(itertools.accumulate(1 / (r ** 0.8) for r in range(1, N_USERS + 1)))
    pop = Population(users, packages, hosts, host_cluster, cum_p, cum_u)
    for _ in users:
        k = rng.randrange(3, 25)
        favourites = [bisect.bisect(cum_p, rng.random() * cum_p[-1]) + 1 for _ in range(k)]
        # the first favourites are loaded most: ranks 1, 1, 2, 2, 3, 4, ... (weight ~ 1/rank)
        pop.personal.append([favourites[int(k ** rng.random()) - 1] for _ in range(64)])
    return pop


Fact = tuple[int, int, int, int, int | None, str | None, str]
#: (user_id, package_id, host_id, cluster_id, userload, jobid, load_time)


def facts(pop: Population, rows: int, rng: random.Random, today: dt.date) -> Iterator[Fact]:
    """``rows`` loads over the 365 days to ``today``, in time order, times unique."""
    days = [today - dt.timedelta(days=364 - i) for i in range(365)]
    weights = [1.0 if d.weekday() < 5 else 0.4 for d in days]
    per_day = [int(rows * w / sum(weights)) for w in weights]
    per_day[-1] += rows - sum(per_day)
    jobid = 1_000_000
    cum_u, total_u = pop.cum_users, pop.cum_users[-1]
    cum_p, total_p = pop.cum_packages, pop.cum_packages[-1]
    n_users = len(pop.users)
    for day, n in zip(days, per_day, strict=True):
        base = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * 1_000_000
        offsets = sorted(rng.randrange(86_400_000_000) for _ in range(n))
        last = -1
        burst = 0
        uid = host = 0
        job: str | None = None
        for off in offsets:
            off = max(off, last + 1)
            last = off
            if burst <= 0:  # a new job or session: one user on one host loads a few modules
                uid = min(bisect.bisect(cum_u, rng.random() * total_u), n_users - 1)
                # 95 % on the user's home cluster (a third of the hosts each)
                third = N_HOSTS // len(CLUSTERS)
                home = uid % len(CLUSTERS) if rng.random() < 0.95 else rng.randrange(3)
                host = home * third + rng.randrange(third)
                burst = rng.randrange(1, 8)
                if rng.random() < 0.7:
                    jobid += 1
                    job = str(jobid)
                else:
                    job = None
            burst -= 1
            if rng.random() < 0.9:
                pid = rng.choice(pop.personal[uid])
            else:
                pid = bisect.bisect(cum_p, rng.random() * total_p) + 1
            r = rng.random()
            userload = 1 if r < 0.6 else (0 if r < 0.95 else None)
            t = base + off
            stamp = dt.datetime.fromtimestamp(t // 1_000_000, dt.UTC).strftime(
                "%Y-%m-%d %H:%M:%S") + f".{t % 1_000_000:06d}"
            yield (uid + 1, pid, host + 1, pop.host_cluster[host], userload, job, stamp)


# ------------------------------------------------------------------------------ loading

MYSQL_SECONDARY = {
    "module_usage": {"ix_module_usage_package_time": "(package_id, load_time)",
                     "ix_module_usage_user_time": "(user_id, load_time)"},
    "usage_daily": {"ix_usage_daily_package_day": "(package_id, day)",
                    "ix_usage_daily_user_day": "(user_id, day)"},
}


def lmod(env: dict[str, str], *args: str, check: bool = True,
         extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("DB_", "LMOD_TRACKER_"))}
    full.update(env)
    full.update(extra or {})
    full.setdefault("TZ", "UTC")
    proc = subprocess.run([sys.executable, "-m", "lmod_tracker", *args], env=full,
                          capture_output=True, text=True, timeout=3600)
    if check and proc.returncode != 0:
        raise SystemExit(f"lmod-tracker {' '.join(args)}: exit {proc.returncode}\n"
                         f"{proc.stderr}")
    return proc


def generate(pop: Population, rows: int, seed: int, today: dt.date, work: Path
             ) -> tuple[Path, Path, int]:
    """TSV files of the facts and of the rollup (sorted by its primary key)."""
    rng = random.Random(seed + 1)
    facts_tsv, rollup_tsv = work / "facts.tsv", work / "rollup.tsv"
    rollup: dict[tuple[str, int, int, int], list[object]] = {}
    n = 0
    with facts_tsv.open("w") as f:
        for uid, pid, host, cluster, userload, job, stamp in facts(pop, rows, rng, today):
            ul = NULL if userload is None else userload
            f.write(f"{uid}\t{pid}\t{host}\t{cluster}\t{ul}\t{job or NULL}\t{stamp}\n")
            key = (stamp[:10], cluster, pid, uid)
            entry = rollup.get(key)
            if entry is None:
                rollup[key] = [1, 1 if userload == 1 else 0, stamp, stamp]
            else:
                entry[0] += 1  # type: ignore[operator]
                if userload == 1:
                    entry[1] += 1  # type: ignore[operator]
                entry[3] = stamp
            n += 1
            if n % 1_000_000 == 0:
                say(f"  generated {n:,} loads, {len(rollup):,} rollup rows")
    with rollup_tsv.open("w") as f:
        for key in sorted(rollup):
            loads, user_loads, first, last = rollup[key]
            f.write(f"{key[0]}\t{key[1]}\t{key[2]}\t{key[3]}\t{loads}\t{user_loads}\t"
                    f"{first}\t{last}\n")
    return facts_tsv, rollup_tsv, len(rollup)


def count_rollups(pop: Population, rows: int, seed: int, today: dt.date) -> tuple[int, int]:
    """The usage_daily and usage_monthly rows ``rows`` generated loads make, counted without
    writing anything (the loads come in time order: one day's and one month's keys at a time)."""
    rng = random.Random(seed + 1)
    daily = monthly = 0
    day_keys: set[tuple[int, int, int]] = set()
    month_keys: set[tuple[int, int, int]] = set()
    day = month = ""
    for uid, pid, _host, cluster, _userload, _job, stamp in facts(pop, rows, rng, today):
        if stamp[:10] != day:
            daily += len(day_keys)
            day_keys.clear()
            day = stamp[:10]
            if day[:7] != month:
                monthly += len(month_keys)
                month_keys.clear()
                month = day[:7]
        key = (cluster, pid, uid)
        day_keys.add(key)
        month_keys.add(key)
    return daily + len(day_keys), monthly + len(month_keys)


def dimensions(pop: Population) -> dict[str, list[tuple[object, ...]]]:
    return {
        "user": [(i + 1, u) for i, u in enumerate(pop.users)],
        "package": [(i + 1, n, v) for i, (n, v) in enumerate(pop.packages)],
        "host": [(i + 1, h) for i, h in enumerate(pop.hosts)],
        "cluster": [(i + 1, c) for i, c in enumerate(CLUSTERS)],
    }


def load_mysql(db: DbHandle, pop: Population, facts_tsv: Path, rollup_tsv: Path) -> None:
    assert db.server is not None
    lmod(db.env, "db", "init")
    for table, rows in dimensions(pop).items():
        cols = "(id, name, version)" if table == "package" else "(id, name)"
        for i in range(0, len(rows), 1000):
            chunk = rows[i:i + 1000]
            marks = ",".join(["(" + ",".join(["%s"] * len(chunk[0])) + ")"] * len(chunk))
            db.execute(f"INSERT INTO `{table}` {cols} VALUES {marks}",
                       [v for r in chunk for v in r])
    for table, indexes in MYSQL_SECONDARY.items():
        db.execute(f"ALTER TABLE {table} " + ", ".join(f"DROP INDEX {n}" for n in indexes))
    s = db.server
    script = (
        "SET SESSION unique_checks = 0; SET SESSION time_zone = '+00:00';"
        f" LOAD DATA LOCAL INFILE '{facts_tsv}' INTO TABLE module_usage"
        " (user_id, package_id, host_id, cluster_id, userload, jobid, load_time);"
        f" LOAD DATA LOCAL INFILE '{rollup_tsv}' INTO TABLE usage_daily"
        " (day, cluster_id, package_id, user_id, loads, user_loads, first_load, last_load);")
    subprocess.run(["mariadb", "--local-infile=1", "-h", s.host, "-P", str(s.port), "-u",
                    s.user, *([f"-p{s.password}"] if s.password else []), db.name, "-e",
                    script], check=True, timeout=7200)
    for table, indexes in MYSQL_SECONDARY.items():
        db.execute(f"ALTER TABLE {table} " + ", ".join(
            f"ADD KEY {n} {cols}" for n, cols in indexes.items()))
    db.execute("ANALYZE TABLE module_usage, usage_daily, package, `user`")


def load_sqlite(db: DbHandle, pop: Population, facts_tsv: Path, rollup_tsv: Path) -> None:
    assert db.sqlite_path is not None
    lmod(db.env, "db", "init")
    conn = sqlite3.connect(db.sqlite_path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        " AND tbl_name IN ('module_usage', 'usage_daily')").fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    for table, rows in dimensions(pop).items():
        marks = ",".join("?" * len(rows[0]))
        conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    def tsv(path: Path) -> Iterator[list[str | None]]:
        with path.open() as f:
            for line in f:
                yield [None if v == "\\N" else v for v in line.rstrip("\n").split("\t")]

    conn.executemany("INSERT INTO module_usage (user_id, package_id, host_id, cluster_id,"
                     " userload, jobid, load_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     ((int(a), int(b), int(c), int(d), None if e is None else int(e), f, g)
                      for a, b, c, d, e, f, g in tsv(facts_tsv)))
    conn.executemany("INSERT INTO usage_daily VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     ((a, int(b), int(c), int(d), int(e), int(f), g, h)
                      for a, b, c, d, e, f, g, h in tsv(rollup_tsv)))
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


# -------------------------------------------------------------------- private mariadbd


class PrivateMariadb:
    """A mariadbd of our own: ``datadir`` initialised once (kept for --reuse), root without a
    password over TCP on a free port of 127.0.0.1."""

    def __init__(self, datadir: Path, buffer_pool: str) -> None:
        self.datadir = datadir
        self.buffer_pool = buffer_pool
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> MysqlServer:
        if not (self.datadir / "mysql").is_dir():
            self.datadir.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}",
                            "--auth-root-authentication-method=normal", "--user=root",
                            "--skip-test-db"], check=True, capture_output=True, timeout=300)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        log = (self.datadir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             "--bind-address=127.0.0.1", f"--port={self.port}",
             f"--socket={self.datadir / 'mysqld.sock'}",
             f"--pid-file={self.datadir / 'mysqld.pid'}",
             f"--innodb-buffer-pool-size={self.buffer_pool}",
             "--innodb-log-file-size=512M", "--local-infile=1", "--skip-log-bin"],
            stdout=log, stderr=log)
        server = MysqlServer("127.0.0.1", self.port, "root", "")
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"private mariadbd exited: see {self.datadir / 'server.log'}")
            try:
                mysql_query(server, "SELECT 1")
                return server
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ------------------------------------------------------------------------------ timing


@dataclass
class Timing:
    command: str
    db: str
    first: float
    best: float
    rows: int


def spider_json(pop: Population, work: Path, rng: random.Random) -> Path:
    """An installed list in spider-json form: 90 % of the versions plus 200 never loaded."""
    installed = [p for p in pop.packages if rng.random() < 0.9]
    installed += [(f"extra{i}", "1.0") for i in range(200)]
    doc: dict[str, dict[str, dict[str, object]]] = {}
    for name, version in installed:
        path = f"/opt/mf/{name}/{version}.lua"
        doc.setdefault(name, {})[path] = {"fullName": f"{name}/{version}",
                                          "Version": version, "hidden": False}
    out = work / "spider.json"
    out.write_text(json.dumps(doc))
    return out


def commands(pop: Population, work: Path, spider: Path) -> list[list[str]]:
    top_pkg = pop.packages[0][0]
    mid = pop.packages[60]
    mid_text = f"{mid[0]}/{mid[1]}"
    return [
        ["top"],
        ["top", "--since", "365d", "--by", "version"],
        ["top", "--since", "365d", "--user-requested", "--cluster", "beta"],
        ["users", top_pkg],
        ["users", mid_text],
        ["user", pop.users[0]],
        ["user", pop.users[500]],
        ["trend", "--every", "month"],
        ["trend", top_pkg, "--every", "week"],
        ["trend", "--every", "day", "--since", "90d"],
        ["unused", "--since", "180d"],
        ["unused", "--since", "180d", "--installed", str(spider)],
        ["jobs", mid_text],
        ["jobs", top_pkg, "--since", "7d"],
        ["health"],
        ["html", "-o", str(work / "usage.html"), "--installed", str(spider)],
    ]


def time_commands(env: dict[str, str], kind: str, cmds: list[list[str]], runs: int
                  ) -> list[Timing]:
    out = []
    for cmd in cmds:
        walls = []
        rows = 0
        for _ in range(runs):
            t0 = time.perf_counter()
            args = [*cmd] if cmd[0] == "html" else [*cmd, "--format", "csv"]
            proc = lmod(env, "report", *args)
            walls.append(time.perf_counter() - t0)
            rows = max(0, len(proc.stdout.splitlines()) - 1) if cmd[0] != "html" else 0
        shown = " ".join(c if "/" not in c or not c.startswith("/") else Path(c).name
                         for c in cmd)
        out.append(Timing(f"report {shown}", kind, walls[0], min(walls), rows))
        say(f"  {kind}: report {shown}: first {walls[0]:.2f} s, best {min(walls):.2f} s,"
            f" {rows} rows")
    return out


def python_start(runs: int = 3) -> float:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        lmod({}, "report", "--help")
        walls.append(time.perf_counter() - t0)
    return min(walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="200k loads, 1 run per command")
    ap.add_argument("--backends", default="mysql,sqlite")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--keep", action="store_true", help="keep the databases (prints where)")
    ap.add_argument("--work", type=Path, help="directory for the generated files and"
                    " databases (kept); default: a temporary one, removed at the end")
    ap.add_argument("--reuse", action="store_true", help="use the files and databases a"
                    " previous run left in --work (same --rows, --seed and day) instead of"
                    " generating and loading them again")
    ap.add_argument("--buffer-pool", metavar="SIZE", help="run MariaDB on a private mariadbd"
                    " (data in WORK/mariadb) with innodb_buffer_pool_size=SIZE, e.g. 1G")
    ap.add_argument("--no-months", action="store_true",
                    help="time the reports without the monthly rollup (its marks deleted:"
                    " every month is read from usage_daily; a later run builds it again)")
    ap.add_argument("--count", metavar="N,N,...",
                    help="only count the rollup rows that N generated loads make (no database),"
                    " for each N, and print a table")
    ap.add_argument("--only", action="append", default=[], metavar="TEXT",
                    help="time only the commands whose text contains TEXT (repeatable)")
    args = ap.parse_args()
    if args.reuse and args.work is None:
        ap.error("--reuse needs --work DIR (the directory a previous run left)")
    if args.count:
        sizes = [int(n.replace("_", "")) for n in args.count.split(",")]
        today = dt.datetime.now(dt.UTC).date()
        print("| loads a year | usage_daily rows | per load | usage_monthly rows | of the daily |")
        print("|---|---|---|---|---|")
        for n in sizes:
            t0 = time.perf_counter()
            d, m = count_rollups(population(random.Random(args.seed)), n, args.seed, today)
            say(f"  {n:,} loads counted in {time.perf_counter() - t0:.0f} s")
            print(f"| {n:,} | {d:,} | {d / n:.3f} | {m:,} | {m / d:.1%} |", flush=True)
        return
    rows = 200_000 if args.quick else args.rows
    runs = 1 if args.quick else args.runs
    today = dt.datetime.now(dt.UTC).date()
    rng = random.Random(args.seed)
    pop = population(rng)
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="lmt-bench-reports-")) if temporary else args.work
    work.mkdir(parents=True, exist_ok=True)
    stamp = {"rows": rows, "seed": args.seed, "today": today.isoformat()}
    state_file = work / "state.json"
    if not args.reuse and state_file.exists():
        forget(work, json.loads(state_file.read_text()))
        state_file.unlink()
    state = json.loads(state_file.read_text()) if args.reuse and state_file.exists() else {}
    if args.reuse and state.get("stamp") != stamp:
        raise SystemExit(f"--reuse: {work} holds {state.get('stamp')}, not {stamp}")
    if state:
        rollup_rows = int(state["rollup_rows"])
        facts_tsv, rollup_tsv = work / "facts.tsv", work / "rollup.tsv"
        say(f"reusing {work}: {rows:,} facts, {rollup_rows:,} rollup rows")
    else:
        say(f"generating {rows:,} loads over 365 days into {work}")
        t0 = time.perf_counter()
        facts_tsv, rollup_tsv, rollup_rows = generate(pop, rows, args.seed, today, work)
        say(f"generated in {time.perf_counter() - t0:.0f} s: {rows:,} facts,"
            f" {rollup_rows:,} rollup rows ({rollup_rows / rows:.1%} of the facts),"
            f" {len(pop.packages):,} module versions")
        state = {"stamp": stamp, "rollup_rows": rollup_rows, "loaded": {}}
    spider = spider_json(pop, work, random.Random(args.seed + 2))
    cmds = commands(pop, work, spider)
    if args.only:
        cmds = [c for c in cmds if any(t in " ".join(c) for t in args.only)]
    timings: list[Timing] = []
    loads: dict[str, float] = {}
    builds: dict[str, float | None] = {}
    start = python_start()
    say(f"python + lmod-tracker start: {start:.2f} s")

    def save() -> None:
        if not temporary:
            state_file.write_text(json.dumps(state))

    for kind in args.backends.split(","):
        t0 = time.perf_counter()
        if kind == "mysql":
            private = PrivateMariadb(work / "mariadb", args.buffer_pool) \
                if args.buffer_pool else None
            server = private.start() if private else discover_mysql()
            key = f"mysql:{args.buffer_pool or 'shared'}"
            name = state["loaded"].get(key)
            try:
                db = mysql_handle(server, name) if name else None
                if db is None:
                    name = create_mysql_database(server)
                    db = mysql_handle(server, name)
                    say(f"loading MariaDB database {name}")
                    load_mysql(db, pop, facts_tsv, rollup_tsv)
                    loads[kind] = time.perf_counter() - t0
                    if args.keep or not temporary:
                        state["loaded"][key] = name
                        save()
                check(db, rows, rollup_rows)
                monthly(db, "MariaDB", args.no_months, builds)
                timings += time_commands(db.env, "MariaDB", cmds, runs)
            finally:
                if not (args.keep or not temporary):
                    drop_mysql_database(server, name) if name else None
                if private:
                    private.stop()
        else:
            path = work / "lmod.db"
            db = sqlite_handle(path)
            if not state["loaded"].get("sqlite"):
                say(f"loading SQLite {path}")
                if path.exists():
                    path.unlink()
                load_sqlite(db, pop, facts_tsv, rollup_tsv)
                loads[kind] = time.perf_counter() - t0
                state["loaded"]["sqlite"] = str(path)
                save()
            check(db, rows, rollup_rows)
            monthly(db, "SQLite", args.no_months, builds)
            timings += time_commands(db.env, "SQLite", cmds, runs)
    print(render(timings, rows, rollup_rows, len(pop.packages), loads, start,
                 args.buffer_pool, builds))
    if temporary and not args.keep:
        shutil.rmtree(work)


def forget(work: Path, old: dict[str, Any]) -> None:
    """A run without --reuse over a --work directory a previous run left: drop the MariaDB
    databases its state lists (the shared server's by name, the private server's with its data
    directory, WORK/mariadb), so none is left behind unlisted."""
    for key, name in old.get("loaded", {}).items():
        if key == "mysql:shared":
            say(f"dropping MariaDB database {name} of the previous run in {work}")
            try:
                drop_mysql_database(discover_mysql(), name)
            except Exception as exc:
                raise SystemExit(f"{work} lists MariaDB database {name} of a previous run,"
                                 f" which could not be dropped ({exc}): drop it, or give"
                                 " --reuse") from None
    private = work / "mariadb"
    if private.is_dir():
        say(f"removing the private mariadbd data of the previous run: {private}")
        shutil.rmtree(private)


def monthly(db: DbHandle, label: str, off: bool, builds: dict[str, float | None]) -> None:
    """The monthly rollup as the daemon keeps it: ``lmod-tracker db months`` (timed) when no
    month is built; with ``off``, no month marked built (reports read usage_daily only)."""
    if off:
        db.execute("DELETE FROM usage_month")
        builds[label] = None
        say(f"  {label}: monthly rollup off (usage_month emptied)")
        return
    existing = {str(n) for (n,) in db.rows(
        "SELECT name FROM sqlite_master WHERE type = 'table'" if db.kind == "sqlite" else
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")}
    for table in ("usage_monthly", "package_monthly", "usage_month"):
        if table not in existing:  # a database loaded by an older version of this script
            db.execute(schema_statement(db.kind, table))
    if db.scalar("SELECT COUNT(*) FROM usage_month") and db.scalar(
            "SELECT COUNT(*) FROM package_monthly"):
        say(f"  {label}: monthly rollup already built")
        return
    db.execute("DELETE FROM usage_month")
    t0 = time.perf_counter()
    lmod(db.env, "db", "months")
    builds[label] = time.perf_counter() - t0
    n = db.scalar("SELECT COUNT(*) FROM usage_monthly")
    say(f"  {label}: monthly rollup built in {builds[label]:.1f} s ({n:,} rows)")


def check(db: DbHandle, rows: int, rollup_rows: int) -> None:
    facts = db.scalar("SELECT COUNT(*) FROM module_usage")
    rolled = db.rows("SELECT COUNT(*), SUM(loads) FROM usage_daily")[0]
    if facts != rows or int(rolled[0]) != rollup_rows or int(rolled[1]) != rows:
        raise SystemExit(f"{db.kind}: {facts} facts, rollup {rolled}; expected {rows},"
                         f" {rollup_rows} rows summing to {rows}")
    say(f"  {db.kind}: {facts:,} facts, {rollup_rows:,} rollup rows, sums agree")


def render(timings: list[Timing], rows: int, rollup_rows: int, versions: int,
           loads: dict[str, float], start: float, buffer_pool: str | None,
           builds: dict[str, float | None]) -> str:
    mysql_version = ""
    with contextlib.suppress(OSError):
        mysql_version = subprocess.run(["mariadb", "--version"], capture_output=True,
                                       text=True).stdout.strip()
    server_text = (f"private mariadbd, innodb_buffer_pool_size={buffer_pool}" if buffer_pool
                   else "MariaDB: the shared server as configured")
    out = [f"Reports on {rows:,} loads over 365 days ({rollup_rows:,} usage_daily rows,"
           f" {versions:,} module versions, {N_USERS:,} users); {os.cpu_count()} CPUs,"
           f" Python {platform.python_version()}; {mysql_version}"
           f" ({server_text})",
           f"Loading took {', '.join(f'{k} {v:.0f} s' for k, v in loads.items()) or '-'};"
           f" starting Python + lmod-tracker alone takes {start:.2f} s of each figure.",
           "Monthly rollup (`db months`): " + (", ".join(
               f"{k} {'off' if v is None else f'built in {v:.0f} s'}" for k, v in builds.items())
               or "built by an earlier run") + ".", "",
           "| command | database | first run s | best of runs s | rows |",
           "|---|---|---|---|---|"]
    by_cmd: dict[str, list[Timing]] = {}
    for t in timings:
        by_cmd.setdefault(t.command, []).append(t)
    for cmd, ts in by_cmd.items():
        for t in ts:
            out.append(f"| `{cmd}` | {t.db} | {t.first:.2f} | {t.best:.2f} | {t.rows:,} |")
    worst = max((t.best for t in timings if "html" not in t.command), default=0.0)
    html = max((t.best for t in timings if "html" in t.command), default=0.0)
    out += ["", f"slowest report (best of runs): {worst:.2f} s (target < 1 s);"
            f" html: {html:.2f} s (target < 5 s); median"
            f" {statistics.median(t.best for t in timings):.2f} s"]
    return "\n".join(out)


if __name__ == "__main__":
    main()
