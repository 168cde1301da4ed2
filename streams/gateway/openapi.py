"""The gateway's contract as OpenAPI 3.0, served at ``/openapi.json`` (and fuzzed by schemathesis in the tests).
Feed record schemas are generated from the Avro schemas the worker validates with, so they cannot drift."""

from __future__ import annotations

from typing import Any

from streams.core.cases.lifecycle import ACTIONS
from streams.gateway.feeds import FEED_TOPICS
from streams.gateway.readmodel import LIGHTS, MAX_PAGE_SIZE, STATUSES

NULLABLE_STRING = {"type": "string", "nullable": True}


def _avro_to_json_schema(avro_type: Any) -> dict[str, Any]:
    if isinstance(avro_type, list):
        inner = [t for t in avro_type if t != "null"]
        schema = (
            _avro_to_json_schema(inner[0]) if len(inner) == 1 else {"oneOf": [_avro_to_json_schema(t) for t in inner]}
        )
        if "null" in avro_type:
            schema = {**schema, "nullable": True}
        return schema
    if isinstance(avro_type, dict):
        kind = avro_type.get("type")
        if kind == "array":
            return {"type": "array", "items": _avro_to_json_schema(avro_type["items"])}
        if kind == "map":
            return {"type": "object", "additionalProperties": _avro_to_json_schema(avro_type["values"])}
        return _avro_to_json_schema(kind)
    primitives: dict[str, dict[str, Any]] = {
        "string": {"type": "string"},
        "double": {"type": "number"},
        "float": {"type": "number"},
        "long": {"type": "integer"},
        "int": {"type": "integer"},
        "boolean": {"type": "boolean"},
        "null": {"nullable": True},
    }
    return primitives.get(avro_type, {})


def record_schema(codec: Any, schema_name: str) -> dict[str, Any]:
    schema = codec[schema_name]
    properties, required = {}, []
    for spec in schema.parsed["fields"]:
        properties[spec["name"]] = {
            **_avro_to_json_schema(spec["type"]),
            **({"description": spec["doc"]} if spec.get("doc") else {}),
        }
        if "default" not in spec:
            required.append(spec["name"])
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _open311(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}, "text/xml": {"schema": {"type": "string"}}},
    }


OPEN311_ERRORS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["code", "description"],
        "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
    },
}


def _open311_errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad request (the body lists why)",
        403: "missing or invalid api_key",
        404: "not found",
        429: "rate limited (Retry-After)",
    }
    return {str(c): _open311(text[c], OPEN311_ERRORS) for c in codes}


FORMAT = {
    "name": "format",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["json", "xml"]},
    "description": "response format (XML is GeoReport v2's mandatory one)",
}
JURISDICTION = {"name": "jurisdiction_id", "in": "query", "required": False, "schema": {"type": "string"}}
COMMON_V1 = {
    "401": _error("API key missing or unknown"),
    "429": _error("rate limited (see Retry-After)"),
    "503": _error("Kafka or ClickHouse unreachable; retry"),
}


def document(gateway: Any, server_url: str) -> dict[str, Any]:
    codec = gateway.codec
    feeds = {topic: record_schema(codec, name) for topic, name in FEED_TOPICS.items()}
    request_item = {
        "type": "object",
        "required": ["service_request_id", "status", "service_code", "requested_datetime"],
        "properties": {
            "service_request_id": {"type": "string"},
            "status": {"type": "string", "enum": ["open", "closed"]},
            "status_notes": NULLABLE_STRING,
            "service_name": NULLABLE_STRING,
            "service_code": {"type": "string"},
            "description": NULLABLE_STRING,
            "agency_responsible": NULLABLE_STRING,
            "service_notice": NULLABLE_STRING,
            "requested_datetime": {"type": "string", "format": "date-time"},
            "updated_datetime": {"type": "string", "format": "date-time", "nullable": True},
            "expected_datetime": {"type": "string", "format": "date-time", "nullable": True},
            "address": NULLABLE_STRING,
            "address_id": NULLABLE_STRING,
            "zipcode": NULLABLE_STRING,
            "lat": {"type": "number", "nullable": True},
            "long": {"type": "number", "nullable": True},
            "media_url": NULLABLE_STRING,
        },
    }
    case_summary = {
        "type": "object",
        "required": ["case_id", "status", "light", "departments"],
        "properties": {
            "case_id": {"type": "string"},
            "category_code": {"type": "string"},
            "category_name": {"type": "string"},
            "status": {"type": "string", "enum": list(STATUSES)},
            "status_zh": {"type": "string"},
            "light": {"type": "string"},
            "level": {"type": "integer"},
            "departments": {"type": "array", "items": {"type": "string"}},
            "deadline": NULLABLE_STRING,
            "opened": NULLABLE_STRING,
            "updated": NULLABLE_STRING,
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "citygrid-streams gateway",
            "version": "1.0",
            "description": "Feeds into the pipeline, the departments' work API, Open311 GeoReport v2 and the "
            "citizen's progress page. Keys: header X-Api-Key (or Authorization: Bearer).",
        },
        "servers": [{"url": server_url}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["status", "reason"],
                            "properties": {
                                "status": {"type": "integer"},
                                "reason": {"type": "string"},
                                "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
                            },
                        }
                    },
                },
                "FieldError": {
                    "type": "object",
                    "required": ["reason"],
                    "properties": {"field": NULLABLE_STRING, "reason": {"type": "string"}},
                },
                "FeedResult": {
                    "type": "object",
                    "required": ["topic", "accepted", "rejected", "records"],
                    "properties": {
                        "topic": {"type": "string"},
                        "accepted": {"type": "integer"},
                        "rejected": {"type": "integer"},
                        "failed": {"type": "integer"},
                        "records": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["index", "status"],
                                "properties": {
                                    "index": {"type": "integer"},
                                    "status": {"type": "string", "enum": ["accepted", "rejected", "failed"]},
                                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
                                },
                            },
                        },
                    },
                },
                "CaseSummary": case_summary,
                "CasePage": {
                    "type": "object",
                    "required": ["page", "page_size", "total", "cases"],
                    "properties": {
                        "page": {"type": "integer"},
                        "page_size": {"type": "integer"},
                        "total": {"type": "integer"},
                        "cases": {"type": "array", "items": {"$ref": "#/components/schemas/CaseSummary"}},
                    },
                },
                "CaseDetail": {
                    "allOf": [
                        {"$ref": "#/components/schemas/CaseSummary"},
                        {
                            "type": "object",
                            "required": ["stages", "history", "dispatches"],
                            "properties": {
                                "stages": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "stage": {"type": "string"},
                                            "zh": {"type": "string"},
                                            "done_at": NULLABLE_STRING,
                                            "light": NULLABLE_STRING,
                                        },
                                    },
                                },
                                "history": {"type": "array", "items": {"type": "object"}},
                                "dispatches": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                    ]
                },
                "ActionRequest": {
                    "type": "object",
                    "required": ["action"],
                    "additionalProperties": False,
                    "properties": {
                        "action": {"type": "string", "enum": list(ACTIONS)},
                        "note": NULLABLE_STRING,
                        "photos": {"type": "array", "items": {"type": "string"}, "nullable": True},
                        "extend_minutes": {"type": "integer", "nullable": True, "minimum": 1},
                        "departments": {"type": "array", "items": {"type": "string"}, "nullable": True},
                        "action_id": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 128,
                            "description": "your id: a retry with the same id is applied once",
                        },
                    },
                },
                **{f"Feed_{t.replace('.', '_')}": s for t, s in feeds.items()},
            },
        },
        "paths": {
            "/health": {
                "get": {
                    "summary": "liveness",
                    "responses": {
                        "200": {"description": "up", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "429": COMMON_V1["429"],
                    },
                }
            },
            "/v1/feeds/{topic}": {
                "post": {
                    "summary": "post records to a raw feed (one JSON object, a JSON array, or JSON lines)",
                    "security": [{"apiKey": []}],
                    "parameters": [
                        {
                            "name": "topic",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(FEED_TOPICS)},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {
                                            "oneOf": [
                                                {"$ref": f"#/components/schemas/Feed_{t.replace('.', '_')}"}
                                                for t in feeds
                                            ]
                                        },
                                        {"type": "array", "items": {"type": "object"}},
                                    ]
                                }
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "per-record outcomes; the valid records are in Kafka",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeedResult"}}},
                        },
                        "400": _error("the body is not JSON / JSON lines"),
                        "403": _error("no feed:<topic> scope"),
                        "404": _error("no such feed"),
                        "413": _error("body, record or field too large"),
                        **COMMON_V1,
                    },
                }
            },
            "/v1/cases": {
                "get": {
                    "summary": "the work queue (most urgent first)",
                    "security": [{"apiKey": []}],
                    "parameters": [
                        {"name": "department", "in": "query", "schema": {"type": "string"}},
                        {"name": "stage", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                        {"name": "light", "in": "query", "schema": {"type": "string", "enum": list(LIGHTS)}},
                        {
                            "name": "page",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000000},
                        },
                        {
                            "name": "page_size",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "a page of cases",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CasePage"}}},
                        },
                        "400": _error("bad filter"),
                        "403": _error("not allowed to read these cases"),
                        **COMMON_V1,
                    },
                }
            },
            "/v1/cases/{case_id}": {
                "get": {
                    "summary": "one case: stages with times and lights, deadline, departments, level, history",
                    "security": [{"apiKey": []}],
                    "parameters": [{"name": "case_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {
                            "description": "the case",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CaseDetail"}}},
                        },
                        "403": _error("not allowed to read cases"),
                        "404": _error("no such case"),
                        **COMMON_V1,
                    },
                }
            },
            "/v1/cases/{case_id}/actions": {
                "post": {
                    "summary": "act on a case; the actor is the API key's",
                    "security": [{"apiKey": []}],
                    "parameters": [{"name": "case_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ActionRequest"}}},
                    },
                    "responses": {
                        "202": {
                            "description": "queued on case.actions",
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "required": ["action_id", "case_id", "actor"]}
                                }
                            },
                        },
                        "400": _error("bad action"),
                        "403": _error("the key acts as nobody"),
                        "404": _error("no such case"),
                        **COMMON_V1,
                    },
                }
            },
            "/open311/v2/discovery.{format}": {
                "get": {
                    "summary": "Open311 service discovery",
                    "parameters": [FORMAT],
                    "responses": {"200": _open311("discovery", {"type": "object"}), **_open311_errors(400, 404, 429)},
                }
            },
            "/open311/v2/services.{format}": {
                "get": {
                    "summary": "GeoReport v2 service list",
                    "parameters": [FORMAT, JURISDICTION],
                    "responses": {
                        "200": _open311(
                            "services",
                            {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["service_code", "service_name", "metadata", "type"],
                                },
                            },
                        ),
                        **_open311_errors(400, 404, 429),
                    },
                }
            },
            "/open311/v2/services/{service_code}.{format}": {
                "get": {
                    "summary": "GeoReport v2 service definition",
                    "parameters": [
                        {"name": "service_code", "in": "path", "required": True, "schema": {"type": "string"}},
                        FORMAT,
                        JURISDICTION,
                    ],
                    "responses": {
                        "200": _open311("definition", {"type": "object", "required": ["service_code", "attributes"]}),
                        **_open311_errors(400, 404, 429),
                    },
                }
            },
            "/open311/v2/requests.{format}": {
                "post": {
                    "summary": "GeoReport v2 create a service request (form-encoded, api_key)",
                    "parameters": [FORMAT],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "required": ["service_code"],
                                    "properties": {
                                        "api_key": {"type": "string"},
                                        "jurisdiction_id": {"type": "string"},
                                        "service_code": {"type": "string"},
                                        "lat": {"type": "number"},
                                        "long": {"type": "number"},
                                        "address_string": {"type": "string"},
                                        "address_id": {"type": "string"},
                                        "description": {"type": "string", "maxLength": 4000},
                                        "media_url": {"type": "string"},
                                        "email": {"type": "string"},
                                        "phone": {"type": "string"},
                                        "device_id": {"type": "string"},
                                        "account_id": {"type": "string"},
                                        "first_name": {"type": "string"},
                                        "last_name": {"type": "string"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _open311(
                            "the request id",
                            {"type": "array", "items": {"type": "object", "required": ["service_request_id"]}},
                        ),
                        **_open311_errors(400, 403, 404, 429),
                    },
                },
                "get": {
                    "summary": "GeoReport v2 query requests",
                    "parameters": [
                        FORMAT,
                        JURISDICTION,
                        {"name": "service_request_id", "in": "query", "schema": {"type": "string"}},
                        {"name": "service_code", "in": "query", "schema": {"type": "string"}},
                        {"name": "start_date", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "end_date", "in": "query", "schema": {"type": "string", "format": "date-time"}},
                        {"name": "status", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _open311("requests", {"type": "array", "items": request_item}),
                        **_open311_errors(400, 404, 429),
                    },
                },
            },
            "/open311/v2/requests/{service_request_id}.{format}": {
                "get": {
                    "summary": "GeoReport v2 one request",
                    "parameters": [
                        {"name": "service_request_id", "in": "path", "required": True, "schema": {"type": "string"}},
                        FORMAT,
                        JURISDICTION,
                    ],
                    "responses": {
                        "200": _open311("the request", {"type": "array", "items": request_item}),
                        **_open311_errors(400, 404, 429),
                    },
                }
            },
            "/open311/v2/tokens/{token}.{format}": {
                "get": {
                    "summary": "GeoReport v2 request id of a token",
                    "parameters": [
                        {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
                        FORMAT,
                        JURISDICTION,
                    ],
                    "responses": {
                        "200": _open311(
                            "the id",
                            {"type": "array", "items": {"type": "object", "required": ["service_request_id", "token"]}},
                        ),
                        **_open311_errors(400, 404, 429),
                    },
                }
            },
            "/progress/{service_request_id}": {
                "get": {
                    "summary": "the citizen's progress page (Chinese HTML)",
                    "parameters": [
                        {"name": "service_request_id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}},
                        "404": {"description": "unknown id", "content": {"text/html": {"schema": {"type": "string"}}}},
                        "429": COMMON_V1["429"],
                        "503": COMMON_V1["503"],
                    },
                }
            },
        },
    }
