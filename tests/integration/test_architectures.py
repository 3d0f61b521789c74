"""Every catalogue entry trains one short epoch through the training child."""

import math
import time
from pathlib import Path

import pytest

from services.trainer.reports import EpochReport, FinishedReport, TrainingJob
from shared.catalogue import ARCHITECTURES
from shared.specs import RunSpec
from tests.integration.test_child_training import run_child
from trainyard.synth import write_synthetic_coco

pytest.importorskip("mmdet")
pytestmark = pytest.mark.training


def tiny_job(tmp_path: Path, architecture: str, **spec: object) -> TrainingJob:
    """4 train / 2 val images at 64 px, batch 2, one thread: the smallest run that trains and evaluates."""
    files = write_synthetic_coco(tmp_path / "shapes", train_images=4, val_images=2, size=64)
    return TrainingJob(
        run_id="r1",
        attempt=1,
        spec=RunSpec.model_validate({"name": "t", "dataset_id": "0" * 32, "architecture": architecture,
                                     "input_size": 64, "epochs": 1, "batch_size": 2, **spec}),
        dataset=files.layout(),
        work_dir=str(tmp_path / "work"),
        device="cpu",
        threads=1,
    )


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_one_epoch_of_each_architecture(tmp_path: Path, architecture: str) -> None:
    # lowest_val_loss: every architecture also computes its validation loss and keeps a best checkpoint.
    job = tiny_job(tmp_path, architecture, checkpoint={"strategy": "lowest_val_loss"})
    began = time.monotonic()
    rc, reports, log = run_child(job, tmp_path)
    took = time.monotonic() - began
    assert rc == 0, log[-3000:]
    assert [r.kind for r in reports] == ["started", "epoch", "finished"], reports
    epoch, finished = reports[1], reports[2]
    assert isinstance(epoch, EpochReport) and epoch.epoch == 1
    assert {"loss_cls", "loss_bbox"} & epoch.losses.keys(), epoch.losses
    assert all(math.isfinite(v) for v in [epoch.loss, *epoch.losses.values()])
    assert epoch.learning_rate > 0
    assert "bbox_mAP" in epoch.metrics and epoch.confusion_matrix is not None
    val_loss = epoch.metrics["val_loss"]
    assert val_loss is not None and math.isfinite(val_loss) and val_loss > 0
    assert isinstance(finished, FinishedReport) and finished.checkpoint and Path(finished.checkpoint).is_file()
    assert finished.best_checkpoint and Path(finished.best_checkpoint).is_file()
    print(f"{architecture}: one epoch through the child in {took:.1f} s")
