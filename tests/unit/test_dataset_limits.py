"""Limits and confinement of dataset validation: each refused as a problem naming the file and the limit."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from services.api.dataset_validation import DatasetLimits, json_depth, validate_dataset
from trainyard.synth import DatasetFiles, write_synthetic_coco


@pytest.fixture
def files(tmp_path: Path) -> DatasetFiles:
    return write_synthetic_coco(tmp_path / "ds", train_images=4, val_images=2, size=64)


def problems(files: DatasetFiles, limits: DatasetLimits = DatasetLimits()) -> list[dict[str, Any]]:
    report = validate_dataset(files.train_annotations, files.train_images, files.val_annotations, files.val_images,
                              files.root, limits)
    return [p.as_dict() for p in report.problems]


def set_first_train_file_name(files: DatasetFiles, name: str) -> None:
    data = json.loads(files.train_annotations.read_text())
    data["images"][0]["file_name"] = name
    files.train_annotations.write_text(json.dumps(data))


def test_json_depth_counts_brackets_outside_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[{{{\\"]]"}]}') == 3
    assert json_depth(b"[]") == 1
    assert json_depth(b"3") == 0


def test_deeply_nested_annotations_are_refused_by_depth_not_a_recursion_error(files: DatasetFiles) -> None:
    files.train_annotations.write_text("[" * 200_000 + "]" * 200_000)
    [problem] = problems(files)
    assert problem == {"file": str(files.train_annotations),
                       "message": "JSON nested 200000 levels deep, over the limit of 32"}


def test_an_oversize_annotation_file_is_refused_before_it_is_read(files: DatasetFiles) -> None:
    with files.train_annotations.open("r+b") as handle:
        handle.truncate(2_000_000)  # sparse: not valid JSON, which is never looked at
    [problem] = problems(files, DatasetLimits(max_annotation_bytes=1_000_000))
    assert problem["message"] == "annotation file is 2000000 bytes, over the limit of 1000000 bytes"


def test_more_images_than_the_limit_are_refused(files: DatasetFiles) -> None:
    [problem] = problems(files, DatasetLimits(max_images=3))
    assert problem == {"file": str(files.train_annotations), "field": "images",
                       "message": "4 images, over the limit of 3"}


def test_a_decompression_bomb_is_a_problem_not_a_crash(files: DatasetFiles) -> None:
    name = json.loads(files.train_annotations.read_text())["images"][0]["file_name"]
    # Only the header is read: a 20000x20000 PNG of one colour compresses to a few hundred KiB.
    Image.new("1", (20000, 20000)).save(files.train_images / name)
    [problem] = [p for p in problems(files) if "pixels" in p["message"] or "decode" in p["message"]]
    assert problem["file"] == str(files.train_images / name)
    assert "over the limit of 40000000 pixels" in problem["message"]


def test_images_over_the_pixel_limit_are_refused(files: DatasetFiles) -> None:
    found = problems(files, DatasetLimits(max_image_pixels=4000))
    assert len(found) == 6
    assert all(p["message"] == "image is 64x64 pixels, over the limit of 4000 pixels" for p in found)


@pytest.mark.parametrize("name", ["/etc/hostname", "../../../../etc/hostname", "../../../outside.png"])
def test_a_file_name_outside_the_dataset_root_is_refused_by_name(files: DatasetFiles, name: str) -> None:
    (files.root.parent / "outside.png").write_bytes(b"")
    set_first_train_file_name(files, name)
    [problem] = problems(files)
    assert problem["field"] == "images[0].file_name"
    assert repr(name) in problem["message"] and "outside the dataset's root" in problem["message"]


def test_a_symlink_out_of_the_dataset_root_is_refused(files: DatasetFiles, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 64)).save(secret)
    os.symlink(secret, files.train_images / "link.png")
    set_first_train_file_name(files, "link.png")
    [problem] = problems(files)
    assert "'link.png' resolves outside the dataset's root" in problem["message"]


def test_problems_past_the_first_hundred_are_counted(files: DatasetFiles) -> None:
    data = json.loads(files.train_annotations.read_text())
    data["annotations"] = [{"id": i, "image_id": -1} for i in range(250)]
    files.train_annotations.write_text(json.dumps(data))
    report = validate_dataset(files.train_annotations, files.train_images, files.val_annotations, files.val_images)
    assert len(report.problems) == 100 and report.problem_count == 250
