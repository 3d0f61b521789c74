"""Checks a COCO dataset on disk and reports every problem with file, id, field and value."""

import json
import math
import os
import re
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeGuard

from PIL import Image, UnidentifiedImageError

MAX_PROBLEMS = 100


@dataclass(frozen=True)
class DatasetLimits:
    """What one dataset may hold; each is a setting of the API (shared/settings.py)."""

    max_annotation_bytes: int = 256 * 1024 * 1024
    max_json_depth: int = 32
    max_images: int = 200_000
    max_image_pixels: int = 40_000_000


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
# Openers count +1 and closers -1 after translate(): every other byte is deleted first.
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_DELTA = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(raw: bytes) -> int:
    """Deepest nesting of arrays and objects, counted without parsing (so no recursion):
    escapes and strings are cut out by regular expressions, then the brackets left are summed."""
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", raw)).translate(None, _BRACKETS)
    return max(accumulate(_DELTA[b] for b in brackets), default=0)


def inside(path: Path, root: Path) -> bool:
    """Whether `path` resolves, through every symlink, to somewhere under `root` (resolved too)."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


@dataclass(frozen=True)
class Problem:
    file: str
    message: str
    field: str | None = None
    image_id: Any = None
    annotation_id: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class SplitSummary:
    images: int = 0
    boxes: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)


@dataclass
class SplitReport:
    summary: SplitSummary
    categories: list[tuple[int, str]]
    problems: list[Problem]


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_split(annotations: Path, images_dir: Path, root: Path | None = None,
                   limits: DatasetLimits = DatasetLimits()) -> SplitReport:
    """Validate one annotation file against its image directory; every image must lie under `root`."""
    problems: list[Problem] = []
    f = str(annotations)

    def problem(message: str, **where: Any) -> None:
        problems.append(Problem(file=where.pop("file", f), message=message, **where))

    summary = SplitSummary()
    if not annotations.is_file():
        problem("annotation file does not exist")
        return SplitReport(summary, [], problems)
    if not images_dir.is_dir():
        problem("image directory does not exist", file=str(images_dir))
        return SplitReport(summary, [], problems)
    # Refused by size before a byte is read, then by depth before the parser can recurse.
    size = annotations.stat().st_size
    if size > limits.max_annotation_bytes:
        problem(f"annotation file is {size} bytes, over the limit of {limits.max_annotation_bytes} bytes")
        return SplitReport(summary, [], problems)
    raw = annotations.read_bytes()
    depth = json_depth(raw)
    if depth > limits.max_json_depth:
        problem(f"JSON nested {depth} levels deep, over the limit of {limits.max_json_depth}")
        return SplitReport(summary, [], problems)
    try:
        data = json.loads(raw.decode())
    except RecursionError:  # the depth count above makes this unreachable; never a 500 all the same
        problem(f"JSON nested too deeply (limit {limits.max_json_depth})")
        return SplitReport(summary, [], problems)
    except UnicodeDecodeError as error:
        problem(f"not UTF-8 text: {error}")
        return SplitReport(summary, [], problems)
    except json.JSONDecodeError as error:
        problem(f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}")
        return SplitReport(summary, [], problems)
    if not isinstance(data, dict):
        problem("top level must be a JSON object with images, annotations and categories")
        return SplitReport(summary, [], problems)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problem(f"missing or not a list: {key!r}", field=key)
    if problems:
        return SplitReport(summary, [], problems)
    if len(data["images"]) > limits.max_images:
        problem(f"{len(data['images'])} images, over the limit of {limits.max_images}", field="images")
        return SplitReport(summary, [], problems)

    categories: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            problem("each category needs an integer id and a string name", field=f"categories[{i}]")
        elif cat["id"] in categories:
            problem(f"duplicate category id {cat['id']}", field=f"categories[{i}].id")
        else:
            categories[cat["id"]] = cat["name"]
    if not categories:
        problem("no categories: a detector needs at least one class", field="categories")

    images: dict[Any, dict[str, Any]] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict):
            problem("not an object", field=f"images[{i}]")
            continue
        image_id = image.get("id")
        if not isinstance(image_id, int):
            problem(f"image id must be an integer, got {image_id!r}", field=f"images[{i}].id")
            continue
        if image_id in images:
            problem(f"duplicate image id {image_id}", field=f"images[{i}].id", image_id=image_id)
            continue
        images[image_id] = image
        width, height, name = image.get("width"), image.get("height"), image.get("file_name")
        if not (_number(width) and _number(height) and width > 0 and height > 0):
            problem(f"width and height must be positive numbers, got {width!r} x {height!r}",
                    field=f"images[{i}].width", image_id=image_id)
        if not isinstance(name, str) or not name:
            problem("file_name missing", field=f"images[{i}].file_name", image_id=image_id)
            continue
        path = images_dir / name
        if root is not None and not inside(path, root):
            # Said the same whether or not the outside file exists.
            problem(f"file_name {name!r} resolves outside the dataset's root {root}",
                    field=f"images[{i}].file_name", image_id=image_id)
            continue
        if not path.is_file():
            problem("image file does not exist", file=str(path), image_id=image_id)
            continue
        try:
            with Image.open(path) as img:
                actual = img.size
                if actual[0] * actual[1] > limits.max_image_pixels:
                    problem(f"image is {actual[0]}x{actual[1]} pixels, over the limit of "
                            f"{limits.max_image_pixels} pixels", file=str(path), image_id=image_id)
                    continue
                img.verify()
        except Image.DecompressionBombError as error:
            problem(f"image is over the limit of {limits.max_image_pixels} pixels: {error}",
                    file=str(path), image_id=image_id)
            continue
        except (UnidentifiedImageError, OSError) as error:
            problem(f"image cannot be decoded: {error}", file=str(path), image_id=image_id)
            continue
        if _number(width) and _number(height) and actual != (width, height):
            problem(f"declared size {width}x{height} but the file is {actual[0]}x{actual[1]}",
                    file=str(path), field=f"images[{i}].width", image_id=image_id)
    summary.images = len(images)

    seen_annotations: set[Any] = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            problem("not an object", field=where)
            continue
        ann_id = ann.get("id")
        if ann_id in seen_annotations:
            problem(f"duplicate annotation id {ann_id}", field=f"{where}.id", annotation_id=ann_id)
        seen_annotations.add(ann_id)
        image = images.get(ann.get("image_id"))
        if image is None:
            problem(f"image_id {ann.get('image_id')!r} is not an image of this file",
                    field=f"{where}.image_id", annotation_id=ann_id)
            continue
        if ann.get("category_id") not in categories:
            problem(f"category_id {ann.get('category_id')!r} is not a category of this file",
                    field=f"{where}.category_id", annotation_id=ann_id, image_id=image["id"])
            continue
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            problem(f"bbox must be [x, y, width, height] numbers, got {bbox!r}",
                    field=f"{where}.bbox", annotation_id=ann_id, image_id=image["id"])
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            problem(f"bbox {bbox} has non-positive size", field=f"{where}.bbox",
                    annotation_id=ann_id, image_id=image["id"])
            continue
        width, height = image.get("width"), image.get("height")
        if _number(width) and _number(height) and (x < 0 or y < 0 or x + w > width + 1e-3 or y + h > height + 1e-3):
            problem(f"bbox {bbox} lies outside its {width}x{height} image", field=f"{where}.bbox",
                    annotation_id=ann_id, image_id=image["id"])
            continue
        summary.boxes += 1
        cls = categories[ann["category_id"]]
        summary.boxes_per_class[cls] = summary.boxes_per_class.get(cls, 0) + 1
    return SplitReport(summary, sorted(categories.items()), problems)


@dataclass
class DatasetReport:
    classes: list[str]
    train: SplitSummary
    val: SplitSummary
    problems: list[Problem]
    # All problems found; `problems` holds the first MAX_PROBLEMS of them.
    problem_count: int = 0


def validate_dataset(train_annotations: Path, train_images: Path,
                     val_annotations: Path, val_images: Path, root: Path | None = None,
                     limits: DatasetLimits = DatasetLimits()) -> DatasetReport:
    train = validate_split(train_annotations, train_images, root, limits)
    val = validate_split(val_annotations, val_images, root, limits)
    problems = train.problems + val.problems
    if train.categories and val.categories and train.categories != val.categories:
        problems.append(Problem(
            file=str(val_annotations), field="categories",
            message=f"categories differ from {train_annotations}: {val.categories} vs {train.categories}",
        ))
    if not problems and train.summary.boxes == 0:
        problems.append(Problem(file=str(train_annotations), field="annotations",
                                message="no valid boxes to train on"))
    return DatasetReport(
        classes=[name for _, name in train.categories],
        train=train.summary,
        val=val.summary,
        problems=problems[:MAX_PROBLEMS],
        problem_count=len(problems),
    )


def fingerprint(paths: list[str]) -> dict[str, list[int]]:
    """Size and modification time of each file or directory: cheap evidence that nothing changed."""
    prints: dict[str, list[int]] = {}
    for path in paths:
        try:
            stat = Path(path).stat()
        except OSError:
            continue  # a missing path differs from the recorded print
        prints[path] = [stat.st_size, stat.st_mtime_ns]
    return prints


def layout_paths(layout: dict[str, Any]) -> list[str]:
    return [layout[split][part] for split in ("train", "val") for part in ("annotations", "images")]


def recheck(layout: dict[str, Any], recorded: dict[str, list[int]] | None) -> list[Problem]:
    """Problems of a registered dataset now; validated again only when its files changed.
    An uploaded one cannot change: its archive is stored once, under its own id."""
    if layout.get("archive"):
        return []
    if recorded is not None and fingerprint(layout_paths(layout)) == recorded:
        return []
    train_annotations, train_images, val_annotations, val_images = (Path(p) for p in layout_paths(layout))
    report = validate_dataset(train_annotations, train_images, val_annotations, val_images, Path(layout["root"]))
    if not report.problems and report.classes != layout["classes"]:
        return [Problem(file=layout["train"]["annotations"], field="categories",
                        message=f"classes are now {report.classes}, registered as {layout['classes']}")]
    return report.problems
