"""Console sign-in against the gateway as a process: session cookie, CSRF on writes, one-time links,
revocation ending the session; and the run comparison endpoint's input checks."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient
from typer.testing import CliRunner

from shared.apikeys import Scope
from shared.console import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, new_token, signin_path, signin_token_document
from shared.store import CONSOLE_SIGNIN_TOKENS, EPOCHS
from tests.helpers import create_key, http, problem_of
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient
from trainyard_client.cli import app


def _signed_in(stack: LocalStack, key: str) -> httpx.Client:
    browser = httpx.Client(base_url=stack.api_url, timeout=30)
    answer = browser.post("/console/session", json={"key": key})
    assert answer.status_code == 200, answer.text
    assert "httponly" in answer.headers["set-cookie"].lower()
    assert "samesite=strict" in answer.headers["set-cookie"].lower()
    return browser


def test_session_cookie_csrf_and_revocation(stack: LocalStack) -> None:
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    reader_key = create_key(stack, "default", [Scope.RUNS_READ], name="reader")
    browser = _signed_in(stack, reader_key)
    assert browser.get("/v1/keys/me").json()["scopes"] == ["runs:read"]
    assert browser.get("/v1/runs").status_code == 200
    # A write with the cookie but without the CSRF header is refused before its scope is looked at.
    problem_of(browser.post("/v1/datasets", json={}), 403)
    csrf = browser.cookies[CSRF_COOKIE]
    # With the header, the key's scopes decide: a read-only key may not write.
    assert "datasets:write" in problem_of(browser.post("/v1/datasets", json={"name": "x", "path": "/nope"},
                                                       headers={CSRF_HEADER: csrf}), 403)["detail"]
    problem_of(browser.post("/console/session", json={"key": "ty_bad"}), 422)
    problem_of(browser.post("/console/session", content=b"key=x",
                            headers={"content-type": "application/x-www-form-urlencoded"}), 415)
    key_id = browser.get("/v1/keys/me").json()["key_id"]
    assert admin.delete(f"/v1/keys/{key_id}").status_code == 200
    problem_of(browser.get("/v1/runs"), 401)


def test_one_time_link_works_once(stack: LocalStack) -> None:
    stack.start_servers()
    stack.start_service("api")
    token = new_token()
    key_id = stack.admin_key.split("_")[1]
    assert stack.mongo_url
    client: MongoClient[dict[str, Any]] = MongoClient(stack.mongo_url)
    with client:
        client[stack.mongo_db][CONSOLE_SIGNIN_TOKENS].insert_one(
            signin_token_document(token, key_id, "default", now=datetime.now(UTC)))
    browser = httpx.Client(base_url=stack.api_url, timeout=30)
    first = browser.get(signin_path(token))
    assert first.status_code == 303 and first.headers["location"] == "/console/#/runs"
    assert browser.cookies.get(SESSION_COOKIE)
    assert browser.get("/v1/keys/me").json()["key_id"] == key_id
    again = httpx.Client(base_url=stack.api_url, timeout=30)
    assert "already used" in problem_of(again.get(signin_path(token)), 400)["detail"]
    csrf = browser.cookies[CSRF_COOKIE]
    assert browser.request("DELETE", "/console/session", headers={CSRF_HEADER: csrf}).status_code == 204
    problem_of(browser.get("/v1/keys/me"), 401)


def test_local_stack_link_signs_in(stack: LocalStack) -> None:
    stack.start_servers()
    stack.start_service("api")
    link = stack.signin_link()
    browser = httpx.Client(timeout=30)
    assert browser.get(link).status_code == 303
    assert browser.get(f"{stack.api_url}/v1/keys/me").json()["scopes"] == ["admin"]
    stack.write_state()
    printed = CliRunner().invoke(app, ["ui", "--data-dir", str(stack.data_dir), "--no-open"])
    assert printed.exit_code == 0, printed.output
    link = printed.output.split("(one-time): ")[1].split()[0]
    assert httpx.Client(timeout=30).get(link).status_code == 303


def test_compare_checks_its_ids(stack: LocalStack) -> None:
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    problem_of(admin.get("/v1/runs/compare", params={"ids": "a" * 32}), 422)
    problem_of(admin.get("/v1/runs/compare", params={"ids": f"{'a' * 32},{'a' * 32}"}), 422)
    problem_of(admin.get("/v1/runs/compare", params={"ids": "x,y"}), 422)
    problem_of(admin.get("/v1/runs/compare", params={"ids": f"{'a' * 32},{'b' * 32}"}), 404)


def test_compare_names_differing_spec_fields(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    files = write_synthetic_coco(tmp_path / "shapes", train_images=4, val_images=2, size=64)
    dataset = admin.post("/v1/datasets", json={"name": "shapes", "path": str(files.root)}).json()["id"]
    ids = [admin.post("/v1/runs", json={"name": f"r{epochs}", "dataset_id": dataset, "architecture": "rtmdet-tiny",
                                        "epochs": epochs}).json()["id"] for epochs in (1, 2)]
    answer = admin.get("/v1/runs/compare", params={"ids": ",".join(ids)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [run["id"] for run in body["runs"]] == ids
    assert {d["field"]: d["values"] for d in body["spec_differences"]} == {"epochs": [1, 2]}
    assert [c["run_id"] for c in body["config_differences"]] == ids[1:]
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        assert client.runs.compare(ids)["spec_differences"] == body["spec_differences"]
    printed = CliRunner().invoke(app, ["runs", "compare", *ids, "--api-url", stack.api_url,
                                       "--api-key", stack.admin_key])
    assert printed.exit_code == 0, printed.output
    assert "differs  epochs: 1 | 2" in printed.output


def test_compare_serves_metrics_coco_leaves_undefined(stack: LocalStack, tmp_path: Path) -> None:
    """An evaluation without ground truth of some size stores null for it (-1 in COCO); compare
    answers with null there rather than failing (found by the console's browser test)."""
    stack.start_servers()
    stack.start_service("api")
    admin = http(stack, stack.admin_key)
    files = write_synthetic_coco(tmp_path / "shapes", train_images=4, val_images=2, size=64)
    dataset = admin.post("/v1/datasets", json={"name": "shapes", "path": str(files.root)}).json()["id"]
    ids = [admin.post("/v1/runs", json={"name": f"r{i}", "dataset_id": dataset, "architecture": "rtmdet-tiny",
                                        "epochs": 1}).json()["id"] for i in (1, 2)]
    assert stack.mongo_url
    client: MongoClient[dict[str, Any]] = MongoClient(stack.mongo_url)
    with client:
        client[stack.mongo_db][EPOCHS].insert_many([
            {"run_id": run_id, "epoch": 1, "attempt": 1, "total_epochs": 1, "loss": 2.0 + i, "losses": {},
             "learning_rate": 0.004, "epoch_time_s": 1.0, "logged_at": datetime.now(UTC),
             "metrics": {"bbox_mAP": 0.1 * i, "bbox_mAP_50": 0.2 * i, "bbox_mAP_l": None}}
            for i, run_id in enumerate(ids)])
    answer = admin.get("/v1/runs/compare", params={"ids": ",".join(ids)})
    assert answer.status_code == 200, answer.text
    runs = answer.json()["runs"]
    assert [run["final_metrics"]["bbox_mAP_l"] for run in runs] == [None, None]
    assert [run["best_metrics"]["bbox_mAP_50"] for run in runs] == [{"value": 0.0, "epoch": 1},
                                                                   {"value": 0.2, "epoch": 1}]
    assert "bbox_mAP_l" not in runs[0]["best_metrics"]
