"""Checkpoint retention is fenced: a superseded attempt never deletes what the run resumes from.

The issue's case, for real: attempt 1 is presumed lost after its epoch 2 is recorded; it is not dead,
reconnects and stores epochs 3 and 4, which with `keep: 2` would prune epoch 2, the very checkpoint
attempt 2 was handed as `resume_from`. The scheduler fences attempt 1 off before it requeues the run;
from then on attempt 1 deletes nothing, and attempt 2 resumes from epoch 2.
"""

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from faststream.nats import NatsBroker
from pymongo import MongoClient

from services.trainer.checkpoints import RunCheckpoints
from shared.artifacts import ArtifactCache, Artifacts, attempt_prefix, checkpoint_name, manifest_name
from shared.events import utcnow
from shared.specs import AcceleratorRequest, RunSpec
from shared.store import RUNS
from shared.subjects import Subjects
from tests.helpers import wait_until
from trainyard.localstack import LocalStack


def _spec() -> RunSpec:
    return RunSpec.model_validate({"name": "f", "dataset_id": "0" * 32, "architecture": "rtmdet-tiny",
                                   "checkpoint": {"strategy": "latest", "keep": 2}})


def _write_checkpoint(work_dir: Path, epoch: int) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.full((2,), float(epoch))}, "meta": {"epoch": epoch}},
               work_dir / f"epoch_{epoch}.pth")


async def _store(run: RunCheckpoints, work_dir: Path, epochs: range) -> None:
    for epoch in epochs:
        _write_checkpoint(work_dir, epoch)
        await run.store_epoch(epoch, {"bbox_mAP": 0.1 * epoch}, work_dir)


async def test_a_fenced_attempt_keeps_what_the_next_attempt_resumes_from(bus: tuple[NatsBroker, Subjects],
                                                                          tmp_path: Path) -> None:
    broker, subjects = bus
    artifacts = await Artifacts.open(broker, subjects)
    run_id = uuid.uuid4().hex
    first = RunCheckpoints(run_id, 1, _spec(), ArtifactCache(tmp_path / "cache-1", artifacts))
    await _store(first, tmp_path / "attempt-1", range(1, 3))
    recorded = first.newest  # what the scheduler recorded before it presumed attempt 1 lost
    assert recorded is not None and recorded.epoch == 2

    await artifacts.fence_attempts_up_to(run_id, 1)
    await _store(first, tmp_path / "attempt-1", range(3, 5))  # the superseded attempt trains on
    assert await artifacts.names(attempt_prefix(run_id, 1)) == [
        *(checkpoint_name(run_id, 1, e) for e in (1, 2, 3, 4)), manifest_name(run_id, 1)]

    second = RunCheckpoints(run_id, 2, _spec(), ArtifactCache(tmp_path / "cache-2", artifacts), resume_from=recorded)
    resume = await second.resume_point()
    assert resume is not None and torch.load(resume, weights_only=False)["meta"]["epoch"] == 2
    # The current attempt is not fenced: it keeps its newest two as before.
    await _store(second, tmp_path / "attempt-2", range(3, 6))
    assert (await artifacts.manifest(run_id, 2)).epochs == [4, 5]
    assert len(await artifacts.names(attempt_prefix(run_id, 2))) == 3
    # A fence never moves back.
    await artifacts.fence_attempts_up_to(run_id, 0)
    assert await artifacts.superseded_up_to(run_id) == 1


def _run_left_in_rerun(run_id: str, attempt: int) -> dict[str, Any]:
    long_ago = utcnow() - timedelta(minutes=1)
    return {"_id": run_id, "project": "default", "name": "fence", "status": "rerun", "attempt": attempt,
            "trainer_id": None, "spec": {"priority": 0, "accelerator": AcceleratorRequest().model_dump(),
                                         "epochs": 4},
            "created_at": long_ago, "updated_at": long_ago, "history": []}


async def test_the_scheduler_fences_the_superseded_attempt_before_it_requeues(
    stack: LocalStack, bus: tuple[NatsBroker, Subjects]
) -> None:
    broker, subjects = bus
    assert stack.mongo_url
    run_id = uuid.uuid4().hex
    with _mongo(stack.mongo_url) as client:
        runs = client[stack.mongo_db][RUNS]
        runs.insert_one(_run_left_in_rerun(run_id, attempt=3))
        stack.start_service("scheduler")
        # The scheduler's start and its periodic pass (the loop has nothing else to do meanwhile).
        wait_until(lambda: runs.find_one({"_id": run_id, "status": "pending"}), 60, "the run to be requeued")
    # Stored before the run could be placed again.
    assert await (await Artifacts.open(broker, subjects)).superseded_up_to(run_id) == 3


def _mongo(url: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(url)
