"""The gateway as a process against the real servers: validation, persistence, queueing."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.catalogue import ARCHITECTURES
from trainyard.localstack import LocalStack
from trainyard.synth import DatasetFiles, write_synthetic_coco


@pytest.fixture
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    stack.start_servers()
    stack.start_service("scheduler")
    stack.start_service("api")
    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.api_url, timeout=30, headers=headers) as client:
        yield client


@pytest.fixture
def files(tmp_path: Path) -> DatasetFiles:
    return write_synthetic_coco(tmp_path / "shapes", train_images=4, val_images=2, size=64)


def problem_of(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def register(api: httpx.Client, root: Path) -> httpx.Response:
    return api.post("/v1/datasets", json={"name": "shapes", "path": str(root)})


def test_dataset_path_that_does_not_exist_is_named(api: httpx.Client, tmp_path: Path) -> None:
    body = problem_of(register(api, tmp_path / "nowhere"))
    assert body["detail"] == f"path: directory {tmp_path / 'nowhere'} does not exist"


def test_relative_dataset_path_is_refused(api: httpx.Client) -> None:
    body = problem_of(api.post("/v1/datasets", json={"name": "x", "path": "data/shapes"}))
    assert "must be absolute" in body["detail"] and body["errors"][0]["field"] == "path"


def test_bad_annotation_file_is_named_with_its_problem(api: httpx.Client, files: DatasetFiles) -> None:
    files.val_annotations.write_text("{ not json")
    body = problem_of(register(api, files.root))
    assert body["detail"].startswith(f"{files.val_annotations}: invalid JSON at line 1")
    assert body["errors"][0]["file"] == str(files.val_annotations)


def test_box_outside_image_is_named(api: httpx.Client, files: DatasetFiles) -> None:
    data = json.loads(files.train_annotations.read_text())
    data["annotations"][0]["bbox"] = [60, 0, 10, 10]
    files.train_annotations.write_text(json.dumps(data))
    body = problem_of(register(api, files.root))
    assert "lies outside its 64x64 image" in body["detail"]
    assert body["errors"][0]["field"] == "annotations[0].bbox"


def test_run_on_a_dataset_broken_since_registration_is_refused_before_queueing(
    api: httpx.Client, files: DatasetFiles
) -> None:
    dataset_id = register(api, files.root).json()["id"]
    spec = {"name": "r", "dataset_id": dataset_id, "architecture": "rtmdet-tiny"}
    first = json.loads(files.val_annotations.read_text())["images"][0]
    (files.val_images / first["file_name"]).unlink()
    body = problem_of(api.post("/v1/runs", json=spec))
    assert body["detail"] == (f"dataset {dataset_id} changed since it was registered and is no longer valid: "
                              f"{files.val_images / first['file_name']}: image file does not exist")
    assert body["errors"][0]["image_id"] == first["id"]
    assert api.get("/v1/runs").json()["items"] == []


def test_nothing_is_stored_for_a_rejected_dataset(api: httpx.Client, files: DatasetFiles) -> None:
    files.train_annotations.write_text("[]")
    problem_of(register(api, files.root))
    assert api.get("/v1/datasets").json()["items"] == []


def test_bad_run_specs_name_the_field(api: httpx.Client, files: DatasetFiles) -> None:
    dataset_id = register(api, files.root).json()["id"]
    base = {"name": "r", "dataset_id": dataset_id, "architecture": "rtmdet-tiny", "epochs": 2}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"architecture": "yolo9000"}, "architecture", "unknown architecture 'yolo9000'"),
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"accelerator": {"name": "h100", "count": 1}}, "accelerator.name", "should match pattern"),
        ({"batch_size": "four"}, "batch_size", "valid integer"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
    ]
    for change, field, message in cases:
        body = problem_of(api.post("/v1/runs", json={**base, **change}))
        assert body["errors"][0]["field"] == field, body
        assert message in body["errors"][0]["message"], body
    body = problem_of(api.post("/v1/runs", json={**base, "dataset_id": "f" * 32}))
    assert body["detail"] == f"dataset_id: no dataset with id {'f' * 32!r}"
    assert api.get("/v1/runs").json()["items"] == []


def test_unknown_ids_are_404_problems(api: httpx.Client) -> None:
    assert problem_of(api.get(f"/v1/runs/{'a' * 32}"), 404)["detail"] == f"no run with id {'a' * 32!r}"
    assert problem_of(api.get("/v1/runs/not-an-id"), 422)["errors"][0]["field"].endswith("run_id")


def test_created_run_is_queued_with_the_reason_it_waits(api: httpx.Client, files: DatasetFiles) -> None:
    dataset = register(api, files.root)
    assert dataset.status_code == 201, dataset.text
    assert dataset.json()["classes"] == list(files.classes)
    spec = {"name": "wait", "dataset_id": dataset.json()["id"], "architecture": "rtmdet-tiny",
            "accelerator": {"name": "GPU_H100", "count": 2}}
    created = api.post("/v1/runs", json=spec)
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["status"] == "created" and run["spec"]["accelerator"] == {"name": "GPU_H100", "count": 2}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        run = api.get(f"/v1/runs/{run['id']}").json()
        if run["pending_reason"] == "no trainer online with GPU_H100 x2":
            break
        time.sleep(0.2)
    assert run["status"] == "pending"
    assert run["pending_reason"] == "no trainer online with GPU_H100 x2"
    assert [item["id"] for item in api.get("/v1/runs", params={"status": "pending"}).json()["items"]] == [run["id"]]


def test_architectures_list_the_whole_catalogue_with_tunable_parameters(api: httpx.Client) -> None:
    listed = api.get("/v1/architectures")
    assert listed.status_code == 200, listed.text
    architectures = {a["id"]: a for a in listed.json()}
    assert list(architectures) == list(ARCHITECTURES)
    r50 = architectures["faster-rcnn-r50"]
    assert (r50["backbone"], r50["single_stage"], r50["optimizer"], r50["backbone_stages"]) == (
        "ResNet-50", False, "sgd", 4)
    frozen = next(p for p in r50["parameters"] if p["name"] == "num_frozen_stages")
    assert (frozen["default"], frozen["minimum"], frozen["maximum"]) == (0, 0, 4)
