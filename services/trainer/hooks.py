"""MMEngine hook that turns a training run into one EpochReport per epoch.

build_config adds `dict(type="TrainyardReportHook")` to custom_hooks; the
child then gives the built hook its writer (`hook.write = ...`), so the config
stays plain data and the hook is testable with a list's append.

Under distributed data parallel every rank runs these hooks: losses are summed
over the ranks, predictions gathered on rank 0, which computes the metrics
and writes the reports, and what the later hooks read (the metrics, a stop
decision) is broadcast from rank 0, so that every rank decides alike. Every
rank must make the same collective calls in the same order.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from mmengine.dist import all_reduce, broadcast_object_list, collect_results, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from services.trainer.coco_eval import Metrics, category_ids, evaluate, predictions_to_coco
from services.trainer.confusion import confusion_matrix, to_event
from services.trainer.previews import PREVIEW_SCORE_THRESHOLD, choose_images, preview_path, render_preview
from services.trainer.reports import EpochReport, IterationsReport, PreviewFile
from shared.events import ConfusionMatrix, IterationLog
from shared.specs import LOWER_IS_BETTER

T = TypeVar("T")

# TrainyardReportHook adds its metrics to each evaluation's results under this
# prefix, so CheckpointHook's save_best and TrainyardStopHook read the reported values.
METRIC_PREFIX = "trainyard/"
# Iteration logs are sent in batches of this many steps (and at each epoch's end).
ITERATIONS_PER_REPORT = 10
# Where each evaluation's predictions go, relative to the work dir (COCO results JSON).
PREDICTIONS_DIR = "predictions"


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite."""


def predictions_path(work_dir: str | Path, epoch: int) -> Path:
    return Path(work_dir) / PREDICTIONS_DIR / f"epoch_{epoch}.bbox.json"


@HOOKS.register_module()
class TrainyardReportHook(Hook):  # type: ignore[misc]
    """Accumulates losses, learning rate and time over a training epoch,
    collects the validation predictions, and writes one EpochReport after
    each validation (build_config validates every epoch).

    losses: mean over the epoch's iterations of every key the model reports
    whose name contains "loss" (not "acc" and the like), `loss` their total.
    learning_rate: of the first parameter group, in the epoch's last iteration.
    epoch_time_s: wall time from the start of the training epoch to the end
    of its validation. The confusion matrix compares the predictions with
    the validation dataset's annotations, as MMDetection's tool does (unless
    `matrix` is off). With `preview_images` > 0, each evaluation also renders
    that many validation images (always the same ones) with their ground-truth
    and predicted boxes, as PNGs under the work dir.
    """

    priority = "LOW"

    def __init__(
        self,
        score_thr: float = 0.3,
        iou_thr: float = 0.5,
        write: Callable[[Any], None] | None = None,
        val_loss: bool = False,
        log_interval: int = 10,
        matrix: bool = True,
        preview_images: int = 0,
    ) -> None:
        self.score_thr = score_thr
        self.matrix = matrix
        self.preview_images = preview_images
        self._preview_choice: list[tuple[int, str]] | None = None
        self.iou_thr = iou_thr
        # Validation loss costs a second forward pass per batch: only when a
        # checkpoint strategy or limit uses it.
        self.val_loss = val_loss
        self._val_loss_sum = 0.0
        self._val_batches = 0
        self.write: Callable[[Any], None] = write or _log_report
        self.log_interval = log_interval
        self._steps: list[IterationLog] = []
        self._loss_sums: dict[str, float] = {}
        self._iters = 0
        self._lr = 0.0
        self._started = 0.0
        self._epoch = 0  # 1-based number of the last finished training epoch
        self._reported = 0
        self._gt: dict[Any, tuple[np.ndarray, np.ndarray]] | None = None
        self._preds: list[tuple[Any, np.ndarray, np.ndarray, np.ndarray]] = []

    # training -----------------------------------------------------------
    def before_train_epoch(self, runner: Any) -> None:
        self._loss_sums = {}
        self._iters = 0
        self._started = time.perf_counter()

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: dict[str, Any] | None = None
    ) -> None:
        step_losses: dict[str, float] = {}
        for key, value in (outputs or {}).items():
            if "loss" not in key:
                continue
            number = float(value.item() if hasattr(value, "item") else value)
            if not math.isfinite(number):
                raise TrainingDiverged(
                    f"training diverged: {key} = {number} at epoch {runner.epoch + 1}, iteration "
                    f"{batch_idx + 1}; lower the learning_rate or raise the batch_size"
                )
            self._loss_sums[key] = self._loss_sums.get(key, 0.0) + number
            step_losses[key] = number
        self._iters += 1
        step = runner.iter + 1  # runner.iter counts from 0 and moves on after this hook
        if step % self.log_interval == 0 and step_losses:
            step_losses = _mean_over_ranks(step_losses)
            total = step_losses.pop("loss", sum(step_losses.values()))
            self._steps.append(IterationLog(step=step, epoch=runner.epoch + 1, loss=total, losses=step_losses,
                                            learning_rate=self._lr))
            if len(self._steps) >= ITERATIONS_PER_REPORT:
                self._flush_steps()

    def _flush_steps(self) -> None:
        if self._steps:
            self._write(IterationsReport(steps=self._steps))
            self._steps = []

    def _write(self, report: Any) -> None:
        if is_main_process():
            self.write(report)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        # Before ParamSchedulerHook steps it: the rate this iteration trains with.
        self._lr = float(next(iter(runner.optim_wrapper.get_lr().values()))[0])

    def after_train_epoch(self, runner: Any) -> None:
        self._epoch = runner.epoch + 1  # runner.epoch is still 0-based here
        # The epoch's losses over every rank's iterations.
        totals = _sum_over_ranks({**self._loss_sums, _ITERATIONS: float(self._iters)})
        self._iters = round(totals.pop(_ITERATIONS))
        self._loss_sums = totals
        self._flush_steps()  # an epoch's iteration logs go out before its report
        if not _validates_after(runner, self._epoch):
            # An epoch without evaluation (evaluation_interval > 1) is still
            # reported, with its losses and no COCO metrics or matrix.
            self._reported = self._epoch
            self._write(self._report(runner, metrics={}, matrix=None))

    # validation ---------------------------------------------------------
    def before_val_epoch(self, runner: Any) -> None:
        self._preds = []
        self._val_loss_sum, self._val_batches = 0.0, 0
        if self._gt is None:
            self._gt = _ground_truth(runner.val_dataloader.dataset)

    def after_val_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Sequence[Any] | None = None
    ) -> None:
        if self.val_loss and data_batch is not None:
            self._add_val_loss(runner, data_batch)
        for sample in outputs or []:
            pred = sample.pred_instances
            self._preds.append(
                (
                    sample.img_id,
                    _numpy(pred.bboxes).reshape(-1, 4),
                    _numpy(pred.scores).reshape(-1),
                    _numpy(pred.labels).reshape(-1),
                )
            )

    def after_val_epoch(self, runner: Any, metrics: dict[str, float | None] | None = None) -> None:
        # `metrics` (CocoMetric's, rounded to 3 decimals) is only logged: the report's come from coco_eval.
        if self._iters == 0 or self._epoch == self._reported:
            return  # a validation outside training (runner.val()), or one already reported
        dataset = runner.val_dataloader.dataset
        # Every rank's predictions, in dataset order (without the sampler's padding), on rank 0.
        self._preds = collect_results(self._preds, len(dataset), device="cpu") or []
        val_loss = _sum_over_ranks({"sum": self._val_loss_sum, "batches": float(self._val_batches)})
        reported: Metrics = {}
        if is_main_process():
            classes = list(dataset.metainfo["classes"])
            assert self._gt is not None
            matrix = self._confusion_matrix(classes) if self.matrix else None
            reported = self._coco_metrics(runner, classes)
            if val_loss["batches"]:
                reported["val_loss"] = val_loss["sum"] / val_loss["batches"]
            report = self._report(runner, reported, matrix).model_copy(
                update={"predictions": str(predictions_path(runner.work_dir, self._epoch))})
            if self.preview_images > 0:
                report = report.model_copy(update={"previews": self._render_previews(runner, classes),
                                                   "preview_score_threshold": PREVIEW_SCORE_THRESHOLD})
            self.write(report)
        # CheckpointHook's save_best and TrainyardStopHook read these on every rank; both skip
        # an undefined (None) value, and save_best needs its key present.
        reported = _from_rank_0(reported)
        if metrics is not None:
            metrics.update({METRIC_PREFIX + k: v for k, v in reported.items()})
        self._reported = self._epoch

    def _confusion_matrix(self, classes: list[str]) -> ConfusionMatrix:
        assert self._gt is not None
        gts = [self._gt[img_id] for img_id, *_ in self._preds]
        matrix = confusion_matrix(
            [boxes for boxes, _ in gts],
            [labels for _, labels in gts],
            [p[1] for p in self._preds],
            [p[2] for p in self._preds],
            [p[3] for p in self._preds],
            num_classes=len(classes),
            score_thr=self.score_thr,
            iou_thr=self.iou_thr,
        )
        return to_event(matrix, classes, self.score_thr, self.iou_thr)

    def _render_previews(self, runner: Any, classes: list[str]) -> list[PreviewFile]:
        """This evaluation's previews, written under the work dir: always the same validation images."""
        assert self._gt is not None
        if self._preview_choice is None:
            dataset = runner.val_dataloader.dataset
            infos = (dataset.get_data_info(index) for index in range(len(dataset)))
            self._preview_choice = choose_images([(info["img_id"], info["img_path"]) for info in infos],
                                                 self.preview_images)
        predictions = {img_id: (boxes, scores, labels) for img_id, boxes, scores, labels in self._preds}
        no_boxes, no_labels = np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64)
        files = []
        for img_id, img_path in self._preview_choice:
            gt_boxes, gt_labels = self._gt.get(img_id, (no_boxes, no_labels))
            boxes, scores, labels = predictions.get(img_id, (no_boxes, np.zeros(0, dtype=np.float32), no_labels))
            png = render_preview(img_path, classes, gt_boxes, gt_labels, boxes, scores, labels, epoch=self._epoch,
                                 score_thr=PREVIEW_SCORE_THRESHOLD)
            path = preview_path(runner.work_dir, self._epoch, int(img_id))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            files.append(PreviewFile(image_id=int(img_id), file_name=Path(img_path).name, path=str(path)))
        return files

    def _add_val_loss(self, runner: Any, data_batch: Any) -> None:
        """The model's training loss on one validation batch (in eval mode, no augmentation).

        The val pipelines load boxes after resizing, in original-image
        coordinates: they are scaled here to the network input, as the train
        pipeline's are. Runs inside ValLoop's no_grad."""
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
        losses = model(**data, mode="loss")
        total = 0.0
        for key, value in losses.items():
            if "loss" in key:
                values = value if isinstance(value, list | tuple) else [value]
                total += sum(float(v.sum()) for v in values)
        self._val_loss_sum += total
        self._val_batches += 1

    def _coco_metrics(self, runner: Any, classes: list[str]) -> Metrics:
        """Keep this evaluation's predictions as COCO results JSON and compute the
        reported metrics from that file with pycocotools (see coco_eval), so they
        can be recomputed exactly from what is stored."""
        ann_file = runner.val_dataloader.dataset.ann_file
        path = predictions_path(runner.work_dir, self._epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        results = predictions_to_coco(self._preds, category_ids(ann_file, classes))
        path.write_text(json.dumps(results))
        return evaluate(ann_file, str(path), classes)

    def _report(self, runner: Any, metrics: Metrics, matrix: ConfusionMatrix | None) -> EpochReport:
        losses = {k: v / self._iters for k, v in self._loss_sums.items()}
        total = losses.pop("loss", None)
        return EpochReport(
            epoch=self._epoch,
            total_epochs=runner.max_epochs,
            losses=losses,
            loss=total if total is not None else sum(losses.values()),
            learning_rate=self._lr,
            epoch_time_s=time.perf_counter() - self._started,
            metrics=metrics,
            confusion_matrix=matrix,
        )


@HOOKS.register_module()
class TrainyardStopHook(Hook):  # type: ignore[misc]
    """Ends training (successfully) after an evaluation where `limit_metric`
    reached `limit_value`, or when `patience_metric` has not improved for
    `patience` evaluations. Runs after CheckpointHook, so that epoch's
    checkpoints are written first; MMEngine's loop stops at its next check."""

    priority = "LOWEST"

    def __init__(self, limit_metric: str | None = None, limit_value: float | None = None,
                 patience_metric: str | None = None, patience: int | None = None) -> None:
        self.limit_metric, self.limit_value = limit_metric, limit_value
        self.patience_metric, self.patience = patience_metric, patience
        self._best: float | None = None
        self._stale = 0

    def after_val_epoch(self, runner: Any, metrics: dict[str, float | None] | None = None) -> None:
        metrics = metrics or {}
        reason = None
        if self.limit_metric is not None and self.limit_value is not None:
            value = metrics.get(METRIC_PREFIX + self.limit_metric)
            if value is not None and _better_or_equal(self.limit_metric, value, self.limit_value):
                reason = f"{self.limit_metric} = {value:.6g} reached the limit {self.limit_value:g}"
        if self.patience_metric is not None and self.patience is not None:
            value = metrics.get(METRIC_PREFIX + self.patience_metric)
            if value is not None:
                if self._best is None or (value != self._best
                                          and _better_or_equal(self.patience_metric, value, self._best)):
                    self._best, self._stale = value, 0
                else:
                    self._stale += 1
                if self._stale >= self.patience and reason is None:
                    reason = f"{self.patience_metric} has not improved for {self._stale} evaluations"
        # Rank 0's decision for all: a rank that stopped alone would leave the
        # others waiting for it in their next collective.
        reason = _from_rank_0(reason)
        if reason is not None:
            print_log(f"trainyard: stopping after epoch {runner.epoch}: {reason}", logger="current")
            runner.train_loop.stop_training = True


_ITERATIONS = "\0iterations"  # a key no loss has


def _sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over the ranks (as is, in a single process); every rank passes the same keys."""
    if get_world_size() == 1:
        return dict(values)
    import torch

    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    all_reduce(tensor, op="sum")  # on the backend's device, copied back in place
    return dict(zip(keys, tensor.tolist(), strict=True))


def _mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    world_size = get_world_size()
    return {k: v / world_size for k, v in _sum_over_ranks(values).items()}


def _from_rank_0(value: T) -> T:
    """Rank 0's value on every rank."""
    if get_world_size() == 1:
        return value
    box = [value]
    broadcast_object_list(box, src=0)
    return box[0]


def _better_or_equal(metric: str, value: float, than: float) -> bool:
    return value <= than if metric in LOWER_IS_BETTER else value >= than


def _validates_after(runner: Any, epoch: int) -> bool:
    """Whether MMEngine's EpochBasedTrainLoop validates after this (1-based) epoch."""
    loop = runner.train_loop
    if runner.val_loop is None or epoch < getattr(loop, "val_begin", 1):
        return False
    return epoch % getattr(loop, "val_interval", 1) == 0 or epoch == runner.max_epochs


def _ground_truth(dataset: Any) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
    """img_id -> (xyxy boxes, labels) of every annotated instance, ignored
    (crowd) ones included, in original image coordinates: the reference tool
    reads `dataset.get_data_info(i)["instances"]` the same way."""
    truth = {}
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        instances = info.get("instances", [])
        boxes = np.array([inst["bbox"] for inst in instances], dtype=np.float32).reshape(-1, 4)
        labels = np.array([inst["bbox_label"] for inst in instances], dtype=np.int64)
        truth[info["img_id"]] = (boxes, labels)
    return truth


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _log_report(report: EpochReport) -> None:
    print_log(f"trainyard report (no writer set): {report.model_dump_json()}", logger="current")
