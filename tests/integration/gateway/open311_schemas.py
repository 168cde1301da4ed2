"""The Open311 project's published JSON Schemas for GeoReport v2 (tests/data/open311/, see SOURCE.md)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.paths import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "tests" / "data" / "open311"
FILES = ("request", "requests", "service", "services", "service-definition")


@cache
def _registry() -> Registry:
    resources = [
        (
            f"{name}.json",
            Resource.from_contents(json.loads((SCHEMA_DIR / f"{name}.json").read_text()), default_specification=DRAFT7),
        )
        for name in FILES
    ]
    return Registry().with_resources(resources)


def _checker() -> FormatChecker:
    checker = FormatChecker()
    # the formats this test relies on must really be checked (they need rfc3339-validator / rfc3986-validator)
    assert "date-time" in checker.checkers and "uri" in checker.checkers, sorted(checker.checkers)
    return checker


def validate(name: str, document: Any) -> None:
    """Raise jsonschema.ValidationError unless ``document`` fits the published schema ``name``."""
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text())
    Draft7Validator(schema, registry=_registry(), format_checker=_checker()).validate(document)


def validate_swagger(definition: str, document: Any) -> None:
    """Against a definition of the published swagger.json (RequestResponse, TokenResponse), as an array."""
    swagger = json.loads((SCHEMA_DIR / "swagger.json").read_text())
    schema = {"type": "array", "items": {"$ref": f"#/definitions/{definition}"}, "definitions": swagger["definitions"]}
    Draft7Validator(schema, format_checker=_checker()).validate(document)


def validate_errors(document: Any) -> None:
    """The spec's error list (no published schema): [{code, description}, ...]."""
    assert isinstance(document, list) and document, document
    for error in document:
        assert set(error) == {"code", "description"}, error
        assert isinstance(error["code"], int) and isinstance(error["description"], str) and error["description"]
