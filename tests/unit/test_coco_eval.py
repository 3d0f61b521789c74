import json
from pathlib import Path

import numpy as np
import pytest

from services.trainer.coco_eval import evaluate, predictions_to_coco

pytest.importorskip("pycocotools")


def test_per_class_ap_precision_and_recall_on_a_hand_worked_case(tmp_path: Path) -> None:
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [50, 50, 30, 30], "area": 900, "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "a.b"}, {"id": 9, "name": "c"}, {"id": 11, "name": "unused"}],
    }))
    # Class "a.b" found exactly (plus a stray low-score false positive); "c" missed entirely.
    boxes = np.array([[10, 10, 30, 30], [60, 0, 70, 10]], dtype=np.float32)
    preds = predictions_to_coco([(1, boxes, np.array([0.9, 0.1]), np.array([0, 0]))], [7, 9])
    assert preds[0] == {"image_id": 1, "category_id": 7, "bbox": [10.0, 10.0, 20.0, 20.0], "score": pytest.approx(0.9)}
    out = tmp_path / "p.json"
    out.write_text(json.dumps(preds))
    metrics = evaluate(str(ann), str(out), ["a.b", "c"])
    assert metrics["AP/a_b"] == pytest.approx(1.0) and metrics["AP/c"] == 0.0
    assert metrics["bbox_mAP"] == pytest.approx(0.5) and metrics["bbox_mAP_50"] == pytest.approx(0.5)
    # Best-F1 point of "a.b" is P = R = 1; "c" has no point with F1 > 0.
    assert metrics["precision_50"] == pytest.approx(0.5) and metrics["recall_50"] == pytest.approx(0.5)
    assert "bbox_mAP_l" not in metrics  # no large boxes: not measured


def test_no_predictions_score_zero(tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    out.write_text("[]")
    assert evaluate("unused", str(out), ["a"]) == {"bbox_mAP": 0.0, "bbox_mAP_50": 0.0, "bbox_mAP_75": 0.0}
