"""Response bodies built from stored documents: overview lines, series, best epoch, Datature's matrix shape."""

from datetime import UTC, datetime, timedelta
from typing import Any

from services.api.models import Progress
from services.api.views import best_epoch, datature_confusion_matrix, default_mode, metric_series, run_overview

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def epoch(n: int, loss: float, mAP: float | None) -> dict[str, Any]:
    metrics = {"bbox_mAP": mAP, "bbox_mAP_50": 0.5} if mAP is not None else {}
    return {"epoch": n, "attempt": 1, "total_epochs": 3, "loss": loss, "losses": {"loss": loss, "loss_cls": loss / 2},
            "learning_rate": 0.01 / n, "epoch_time_s": 2.0, "metrics": metrics, "logged_at": T0 + timedelta(minutes=n)}


EPOCHS = [epoch(1, 2.0, 0.1), epoch(2, 1.0, None), epoch(3, 1.5, 0.3)]


def test_best_epoch_by_metric_with_its_natural_direction() -> None:
    best = best_epoch("r", EPOCHS, "bbox_mAP", default_mode("bbox_mAP"))
    assert best is not None and best.epoch.epoch == 3 and best.value == 0.3 and best.mode == "max"
    lowest = best_epoch("r", EPOCHS, "loss_cls", default_mode("loss_cls"))
    assert lowest is not None and lowest.epoch.epoch == 2 and lowest.mode == "min"
    assert best_epoch("r", EPOCHS, "bbox_mAR", "max") is None


def test_series_line_up_with_epochs_and_leave_gaps_as_null() -> None:
    series = metric_series("r", EPOCHS, None)
    assert series.epochs == [1, 2, 3]
    assert series.series["bbox_mAP"] == [0.1, None, 0.3]
    assert series.series["loss"] == [2.0, 1.0, 1.5] and "loss_cls" in series.series
    assert set(metric_series("r", EPOCHS, {"loss", "nope"}).series) == {"loss"}


def test_datature_shape_has_one_entry_per_predicted_class() -> None:
    doc = {"run_id": "r", "epoch": 3, "classes": ["cat", "dog", "Background"], "score_threshold": 0.3,
           "iou_threshold": 0.5, "matrix": [[5, 1, 2], [0, 4, 1], [3, 0, 0]]}
    shaped = datature_confusion_matrix(doc)
    assert [column.id for column in shaped.data] == ["cat", "dog", "Background"]
    cat_column = shaped.data[0]
    assert [(cell.x, cell.y) for cell in cat_column.data] == [("cat", 5), ("dog", 0), ("Background", 3)]
    assert sum(cell.y for column in shaped.data for cell in column.data) == 16


def test_overview_says_what_the_run_does() -> None:
    halfway = Progress(epoch=6, total_epochs=12, percent=50.0)
    assert run_overview("pending", halfway, None, "no trainer online with GPU_H100 x2", None) == \
        "queued: no trainer online with GPU_H100 x2"
    assert run_overview("in_progress", halfway, "gpu-1", None, 30.0) == "training on gpu-1: 6/12 epochs (50%)"
    assert run_overview("success", halfway, "gpu-1", None, 3723.0) == "finished: 6/12 epochs in 1h02m03s"
    assert run_overview("failed", halfway, "gpu-1", "CUDA out of memory", 10.0) == \
        "failed after 6/12 epochs: CUDA out of memory"
