"""A known data set for the report tests, loaded through the real ingestion path.

:func:`make_loads` draws ~1500 loads over the last 400 days (relative to today, UTC) with
known users, module versions, hosts, clusters, ``userload=`` flags and job ids; the tests
compute every expected figure from this list in plain Python and compare with what
``lmod-tracker report`` prints. :func:`load` writes the loads as syslog lines (plus a few
rejects) with ``cluster=``, ``userload=`` and ``jobid=``, runs ``lmod-tracker ingest`` on
them, and checks what the store made of them (the rollup must equal its GROUP BY).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.daemon import cli
from tests.support.databases import (
    DbHandle,
    create_mysql_database,
    drop_mysql_database,
    mysql_handle,
    sqlite_handle,
)

USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
#: module -> weight; intel/2021.4 is loaded only long ago, python/3.9.18 is no longer installed.
MODULES = {
    "gcc/9.3.0": 3, "gcc/12.2.0": 8, "gcc/13.1.0": 5, "openmpi/4.1.5": 6,
    "python/3.11.4": 7, "python/3.9.18": 2, "R/4.3.1": 3, "cuda/12.2": 2,
    "bio/samtools/1.17": 2, "matlab": 1,
}
OLD_ONLY = "intel/2021.4"
#: What the test's module tree installs (gcc/14.1.0 is never loaded; python/3.9.18 and
#: intel/2021.4 are loaded but not installed).
INSTALLED = ("gcc/9.3.0", "gcc/12.2.0", "gcc/13.1.0", "gcc/14.1.0", "openmpi/4.1.5",
             "python/3.11.4", "R/4.3.1", "cuda/12.2", "bio/samtools/1.17", "matlab")
HOSTS = {"a01": "alpha", "a02": "alpha", "b01": "beta", "b02": "beta", "login1": None}
DAYS = 400
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Load:
    time: dt.datetime  # aware, UTC, microseconds
    user: str
    module: str
    host: str
    cluster: str | None
    userload: int | None
    jobid: str | None

    @property
    def day(self) -> dt.date:
        return self.time.date()

    @property
    def package(self) -> str:
        return self.module.rpartition("/")[0] or self.module

    @property
    def version(self) -> str:
        return self.module.rpartition("/")[2] if "/" in self.module else ""


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def make_loads(seed: int = 11, n: int = 1500) -> list[Load]:
    rng = random.Random(seed)
    base = dt.datetime.combine(today(), dt.time(), dt.UTC)
    modules, weights = zip(*MODULES.items(), strict=True)
    loads: list[Load] = []
    for i in range(n):
        back = int(rng.random() ** 1.5 * DAYS)  # more loads recently
        module = rng.choices(modules, weights)[0]
        if i % 50 == 0:
            module, back = OLD_ONLY, rng.randrange(200, DAYS)
        # seconds into the day; today's loads only up to one hour ago (none in the future)
        now_s = int((dt.datetime.now(dt.UTC) - base).total_seconds()) - 3600
        limit = 86_399 if back else max(now_s, 1)
        moment = (base - dt.timedelta(days=back)
                  + dt.timedelta(seconds=rng.randrange(limit), microseconds=i))
        host = rng.choice(list(HOSTS))
        user = USERS[min(int(rng.expovariate(0.45)), len(USERS) - 1)]
        userload = rng.choice((1, 1, 0, None))
        jobid = str(100_000 + i // 3) if rng.random() < 0.5 else None
        loads.append(Load(moment, user, module, host, HOSTS[host], userload, jobid))
    loads.sort(key=lambda x: x.time)
    return loads


def line(load: Load) -> str:
    t = load.time
    stamp = f"{_MONTHS[t.month - 1]} {t.day:2d} {t:%H:%M:%S}"
    epoch = int(t.timestamp())
    pairs = [f"user={load.user}"]
    if load.jobid:
        pairs.append(f"jobid={load.jobid}")
    pairs += [f"module={load.module}", f"path=/opt/mf/{load.module}.lua",
              f"host={load.host}.example.org", f"time={epoch}.{t.microsecond:06d}"]
    if load.cluster:
        pairs.append(f"cluster={load.cluster}")
    if load.userload is not None:
        pairs.append(f"userload={'yes' if load.userload else 'no'}")
    return f"{stamp} {load.host} ModuleUsageTracking: {' '.join(pairs)}\n"


#: Lines with our tag that cannot be parsed: 3 without user=, 2 with a bad time=.
BAD_LINES = (
    "Jan  1 00:00:01 a01 ModuleUsageTracking: module=gcc/9.3.0 host=a01 time=1.0\n",
    "Jan  1 00:00:02 a01 ModuleUsageTracking: module=gcc/9.3.0 host=a01 time=2.0\n",
    "Jan  1 00:00:03 a01 ModuleUsageTracking: module=gcc/9.3.0 host=a01 time=3.0\n",
    "Jan  1 00:00:04 a01 ModuleUsageTracking: user=x module=gcc/9.3.0 host=a01 time=abc\n",
    "Jan  1 00:00:05 a01 ModuleUsageTracking: user=x module=gcc/9.3.0 host=a01 time=12x\n",
)


def write_log(path: Path, loads: Iterable[Load]) -> Path:
    with path.open("w") as f:
        f.write(BAD_LINES[0])
        for ld in loads:
            f.write(line(ld))
        f.writelines(BAD_LINES[1:])
    return path


#: The rollup as a GROUP BY over the facts (what the store keeps it equal to).
ROLLUP_SELECT = {
    "mysql": "SELECT DATE(load_time), COALESCE(cluster_id, 0), package_id, user_id, COUNT(*),"
             " SUM(CASE WHEN userload = 1 THEN 1 ELSE 0 END), MIN(load_time), MAX(load_time)"
             " FROM module_usage GROUP BY DATE(load_time), COALESCE(cluster_id, 0),"
             " package_id, user_id",
    "sqlite": "SELECT substr(load_time, 1, 10), COALESCE(cluster_id, 0), package_id, user_id,"
              " COUNT(*), SUM(CASE WHEN userload = 1 THEN 1 ELSE 0 END), MIN(load_time),"
              " MAX(load_time) FROM module_usage GROUP BY 1, 2, 3, 4",
}


def load(db: DbHandle, tmp: Path, loads: Sequence[Load]) -> None:
    """Ingest the loads (and the bad lines); check that every load is stored and that the
    rollup equals the GROUP BY over the facts."""
    log = write_log(tmp / "lmod.log", loads)
    cli(db.env, "ingest", str(log))
    stored = db.scalar("SELECT COUNT(*) FROM module_usage")
    assert stored == len(loads), f"{stored} rows stored, {len(loads)} loads generated"
    rollup = sorted(tuple(str(v) for v in r) for r in db.rows(
        "SELECT day, cluster_id, package_id, user_id, loads, user_loads, first_load,"
        " last_load FROM usage_daily"))
    expected = sorted(tuple(str(v) for v in r) for r in db.rows(ROLLUP_SELECT[db.kind]))
    assert rollup == expected, "usage_daily differs from the GROUP BY over module_usage"


# ------------------------------------------------------------------------- Lmod's spider

SPIDER_CANDIDATES = ("/usr/share/lmod/lmod/libexec/spider",
                     "/usr/share/lmod/8.6.19/libexec/spider")


def spider_binary() -> Path | None:
    """Lmod's spider (Debian's ``lmod`` package), or None when Lmod is not installed."""
    for candidate in SPIDER_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    found = sorted(Path("/usr/share/lmod").glob("*/libexec/spider"))
    return found[0] if found else None


def make_tree(root: Path, modules: Iterable[str] = INSTALLED) -> Path:
    """A module tree with one Lua modulefile per module (``matlab`` at the top: no version)."""
    for module in modules:
        path = root / f"{module}.lua"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'whatis("{module}")\nsetenv("LMT_TEST", "{module}")\n')
    return root


def run_spider(spider: Path, tree: Path, fmt: str, out: Path) -> Path:
    """``$LMOD_DIR/spider -o FMT TREE`` written to ``out``."""
    import subprocess

    env = {"PATH": "/usr/bin:/bin", "LMOD_DIR": str(spider.parent), "HOME": str(out.parent)}
    proc = subprocess.run([str(spider), "-o", fmt, str(tree)], env=env, capture_output=True,
                          text=True, timeout=120, check=True, cwd=out.parent)
    out.write_text(proc.stdout)
    return out


#: params of a module fixture that gives each test a database of either backend (:func:`loaded`)
BACKENDS = [pytest.param("sqlite", id="sqlite"),
            pytest.param("mysql", id="mysql", marks=pytest.mark.mysql)]
#: the same, and each again with the monthly rollup built: every answer must be the same
WITH_MONTHS = [*BACKENDS, pytest.param("sqlite-months", id="sqlite-months"),
               pytest.param("mysql-months", id="mysql-months", marks=pytest.mark.mysql)]

MONTHLY_SELECT = (
    "SELECT month, cluster_id, package_id, user_id, loads, user_loads, first_load, last_load"
    " FROM usage_monthly")
MONTHLY_FROM_DAILY = {
    "mysql": "SELECT day - INTERVAL DAYOFMONTH(day) - 1 DAY, cluster_id, package_id, user_id,"
             " SUM(loads), SUM(user_loads), MIN(first_load), MAX(last_load) FROM usage_daily"
             " WHERE day - INTERVAL DAYOFMONTH(day) - 1 DAY IN (SELECT month FROM usage_month)"
             " GROUP BY day - INTERVAL DAYOFMONTH(day) - 1 DAY, cluster_id, package_id,"
             " user_id",
    "sqlite": "SELECT substr(day, 1, 8) || '01', cluster_id, package_id, user_id, SUM(loads),"
              " SUM(user_loads), MIN(first_load), MAX(last_load) FROM usage_daily"
              " WHERE substr(day, 1, 8) || '01' IN (SELECT month FROM usage_month)"
              " GROUP BY substr(day, 1, 8) || '01', cluster_id, package_id, user_id",
}


def assert_months_agree(db: DbHandle) -> int:
    """usage_monthly holds exactly the GROUP BY month of usage_daily for every month marked
    built, and package_monthly the GROUP BY package of usage_monthly; the number of months
    built."""
    def rows(sql: str) -> list[tuple[str, ...]]:  # months as YYYY-MM-DD on both backends
        return sorted(tuple(str(v)[:10] if i == 0 else str(v) for i, v in enumerate(r))
                      for r in db.rows(sql))

    built = " month IN (SELECT month FROM usage_month)"
    assert rows(MONTHLY_SELECT + " WHERE" + built) == rows(MONTHLY_FROM_DAILY[db.kind]), \
        "usage_monthly differs from usage_daily summed per month"
    assert rows("SELECT month, cluster_id, package_id, loads, user_loads FROM package_monthly"
                " WHERE" + built) == rows(
        "SELECT month, cluster_id, package_id, SUM(loads), SUM(user_loads) FROM usage_monthly"
        " WHERE" + built + " GROUP BY month, cluster_id, package_id"), \
        "package_monthly differs from usage_monthly summed per package"
    return int(db.scalar("SELECT COUNT(*) FROM usage_month"))


def build_months(db: DbHandle) -> int:
    """``lmod-tracker db months``; checks what the rollup holds after it and returns the
    number of months it says it built (one line per month, then the count)."""
    out = cli(db.env, "db", "months").stdout.splitlines()
    assert_months_agree(db)
    n = int(out[-1].split()[0])
    assert out[-1].startswith(f"{n} months built") and len(out) == n + 1, out
    return n


def loaded(request: pytest.FixtureRequest, tmp: Path, loads: Sequence[Load]
           ) -> Iterator[DbHandle]:
    """For a fixture parametrized by backend: a database of ``request.param``'s backend
    holding ``loads`` (see :func:`load`), dropped afterwards. A ``-months`` param also builds
    the monthly rollup of every ended month (reports then read those months from it)."""
    backend, _, months = str(request.param).partition("-")
    if backend == "sqlite":
        handle = sqlite_handle(tmp / "lmod.db")
        load(handle, tmp, loads)
        if months:
            assert build_months(handle) >= 12  # the loads span 400 days
        yield handle
        return
    server = request.getfixturevalue("_mysql_credentials")
    name = create_mysql_database(server)
    try:
        handle = mysql_handle(server, name)
        load(handle, tmp, loads)
        if months:
            assert build_months(handle) >= 12  # the loads span 400 days
        yield handle
    finally:
        drop_mysql_database(server, name)
