"""The citizen's progress page 事项进度查询 (seed 000: "100%事项进度可查询"): ``GET /progress/<service_request_id>``.

A small, mobile-friendly Chinese page with no script and no outside resources: the six stages
发现→立案→派遣→处置→核查→结案 with their times, the responsible department, the deadline and its light.
No personal data: not the description, not the exact address (only the street and community), nobody's name.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from aiohttp import web

from streams.core.model import STAGE_ZH, STAGES
from streams.core.times import CITY_TZ
from streams.gateway.readmodel import stage_times
from streams.gateway.tracking import Tracking, track

LIGHT_TEXT = {"green": "绿灯 · 按期办理中", "yellow": "黄灯 · 临近时限", "red": "红灯 · 已超时限"}
PHASE_TEXT = {
    "received": "已收到",
    "triage": "人工分拨中",
    "register": "待立案",
    "dispatch": "待派遣",
    "handle": "处置中",
    "verify": "核查中",
    "closed": "已结案",
    "void": "已作废",
    "suspended": "挂账",
}

STYLE = """
*{box-sizing:border-box}body{margin:0;font:16px/1.5 -apple-system,"PingFang SC","Noto Sans CJK SC","Microsoft YaHei",
sans-serif;background:#f3f5f8;color:#1d2733}main{max-width:560px;margin:0 auto;padding:16px}
h1{font-size:20px;margin:4px 0 12px}.card{background:#fff;border-radius:12px;padding:16px;margin-bottom:12px;
box-shadow:0 1px 3px rgba(0,0,0,.08)}.id{color:#5b6675;font-size:14px;word-break:break-all}
.status{display:inline-block;padding:2px 10px;border-radius:12px;background:#e7eefc;color:#1a56db;font-weight:600}
.status.closed{background:#e6f6ea;color:#137333}dl{margin:0;display:grid;grid-template-columns:6.5em 1fr;gap:6px 8px}
dt{color:#5b6675}dd{margin:0}ol{list-style:none;margin:0;padding:0}li{display:flex;gap:12px;padding:8px 0;
border-left:3px solid #d5dbe3;margin-left:9px;padding-left:16px;position:relative}
li:before{content:"";position:absolute;left:-9px;top:12px;width:15px;height:15px;border-radius:50%;background:#d5dbe3}li.done{border-color:#2f9e59}
li.done:before{background:#2f9e59}li.now:before{background:#1a56db;box-shadow:0 0 0 4px #cfdcfb}.stage{font-weight:600;
min-width:3em}.when{color:#5b6675}.light{font-weight:600}.light.green{color:#137333}.light.yellow{color:#b06000}
.light.red{color:#c5221f}footer{color:#8a94a3;font-size:13px;text-align:center;margin-top:8px}
"""


def _time(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, CITY_TZ).strftime("%Y-%m-%d %H:%M")


def render_page(t: Tracking) -> str:
    case = t.case
    times = stage_times(case) if case is not None else {}
    times.setdefault("discover", t.requested_ms)
    status = t.case_status
    current = status if status in STAGES else ("register" if status in ("received", "triage") else None)
    if status == "closed":
        current = None
    items = []
    for stage in STAGES:
        done = stage in times and (stage != current)
        css = "done" if done else ("now" if stage == current else "")
        when = _time(times.get(stage)) if done else ("进行中" if css == "now" else "—")
        items.append(
            f'<li class="{css}"><span class="stage">{STAGE_ZH[stage]}</span><span class="when">{when}</span></li>'
        )
    rows = [("事项类别", escape(t.service_name)), ("当前状态", escape(PHASE_TEXT.get(status, status)))]
    department = t.agency
    rows.append(("责任部门", escape(department) if department else "待派遣后确定"))
    if not t.closed:
        # the handling deadline the department was given (expected), and the current stage's own limit + light
        rows.append(("预计办结", _time(t.expected_ms) if t.expected_ms else "派遣后确定"))
        stage_deadline = case["deadline_ms"] if case is not None else 0
        if stage_deadline and stage_deadline != t.expected_ms:
            rows.append(("本环节时限", _time(stage_deadline)))
        light = case["light"] if case is not None else None
        if light in LIGHT_TEXT:
            rows.append(("时限状态", f'<span class="light {light}">{LIGHT_TEXT[light]}</span>'))
    else:
        rows.append(("办结时间", _time(case.get("closed_ms") or case.get("updated_ms")) if case else "—"))
        if case is not None and status == "closed":
            on_time = bool(case.get("on_time"))
            rows.append(
                (
                    "时限状态",
                    f'<span class="light {"green" if on_time else "red"}">'
                    f"{'按时办结' if on_time else '超时办结'}</span>",
                )
            )
    place = " ".join(p for p in (t.street, case.get("community") if case else None) if p)
    if place:
        rows.append(("所在街道", escape(place)))
    rows.append(("最近更新", _time(t.updated_ms)))
    merged = case["reporters"] if case is not None else 1
    note = f'<p class="when">同一问题共 {merged} 人反映，已并案办理。</p>' if merged > 1 else ""
    details = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    badge = "status closed" if t.closed else "status"
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="robots" content="noindex">
<title>事项进度查询 {escape(t.request_id)}</title><style>{STYLE}</style></head>
<body><main>
<h1>事项进度查询</h1>
<div class="card"><div class="id">受理编号 {escape(t.request_id)}</div>
<p><span class="{badge}">{escape(PHASE_TEXT.get(status, status))}</span></p>
<dl>{details}</dl>{note}</div>
<div class="card"><ol>{"".join(items)}</ol></div>
<footer>城市网格化综合管理 · 发现→立案→派遣→处置→核查→结案</footer>
</main></body></html>"""


NOT_FOUND = """<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>未找到该事项</title><style>{style}</style></head><body><main><h1>事项进度查询</h1>
<div class="card"><p>未找到受理编号为 <b>{rid}</b> 的事项。</p>
<p class="when">刚提交的事项可能需要几秒钟才能查到，请稍后刷新。</p></div>
</main></body></html>"""


def routes(gateway_key: web.AppKey) -> list[web.RouteDef]:
    async def progress(request: web.Request) -> web.Response:
        g = request.app[gateway_key]
        request_id = request.match_info["request_id"]
        found = await track(g.model, g.pending, request_id)
        if found is None:
            return web.Response(
                text=NOT_FOUND.format(style=STYLE, rid=escape(request_id)),
                status=404,
                content_type="text/html",
                charset="utf-8",
            )
        return web.Response(
            text=render_page(found), content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"}
        )

    return [web.get("/progress/{request_id}", progress)]
