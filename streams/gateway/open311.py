"""Open311 GeoReport v2 at ``/open311/v2/`` (spec: wiki.open311.org/GeoReport_v2), XML (the spec's mandatory
format) and JSON by the resource's suffix.

* ``services`` — the taxonomy's categories (``group`` = 部件/事件 and the national class, ``keywords`` from
  the KB); ``metadata`` is true where the KB needs context a citizen can give (``services/<code>`` lists
  those questions as attributes);
* ``POST requests`` (form-encoded, ``api_key`` of a key with scope ``open311``) → a record on
  ``open311.requests``: the worker turns it into a signal from source "open311" on the same
  classify/locate/dedup/case path as a hotline call. Answered at once with the ``service_request_id``
  (services are ``realtime``); ``tokens/<token>`` resolves a token, and every request's token is its id;
* ``GET requests`` (``service_request_id``, ``service_code``, ``start_date``/``end_date``, ``status``) and
  ``requests/<id>``: ``status`` open/closed from the six stages, ``status_notes``, ``agency_responsible``
  from the dispatch, ``expected_datetime`` from the SLA deadline.

Errors are the spec's list of ``{code, description}``: 400, 403 (bad or missing api_key), 404.
Personal data (email, phone, names, device and account ids) never leaves the gateway: only a pseudonym.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

import orjson
from aiohttp import web

from streams.bus.codec import OPEN311_MAX_DESCRIPTION, DecodeError
from streams.bus.topics import OPEN311_REQUESTS
from streams.core.knowledge.services import Service, attribute_problems
from streams.core.privacy import Pseudonymizer
from streams.core.times import CITY_TZ, BadTimestamp, parse_iso
from streams.gateway.limits import RateLimited
from streams.gateway.producer import ProduceError
from streams.gateway.readmodel import iso
from streams.gateway.tracking import Tracking, now_ms, track, track_rows
from streams.storage import StoreError

FORMATS = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
MAX_RESULTS = 1000  # "first 1000 requests returned"
MAX_SPAN = timedelta(days=90)
_ATTRIBUTE = re.compile(r"^attribute\[([^\[\]]+)\](\[\])?$")
# XML element names for the items of a list field (the Spark convention's inverse)
_XML_ITEM = {
    "services": "service",
    "service_requests": "request",
    "attributes": "attribute",
    "values": "value",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
}


class Open311Error(Exception):
    def __init__(self, status: int, description: str, code: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.code = code or status
        self.description = description


# ---------------------------------------------------------------- rendering
def _xml_value(parent: ET.Element, name: str, value: Any) -> None:
    if isinstance(value, list):
        container = ET.SubElement(parent, name)
        for item in value:
            _xml_value(container, _XML_ITEM.get(name, "item"), item)
        return
    element = ET.SubElement(parent, name)
    if isinstance(value, dict):
        for key, inner in value.items():
            _xml_value(element, key, inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)


def to_xml(root: str, data: Any) -> bytes:
    """A list becomes <root><item>..</item></root>; a dict <root><field>..</field></root>."""
    element = ET.Element(root)
    if isinstance(data, list):
        for item in data:
            _xml_value(element, _XML_ITEM.get(root, "item"), item)
    else:
        for key, value in data.items():
            _xml_value(element, key, value)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(element, encoding="unicode").encode("utf-8")


def render(fmt: str, root: str, data: Any, status: int = 200) -> web.Response:
    body = orjson.dumps(data) if fmt == "json" else to_xml(root, data)
    return web.Response(body=body, status=status, headers={"Content-Type": FORMATS[fmt]})


def render_error(fmt: str, error: Open311Error, headers: dict[str, str] | None = None) -> web.Response:
    response = render(
        fmt if fmt in FORMATS else "xml",
        "errors",
        [{"code": error.code, "description": error.description}],
        error.status,
    )
    response.headers.update(headers or {})
    return response


def split_format(name: str) -> tuple[str, str]:
    """'E0103.json' → ('E0103', 'json'); the format must be json or xml."""
    stem, dot, fmt = name.rpartition(".")
    if not dot or not stem:
        raise Open311Error(404, f"{name!r}: add the format to the resource, e.g. {name}.xml or {name}.json")
    if fmt not in FORMATS:
        raise Open311Error(400, f"format {fmt!r} is not served; use .xml or .json", 400)
    return stem, fmt


# ---------------------------------------------------------------- documents
def service_entry(service: Service) -> dict[str, Any]:
    return {
        "service_code": service.code,
        "service_name": service.name,
        "description": service.description,
        "metadata": service.metadata,
        "type": "realtime",
        "keywords": ",".join(service.keywords),
        "group": service.group,
    }


def service_definition(service: Service) -> dict[str, Any]:
    return {
        "service_code": service.code,
        "attributes": [
            {
                "variable": True,
                "code": a.code,
                "datatype": a.datatype,
                "required": a.required,
                "datatype_description": None,
                "order": a.order,
                "description": a.description,
                "values": [{"key": key, "name": name} for key, name in a.values.items()],
            }
            for a in service.attributes
        ],
    }


def request_entry(t: Tracking) -> dict[str, Any]:
    return {
        "service_request_id": t.request_id,
        "status": t.status,
        "status_notes": t.status_notes,
        "service_name": t.service_name,
        "service_code": t.service_code,
        "description": t.description,
        "agency_responsible": t.agency,
        "service_notice": None,
        "requested_datetime": iso(t.requested_ms),
        "updated_datetime": iso(t.updated_ms),
        "expected_datetime": iso(t.expected_ms),
        "address": t.address,
        "address_id": None,
        "zipcode": None,
        "lat": t.lat,
        "long": t.lon,
        "media_url": t.media_url,
    }


# ---------------------------------------------------------------- request parsing
def parse_attributes(form: Any) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}
    for key, value in form.items():
        match = _ATTRIBUTE.match(key)
        if match and str(value).strip():
            answers.setdefault(match.group(1), []).append(str(value).strip())
    return answers


def _float(form: Any, name: str) -> float | None:
    raw = (form.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Open311Error(400, f"{name} must be a number (WGS84 degrees), got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise Open311Error(400, f"{name} must be a finite number")
    return value


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def new_request_id() -> str:
    """Hard to guess (the progress page is public): the city date and 10 random hex digits."""
    return datetime.now(CITY_TZ).strftime("%Y%m%d") + "-" + secrets.token_hex(5)


def build_request(form: Any, services: dict[str, Service], knowledge: Any, client: str,
                  pseudonyms: Pseudonymizer) -> dict[str, Any]:
    """The open311.requests record of a POSTed form, or Open311Error (400 / 404). The citizen (email,
    phone, account or device id) becomes a keyed pseudonym (CITYGRID_PII_KEY, as for 12345 callers)."""
    code = _text(form, "service_code")
    if code is None:
        raise Open311Error(400, "service_code was not provided")
    service = services.get(code) or services.get(code.upper())
    if service is None:
        raise Open311Error(404, f"service_code {code!r} not found (GET services lists them)")
    lat, lon = _float(form, "lat"), _float(form, "long")
    address, address_id = _text(form, "address_string"), _text(form, "address_id")
    if (lat is None) != (lon is None):
        raise Open311Error(400, "lat and long must be sent together")
    if lat is None and address is None and address_id is None:
        raise Open311Error(400, "a location is required: lat and long, address_string or address_id")
    description = _text(form, "description")
    if description is not None and len(description) > OPEN311_MAX_DESCRIPTION:
        raise Open311Error(400, f"description is longer than {OPEN311_MAX_DESCRIPTION} characters")
    media_url = _text(form, "media_url")
    if media_url is not None and not re.match(r"^https?://[^\s]+$", media_url):
        raise Open311Error(400, "media_url must be an http(s) URL")
    answers = parse_attributes(form)
    problems = attribute_problems(knowledge, service.code, answers)
    if problems:
        raise Open311Error(400, "; ".join(problems))
    who = next((v for v in (_text(form, n) for n in ("email", "phone", "account_id", "device_id")) if v), None)
    return {
        "request_id": new_request_id(),
        "service_code": service.code,
        "requested_at": datetime.now(CITY_TZ).isoformat(timespec="milliseconds"),
        "client": client,
        "jurisdiction_id": _text(form, "jurisdiction_id"),
        "lat": lat,
        "lon": lon,
        "address_string": address,
        "address_id": address_id,
        "description": description,
        "media_url": media_url,
        "attributes": answers or None,
        "reporter": pseudonyms.reporter(who) if who else None,
    }


def _date(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return parse_iso(value.strip())
    except BadTimestamp:
        raise Open311Error(
            400, f"{name} must be a w3 date-time with offset, e.g. 2010-01-01T00:00:00Z; got {value!r}"
        ) from None


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# ---------------------------------------------------------------- handlers
def _fmt_of(request: web.Request) -> str:
    name = request.match_info.get("name") or ""
    return request.match_info.get("fmt") or name.rpartition(".")[2]


def routes(gateway_key: web.AppKey) -> list[web.RouteDef]:
    def gw(request: web.Request) -> Any:
        return request.app[gateway_key]

    def check_jurisdiction(request: web.Request, value: str | None) -> None:
        wanted = gw(request).settings.gateway_jurisdiction_id
        if value and wanted and value != wanted:
            raise Open311Error(404, f"jurisdiction_id {value!r} not found (this endpoint serves {wanted!r})")

    async def discovery(request: web.Request) -> web.Response:
        _, fmt = split_format(f"discovery.{request.match_info['fmt']}")
        base = gw(request).public_base(request)
        return render(
            fmt,
            "discovery",
            {
                "changeset": "2026-11-01T00:00:00+08:00",
                "contact": "城市网格化综合管理中心 (the operations centre)",
                "key_service": "API keys are issued by the operations centre",
                "endpoints": [
                    {
                        "specification": "http://wiki.open311.org/GeoReport_v2",
                        "url": f"{base}/open311/v2",
                        "changeset": "2026-11-01T00:00:00+08:00",
                        "type": "production",
                        "formats": ["text/xml", "application/json"],
                    }
                ],
            },
        )

    async def services(request: web.Request) -> web.Response:
        _, fmt = split_format(f"services.{request.match_info['fmt']}")
        check_jurisdiction(request, request.query.get("jurisdiction_id"))
        return render(fmt, "services", [service_entry(s) for s in gw(request).services.values()])

    async def definition(request: web.Request) -> web.Response:
        code, fmt = split_format(request.match_info["name"])
        check_jurisdiction(request, request.query.get("jurisdiction_id"))
        service = gw(request).services.get(code) or gw(request).services.get(code.upper())
        if service is None:
            raise Open311Error(404, f"service_code {code!r} not found")
        return render(fmt, "service_definition", service_definition(service))

    async def post_request(request: web.Request) -> web.Response:
        _, fmt = split_format(f"requests.{request.match_info['fmt']}")
        g = gw(request)
        form = await request.post()
        key = g.keys.authenticate(form.get("api_key") or request.query.get("api_key") or g.header_key(request))
        if key is None:
            raise Open311Error(403, "invalid or missing api_key -- can't proceed with create_request")
        if not key.may_file_open311:
            raise Open311Error(403, f"api_key {key.name!r} may not file service requests (scope 'open311' missing)")
        await g.charge_key(request, key)
        check_jurisdiction(request, _text(form, "jurisdiction_id"))
        record = build_request(form, g.services, g.knowledge, key.name, g.pseudonyms)
        try:
            valid = g.codec.from_json("open311_request", record)
        except DecodeError as exc:
            raise Open311Error(400, str(exc)) from None
        try:
            await g.producer.send_one(
                g.topics.name(OPEN311_REQUESTS), valid["request_id"].encode(), g.codec.encode("open311_request", valid)
            )
        except ProduceError as exc:
            # the spec's "general service error (e.g. CRM is down)": 400, the code in the body says more
            raise Open311Error(400, f"the request could not be stored, please retry: {exc}", 503) from None
        g.pending.add({**valid, "requested_ms": now_ms(), "service_name": g.services[valid["service_code"]].name})
        g.metrics.open311_requests.labels(client=key.name).inc()
        base = g.public_base(request)
        return render(
            fmt,
            "service_requests",
            [
                {
                    "service_request_id": valid["request_id"],
                    "service_notice": f"已受理，进度查询 Track it at {base}/progress/{valid['request_id']}",
                }
            ],
        )

    async def list_requests(request: web.Request) -> web.Response:
        _, fmt = split_format(f"requests.{request.match_info['fmt']}")
        g = gw(request)
        q = request.query
        check_jurisdiction(request, q.get("jurisdiction_id"))
        ids = _csv(q.get("service_request_id"))
        if ids:  # "this overrides all other arguments"
            rows = await g.model.requests(ids=ids[:MAX_RESULTS])
            have = {r["request_id"] for r in rows}
            pending = [p for i in ids if i not in have and (p := g.pending.get(i)) is not None]
            found = {t.request_id: t for t in await track_rows(g.model, rows, pending)}
            return render(fmt, "service_requests", [request_entry(found[i]) for i in ids if i in found])
        given_start, given_end = _date(q.get("start_date"), "start_date"), _date(q.get("end_date"), "end_date")
        if given_start is None:
            end = given_end or datetime.now(CITY_TZ)
            start = end - MAX_SPAN
        else:
            start, end = given_start, given_end or given_start + MAX_SPAN
        if end < start:
            raise Open311Error(400, "end_date is before start_date")
        if end - start > MAX_SPAN:
            raise Open311Error(400, "start_date and end_date may not span more than 90 days")
        statuses = _csv(q.get("status"))
        if any(s not in ("open", "closed") for s in statuses):
            raise Open311Error(400, f"status must be open and/or closed, got {q.get('status')!r}")
        codes = _csv(q.get("service_code"))
        start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        rows = await g.model.requests(
            service_codes=codes or None,
            start_ms=start_ms,
            end_ms=end_ms,
            limit=MAX_RESULTS * 3 if statuses else MAX_RESULTS,
        )
        pending = [
            p
            for p in g.pending.values()
            if start_ms <= p["requested_ms"] <= end_ms and (not codes or p["service_code"] in codes)
        ]
        matches = [t for t in await track_rows(g.model, rows, pending) if not statuses or t.status in statuses]
        matches.sort(key=lambda t: (-t.requested_ms, t.request_id))
        return render(fmt, "service_requests", [request_entry(t) for t in matches[:MAX_RESULTS]])

    async def get_request(request: web.Request) -> web.Response:
        request_id, fmt = split_format(request.match_info["name"])
        check_jurisdiction(request, request.query.get("jurisdiction_id"))
        found = await track(gw(request).model, gw(request).pending, request_id)
        if found is None:
            raise Open311Error(404, f"service_request_id {request_id!r} not found")
        return render(fmt, "service_requests", [request_entry(found)])

    async def get_token(request: web.Request) -> web.Response:
        token, fmt = split_format(request.match_info["name"])
        check_jurisdiction(request, request.query.get("jurisdiction_id"))
        found = await track(gw(request).model, gw(request).pending, token)
        if found is None:
            raise Open311Error(404, f"token {token!r} not found")
        return render(fmt, "service_requests", [{"service_request_id": found.request_id, "token": token}])

    def guarded(handler: Any) -> Any:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except Open311Error as exc:
                return render_error(_fmt_of(request), exc)
            except RateLimited as exc:
                return render_error(
                    _fmt_of(request), Open311Error(429, str(exc)), {"Retry-After": str(exc.retry_after)}
                )
            except StoreError as exc:
                # the spec's "general service error": 400, with 503 in the body
                return render_error(
                    _fmt_of(request),
                    Open311Error(
                        400, f"the city's records are not reachable right now, please retry ({exc})".split("\n")[0], 503
                    ),
                )

        run.__name__ = handler.__name__
        return run

    base = "/open311/v2"
    return [
        web.get(f"{base}/discovery.{{fmt}}", guarded(discovery)),
        web.get(f"{base}/services.{{fmt}}", guarded(services)),
        web.get(f"{base}/services/{{name}}", guarded(definition)),
        web.post(f"{base}/requests.{{fmt}}", guarded(post_request)),
        web.get(f"{base}/requests.{{fmt}}", guarded(list_requests)),
        web.get(f"{base}/requests/{{name}}", guarded(get_request)),
        web.get(f"{base}/tokens/{{name}}", guarded(get_token)),
    ]
