"""The evaluator's Trainyard metrics: COCO metrics, the confusion matrix and previews.

build_config lists them in `val_evaluator` beside MMDetection's CocoMetric.
Each is an MMEngine `BaseMetric`: `process` keeps every rank's share of a
validation, and `BaseMetric.evaluate` gathers the shares on rank 0 (in dataset
order, without the sampler's padding), runs `compute_metrics` there and
broadcasts its result to every rank. So every hook after the evaluation
(CheckpointHook's save_best, early stopping, TrainyardReportHook) reads the
same values on every rank under `trainyard/<name>`.

Besides numbers (None where COCOeval gives -1: undefined), the results carry
what the epoch report sends beside them: the predictions file, the confusion
matrix and the preview files (MMEngine's logger writes scalars only). Those are
plain data (str, dict, list), never trainyard's classes: MMEngine's RuntimeInfoHook
keeps every result in the message hub, which each checkpoint pickles, and a
checkpoint must load where trainyard is not installed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, print_log
from mmengine.registry import METRICS

from services.trainer.coco_eval import category_ids, evaluate, load_ground_truth, predictions_to_coco
from services.trainer.confusion import confusion_matrix, to_event
from services.trainer.previews import PREVIEW_SCORE_THRESHOLD, choose_images, preview_path, render_preview
from services.trainer.reports import PreviewFile

# Every Trainyard metric's results are named trainyard/<name> in the evaluation's results.
PREFIX = "trainyard"
METRIC_PREFIX = PREFIX + "/"
# Results that are not numbers: the epoch report's own fields.
PREDICTIONS = "predictions"
CONFUSION_MATRIX = "confusion_matrix"
PREVIEWS = "previews"
# Where each evaluation's predictions go, relative to the work dir (COCO results JSON).
PREDICTIONS_DIR = "predictions"

Boxes = np.ndarray  # (N, 4) xyxy in original image coordinates


def predictions_path(work_dir: str | Path, epoch: int) -> Path:
    return Path(work_dir) / PREDICTIONS_DIR / f"epoch_{epoch}.bbox.json"


def evaluated_epoch() -> int:
    """The 1-based epoch whose validation this is: RuntimeInfoHook records the
    0-based epoch before each training epoch, and validation follows it."""
    return int(MessageHub.get_current_instance().get_info("epoch", 0)) + 1


class _DetectionMetric(BaseMetric):  # type: ignore[misc]
    """Keeps each validation image's predictions (and, with `with_truth`, its ground truth) as numpy."""

    default_prefix = PREFIX
    with_truth = False

    def process(self, data_batch: Any, data_samples: Sequence[dict[str, Any]]) -> None:
        for sample in data_samples:
            pred = sample["pred_instances"]
            result: dict[str, Any] = {
                "img_id": sample["img_id"], "img_path": sample.get("img_path", ""),
                "boxes": _numpy(pred["bboxes"]).reshape(-1, 4), "scores": _numpy(pred["scores"]).reshape(-1),
                "labels": _numpy(pred["labels"]).reshape(-1),
            }
            if self.with_truth:
                result["gt_boxes"], result["gt_labels"] = _ground_truth(sample)
            self.results.append(result)

    @property
    def classes(self) -> list[str]:
        return list((self.dataset_meta or {})["classes"])


@METRICS.register_module()
class TrainyardCocoMetric(_DetectionMetric):
    """COCO metrics from the predictions file: each evaluation's predictions are kept
    as COCO results JSON under the work dir and the metrics computed from that file
    with pycocotools (see coco_eval), so they can be recomputed exactly from what is stored."""

    def __init__(self, ann_file: str, work_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ann_file = ann_file
        self.work_dir = work_dir
        self._ground_truth: Any = None  # loaded at the first evaluation, then reused

    def compute_metrics(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        epoch = evaluated_epoch()
        path = predictions_path(self.work_dir, epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        predictions = [(r["img_id"], r["boxes"], r["scores"], r["labels"]) for r in results]
        path.write_text(json.dumps(predictions_to_coco(predictions, category_ids(self.ann_file, self.classes))))
        if self._ground_truth is None:
            self._ground_truth = load_ground_truth(self.ann_file)
        summary = io.StringIO()
        metrics = evaluate(self.ann_file, str(path), self.classes, gt=self._ground_truth, summary=summary)
        # The evaluation's one COCOeval: its table goes to train.log, as MMDetection's CocoMetric logs it.
        print_log(f"COCO bbox evaluation of epoch {epoch} (100 detections per image):\n{summary.getvalue()}",
                  logger="current")
        return {**metrics, PREDICTIONS: str(path)}


@METRICS.register_module()
class TrainyardConfusionMetric(_DetectionMetric):
    """The confusion matrix of the predictions against the annotations, as MMDetection's tool counts it."""

    with_truth = True

    def __init__(self, score_thr: float = 0.3, iou_thr: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score_thr = score_thr
        self.iou_thr = iou_thr

    def compute_metrics(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        matrix = confusion_matrix(
            [r["gt_boxes"] for r in results], [r["gt_labels"] for r in results],
            [r["boxes"] for r in results], [r["scores"] for r in results], [r["labels"] for r in results],
            num_classes=len(self.classes), score_thr=self.score_thr, iou_thr=self.iou_thr,
        )
        return {CONFUSION_MATRIX: to_event(matrix, self.classes, self.score_thr, self.iou_thr).model_dump()}


@METRICS.register_module()
class TrainyardPreviewMetric(_DetectionMetric):
    """Renders `images` validation images (always the same ones: the lowest ids under
    `data_root`) with their ground-truth and predicted boxes, as PNGs under the work dir."""

    with_truth = True

    def __init__(self, images: int, data_root: str, work_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.images = images
        self.data_root = data_root
        self.work_dir = work_dir

    def compute_metrics(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        epoch = evaluated_epoch()
        by_id = {r["img_id"]: r for r in results}
        chosen = choose_images([(r["img_id"], r["img_path"]) for r in results], self.images, root=self.data_root)
        files = []
        for img_id, img_path in chosen:
            r = by_id[img_id]
            png = render_preview(img_path, self.classes, r["gt_boxes"], r["gt_labels"], r["boxes"], r["scores"],
                                 r["labels"], epoch=epoch, score_thr=PREVIEW_SCORE_THRESHOLD)
            path = preview_path(self.work_dir, epoch, int(img_id))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            files.append(PreviewFile(image_id=int(img_id), file_name=Path(img_path).name, path=str(path)).model_dump())
        return {PREVIEWS: files}


def _ground_truth(sample: dict[str, Any]) -> tuple[Boxes, np.ndarray]:
    """Every annotated instance of the image, ignored (crowd) ones included, in original image
    coordinates (the val pipelines load boxes after resizing), as MMDetection's confusion-matrix tool
    reads `dataset.get_data_info(i)["instances"]`."""
    boxes, labels = [], []
    for key in ("gt_instances", "ignored_instances"):
        instances = sample.get(key) or {}
        if "bboxes" in instances:
            raw = instances["bboxes"]
            boxes.append(_numpy(getattr(raw, "tensor", raw)).reshape(-1, 4).astype(np.float32))
            labels.append(_numpy(instances["labels"]).reshape(-1).astype(np.int64))
    if not boxes:
        return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(boxes), np.concatenate(labels)


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
