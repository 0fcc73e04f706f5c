"""Report pieces without a database: windows, version order, spider parsing, the parameters of
``top``'s statements (a recording reader), and the systemd timer + service pair (verified,
hardened, and its commands run as the unit would)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from lmod_tracker.reports import queries
from lmod_tracker.reports.db import Reader
from lmod_tracker.reports.spider import parse_spider
from lmod_tracker.reports.window import ReportError, Window, resolve_window, version_key
from tests.support import reportdata as rd
from tests.support.databases import sqlite_handle

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
SERVICE, TIMER = SYSTEMD / "lmod-tracker-report.service", SYSTEMD / "lmod-tracker-report.timer"
TODAY = dt.date(2026, 3, 31)


@pytest.mark.parametrize(("since", "until", "expected"), [
    ("30d", None, Window(dt.date(2026, 3, 2), TODAY)),
    ("1d", None, Window(TODAY, TODAY)),
    ("12w", None, Window(dt.date(2026, 1, 7), TODAY)),
    ("1mo", None, Window(dt.date(2026, 3, 1), TODAY)),  # Feb 31 -> Feb 28, then +1 day
    ("6mo", "2026-03-15", Window(dt.date(2025, 10, 1), dt.date(2026, 3, 15))),
    ("1y", "7d", Window(dt.date(2025, 4, 1), dt.date(2026, 3, 24))),
    ("2026-01-01", "2026-01-01", Window(dt.date(2026, 1, 1), dt.date(2026, 1, 1))),
])
def test_windows(since: str, until: str | None, expected: Window) -> None:
    assert resolve_window(since, until, default_since="30d", today=TODAY) == expected


@pytest.mark.parametrize(("since", "until", "message"), [
    ("30x", None, "not a date"), ("2026-13-01", None, "not a date"),
    ("0d", None, "empty window"), ("2026-04-01", None, "empty window"),
    ("10d", "20d", "empty window"), ("", None, "not a date"),
])
def test_bad_windows(since: str, until: str | None, message: str) -> None:
    with pytest.raises(ReportError, match=message):
        resolve_window(since, until, default_since="30d", today=TODAY)


def test_versions_sort_as_versions() -> None:
    versions = ["12.2.0", "9", "12.10", "9.3.0", "12", "2021.4", "1.0-rc1", "1.0", "", "12.2"]
    assert sorted(versions, key=version_key) == [
        "", "1.0", "1.0-rc1", "9", "9.3.0", "12", "12.2", "12.2.0", "12.10", "2021.4"]


def test_spider_list_and_json_forms() -> None:
    listing = "/m/core/gcc/9.3.0.lua\n/m/core/bio/samtools/1.17.lua\n/m/core/matlab.lua\n" \
              "/other/tree/cuda/12.2\n"
    assert parse_spider(listing, ["/m/core"]) == [
        ("bio/samtools", "1.17"), ("cuda", "12.2"), ("gcc", "9.3.0"), ("matlab", "")]
    doc = ('{"gcc": {"/m/gcc/9.lua": {"fullName": "gcc/9", "Version": "9"}},'
           ' "matlab": {"/m/matlab.lua": {"fullName": "matlab", "Version": false}}}')
    assert parse_spider(doc) == [("gcc", "9"), ("matlab", "")]
    with pytest.raises(ReportError, match="not valid JSON"):
        parse_spider("{nope")
    with pytest.raises(ReportError, match="lists no modules"):
        parse_spider("\n\n")


# ------------------------------------------------------------- top's statement parameters


class _Recorder(Reader):
    """Answers ``top``'s statements with a few rows and keeps each statement's parameters."""

    backend = "sqlite"

    def __init__(self, loaded: Sequence[int], built: bool = False) -> None:
        self.loaded = loaded
        self.built = built  # every month of the window is in usage_monthly
        self.statements: list[tuple[str, int]] = []

    async def table_exists(self, name: str) -> bool:
        return self.built

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.statements.append((sql, len(params)))
        text = " ".join(sql.split())
        if text.startswith("SELECT id FROM `user`"):
            return [(7,)]
        if text.startswith("SELECT month FROM usage_month"):
            first, last = (dt.date.fromisoformat(p) for p in params)
            first = first.replace(day=1)
            out = []
            while first <= last:
                out.append((first.isoformat(),))
                first = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            return out
        if text.startswith("SELECT r.package_id, SUM(r.") and "COUNT" not in text:
            # loads per version (SQL_TOP_LOADS)
            return [(pid, 10 + pid) for pid in self.loaded]
        if text.startswith("SELECT DISTINCT r.package_id, r.user_id"):  # users of versions
            return [(pid, 1) for pid in self.loaded]
        if text.startswith("SELECT COUNT(DISTINCT r.user_id)"):  # users of one package
            return [(1,)]
        return []


#: 600 versions of 50 packages: p1 has 12 versions, p20..p29 120
CATALOG = queries.Catalog({i: (f"p{i % 50}", str(i)) for i in range(600)}, {"beta": 2})


@pytest.mark.parametrize("days", [30, 365, 700, 767, 768, 1000, 3000])
@pytest.mark.parametrize("exclude", [(), ("^p1/",), ("^p1/", "^p2[0-9]/")])
@pytest.mark.parametrize("user", [None, "u"])
@pytest.mark.parametrize("built", [False, True], ids=["daily", "months"])
def test_top_statements_stay_under_the_parameter_cap(days: int, exclude: tuple[str, ...],
                                                     user: str | None, built: bool) -> None:
    """With --cluster, top lists the window's days (months) one by one only while they fit
    with the other parameters (older SQLite takes at most 999 per statement): never more than
    queries.MAX_PARAMS in any statement, whatever the window, --exclude or --user."""
    window = Window(TODAY - dt.timedelta(days=days - 1), TODAY)
    sc = queries.Scope(window, "beta", 2)
    others = 1 + (user is not None)  # cluster, user (excluded versions are never listed)
    for by in ("package", "version"):
        for limit, user_requested in ((20, False), (2, False), (0, False), (20, True)):
            reader = _Recorder(loaded=[40, 90, 41, 91, 45], built=built)
            asyncio.run(queries.top(reader, CATALOG, sc, by=by,  # type: ignore[arg-type]
                                    user=user, user_requested=user_requested,
                                    exclude=exclude, limit=limit))
            if limit:  # the follow-up statements ran too
                assert any("COUNT(DISTINCT r.user_id)" in sql
                           or "SELECT DISTINCT r.package_id, r.user_id" in sql
                           for sql, _ in reader.statements)
            worst = max(n for _, n in reader.statements)
            assert worst <= queries.MAX_PARAMS, (by, limit, worst)
            monthly = any("usage_monthly" in sql for sql, _ in reader.statements)
            assert monthly == (built and limit > 0 and days >= 62), (by, limit, monthly)
            if not built:
                listed = any("r.day IN" in sql for sql, _ in reader.statements)
                assert listed == (days + others <= queries.MAX_PARAMS), (by, limit, listed)


#: 2500 versions of 50 packages (p0 .. p49, 50 versions each)
BIG = queries.Catalog({i: (f"p{i % 50}", str(i)) for i in range(2500)}, {"beta": 2})


@pytest.mark.parametrize("limit", [0, 3])
@pytest.mark.parametrize("by", ["package", "version"])
def test_top_excludes_any_number_of_versions(by: str, limit: int) -> None:
    """--exclude matching 2200 versions (p1*, p2*, p3*, p4*): dropped in Python, never listed
    in a statement; what is left is shown."""
    sc = queries.Scope(Window(TODAY - dt.timedelta(days=364), TODAY), "beta", 2)
    reader = _Recorder(loaded=[40, 5, 55, 6])  # p40 is excluded, p5 and p6 are not
    table = asyncio.run(queries.top(reader, BIG, sc, by=by,  # type: ignore[arg-type]
                                    exclude=("^p[1-4]",), limit=limit))
    assert len(BIG.exclude(("^p[1-4]",))) == 2200
    assert max(n for _, n in reader.statements) <= queries.MAX_PARAMS
    if limit:
        assert {r[0] for r in table.rows} == {"p5", "p6"}


@pytest.mark.parametrize(("module", "how"), [
    ("p1*", "IN"),          # 11 packages: 550 versions
    ("p[1-3]*", "NOT IN"),  # 1650 versions, 850 left
    ("p*", ""),             # every version: no condition
    ("p[1-2]*", "error"),   # 1100 versions and 1400 left: neither list fits
])
def test_trend_of_a_pattern_matching_many_versions(module: str, how: str) -> None:
    """A trend counts distinct users over all the versions a pattern names, so they must be
    in one statement: the versions, or the others, within MAX_PARAMS; else exit 2."""
    sc = queries.Scope(Window(TODAY - dt.timedelta(days=30), TODAY), "beta", 2)
    reader = _Recorder(loaded=[])
    if how == "error":
        with pytest.raises(ReportError, match="narrow the pattern"):
            asyncio.run(queries.trend(reader, BIG, sc, module, "day"))
        return
    asyncio.run(queries.trend(reader, BIG, sc, module, "day"))
    assert max(n for _, n in reader.statements) <= queries.MAX_PARAMS
    text = " ".join(sql for sql, _ in reader.statements)
    assert ("NOT IN" in text) == (how == "NOT IN")
    assert ("r.package_id IN" in text) == (how == "IN")


# ------------------------------------------------------------------------------ systemd


def _need_systemd() -> None:
    if shutil.which("systemd-analyze") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze missing (apt-get install systemd)")
        pytest.skip("systemd-analyze missing (apt-get install systemd)")


def test_timer_and_service_verify_and_are_hardened(tmp_path: Path) -> None:
    _need_systemd()
    for unit in (SERVICE, TIMER):
        shutil.copy(unit, tmp_path / unit.name)
    verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / SERVICE.name),
                             str(tmp_path / TIMER.name)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == "", verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true",
                               str(tmp_path / SERVICE.name)], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert m, security.stdout + security.stderr
    assert float(m.group(1)) <= 2.0, security.stdout
    timer = TIMER.read_text()
    assert "OnCalendar=*-*-* 05:30:00" in timer and "Persistent=true" in timer


def _exec_lines(unit: str) -> dict[str, str]:
    """ExecStart/ExecStartPost commands, continuation lines joined, ``$$`` made ``$``."""
    joined = re.sub(r"\\\n\s*", "", unit)
    out = {}
    for line in joined.splitlines():
        m = re.match(r"(ExecStart|ExecStartPost)=\+?(.*)", line)
        if m:
            out[m.group(1)] = m.group(2).replace("$$", "$")
    return out


def test_service_commands_write_the_page(tmp_path: Path) -> None:
    """The unit's own commands, run as systemd would run them (with its environment), write
    the page, with the spider list when MODULEPATH is set."""
    spider = rd.spider_binary()
    if spider is None:
        pytest.skip("Lmod is not installed (apt-get install lmod)")
    db = sqlite_handle(tmp_path / "lmod.db")
    rd.load(db, tmp_path, rd.make_loads(n=300))
    tree = rd.make_tree(tmp_path / "mf")
    runtime, www = tmp_path / "run", tmp_path / "www"
    runtime.mkdir()
    exe = Path(sys.executable).parent / "lmod-tracker"
    config = tmp_path / "empty.toml"
    config.write_text("")
    commands = _exec_lines(SERVICE.read_text())
    env = {"PATH": "/usr/bin:/bin", "RUNTIME_DIRECTORY": str(runtime),
           "OUTPUT_DIR": str(www), "LMOD_DIR": str(spider.parent), "MODULEPATH": str(tree),
           "TZ": "UTC", **db.env}
    for key in ("ExecStart", "ExecStartPost"):
        argv = shlex.split(commands[key].replace("/opt/lmod-tracker/bin/lmod-tracker",
                                                 str(exe))
                           .replace("/etc/lmod-tracker/lmod-tracker.toml", str(config)))
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    page = (www / "usage.html").read_text()
    assert 'id="section-unused"' in page and "gcc/14.1.0" not in page  # shown as cells
    assert "<td data-col=\"version\">14.1.0</td>" in page
    assert oct((www / "usage.html").stat().st_mode & 0o777) == "0o644"
