"""The follow bar's clock is the run's: its training time so far, and what is left at its pace."""

from typing import Any, cast

from trainyard_client.cli.follow import RunClock, format_epoch
from trainyard_client.types import EpochLog, Run


def _run(status: str, duration_s: float | None) -> Run:
    return cast(Run, {"status": status, "duration_s": duration_s})


def test_a_finished_runs_clock_stands_still_at_its_training_time() -> None:
    clock = RunClock(_run("success", 120.0))
    assert clock.elapsed_s() == 120.0
    assert clock.left_s(done=30, total=30) == 0


def test_a_running_runs_time_left_follows_its_own_pace_not_the_followers() -> None:
    clock = RunClock(_run("in_progress", 60.0))  # the follower arrives after a minute of training
    assert 60.0 <= clock.elapsed_s() < 61.0
    left = clock.left_s(done=25, total=100)  # a quarter done in about a minute: about three left
    assert left is not None and 180.0 <= left < 184.0
    assert clock.left_s(done=0, total=100) is None


def test_an_epoch_line_fits_80_columns() -> None:
    epoch: dict[str, Any] = {"epoch": 12, "total_epochs": 300, "loss": 1.23456, "learning_rate": 0.000123,
                             "metrics": {"bbox_mAP": 0.5, "bbox_mAP_50": 0.75}, "epoch_time_s": 123.4}
    line = format_epoch(cast(EpochLog, epoch))
    assert len(line) <= 80 and line.startswith("epoch  12/300")
