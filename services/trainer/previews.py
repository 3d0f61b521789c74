"""Evaluation previews: a few validation images with their ground-truth and predicted boxes, as small PNGs.

Pure drawing (PIL and numpy), no MMEngine: TrainyardReportHook collects the
boxes and calls `render_preview`; the tests draw without training.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Predictions at or above this score are drawn; recorded with every preview.
PREVIEW_SCORE_THRESHOLD = 0.3
# Where an evaluation's previews go, relative to the attempt's work dir.
PREVIEWS_DIR = "previews"
# The longer side of a preview: small images are enlarged so labels stay legible, large ones shrunk.
MIN_SIDE, MAX_SIDE = 256, 512
GROUND_TRUTH_COLOUR = (255, 215, 0)  # yellow: the synthetic shapes are red, green and blue
PREDICTION_COLOUR = (255, 0, 255)  # magenta
LABEL_TEXT_COLOUR = (0, 0, 0)
FONT_SIZE = 11
FOOTER_HEIGHT = 16


def preview_path(work_dir: str | Path, epoch: int, image_id: int) -> Path:
    return Path(work_dir) / PREVIEWS_DIR / f"epoch_{epoch}" / f"{image_id}.png"


def choose_images(images: Sequence[tuple[int, str]], count: int, root: str | Path | None = None
                  ) -> list[tuple[int, str]]:
    """The (image id, path) pairs to preview: the `count` lowest ids, so every evaluation shows the same ones.

    With `root`, only images that resolve (symlinks included) under it: a preview is a copy of the
    image handed to the user, so a file name pointing outside the dataset must never become one,
    even if the dataset changed on disk after the API validated it."""
    if root is not None:
        real_root = os.path.realpath(root)
        images = [(i, p) for i, p in images if Path(os.path.realpath(p)).is_relative_to(real_root)]
    return sorted(images)[:count]


def render_preview(
    image_path: str | Path,
    classes: Sequence[str],
    gt_boxes: np.ndarray,
    gt_labels: np.ndarray,
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    pred_labels: np.ndarray,
    *,
    epoch: int,
    score_thr: float = PREVIEW_SCORE_THRESHOLD,
) -> bytes:
    """The image with ground truth (yellow, class name) and predictions at or above score_thr (magenta,
    class and score), boxes in the image's own pixel coordinates (xyxy), as PNG bytes."""
    with Image.open(image_path) as source:
        image = source.convert("RGB")
    scale = _scale(image.size)
    if scale != 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (image.width, image.height + FOOTER_HEIGHT), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    keep = pred_scores.reshape(-1) >= score_thr
    # Predictions first, ground truth on top: where they coincide the truth stays visible.
    for box, score, label in zip(pred_boxes.reshape(-1, 4)[keep], pred_scores.reshape(-1)[keep],
                                 pred_labels.reshape(-1)[keep], strict=True):
        _box(draw, font, box * scale, f"{_name(classes, int(label))} {score:.2f}", PREDICTION_COLOUR, below=True)
    for box, label in zip(gt_boxes.reshape(-1, 4), gt_labels.reshape(-1), strict=True):
        _box(draw, font, box * scale, _name(classes, int(label)), GROUND_TRUTH_COLOUR, below=False)
    footer_y = image.height + 2
    x = 3
    for text, colour in ((f"epoch {epoch}", (0, 0, 0)), ("truth", (160, 130, 0)),
                         (f"pred>={score_thr:g}", PREDICTION_COLOUR)):
        draw.text((x, footer_y), text, fill=colour, font=font)
        x += round(draw.textlength(text, font=font)) + 8
    out = io.BytesIO()
    # A 256-colour palette keeps a preview a few tens of kilobytes.
    canvas.quantize(colors=256).save(out, format="PNG", optimize=True)
    return out.getvalue()


def _scale(size: tuple[int, int]) -> float:
    longer = max(size)
    return min(max(longer, MIN_SIDE), MAX_SIDE) / longer


def _name(classes: Sequence[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)


def _box(draw: ImageDraw.ImageDraw, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, box: np.ndarray,
         text: str, colour: tuple[int, int, int], *, below: bool) -> None:
    x1, y1, x2, y2 = (float(v) for v in box)
    draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left + 4, bottom - top + 2
    # Ground-truth labels sit above the box's top edge, predictions' inside its bottom edge,
    # so the two rarely cover each other.
    ty = y2 - height if below else max(0.0, y1 - height)
    draw.rectangle((x1, ty, x1 + width, ty + height), fill=colour)
    draw.text((x1 + 2 - left, ty + 1 - top), text, fill=LABEL_TEXT_COLOUR, font=font)
