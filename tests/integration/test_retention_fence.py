"""Checkpoint retention is fenced: a superseded attempt never deletes what the run resumes from.

The issue's case, for real: NATS is away long enough for the scheduler to presume the trainer lost
after epoch 2 (or only epoch 1: its checkpoint.saved may not have been handled) was recorded. Attempt 1
is not dead: once its connection is back it stores epochs 3 and 4, which with `keep: 2` would prune
epochs 1 and 2, one of them the very checkpoint attempt 2 was handed as `resume_from`. An attempt
deletes only epochs it stored since its connection last broke, so both stay.
"""

import asyncio
import os
import signal
import uuid
from pathlib import Path

import torch
from faststream.nats import NatsBroker

from services.trainer.checkpoints import RunCheckpoints
from shared.artifacts import ArtifactCache, Artifacts, attempt_prefix, checkpoint_name
from shared.bus import ensure_stream
from shared.events import StoredCheckpoint
from shared.specs import RunSpec
from shared.subjects import Subjects
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


async def test_an_attempt_keeps_what_it_stored_before_its_connection_broke(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "own")
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    try:
        stack.start_servers()
        assert stack.nats_url
        subjects = Subjects()
        broker = NatsBroker(stack.nats_url, reconnected_cb=on_reconnect)
        await broker.connect()
        await ensure_stream(broker, subjects)
        artifacts = await Artifacts.open(broker, subjects)
        run_id = uuid.uuid4().hex
        first = RunCheckpoints(run_id, 1, _spec(), ArtifactCache(tmp_path / "cache-1", artifacts))
        work = tmp_path / "attempt-1"
        await _store(first, work, range(1, 3))
        recorded = StoredCheckpoint(attempt=1, epoch=1, name=checkpoint_name(run_id, 1, 1))

        # The fault: NATS killed and back (the scheduler, meanwhile, presumes the trainer lost).
        nats_server = stack.processes["nats"]
        os.kill(nats_server.pid, signal.SIGKILL)
        await asyncio.to_thread(nats_server.wait, 10)
        stack.restart_process("nats")
        await asyncio.wait_for(reconnected.wait(), 60)

        await _store(first, work, range(3, 5))  # the superseded attempt trains on
        names = await artifacts.names(attempt_prefix(run_id, 1))
        assert [checkpoint_name(run_id, 1, e) for e in (1, 2, 3, 4)] == [n for n in names if n.endswith(".pth")]
        second = RunCheckpoints(run_id, 2, _spec(), ArtifactCache(tmp_path / "cache-2", artifacts),
                                resume_from=recorded)
        resume = await second.resume_point()
        assert resume is not None and torch.load(resume, weights_only=False)["meta"]["epoch"] == 1

        # What it stored since the connection came back is pruned as before: the newest two stay.
        await _store(first, work, range(5, 7))
        names = await artifacts.names(attempt_prefix(run_id, 1))
        assert [checkpoint_name(run_id, 1, e) for e in (1, 2, 5, 6)] == [n for n in names if n.endswith(".pth")]
        assert (await artifacts.manifest(run_id, 1)).epochs == [5, 6]
        await broker.stop()
    finally:
        stack.stop()
