"""The front door: an HTTP gateway (aiohttp) in front of the pipeline.

* ``POST /v1/feeds/<topic>``: any raw feed as JSON, validated with the worker's schemas, produced to Kafka;
* ``/v1/cases``: the departments' work API (queue, case, actions → ``case.actions``);
* ``/open311/v2/``: Open311 GeoReport v2 (JSON and XML) for citizens' apps;
* ``/progress/<service_request_id>``: the citizen's progress page (事项进度查询);
* ``/openapi.json``: the contract.

One module per concern: keys (API keys and scopes), limits (rate limits), producer (Kafka), feeds,
readmodel (ClickHouse reads), cases, open311, progress, openapi, app (assembly and serving).
"""
