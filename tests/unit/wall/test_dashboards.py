"""Grafana provisioning and dashboards: valid structure, unique ids, datasources that resolve."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.wall import queries as wall
from tests.paths import REPO_ROOT

GRAFANA = REPO_ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def load_build_module() -> Any:
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def provisioned_datasources() -> dict[str, str]:
    docs = [yaml.safe_load(p.read_text("utf-8")) for p in (GRAFANA / "provisioning" / "datasources").glob("*.yaml")]
    return {ds["uid"]: ds["type"] for doc in docs for ds in doc["datasources"]}


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in board["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows
    return panels


def test_the_five_dashboards_and_case_detail_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == {"citygrid-wall", "citygrid-league", "citygrid-field", "citygrid-sensors",
                                            "citygrid-pipeline", "citygrid-case"}


def test_committed_json_is_what_build_py_generates() -> None:
    build = load_build_module()
    generated = build.build()
    for path in DASHBOARDS:
        assert path.read_text("utf-8") == build.render(generated[path.stem]), f"{path.name} stale: run grafana/build.py"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_structure(path: Path) -> None:
    board = json.loads(path.read_text("utf-8"))
    assert board["uid"] == path.stem and board["title"] and isinstance(board["schemaVersion"], int)
    panels = all_panels(board)
    assert panels, "a dashboard without panels"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    datasources = provisioned_datasources()
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        assert panel["title"] and panel["type"] in {"stat", "table", "timeseries", "barchart", "piechart", "geomap"}
        refs = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
        for ref in refs:
            assert datasources.get(ref["uid"]) == ref["type"], f"{panel['title']}: unresolved datasource {ref}"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            if target["datasource"]["type"] == "grafana-clickhouse-datasource":
                assert target["rawSql"] in {q.sql for q in wall.QUERIES.values()}, \
                    "panel SQL not from streams.wall.queries"
            else:
                assert target["expr"].count("citygrid_") >= 1


def test_every_wall_query_is_on_a_dashboard() -> None:
    used = {t.get("rawSql") for p in DASHBOARDS for panel in all_panels(json.loads(p.read_text("utf-8")))
            for t in panel["targets"]}
    missing = [name for name, q in wall.QUERIES.items() if q.sql not in used]
    assert not missing


def test_geomap_reads_lat_lon_of_open_cases() -> None:
    board = json.loads((GRAFANA / "dashboards" / "citygrid-wall.json").read_text("utf-8"))
    geomap = [p for p in board["panels"] if p["type"] == "geomap"]
    assert len(geomap) == 1
    location = geomap[0]["options"]["layers"][0]["location"]
    assert (location["latitude"], location["longitude"]) == ("lat", "lon")
    assert geomap[0]["targets"][0]["rawSql"] == wall.QUERIES["open_cases_map"].sql


def test_overdue_list_links_to_the_case_dashboard() -> None:
    league = json.loads((GRAFANA / "dashboards" / "citygrid-league.json").read_text("utf-8"))
    case_board = json.loads((GRAFANA / "dashboards" / "citygrid-case.json").read_text("utf-8"))
    overdue = next(p for p in league["panels"] if p["targets"][0]["rawSql"] == wall.QUERIES["overdue_cases"].sql)
    links = [link for o in overdue["fieldConfig"]["overrides"] if o["matcher"]["options"] == "case_id"
             for prop in o["properties"] for link in prop["value"]]
    assert links and links[0]["url"].startswith(f"/d/{case_board['uid']}/")
    assert "var-case_id=" in links[0]["url"]
    assert [v["name"] for v in case_board["templating"]["list"]] == ["case_id"]


def test_dashboard_provider_yaml() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "citygrid.yaml").read_text("utf-8"))
    assert doc["apiVersion"] == 1 and doc["providers"][0]["type"] == "file"


def test_clickhouse_panels_use_no_macro_18_16_cannot_run() -> None:
    for query in wall.QUERIES.values():
        for bad in ("$__timeInterval", "_ms(", "$__fromTime_ms", "$__toTime_ms"):
            assert bad not in query.sql, f"{query.name} uses {bad}"
