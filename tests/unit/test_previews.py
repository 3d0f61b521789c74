"""Evaluation previews drawn without training: boxes, labels, threshold, size."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.trainer.previews import (
    GROUND_TRUTH_COLOUR,
    PREDICTION_COLOUR,
    choose_images,
    preview_path,
    render_preview,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["circle", "square"]


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "plain.png"
    Image.new("RGB", (64, 48), (90, 90, 90)).save(path)
    return path


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def has_colour(image: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return bool((np.abs(image.astype(int) - colour).sum(axis=2) < 30).any())


def render(path: Path, scores: list[float], score_thr: float = 0.3) -> bytes:
    return render_preview(
        path, CLASSES,
        gt_boxes=np.array([[4, 4, 30, 30]], dtype=np.float32), gt_labels=np.array([0]),
        pred_boxes=np.array([[20, 10, 60, 40]] * len(scores), dtype=np.float32).reshape(-1, 4),
        pred_scores=np.array(scores, dtype=np.float32), pred_labels=np.array([1] * len(scores)),
        epoch=3, score_thr=score_thr,
    )


def test_preview_is_a_small_png_enlarged_for_legibility(plain: Path) -> None:
    png = render(plain, [0.9])
    assert png.startswith(PNG_MAGIC) and len(png) < 50_000
    image = Image.open(io.BytesIO(png))
    # 64 px wide becomes 256 (the smallest preview side), the height in proportion plus the footer.
    assert image.width == 256 and image.height == 192 + 16


def test_ground_truth_and_confident_predictions_are_drawn(plain: Path) -> None:
    drawn = pixels(render(plain, [0.9]))
    assert has_colour(drawn, GROUND_TRUTH_COLOUR) and has_colour(drawn, PREDICTION_COLOUR)
    background = np.abs(drawn[:192].astype(int) - 90).sum(axis=2) > 30
    assert background.mean() > 0.05, "boxes and labels change a visible part of the image"


def test_predictions_below_the_threshold_are_not_drawn(plain: Path) -> None:
    drawn = pixels(render(plain, [0.2]))
    assert has_colour(drawn, GROUND_TRUTH_COLOUR)
    assert not has_colour(drawn[:192], PREDICTION_COLOUR)


def test_large_images_are_shrunk(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (2000, 1000), (10, 10, 10)).save(path)
    image = Image.open(io.BytesIO(render(path, [])))
    assert (image.width, image.height) == (512, 256 + 16)


def test_the_same_images_are_chosen_every_time() -> None:
    images = [(7, "g.png"), (2, "b.png"), (5, "e.png"), (1, "a.png")]
    assert choose_images(images, 2) == [(1, "a.png"), (2, "b.png")]
    assert choose_images(list(reversed(images)), 2) == choose_images(images, 2)
    assert choose_images(images, 16) == sorted(images)


def test_preview_files_are_under_the_epoch() -> None:
    assert preview_path("/w/attempt-1", 4, 17) == Path("/w/attempt-1/previews/epoch_4/17.png")


def test_images_resolving_outside_the_dataset_root_are_never_previewed(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    (root / "images").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "secret.png").write_bytes(b"")
    (root / "images" / "ok.png").write_bytes(b"")
    (root / "images" / "link.png").symlink_to(tmp_path / "secret" / "secret.png")
    images = [(1, str(root / "images" / "../../secret/secret.png")), (2, str(root / "images" / "link.png")),
              (3, "/etc/hostname"), (4, str(root / "images" / "ok.png"))]
    assert choose_images(images, 4, root=root) == [(4, str(root / "images" / "ok.png"))]
