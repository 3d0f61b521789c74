"""Distributed data parallel on the CPU: two gloo ranks, started as the trainer starts them."""

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from services.trainer.launch import ChildExit, TrainingProcesses
from services.trainer.reports import (
    ChildReport,
    EpochReport,
    FinishedReport,
    IterationsReport,
    StartedReport,
    TrainingJob,
    child_report_adapter,
)
from shared.specs import RunSpec
from tests.integration.test_architectures import tiny_job
from trainyard.synth import write_synthetic_coco

pytest.importorskip("mmdet")

REPO = Path(__file__).resolve().parents[2]


def two_rank_job(tmp_path: Path, **spec: object) -> TrainingJob:
    """8 train images, batch 2 per rank: 2 iterations per epoch on 2 ranks (4 on one)."""
    files = write_synthetic_coco(tmp_path / "shapes", train_images=8, val_images=2, size=64)
    return TrainingJob(
        run_id="r1",
        attempt=1,
        spec=RunSpec.model_validate({"name": "t", "dataset_id": "0" * 32, "architecture": "rtmdet-tiny",
                                     "input_size": 64, "batch_size": 2, "log_interval": 1,
                                     "accelerator": {"name": "CPU", "count": 2}, **spec}),
        dataset=files.layout(),
        work_dir=str(tmp_path / "work"),
        device="cpu",
        threads=1,
        world_size=2,
    )


async def start(job: TrainingJob, tmp_path: Path) -> TrainingProcesses:
    job_path = tmp_path / "job.json"
    job_path.write_text(job.model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": "1"}
    with (tmp_path / "train.log").open("ab") as log:
        return await TrainingProcesses.start(job_path, job.world_size, env, log, grace_s=5)


async def reports_until(processes: TrainingProcesses, kind: str | None = None) -> list[ChildReport]:
    """Reports until one of `kind` (None: until every rank has closed the pipe)."""
    reports: list[ChildReport] = []
    async for line in processes.report_lines():
        reports.append(child_report_adapter.validate_json(line))
        if reports[-1].kind == kind:
            break
    return reports


def test_a_two_rank_job_is_configured_for_gloo_ddp(tmp_path: Path) -> None:
    from services.trainer.mmdet_config import build_config

    single = tiny_job(tmp_path / "a", "retinanet-r18", epochs=10)
    one, two = build_config(single), build_config(single.model_copy(update={"world_size": 2}))
    assert one.get("launcher", "none") == "none"
    assert two.launcher == "pytorch" and two.env_cfg.dist_cfg.backend == "gloo"
    # DDP on the CPU: no device_ids (MMEngine would pass LOCAL_RANK, which DDP refuses for a CPU module).
    assert two.model_wrapper_cfg.device_ids is None
    # The effective batch doubles, and SGD's learning rate with it.
    assert two.optim_wrapper.optimizer.lr == pytest.approx(2 * one.optim_wrapper.optimizer.lr)
    rtm = build_config(two_rank_job(tmp_path / "b", epochs=1))
    assert rtm.model.use_syncbn is False
    assert "SyncBN" not in rtm.pretty_text  # torch's SyncBatchNorm runs on GPUs only


@pytest.mark.training
async def test_two_gloo_ranks_train_half_the_iterations_each_and_report_once(tmp_path: Path) -> None:
    # The limit (any val_loss is below it) stops the run after its first epoch: rank 0's
    # decision must reach rank 1, and the best checkpoint needs the metrics on every rank.
    job = two_rank_job(tmp_path, epochs=3, checkpoint={"strategy": "best"},
                       limit={"metric": "val_loss", "value": 1e9})
    processes = await start(job, tmp_path)
    reports = await asyncio.wait_for(reports_until(processes), timeout=300)
    log = (tmp_path / "train.log").read_text(errors="replace")
    assert await processes.wait() == ChildExit(0), log[-3000:]

    assert_trained_one_epoch_on_two_ranks(job, reports, log)


def assert_trained_one_epoch_on_two_ranks(job: TrainingJob, reports: list[ChildReport], log: str) -> None:
    assert [r.kind for r in reports] == ["started", "iterations", "epoch", "finished"], reports
    started, iterations, epoch, finished = reports
    assert isinstance(started, StartedReport)
    assert started.world_size == 2 and started.device == "cpu x2 (DDP, gloo)"
    # Each rank takes half of the 8 images: 2 iterations of batch 2 (one process would take 4).
    assert isinstance(iterations, IterationsReport)
    assert [(s.step, s.epoch) for s in iterations.steps] == [(1, 1), (2, 1)]
    assert "Epoch(train) [1][2/2]" in log
    assert isinstance(epoch, EpochReport) and (epoch.epoch, epoch.total_epochs) == (1, 3)
    assert (epoch.metrics["val_loss"] or 0.0) > 0 and "bbox_mAP" in epoch.metrics and epoch.confusion_matrix
    # Each rank predicted one of the two validation images; rank 0 gathered both into its file.
    predictions = json.loads((Path(job.work_dir) / "predictions" / "epoch_1.bbox.json").read_text())
    val_images = json.loads(Path(job.dataset.val.annotations).read_text())["images"]
    assert {p["image_id"] for p in predictions} == {image["id"] for image in val_images}
    assert "Stopping threshold reached" in log
    assert isinstance(finished, FinishedReport) and finished.checkpoint and finished.best_checkpoint
    assert Path(finished.checkpoint).is_file() and Path(finished.best_checkpoint).is_file()
    config = (Path(job.work_dir) / "config.py").read_text()
    assert "launcher = 'pytorch'" in config and "backend='gloo'" in config


@pytest.mark.training
async def test_a_rank_that_dies_takes_the_others_down(tmp_path: Path) -> None:
    processes = await start(two_rank_job(tmp_path, epochs=50), tmp_path)
    await asyncio.wait_for(reports_until(processes, "started"), timeout=120)
    os.kill(processes.pids[1], signal.SIGKILL)  # the OOM killer, say
    # Rank 0 would wait for rank 1 in its next collective; the launcher stops it instead.
    assert await asyncio.wait_for(processes.wait(), timeout=15) == ChildExit(-signal.SIGKILL, rank=1)
    for pid in processes.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
