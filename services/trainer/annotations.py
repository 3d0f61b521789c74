"""The job's COCO annotation files, checked before training and put in class order."""

from __future__ import annotations

import json
from pathlib import Path


class DatasetError(ValueError):
    """The job's dataset files cannot be trained on; the message says why."""


def check_annotations(path: str, classes: tuple[str, ...], split: str, work_dir: str) -> tuple[int, str]:
    """Number of images with at least one box, and the annotation file to train and evaluate on;
    raises DatasetError naming the file.

    CocoDataset and CocoMetric number labels in the order the file lists its
    categories, not in the order of `classes` (registration's: by category id).
    A file listing them in another order is trained on through a copy under the
    work dir that lists them in class order: ids, images and annotations are
    unchanged, so predictions (by category id) and their metrics are the same
    against the user's file, and every label names the right class."""
    try:
        coco = json.loads(Path(path).read_text())
        names = [c["name"] for c in coco["categories"]]
        annotated = {a["image_id"] for a in coco["annotations"]}
        n_images = sum(1 for image in coco["images"] if image["id"] in annotated)
    except FileNotFoundError:
        raise DatasetError(f"dataset {split} annotation file {path}: not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"dataset {split} annotation file {path}: not COCO JSON ({exc!r})") from None
    missing = [c for c in classes if c not in names]
    if missing:
        raise DatasetError(f"dataset {split} annotation file {path}: classes {list(classes)}: "
                           f"categories {missing} not in the file")
    if n_images == 0:
        raise DatasetError(f"dataset {split} annotation file {path}: no image has an annotation")
    if [n for n in names if n in classes] == list(classes):
        return n_images, path
    rank = {name: i for i, name in enumerate(classes)}
    coco["categories"] = sorted(coco["categories"], key=lambda c: rank.get(c["name"], len(rank)))
    copy = Path(work_dir) / "annotations" / f"{split}.json"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(json.dumps(coco))
    return n_images, str(copy)
