"""``lmod-tracker report``: every command and format on both backends, against a known data set
ingested through the real path; every expected figure is computed here from the generated
loads (tests/support/reportdata.py), independently of the SQL under test."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lmod_tracker.store.base import SCHEMA_VERSION
from tests.support import reportdata as rd
from tests.support.daemon import cli
from tests.support.databases import (
    DbHandle,
)
from tests.support.reportdata import Load

LOADS = rd.make_loads()
NY = "America/New_York"


@pytest.fixture(scope="module", params=rd.WITH_MONTHS)
def rdb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[DbHandle]:
    """The known loads ingested once per backend for the whole module."""
    yield from rd.loaded(request, tmp_path_factory.mktemp(f"reports-{request.param}"), LOADS)


def report(db: DbHandle, *args: str, tz: str = "UTC", check: bool = True) -> Any:
    return cli({**db.env, "TZ": tz}, "report", *args, check=check)


def csv_rows(db: DbHandle, *args: str, tz: str = "UTC") -> list[dict[str, str]]:
    out = report(db, *args, "--format", "csv", tz=tz).stdout
    return list(csv.DictReader(io.StringIO(out)))


def json_doc(db: DbHandle, *args: str, tz: str = "UTC") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(report(db, *args, "--format", "json", tz=tz).stdout)
    return doc


# --------------------------------------------------------------------------- the model


def today() -> dt.date:
    return rd.today()


def last_days(n: int) -> tuple[dt.date, dt.date]:
    return today() - dt.timedelta(days=n - 1), today()


def pick(since: dt.date, until: dt.date, *, cluster: str | None = None,
         user: str | None = None, where: Callable[[Load], bool] = lambda _: True
         ) -> list[Load]:
    return [ld for ld in LOADS if since <= ld.day <= until
            and (cluster is None or ld.cluster == cluster)
            and (user is None or ld.user == user) and where(ld)]


def iso(t: dt.datetime, tz: dt.tzinfo = dt.UTC) -> str:
    return t.astimezone(tz).replace(microsecond=0).isoformat()


def vkey(text: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.findall(r"\d+|\D+", text))


def group(loads: Iterable[Load], key: Callable[[Load], Any]) -> dict[Any, list[Load]]:
    out: dict[Any, list[Load]] = defaultdict(list)
    for ld in loads:
        out[key(ld)].append(ld)
    return out


# ------------------------------------------------------------------------------- top


def test_top_by_package_csv(rdb: DbHandle) -> None:
    since, until = last_days(90)
    rows = csv_rows(rdb, "top", "--since", "90d", "--limit", "0", "--utc")
    expected = []
    for package, lds in group(pick(since, until), lambda x: x.package).items():
        expected.append({
            "package": package, "versions": str(len({x.version for x in lds})),
            "loads": str(len(lds)), "users": str(len({x.user for x in lds})),
            "first_load": iso(min(x.time for x in lds)),
            "last_load": iso(max(x.time for x in lds))})
    expected.sort(key=lambda r: (-int(r["loads"]), -int(r["users"]), r["package"].lower()))
    assert rows == expected


def test_top_by_version_filtered_json(rdb: DbHandle) -> None:
    """--by version with --cluster, --user, --user-requested, --exclude and --limit."""
    since, until = dt.date(2000, 1, 1), today()
    doc = json_doc(rdb, "top", "--since", "2000-01-01", "--by", "version", "--cluster",
                   "alpha", "--user", "alice", "--user-requested", "--exclude", "^python/",
                   "--exclude", "cuda", "--limit", "3", "--utc")
    table = doc["tables"][0]
    assert doc["report"] == "top" and table["name"] == "top"
    assert [c["name"] for c in table["columns"]] == [
        "package", "version", "loads", "users", "first_load", "last_load"]
    assert table["query"]["cluster"] == "alpha" and table["query"]["user"] == "alice"
    chosen = pick(since, until, cluster="alpha", user="alice",
                  where=lambda x: not x.module.startswith("python/") and "cuda" not in x.module)
    # the rollup's unit: (day, cluster, package, user); --user-requested keeps the units with
    # a user-requested load, counts those loads, and their first/last load
    units = group(chosen, lambda x: (x.day, x.cluster, x.module, x.user))
    kept = [u for u in units.values() if any(x.userload == 1 for x in u)]
    expected = []
    for _module, parts in group((x for u in kept for x in u), lambda x: x.module).items():
        first = parts[0]
        expected.append({
            "package": first.package, "version": first.version,
            "loads": sum(1 for x in parts if x.userload == 1),
            "users": len({x.user for x in parts}),
            "first_load": iso(min(x.time for x in parts)),
            "last_load": iso(max(x.time for x in parts))})
    expected.sort(key=lambda r: (-r["loads"], -r["users"], r["package"].lower(),
                                 vkey(r["version"])))
    assert table["rows"] == expected[:3]
    assert len(expected) > 3
    assert table["notes"] == [f"3 of {len(expected)} versions shown (--limit 0 for all)"]


def _expected_top(by: str, since: dt.date, until: dt.date, **kw: Any) -> list[dict[str, str]]:
    exclude = kw.pop("exclude", None)
    chosen = pick(since, until, **kw,
                  where=lambda x: exclude is None or not re.search(exclude, x.module))
    out = []
    for lds in group(chosen, lambda x: x.package if by == "package" else x.module
                     ).values():
        row = {"package": lds[0].package}
        if by == "package":
            row["versions"] = str(len({x.version for x in lds}))
        else:
            row["version"] = lds[0].version
        row.update({"loads": str(len(lds)), "users": str(len({x.user for x in lds})),
                    "first_load": iso(min(x.time for x in lds)),
                    "last_load": iso(max(x.time for x in lds))})
        out.append(row)
    out.sort(key=lambda r: (-int(r["loads"]), -int(r["users"]), r["package"].lower(),
                            vkey(r.get("version", ""))))
    return out


@pytest.mark.parametrize("by", ["package", "version"])
@pytest.mark.parametrize(("args", "kw"), [
    ([], {}),
    (["--cluster", "beta"], {"cluster": "beta"}),
    (["--user", "alice"], {"user": "alice"}),
    (["--exclude", "^python/"], {"exclude": "^python/"}),
])
def test_top_with_a_limit(rdb: DbHandle, by: str, args: list[str], kw: dict[str, Any]
                          ) -> None:
    """With a limit, top reads the loads of every version but distinct users and first/last
    load only for the rows shown (and ties at the cut): the same rows as the whole list."""
    since, until = last_days(365)
    expected = _expected_top(by, since, until, **kw)
    assert len(expected) > 3
    # cuts inside a run of equal loads (users and the name decide), and the edges
    ties = [n for n in range(1, len(expected))
            if expected[n - 1]["loads"] == expected[n]["loads"]]
    for limit in sorted({1, 3, len(expected), len(expected) + 1, *ties[:3]}):
        doc = json_doc(rdb, "top", "--since", "365d", "--by", by, "--limit", str(limit),
                       "--utc", *args)
        table = doc["tables"][0]
        assert [{k: str(v) for k, v in r.items()} for r in table["rows"]] \
            == expected[:limit], limit
        what = "packages" if by == "package" else "versions"
        assert table["notes"] == ([f"{limit} of {len(expected)} {what} shown"
                                   " (--limit 0 for all)"] if len(expected) > limit else [])


@pytest.mark.parametrize("by", ["package", "version"])
def test_top_whole_list_with_exclude(rdb: DbHandle, by: str) -> None:
    """--limit 0 with --exclude: the excluded versions count nowhere (gcc keeps one version)."""
    since, until = last_days(365)
    expected = _expected_top(by, since, until, exclude="^gcc/1")
    doc = json_doc(rdb, "top", "--since", "365d", "--by", by, "--limit", "0", "--utc",
                   "--exclude", "^gcc/1")
    assert [{k: str(v) for k, v in r.items()} for r in doc["tables"][0]["rows"]] == expected
    assert any(r["package"] == "gcc" for r in expected)


@pytest.mark.parametrize("limit", ["0", "3"])
@pytest.mark.parametrize("by", ["package", "version"])
def test_top_of_a_cluster_user_requested(rdb: DbHandle, by: str, limit: str) -> None:
    """--cluster over a year (the window's days given one by one) with --user-requested."""
    since, until = last_days(365)
    units = group(pick(since, until, cluster="beta"),
                  lambda x: (x.day, x.cluster, x.module, x.user))
    kept = [x for u in units.values() if any(x.userload == 1 for x in u) for x in u]
    expected: list[dict[str, Any]] = []
    for parts in group(kept, lambda x: x.package if by == "package" else x.module).values():
        row: dict[str, Any] = {"package": parts[0].package}
        if by == "package":
            row["versions"] = len({x.version for x in parts})
        else:
            row["version"] = parts[0].version
        row.update({"loads": sum(1 for x in parts if x.userload == 1),
                    "users": len({x.user for x in parts}),
                    "first_load": iso(min(x.time for x in parts)),
                    "last_load": iso(max(x.time for x in parts))})
        expected.append(row)
    expected.sort(key=lambda r: (-r["loads"], -r["users"], r["package"].lower(),
                                 vkey(r.get("version", ""))))
    doc = json_doc(rdb, "top", "--since", "365d", "--by", by, "--cluster", "beta",
                   "--user-requested", "--limit", limit, "--utc")
    assert doc["tables"][0]["rows"] == (expected[:int(limit)] if int(limit) else expected)
    assert len(expected) > 3


#: Equal loads everywhere: w (versions 1 and 2) 4 loads by 3 users, y and z 4 loads by 2 users
#: each, x 4 loads by 1 user, v 1 load; versions x/1, y/1 and z/1 4 loads each.
TIES = [("w/1", "alice"), ("w/1", "bob"), ("w/2", "carol"), ("w/2", "carol"),
        *[("y/1", u) for u in ("alice", "bob", "bob", "bob")],
        *[("z/1", u) for u in ("bob", "bob", "alice", "alice")],
        *[("x/1", "alice")] * 4, ("v/1", "bob")]


@pytest.fixture(scope="module", params=rd.BACKENDS)
def tiedb(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[DbHandle]:
    tmp = tmp_path_factory.mktemp(f"ties-{request.param}")
    base = dt.datetime.combine(today(), dt.time(), dt.UTC) - dt.timedelta(days=3)
    loads = [Load(base + dt.timedelta(hours=i, microseconds=i), user, module, "a01", "alpha",
                  1, None) for i, (module, user) in enumerate(TIES)]
    yield from rd.loaded(request, tmp, loads)


@pytest.mark.parametrize("by", ["package", "version"])
def test_top_ties_at_the_limit(tiedb: DbHandle, by: str) -> None:
    """A limit that cuts through equal loads keeps the rows the whole list starts with."""
    whole = json_doc(tiedb, "top", "--by", by, "--limit", "0")["tables"][0]["rows"]
    assert [r["loads"] for r in whole[:3]] == [4, 4, 4]
    for limit in range(1, len(whole) + 1):
        rows = json_doc(tiedb, "top", "--by", by, "--limit", str(limit))["tables"][0]["rows"]
        assert rows == whole[:limit], limit


def test_top_table_on_the_terminal_library(rdb: DbHandle) -> None:
    out = report(rdb, "top", "--since", "30d").stdout
    since, until = last_days(30)
    top = max(group(pick(since, until), lambda x: x.package).items(), key=lambda kv: len(kv[1]))
    assert f"{since} to {until}" in out
    assert re.search(rf"\|\s*{re.escape(top[0])}\s*\|\s*\d+\s*\|\s*{len(top[1]):,}\s*\|", out)


def test_table_on_a_real_terminal(rdb: DbHandle) -> None:
    """On a terminal (a pty here) the table has box-drawing lines and fits the width."""
    import pty
    import subprocess
    import sys

    from tests.support.daemon import child_env

    leader, follower = pty.openpty()
    env = child_env({**rdb.env, "TZ": "UTC", "COLUMNS": "120", "LINES": "40"})
    proc = subprocess.Popen([sys.executable, "-m", "lmod_tracker", "report", "top",
                             "--limit", "3"], env=env, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(30) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    assert "━" in text or "─" in text, text
    assert max(len(line) for line in text.splitlines()) <= 120
    assert "3 of " in text


# ----------------------------------------------------------------------------- users


@pytest.mark.parametrize("spec", ["gcc", "gcc/9.3.0", "gcc/1*", "*mpi*", "bio/samtools"])
def test_users_of_a_module(rdb: DbHandle, spec: str) -> None:
    since, until = last_days(365)

    def matches(x: Load) -> bool:
        if any(c in spec for c in "*?["):
            import fnmatch
            return fnmatch.fnmatchcase(x.module, spec) or fnmatch.fnmatchcase(x.package, spec)
        return x.package == spec or x.module == spec

    rows = csv_rows(rdb, "users", spec, "--utc")
    expected = []
    for user, lds in group(pick(since, until, where=matches), lambda x: x.user).items():
        mods = sorted({(x.package, x.version) for x in lds},
                      key=lambda m: (m[0].lower(), vkey(m[1])))
        expected.append({"user": user, "loads": str(len(lds)),
                         "modules": " ".join(f"{p}/{v}" if v else p for p, v in mods),
                         "first_load": iso(min(x.time for x in lds)),
                         "last_load": iso(max(x.time for x in lds))})
    expected.sort(key=lambda r: (-int(r["loads"]), r["user"]))
    assert rows == expected and rows


def test_versions_sort_as_versions(rdb: DbHandle) -> None:
    rows = csv_rows(rdb, "users", "gcc", "--since", "2000-01-01")
    assert any(r["modules"] == "gcc/9.3.0 gcc/12.2.0 gcc/13.1.0" for r in rows)
    versions = [r["version"] for r in csv_rows(rdb, "unused", "--since", "1d",
                                                "--utc") if r["package"] == "gcc"]
    assert versions == sorted(versions, key=vkey)


# ------------------------------------------------------------------------------ user


def test_user_report(rdb: DbHandle) -> None:
    since, until = last_days(120)
    doc = json_doc(rdb, "user", "bob", "--since", "120d", "--cluster", "beta")
    rows = doc["tables"][0]["rows"]
    expected = []
    for _module, lds in group(pick(since, until, cluster="beta", user="bob"),
                             lambda x: x.module).items():
        expected.append({"package": lds[0].package, "version": lds[0].version,
                         "loads": len(lds),
                         "user_loads": sum(1 for x in lds if x.userload == 1),
                         "days": len({x.day for x in lds}),
                         "first_load": iso(min(x.time for x in lds)),
                         "last_load": iso(max(x.time for x in lds))})
    expected.sort(key=lambda r: (-r["loads"], r["package"].lower(), vkey(r["version"])))
    assert rows == expected and rows
    assert doc["timezone"] == "UTC"


def test_times_in_the_local_zone(rdb: DbHandle) -> None:
    """Without --utc, times are in the zone of TZ, with their offset."""
    rows = csv_rows(rdb, "user", "alice", "--since", "2000-01-01", tz=NY)
    from zoneinfo import ZoneInfo
    ny = ZoneInfo(NY)
    lds = group(pick(dt.date(2000, 1, 1), today(), user="alice"), lambda x: x.module)
    for row in rows:
        module = f"{row['package']}/{row['version']}" if row["version"] else row["package"]
        assert row["last_load"] == iso(max(x.time for x in lds[module]), ny)
        assert row["last_load"].endswith(("-05:00", "-04:00"))
    text = report(rdb, "user", "alice", tz=NY).stdout
    assert f"times {NY}" in text


# ----------------------------------------------------------------------------- trend


def _periods(since: dt.date, until: dt.date, every: str) -> list[dt.date]:
    def start(d: dt.date) -> dt.date:
        if every == "week":
            return d - dt.timedelta(days=d.weekday())
        return d.replace(day=1) if every == "month" else d
    out, d = [], start(since)
    while d <= until:
        out.append(d)
        d = (d + dt.timedelta(days=1 if every == "day" else 7) if every != "month"
             else (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1))
    return out


@pytest.mark.parametrize(("every", "module", "days", "cluster"), [
    ("month", None, 365, None), ("week", None, 120, None), ("week", "python", 120, None),
    ("day", "gcc/12.2.0", 20, None), ("day", None, 15, None),
    ("month", None, 365, "beta"), ("week", None, 120, "beta"),
    # a module per month (built months too) and with a cluster: MariaDB seeks the primary key
    ("month", "gcc", 365, None), ("week", "python", 120, "alpha")])
def test_trend(rdb: DbHandle, every: str, module: str | None, days: int,
               cluster: str | None) -> None:
    since, until = last_days(days)
    args = ["trend", *([module] if module else []), "--every", every, "--since", f"{days}d",
            *(["--cluster", cluster] if cluster else [])]
    rows = csv_rows(rdb, *args)

    def start(d: dt.date) -> dt.date:
        if every == "week":
            return d - dt.timedelta(days=d.weekday())
        return d.replace(day=1) if every == "month" else d

    chosen = pick(since, until, cluster=cluster,
                  where=lambda x: module is None or x.package == module or x.module == module)
    per = group(chosen, lambda x: start(x.day))
    expected = []
    for p in _periods(since, until, every):
        lds = per.get(p, [])
        expected.append({"period": p.strftime("%Y-%m") if every == "month" else p.isoformat(),
                         "loads": str(len(lds)), "users": str(len({x.user for x in lds})),
                         "modules": str(len({x.module for x in lds}))})
    assert rows == expected
    assert sum(int(r["loads"]) for r in rows) == len(chosen) > 0


# --------------------------------------------------------------- nothing in the window


@pytest.mark.parametrize("cluster", [None, "beta"])
def test_reports_of_a_window_without_loads(rdb: DbHandle, tmp_path: Path,
                                           cluster: str | None) -> None:
    """A window (or a cluster's part of it) without a load: html and top answer with empty
    tables; no statement is built with an empty ``IN ()`` (MariaDB refuses it)."""
    window = ["--since", "2001-01-01", "--until", "2001-03-31",
              *(["--cluster", cluster] if cluster else [])]
    assert pick(dt.date(2001, 1, 1), dt.date(2001, 3, 31)) == []
    page = tmp_path / "usage.html"
    report(rdb, "html", "-o", str(page), *window)
    text = page.read_text()
    assert 'id="top-empty"' in text and 'id="top_users-empty"' in text
    for by in ("package", "version"):
        assert csv_rows(rdb, "top", "--by", by, *window) == []
    assert {r["loads"] for r in csv_rows(rdb, "trend", "--every", "month", *window)} == {"0"}


# ---------------------------------------------------------------------------- unused


def test_unused_without_spider(rdb: DbHandle) -> None:
    rows = csv_rows(rdb, "unused", "--since", "180d", "--utc")
    since = last_days(180)[0]
    last = {m: max(x.time for x in lds) for m, lds in group(LOADS, lambda x: x.module).items()}
    stale = sorted((m for m, t in last.items() if t.date() < since), key=vkey)
    assert [f"{r['package']}/{r['version']}" for r in rows] == stale == [rd.OLD_ONLY]
    assert rows[0]["status"] == "not loaded in window"
    assert rows[0]["loads"] == str(sum(1 for x in LOADS if x.module == rd.OLD_ONLY))
    assert rows[0]["last_load"] == iso(last[rd.OLD_ONLY])


def _expected_unused(since: dt.date) -> list[tuple[str, str, str]]:
    used = {x.module for x in LOADS if x.day >= since}
    out = [(m, "installed, unused", str(sum(1 for x in LOADS if x.module == m)))
           for m in rd.INSTALLED if m not in used]
    out += [(m, "loaded, not installed", str(sum(1 for x in LOADS if x.module == m)))
            for m in used if m not in rd.INSTALLED]
    return sorted(out, key=lambda r: (r[1], r[0].rpartition("/")[0].lower() or r[0],
                                      vkey(r[0].rpartition("/")[2])))


@pytest.mark.parametrize("fmt", ["spider-json", "list"])
def test_unused_with_a_real_spider_run(rdb: DbHandle, tmp_path: Path, fmt: str) -> None:
    spider = rd.spider_binary()
    if spider is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("Lmod's spider is missing (apt-get install lmod)")
        pytest.skip("Lmod is not installed (apt-get install lmod)")
    tree = rd.make_tree(tmp_path / "modulefiles")
    listing = rd.run_spider(spider, tree, fmt, tmp_path / f"spider.{fmt}")
    rows = csv_rows(rdb, "unused", "--since", "180d", "--installed", str(listing),
                    "--modulepath", str(tree))
    got = [(f"{r['package']}/{r['version']}" if r["version"] else r["package"], r["status"],
            r["loads"]) for r in rows]
    expected = _expected_unused(last_days(180)[0])
    assert got == expected
    assert ("gcc/14.1.0", "installed, unused", "0") in got
    assert ("python/3.9.18", "loaded, not installed", str(
        sum(1 for x in LOADS if x.module == "python/3.9.18"))) in got
    assert ("intel/2021.4", "installed, unused", "0") not in got


# ------------------------------------------------------------------------------ jobs


def test_jobs(rdb: DbHandle) -> None:
    since, until = last_days(60)
    rows = csv_rows(rdb, "jobs", "openmpi", "--since", "60d", "--limit", "0")
    chosen = pick(since, until, where=lambda x: x.package == "openmpi" and bool(x.jobid))
    expected = []
    for (jobid, user), lds in group(chosen, lambda x: (x.jobid, x.user)).items():
        expected.append({"jobid": jobid, "user": user,
                         "modules": " ".join(sorted({x.module for x in lds}, key=vkey)),
                         "loads": str(len(lds)), "hosts": str(len({x.host for x in lds})),
                         "first_load": iso(min(x.time for x in lds)),
                         "last_load": iso(max(x.time for x in lds))})
    expected.sort(key=lambda r: (r["first_load"], vkey(r["jobid"])), reverse=True)
    assert rows == expected and rows


# ---------------------------------------------------------------------------- health


def test_health(rdb: DbHandle) -> None:
    doc = json_doc(rdb, "health")
    tables = {t["name"]: t for t in doc["tables"]}
    assert list(tables) == ["database", "instances", "files", "rejects"]
    facts = {r["item"]: r["value"] for r in tables["database"]["rows"]}
    assert facts["schema version"] == str(SCHEMA_VERSION)
    assert facts["newest load"] == iso(max(x.time for x in LOADS))
    assert facts["newest rollup day"] == max(x.day for x in LOADS).isoformat()
    months = sorted(str(m)[:7] for (m,) in rdb.rows("SELECT month FROM usage_month"))
    assert facts["monthly rollup"] == (f"{len(months)} months built, newest {months[-1]}"
                                       if months else
                                       "no month built (reports read usage_daily alone)")
    [inst] = tables["instances"]["rows"]
    [file] = tables["files"]["rows"]
    assert file["path"].endswith("lmod.log") and file["lag_bytes"] == 0
    assert file["offset"] == file["size"] == inst["bytes_read"]
    rejects = {r["reason"]: r["lines"] for r in tables["rejects"]["rows"]}
    assert rejects == {"missing user=": 3, "time='...' is not a decimal Unix time": 2}
    csv_out = report(rdb, "health", "--format", "csv").stdout
    assert csv_out.startswith("# database\nitem,value\n")
    assert "\n\n# rejects\nreason,lines,example,last_seen\n" in csv_out


# ---------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(("args", "message"), [
    (["top", "--since", "yesterday"], "--since 'yesterday': not a date"),
    (["top", "--since", "2026-02-30"], "--since '2026-02-30': not a date"),
    (["top", "--since", "2026-01-10", "--until", "2026-01-01"], "empty window"),
    (["top", "--since", "0d"], "an empty window"),
    (["users", "nosuchmodule"], "unknown module 'nosuchmodule'"),
    (["users", "gcc/99"], "unknown module 'gcc/99'"),
    (["jobs", "nope*"], "unknown module 'nope*'"),
    (["user", "mallory"], "unknown user 'mallory'"),
    (["top", "--cluster", "gamma"], "unknown cluster 'gamma' (known: alpha, beta)"),
    (["top", "--exclude", "("], "--exclude '(': not a regular expression"),
    (["unused", "--installed", "/nonexistent/spider.json"], "--installed /nonexistent"),
])
def test_bad_arguments_exit_2_with_one_line(rdb: DbHandle, args: list[str],
                                            message: str) -> None:
    proc = report(rdb, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmod-tracker: "), proc.stderr
    assert message in lines[0]
