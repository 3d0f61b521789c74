"""Fine-tuning from an earlier model's checkpoint onto a dataset with fewer classes."""

import json
from pathlib import Path

import pytest

from services.trainer.reports import EpochReport, FinishedReport, StartedReport
from shared.events import BaseModelRef
from shared.specs import DatasetLayout
from tests.integration.test_architectures import tiny_job
from tests.integration.test_child_training import run_child

pytest.importorskip("mmdet")
pytestmark = pytest.mark.training


def drop_class(layout: DatasetLayout, name: str) -> DatasetLayout:
    """The same images with one class's boxes and category removed (annotation files rewritten beside)."""
    splits = {}
    for split in ("train", "val"):
        path = Path(getattr(layout, split).annotations)
        coco = json.loads(path.read_text())
        gone = {c["id"] for c in coco["categories"] if c["name"] == name}
        coco["categories"] = [c for c in coco["categories"] if c["id"] not in gone]
        coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] not in gone]
        out = path.with_name(f"{split}-without-{name}.json")
        out.write_text(json.dumps(coco))
        splits[split] = {"annotations": str(out), "images": getattr(layout, split).images}
    return DatasetLayout.model_validate(
        {"root": layout.root, **splits, "classes": [c for c in layout.classes if c != name]}
    )


def test_fine_tune_onto_two_classes_reinitialises_the_head(tmp_path: Path) -> None:
    first = tiny_job(tmp_path / "first", "rtmdet-tiny")
    rc, reports, log = run_child(first, tmp_path / "first")
    assert rc == 0, log[-3000:]
    finished = reports[-1]
    assert isinstance(finished, FinishedReport) and finished.checkpoint

    base = BaseModelRef(id="b" * 32, checkpoint=finished.checkpoint, classes=first.dataset.classes)
    second = tiny_job(tmp_path / "second", "rtmdet-tiny", base_model_id=base.id).model_copy(
        update={"base_model": base, "dataset": drop_class(first.dataset, "triangle")}
    )
    rc, reports, log = run_child(second, tmp_path / "second")
    assert rc == 0, log[-3000:]
    assert [r.kind for r in reports] == ["started", "epoch", "finished"]
    started, epoch = reports[0], reports[1]
    assert isinstance(started, StartedReport) and started.base_model_id == base.id
    # Only the classification convolutions depend on the class count.
    assert started.reinitialised and all("cls" in key for key in started.reinitialised), started.reinitialised
    assert "re-initialised" in log
    assert isinstance(epoch, EpochReport) and epoch.confusion_matrix is not None
    assert epoch.confusion_matrix.classes == ["circle", "square", "Background"]


def test_a_same_class_fine_tune_loads_everything(tmp_path: Path) -> None:
    import torch

    from services.trainer.transfer import prepare_base_weights

    state = {"a.weight": torch.zeros(3, 2), "head.cls.weight": torch.zeros(4, 2)}
    torch.save({"state_dict": state}, tmp_path / "base.pth")
    base = BaseModelRef(id="c" * 32, checkpoint=str(tmp_path / "base.pth"), classes=["x"])
    same = prepare_base_weights(base, state, tmp_path / "out.pth")
    assert same.reinitialised == [] and same.loaded == ["a.weight", "head.cls.weight"]
    other = prepare_base_weights(base, {**state, "head.cls.weight": torch.zeros(3, 2)}, tmp_path / "out.pth")
    assert other.reinitialised == ["head.cls.weight"]
    assert list(torch.load(tmp_path / "out.pth")["state_dict"]) == ["a.weight"]
