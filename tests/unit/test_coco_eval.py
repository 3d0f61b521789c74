"""coco_eval against pycocotools and MMDetection's CocoMetric, on the hand-worked case and the edges:
no prediction at all, crowd-only ground truth, categories listed out of id order, more than 100 boxes
in an image. CocoMetric's unrounded numbers are read from the COCOeval it builds."""

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.trainer.coco_eval import STATS_KEYS, evaluate, metric_name, metric_names, predictions_to_coco

pytest.importorskip("pycocotools")

Prediction = tuple[int, np.ndarray, np.ndarray, np.ndarray]  # img_id, xyxy boxes, scores, labels


def write_coco(path: Path, categories: list[dict[str, Any]], annotations: list[dict[str, Any]],
               images: int = 1) -> str:
    path.write_text(json.dumps({
        "images": [{"id": i, "width": 640, "height": 640, "file_name": f"{i}.png"} for i in range(1, images + 1)],
        "annotations": [{"id": i, "iscrowd": 0, "area": a["bbox"][2] * a["bbox"][3], **a}
                        for i, a in enumerate(annotations, start=1)],
        "categories": categories,
    }))
    return str(path)


def ours(tmp_path: Path, ann_file: str, classes: Sequence[str], ids: Sequence[int],
         predictions: list[Prediction]) -> dict[str, float | None]:
    stored = tmp_path / "predictions.bbox.json"
    stored.write_text(json.dumps(predictions_to_coco(predictions, ids)))
    return evaluate(ann_file, str(stored), classes)


def pycocotools_eval(ann_file: str, results: list[dict[str, Any]], cat_ids: Sequence[int]) -> Any:
    """Plain pycocotools, default parameters; no results is an empty results set (loadRes refuses [])."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        if results:
            dt = gt.loadRes(results)
        else:
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        cocoeval = COCOeval(gt, dt, "bbox")
        cocoeval.params.imgIds = sorted(gt.getImgIds())
        cocoeval.params.catIds = list(cat_ids)
        cocoeval.evaluate()
        cocoeval.accumulate()
        cocoeval.summarize()
    return cocoeval


def coco_metric(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ann_file: str, classes: Sequence[str],
                predictions: list[Prediction], proposal_nums: Sequence[int] = (1, 10, 100),
                ) -> tuple[dict[str, float], Any, list[dict[str, Any]]]:
    """MMDetection's CocoMetric as the generated config sets it up: its results, its COCOeval, the results
    JSON it wrote."""
    torch = pytest.importorskip("torch")
    from mmdet.evaluation.metrics import coco_metric as module

    evaluations: list[Any] = []

    class RecordingCOCOeval(module.COCOeval):  # type: ignore[misc]
        def summarize(self) -> None:
            super().summarize()
            evaluations.append(self)

    monkeypatch.setattr(module, "COCOeval", RecordingCOCOeval)
    prefix = tmp_path / "cocometric"
    metric = module.CocoMetric(ann_file=ann_file, metric="bbox", classwise=True, proposal_nums=proposal_nums,
                               outfile_prefix=str(prefix))
    metric.dataset_meta = {"classes": tuple(classes)}
    metric.process({}, [{"img_id": img_id, "ori_shape": (640, 640),
                         "pred_instances": {"bboxes": torch.from_numpy(boxes.astype(np.float32)),
                                            "scores": torch.from_numpy(scores.astype(np.float32)),
                                            "labels": torch.from_numpy(labels.astype(np.int64))}}
                        for img_id, boxes, scores, labels in predictions])
    with contextlib.redirect_stdout(io.StringIO()):
        results = metric.compute_metrics(metric.results)
    written = prefix.with_name("cocometric.bbox.json")
    return results, evaluations[0] if evaluations else None, json.loads(written.read_text())


def expected(cocoeval: Any, classes: Sequence[str]) -> dict[str, float | None]:
    """Stats and per-class AP from a COCOeval, -1 as None."""
    values: dict[str, float | None] = {k: (float(v) if v > -1 else None)
                                       for k, v in zip(STATS_KEYS, cocoeval.stats, strict=True)}
    for k, name in enumerate(classes):
        curve = cocoeval.eval["precision"][:, :, k, 0, -1]
        values[metric_name(name)] = float(curve[curve > -1].mean()) if (curve > -1).any() else None
    return values


def assert_same(metrics: dict[str, float | None], reference: dict[str, float | None]) -> None:
    for key, value in reference.items():
        if value is None:
            assert metrics[key] is None, key
        else:
            assert metrics[key] == pytest.approx(value, abs=1e-9), key


def preds(img_id: int, boxes: list[list[float]], scores: list[float], labels: list[int]) -> Prediction:
    return (img_id, np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(scores, dtype=np.float32),
            np.array(labels, dtype=np.int64))


def test_per_class_ap_precision_and_recall_on_a_hand_worked_case(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ann = write_coco(tmp_path / "val.json",
                     [{"id": 7, "name": "a.b"}, {"id": 9, "name": "c"}, {"id": 11, "name": "unused"}],
                     [{"image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 20]},
                      {"image_id": 1, "category_id": 9, "bbox": [50, 50, 30, 30]}])
    # Class "a.b" found exactly (plus a stray low-score false positive); "c" missed entirely.
    predictions = [preds(1, [[10, 10, 30, 30], [60, 0, 70, 10]], [0.9, 0.1], [0, 0])]
    coco = predictions_to_coco(predictions, [7, 9])
    assert coco[0] == {"image_id": 1, "category_id": 7, "bbox": [10.0, 10.0, 20.0, 20.0], "score": pytest.approx(0.9)}
    metrics = ours(tmp_path, ann, ["a.b", "c"], [7, 9], predictions)
    assert list(metrics) == metric_names(["a.b", "c"])
    assert metrics["AP/a_b"] == pytest.approx(1.0) and metrics["AP/c"] == 0.0
    assert metrics["bbox_mAP"] == pytest.approx(0.5) and metrics["bbox_mAP_50"] == pytest.approx(0.5)
    assert metrics["bbox_AR_1"] == pytest.approx(0.5) and metrics["bbox_AR_100"] == pytest.approx(0.5)
    # Best-F1 point of "a.b" is P = R = 1; "c" has no point with F1 > 0.
    assert metrics["precision_50"] == pytest.approx(0.5) and metrics["recall_50"] == pytest.approx(0.5)
    assert metrics["bbox_mAP_l"] is None and metrics["bbox_AR_l"] is None  # no large boxes: undefined
    assert metrics["bbox_mAP_s"] == pytest.approx(0.5)

    results, cocoeval, written = coco_metric(monkeypatch, tmp_path, ann, ["a.b", "c"], predictions)
    assert_same(metrics, expected(cocoeval, ["a.b", "c"]))
    assert_same(metrics, expected(pycocotools_eval(ann, coco, [7, 9]), ["a.b", "c"]))
    assert [(r["image_id"], r["category_id"]) for r in written] == [(r["image_id"], r["category_id"]) for r in coco]
    assert results["bbox_mAP"] == round(metrics["bbox_mAP"] or -1, 3)


def test_no_prediction_reports_every_metric_zero_where_defined(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ann = write_coco(tmp_path / "val.json", [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
                     [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]}])
    metrics = ours(tmp_path, ann, ["a", "b"], [1, 2], [preds(1, [], [], [])])
    assert list(metrics) == metric_names(["a", "b"])  # every key, none missing
    reference = expected(pycocotools_eval(ann, [], [1, 2]), ["a", "b"])
    assert_same(metrics, reference)
    for key in ("bbox_mAP", "bbox_mAP_50", "bbox_mAP_75", "bbox_mAP_s", "bbox_AR_1", "bbox_AR_100", "bbox_AR_s",
                "AP/a", "precision_50", "recall_50"):
        assert metrics[key] == 0.0, key
    for key in ("bbox_mAP_m", "bbox_mAP_l", "bbox_AR_m", "bbox_AR_l", "AP/b"):  # no such ground truth
        assert metrics[key] is None, key
    # CocoMetric gives nothing at all here (loadRes of no results raises; it logs and stops).
    results, cocoeval, _ = coco_metric(monkeypatch, tmp_path, ann, ["a", "b"], [preds(1, [], [], [])])
    assert results == {} and cocoeval is None


def test_crowd_only_ground_truth_is_undefined_not_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ann = write_coco(tmp_path / "val.json", [{"id": 1, "name": "a"}],
                     [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 1}])
    predictions = [preds(1, [[10, 10, 30, 30]], [0.9], [0])]
    metrics = ours(tmp_path, ann, ["a"], [1], predictions)
    assert list(metrics) == metric_names(["a"])
    assert all(value is None for value in metrics.values()), metrics  # COCO ignores crowd boxes: -1 throughout
    results, cocoeval, _ = coco_metric(monkeypatch, tmp_path, ann, ["a"], predictions)
    assert list(cocoeval.stats) == [-1.0] * 12 and results["bbox_mAP"] == -1.0 and np.isnan(results["a_precision"])
    assert_same(metrics, expected(pycocotools_eval(ann, predictions_to_coco(predictions, [1]), [1]), ["a"]))


def test_categories_out_of_id_order_map_consistently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mmengine")
    from services.trainer.annotations import check_annotations

    # Listed out of id order, ids not contiguous; registration's classes are in id order: a(2), b(5), c(9).
    listed = [{"id": 9, "name": "c"}, {"id": 5, "name": "b"}, {"id": 2, "name": "a"}]
    boxes = {"a": [10, 10, 40, 40], "b": [100, 100, 60, 60], "c": [300, 300, 120, 100]}
    ids = {"a": 2, "b": 5, "c": 9}
    ann = write_coco(tmp_path / "val.json", listed, [{"image_id": 1, "category_id": ids[n], "bbox": b}
                                                     for n, b in boxes.items()])
    classes = ("a", "b", "c")
    # A perfect model: every class found where it is, labels in class order.
    predictions = [preds(1, [[x, y, x + w, y + h] for x, y, w, h in boxes.values()], [0.9, 0.8, 0.7], [0, 1, 2])]

    images, trained_on = check_annotations(ann, classes, "val", str(tmp_path / "work"))
    assert images == 1 and trained_on != ann
    assert [c["name"] for c in json.loads(Path(trained_on).read_text())["categories"]] == list(classes)
    # What the model is trained and evaluated on (the copy) and the user's file give the same numbers.
    metrics = ours(tmp_path, ann, classes, [2, 5, 9], predictions)
    assert metrics["bbox_mAP"] == pytest.approx(1.0) and all(metrics[f"AP/{n}"] == pytest.approx(1.0) for n in ids)
    assert metrics == ours(tmp_path, trained_on, classes, [2, 5, 9], predictions)
    results, cocoeval, written = coco_metric(monkeypatch, tmp_path, trained_on, classes, predictions)
    assert [r["category_id"] for r in written] == [2, 5, 9]
    assert_same(metrics, expected(cocoeval, classes))
    assert_same(metrics, expected(pycocotools_eval(ann, predictions_to_coco(predictions, [2, 5, 9]), [2, 5, 9]),
                                  classes))
    # On the user's file as listed, CocoMetric would give label 0 ("a") category 9: the perfect model scores 0.
    (tmp_path / "as-listed").mkdir()
    results, _, written = coco_metric(monkeypatch, tmp_path / "as-listed", ann, classes, predictions)
    assert [r["category_id"] for r in written] == [9, 5, 2] and results["bbox_mAP"] < 0.5
    # A file in class order is used as it is.
    assert check_annotations(trained_on, classes, "val", str(tmp_path / "other")) == (1, trained_on)


def test_more_than_100_boxes_in_an_image_count_100_everywhere(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    grid = [[20.0 * (i % 15), 20.0 * (i // 15), 15.0, 15.0] for i in range(150)]
    ann = write_coco(tmp_path / "val.json", [{"id": 1, "name": "a"}],
                     [{"image_id": 1, "category_id": 1, "bbox": b} for b in grid])
    rng = np.random.default_rng(0)
    predictions = [preds(1, [[x, y, x + w, y + h] for x, y, w, h in grid], list(rng.random(150)), [0] * 150)]
    metrics = ours(tmp_path, ann, ["a"], [1], predictions)
    # 150 exact boxes, 100 of which count: recall 2/3 at every IoU.
    assert metrics["bbox_AR_100"] == pytest.approx(100 / 150) and metrics["bbox_AR_10"] == pytest.approx(10 / 150)
    assert_same(metrics, expected(pycocotools_eval(ann, predictions_to_coco(predictions, [1]), [1]), ["a"]))
    results, cocoeval, _ = coco_metric(monkeypatch, tmp_path, ann, ["a"], predictions)
    assert_same(metrics, expected(cocoeval, ["a"]))
    assert results["bbox_mAP_50"] == round(metrics["bbox_mAP_50"] or -1, 3)
    # CocoMetric's default (100, 300, 1000) counts all 150 for mAP_50/75/s/m/l: the numbers the rule avoids.
    default, _, _ = coco_metric(monkeypatch, tmp_path, ann, ["a"], predictions, proposal_nums=(100, 300, 1000))
    assert default["bbox_mAP_50"] == 1.0 and (metrics["bbox_mAP_50"] or 0) < 0.7
