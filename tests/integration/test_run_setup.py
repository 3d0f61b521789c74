"""Datature-style setup fields of a run: `matrix` (confusion matrix or not) and `preview`
(evaluation previews), in the training child and at the API."""

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from services.trainer.previews import GROUND_TRUTH_COLOUR, PREVIEW_SCORE_THRESHOLD
from services.trainer.reports import EpochReport
from tests.helpers import problem_of
from trainyard.localstack import LocalStack
from trainyard.synth import write_synthetic_coco

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.training
def test_child_skips_the_matrix_and_renders_the_same_previews_every_evaluation(tmp_path: Path) -> None:
    pytest.importorskip("mmdet")
    from tests.integration.test_architectures import tiny_job
    from tests.integration.test_child_training import run_child

    job = tiny_job(tmp_path, "rtmdet-tiny", epochs=2, matrix=False, preview=True, preview_images=1)
    rc, reports, log = run_child(job, tmp_path)
    assert rc == 0, log[-3000:]
    epochs = [r for r in reports if isinstance(r, EpochReport)]
    assert [e.epoch for e in epochs] == [1, 2]
    val = json.loads(Path(job.dataset.val.annotations).read_text())
    first = min(val["images"], key=lambda image: image["id"])
    for epoch in epochs:
        assert epoch.confusion_matrix is None and "bbox_mAP" in epoch.metrics
        assert epoch.preview_score_threshold == PREVIEW_SCORE_THRESHOLD
        assert [(p.image_id, p.file_name) for p in epoch.previews] == [(first["id"], first["file_name"])]
        png = Path(epoch.previews[0].path)
        assert png == Path(job.work_dir) / "previews" / f"epoch_{epoch.epoch}" / f"{first['id']}.png"
        assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size < 100_000
        # The ground-truth boxes are drawn: the preview differs from the plain image at its size.
        drawn = np.asarray(Image.open(png).convert("RGB"), dtype=int)
        with Image.open(Path(job.dataset.val.images) / first["file_name"]) as source:
            plain = np.asarray(source.convert("RGB").resize((drawn.shape[1], drawn.shape[0] - 16)), dtype=int)
        changed = np.abs(drawn[: plain.shape[0]] - plain).sum(axis=2) > 60
        assert changed.mean() > 0.005, changed.mean()
        truth = (np.abs(drawn - GROUND_TRUTH_COLOUR).sum(axis=2) < 30).sum()
        assert truth > 100 and (np.abs(plain - GROUND_TRUTH_COLOUR).sum(axis=2) < 30).sum() == 0


@pytest.mark.training
def test_child_without_previews_writes_none(tmp_path: Path) -> None:
    pytest.importorskip("mmdet")
    from tests.integration.test_architectures import tiny_job
    from tests.integration.test_child_training import run_child

    job = tiny_job(tmp_path, "rtmdet-tiny")
    rc, reports, log = run_child(job, tmp_path)
    assert rc == 0, log[-3000:]
    epoch = next(r for r in reports if isinstance(r, EpochReport))
    assert epoch.confusion_matrix is not None and epoch.previews == [] and epoch.preview_score_threshold is None
    assert not (Path(job.work_dir) / "previews").exists()


def test_confusion_matrix_of_a_run_without_matrix_says_why(stack: LocalStack, tmp_path: Path) -> None:
    stack.start_servers()
    stack.start_service("api")
    data = write_synthetic_coco(tmp_path / "shapes", train_images=2, val_images=1, size=64).root
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.admin_key}"}) as api:
        dataset_id = api.post("/v1/datasets", json={"name": "s", "path": str(data)}).json()["id"]
        spec = {"name": "r", "dataset_id": dataset_id, "architecture": "rtmdet-tiny"}
        plain = api.post("/v1/runs", json=spec).json()
        bare = api.post("/v1/runs", json={**spec, "matrix": False}).json()
        assert (plain["spec"]["matrix"], bare["spec"]["matrix"]) == (True, False)
        body = problem_of(api.get(f"/v1/runs/{bare['id']}/confusion-matrix"), 404)
        assert body["detail"] == (f"run {bare['id']} was started with matrix=false: its evaluations compute no "
                                  "confusion matrix")
        # The matrix of a run with matrix=true is simply not there yet.
        assert "matrix=false" not in problem_of(api.get(f"/v1/runs/{plain['id']}/confusion-matrix"), 404)["detail"]
