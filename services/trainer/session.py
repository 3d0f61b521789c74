"""One training attempt: the child process, its reports, and the events they become."""

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import ValidationError

from services.trainer.reports import (
    EpochReport,
    FailedReport,
    FinishedReport,
    StartedReport,
    TrainingJob,
    child_report_adapter,
)
from shared.events import EpochLogged, Event, RunAssigned, RunCompleted, RunStarted
from shared.status import RunStatus

log = logging.getLogger(__name__)

# (subject kind, event, dedup key): how a session hands events to the bus.
Emit = Callable[[str, Event, str], Awaitable[None]]
LOG_TAIL_LINES = 8


def _log_tail(path: Path) -> str:
    if not path.exists():
        return ""
    lines = path.read_text(errors="replace").strip().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


class TrainingSession:
    def __init__(self, assignment: RunAssigned, work_root: Path, device: str, threads: int, emit: Emit) -> None:
        self.assignment = assignment
        self.device = device
        self.threads = threads
        self.emit = emit
        self.work_dir = work_root / assignment.run_id / f"attempt-{assignment.attempt}"
        self.process: asyncio.subprocess.Process | None = None
        self.epochs_reported = 0

    @property
    def run_id(self) -> str:
        return self.assignment.run_id

    def _dedup(self, what: str) -> str:
        return f"{self.run_id}:{self.assignment.attempt}:{what}"

    async def run(self) -> RunCompleted:
        """Train to the end and publish run.completed; never raises for a training failure."""
        failure: str | None = None
        finished = False
        log_path = self.work_dir / "train.log"
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            returncode, failure, finished = await self._train(log_path)
        except Exception as error:  # the trainer must always report an outcome
            log.exception("training session of run %s broke", self.run_id)
            returncode, failure = -1, f"trainer error: {error}"
        if finished and returncode == 0:
            status, message = RunStatus.SUCCESS, None
        else:
            status = RunStatus.FAILED
            message = failure or (
                f"training process exited with code {returncode}; last lines of {log_path}:\n{_log_tail(log_path)}"
            )
        completed = RunCompleted(
            run_id=self.run_id,
            attempt=self.assignment.attempt,
            trainer_id=self.assignment.trainer_id,
            status=status,
            message=message,
            epochs_completed=self.epochs_reported,
        )
        await self.emit("completed", completed, self._dedup("completed"))
        return completed

    async def _train(self, log_path: Path) -> tuple[int, str | None, bool]:
        job = TrainingJob(
            run_id=self.run_id,
            attempt=self.assignment.attempt,
            spec=self.assignment.spec,
            dataset=self.assignment.dataset,
            work_dir=str(self.work_dir),
            device="cuda" if self.device == "cuda" else "cpu",
            threads=self.threads,
        )
        job_path = self.work_dir / "job.json"
        job_path.write_text(job.model_dump_json(indent=2))
        read_fd, write_fd = os.pipe()
        env = {
            **os.environ,
            # torch >= 2.6 loads weights_only by default, which MMEngine's own
            # checkpoints (written by this platform) do not pass.
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
            "OMP_NUM_THREADS": str(self.threads),
            "PYTHONUNBUFFERED": "1",
        }
        with log_path.open("ab") as log_file:
            try:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "services.trainer.child", str(job_path), "--report-fd", str(write_fd),
                    pass_fds=(write_fd,), stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL, env=env,
                )
            finally:
                os.close(write_fd)
        failure: str | None = None
        finished = False
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=16 * 2**20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
        )
        try:
            async for line in reader:
                try:
                    report = child_report_adapter.validate_json(line)
                except ValidationError as error:
                    log.warning("run %s: unreadable report from the training child: %s", self.run_id, error)
                    continue
                if isinstance(report, StartedReport):
                    await self.emit("started", RunStarted(
                        run_id=self.run_id, attempt=self.assignment.attempt,
                        trainer_id=self.assignment.trainer_id, device=report.device,
                    ), self._dedup("started"))
                elif isinstance(report, EpochReport):
                    await self._report_epoch(report)
                elif isinstance(report, FailedReport):
                    failure = report.message
                elif isinstance(report, FinishedReport):
                    finished = True
        finally:
            transport.close()
        returncode = await self.process.wait()
        return returncode, failure, finished

    async def _report_epoch(self, report: EpochReport) -> None:
        event = EpochLogged(
            run_id=self.run_id,
            attempt=self.assignment.attempt,
            **report.model_dump(exclude={"kind"}),
        )
        await self.emit("epoch", event, self._dedup(f"epoch:{report.epoch}"))
        self.epochs_reported += 1
