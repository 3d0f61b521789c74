"""Checkpoint strategies, limits and patience, through the training child."""

import uuid
from pathlib import Path
from typing import Any

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
        hooks: tuple[object, ...] = ()  # no checkpoint hook: the stopped epoch is saved by none

    # As build_config configures it for patience: an equal value is no improvement.
    hook = TrainyardEarlyStoppingHook(monitor=METRIC_PREFIX + "bbox_mAP", rule="greater", min_delta=0.0,
                                      check_finite=False, patience=2)
    runner = Runner()
    for value in (0.1, 0.3, 0.3, 0.2):
        assert not runner.train_loop.stop_training
        hook.after_val_epoch(runner, {METRIC_PREFIX + "bbox_mAP": value})
    assert runner.train_loop.stop_training


def scripted_training(work_dir: Path, scores: list[float], interval: int, save_best: bool = True,
                      **hooks: Any) -> list[list[str]]:
    """A one-weight model trained by MMEngine's Runner with build_config's checkpoint hook
    (TrainyardCheckpointHook; with `save_best`, on a score the metric reads from `scores`, one
    per epoch) and the Trainyard hooks given; returns, for each report TrainyardReportHook wrote,
    the full checkpoints (`epoch_N.pth`) in the work dir as it wrote it."""
    import torch
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.registry import METRICS
    from mmengine.runner import Runner

    from services.trainer.evaluation import METRIC_PREFIX
    from services.trainer.hooks import TrainyardReportHook

    class OneWeight(BaseModel):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Linear(1, 1)

        def forward(self, inputs: Any, data_samples: Any = None, mode: str = "tensor") -> Any:
            out = self.weight(inputs)
            return {"loss": out.pow(2).mean()} if mode == "loss" else [out]

    remaining = list(scores)

    class ScriptedScore(BaseMetric):  # type: ignore[misc]
        def process(self, data_batch: Any, data_samples: Any) -> None:
            self.results.append(0)

        def compute_metrics(self, results: list[Any]) -> dict[str, float]:
            return {METRIC_PREFIX + "score": remaining.pop(0)}

    METRICS.register_module(name="ScriptedScore", module=ScriptedScore, force=True)
    written: list[list[str]] = []
    data = {"dataset": [{"inputs": torch.ones(1)}] * 2, "batch_size": 1,
            "sampler": {"type": "DefaultSampler", "shuffle": False}, "collate_fn": {"type": "default_collate"}}
    runner = Runner(
        model=OneWeight(), work_dir=str(work_dir), train_dataloader=data, val_dataloader=data,
        val_evaluator={"type": "ScriptedScore"}, val_cfg={}, default_scope="mmengine",
        # Its own message hub: by default named by the second it starts in, shared with a run of that second.
        experiment_name=f"{work_dir.name}-{uuid.uuid4().hex}",
        optim_wrapper={"optimizer": {"type": "SGD", "lr": 0.01}},
        train_cfg={"by_epoch": True, "max_epochs": len(scores), "val_interval": 1},
        default_hooks={"checkpoint": {"type": "TrainyardCheckpointHook", "interval": interval, "max_keep_ckpts": 10,
                                      "save_last": True,
                                      **({"save_best": METRIC_PREFIX + "score", "rule": "greater"} if save_best
                                         else {})}},
        custom_hooks=[*hooks.get("custom_hooks", []), {"type": "TrainyardReportHook"}],
    )
    for hook in runner.hooks:
        if isinstance(hook, TrainyardReportHook):
            hook.write = lambda report: written.append(sorted(p.name for p in work_dir.glob("epoch_*.pth")))
    runner.train()
    return written


def test_an_interval_saves_every_nth_epoch_the_last_and_each_new_best(tmp_path: Path) -> None:
    import torch

    # Best at epoch 1, before any checkpoint on the interval: MMEngine alone would keep its weights only.
    reports = scripted_training(tmp_path / "a", [0.9, 0.1, 0.2, 0.3], interval=2)
    assert reports == [["epoch_1.pth"], ["epoch_1.pth", "epoch_2.pth"], ["epoch_1.pth", "epoch_2.pth"],
                       ["epoch_1.pth", "epoch_2.pth", "epoch_4.pth"]], "each report follows its epoch's checkpoints"
    best = torch.load(tmp_path / "a" / "epoch_1.pth", map_location="cpu", weights_only=False)
    assert best["meta"]["epoch"] == 1 and "optimizer" in best, "a best epoch off the interval can be resumed from"
    assert (tmp_path / "a" / "best_trainyard_score_epoch_1.pth").is_file()
    # New bests at epochs 1, 2 and 3 (3 off the interval, after epoch 2 was saved on it).
    reports = scripted_training(tmp_path / "b", [0.1, 0.2, 0.9, 0.3], interval=2)
    assert reports[-1] == ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth", "epoch_4.pth"]
    # No new best after epoch 1: the interval and the last epoch only (5 epochs, interval 2).
    reports = scripted_training(tmp_path / "c", [0.9, 0.1, 0.1, 0.1, 0.1], interval=2)
    assert reports[-1] == ["epoch_1.pth", "epoch_2.pth", "epoch_4.pth", "epoch_5.pth"]


def test_a_limit_saves_the_epoch_it_stops_at_before_its_report(tmp_path: Path) -> None:
    from services.trainer.evaluation import METRIC_PREFIX

    # A limit on the score falling to 0.05 (the best being the highest): epoch 3 reaches it, is no
    # new best and is off the interval, and is saved all the same, before its report.
    limit = {"type": "TrainyardEarlyStoppingHook", "monitor": METRIC_PREFIX + "score", "rule": "less",
             "stopping_threshold": 0.05, "patience": 2**31, "min_delta": 0.0, "check_finite": False}
    reports = scripted_training(tmp_path, [0.9, 0.5, 0.01, 0.9, 0.9], interval=2, custom_hooks=[limit])
    assert reports == [["epoch_1.pth"], ["epoch_1.pth", "epoch_2.pth"], ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth"]]


def test_a_drain_off_the_interval_saves_the_epoch_it_stops_after(tmp_path: Path) -> None:
    from services.trainer.drain import DRAIN_MARKER

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / DRAIN_MARKER).touch()  # the trainer drains from the start: stop after epoch 1
    reports = scripted_training(tmp_path / "w", [0.1, 0.2, 0.3, 0.4], interval=2, save_best=False,
                                custom_hooks=[{"type": "TrainyardDrainHook"}])
    # Reported before the drain was decided, saved after: the trainer stores it on `drained`.
    assert reports == [[]]
    assert sorted(p.name for p in (tmp_path / "w").glob("epoch_*.pth")) == ["epoch_1.pth"]
