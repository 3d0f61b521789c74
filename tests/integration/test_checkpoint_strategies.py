"""Checkpoint strategies, limits and patience, through the training child."""

from pathlib import Path

import pytest

from services.trainer.reports import EpochReport, FinishedReport
from tests.integration.test_architectures import tiny_job
from tests.integration.test_child_training import run_child

pytest.importorskip("mmdet")
pytestmark = pytest.mark.training


def test_a_reached_limit_stops_the_run_early_with_success(tmp_path: Path) -> None:
    # val_loss is always below a huge limit: the first evaluation stops a 5-epoch run.
    job = tiny_job(tmp_path, "rtmdet-tiny", epochs=5,
                   checkpoint={"strategy": "lowest_val_loss", "keep": 2},
                   limit={"metric": "val_loss", "value": 1e9})
    rc, reports, log = run_child(job, tmp_path)
    assert rc == 0, log[-3000:]
    assert [r.kind for r in reports] == ["started", "epoch", "finished"]
    epoch, finished = reports[1], reports[2]
    assert isinstance(epoch, EpochReport) and epoch.epoch == 1 and epoch.total_epochs == 5
    assert (epoch.metrics["val_loss"] or 0.0) > 0
    assert "Stopping threshold reached" in log
    assert isinstance(finished, FinishedReport) and finished.checkpoint and Path(finished.checkpoint).is_file()
    # lowest_val_loss keeps that epoch's checkpoint as the best one.
    assert finished.best_checkpoint and Path(finished.best_checkpoint).name.startswith("best_trainyard_val_loss")
    assert not list(Path(job.work_dir).glob("epoch_2.pth"))
    assert_loads_without_trainyard(Path(finished.checkpoint))


def assert_loads_without_trainyard(checkpoint: Path) -> None:
    """The evaluation's results reach the message hub, which the checkpoint pickles: plain data only,
    so the checkpoint loads where trainyard is not installed."""
    import pickle

    import torch

    class NoTrainyard(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            assert not module.startswith(("services", "shared", "trainyard")), f"{module}.{name} in {checkpoint}"
            return super().find_class(module, name)

    class Pickle:
        Unpickler = NoTrainyard
        load = pickle.load

    state = torch.load(checkpoint, map_location="cpu", weights_only=False, pickle_module=Pickle)
    assert "val/trainyard/confusion_matrix" in state["message_hub"]["runtime_info"]


def test_patience_stops_when_the_metric_does_not_improve(tmp_path: Path) -> None:
    import logging

    from services.trainer.evaluation import METRIC_PREFIX
    from services.trainer.hooks import TrainyardEarlyStoppingHook

    class Loop:
        stop_training = False

    class Runner:
        epoch = 1
        train_loop = Loop()
        logger = logging.getLogger("test")

    # As build_config configures it for patience: an equal value is no improvement.
    hook = TrainyardEarlyStoppingHook(monitor=METRIC_PREFIX + "bbox_mAP", rule="greater", min_delta=0.0,
                                      check_finite=False, patience=2)
    runner = Runner()
    for value in (0.1, 0.3, 0.3, 0.2):
        assert not runner.train_loop.stop_training
        hook.after_val_epoch(runner, {METRIC_PREFIX + "bbox_mAP": value})
    assert runner.train_loop.stop_training
