"""A stack with real trainers: servers, metrics, scheduler and api, trainers started by each test."""

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient

FAST_LOSS_DETECTION = {"TRAINYARD_TRAINER_TIMEOUT_S": "3"}
TRAINER_ENV = {"TRAINYARD_THREADS": "1", "TRAINYARD_HEARTBEAT_INTERVAL_S": "1"}


@pytest.fixture
def client(stack: LocalStack) -> Iterator[TrainyardClient]:
    stack.start_servers()
    stack.start_service("metrics")
    stack.start_service("scheduler", **FAST_LOSS_DETECTION)
    stack.start_service("api", **FAST_LOSS_DETECTION)
    with TrainyardClient(stack.api_url, stack.admin_key) as api:
        yield api


@pytest.fixture
def dataset_id(client: TrainyardClient, tmp_path: Path) -> str:
    files = write_synthetic_coco(tmp_path / "shapes", train_images=8, val_images=2, size=64)
    return str(client.datasets.register("shapes", str(files.root))["id"])


def start_trainer(stack: LocalStack, trainer_id: str, **env: str) -> subprocess.Popen[bytes]:
    return stack.start_service("trainer", name=trainer_id, TRAINYARD_TRAINER_ID=trainer_id, **TRAINER_ENV, **env)


def start_run(client: TrainyardClient, dataset_id: str, epochs: int, **spec: Any) -> dict[str, Any]:
    return dict(client.runs.start({"name": "e2e", "dataset_id": dataset_id, "architecture": "rtmdet-tiny",
                                   "epochs": epochs, "batch_size": 4, "input_size": 64, **spec}))
