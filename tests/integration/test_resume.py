"""Resuming from a checkpoint continues the run: epoch numbers, the learning-rate schedule, the total.

MMDetection users have reported resumes that restart at epoch 1 or with a fresh
schedule; this trains a run through, then resumes a second attempt from its
epoch-2 checkpoint and compares."""

import math
from pathlib import Path

import pytest

from services.trainer.reports import EpochReport, TrainingJob
from tests.integration.test_child_training import make_job, run_child

pytest.importorskip("mmdet")
pytestmark = pytest.mark.training


def epochs_of(job: TrainingJob, tmp_path: Path) -> list[EpochReport]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rc, reports, log = run_child(job, tmp_path, timeout=300)
    assert rc == 0, log[-3000:]
    return [r for r in reports if isinstance(r, EpochReport)]


def test_a_resumed_attempt_continues_epochs_and_schedule(tmp_path: Path) -> None:
    # sgd: its schedule (warm-up, then steps) moves the learning rate from epoch to epoch.
    through = make_job(tmp_path / "a1", epochs=4, batch_size=4, optimizer="sgd", checkpoint={"keep": 4})
    reference = epochs_of(through, tmp_path / "a1")
    assert [r.epoch for r in reference] == [1, 2, 3, 4]
    checkpoint = Path(through.work_dir) / "epoch_2.pth"
    assert checkpoint.is_file()

    resumed_job = through.model_copy(update={"attempt": 2, "work_dir": str(tmp_path / "a2" / "work"),
                                             "resume_from": str(checkpoint)})
    resumed = epochs_of(resumed_job, tmp_path / "a2")
    assert [r.epoch for r in resumed] == [3, 4], "the resumed attempt must start after the checkpoint's epoch"
    assert all(r.total_epochs == 4 for r in resumed)
    for again, first in zip(resumed, reference[2:], strict=True):
        assert math.isclose(again.learning_rate, first.learning_rate, rel_tol=1e-9), (again, first)
    # The guard can fail: a restarted schedule would report epoch 1's rate.
    assert not math.isclose(reference[0].learning_rate, reference[2].learning_rate, rel_tol=1e-6)
