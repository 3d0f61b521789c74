"""The synthetic COCO set: files where promised, valid COCO, same bytes for a seed."""

import json
from pathlib import Path

from PIL import Image

from trainyard.synth import CLASSES, write_synthetic_coco


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_coco_validity(tmp_path: Path) -> None:
    files = write_synthetic_coco(tmp_path / "set", train_images=6, val_images=3, size=96, seed=1)

    assert files.classes == CLASSES == ("circle", "square", "triangle")
    assert files.train_annotations == (tmp_path / "set" / "annotations" / "train.json").resolve()
    assert files.val_images == (tmp_path / "set" / "images" / "val").resolve()
    layout = files.layout()
    assert layout.classes == list(CLASSES) and layout.train.images == str(files.train_images)

    for ann_path, images_dir, count in (
        (files.train_annotations, files.train_images, 6),
        (files.val_annotations, files.val_images, 3),
    ):
        coco = json.loads(ann_path.read_text())
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
        assert [c["name"] for c in coco["categories"]] == list(CLASSES)
        assert len(coco["images"]) == count == len(list(images_dir.glob("*.png")))
        assert len({image["id"] for image in coco["images"]}) == count
        per_image: dict[int, int] = {}
        for image in coco["images"]:
            with Image.open(images_dir / image["file_name"]) as im:
                assert im.size == (image["width"], image["height"]) == (96, 96)
                assert im.mode == "RGB"
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 96 and y + h <= 96 and w > 0 and h > 0
            assert ann["area"] == w * h and ann["iscrowd"] == 0
            assert ann["category_id"] in (1, 2, 3)
            per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
        assert all(1 <= n <= 3 for n in per_image.values())
        assert set(per_image) == {image["id"] for image in coco["images"]}
        assert len({ann["id"] for ann in coco["annotations"]}) == len(coco["annotations"])


def test_pycocotools_reads_it(tmp_path: Path) -> None:
    import pytest

    coco_api = pytest.importorskip("pycocotools.coco")
    files = write_synthetic_coco(tmp_path, train_images=4, val_images=2)
    coco = coco_api.COCO(str(files.train_annotations))
    assert sorted(coco.getCatIds()) == [1, 2, 3]
    assert len(coco.getImgIds()) == 4


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = write_synthetic_coco(tmp_path / "a", train_images=5, val_images=2, seed=7)
    b = write_synthetic_coco(tmp_path / "b", train_images=5, val_images=2, seed=7)
    c = write_synthetic_coco(tmp_path / "c", train_images=5, val_images=2, seed=8)
    assert _tree(a.root) == _tree(b.root)
    assert _tree(a.root) != _tree(c.root)
