"""Drain: a trainer that is leaving asks its children to stop after the epoch in progress.

The trainer writes a marker file into the attempt's work dir; after each
reported epoch (its checkpoint written, its report sent) `TrainyardDrainHook`
looks for it and ends the training loop there, and the child reports
`drained` instead of `finished`. A file, not a signal: a signal arriving
before the child has installed its handler would kill it, and every rank of
a distributed run sees the same file (rank 0 decides for all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from services.trainer.ranks import from_rank_0, validates_after

DRAIN_MARKER = "drain-requested"


def request_drain(work_dir: Path) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / DRAIN_MARKER).touch()


@HOOKS.register_module()
class TrainyardDrainHook(Hook):  # type: ignore[misc]
    """Stops training after the reported epoch during which the trainer asked for a drain.

    Lowest priority: the epoch's checkpoint (CheckpointHook) and report
    (TrainyardReportHook) come first, and a stop decided by TrainyardEarlyStoppingHook
    (the run is done) is not mistaken for a drain."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.drained_after: int | None = None

    def after_train_epoch(self, runner: Any) -> None:
        epoch = runner.epoch + 1  # still 0-based here
        if not validates_after(runner, epoch):  # an epoch without evaluation is reported now
            self._check(runner, epoch)

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        self._check(runner, runner.epoch)  # counted by now

    def _check(self, runner: Any, epoch: int) -> None:
        loop = runner.train_loop
        if loop.stop_training or epoch >= runner.max_epochs:
            return  # the run ends here anyway: that is a finish, not a drain
        if from_rank_0((Path(runner.work_dir) / DRAIN_MARKER).exists()):
            print_log(f"trainyard: the trainer drains; stopping after epoch {epoch}", logger="current")
            self.drained_after = epoch
            loop.stop_training = True
