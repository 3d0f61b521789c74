"""The baseline of bench/trainer_overhead.py: one MMEngine config trained by bare MMEngine, nothing else.

Run as a child process (as trainyard's own training child is), with the same
thread count. Writes a JSON list of wall-clock times (time.time()) at the end of
each epoch, after its validation when there is one, as trainyard's epoch
reports are stamped.

    python -m bench.bare_mmengine CONFIG_FILE TIMES_JSON THREADS [formatted-once]

With `formatted-once` the config is trainyard's FormattedOnceConfig
(services/trainer/mmdet_config.py), which formats its text once rather than at
every checkpoint, as trainyard's child does: the baseline for what trainyard
costs besides that saving.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# The same environment trainyard's child sets (../shared/mmdet-notes.md: torch >= 2.6 and MMEngine resume).
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def main(config_file: str, times_file: str, threads: int, formatted_once: bool = False) -> None:
    import torch
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    torch.set_num_threads(threads)
    register_all_modules()
    epoch_ends: list[float] = []

    class EpochEnds(Hook):  # type: ignore[misc]
        # After every other hook (CheckpointHook saves in after_train_epoch): an epoch ends when all of it is done.
        priority = "LOWEST"

        def after_train_epoch(self, runner: Any) -> None:
            if not _validates(runner):
                epoch_ends.append(time.time())

        def after_val_epoch(self, runner: Any, metrics: Any = None) -> None:
            epoch_ends.append(time.time())

    cfg = Config.fromfile(config_file)
    if formatted_once:
        from services.trainer.mmdet_config import FormattedOnceConfig

        cfg = FormattedOnceConfig.of(cfg)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(EpochEnds())
    runner.train()
    Path(times_file).write_text(json.dumps(epoch_ends))


def _validates(runner: Any) -> bool:
    loop = runner.train_loop
    epoch = runner.epoch + 1  # after_train_epoch sees the 0-based epoch
    return bool(epoch % loop.val_interval == 0 or epoch == loop.max_epochs)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), formatted_once=sys.argv[4:] == ["formatted-once"])
