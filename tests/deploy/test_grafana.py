"""deploy/grafana: the dashboards load, their panels are well formed, and every query names
a data source the provisioning creates, a metric (see tests/integration/test_service_metrics.py)
or an API route and field that exist."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI

from services.api.main import create_app
from shared.settings import ApiSettings
from tests.dashboards import DEPLOY, dashboards, metric_names, panels

PROVISIONING = DEPLOY / "grafana" / "provisioning"
PANEL_TYPES = {"stat", "timeseries", "table", "trend", "state-timeline", "bargauge", "gauge", "text", "row",
               "barchart", "piechart", "traces", "nodeGraph"}
INFINITY = "yesoreyeram-infinity-datasource"


def _datasources() -> dict[str, str]:
    """uid -> type of every provisioned data source."""
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "trainyard.yaml").read_text())
    return {d["uid"]: d["type"] for d in provisioned["datasources"]}


@pytest.fixture(scope="module")
def api() -> FastAPI:
    return create_app(ApiSettings())


def test_the_three_dashboards_exist_with_unique_uids() -> None:
    boards = dashboards()
    assert set(boards) == {"overview.json", "trainers.json", "run.json"}
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for board in boards.values():
        assert board["title"] and isinstance(board["schemaVersion"], int) and board["panels"]


@pytest.mark.parametrize("name", ["overview.json", "trainers.json", "run.json"])
def test_panels_are_well_formed_and_use_provisioned_data_sources(name: str) -> None:
    board = dashboards()[name]
    datasources = _datasources()
    ids = [p["id"] for p in panels(board)]
    assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
    variables = {v["name"] for v in board["templating"]["list"]}
    occupied: set[tuple[int, int]] = set()
    for panel in panels(board):
        where = f"{name} / {panel['title']}"
        assert panel["type"] in PANEL_TYPES, where
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
        columns, rows = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        cells = {(x, y) for x in columns for y in rows}
        assert not cells & occupied, f"{where} overlaps another panel"
        occupied |= cells
        source = panel["datasource"]
        assert datasources.get(source["uid"]) == source["type"], f"{where}: no data source {source}"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids), where
        for target in panel["targets"]:
            assert datasources.get(target["datasource"]["uid"]) == target["datasource"]["type"], where
            text = str(target)
            used = set(re.findall(r"\$\{?(\w+)", text)) - {"__rate_interval", "__range", "__interval"}
            assert used <= variables, f"{where}: undefined variables {used - variables}"
            if target["datasource"]["type"] == "prometheus":
                assert target["expr"] and metric_names(target["expr"]), where


def _schema(api: FastAPI, path: str) -> dict[str, Any]:
    """The JSON schema of a GET route's 200 response, references resolved."""
    spec = api.openapi()
    schema: dict[str, Any] = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    return _resolve(spec, schema)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for key in ("anyOf", "oneOf"):
        if key in schema:  # an optional field: the non-null branch
            schema = next(_resolve(spec, s) for s in schema[key] if s.get("type") != "null")
    return schema


def _field_exists(spec: dict[str, Any], schema: dict[str, Any], selector: str) -> bool:
    for part in selector.split("."):
        schema = _resolve(spec, schema)
        properties = schema.get("properties")
        if properties is not None:
            if part not in properties:
                return False
            schema = properties[part]
        else:
            # A dict such as losses or metrics: any key may appear; a scalar has no fields.
            return bool(schema.get("type") == "object")
    return True


def test_run_view_reads_routes_and_fields_the_api_has(api: FastAPI) -> None:
    """The training curves come from the API through Infinity: every URL is a real GET route,
    every column a field of its response."""
    spec = api.openapi()
    board = dashboards()["run.json"]
    api_url = next(v["query"] for v in board["templating"]["list"] if v["name"] == "api_url")
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "trainyard.yaml").read_text())["datasources"]
    infinity = next(d for d in provisioned if d["type"] == INFINITY)
    assert api_url in infinity["jsonData"]["allowedHosts"]
    checked = 0
    for panel in panels(board):
        for target in panel["targets"]:
            if target["datasource"]["type"] != INFINITY:
                continue
            assert target["url"].startswith("${api_url}/")
            path = re.sub(r"\$\{(\w+)\}", lambda m: "{" + m.group(1) + "}", target["url"].removeprefix("${api_url}"))
            assert path in spec["paths"] and "get" in spec["paths"][path], f"{panel['title']}: no route GET {path}"
            schema = _schema(api, path)
            if target["root_selector"]:
                schema = _resolve(spec, _resolve(spec, schema["properties"][target["root_selector"]])["items"])
            for column in target["columns"]:
                assert _field_exists(spec, schema, column["selector"]), f"{panel['title']}: {path} has no {column}"
            checked += 1
    assert checked >= 5
    titles = {p["title"] for p in panels(board)}
    assert {"Losses per epoch", "COCO mAP per epoch"} <= titles


def test_dashboards_provider_points_at_the_dashboards() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "trainyard.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and Path(provider["options"]["path"]).name == "trainyard"
