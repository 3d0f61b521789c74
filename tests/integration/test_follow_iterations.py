"""The follow bar keeps moving past the API's cap on one logs answer (10,000 iteration logs)."""

from datetime import UTC, datetime
from pathlib import Path

from pymongo import MongoClient

from services.api.routes.run_results import MAX_ITERATION_LOGS
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import TrainyardClient
from trainyard_client.cli.follow import NewestStep


def store_iterations(stack: LocalStack, run_id: str, steps: range) -> None:
    """As the metrics service stores a run's iteration logs (one document per step)."""
    mongo: MongoClient[dict[str, object]] = MongoClient(stack.mongo_url)
    try:
        now = datetime.now(UTC)
        mongo[stack.mongo_db].iterations.insert_many([
            {"run_id": run_id, "attempt": 1, "step": step, "epoch": 1 + step // 1000, "loss": 1.0,
             "losses": {"loss_cls": 0.5}, "learning_rate": 0.01, "logged_at": now} for step in steps])
    finally:
        mongo.close()


def test_the_newest_step_moves_on_after_ten_thousand_iteration_logs(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_service("api")
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = client.datasets.register("shapes", str(data))
        run_id = client.runs.start({"name": "long", "dataset_id": dataset["id"], "architecture": "rtmdet-tiny",
                                    "log_interval": 1})["id"]
        store_iterations(stack, run_id, range(1, MAX_ITERATION_LOGS + 51))
        # One answer stops at the cap: a bar reading the last of it would sit at step 10,000.
        assert client.runs.logs(run_id, "iteration")[-1]["step"] == MAX_ITERATION_LOGS
        newest = NewestStep(run_id)
        assert newest.poll(client) == MAX_ITERATION_LOGS + 50
        store_iterations(stack, run_id, range(MAX_ITERATION_LOGS + 51, MAX_ITERATION_LOGS + 61))
        assert newest.poll(client) == MAX_ITERATION_LOGS + 60
        # Only what is new is asked for: nothing after the newest step.
        assert client.runs.logs(run_id, "iteration", after_step=MAX_ITERATION_LOGS + 60) == []
