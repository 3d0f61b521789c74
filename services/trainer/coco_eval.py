"""COCO bbox metrics computed from a predictions file, so anyone can recompute them.

Each evaluation writes its predictions as a COCO results JSON
(`predictions/epoch_<N>.bbox.json` in the attempt's work dir, then the
artifact store: a list of `{image_id, category_id, bbox: [x, y, w, h], score}`).
The reported metrics are exactly what pycocotools' COCOeval gives on that file
against the validation annotation file, with its default parameters (maxDets
1, 10, 100), `params.imgIds` = every image of the annotation file and
`params.catIds` = the run's classes (by name), unrounded (CocoMetric rounds to
3 decimals, which no recomputation could match).

Every evaluation reports every key below. A value is None (JSON null) where
COCOeval gives -1, "undefined": nothing of that kind is in the ground truth
(a size range without boxes, a class without validation boxes, or crowd-only
ground truth, which COCO ignores). It is 0.0 where COCOeval gives 0, e.g.
every defined metric when nothing was predicted (pycocotools' `loadRes`
refuses an empty list; an empty results set is evaluated instead, which is
what COCOeval makes of it).

- bbox_mAP, bbox_mAP_50, bbox_mAP_75, bbox_mAP_s/m/l: `stats[0..5]`.
- bbox_AR_1, bbox_AR_10, bbox_AR_100, bbox_AR_s/m/l: `stats[6..11]` (the size
  ranges at 100 detections).
- AP/<class>: the class's AP over IoU 0.50:0.95 (area all, 100 detections),
  the mean of `eval["precision"][:, :, k, 0, 2]` over entries > -1. "." and
  "$" in a class name become "_" (MongoDB field names).
- precision_50, recall_50: at IoU 0.5 (area all, 100 detections), for each class
  with validation boxes the point of COCOeval's interpolated precision/recall
  curve (`eval["precision"][0, :, k, 0, 2]` over `params.recThrs`, -1 read as 0)
  with the best F1 = 2PR/(P+R) (the first such point; P = R = 0 when no point
  has a positive F1), then the mean over those classes.

Detections per image: COCO's 100, for every architecture (the 100 best scores
of each class in an image count). This is the evaluation's only COCOeval: the
generated config has no MMDetection CocoMetric beside it (it evaluated the same
predictions a second time, for train.log); TrainyardCocoMetric writes COCOeval's
table to train.log itself.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# COCOeval.stats index -> reported name.
STATS_KEYS = (
    "bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l",
    "bbox_AR_1", "bbox_AR_10", "bbox_AR_100", "bbox_AR_s", "bbox_AR_m", "bbox_AR_l",
)
# COCOeval's params.maxDets, and CocoMetric's proposal_nums in every generated config.
MAX_DETECTIONS = (1, 10, 100)

Metrics = dict[str, float | None]


def predictions_to_coco(
    predictions: Sequence[tuple[Any, np.ndarray, np.ndarray, np.ndarray]], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """(img_id, xyxy boxes, scores, labels) per image -> COCO results (xywh), as CocoMetric writes them."""
    results = []
    for img_id, boxes, scores, labels in predictions:
        for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
            results.append({"image_id": int(img_id), "category_id": int(category_ids[int(label)]),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return results


def category_ids(ann_file: str, classes: Sequence[str]) -> list[int]:
    """The annotation file's category id of each class, in class order."""
    by_name = {c["name"]: int(c["id"]) for c in json.loads(Path(ann_file).read_text())["categories"]}
    return [by_name[name] for name in classes]


def metric_name(class_name: str) -> str:
    return "AP/" + class_name.replace(".", "_").replace("$", "_")


def metric_names(classes: Sequence[str]) -> list[str]:
    """Every key an evaluation reports, for these classes."""
    return [*STATS_KEYS, *(metric_name(name) for name in classes), "precision_50", "recall_50"]


def _defined(value: float) -> float | None:
    return float(value) if value > -1 else None


def _results(gt: Any, results: list[dict[str, Any]]) -> Any:
    """`gt.loadRes(results)`, also for no results (which loadRes refuses): the same images and
    categories, no detections."""
    from pycocotools.coco import COCO

    if results:
        return gt.loadRes(results)
    empty = COCO()
    empty.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                     "annotations": []}
    empty.createIndex()
    return empty


def load_ground_truth(ann_file: str) -> Any:
    """pycocotools' COCO of the annotation file (evaluating never changes it: reusable)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(ann_file)


def evaluate(ann_file: str, predictions_file: str, classes: Sequence[str], gt: Any = None,
             summary: io.StringIO | None = None) -> Metrics:
    """The metrics above, from the files alone (`gt`: the annotation file already loaded;
    `summary` gets COCOeval's printed table)."""
    from pycocotools.cocoeval import COCOeval

    results = json.loads(Path(predictions_file).read_text())
    gt = gt if gt is not None else load_ground_truth(ann_file)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # pycocotools prints progress and tables
        cocoeval = COCOeval(gt, _results(gt, results), "bbox")
        cocoeval.params.imgIds = sorted(gt.getImgIds())
        cocoeval.params.catIds = category_ids(ann_file, classes)
        cocoeval.params.maxDets = list(MAX_DETECTIONS)
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    if summary is not None:
        text = printed.getvalue()
        summary.write(text[max(0, text.find(" Average Precision")):])  # the table, without the progress
    metrics: Metrics = {name: _defined(value) for name, value in zip(STATS_KEYS, cocoeval.stats, strict=True)}
    precision = cocoeval.eval["precision"]  # [IoU, recall point, class, area, max dets]
    recall_points = np.asarray(cocoeval.params.recThrs)
    best_p, best_r = [], []
    for k, name in enumerate(classes):
        curve = precision[:, :, k, 0, 2]
        if not (curve > -1).any():
            metrics[metric_name(name)] = None  # no validation box of this class: not measurable
            continue
        metrics[metric_name(name)] = float(curve[curve > -1].mean())
        p = np.clip(curve[0], 0.0, None)
        f1 = np.where(p + recall_points > 0, 2 * p * recall_points / np.maximum(p + recall_points, 1e-12), 0.0)
        i = int(np.argmax(f1))
        best_p.append(float(p[i]) if f1[i] > 0 else 0.0)
        best_r.append(float(recall_points[i]) if f1[i] > 0 else 0.0)
    metrics["precision_50"] = float(np.mean(best_p)) if best_p else None
    metrics["recall_50"] = float(np.mean(best_r)) if best_r else None
    return metrics
