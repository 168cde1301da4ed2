"""``streams report --month``: two simulated months replayed into a real embedded ClickHouse (chdb), the
report rendered, opened in headless Chromium (dumped DOM and a screenshot), and its figures read back
from the page and checked against plain SQL on the store."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from streams import cli
from streams.core.knowledge.knowledge import Knowledge
from streams.replay import replay
from streams.settings import Settings
from streams.sources.history import HistoryWriter, replay_end_ms
from streams.wall import queries as wall
from streams.wall import report
from tests.fixtures.clickhouse import open_test_store

MONTH, PREVIOUS = "2026-11", "2026-10"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=report.CITY_TZ)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class PageFigures(HTMLParser):
    """data-key/data-value pairs of the overview tiles, table rows by (table id, data-row), images."""

    def __init__(self) -> None:
        super().__init__()
        self.tiles: dict[str, str] = {}
        self.rows: dict[str, dict[str, dict[str, str]]] = {}
        self.images: list[dict[str, str]] = []
        self._table: str | None = None
        self._row: str | None = None
        self._in_overview = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "div" and a.get("id") == "overview":
            self._in_overview = True
        elif tag == "table":
            self._table = a.get("id")
            self.rows.setdefault(self._table or "", {})
        elif tag == "tr" and "data-row" in a and self._table:
            self._row = a["data-row"]
            self.rows[self._table][self._row] = {}
        elif tag == "td" and self._table and self._row is not None:
            self.rows[self._table][self._row][a["data-key"]] = a["data-value"]
        elif tag == "div" and self._in_overview and "data-key" in a:
            self.tiles[a["data-key"]] = a["data-value"]
        elif tag == "img":
            self.images.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None
        elif tag == "h2":
            self._in_overview = False


@pytest.fixture(scope="module")
def store(request):
    store = open_test_store("chdb", request)
    knowledge = Knowledge.load()
    for seed, month in ((3, PREVIOUS), (4, MONTH)):
        lines = list(HistoryWriter(knowledge, month, seed=seed, calls_per_day=6, reports_per_day=3).lines())
        result = replay(lines, Settings(), store, None, until_ms=replay_end_ms(month), err=io.StringIO())
        assert result.invalid == 0 and result.rejected_actions == 0, result.summary()
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {store.database}")
    store.close()


@pytest.fixture(scope="module")
def rendered(store, tmp_path_factory) -> tuple[Path, str, Path]:
    """The report file, the DOM Chromium dumps after loading it, and its screenshot."""
    assert CHROMIUM, "headless Chromium is needed: apt-get install -y chromium"
    folder = tmp_path_factory.mktemp("report")
    page = folder / f"report-{MONTH}.html"
    page.write_text(report.build(store, MONTH, "徐汇区", NOW), encoding="utf-8")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", f"--user-data-dir={folder / 'profile'}", "--window-size=1100,5000"]
    dom = subprocess.run(flags + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = folder / "report.png"
    done = subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    return page, dom.stdout, shot


def one(store, sql: str) -> int:
    return list(store.query(sql)[0].values())[0]


def month_filter(column: str, month: str) -> str:
    start, end = report.month_range(month)
    return f"{column} >= toDateTime({start}) AND {column} <= toDateTime({end})"


def test_month_helpers():
    assert report.previous_month("2026-01") == "2025-12" and report.previous_month(MONTH) == PREVIOUS
    start, end = report.month_range("2026-02")
    assert datetime.fromtimestamp(start, report.CITY_TZ) == datetime(2026, 2, 1, tzinfo=report.CITY_TZ)
    assert datetime.fromtimestamp(end + 1, report.CITY_TZ) == datetime(2026, 3, 1, tzinfo=report.CITY_TZ)


def test_the_page_is_self_contained(rendered):
    page, _, _ = rendered
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "http://" not in text and "https://" not in text
    figures = PageFigures()
    figures.feed(text)
    assert {i["id"] for i in figures.images} == {"chart-sources", "chart-daily", "chart-categories", "chart-scores"}
    assert all(i["src"].startswith("data:image/svg+xml;base64,") for i in figures.images)


def test_overview_figures_match_the_store(store, rendered):
    _, dom, _ = rendered
    figures = PageFigures()
    figures.feed(dom)
    for month, suffix in ((MONTH, ""), (PREVIOUS, "_previous")):
        opened = month_filter("opened", month)
        cases = one(store, f"SELECT count() FROM cases FINAL WHERE {opened} AND status != 'void'")
        closed = one(store, f"SELECT count() FROM cases FINAL WHERE {opened} AND status = 'closed'")
        signals = one(store, f"SELECT count() FROM signals FINAL WHERE {month_filter('ts', month)}")
        assert int(figures.tiles[f"cases{suffix}"]) == cases > 100
        assert int(figures.tiles[f"closed{suffix}"]) == closed > 0
        assert int(figures.tiles[f"signals{suffix}"]) == signals
        assert float(figures.tiles[f"close_rate{suffix}"]) == pytest.approx(round(closed / cases, 3))


def test_league_table_matches_the_store(store, rendered):
    _, dom, _ = rendered
    figures = PageFigures()
    figures.feed(dom)
    table = figures.rows["departments"]
    expected = {r["department"]: r for r in store.query(
        "SELECT department, count() AS cases, countIf(status = 'closed') AS closed FROM cases FINAL "
        f"ARRAY JOIN departments AS department WHERE {month_filter('opened', MONTH)} AND status != 'void' "
        "GROUP BY department")}
    assert set(table) == set(expected) and len(table) >= 5
    for department, row in table.items():
        assert int(row["cases"]) == expected[department]["cases"]
        assert int(row["closed"]) == expected[department]["closed"]
        assert row["grade"] == wall.grade_of(float(row["score"]))
        assert row["previous_grade"] in "ABCDE–"
    scores = [float(r["score"]) for r in table.values()]
    assert scores == sorted(scores, reverse=True)
    units = figures.rows["units"]                      # per street instance, rolling up to the kinds
    rolled: dict[str, int] = {}
    for row in units.values():
        rolled[row["department"]] = rolled.get(row["department"], 0) + int(row["cases"])
    assert rolled == {d: int(r["cases"]) for d, r in table.items()}
    assert any(u.endswith("城管中队") and u != "城管执法中队" for u in units)


def test_overdue_list_and_stations_match_the_store(store, rendered):
    _, dom, _ = rendered
    figures = PageFigures()
    figures.feed(dom)
    end_ms = replay_end_ms(MONTH)
    overdue = {r["case_id"] for r in store.query(
        f"SELECT case_id FROM cases FINAL WHERE status NOT IN ('closed', 'void') AND deadline_ms > 0 "
        f"AND deadline_ms < {end_ms - 999}")}
    assert set(figures.rows["overdue"]) == overdue and overdue
    stations = figures.rows["stations"]
    assert stations and all(int(r["working_days"]) == 21 for r in stations.values())   # November 2026, Mon–Fri
    for station, row in stations.items():
        days = one(store, "SELECT uniqExact(toDate(ts)) FROM (SELECT ts FROM zero_reports FINAL WHERE reporter_id = "
                          f"'{station}' AND {month_filter('ts', MONTH)} UNION ALL SELECT ts FROM signals FINAL WHERE "
                          f"reporter_id = '{station}' AND reporter_kind = 'station' AND {month_filter('ts', MONTH)}) "
                          "WHERE toDayOfWeek(toDate(ts)) <= 5")
        assert int(row["days_reported"]) == days


def test_chromium_draws_the_charts(rendered):
    """The screenshot shows the charts' bars (the report's blue and the grade colours), not a blank page."""
    from PIL import Image

    _, _, shot = rendered
    image = Image.open(shot).convert("RGB")
    assert image.size == (1100, 5000)
    colours = image.getcolors(maxcolors=1 << 20)
    count = {rgb: n for n, rgb in colours}
    assert count.get((0x15, 0x65, 0xC0), 0) > 5_000            # this month's bars
    assert sum(n for rgb, n in count.items() if rgb in {(0x2E, 0x7D, 0x32), (0x68, 0x9F, 0x38), (0xF9, 0xA8, 0x25),
                                                         (0xEF, 0x6C, 0x00), (0xC6, 0x28, 0x28)}) > 2_000


def test_cli_history_replay_report(tmp_path):
    """The user's path, each command a subprocess: write a month, replay it into a store, report it."""
    streams = [sys.executable, "-m", "streams.cli"]  # the command of the running environment
    history, url, out = tmp_path / "month.jsonl", f"chdb://{tmp_path / 'store'}", tmp_path / "r.html"
    for argv in (["history", "--month", MONTH, "--out", str(history), "--calls-per-day", "2", "--reports-per-day", "1"],
                 ["replay", str(history), "--store", url, "--until", "2026-11-30T23:59:59+08:00"],
                 ["report", "--month", MONTH, "--store", url, "--out", str(out)]):
        done = subprocess.run(streams + argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, (argv[0], done.stderr[-2000:])
    figures = PageFigures()
    figures.feed(out.read_text(encoding="utf-8"))
    assert int(figures.tiles["cases"]) > 30 and int(figures.tiles["cases_previous"]) == 0
    assert figures.rows["departments"]


def test_cli_refuses_a_bad_month(capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "--month", "2026-13"])
    assert "not YYYY-MM" in capsys.readouterr().err
