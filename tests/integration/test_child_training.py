"""The training child as the trainer runs it: a subprocess reporting on an inherited pipe."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.trainer.reports import (
    ChildReport,
    EpochReport,
    FailedReport,
    FinishedReport,
    StartedReport,
    TrainingJob,
    child_report_adapter,
)
from services.trainer.weights import weights_path
from shared.specs import RunSpec
from trainyard.synth import write_synthetic_coco

pytest.importorskip("mmdet")
pytestmark = pytest.mark.training

REPO = Path(__file__).resolve().parents[2]


def run_child(job: TrainingJob, tmp_path: Path, timeout: float = 120) -> tuple[int, list[ChildReport], str]:
    job_file = tmp_path / "job.json"
    job_file.write_text(job.model_dump_json())
    read_end, write_end = os.pipe()
    with open(tmp_path / "child.log", "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "services.trainer.child", str(job_file), "--report-fd", str(write_end)],
            pass_fds=(write_end,),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        lines = pipe.read().splitlines()
    rc = child.wait(timeout=timeout)
    return rc, [child_report_adapter.validate_json(line) for line in lines], (tmp_path / "child.log").read_text()


def make_job(tmp_path: Path, **spec: object) -> TrainingJob:
    files = write_synthetic_coco(tmp_path / "shapes", train_images=8, val_images=4, size=64)
    return TrainingJob(
        run_id="r1",
        attempt=1,
        spec=RunSpec.model_validate(
            {"name": "t", "dataset_id": "0" * 32, "architecture": "rtmdet-tiny", "input_size": 64, **spec}
        ),
        dataset=files.layout(),
        work_dir=str(tmp_path / "work"),
        device="cpu",
        threads=1,
    )


def test_one_epoch_of_rtmdet_tiny(tmp_path: Path) -> None:
    job = make_job(tmp_path, epochs=1, batch_size=4)
    rc, reports, log = run_child(job, tmp_path)
    assert rc == 0, log[-3000:]

    assert [r.kind for r in reports] == ["started", "epoch", "finished"], reports
    started, epoch, finished = reports
    assert isinstance(started, StartedReport) and started.device == "cpu"

    assert isinstance(epoch, EpochReport)
    assert (epoch.epoch, epoch.total_epochs) == (1, 1)
    assert {"loss_cls", "loss_bbox"} <= epoch.losses.keys()
    assert all(math.isfinite(v) for v in [epoch.loss, *epoch.losses.values()])
    assert epoch.loss == pytest.approx(sum(epoch.losses.values()), rel=1e-6)
    assert epoch.learning_rate > 0 and epoch.epoch_time_s > 0
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75"):
        value = epoch.metrics[key]
        assert value is not None and 0.0 <= value <= 1.0
    matrix = epoch.confusion_matrix
    assert matrix is not None
    assert matrix.classes == ["circle", "square", "triangle", "Background"]
    assert len(matrix.matrix) == 4 and all(len(row) == 4 for row in matrix.matrix)
    # Every val box adds at least one count to its class's row (found or missed).
    val_boxes = json.loads(Path(job.dataset.val.annotations).read_text())["annotations"]
    for label, row in enumerate(matrix.matrix[:3]):
        assert sum(row) >= sum(1 for box in val_boxes if box["category_id"] == label + 1)

    assert isinstance(finished, FinishedReport) and finished.checkpoint is not None
    assert Path(finished.checkpoint).is_file()
    assert Path(finished.checkpoint).parent == Path(job.work_dir)
    # The model's weights, written by the child beside its checkpoint (the trainer never loads torch),
    # and the checkpoint's config text the same as the config file's: formatted once, never stale.
    import torch

    saved = torch.load(finished.checkpoint, map_location="cpu", weights_only=False)
    weights = torch.load(weights_path(Path(job.work_dir), 1), map_location="cpu", weights_only=False)
    assert set(weights) == {"state_dict", "meta"} and weights["meta"]["run_id"] == "r1"
    assert weights["meta"]["epoch"] == 1 and weights["state_dict"].keys() == saved["state_dict"].keys()
    assert all(torch.equal(weights["state_dict"][k], v) for k, v in saved["state_dict"].items())
    assert saved["meta"]["cfg"] == (Path(job.work_dir) / "config.py").read_text()


def test_a_missing_annotation_file_fails_with_a_message(tmp_path: Path) -> None:
    job = make_job(tmp_path, epochs=1)
    Path(job.dataset.val.annotations).unlink()
    rc, reports, _ = run_child(job, tmp_path, timeout=60)
    assert rc == 1
    assert len(reports) == 1 and isinstance(reports[0], FailedReport)
    assert reports[0].message == f"dataset val annotation file {job.dataset.val.annotations}: not found"
