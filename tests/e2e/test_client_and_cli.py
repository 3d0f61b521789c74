"""A user's whole run through the CLI and the Python clients, on all four services training for real."""

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import service_log
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import AsyncTrainyardClient, NotFoundError, TrainyardClient
from trainyard_client.cli import app

pytestmark = pytest.mark.training


def test_cli_and_clients_drive_a_run_start_follow_logs_matrix(stack: LocalStack, tmp_path: Path) -> None:
    stack.start(("metrics", "scheduler", "api"))
    stack.start_service("trainer", TRAINYARD_TRAINER_ID="cpu-trainer-1", TRAINYARD_THREADS="1")
    files = write_synthetic_coco(tmp_path / "shapes", train_images=8, val_images=4, size=64)
    cli = CliRunner(env={"TRAINYARD_API_URL": stack.api_url, "TRAINYARD_API_KEY": stack.admin_key,
                         "COLUMNS": "80"})

    def trainyard(*args: str, exit_code: int = 0) -> str:
        result = cli.invoke(app, list(args))
        assert result.exit_code == exit_code, (args, result.output, service_log(stack, "trainer")[-2000:])
        return result.output

    dataset = json.loads(trainyard("datasets", "register", "shapes", str(files.root), "--json"))
    run = json.loads(trainyard("runs", "start", "cli-run", "--dataset", dataset["id"], "--epochs", "2",
                               "--batch-size", "4", "--input-size", "64", "--json"))
    assert run["status"] == "created"

    # `follow` shows each status and epoch live and exits 0 once the run succeeded.
    followed = trainyard("runs", "follow", run["id"])
    for expected in ("pending", "in_progress", "epoch   1/2", "epoch   2/2", "success"):
        assert expected in followed, followed

    # Read at 80 columns: nothing is wider, by the run's short id (a prefix every command takes).
    logs = trainyard("runs", "logs", run["id"][:8])
    assert "2/2" in logs and "bbox" not in logs.splitlines()[0]  # the epochs table; iterations only when logged
    metrics = trainyard("runs", "metrics", run["id"][:8])
    assert "loss_cls" in metrics and "bbox_mAP" in metrics
    listed_table = trainyard("runs", "list")
    assert run["id"][:8] in listed_table and run["id"] in trainyard("runs", "list", "--wide")
    for shown in (logs, metrics, listed_table, trainyard("runs", "get", run["id"][:8])):
        assert max(len(line) for line in shown.splitlines()) <= 80, shown
    config = trainyard("runs", "config", run["id"][:8])
    assert "max_epochs=2" in config.replace(" ", "") or "max_epochs = 2" in config, config[:2000]
    matrix = trainyard("runs", "matrix", run["id"])
    assert "confusion matrix, epoch 2" in matrix and "Background" in matrix
    got = trainyard("runs", "get", run["id"])
    assert "success" in got and "cpu-trainer-1" in got and "finished: 2/2 epochs" in got
    listed = json.loads(trainyard("runs", "list", "--status", "success", "--json"))
    assert [r["id"] for r in listed["items"]] == [run["id"]]
    trainyard("runs", "get", "f" * 32, exit_code=1)

    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        finished = client.runs.get(run["id"])
        assert finished["status"] == "success" and finished["progress"]["percent"] == 100.0
        assert finished["duration_s"] and finished["attempt"] == 1
        assert [e["epoch"] for e in client.runs.logs(run["id"], "epoch")] == [1, 2]
        matrix_json = client.runs.confusion_matrix(run["id"])
        assert matrix_json["classes"] == [*files.classes, "Background"]
        datature = client.runs.datature_confusion_matrix(run["id"])
        assert [column["id"] for column in datature["data"]] == matrix_json["classes"]
        best = client.runs.best_epoch(run["id"])
        assert best["metric"] == "bbox_mAP" and best["epoch"]["epoch"] in (1, 2)
        assert client.runs.metrics(run["id"], ["loss"])["series"]["loss"][1] is not None
        replay = list(client.runs.follow(run["id"]))
        assert [e.data["epoch"] for e in replay if e.event == "epoch"] == [1, 2] and replay[-1].event == "end"
        with pytest.raises(NotFoundError, match="no run with id"):
            client.runs.get("f" * 32)

    async def read_async() -> list[str]:
        async with AsyncTrainyardClient(stack.api_url, stack.admin_key) as client:
            return [r["id"] async for r in client.runs.list_all(status="success")]

    assert asyncio.run(read_async()) == [run["id"]]
