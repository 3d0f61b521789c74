"""Which live events a client at a position has not seen yet, and when its stream is over."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.api.live import EPOCH_GAP_GRACE, FINAL_EPOCHS_GRACE, StreamPosition, next_events, stream_is_over
from shared.run_document import RunSummary

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def change(status: str, seconds: float) -> dict[str, Any]:
    return {"status": status, "at": at(seconds), "message": None, "attempt": None}


def epoch(n: int, seconds: float, attempt: int = 1) -> dict[str, Any]:
    return {"epoch": n, "attempt": attempt, "total_epochs": 3, "loss": 1.0, "losses": {}, "learning_rate": 0.01,
            "epoch_time_s": 1.0, "metrics": {}, "logged_at": at(seconds)}


def run(status: str, history: list[dict[str, Any]], **fields: Any) -> RunSummary:
    """The run as the stream reads it back from the database."""
    return RunSummary.model_validate({
        "_id": "r" * 32, "project": "p", "name": "live", "status": status, "history": history,
        "spec": {"name": "live", "dataset_id": "d" * 32, "architecture": "rtmdet-tiny", "epochs": 3},
        "created_at": at(0), "updated_at": at(100), **fields})


def test_history_and_epochs_interleave_by_time_and_each_event_moves_the_position() -> None:
    doc = run("in_progress", [change("created", 0), change("pending", 1), change("in_progress", 2)])
    events, end = next_events(doc, [epoch(1, 5), epoch(2, 9)], StreamPosition(), at(10))
    assert [(e.kind, e.position.token) for e in events] == [
        ("status", "1-0-0"), ("status", "2-0-0"), ("status", "3-0-0"), ("epoch", "3-1-1"), ("epoch", "3-1-2")]
    assert end == StreamPosition(3, 1, 2)
    resumed, _ = next_events(doc, [epoch(2, 9)], StreamPosition.parse("3-1-1"), at(10))
    assert [e.position.token for e in resumed] == ["3-1-2"]


def test_a_late_epoch_is_waited_for_then_skipped() -> None:
    doc = run("in_progress", [change("in_progress", 0)])
    position = StreamPosition(1, 1, 1)
    waiting, same = next_events(doc, [epoch(3, 10)], position, at(11))
    assert waiting == [] and same == position
    gave_up, moved = next_events(doc, [epoch(3, 10)], position, at(10) + EPOCH_GAP_GRACE + timedelta(seconds=1))
    assert [e.position.token for e in gave_up] == ["1-1-3"] and moved.epoch == 3


def test_a_newer_attempt_sends_its_epochs_again_and_hides_the_older_ones() -> None:
    doc = run("in_progress", [change("in_progress", 0), change("rerun", 20), change("in_progress", 21)])
    stored = [epoch(2, 25, attempt=2), epoch(3, 12, attempt=1)]  # attempt 2 resumed after epoch 1
    events, end = next_events(doc, stored, StreamPosition(1, 1, 3), at(30))
    assert [(e.kind, e.position.token) for e in events] == [("status", "2-1-3"), ("status", "3-1-3"),
                                                            ("epoch", "3-2-2")]
    assert end == StreamPosition(3, 2, 2)


def test_stream_ends_once_a_finished_runs_epochs_are_all_sent() -> None:
    history = [change("created", 0), change("success", 50)]
    finished = run("success", history, epochs_completed=3, completed_at=at(50))
    assert not stream_is_over(finished, StreamPosition(1, 1, 3), at(51))  # history not all sent
    assert not stream_is_over(finished, StreamPosition(2, 1, 2), at(51))  # epoch 3 may still be on its way
    assert stream_is_over(finished, StreamPosition(2, 1, 2), at(50) + FINAL_EPOCHS_GRACE + timedelta(seconds=1))
    assert stream_is_over(finished, StreamPosition(2, 1, 3), at(51))
    assert not stream_is_over(run("in_progress", history[:1]), StreamPosition(1, 0, 0), at(51))


@pytest.mark.parametrize("token", ["", "1-2", "a-b-c", "1-2-3-4", "-1-0-0", "9999999999-0-0"])
def test_malformed_positions_are_refused(token: str) -> None:
    with pytest.raises(ValueError):
        StreamPosition.parse(token)
