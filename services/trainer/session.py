"""One training attempt: the child process, its reports, and the events they become."""

import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from services.trainer.checkpoints import CheckpointStoreError, RunCheckpoints
from services.trainer.datasets import DatasetUnavailable, local_dataset
from services.trainer.decisions import write_decision
from services.trainer.drain import request_drain
from services.trainer.launch import ChildExit, TrainingProcesses, killed_by_signal_message
from services.trainer.lifeline import forget_processes, record_processes
from services.trainer.outcome import NOT_STARTED, AttemptOutcome, Progress, log_tail
from services.trainer.reports import (
    CONFIG_FILE,
    JOB_FILE,
    LOG_FILE,
    QUEUED_DIR,
    ChildReport,
    DrainedReport,
    EpochReport,
    FailedReport,
    FinishedReport,
    IterationsReport,
    StartedReport,
    TrainingJob,
    child_report_adapter,
)
from shared.artifacts import ArtifactCache, ArtifactNotFound, predictions_name, preview_name
from shared.events import (
    BaseModelRef,
    CheckpointSaved,
    EpochLogged,
    Event,
    IterationsLogged,
    ModelRegistered,
    PreviewImage,
    RunAssigned,
    RunCompleted,
    RunReleased,
    RunStarted,
    StoredCheckpoint,
)
from shared.exits import ended_how
from shared.specs import DatasetLayout
from shared.status import RunStatus
from shared.telemetry import child_process_env

log = logging.getLogger(__name__)

# (subject kind, event, dedup key): how a session hands events to the bus.
Emit = Callable[[str, Event, str], Awaitable[None]]
# A child (every rank of a distributed run) asked to stop gets this long to exit before it is killed.
STOP_GRACE_S = 5.0


class TrainingSession:
    def __init__(self, assignment: RunAssigned, work_root: Path, device: str, threads: int, emit: Emit,
                 cache: ArtifactCache, gpu_ids: list[int] | None = None) -> None:
        self.assignment = assignment
        self.device = device
        self.threads = threads
        self.emit = emit
        self.gpu_ids = gpu_ids or []
        self.run_dir = work_root / assignment.run_id
        self.work_dir = self.run_dir / f"attempt-{assignment.attempt}"
        self.processes: TrainingProcesses | None = None
        self.epochs_reported = 0
        # Set when the scheduler or the trainer itself ends the attempt early.
        self.stop_outcome: tuple[RunStatus, str] | None = None
        self.release_reason: str | None = None
        # The epoch a drained child stopped after (DrainedReport).
        self.drained_after: int | None = None
        self._progress = Progress()
        self.checkpoints = RunCheckpoints(assignment.run_id, assignment.attempt, assignment.spec, cache,
                                          assignment.resume_from)
        self.cache = cache
        self.last_epoch = 0

    @property
    def attempt(self) -> int:
        return self.assignment.attempt

    async def stop(self, status: RunStatus, message: str) -> None:
        """End the attempt with `status` (a kill, a timeout, a superseded attempt)."""
        self.stop_outcome = (status, message)
        await self._terminate()

    def decide(self, epoch: int, proceed: bool, message: str) -> None:
        """ASHA's decision at a rung, for the child waiting at that epoch."""
        write_decision(self.work_dir, epoch, proceed, message)

    async def release(self, reason: str) -> None:
        """Stop now and hand the run back to the scheduler to resume elsewhere."""
        self.release_reason = reason
        await self._terminate()

    def drain(self, reason: str) -> None:
        """Finish and store the epoch in progress, then hand the run back (the child stops itself)."""
        self.release_reason = reason
        request_drain(self.work_dir)

    async def _terminate(self) -> None:
        if self.processes is not None:
            await self.processes.terminate()

    @property
    def run_id(self) -> str:
        return self.assignment.run_id

    def _dedup(self, what: str) -> str:
        return f"{self.run_id}:{self.assignment.attempt}:{what}"

    async def run(self) -> RunCompleted | RunReleased:
        """Train to the end and publish the outcome; never raises for a training failure."""
        log_path = self.work_dir / LOG_FILE
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            outcome = await self._train(log_path)
        except Exception as error:  # the trainer must always report an outcome
            log.exception("training session of run %s broke", self.run_id)
            outcome = AttemptOutcome(returncode=-1, failure=f"trainer error: {error}")
        # Every reported epoch stored before the outcome: a release names the newest, a model the final.
        await self.checkpoints.settled()
        if self.release_reason is not None and not outcome.succeeded:
            reason = self.release_reason
            if self.drained_after is not None:
                reason += f"; stopped after epoch {self.drained_after}, which is stored"
            return await self._release(reason, "drain")
        if outcome.killed is not None and self.stop_outcome is None:
            return await self._release(outcome.killed, "child_killed")
        message: str | None
        if self.stop_outcome is not None:
            status, message = self.stop_outcome
        elif outcome.succeeded:
            status, message = RunStatus.SUCCESS, None
            try:
                await self._register_model()
            except Exception as error:
                log.exception("run %s: storing the trained model failed", self.run_id)
                status, message = RunStatus.FAILED, f"trained, but its weights could not be stored: {error}"
        else:
            status, message = RunStatus.FAILED, outcome.failure_message(log_path)
        self._drop_local_checkpoints()
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

    async def _release(self, reason: str, cause: Literal["drain", "child_killed"]) -> RunReleased:
        """Hand the run back: the scheduler retries it from the newest checkpoint stored."""
        released = RunReleased(run_id=self.run_id, attempt=self.attempt, trainer_id=self.assignment.trainer_id,
                               reason=reason, cause=cause, checkpoint=self.checkpoints.newest)
        self._drop_local_checkpoints()
        await self.emit("released", released, self._dedup("released"))
        return released

    async def _inputs(self) -> tuple[Path | None, BaseModelRef | None]:
        """Local copies of what the attempt starts from: the run's newest stored checkpoint
        (a resume, on whichever trainer stored it) and the base model's weights."""
        resume_from = await self.checkpoints.resume_point()
        base = self.assignment.base_model
        if base is None or resume_from is not None:
            return resume_from, None
        try:
            local = await self.cache.fetch(base.checkpoint)
        except ArtifactNotFound:
            raise CheckpointStoreError(
                f"base model {base.id}: its weights {base.checkpoint} are not in the artifact store"
            ) from None
        return None, base.model_copy(update={"checkpoint": str(local)})

    def _drop_local_checkpoints(self) -> None:
        """The store holds what is kept; this machine's copies were only a cache."""
        for path in [*self.work_dir.glob("*.pth"), *self.work_dir.glob(f"{QUEUED_DIR}/*.pth")]:
            path.unlink(missing_ok=True)
        for path in self.cache.path(f"runs/{self.run_id}").rglob("*.pth"):
            path.unlink(missing_ok=True)

    def _stopping(self) -> bool:
        return self.stop_outcome is not None or self.release_reason is not None

    async def _train(self, log_path: Path) -> AttemptOutcome:
        try:
            resume_from, base_model = await self._inputs()
            dataset = await local_dataset(self.assignment.dataset, self.cache)  # an upload: unpacked here
        except (CheckpointStoreError, DatasetUnavailable) as error:
            return AttemptOutcome(returncode=-1, failure=str(error))
        if resume_from is not None:
            log.info("run %s attempt %d resumes from %s", self.run_id, self.attempt, resume_from)
        job = self._job(resume_from, base_model, dataset)
        if self._stopping():
            return NOT_STARTED
        job_path = self.work_dir / JOB_FILE
        job_path.write_text(job.model_dump_json(indent=2))
        with log_path.open("ab") as log_file:
            processes = await TrainingProcesses.start(job_path, job.world_size, self._environment(job), log_file,
                                                      grace_s=STOP_GRACE_S)
        self.processes = processes
        # Read by the next trainer on this work root if this one dies (services/trainer/lifeline.py).
        record_processes(self.work_dir, processes.pids)
        if self._stopping():
            await processes.terminate()  # stopped while it was starting
        try:
            await self._read_reports(processes)
        except Exception:
            await processes.terminate()  # nobody is left to read their reports
            forget_processes(self.work_dir)
            raise
        ended = await processes.wait()
        forget_processes(self.work_dir)
        return self._outcome(ended, job.world_size, processes, log_path)

    def _job(self, resume_from: Path | None, base_model: BaseModelRef | None, dataset: DatasetLayout) -> TrainingJob:
        # One process per accelerator the run holds: more than one trains with
        # distributed data parallel, spec.batch_size images per process.
        world_size = self.assignment.spec.accelerator.count
        return TrainingJob(
            run_id=self.run_id,
            attempt=self.assignment.attempt,
            spec=self.assignment.spec,
            dataset=dataset,
            work_dir=str(self.work_dir),
            device="cuda" if self.device == "cuda" else "cpu",
            threads=max(1, self.threads // world_size),
            world_size=world_size,
            resume_from=str(resume_from) if resume_from else None,
            base_model=base_model,
            decision_epochs=self.assignment.decision_epochs,
        )

    def _environment(self, job: TrainingJob) -> dict[str, str]:
        env = {
            **os.environ,
            # torch >= 2.6 loads weights_only by default, which MMEngine's own
            # checkpoints (written by this platform) do not pass.
            "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
            "OMP_NUM_THREADS": str(job.threads),
            "PYTHONUNBUFFERED": "1",
            # TRACEPARENT: the child's work belongs to this attempt's span.
            **child_process_env(),
        }
        if self.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpu_ids))
        return env

    async def _read_reports(self, processes: TrainingProcesses) -> None:
        """Each of the child's reports to its handler, until every rank has closed its pipe."""
        handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            "started": self._on_started, "epoch": self._report_epoch, "iterations": self._on_iterations,
            "failed": self._on_failed, "finished": self._on_finished, "drained": self._on_drained,
        }
        async for line in processes.report_lines():
            try:
                report: ChildReport = child_report_adapter.validate_json(line)
            except ValidationError as error:
                log.warning("run %s: unreadable report from the training child: %s", self.run_id, error)
                continue
            await handlers[report.kind](report)

    async def _on_started(self, report: StartedReport) -> None:
        if report.base_model_id is not None:
            log.info("run %s starts from model %s; re-initialised: %s", self.run_id,
                     report.base_model_id, report.reinitialised or "nothing")
        config_file = self.work_dir / CONFIG_FILE
        await self.emit("started", RunStarted(
            run_id=self.run_id, attempt=self.assignment.attempt,
            trainer_id=self.assignment.trainer_id, device=report.device,
            world_size=report.world_size,
            # The generated MMEngine config travels with the event, so the run
            # can be reproduced without access to this trainer's disk.
            config=config_file.read_text() if config_file.exists() else None,
        ), self._dedup("started"))

    async def _on_iterations(self, report: IterationsReport) -> None:
        event = IterationsLogged(run_id=self.run_id, attempt=self.attempt, steps=report.steps)
        await self.emit("iterations", event, self._dedup(f"iterations:{report.steps[0].step}"))

    async def _on_failed(self, report: FailedReport) -> None:
        # Of several ranks, the first to fail says why; the others then fail in their collectives.
        self._progress.failure = self._progress.failure or report.message

    async def _on_finished(self, report: FinishedReport) -> None:
        self._progress.finished = True
        self._store_saved_late()

    async def _on_drained(self, report: DrainedReport) -> None:
        self.drained_after = report.epoch
        self._store_saved_late()

    def _store_saved_late(self) -> None:
        """The epoch a rung decision or a drain stopped training after is saved after its report."""
        try:
            self.checkpoints.queue_saved_late(self.work_dir, self._announce_checkpoint)
        except OSError:
            log.exception("run %s: cannot queue the checkpoint saved after the last report", self.run_id)

    def _outcome(self, ended: ChildExit, world_size: int, processes: TrainingProcesses,
                 log_path: Path) -> AttemptOutcome:
        finished, failure = self._progress.finished, self._progress.failure
        if world_size > 1 and finished and ended.returncode != 0:
            # Rank 0 reports `finished` only once every rank has passed the barrier after
            # the last epoch, and its checkpoint is written: what failed was a teardown.
            log.warning("run %s: rank %d exited with %d after training finished", self.run_id, ended.rank,
                        ended.returncode)
            return AttemptOutcome(returncode=0, finished=True)
        if ended.returncode < 0 and not finished:
            # A signal nobody here sent (TrainingProcesses names the rank that died first
            # of one): the kernel's OOM killer does this. A reset, retried like a lost trainer.
            killed = killed_by_signal_message(ended, world_size, processes.peak_memory.get(ended.rank))
            return AttemptOutcome(returncode=ended.returncode, failure=failure, killed=killed)
        if world_size > 1 and ended.returncode != 0 and failure is None:
            # The rank that failed first without a report is the cause: the others then fail
            # in their collectives.
            failure = (f"training process of rank {ended.rank} (of {world_size}) {ended_how(ended.returncode)}; "
                       f"last lines of {log_path}:\n{log_tail(log_path)}")
        return AttemptOutcome(returncode=ended.returncode, finished=finished, failure=failure)

    def _model_id(self) -> str:
        # Derived from the attempt: a re-published event names the same model.
        return uuid.uuid5(uuid.NAMESPACE_URL, f"trainyard:{self.run_id}:{self.attempt}").hex

    async def _register_model(self) -> None:
        """Store the trained weights and announce the model before the run's success,
        so a successful run always has one."""
        stored = await self.checkpoints.store_model_weights(self._model_id(), self.work_dir)
        if stored is not None:
            await self._announce_model(weights=stored[0])

    async def _announce_model(self, weights: str) -> None:
        model = ModelRegistered(
            run_id=self.run_id,
            model_id=self._model_id(),
            attempt=self.attempt,
            trainer_id=self.assignment.trainer_id,
            architecture=self.assignment.spec.architecture,
            classes=self.assignment.dataset.classes,
            checkpoint=weights,
            # The last epoch, counting those of earlier attempts this one resumed from.
            epochs_completed=self.last_epoch,
            # Lineage: the registered model this run was fine-tuned from, if any.
            base_model_id=self.assignment.base_model.id if self.assignment.base_model
            else self.assignment.spec.base_model_id,
        )
        await self.emit("model", model, self._dedup("model"))

    async def _report_epoch(self, report: EpochReport) -> None:
        event = EpochLogged(
            run_id=self.run_id,
            attempt=self.assignment.attempt,
            **report.model_dump(exclude={"kind", "previews", "predictions"}),
            previews=await self._store_previews(report),
            predictions=await self._store_predictions(report),
        )
        await self.emit("epoch", event, self._dedup(f"epoch:{report.epoch}"))
        self.epochs_reported += 1
        self.last_epoch = report.epoch
        # Stored only once reported, in the background while the child trains on: a later
        # attempt, on any trainer, resumes from here once checkpoint.saved says it is whole.
        try:
            self.checkpoints.queue_epoch(report.epoch, report.metrics, self.work_dir, self._announce_checkpoint)
        except OSError:
            log.exception("run %s: cannot queue the checkpoint of epoch %d", self.run_id, report.epoch)

    async def _announce_checkpoint(self, stored: StoredCheckpoint) -> None:
        saved = CheckpointSaved(run_id=self.run_id, attempt=self.attempt,
                                trainer_id=self.assignment.trainer_id, checkpoint=stored)
        await self.emit("checkpoint", saved, self._dedup(f"checkpoint:{stored.epoch}"))

    async def _store_predictions(self, report: EpochReport) -> str | None:
        """The evaluation's predictions, stored before the event names them (None if that fails: the
        epoch's report matters more)."""
        if report.predictions is None:
            return None
        name = predictions_name(self.run_id, report.epoch)
        try:
            await self.cache.artifacts.upload_file(name, Path(report.predictions))
        except Exception:
            log.exception("run %s: storing the predictions of epoch %d failed", self.run_id, report.epoch)
            return None
        return name

    async def _store_previews(self, report: EpochReport) -> list[PreviewImage]:
        """The epoch's preview PNGs, stored before the event names them; none if storing fails
        (a preview is not worth losing the epoch's report for)."""
        stored = []
        try:
            for preview in report.previews:
                name = preview_name(self.run_id, report.epoch, preview.image_id)
                await self.cache.artifacts.upload_file(name, Path(preview.path))
                stored.append(PreviewImage(image_id=preview.image_id, file_name=preview.file_name, object_name=name))
        except Exception:
            log.exception("run %s: storing the previews of epoch %d failed", self.run_id, report.epoch)
            return []
        return stored
