"""Detection confusion matrix, as MMDetection's analysis tool computes it.

Reference: mmdet/.mim/tools/analysis_tools/confusion_matrix.py
(`analyze_per_img_dets`, mmdet 3.3.0) with its defaults score_thr=0.3 and
tp_iou_thr=0.5 and no extra NMS. Pure numpy, so it is testable without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from shared.events import ConfusionMatrix

BACKGROUND = "Background"


def box_iou(boxes1: ArrayLike, boxes2: ArrayLike, eps: float = 1e-6) -> np.ndarray:
    """IoU of every pair of xyxy boxes, shape (len(boxes1), len(boxes2)).

    Float32 like mmdet.evaluation.bbox_overlaps, so matches at exactly the IoU
    threshold fall the same way as in the reference.
    """
    a = np.asarray(boxes1, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(boxes2, dtype=np.float32).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    width = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    height = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    overlap = width * height
    union = np.maximum(area_a[:, None] + area_b[None, :] - overlap, np.float32(eps))
    ious: np.ndarray = (overlap / union).astype(np.float32)
    return ious


def confusion_matrix(
    gt_boxes: Sequence[ArrayLike],
    gt_labels: Sequence[ArrayLike],
    pred_boxes: Sequence[ArrayLike],
    pred_scores: Sequence[ArrayLike],
    pred_labels: Sequence[ArrayLike],
    num_classes: int,
    score_thr: float = 0.3,
    iou_thr: float = 0.5,
) -> np.ndarray:
    """Count detections against ground truth over a set of images.

    Every argument but the last three holds one entry per image: boxes are
    (N, 4) xyxy in the same coordinates for ground truth and predictions,
    labels are 0-based class indices. Returns an int64 matrix of shape
    (num_classes + 1, num_classes + 1): rows are ground truth, columns are
    predictions, index num_classes is background.

    Rules, exactly those of MMDetection's tool:
    - detections with score < score_thr are ignored;
    - a kept detection is counted once against EVERY ground-truth box it
      overlaps with IoU >= iou_thr, whatever that box's class: cell
      [gt class, predicted class]. So one detection over two boxes adds two
      counts, and a row can sum to more than the class's number of boxes;
    - a kept detection that overlaps no ground-truth box is a false positive:
      cell [background, predicted class];
    - a ground-truth box that no detection OF ITS OWN CLASS overlaps is a miss:
      cell [gt class, background], even when a detection of another class
      overlaps it (that confusion is then counted as well).
    There is no one-to-one matching: several detections on one box all count.
    """
    sizes = {len(gt_boxes), len(gt_labels), len(pred_boxes), len(pred_scores), len(pred_labels)}
    if len(sizes) != 1:
        raise ValueError("every per-image argument needs one entry per image")
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for g_boxes, g_labels, p_boxes, p_scores, p_labels in zip(
        gt_boxes, gt_labels, pred_boxes, pred_scores, pred_labels, strict=True
    ):
        gl = np.asarray(g_labels, dtype=np.int64).reshape(-1)
        keep = np.asarray(p_scores, dtype=np.float64).reshape(-1) >= score_thr
        pb = np.asarray(p_boxes, dtype=np.float32).reshape(-1, 4)[keep]
        pl = np.asarray(p_labels, dtype=np.int64).reshape(-1)[keep]

        matched = box_iou(pb, g_boxes) >= iou_thr  # (detections, ground truths)
        det_index, gt_index = np.nonzero(matched)
        np.add.at(matrix, (gl[gt_index], pl[det_index]), 1)
        np.add.at(matrix[background], pl[~matched.any(axis=1)], 1)

        found = np.zeros(len(gl), dtype=bool)
        same_class = gl[gt_index] == pl[det_index]
        found[gt_index[same_class]] = True
        np.add.at(matrix[:, background], gl[~found], 1)
    return matrix


def to_event(
    matrix: np.ndarray, classes: Sequence[str], score_thr: float = 0.3, iou_thr: float = 0.5
) -> ConfusionMatrix:
    """The matrix as the bus carries it, with "Background" appended to the classes."""
    names = [*classes, BACKGROUND]
    if matrix.shape != (len(names), len(names)):
        raise ValueError(f"matrix shape {matrix.shape} does not fit {len(classes)} classes plus background")
    return ConfusionMatrix(
        classes=names,
        matrix=[[int(v) for v in row] for row in matrix],
        score_threshold=score_thr,
        iou_threshold=iou_thr,
    )
