"""Placement onto real trainer processes that advertise accelerators chosen by the test."""

import pytest

from tests.e2e.conftest import start_trainer as trainer
from tests.helpers import TERMINAL, wait_status, wait_until
from trainyard.localstack import LocalStack
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training


def test_runs_go_to_trainers_by_accelerator_name_and_count(
    stack: LocalStack, client: TrainyardClient, dataset_id: str
) -> None:
    trainer(stack, "h100-box", TRAINYARD_ACCELERATOR_NAME="GPU_H100", TRAINYARD_ACCELERATOR_COUNT="2")
    trainer(stack, "a100-box", TRAINYARD_ACCELERATOR_NAME="GPU_A100", TRAINYARD_ACCELERATOR_COUNT="1")
    wait_until(lambda: len(client.request("GET", "/v1/trainers")) == 2, 60, "both trainers online")

    def run_on(name: str, count: int) -> dict[str, object]:
        return dict(client.runs.start({"name": f"{name}x{count}", "dataset_id": dataset_id,
                                       "architecture": "rtmdet-tiny", "epochs": 50, "input_size": 64,
                                       "accelerator": {"name": name, "count": count}}))

    too_big = run_on("GPU_H100", 4)
    pair = run_on("GPU_H100", 2)
    single = run_on("GPU_A100", 1)
    wrong = run_on("GPU_V100", 1)
    assert wait_status(client, str(pair["id"]), {"in_progress"}, 60)["trainer_id"] == "h100-box"
    assert wait_status(client, str(single["id"]), {"in_progress"}, 60)["trainer_id"] == "a100-box"
    # A queued run reads "waiting for placement" until the periodic pass writes why it waits.
    def reads(run: dict[str, object], reason: str) -> bool:
        return client.runs.get(str(run["id"]))["pending_reason"] == reason

    wait_until(lambda: reads(too_big, "no trainer online with GPU_H100 x4"), 30, "too_big's reason")
    wait_until(lambda: reads(wrong, "no trainer online with GPU_V100 x1"), 30, "wrong's reason")

    trainers = {t["id"]: t for t in client.request("GET", "/v1/trainers")}
    assert trainers["h100-box"]["free"] == 0 and trainers["h100-box"]["capacity"] == 2
    assert [r["run_id"] for r in trainers["h100-box"]["runs"]] == [pair["id"]]
    assert trainers["a100-box"]["accelerators"][0]["name"] == "GPU_A100"
    assert {t["health"] for t in trainers.values()} == {"online"}

    for run in (pair, single, too_big, wrong):
        client.request("POST", f"/v1/runs/{run['id']}/kill")
    for run in (pair, single, too_big, wrong):
        assert wait_status(client, str(run["id"]), TERMINAL, 15)["status"] == "terminated"
