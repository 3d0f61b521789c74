"""Datasets by server path: confined to the configured roots, limits answered with 4xx, memory bounded."""

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import http, private_stack, problem_of
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One dataset root the API may read, and a directory beside it that it may not."""
    base = tmp_path_factory.mktemp("boundaries")
    (base / "root").mkdir()
    (base / "outside").mkdir()
    return base / "root", base / "outside"


@pytest.fixture(scope="module")
def stack(servers: LocalStack, tmp_path_factory: pytest.TempPathFactory,
          roots: tuple[Path, Path]) -> Iterator[LocalStack]:
    stack = private_stack(servers, tmp_path_factory.mktemp("boundary-stack"))
    stack.start_service("api", TRAINYARD_DATASET_ROOTS=str(roots[0]), TRAINYARD_MAX_ANNOTATION_BYTES="1000000")
    yield stack
    stack.stop()


@pytest.fixture
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    with http(stack, stack.admin_key) as client:
        yield client


def rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def register(api: httpx.Client, path: str, **extra: str) -> httpx.Response:
    return api.post("/v1/datasets", json={"name": "d", "path": path, **extra})


def test_a_path_outside_the_roots_is_refused_the_same_whether_it_exists_or_not(
    api: httpx.Client, roots: tuple[Path, Path]
) -> None:
    _, outside = roots
    write_synthetic_coco(outside / "real", train_images=2, val_images=1, size=64)
    answers = [problem_of(register(api, path), 422) for path in
               (str(outside / "real"), str(outside / "missing"), "/etc", "/proc/self")]
    details = {a["detail"].replace(a["errors"][0]["value"], "<path>") for a in answers}
    assert len(details) == 1, details
    assert "is not inside a dataset root" in details.pop()


def test_sub_paths_and_symlinks_out_of_the_root_are_refused(api: httpx.Client, roots: tuple[Path, Path]) -> None:
    root, outside = roots
    files = write_synthetic_coco(root / "escape", train_images=2, val_images=1, size=64)
    body = problem_of(register(api, str(files.root), train_annotations="/etc/passwd"), 422)
    assert body["errors"][0]["field"] == "train_annotations"
    body = problem_of(register(api, str(files.root), val_annotations="../../../../etc/passwd"), 422)
    assert body["errors"][0]["field"] == "val_annotations"
    os.symlink(outside, root / "link")
    problem_of(register(api, str(root / "link")), 422)


def test_an_image_file_name_outside_the_root_is_refused_by_name(api: httpx.Client, roots: tuple[Path, Path]) -> None:
    root, outside = roots
    (outside / "secret").mkdir()
    Image.new("RGB", (64, 64)).save(outside / "secret" / "secret.png")
    files = write_synthetic_coco(root / "previews", train_images=2, val_images=1, size=64)
    data = json.loads(files.val_annotations.read_text())
    data["images"][0]["file_name"] = "../../../../outside/secret/secret.png"
    files.val_annotations.write_text(json.dumps(data))
    body = problem_of(register(api, str(files.root)), 422)
    assert "'../../../../outside/secret/secret.png' resolves outside the dataset's root" in body["detail"]
    assert api.get("/v1/datasets").json()["items"] == []


def test_nested_bomb_and_oversize_inputs_get_422_with_the_api_memory_bounded(
    stack: LocalStack, api: httpx.Client, roots: tuple[Path, Path]
) -> None:
    root, _ = roots
    api_pid = stack.processes["api"].pid
    before = rss_bytes(api_pid)

    nested = write_synthetic_coco(root / "nested", train_images=2, val_images=1, size=64)
    nested.train_annotations.write_text("[" * 200_000 + "]" * 200_000)
    assert "over the limit of 32" in problem_of(register(api, str(nested.root)), 422)["detail"]

    bomb = write_synthetic_coco(root / "bomb", train_images=2, val_images=1, size=64)
    name = json.loads(bomb.train_annotations.read_text())["images"][0]["file_name"]
    Image.new("1", (20000, 20000)).save(bomb.train_images / name)
    detail = problem_of(register(api, str(bomb.root)), 422)["detail"]
    assert name in detail and "over the limit of 40000000 pixels" in detail

    oversize = write_synthetic_coco(root / "oversize", train_images=2, val_images=1, size=64)
    with oversize.train_annotations.open("r+b") as handle:
        handle.truncate(512 * 1024 * 1024)  # sparse: 512 MiB on paper, nothing on disk
    detail = problem_of(register(api, str(oversize.root)), 422)["detail"]
    assert str(oversize.train_annotations) in detail
    assert "536870912 bytes, over the limit of 1000000 bytes" in detail

    # Refused before reading: the API did not take in the 512 MiB (nor the bomb's pixels).
    assert rss_bytes(api_pid) - before < 100 * 1024 * 1024


def test_problems_beyond_those_listed_are_counted(api: httpx.Client, roots: tuple[Path, Path]) -> None:
    files = write_synthetic_coco(roots[0] / "many", train_images=2, val_images=1, size=64)
    data = json.loads(files.train_annotations.read_text())
    data["annotations"] = [{"id": i, "image_id": -1} for i in range(20_000)]
    files.train_annotations.write_text(json.dumps(data))
    body = problem_of(register(api, str(files.root)), 422)
    assert body["detail"].endswith("(and 19999 more problems)")
    assert len(body["errors"]) == 100

