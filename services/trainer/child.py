"""The training child: one process per attempt, so a crash or a kill stays contained.

    python -m services.trainer.child JOB_JSON --report-fd N

JOB_JSON is a file holding a TrainingJob. The child writes one ChildReport
per line to file descriptor N (inherited from the parent): started, one epoch
report per epoch, then finished (exit 0) or failed (exit 1). MMEngine's own
logging goes to stdout/stderr and to the work dir, never to N.

A job with world_size > 1 runs as that many children, one distributed data
parallel rank each, started with torch's env:// variables (RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT; services/trainer/launch.py). Rank 0
writes the reports, the config and the predictions; the other ranks report
only their own failure.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import re
import signal
import sys
import traceback
from pathlib import Path
from typing import IO

from pydantic import BaseModel

from services.trainer.lifeline import TRAINER_PID_VARIABLE, die_with_parent
from services.trainer.reports import (
    CONFIG_FILE,
    DrainedReport,
    FailedReport,
    FinishedReport,
    StartedReport,
    TrainingJob,
)


class ReportWriter:
    """Writes each report as one JSON line and flushes it at once.

    On a rank other than 0 only failures go out: the run's progress is rank 0's to tell."""

    def __init__(self, stream: IO[str], rank: int = 0) -> None:
        self.stream = stream
        self.rank = rank

    def __call__(self, report: BaseModel) -> None:
        if self.rank != 0 and not isinstance(report, FailedReport):
            return
        self.stream.write(report.model_dump_json() + "\n")
        self.stream.flush()


class DeviceError(RuntimeError):
    """The job asks for a device this process cannot use."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.trainer.child")
    parser.add_argument("job", type=Path, help="file with the TrainingJob as JSON")
    parser.add_argument("--report-fd", type=int, required=True, help="inherited fd for the JSON-line reports")
    args = parser.parse_args(argv)
    if TRAINER_PID_VARIABLE in os.environ:
        # Never outlive the trainer: an orphan would keep training, and hold the accelerator,
        # while the run's retry starts elsewhere.
        die_with_parent(int(os.environ[TRAINER_PID_VARIABLE]))
    # Ctrl-C in a terminal reaches the whole process group: the trainer drains (stops
    # its children itself, after the epoch in progress) and the child must carry on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    write = ReportWriter(os.fdopen(args.report_fd, "w", encoding="utf-8"), rank=int(os.environ.get("RANK", "0")))
    try:
        job = TrainingJob.model_validate_json(args.job.read_text())
    except Exception as exc:  # any bad job file is reported, not raised
        return _fail(write, f"job file {args.job}: {exc}")
    try:
        checkpoint, drained_after = train(job, write)
        if write.rank == 0 and drained_after is not None:
            write(DrainedReport(epoch=drained_after))
        elif write.rank == 0:
            best = best_checkpoint(Path(job.work_dir))
            write_model_weights(job, [checkpoint, best])
            write(FinishedReport(checkpoint=checkpoint, best_checkpoint=best))
    except Exception as exc:  # the parent gets a message, stderr the traceback
        traceback.print_exc()
        return _fail(write, describe_failure(exc))
    return 0


def train(job: TrainingJob, write: ReportWriter) -> tuple[str | None, int | None]:
    """Run the job to the end, or to a drain; returns the last checkpoint's path and,
    when the trainer drained, the epoch training stopped after."""
    # Before torch is imported: these are read at import or first use.
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"  # MMEngine checkpoints hold Python objects
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(job.threads)
    if job.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # MMEngine takes a GPU whenever it sees one

    import torch
    from mmengine.logging import print_log
    from mmengine.runner import Runner

    from services.trainer.hooks import ReportingHook, TrainyardDrainHook
    from services.trainer.mmdet_config import FormattedOnceConfig, build_config
    from services.trainer.rungs import TrainyardRungHook  # noqa: F401  (registers it in MMEngine's HOOKS)
    from services.trainer.transfer import prepare_base_weights

    torch.set_num_threads(job.threads)
    if job.device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("the job asks for CUDA but this trainer sees no usable GPU")
    rank, local_rank = _rank_from_environment(job)
    if job.device == "cuda":
        torch.cuda.set_device(local_rank)  # CUDA_VISIBLE_DEVICES holds the run's GPUs, one per local rank
    device = f"cuda:{local_rank} ({torch.cuda.get_device_name(local_rank)})" if job.device == "cuda" else "cpu"

    cfg = FormattedOnceConfig.of(build_config(job))
    if job.world_size > 1:
        _init_process_group(cfg.env_cfg.dist_cfg.backend)
        name = torch.cuda.get_device_name(local_rank) + ", " if job.device == "cuda" else ""
        device = f"{job.device} x{job.world_size} ({name}DDP, {cfg.env_cfg.dist_cfg.backend})"
    if rank == 0:
        # The exact config trained with, beside the checkpoints: a run can be reproduced from it.
        Path(job.work_dir).mkdir(parents=True, exist_ok=True)
        cfg.dump(str(Path(job.work_dir) / CONFIG_FILE))
    runner = Runner.from_cfg(cfg)
    started = StartedReport(device=device, world_size=job.world_size)
    if job.base_model is not None and job.resume_from is None:
        # The model exists now (weights are initialised and loaded in runner.train()):
        # keep the base weights whose shapes fit it, for load_from. Rank 0 writes
        # them; every rank loads them.
        model = runner.model.module if hasattr(runner.model, "module") else runner.model  # unwrap DDP
        if rank == 0:
            transfer = prepare_base_weights(job.base_model, model.state_dict(), Path(cfg.load_from))
            print_log(
                f"base model {job.base_model.id}: {len(transfer.loaded)} tensors loaded; re-initialised "
                f"(shape differs or missing): {transfer.reinitialised or 'none'}",
                logger="current",
            )
            started = started.model_copy(update={"base_model_id": job.base_model.id,
                                                 "reinitialised": transfer.reinitialised})
        _barrier(job)
    write(started)
    for hook in runner.hooks:
        if isinstance(hook, ReportingHook):
            hook.write = write
    runner.train()
    drained_after = next((h.drained_after for h in runner.hooks if isinstance(h, TrainyardDrainHook)), None)
    if job.world_size > 1:
        # Every rank is done (rank 0 wrote the last checkpoint) before any exits:
        # an early exit would look like a failure to a rank still working.
        _barrier(job)
        # The DDP wrapper holds the process group: free both while the interpreter is
        # whole. Left to the interpreter's exit, a rank now and then aborted there
        # ("terminate called without an active exception"; 2 of ~40 two-rank runs).
        del runner
        gc.collect()
        torch.distributed.destroy_process_group()
    return (last_checkpoint(Path(job.work_dir)) if rank == 0 else None), drained_after


def _rank_from_environment(job: TrainingJob) -> tuple[int, int]:
    """(rank, local rank) as the launcher set them; (0, 0) for a single process."""
    if job.world_size == 1:
        return 0, 0
    try:
        rank, local_rank, world_size = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    except (KeyError, ValueError):
        raise DeviceError(f"the job has world_size {job.world_size} but no RANK, LOCAL_RANK and WORLD_SIZE "
                          "in the environment (services/trainer/launch.py sets them)") from None
    if world_size != job.world_size:
        raise DeviceError(f"WORLD_SIZE={world_size} but the job has world_size {job.world_size}")
    return rank, local_rank


def _init_process_group(backend: str) -> None:
    """Join the env:// rendezvous. MMEngine's own init_dist would call
    torch.cuda.set_device, which a CPU build of torch does not have; the
    Runner (launcher='pytorch') uses the group it finds initialised."""
    import torch.distributed

    torch.distributed.init_process_group(backend=backend, init_method="env://")


def _barrier(job: TrainingJob) -> None:
    if job.world_size > 1:
        import torch.distributed

        torch.distributed.barrier()


def write_model_weights(job: TrainingJob, checkpoints: list[str | None]) -> None:
    """The weights of each checkpoint the trainer may register (the last, the best), beside it
    (services/trainer/weights.py): torch is loaded here already, never in the trainer."""
    from services.trainer.weights import weights_path, write_weights

    for checkpoint in dict.fromkeys(c for c in checkpoints if c is not None):
        epoch = checkpoint_epoch(checkpoint)
        if epoch is not None:
            write_weights(Path(checkpoint), weights_path(Path(job.work_dir), epoch),
                          {"run_id": job.run_id, "epoch": epoch})


def checkpoint_epoch(checkpoint: str) -> int | None:
    """N of CheckpointHook's `epoch_N.pth` and `best_<metric>_epoch_N.pth`."""
    found = re.search(r"epoch_(\d+)\.pth$", checkpoint)
    return int(found.group(1)) if found else None


def last_checkpoint(work_dir: Path) -> str | None:
    """The checkpoint CheckpointHook wrote last (it records it in `last_checkpoint`)."""
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        path = Path(marker.read_text().strip())
        if path.is_file():
            return str(path)
    candidates = sorted(work_dir.glob("epoch_*.pth"), key=lambda p: p.stat().st_mtime)
    return str(candidates[-1]) if candidates else None


def best_checkpoint(work_dir: Path) -> str | None:
    """CheckpointHook's save_best keeps one `best_<metric>_epoch_<N>.pth`, deleting the previous."""
    candidates = sorted(work_dir.glob("best_*.pth"), key=lambda p: p.stat().st_mtime)
    return str(candidates[-1]) if candidates else None


def describe_failure(exc: BaseException) -> str:
    """A message a person can act on; the traceback goes to stderr."""
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else ""
    name = type(exc).__name__
    lowered = text.lower()
    if name == "OutOfMemoryError" or ("cuda" in lowered and "out of memory" in lowered):
        return f"CUDA out of memory: reduce batch_size or input_size ({first_line[:300]})"
    if isinstance(exc, MemoryError) or "can't allocate memory" in lowered:
        return "out of host memory: reduce batch_size or input_size, or give the trainer more memory"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"file not found: {exc.filename} (check the dataset's image and annotation paths)"
    if name in {"DatasetError", "TrainingDiverged", "DeviceError", "BaseModelError"}:
        return text
    return f"{name}: {text}"[:2000] if text else name


def _fail(write: ReportWriter, message: str) -> int:
    with contextlib.suppress(OSError):  # the parent is gone: nobody is left to tell
        write(FailedReport(message=message))
    print(f"training failed: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
