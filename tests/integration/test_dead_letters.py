"""What a consumer cannot or must not handle is dead-lettered, counted and never stored, and the
consumer goes on: the real metrics service against real NATS and the MongoDB-wire server."""

import asyncio
import time
from typing import Any

from faststream.nats import NatsBroker
from pymongo import AsyncMongoClient

from shared.bus import MAX_EVENT_BYTES, publish_event
from shared.events import DeadLetter, EpochLogged, IterationLog, IterationsLogged, ModelRegistered
from shared.subjects import Subjects
from tests.integration.test_metrics_service import TRAINER, epoch, insert_run, wait_for_count
from tests.observed import sample_value, scrape, wait_for_scrape
from trainyard.localstack import LocalStack, free_port


def start_metrics_service(stack: LocalStack) -> str:
    """The metrics service with its /metrics served; returns that URL."""
    port = free_port()
    stack.start_service("metrics", TRAINYARD_METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for_scrape(url, "metrics")
    return url


def collect_dead_letters(broker: NatsBroker, subjects: Subjects, report: str) -> list[DeadLetter]:
    """Every dead letter of a trainer report (`report` under any trainer's id), as they arrive
    once the broker is started."""
    letters: list[DeadLetter] = []

    # no_reply: a plain subscriber must not answer the publisher's request in place of the stream.
    @broker.subscriber(subjects.dead_letter(report), no_reply=True)
    async def collect(letter: DeadLetter) -> None:
        letters.append(letter)

    return letters


async def until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def dead_lettered(url: str, consumer: str, reason: str) -> float:
    return sample_value(scrape(url), "trainyard_dead_lettered_events_total", consumer=consumer, reason=reason) or 0.0


async def test_undecodable_events_are_dead_lettered_counted_and_the_consumer_goes_on(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects]
) -> None:
    url = start_metrics_service(stack)
    broker, subjects = bus
    await insert_run(stack, "run-1")
    letters = collect_dead_letters(broker, subjects, subjects.epoch_logged(">"))
    await broker.start()
    subject = subjects.epoch_logged(TRAINER)
    nested = b'{"run_id": "run-1", "losses": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    bodies = {
        "nested": nested,  # FastStream's json.loads raises RecursionError on it
        "invalid utf-8": b"\xff\xfe not json",
        "oversize": b'{"run_id": "run-1", "pad": "' + b"x" * MAX_EVENT_BYTES + b'"}',
        "schema": b'{"run_id": "run-1", "epoch": "first"}',
    }
    for body in bodies.values():
        await broker.publish(body, subject, stream=subjects.stream)
    await publish_event(broker, subjects, subject, epoch(1))

    assert await wait_for_count(stack, "epochs", {"run_id": "run-1"}, 1) == 1
    await until(lambda: len(letters) >= 4, f"dead letters: {letters}")
    await asyncio.sleep(0.3)  # a letter set aside twice would show now
    assert len(letters) == 4
    assert {(d.consumer, d.subject, d.reason) for d in letters} == {("metrics-epochs", subject, "undecodable")}
    by_payload = {d.payload[:40]: d for d in letters}
    assert any(p.startswith('{"run_id": "run-1", "losses": [[[') for p in by_payload)
    assert any("over the limit" in d.error and str(MAX_EVENT_BYTES) in d.error for d in letters)
    assert any("invalid" in d.error.lower() and "\ufffd" in d.payload for d in letters)
    assert dead_lettered(url, "metrics-epochs", "undecodable") == 4


async def test_forged_reports_are_refused_and_change_nothing(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects]
) -> None:
    """Only the trainer holding a run's current attempt reports for it, and only for its epochs."""
    url = start_metrics_service(stack)
    broker, subjects = bus
    await insert_run(stack, "run-f", attempt=2, epochs=2)
    epochs = collect_dead_letters(broker, subjects, subjects.epoch_logged(">"))
    models = collect_dead_letters(broker, subjects, subjects.model_registered(">"))
    iterations = collect_dead_letters(broker, subjects, subjects.iterations_logged(">"))
    await broker.start()

    def at(n: int, *, attempt: int = 2, run_id: str = "run-f", mAP: float = 0.1) -> EpochLogged:
        return epoch(n).model_copy(update={"run_id": run_id, "attempt": attempt, "total_epochs": 2,
                                           "metrics": {"bbox_mAP": mAP}})

    def model(trainer_id: str, *, epochs_completed: int = 2) -> ModelRegistered:
        return ModelRegistered(run_id="run-f", model_id=f"model-{trainer_id}", attempt=2, trainer_id=trainer_id,
                               architecture="rtmdet-tiny", classes=["a"], checkpoint="models/x.pth",
                               epochs_completed=epochs_completed)

    real, other = subjects.epoch_logged(TRAINER), subjects.epoch_logged("trainer-b")
    await publish_event(broker, subjects, real, at(1, mAP=0.1))
    assert await wait_for_count(stack, "epochs", {"run_id": "run-f"}, 1) == 1
    forged = [
        (other, at(2, mAP=1.0)),  # another trainer
        (real, at(2, attempt=1, mAP=1.0)),  # the holder, but a superseded attempt
        (real, at(2, attempt=3, mAP=1.0)),  # an attempt that does not exist yet
        (real, at(1, run_id="no-such-run", mAP=1.0)),  # an unknown run
        (real, at(999, mAP=1.0)),  # past the run's end
    ]
    for n, (subject, event) in enumerate(forged):
        await publish_event(broker, subjects, subject, event, dedup_key=f"forged-{n}")
    bad_steps = IterationsLogged(run_id="run-f", attempt=2, steps=[
        IterationLog(step=1, epoch=1, loss=9.0, losses={"loss_cls": 9.0}, learning_rate=0.1)])
    await publish_event(broker, subjects, subjects.iterations_logged("trainer-b"), bad_steps)
    # A model announced by another trainer, as itself and in the holder's name.
    await publish_event(broker, subjects, subjects.model_registered("trainer-b"), model("trainer-b"))
    await publish_event(broker, subjects, subjects.model_registered("trainer-b"), model(TRAINER))

    await until(lambda: len(epochs) >= len(forged) and len(models) >= 2 and iterations,
                f"dead letters: {epochs} {models} {iterations}")
    errors = sorted(d.error for d in epochs)
    assert {d.reason for d in [*epochs, *models, *iterations]} == {"refused"}
    assert any("held by trainer trainer-a, not trainer-b" in e for e in errors), errors
    assert any("attempt 1 of run run-f is not its current attempt (2)" in e for e in errors), errors
    assert any("attempt 3 of run run-f" in e for e in errors), errors
    assert any("no run no-such-run" in e for e in errors), errors
    assert any("epoch 999 is outside run run-f's epochs 1..2" in e for e in errors), errors
    assert any("published by trainer trainer-b for trainer trainer-a" in d.error for d in models), models

    # The real trainer goes on: its epoch 2 and its model are stored, from its own epochs only.
    await publish_event(broker, subjects, real, at(2, mAP=0.2))
    await publish_event(broker, subjects, subjects.model_registered(TRAINER), model(TRAINER))
    assert await wait_for_count(stack, "models", {"run_id": "run-f"}, 1) == 1
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_url)
    try:
        db = client[stack.mongo_db]
        stored = await db.epochs.find({}).sort("epoch", 1).to_list()
        assert [(d["run_id"], d["epoch"], d["attempt"], d["metrics"]["bbox_mAP"]) for d in stored] == [
            ("run-f", 1, 2, 0.1), ("run-f", 2, 2, 0.2)]
        assert await db.iterations.count_documents({}) == 0
        registered = await db.models.find({}).to_list()
        assert [(m["_id"], m["best_epoch"], m["best_metrics"]["bbox_mAP"]) for m in registered] == [
            (f"model-{TRAINER}", 2, 0.2)]
        run = await db.runs.find_one({"_id": "run-f"})
        assert run == {"_id": "run-f", "attempt": 2, "trainer_id": TRAINER, "spec": {"epochs": 2}}
    finally:
        await client.close()
    assert dead_lettered(url, "metrics-epochs", "refused") == len(forged)
    assert dead_lettered(url, "metrics-models", "refused") == 2
    assert dead_lettered(url, "metrics-iterations", "refused") == 1
