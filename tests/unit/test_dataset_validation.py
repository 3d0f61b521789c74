import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.api.dataset_validation import validate_dataset
from trainyard.synth import DatasetFiles, write_synthetic_coco


@pytest.fixture
def files(tmp_path: Path) -> DatasetFiles:
    return write_synthetic_coco(tmp_path / "ds", train_images=4, val_images=2, size=64)


def validate(files: DatasetFiles) -> list[dict[str, Any]]:
    report = validate_dataset(files.train_annotations, files.train_images, files.val_annotations, files.val_images)
    return [p.as_dict() for p in report.problems]


def edit_train(files: DatasetFiles, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(files.train_annotations.read_text())
    change(data)
    files.train_annotations.write_text(json.dumps(data))


def test_generated_dataset_is_valid_and_counted(files: DatasetFiles) -> None:
    report = validate_dataset(files.train_annotations, files.train_images, files.val_annotations, files.val_images)
    assert report.problems == []
    assert report.classes == list(files.classes)
    assert report.train.images == 4 and report.val.images == 2
    assert sum(report.train.boxes_per_class.values()) == report.train.boxes > 0


def test_unparseable_json_names_file_and_position(files: DatasetFiles) -> None:
    files.train_annotations.write_text('{"images": [')
    [problem] = validate(files)
    assert problem["file"] == str(files.train_annotations)
    assert "invalid JSON at line 1" in problem["message"]


def test_missing_categories(files: DatasetFiles) -> None:
    edit_train(files, lambda d: d.update(categories=[]))
    problems = validate(files)
    assert any(p["field"] == "categories" and "no categories" in p["message"] for p in problems)


def test_missing_image_file_names_the_file_and_image(files: DatasetFiles) -> None:
    first = json.loads(files.train_annotations.read_text())["images"][0]
    (files.train_images / first["file_name"]).unlink()
    [problem] = validate(files)
    assert problem == {"file": str(files.train_images / first["file_name"]),
                       "message": "image file does not exist", "image_id": first["id"]}


def test_undecodable_image(files: DatasetFiles) -> None:
    first = json.loads(files.train_annotations.read_text())["images"][0]
    (files.train_images / first["file_name"]).write_bytes(b"not a png")
    [problem] = validate(files)
    assert "cannot be decoded" in problem["message"] and problem["image_id"] == first["id"]


def test_box_outside_its_image_names_annotation_and_value(files: DatasetFiles) -> None:
    def push_out(d: dict[str, Any]) -> None:
        d["annotations"][0]["bbox"] = [50, 50, 40, 40]

    edit_train(files, push_out)
    ann_id = json.loads(files.train_annotations.read_text())["annotations"][0]["id"]
    [problem] = validate(files)
    assert problem["field"] == "annotations[0].bbox" and problem["annotation_id"] == ann_id
    assert "[50, 50, 40, 40] lies outside its 64x64 image" in problem["message"]


def test_non_positive_box_size(files: DatasetFiles) -> None:
    edit_train(files, lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 5]))
    [problem] = validate(files)
    assert "non-positive size" in problem["message"]


def test_annotation_of_unknown_image_and_category(files: DatasetFiles) -> None:
    def corrupt(d: dict[str, Any]) -> None:
        d["annotations"][0]["image_id"] = 999
        d["annotations"][1]["category_id"] = 42

    edit_train(files, corrupt)
    messages = [p["message"] for p in validate(files)]
    assert "image_id 999 is not an image of this file" in messages
    assert "category_id 42 is not a category of this file" in messages


def test_duplicate_ids(files: DatasetFiles) -> None:
    def duplicate(d: dict[str, Any]) -> None:
        d["images"][1]["id"] = d["images"][0]["id"]
        d["annotations"][1]["id"] = d["annotations"][0]["id"]

    edit_train(files, duplicate)
    messages = " | ".join(p["message"] for p in validate(files))
    assert "duplicate image id" in messages and "duplicate annotation id" in messages


def test_every_problem_is_reported_not_only_the_first(files: DatasetFiles) -> None:
    def many(d: dict[str, Any]) -> None:
        for ann in d["annotations"][:3]:
            ann["bbox"] = [0, 0, -1, 1]

    edit_train(files, many)
    assert len(validate(files)) == 3


def test_val_categories_must_match_train(files: DatasetFiles) -> None:
    data = json.loads(files.val_annotations.read_text())
    data["categories"][0]["name"] = "hexagon"
    files.val_annotations.write_text(json.dumps(data))
    problems = validate(files)
    assert any("categories differ" in p["message"] and p["file"] == str(files.val_annotations) for p in problems)
