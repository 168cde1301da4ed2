"""The contract at /openapi.json, fuzzed by schemathesis against the running gateway (bounded: a few examples
per operation): no server error, status codes, content types and bodies as documented."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures.gateway import GatewayThread, key_of

pytestmark = [pytest.mark.kafka]


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_gateway_keeps_its_contract(gateway: GatewayThread) -> None:
    """Every operation of the document, a handful of generated requests each (one test: the gateway and its
    store start once; schemathesis' pytest plugin for fixtures does not run on this pytest)."""
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @settings(
            max_examples=int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "6")),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case) -> None:
            case.call_and_validate(headers={"X-Api-Key": key_of("everything")}, timeout=30, checks=CHECKS)

        try:
            check()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
    served = sum(
        sample.value
        for metric in gateway.gateway.metrics.requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    print(f"fuzzed {len(operations)} operations with {served:.0f} requests")
    assert served >= 3 * len(operations), served  # the fuzzer really called the gateway


def test_the_document_lists_every_route(gateway: GatewayThread) -> None:
    import requests

    doc = requests.get(f"{gateway.url}/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.") and doc["servers"][0]["url"] == gateway.url
    assert {
        "/v1/feeds/{topic}",
        "/v1/cases",
        "/v1/cases/{case_id}",
        "/v1/cases/{case_id}/actions",
        "/open311/v2/services.{format}",
        "/open311/v2/requests.{format}",
        "/progress/{service_request_id}",
    } <= set(doc["paths"])
    hotline = doc["components"]["schemas"]["Feed_hotline_calls"]
    assert set(hotline["required"]) == {"call_id", "line", "received_at", "caller", "text"}
