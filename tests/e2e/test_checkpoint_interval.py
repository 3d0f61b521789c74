"""checkpoint.interval through the whole platform: what a real CPU training stores."""

from typing import Any

import pytest

from tests.conftest import service_log
from tests.e2e.conftest import start_run, start_trainer
from tests.helpers import wait_status
from trainyard.localstack import LocalStack
from trainyard_client import TrainyardClient

pytestmark = pytest.mark.training


def finished(client: TrainyardClient, stack: LocalStack, run: dict[str, Any]) -> dict[str, Any]:
    done = wait_status(client, run["id"], {"success", "failed", "aborted"}, timeout=300)
    assert done["status"] == "success", (done, service_log(stack, "trainer")[-3000:])
    return done


def test_an_interval_of_2_stores_epochs_2_and_4_and_a_best_run_keeps_its_best_epoch(
        stack: LocalStack, client: TrainyardClient, dataset_id: str) -> None:
    start_trainer(stack, "cpu-trainer-1")
    # keep 10: retention deletes nothing here, so what is stored is every checkpoint the child saved.
    latest = start_run(client, dataset_id, 4, checkpoint={"interval": 2, "keep": 10})
    best = start_run(client, dataset_id, 4, checkpoint={"strategy": "best", "metric": "bbox_mAP", "interval": 2,
                                                       "keep": 10})

    finished(client, stack, latest)
    stored = client.runs.checkpoints(latest["id"])
    assert [c["epoch"] for c in stored["items"]] == [2, 4], stored
    assert stored["best"] is None and (stored["resume_from"] or {"epoch": 0})["epoch"] == 4
    assert [e["epoch"] for e in client.runs.logs(latest["id"], "epoch")] == [1, 2, 3, 4]
    [model] = [m for m in client.models.list()["items"] if m["run"]["id"] == latest["id"]]
    assert model["epochs"] == 4

    finished(client, stack, best)
    logs = client.runs.logs(best["id"], "epoch")
    assert [e["epoch"] for e in logs] == [1, 2, 3, 4]
    # Each new best by bbox_mAP (the first evaluation always is one; ties keep the earlier epoch).
    new_bests, top = [], None
    for epoch in logs:
        value = epoch["metrics"]["bbox_mAP"]
        if value is not None and (top is None or value > top):
            new_bests.append(epoch["epoch"])
            top = value
    stored = client.runs.checkpoints(best["id"])
    assert [c["epoch"] for c in stored["items"]] == sorted({2, 4, *new_bests}), (stored, new_bests)
    assert 1 in new_bests, "epoch 1, off the interval, was a new best: stored as one"
    assert stored["best"] is not None and stored["best"]["epoch"] == new_bests[-1]
    assert [c["best"] for c in stored["items"]] == [c["epoch"] == new_bests[-1] for c in stored["items"]]
    [model] = [m for m in client.models.list()["items"] if m["run"]["id"] == best["id"]]
    assert model["best_epoch"] == new_bests[-1]
