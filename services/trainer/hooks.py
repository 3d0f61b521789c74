"""The Trainyard MMEngine hooks: one job each.

build_config adds them to custom_hooks; the child then gives the reporting
hooks their writer (`hook.write = ...`), so the config stays plain data and
the hooks are testable with a list's append.

- TrainyardCheckpointHook: MMEngine's CheckpointHook, saving full checkpoints of new best
  epochs and of an epoch training stops early after (limit, patience, drain, rung), on
  checkpoint.interval or not.
- TrainyardDivergenceHook: a NaN or infinite loss ends the attempt with a message.
- TrainyardIterationLogHook: every log_interval steps an IterationLog, sent in batches.
- TrainyardValLossHook: the model's loss on the validation set (a second forward pass).
- TrainyardReportHook: one EpochReport per epoch, from the epoch's losses and the
  evaluation's results (services/trainer/evaluation.py: COCO metrics, matrix, previews).
- TrainyardEarlyStoppingHook: MMEngine's EarlyStoppingHook for limits and patience.
- TrainyardDrainHook: stops after the epoch in progress when the trainer drains
  (services/trainer/drain.py).

Under distributed data parallel every rank runs these hooks; losses are
summed over the ranks (services/trainer/ranks.py) and rank 0 writes the
reports. The evaluation's results are the same on every rank (BaseMetric
broadcasts them), so every rank decides alike.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, EarlyStoppingHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from services.trainer.drain import DRAIN_MARKER
from services.trainer.evaluation import CONFUSION_MATRIX, METRIC_PREFIX, PREDICTIONS, PREVIEWS
from services.trainer.previews import PREVIEW_SCORE_THRESHOLD
from services.trainer.ranks import from_rank_0, mean_over_ranks, sum_over_ranks, validates_after
from services.trainer.reports import EpochReport, IterationsReport
from shared.events import IterationLog

# Iteration logs are sent in batches of this many steps (and at each epoch's end).
ITERATIONS_PER_REPORT = 10


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite."""


def _loss_values(outputs: dict[str, Any] | None) -> dict[str, float]:
    """Every key the model reports whose name contains "loss" (not "acc" and the like), as floats."""
    return {key: float(value.item() if hasattr(value, "item") else value)
            for key, value in (outputs or {}).items() if "loss" in key}


def _learning_rate(runner: Any) -> float:
    """The rate of the first parameter group; before ParamSchedulerHook steps it, the one this iteration trains with."""
    return float(runner.optim_wrapper.get_lr()["lr"][0])


class ReportingHook(Hook):  # type: ignore[misc]
    """A hook that writes reports (ChildReports); only rank 0's go out."""

    def __init__(self, write: Callable[[Any], None] | None = None) -> None:
        self.write: Callable[[Any], None] = write or _log_report

    def _write(self, report: Any) -> None:
        if is_main_process():
            self.write(report)


# Between CheckpointHook (VERY_LOW, 90) and the hooks at LOWEST (100): early stopping decides
# after the epoch's checkpoints are written, and may add one (TrainyardCheckpointHook.save_epoch);
# the epoch's report goes out once every checkpoint of the epoch is written, as the trainer
# stores the epoch's file when it reads the report (services/trainer/checkpoints.py), and before
# the rung and drain hooks, which wait on or follow it.
EARLY_STOPPING_PRIORITY = 91
REPORT_PRIORITY = 95


@HOOKS.register_module()
class TrainyardCheckpointHook(CheckpointHook):  # type: ignore[misc]
    """MMEngine's CheckpointHook (every `interval` epochs and the last one, build_config's
    checkpoint.interval), which also writes the full checkpoint (optimizer and schedule
    included, `epoch_N.pth`) of every new best epoch, and of an epoch after which a limit,
    patience, a drain or a rung decision stops training (`save_stopped_epoch`).

    MMEngine's save_best writes the best epoch's weights alone (`best_<metric>_epoch_N.pth`,
    what the model is made of) and re-saves that epoch's full checkpoint only once it has
    saved a regular one in this process; here it always does, so the trainer stores the best
    epoch, off the interval or not, as one a run can resume from."""

    def after_val_epoch(self, runner: Any, metrics: dict[str, Any]) -> None:
        best_before = getattr(self, "best_ckpt_path", None)
        super().after_val_epoch(runner, metrics)
        if getattr(self, "best_ckpt_path", None) != best_before:
            self.save_epoch(runner, runner.epoch)  # counted by now

    def save_epoch(self, runner: Any, epoch: int) -> None:
        """The full checkpoint of `epoch` (1-based, the one just trained), unless it is written already."""
        if self.last_ckpt is not None and Path(self.last_ckpt).name == self.filename_tmpl.format(epoch):
            return
        # An explicit meta: Runner.save_checkpoint would otherwise count runner.epoch + 1, right
        # only in after_train_epoch; a resume continues after meta's epoch.
        self._save_checkpoint_with_step(runner, epoch, meta={"epoch": epoch, "iter": runner.iter})


def save_stopped_epoch(runner: Any, epoch: int) -> None:
    """Training stops after `epoch`: save its full checkpoint, on checkpoint.interval or not."""
    for hook in runner.hooks:
        if isinstance(hook, TrainyardCheckpointHook):
            hook.save_epoch(runner, epoch)


@HOOKS.register_module()
class TrainyardDivergenceHook(Hook):  # type: ignore[misc]
    """Fails the attempt at the first NaN or infinite loss, with a message a person can act on.
    (MMEngine's CheckInvalidLossHook checks the total loss every `interval` iterations only.)"""

    priority = "ABOVE_NORMAL"  # before any hook records the iteration's losses

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: dict[str, Any] | None = None) -> None:
        for key, number in _loss_values(outputs).items():
            if not math.isfinite(number):
                raise TrainingDiverged(
                    f"training diverged: {key} = {number} at epoch {runner.epoch + 1}, iteration "
                    f"{batch_idx + 1}; lower the learning_rate or raise the batch_size")


@HOOKS.register_module()
class TrainyardIterationLogHook(ReportingHook):
    """Every `log_interval` steps, the step's losses (mean over the ranks) and learning rate as an
    IterationLog; sent as an IterationsReport every ITERATIONS_PER_REPORT logs and at each epoch's end."""

    priority = "BELOW_NORMAL"  # an epoch's iteration logs go out before its report (TrainyardReportHook)

    def __init__(self, log_interval: int = 10, write: Callable[[Any], None] | None = None) -> None:
        super().__init__(write)
        self.log_interval = log_interval
        self._steps: list[IterationLog] = []
        self._lr = 0.0

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._lr = _learning_rate(runner)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: dict[str, Any] | None = None) -> None:
        step = runner.iter + 1  # runner.iter counts from 0 and moves on after this hook
        losses = _loss_values(outputs)
        if step % self.log_interval != 0 or not losses:
            return
        losses = mean_over_ranks(losses)
        total = losses.pop("loss", sum(losses.values()))
        self._steps.append(IterationLog(step=step, epoch=runner.epoch + 1, loss=total, losses=losses,
                                        learning_rate=self._lr))
        if len(self._steps) >= ITERATIONS_PER_REPORT:
            self._flush()

    def after_train_epoch(self, runner: Any) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._steps:
            self._write(IterationsReport(steps=self._steps))
            self._steps = []


@HOOKS.register_module()
class TrainyardValLossHook(Hook):  # type: ignore[misc]
    """The model's training loss on the validation set (in eval mode, no augmentation), mean over
    every rank's batches, as `trainyard/val_loss` in the evaluation's results. It costs a second
    forward pass per batch: build_config adds it only when a checkpoint strategy or limit uses it."""

    priority = "NORMAL"  # before the hooks that read the results (report, save_best, early stopping)

    def __init__(self) -> None:
        self._sum = 0.0
        self._batches = 0

    def before_val_epoch(self, runner: Any) -> None:
        self._sum, self._batches = 0.0, 0

    def after_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                       outputs: Sequence[Any] | None = None) -> None:
        """The val pipelines load boxes after resizing, in original-image coordinates: they are
        scaled here to the network input, as the train pipeline's are. Runs inside ValLoop's no_grad."""
        if data_batch is None:
            return
        samples = [sample.clone() for sample in data_batch["data_samples"]]
        for sample in samples:
            sx, sy = sample.metainfo.get("scale_factor", (1.0, 1.0))
            boxes = sample.gt_instances.bboxes
            if hasattr(boxes, "rescale_"):  # mmdet's box types (HorizontalBoxes)
                boxes.rescale_((sx, sy))
            else:
                sample.gt_instances.bboxes = boxes * boxes.new_tensor([sx, sy, sx, sy])
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        data = model.data_preprocessor({**data_batch, "data_samples": samples}, False)
        for key, value in model(**data, mode="loss").items():
            if "loss" in key:
                values = value if isinstance(value, list | tuple) else [value]
                self._sum += sum(float(v.sum()) for v in values)
        self._batches += 1

    def after_val_epoch(self, runner: Any, metrics: dict[str, Any] | None = None) -> None:
        totals = sum_over_ranks({"sum": self._sum, "batches": float(self._batches)})
        if metrics is not None and totals["batches"]:
            metrics[METRIC_PREFIX + "val_loss"] = totals["sum"] / totals["batches"]


@HOOKS.register_module()
class TrainyardReportHook(ReportingHook):
    """One EpochReport after each training epoch's validation, or after the epoch itself when it is
    not validated (evaluation_interval > 1: losses only, no COCO metrics or matrix).

    losses: mean over the epoch's iterations (on every rank) of every key the model reports whose
    name contains "loss", `loss` their total. learning_rate: of the first parameter group, in the
    epoch's last iteration. epoch_time_s: wall time from the start of the training epoch to the
    end of its validation. metrics, confusion matrix, predictions and previews: the evaluation's
    trainyard/ results (services/trainer/evaluation.py, TrainyardValLossHook)."""

    priority = REPORT_PRIORITY

    def __init__(self, write: Callable[[Any], None] | None = None) -> None:
        super().__init__(write)
        self._loss_sums: dict[str, float] = {}
        self._iters = 0
        self._lr = 0.0
        self._started = 0.0
        self._epoch = 0  # 1-based number of the last finished training epoch
        self._reported = 0

    def before_train_epoch(self, runner: Any) -> None:
        self._loss_sums, self._iters = {}, 0
        self._started = time.perf_counter()

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._lr = _learning_rate(runner)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: dict[str, Any] | None = None) -> None:
        for key, number in _loss_values(outputs).items():
            self._loss_sums[key] = self._loss_sums.get(key, 0.0) + number
        self._iters += 1

    def after_train_epoch(self, runner: Any) -> None:
        self._epoch = runner.epoch + 1  # runner.epoch is still 0-based here
        self._loss_sums = sum_over_ranks(self._loss_sums)  # every rank has the model's same loss keys
        self._iters = round(sum_over_ranks({"iterations": float(self._iters)})["iterations"])
        if not validates_after(runner, self._epoch):
            self._reported = self._epoch
            self._write(self._report(runner))

    def after_val_epoch(self, runner: Any, metrics: dict[str, Any] | None = None) -> None:
        if self._iters == 0 or self._epoch == self._reported:
            return  # a validation outside training (runner.val()), or one already reported
        ours = {k[len(METRIC_PREFIX):]: v for k, v in (metrics or {}).items() if k.startswith(METRIC_PREFIX)}
        extras: dict[str, Any] = {"predictions": ours.pop(PREDICTIONS, None),
                                  "confusion_matrix": ours.pop(CONFUSION_MATRIX, None)}
        previews = ours.pop(PREVIEWS, None)
        if previews is not None:
            extras.update(previews=previews, preview_score_threshold=PREVIEW_SCORE_THRESHOLD)
        # Validated: the evaluator's results are plain data (services/trainer/evaluation.py).
        self._write(EpochReport.model_validate({**self._report(runner).model_dump(), "metrics": ours, **extras}))
        self._reported = self._epoch

    def _report(self, runner: Any) -> EpochReport:
        losses = {k: v / self._iters for k, v in self._loss_sums.items()}
        total = losses.pop("loss", None)
        return EpochReport(
            epoch=self._epoch,
            total_epochs=runner.max_epochs,
            losses=losses,
            loss=total if total is not None else sum(losses.values()),
            learning_rate=self._lr,
            epoch_time_s=time.perf_counter() - self._started,
        )


@HOOKS.register_module()
class TrainyardEarlyStoppingHook(EarlyStoppingHook):  # type: ignore[misc]
    """MMEngine's EarlyStoppingHook, with a limit that stops when it is reached (MMEngine's
    `stopping_threshold` needs it passed) and patience that counts an equal value as no
    improvement (MMEngine's, with min_delta 0, counts it as one); an undefined (None) value
    is skipped, as CheckpointHook's save_best skips it. Runs after CheckpointHook, so that
    epoch's checkpoints are written first; the loop stops at its next check. The epoch it stops
    at is saved even off checkpoint.interval: the run's model (its last epoch, or the one that
    reached the limit) must be stored. build_config adds one for the limit
    (`stopping_threshold`) and one for patience."""

    priority = EARLY_STOPPING_PRIORITY
    rule_map: ClassVar[dict[str, Callable[[float, float], bool]]] = {"greater": operator.ge, "less": operator.le}

    def after_val_epoch(self, runner: Any, metrics: dict[str, Any] | None = None) -> None:
        if (metrics or {}).get(self.monitor) is None:
            return
        super().after_val_epoch(runner, metrics)
        if runner.train_loop.stop_training:
            save_stopped_epoch(runner, runner.epoch)  # counted by now


@HOOKS.register_module()
class TrainyardDrainHook(Hook):  # type: ignore[misc]
    """Stops training after the reported epoch during which the trainer asked for a drain.

    Lowest priority: the epoch's checkpoints (TrainyardCheckpointHook) and report
    (TrainyardReportHook) come first, and a stop decided by TrainyardEarlyStoppingHook
    (the run is done) is not mistaken for a drain. The epoch it stops after is saved, on
    checkpoint.interval or not, after its report: the trainer stores it once the child
    reports the drain (services/trainer/checkpoints.py, `queue_saved_late`), so the next
    attempt resumes after it."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.drained_after: int | None = None

    def after_train_epoch(self, runner: Any) -> None:
        epoch = runner.epoch + 1  # still 0-based here
        if not validates_after(runner, epoch):  # an epoch without evaluation is reported now
            self._check(runner, epoch)

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        self._check(runner, runner.epoch)  # counted by now

    def _check(self, runner: Any, epoch: int) -> None:
        loop = runner.train_loop
        if loop.stop_training or epoch >= runner.max_epochs:
            return  # the run ends here anyway: that is a finish, not a drain
        if from_rank_0((Path(runner.work_dir) / DRAIN_MARKER).exists()):
            print_log(f"trainyard: the trainer drains; stopping after epoch {epoch}", logger="current")
            self.drained_after = epoch
            loop.stop_training = True
            save_stopped_epoch(runner, epoch)


def _log_report(report: Any) -> None:
    print_log(f"trainyard report (no writer set): {report.model_dump_json()}", logger="current")
