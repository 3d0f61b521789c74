"""ASHA's rungs inside the training child: after a rung's epoch, wait for the scheduler's decision.

The trainer writes each decision (run.rung_decided) into the attempt's work dir as
`decisions/epoch_<n>.json`; this hook, after the epoch's evaluation has been
reported, waits for that file and either lets training go on or ends it there,
successfully, after that epoch's checkpoints are written (and the epoch saved, on
checkpoint.interval or not: the trainer stores it once the child reports it finished,
services/trainer/checkpoints.py `queue_saved_late`). A decision that comes
late (the scheduler restarting) still stops the trial at its next epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from services.trainer.decisions import decision_path, stop_decision
from services.trainer.hooks import save_stopped_epoch
from services.trainer.ranks import from_rank_0

POLL_S = 0.2


@HOOKS.register_module()
class TrainyardRungHook(Hook):  # type: ignore[misc]
    # After TrainyardReportHook (the epoch is reported before the wait) and after CheckpointHook.
    priority = "LOWEST"

    def __init__(self, epochs: list[int], work_dir: str, timeout_s: float = 600.0) -> None:
        self.epochs = set(epochs)
        self.work_dir = Path(work_dir)
        self.timeout_s = timeout_s

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        epoch = runner.epoch
        message = None
        if runner.rank == 0:
            if epoch in self.epochs:
                deadline = time.monotonic() + self.timeout_s
                while not decision_path(self.work_dir, epoch).exists() and time.monotonic() < deadline:
                    time.sleep(POLL_S)
                if not decision_path(self.work_dir, epoch).exists():
                    print_log(f"trainyard: no rung decision for epoch {epoch} within {self.timeout_s:.0f} s; "
                              "training goes on", logger="current")
            message = stop_decision(self.work_dir)
        message = from_rank_0(message)  # every rank stops together, or none does
        if message is not None:
            print_log(f"trainyard: stopping after epoch {epoch}: {message}", logger="current")
            runner.train_loop.stop_training = True
            save_stopped_epoch(runner, epoch)
