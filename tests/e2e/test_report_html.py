"""``lmod-tracker report html``: the page rendered by headless Chromium, its DOM checked against
the known data set, a screenshot kept as an artifact (tests/e2e/artifacts/, not committed)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.support import reportdata as rd
from tests.support.daemon import cli
from tests.support.databases import DbHandle

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).parent / "artifacts"
LOADS = rd.make_loads()


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("chromium is missing (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--no-first-run", "--disable-extensions", "--disable-background-networking",
         *args], capture_output=True, text=True, timeout=120, check=True)


class _Tables(HTMLParser):
    """Rows of every ``<table id=...>`` as {data-col: data-value or text}, the cards' texts,
    and every chart bar (``<rect data-label data-value>``) per chart."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.cards: dict[str, str] = {}
        self.bars: list[list[tuple[str, int]]] = []
        self._table: str | None = None
        self._row: dict[str, str] | None = None
        self._cell: tuple[str, str | None] | None = None
        self._text = ""
        self._card: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or "?"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = {}
        elif tag == "td" and self._row is not None:
            self._cell = (a["data-col"] or "", a.get("data-value"))
            self._text = ""
        elif tag == "div" and (a.get("id") or "").startswith("card-"):
            self._card = (a["id"] or "")[5:]
        elif tag == "b" and self._card:
            self._text = ""
        elif tag == "svg":
            self.bars.append([])
        elif tag == "rect" and "data-label" in a:
            self.bars[-1].append((a["data-label"] or "", int(a["data-value"] or 0)))

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell and self._row is not None:
            col, value = self._cell
            self._row[col] = value if value is not None else self._text
            self._cell = None
        elif tag == "tr" and self._row and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "b" and self._card:
            self.cards[self._card] = self._text
            self._card = None


def test_html_report_in_chromium(db: DbHandle, tmp_path: Path) -> None:
    browser = _chromium()
    spider = rd.spider_binary()
    if spider is None:
        pytest.skip("Lmod is not installed (apt-get install lmod)")
    rd.load(db, tmp_path, LOADS)
    listing = rd.run_spider(spider, rd.make_tree(tmp_path / "mf"), "spider-json",
                            tmp_path / "spider.json")
    page = tmp_path / "www" / "usage.html"
    out = cli({**db.env, "TZ": "UTC"}, "report", "html", "-o", str(page), "--since", "365d",
              "--installed", str(listing), "--utc").stdout
    assert out.startswith(f"wrote {page} (")
    text = page.read_text()
    # self-contained: no script, nothing fetched at view time
    assert "<script" not in text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)
    assert "@import" not in text and "url(" not in text

    dom = _headless(browser, "--dump-dom", page.as_uri()).stdout
    parsed = _Tables()
    parsed.feed(dom)

    today = rd.today()
    since = today - dt.timedelta(days=364)
    window = [x for x in LOADS if since <= x.day <= today]
    per_package = Counter(x.package for x in window)
    top = parsed.tables["top"]
    assert [(r["package"], int(r["loads"])) for r in top] == sorted(
        per_package.items(), key=lambda kv: (-kv[1], -len({x.user for x in window
                                                           if x.package == kv[0]}),
                                             kv[0].lower()))
    assert parsed.bars[0] == [(r["package"], int(r["loads"])) for r in top]
    assert parsed.cards["total-loads"] == f"{len(window):,}"

    months = Counter(x.day.strftime("%Y-%m") for x in window)
    trend = parsed.tables["trend"]
    assert {r["period"]: int(r["loads"]) for r in trend} == {
        p: months.get(p, 0) for p in (r["period"] for r in trend)}
    assert sum(int(r["loads"]) for r in trend) == len(window)
    assert parsed.bars[1] == [(r["period"], int(r["loads"])) for r in trend]

    gcc_users = Counter(x.user for x in window if x.package == "gcc")
    rows = [r for r in parsed.tables["top_users"] if r["package"] == "gcc"]
    assert [(r["user"], int(r["loads"])) for r in rows] == sorted(
        gcc_users.items(), key=lambda kv: (-kv[1], kv[0]))[:10]

    unused = {(r["package"], r["version"], r["status"]) for r in parsed.tables["unused"]}
    assert ("gcc", "14.1.0", "installed, unused") in unused
    assert ("python", "3.9.18", "loaded, not installed") in unused
    rejects = {r["reason"]: int(r["lines"]) for r in parsed.tables["rejects"]}
    assert rejects == {"missing user=": 3, "time='...' is not a decimal Unix time": 2}

    shot = tmp_path / "usage.png"
    _headless(browser, f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert shot.stat().st_size > 20_000
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / f"report-html-{db.kind}.png")
    shutil.copy(page, ARTIFACTS / f"report-html-{db.kind}.html")
