"""COCO bbox metrics computed from a predictions file, so anyone can recompute them.

Each evaluation writes its predictions as a COCO results JSON
(`predictions/epoch_<N>.bbox.json` in the attempt's work dir: a list of
`{image_id, category_id, bbox: [x, y, w, h], score}`). The reported metrics
are exactly what pycocotools' COCOeval gives on that file against the
validation annotation file, with `params.imgIds` = every image of the
annotation file and `params.catIds` = the run's classes (by name), unrounded
(CocoMetric rounds to 3 decimals, which no recomputation could match):

- bbox_mAP, bbox_mAP_50, bbox_mAP_75, bbox_mAP_s/m/l: `stats[0..5]`; a size
  range without ground truth (-1) is left out.
- AP/<class>: the class's AP over IoU 0.50:0.95 (area all, 100 detections),
  the mean of `eval["precision"][:, :, k, 0, 2]` over entries > -1; a class
  without validation boxes is left out. "." and "$" in a class name become "_"
  (MongoDB field names).
- precision_50, recall_50: at IoU 0.5 (area all, 100 detections), for each class
  with validation boxes the point of COCOeval's interpolated precision/recall
  curve (`eval["precision"][0, :, k, 0, 2]` over `params.recThrs`, -1 read as 0)
  with the best F1 = 2PR/(P+R) (the first such point; P = R = 0 when no point
  has a positive F1), then the mean over those classes.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# COCOeval.stats index -> reported name.
STATS_KEYS = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_mAP_m", "bbox_mAP_l")
# Reported as 0.0 when there is nothing to evaluate (no prediction at all).
ALWAYS_REPORTED = ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75")


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


def evaluate(ann_file: str, predictions_file: str, classes: Sequence[str]) -> dict[str, float]:
    """The metrics above, from the files alone."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = json.loads(Path(predictions_file).read_text())
    if not results:  # loadRes cannot take an empty list; nothing predicted scores 0
        return dict.fromkeys(ALWAYS_REPORTED, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        gt = COCO(ann_file)
        dt = gt.loadRes(results)
        cocoeval = COCOeval(gt, dt, "bbox")
        cocoeval.params.imgIds = sorted(gt.getImgIds())
        cocoeval.params.catIds = category_ids(ann_file, classes)
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    metrics = {name: float(value) for name, value in zip(STATS_KEYS, cocoeval.stats, strict=False) if value >= 0}
    for name in ALWAYS_REPORTED:
        metrics.setdefault(name, 0.0)
    precision = cocoeval.eval["precision"]  # [IoU, recall point, class, area, max dets]
    recall_points = np.asarray(cocoeval.params.recThrs)
    best_p, best_r = [], []
    for k, name in enumerate(classes):
        curve = precision[:, :, k, 0, 2]
        if not (curve > -1).any():
            continue  # no validation box of this class: not measured
        metrics[metric_name(name)] = float(curve[curve > -1].mean())
        p = np.clip(curve[0], 0.0, None)
        f1 = np.where(p + recall_points > 0, 2 * p * recall_points / np.maximum(p + recall_points, 1e-12), 0.0)
        i = int(np.argmax(f1))
        best_p.append(float(p[i]) if f1[i] > 0 else 0.0)
        best_r.append(float(recall_points[i]) if f1[i] > 0 else 0.0)
    if best_p:
        metrics["precision_50"] = float(np.mean(best_p))
        metrics["recall_50"] = float(np.mean(best_r))
    return metrics
