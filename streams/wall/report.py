"""``streams report --month YYYY-MM``: the monthly assessment report 考核报告 the district reads.

One self-contained HTML page (inline CSS, charts as base64 SVG images drawn with matplotlib, no
script or file it must fetch): the month's volumes by source and category against the previous
month, cases by day, the department league table with the 综合 score and A–E grade (and last
month's, per kind and per street instance such as 徐家汇街道城管中队), inspectors' and stations' KPIs,
and the cases overdue at the end of the month. Every
figure is a wall query (streams/wall/queries.py) run over the month on the store, so the report,
the Grafana league/field dashboards and the tests agree. Numbers carry ``data-key`` attributes
(and rows ``data-row``) so a test can read them back from the rendered page.

The store holds each case's latest state: run the report after the month (or replay the month
with ``streams replay --until`` its last instant) for the overdue list to be the month-end one.
"""
from __future__ import annotations

import base64
import html
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from streams.core.times import CITY_TZ
from streams.wall import queries as wall

# Fonts the charts ask for (SVG text stays text: the browser draws it with the first it has).
CJK_FONTS = ["Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "PingFang SC", "Microsoft YaHei",
             "DejaVu Sans", "sans-serif"]
SOURCE_LABELS = {"12345": "12345热线", "12319": "12319热线", "inspector": "网格巡查员", "station": "居民区工作站",
                 "committee": "居委会", "sensor": "传感器", "camera": "摄像头", "registry": "登记变更"}
KPI_LABELS = {"close_rate": "结案率", "on_time_rate": "按期结案率", "rework_rate": "返工率",
              "extension_rate": "延期率", "avg_handling_hours": "平均处置时长(小时)", "score": "综合得分",
              "grade": "等级", "valid_rate": "有效上报率", "verify_on_time_rate": "按时核查率",
              "compliance": "零报告合规率"}
GRADE_COLOURS = {"A": "#2e7d32", "B": "#689f38", "C": "#f9a825", "D": "#ef6c00", "E": "#c62828"}


def month_range(month: str) -> tuple[int, int]:
    """'2026-11' -> (first second, last second) of the month in the city, as epoch seconds."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=CITY_TZ)
    end = (start + timedelta(days=32)).replace(day=1)
    return int(start.timestamp()), int(end.timestamp()) - 1


def previous_month(month: str) -> str:
    start = datetime.strptime(month, "%Y-%m")
    return (start - timedelta(days=1)).strftime("%Y-%m")


@dataclass
class MonthFigures:
    month: str
    totals: dict[str, Any]
    signals_by_source: list[dict[str, Any]]
    triage: int
    categories: list[dict[str, Any]]
    by_day: list[dict[str, Any]]
    departments: list[dict[str, Any]]
    units: list[dict[str, Any]]
    field: list[dict[str, Any]]
    stations: list[dict[str, Any]]

    @property
    def signals(self) -> int:
        return sum(r["signals"] for r in self.signals_by_source)


@dataclass
class MonthlyReport:
    district: str
    month: str
    generated: datetime
    this: MonthFigures
    previous: MonthFigures
    overdue: list[dict[str, Any]] = field(default_factory=list)


def month_figures(store: wall.QueryStore, month: str) -> MonthFigures:
    from_s, to_s = month_range(month)

    def q(name: str) -> list[dict[str, Any]]:
        return wall.run(store, name, from_s, to_s, interval_s=86_400)

    return MonthFigures(
        month=month, totals=q("period_totals")[0], signals_by_source=q("signals_by_source"),
        triage=sum(r["records"] for r in q("triage_by_reason")), categories=q("top_categories"),
        by_day=q("cases_by_day"), departments=q("department_kpis"), units=q("unit_kpis"), field=q("field_kpis"),
        stations=q("station_compliance"))


def collect(store: wall.QueryStore, month: str, district: str, now: datetime | None = None) -> MonthlyReport:
    """The report's figures: this month and the previous one, and the month-end overdue list."""
    from_s, to_s = month_range(month)
    generated = now or datetime.now(CITY_TZ)
    as_of = min(to_s, int(generated.timestamp()))
    return MonthlyReport(district=district, month=month, generated=generated, this=month_figures(store, month),
                         previous=month_figures(store, previous_month(month)),
                         overdue=wall.run(store, "overdue_cases", from_s, as_of))


# ---------------------------------------------------------------- charts
def _svg(fig: Any) -> str:
    """A figure as base64 SVG (text kept as text), for an <img> data URI."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue().encode("utf-8")).decode("ascii")
    return data


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.family": "sans-serif", "font.sans-serif": CJK_FONTS,
                         "axes.spines.top": False, "axes.spines.right": False, "font.size": 9})
    return plt.subplots(figsize=(width, height))


def _bars_against_previous(labels: list[str], this: list[float], prev: list[float], title: str,
                           this_month: str, prev_month: str) -> str:
    fig, ax = _figure(7.5, 3.0)
    xs = list(range(len(labels)))
    ax.bar([x - 0.2 for x in xs], prev, width=0.4, label=prev_month, color="#b0bec5")
    ax.bar([x + 0.2 for x in xs], this, width=0.4, label=this_month, color="#1565c0")
    ax.set_xticks(xs, labels)
    ax.set_title(title)
    ax.legend(frameon=False)
    return _svg(fig)


def _daily(this: list[dict[str, Any]], prev: list[dict[str, Any]], this_month: str, prev_month: str) -> str:
    fig, ax = _figure(7.5, 2.8)
    for rows, label, colour in ((prev, prev_month, "#b0bec5"), (this, this_month, "#1565c0")):
        ax.plot([r["day"].day for r in rows], [r["cases"] for r in rows], marker="o", markersize=3, label=label,
                color=colour)
    ax.set_xlabel("日 day of month")
    ax.set_title("每日立案 Cases by day")
    ax.legend(frameon=False)
    return _svg(fig)


def _categories(rows: list[dict[str, Any]]) -> str:
    fig, ax = _figure(7.5, 0.35 * max(len(rows), 3) + 0.8)
    names = [r["category_name"] for r in rows][::-1]
    ax.barh(names, [r["cases"] for r in rows][::-1], color="#1565c0")
    ax.set_title("高发类别 Top categories")
    return _svg(fig)


def _scores(rows: list[dict[str, Any]]) -> str:
    fig, ax = _figure(7.5, 0.35 * max(len(rows), 3) + 0.8)
    rows = rows[::-1]
    ax.barh([r["department"] for r in rows], [r["score"] for r in rows],
            color=[GRADE_COLOURS.get(r["grade"], "#777") for r in rows])
    for i, r in enumerate(rows):
        ax.text(r["score"] + 1, i, f"{r['score']:.1f} {r['grade']}", va="center")
    ax.set_xlim(0, 110)
    ax.set_title("综合得分 Department scores")
    return _svg(fig)


# ---------------------------------------------------------------- HTML
def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, float) and (key.endswith("rate") or key == "compliance"):
        return f"{float(value) * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:.1f}" if key == "score" else f"{value:.2f}"
    if isinstance(value, datetime):
        return value.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _cell(key: str, value: Any) -> str:
    raw = value.isoformat() if isinstance(value, (date, datetime)) else value
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    css = ' class="num"' if numeric else ""
    return f'<td{css} data-key="{_e(key)}" data-value="{_e(raw)}">{_e(_fmt(key, value))}</td>'


def _table(table_id: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]], row_key: str,
           extra: dict[str, dict[str, Any]] | None = None, extra_columns: Sequence[tuple[str, str]] = ()) -> str:
    if not rows:
        return f'<p class="empty" id="{table_id}">本月无数据 No rows this month.</p>'
    head = "".join(f"<th>{_e(label)}</th>" for _, label in columns + list(extra_columns))
    body = []
    for row in rows:
        cells = "".join(_cell(key, row[key]) for key, _ in columns)
        more = (extra or {}).get(str(row[row_key]), {})
        cells += "".join(_cell(key, more.get(key, "–")) for key, _ in extra_columns)
        body.append(f'<tr data-row="{_e(row[row_key])}">{cells}</tr>')
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _delta(this: float, prev: float, rate: bool) -> str:
    diff = this - prev
    if rate:
        return f"{diff * 100:+.1f} pt"
    return f"{diff:+d}" if isinstance(diff, int) else f"{diff:+.1f}"


def _tile(key: str, label: str, this: Any, prev: Any) -> str:
    rate = key.endswith("rate")
    shown = f"{this * 100:.1f}%" if rate else str(this)
    return (f'<div class="tile"><div class="label">{_e(label)}</div>'
            f'<div class="value" data-key="{key}" data-value="{_e(this)}">{_e(shown)}</div>'
            f'<div class="delta" data-key="{key}_previous" data-value="{_e(prev)}">'
            f'上月 {_e(f"{prev * 100:.1f}%" if rate else prev)}'
            f' ({_e(_delta(this, prev, rate))})</div></div>')


def _image(data: str, alt: str, chart_id: str) -> str:
    return f'<img class="chart" id="{chart_id}" alt="{_e(alt)}" src="data:image/svg+xml;base64,{data}">'


STYLE = """
body{font-family:"Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;margin:24px auto;max-width:1000px;color:#212121}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;border-bottom:2px solid #1565c0;padding-bottom:4px;margin-top:28px}
.meta{color:#616161;font-size:13px} .tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{border:1px solid #cfd8dc;border-radius:6px;padding:10px 14px;min-width:130px}
.tile .label{font-size:12px;color:#546e7a} .tile .value{font-size:22px;font-weight:bold} .tile .delta{font-size:12px;color:#78909c}
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0} th,td{border:1px solid #cfd8dc;padding:4px 6px;text-align:left} td.num{text-align:right}
th{background:#eceff1} img.chart{max-width:100%;display:block;margin:8px 0}
.grade-A{color:#2e7d32;font-weight:bold} .grade-E{color:#c62828;font-weight:bold} .empty{color:#78909c}
@media print{body{margin:0}}
"""  # noqa: E501 (CSS, one line per group of rules)


def render_html(report: MonthlyReport) -> str:
    this, prev = report.this, report.previous
    t, p = this.totals, prev.totals
    sources = sorted({r["source_kind"] for r in this.signals_by_source + prev.signals_by_source})
    by_source = {r["source_kind"]: r["signals"] for r in this.signals_by_source}
    prev_by_source = {r["source_kind"]: r["signals"] for r in prev.signals_by_source}
    source_rows = [{"source": SOURCE_LABELS.get(s, s), "source_kind": s, "signals": by_source.get(s, 0),
                    "previous": prev_by_source.get(s, 0)} for s in sources]
    prev_departments = {r["department"]: {"previous_score": r["score"], "previous_grade": r["grade"]}
                        for r in prev.departments}
    charts = {
        "chart-sources": _bars_against_previous([r["source"] for r in source_rows], [r["signals"] for r in source_rows],
                                                [r["previous"] for r in source_rows], "上报来源 Reports by source",
                                                this.month, prev.month),
        "chart-daily": _daily(this.by_day, prev.by_day, this.month, prev.month),
        "chart-categories": _categories(this.categories),
        "chart-scores": _scores(this.departments),
    }
    tiles = "".join([
        _tile("cases", "立案数 Cases", t["cases"], p["cases"]),
        _tile("closed", "结案数 Closed", t["closed"], p["closed"]),
        _tile("close_rate", "结案率", t["close_rate"], p["close_rate"]),
        _tile("on_time_rate", "按期结案率", t["on_time_rate"], p["on_time_rate"]),
        _tile("rework_rate", "返工率", t["rework_rate"], p["rework_rate"]),
        _tile("signals", "上报 Reports", this.signals, prev.signals),
        _tile("triage", "人工分拨 Triage", this.triage, prev.triage),
    ])
    department_columns = [("department", "部门 Department"), ("cases", "案件"), ("closed", "结案"),
                          ("close_rate", KPI_LABELS["close_rate"]), ("on_time_rate", KPI_LABELS["on_time_rate"]),
                          ("rework_rate", KPI_LABELS["rework_rate"]), ("extension_rate", KPI_LABELS["extension_rate"]),
                          ("avg_handling_hours", KPI_LABELS["avg_handling_hours"]), ("score", KPI_LABELS["score"]),
                          ("grade", KPI_LABELS["grade"])]
    sections = [
        f"<h1>{_e(report.district)}城市网格化综合管理 {_e(this.month)} 月度考核报告</h1>",
        f'<p class="meta">Monthly assessment report · 统计期 {_e(this.month)} (对比 {_e(prev.month)}) · '
        f'生成于 {_e(report.generated.astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M"))}</p>',
        f'<h2>一、总体情况 Overview</h2><div class="tiles" id="overview">{tiles}</div>',
        "<h2>二、上报来源 Reports by source</h2>"
        + _image(charts["chart-sources"], "reports by source", "chart-sources")
        + _table("sources", source_rows, [("source", "来源"), ("signals", "本月"), ("previous", "上月")],
                 "source_kind"),
        "<h2>三、案件类别与趋势 Categories and trend</h2>"
        + _image(charts["chart-categories"], "top categories", "chart-categories")
        + _table("categories", this.categories,
                 [("category_code", "代码"), ("category_name", "类别"), ("cases", "案件")], "category_code")
        + _image(charts["chart-daily"], "cases by day", "chart-daily"),
        "<h2>四、部门考核 Department league table</h2>" + _image(charts["chart-scores"], "department scores",
                                                                "chart-scores")
        + _table("departments", this.departments, department_columns, "department", prev_departments,
                 [("previous_score", "上月得分"), ("previous_grade", "上月等级")])
        + "<h3>各街道部门 Per street instance</h3>"
        + _table("units", this.units, [("unit", "部门 Instance"), ("department", "类别 Kind"), ("cases", "案件"),
                                       ("closed", "结案"), ("close_rate", KPI_LABELS["close_rate"]),
                                       ("on_time_rate", KPI_LABELS["on_time_rate"]), ("score", KPI_LABELS["score"]),
                                       ("grade", KPI_LABELS["grade"])], "unit")
        + '<p class="meta">按期结案率只看部门自己的处置环节；得分 = 30% 结案率 + 40% 按期结案率 + 15% (1 − 返工率) + '
          "15% (1 − 延期率)；A ≥ 90, B ≥ 80, C ≥ 70, D ≥ 60, E &lt; 60。案件计入其每个处置部门。</p>",
        "<h2>五、网格巡查与居民区工作站 Inspectors and stations</h2>"
        + _table("field", this.field, [("reporter_id", "上报/核查人"), ("reporter_kind", "类型"), ("reports", "上报"),
                                       ("valid_reports", "有效"), ("valid_rate", KPI_LABELS["valid_rate"]),
                                       ("verifications", "核查"),
                                       ("verify_on_time_rate", KPI_LABELS["verify_on_time_rate"])],
                 "reporter_id")
        + _table("stations", this.stations, [("station", "工作站"), ("days_reported", "报送天数"),
                                             ("working_days", "工作日"), ("compliance", KPI_LABELS["compliance"])],
                 "station"),
        f"<h2>六、超期案件 Overdue cases ({len(report.overdue)})</h2>"
        + _table("overdue", report.overdue, [("case_id", "案件"), ("category_name", "类别"), ("department", "部门"),
                                             ("status", "环节"), ("street", "街道"), ("deadline", "期限"),
                                             ("overdue_hours", "超期(小时)")], "case_id"),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(report.district)} {_e(this.month)} 考核报告</title><style>{STYLE}</style></head>"
            f"<body>{''.join(sections)}</body></html>\n")


def build(store: wall.QueryStore, month: str, district: str, now: datetime | None = None) -> str:
    """The report of ``month`` as HTML."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matplotlib: glyphs missing from the layout font (the browser draws them)
        return render_html(collect(store, month, district, now))
