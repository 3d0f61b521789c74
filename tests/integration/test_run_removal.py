"""Removing a run (DELETE /v1/runs/{id}) against the real services: the api refuses active runs and
deletes finished ones with their stored artifacts, the metrics service deletes what it stored for
them; the registered model stays."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faststream.nats import NatsBroker
from pymongo import AsyncMongoClient
from typer.testing import CliRunner

from shared.apikeys import Scope
from shared.artifacts import (
    Artifacts,
    checkpoint_name,
    manifest_name,
    model_weights_name,
    predictions_name,
    preview_name,
    run_prefix,
)
from shared.bus import publish_event
from shared.events import ConfusionMatrix, EpochLogged, IterationLog, IterationsLogged, ModelRegistered, utcnow
from shared.subjects import Subjects
from tests.helpers import create_key, record_assignment, wait_status
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco
from trainyard_client import AsyncTrainyardClient, ConflictError, NotFoundError, TrainyardClient
from trainyard_client.cli import app

MODEL_ID = "ab" * 16
PER_RUN = ("epochs", "iterations", "confusion_matrices")


def epoch_event(run_id: str, n: int) -> EpochLogged:
    return EpochLogged(
        run_id=run_id, attempt=1, epoch=n, total_epochs=2, losses={"loss_cls": 1.0 / n}, loss=1.0 / n,
        learning_rate=0.01, epoch_time_s=1.0, metrics={"bbox_mAP": 0.1 * n},
        confusion_matrix=ConfusionMatrix(classes=["a", "Background"], matrix=[[n, 0], [0, 0]],
                                         score_threshold=0.3, iou_threshold=0.5),
    )


async def until(check: Any, what: str, within_s: float = 20) -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def db(stack: LocalStack) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    yield client[stack.mongo_db]
    await client.close()


async def stored_counts(db: Any, run_id: str) -> dict[str, int]:
    counts = {name: await db[name].count_documents({"run_id": run_id}) for name in PER_RUN}
    # The run's latest epoch, one document keyed by the run's id.
    return counts | {"latest_epochs": await db.latest_epochs.count_documents({"_id": run_id})}


async def test_removing_a_finished_run_deletes_it_and_what_was_stored_for_it(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects], db: Any, tmp_path: Path
) -> None:
    broker, subjects = bus
    for service in ("metrics", "scheduler", "api"):
        stack.start_service(service)
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    async with AsyncTrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = await client.datasets.register("shapes", str(data))
        run_id = (await client.runs.start(name="old", dataset_id=dataset["id"], architecture="rtmdet-tiny",
                                          epochs=3))["id"]
        kept_id = (await client.runs.start(name="kept", dataset_id=dataset["id"], architecture="rtmdet-tiny",
                                           epochs=3))["id"]

        # Active (no trainer: it waits in the queue): refused, with what to do instead.
        with pytest.raises(ConflictError) as refused:
            await client.runs.remove(run_id)
        assert "kill it first" in refused.value.detail and refused.value.status == 409

        await kill_queued(client, run_id)
        # What a trainer would have reported before the kill, for both runs.
        await record_assignment(stack, (run_id, kept_id), "t1")
        for rid in (run_id, kept_id):
            for n in (1, 2):
                await publish_event(broker, subjects, subjects.epoch_logged("t1"), epoch_event(rid, n))
            await publish_event(broker, subjects, subjects.iterations_logged("t1"), IterationsLogged(
                run_id=rid, attempt=1, steps=[IterationLog(step=s, epoch=1, loss=1.0, losses={"loss_cls": 1.0},
                                                           learning_rate=0.01) for s in (10, 20)]))
        await publish_event(broker, subjects, subjects.model_registered("t1"), ModelRegistered(
            run_id=run_id, model_id=MODEL_ID, attempt=1, trainer_id="t1", architecture="rtmdet-tiny",
            classes=["a"], checkpoint="/nowhere/epoch_2.pth", epochs_completed=2))
        # And what its trainer stored: checkpoints, previews; the model's weights live apart.
        artifacts = await Artifacts.open(broker, subjects)
        for rid in (run_id, kept_id):
            await artifacts.upload_bytes(checkpoint_name(rid, 1, 2), b"weights and optimizer")
            await artifacts.upload_bytes(manifest_name(rid, 1), b"{}")
            await artifacts.upload_bytes(preview_name(rid, 2, 1), b"\x89PNG...")
            await artifacts.upload_bytes(predictions_name(rid, 2), b"[]")
        await artifacts.upload_bytes(model_weights_name(MODEL_ID), b"weights")
        full = {"epochs": 2, "iterations": 2, "confusion_matrices": 2, "latest_epochs": 1}
        for rid in (run_id, kept_id):
            await until(lambda rid=rid: _counts_are(db, rid, full), f"the data of run {rid} to be stored")
        await until(lambda: db.models.find_one({"_id": MODEL_ID}), "the model to be registered")

        await client.runs.remove(run_id)
        with pytest.raises(NotFoundError):
            await client.runs.get(run_id)
        with pytest.raises(NotFoundError) as again:
            await client.runs.remove(run_id)
        assert again.value.detail == f"no run with id {run_id!r}"
        assert await artifacts.names(run_prefix(run_id)) == []
        assert len(await artifacts.names(run_prefix(kept_id))) == 4
        assert await artifacts.read(model_weights_name(MODEL_ID)) == b"weights"
        none = dict.fromkeys((*PER_RUN, "latest_epochs"), 0)
        await until(lambda: _counts_are(db, run_id, none), "the metrics service to delete the run's data")
        assert await stored_counts(db, kept_id) == full, "another run's data was touched"
        assert [r["id"] for r in (await client.runs.list())["items"]] == [kept_id]

        # The registered model stays, its lineage naming the removed run.
        model = await client.models.get(MODEL_ID)
        assert model["run"]["id"] == run_id

        # Its trainer, still stopping, reports one more epoch: dropped, the run is gone.
        await publish_event(broker, subjects, subjects.epoch_logged("t1"), epoch_event(run_id, 3))
        await publish_event(broker, subjects, subjects.epoch_logged("t1"), epoch_event(kept_id, 3))
        await until(lambda: _counts_are(db, kept_id, {**full, "epochs": 3, "confusion_matrices": 3}),
                    "the other run's epoch 3")
        assert await stored_counts(db, run_id) == none


async def _status_is(client: AsyncTrainyardClient, run_id: str, status: str) -> bool:
    return (await client.runs.get(run_id))["status"] == status


async def kill_queued(client: AsyncTrainyardClient, run_id: str) -> None:
    """Kill a run once the scheduler has queued it (a kill racing the queueing is lost:
    the scheduler's kill finds the run changed meanwhile and gives up)."""
    await until(lambda: _status_is(client, run_id, "pending"), "the run to be queued")
    await client.runs.kill(run_id)
    await until(lambda: _status_is(client, run_id, "terminated"), "the kill")


async def _counts_are(db: Any, run_id: str, expected: dict[str, int]) -> bool:
    return await stored_counts(db, run_id) == expected


async def test_a_run_that_just_succeeded_waits_for_its_model_to_be_registered(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects], db: Any, tmp_path: Path
) -> None:
    broker, subjects = bus
    for service in ("metrics", "scheduler", "api"):
        stack.start_service(service)
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    async with AsyncTrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = await client.datasets.register("shapes", str(data))
        run_id = (await client.runs.start(name="s", dataset_id=dataset["id"], architecture="rtmdet-tiny"))["id"]
        await kill_queued(client, run_id)
        await record_assignment(stack, (run_id,), "t1")
        # As the scheduler records a success whose model.registered the metrics service has not handled yet.
        await db.runs.update_one({"_id": run_id}, {"$set": {"status": "success", "completed_at": utcnow()}})
        with pytest.raises(ConflictError) as early:
            await client.runs.remove(run_id)
        assert "still being registered" in early.value.detail
        await publish_event(broker, subjects, subjects.model_registered("t1"), ModelRegistered(
            run_id=run_id, model_id=MODEL_ID, attempt=1, trainer_id="t1", architecture="rtmdet-tiny",
            classes=["a"], checkpoint="/nowhere/epoch_1.pth", epochs_completed=0))
        await until(lambda: db.models.find_one({"_id": MODEL_ID}), "the model to be registered")
        await client.runs.remove(run_id)
        assert (await client.models.get(MODEL_ID))["run"]["id"] == run_id


async def test_another_projects_run_cannot_be_removed(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_servers()
    for service in ("scheduler", "api"):
        stack.start_service(service)
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    beta_key = create_key(stack, "beta", [Scope.ADMIN])
    async with AsyncTrainyardClient(stack.api_url, stack.admin_key) as alpha, \
            AsyncTrainyardClient(stack.api_url, beta_key) as beta:
        dataset = await beta.datasets.register("shapes", str(data))
        run_id = (await beta.runs.start(name="b", dataset_id=dataset["id"], architecture="rtmdet-tiny"))["id"]
        await kill_queued(beta, run_id)
        with pytest.raises(NotFoundError) as hidden:
            await alpha.runs.remove(run_id)
        assert hidden.value.detail == f"no run with id {run_id!r}"
        assert (await beta.runs.get(run_id))["status"] == "terminated"


def test_cli_asks_before_removing_and_yes_skips_the_question(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_servers()
    for service in ("scheduler", "api"):
        stack.start_service(service)
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    cli = CliRunner(env={"TRAINYARD_API_URL": stack.api_url, "TRAINYARD_API_KEY": stack.admin_key})
    with TrainyardClient(stack.api_url, stack.admin_key) as client:
        dataset = client.datasets.register("shapes", str(data))
        run_id = client.runs.start(name="c", dataset_id=dataset["id"], architecture="rtmdet-tiny")["id"]
        active = cli.invoke(app, ["runs", "remove", run_id, "--yes"])
        assert active.exit_code == 1 and "error 409" in active.output and "kill it first" in active.output
        wait_status(client, run_id, {"pending"})
        client.runs.kill(run_id)
        wait_status(client, run_id, {"terminated"})
        declined = cli.invoke(app, ["runs", "remove", run_id], input="n\n")
        assert declined.exit_code == 1 and "Remove run" in declined.output
        assert client.runs.get(run_id)["status"] == "terminated"
        confirmed = cli.invoke(app, ["runs", "remove", run_id], input="y\n")
        assert confirmed.exit_code == 0 and f"removed run {run_id}" in confirmed.output, confirmed.output
        gone = cli.invoke(app, ["runs", "remove", run_id, "--yes"])
        assert gone.exit_code == 1 and "error 404" in gone.output
