"""An evaluation's predictions through the real services, without training: the trainer's part (the COCO
results JSON in the artifact store, named on epoch.logged, metrics with undefined values) is played by the
test; the metrics service stores the name with the epoch, the api serves the file, the clients and the CLI
fetch it, and undefined metrics never win nor crash."""

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from faststream.nats import NatsBroker
from typer.testing import CliRunner

from shared.artifacts import Artifacts, predictions_name
from shared.bus import publish_event
from shared.events import EpochLogged
from shared.subjects import Subjects
from tests.helpers import problem_of, record_assignment
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import AsyncTrainyardClient, NotFoundError, TrainyardClient
from trainyard_client.cli import app


def detections(epoch: int) -> list[dict[str, Any]]:
    return [{"image_id": 1, "category_id": 1, "bbox": [1.5, 2.0, 10.0, 12.25], "score": 0.5 + epoch / 10}]


async def log_epoch(broker: NatsBroker, subjects: Subjects, artifacts: Artifacts, run_id: str, epoch: int,
                    metrics: dict[str, float | None]) -> None:
    name = predictions_name(run_id, epoch)
    await artifacts.upload_bytes(name, json.dumps(detections(epoch)).encode())
    await publish_event(broker, subjects, subjects.epoch_logged("t1"), EpochLogged(
        run_id=run_id, attempt=1, epoch=epoch, total_epochs=3, losses={"loss_cls": 1.0}, loss=1.0,
        learning_rate=0.01, epoch_time_s=1.0, metrics=metrics, predictions=name))


async def test_predictions_are_served_and_undefined_metrics_never_win(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects], tmp_path: Path
) -> None:
    broker, subjects = bus
    for service in ("metrics", "api"):
        stack.start_service(service)
    artifacts = await Artifacts.open(broker, subjects)
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    async with AsyncTrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = await client.datasets.register("shapes", str(data))
        run_id = (await client.runs.start(name="p", dataset_id=dataset["id"], architecture="rtmdet-tiny"))["id"]
        await record_assignment(stack, (run_id,), "t1")
        with pytest.raises(NotFoundError, match="none of its epochs has been evaluated yet"):
            await client.runs.predictions(run_id)

        await log_epoch(broker, subjects, artifacts, run_id, 1, {"bbox_mAP": None, "bbox_mAP_l": None})
        await log_epoch(broker, subjects, artifacts, run_id, 2, {"bbox_mAP": 0.0, "bbox_mAP_l": None})
        for _ in range(100):
            if len(await client.runs.logs(run_id, "epoch")) == 2:
                break
            await asyncio.sleep(0.2)
        assert await client.runs.predictions(run_id, 1) == detections(1)
        assert await client.runs.predictions(run_id) == detections(2)  # the latest evaluation
        with pytest.raises(NotFoundError) as missing:
            await client.runs.predictions(run_id, 3)
        assert missing.value.detail == (f"run {run_id} has no predictions for epoch 3: evaluated epochs with "
                                        "predictions are [1, 2]")

        # Undefined (null) is served as null and never the best epoch; a metric only ever null has none.
        logs = await client.runs.logs(run_id, "epoch")
        assert logs[0]["metrics"] == {"bbox_mAP": None, "bbox_mAP_l": None}
        best = await client.runs.best_epoch(run_id)
        assert best["epoch"]["epoch"] == 2 and best["value"] == 0.0
        with pytest.raises(NotFoundError):
            await client.runs.best_epoch(run_id, "bbox_mAP_l")

    headers = {"Authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers) as api:
        answer = await api.get(f"/v1/runs/{run_id}/predictions", params={"epoch": 1})
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        assert answer.headers["x-trainyard-epoch"] == "1"
        problem_of(await api.get(f"/v1/runs/{'0' * 32}/predictions"), 404)
        await artifacts.delete(predictions_name(run_id, 1))  # gone from the store: 410, not a server error
        gone = problem_of(await api.get(f"/v1/runs/{run_id}/predictions", params={"epoch": 1}), 410)
        assert "no longer in the artifact store" in gone["detail"]
    with TrainyardClient(stack.api_url, stack.admin_key) as sync_client:
        assert sync_client.runs.predictions(run_id, 2) == detections(2)

    cli = CliRunner(env={"TRAINYARD_API_URL": stack.api_url, "TRAINYARD_API_KEY": stack.admin_key,
                         "COLUMNS": "200"})
    out = tmp_path / "epoch_2.bbox.json"
    written = cli.invoke(app, ["runs", "predictions", run_id, "--epoch", "2", "--out", str(out)])
    assert written.exit_code == 0, written.output
    assert json.loads(out.read_text()) == detections(2)
    printed = cli.invoke(app, ["runs", "predictions", run_id])
    assert printed.exit_code == 0 and json.loads(printed.output) == detections(2), printed.output
    table = cli.invoke(app, ["runs", "logs", run_id])  # an undefined metric prints as "-", it does not crash
    assert table.exit_code == 0, table.output
