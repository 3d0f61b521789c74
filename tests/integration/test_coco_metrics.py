"""The reported COCO metrics are reproducible with pycocotools from the stored predictions."""

import contextlib
import io
import json
from pathlib import Path

import pytest

from services.trainer.reports import EpochReport
from tests.integration.test_architectures import tiny_job
from tests.integration.test_child_training import run_child

pytest.importorskip("mmdet")
pytestmark = pytest.mark.training


def test_reported_map_is_recomputed_from_the_stored_predictions(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    job = tiny_job(tmp_path, "rtmdet-tiny", epochs=2)
    rc, reports, log = run_child(job, tmp_path)
    assert rc == 0, log[-3000:]
    epochs = [r for r in reports if isinstance(r, EpochReport)]
    assert [e.epoch for e in epochs] == [1, 2]
    classes = job.dataset.classes
    for report in epochs:
        stored = Path(job.work_dir) / "predictions" / f"epoch_{report.epoch}.bbox.json"
        results = json.loads(stored.read_text())
        assert results, "the tiny model predicted nothing: nothing to recompute"
        assert {"image_id", "category_id", "bbox", "score"} <= results[0].keys()

        # Plain pycocotools, as the docs (services/trainer/coco_eval.py) say anyone can run it.
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(job.dataset.val.annotations)
            cocoeval = COCOeval(gt, gt.loadRes(str(stored)), "bbox")
            cocoeval.params.imgIds = sorted(gt.getImgIds())
            cocoeval.params.catIds = [c["id"] for c in gt.loadCats(gt.getCatIds()) if c["name"] in classes]
            cocoeval.evaluate()
            cocoeval.accumulate()
            cocoeval.summarize()
        assert report.metrics["bbox_mAP"] == pytest.approx(cocoeval.stats[0], abs=1e-6)
        assert report.metrics["bbox_mAP_50"] == pytest.approx(cocoeval.stats[1], abs=1e-6)

        # Per-class AP, sizes, precision and recall at IoU 0.5 are all there and in range.
        per_class = {k: v for k, v in report.metrics.items() if k.startswith("AP/")}
        assert per_class and set(per_class) <= {f"AP/{c}" for c in classes}
        assert {"precision_50", "recall_50"} <= report.metrics.keys()
        assert all(v is None or 0.0 <= v <= 1.0 for v in report.metrics.values())
