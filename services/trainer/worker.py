"""The trainer's runtime state: what it advertises, what it is training."""

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Literal

from faststream.nats import NatsBroker

from services.trainer.accelerators import detect_accelerators, probe, training_device
from services.trainer.lifeline import Cleanup, clean_up_predecessors
from services.trainer.session import TrainingSession
from services.trainer.telemetry import counted_assignments, traced_events, traced_training
from shared.artifacts import ArtifactCache, Artifacts
from shared.bus import publish_event
from shared.events import Event, RunAccepted, RunAssigned, RunningAttempt, RunStopRequested, TrainerHeartbeat
from shared.settings import TrainerSettings
from shared.subjects import Subjects
from shared.sweeps import RunRungDecided

log = logging.getLogger(__name__)
VERSION = "0.1.0"

Acceptance = Literal["accepted", "duplicate", "busy", "draining"]


def default_trainer_id(work_root: str) -> str:
    """The host name and a digest of the work root: stable across restarts (its durable consumers
    stay its own), different for two trainers on one host (they cannot share a work root)."""
    # A trainer id is a NATS subject token and a durable consumer name.
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:55]
    return f"{host}-{hashlib.sha256(str(Path(work_root).resolve()).encode()).hexdigest()[:8]}"


class Trainer:
    def __init__(self, settings: TrainerSettings, broker: NatsBroker, subjects: Subjects) -> None:
        self.settings = settings
        self.broker = broker
        self.subjects = subjects
        self.trainer_id = settings.trainer_id or default_trainer_id(settings.work_root)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.trainer_id):
            raise ValueError(f"TRAINYARD_TRAINER_ID={self.trainer_id!r}: use 1-64 letters, digits, '-' or '_'")
        # torch is asked (in a process of its own) unless told this is a CPU machine.
        named = settings.accelerator_name
        seen = probe() if not named or named.startswith("GPU") else None
        self.accelerators = detect_accelerators(settings, seen)
        self.capacity = self.accelerators[0].count
        self.device = training_device(self.accelerators, seen)
        self.threads = settings.threads or os.cpu_count() or 1
        self.work_root = Path(settings.work_root).resolve()
        self.sessions: dict[str, TrainingSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._free_gpus = list(range(self.capacity)) if self.device == "cuda" else []
        self.draining = False
        # A new one per process: how the scheduler tells a restart from a trainer that carries on.
        self.instance = uuid.uuid4().hex
        self._cache: ArtifactCache | None = None

    async def cache(self) -> ArtifactCache:
        """This machine's copies of stored checkpoints and models (opened once the broker is connected)."""
        if self._cache is None:
            artifacts = await Artifacts.open(self.broker, self.subjects)
            self._cache = ArtifactCache(self.work_root / "cache", artifacts)
        return self._cache

    @property
    def free(self) -> int:
        used = sum(s.assignment.spec.accelerator.count for s in self.sessions.values())
        return max(0, self.capacity - used)

    @traced_events
    async def emit(self, kind: str, event: Event, dedup_key: str) -> None:
        subject = {
            "started": self.subjects.run_started(self.trainer_id),
            "epoch": self.subjects.epoch_logged(self.trainer_id),
            "iterations": self.subjects.iterations_logged(self.trainer_id),
            "completed": self.subjects.run_completed(self.trainer_id),
            "released": self.subjects.run_released(self.trainer_id),
            "model": self.subjects.model_registered(self.trainer_id),
            "checkpoint": self.subjects.checkpoint_saved(self.trainer_id),
        }[kind]
        await publish_event(self.broker, self.subjects, subject, event, dedup_key=dedup_key)

    @counted_assignments
    async def accept(self, assignment: RunAssigned) -> Acceptance:
        cache = await self.cache()  # before the checks: nothing may interleave between them and the booking
        current = self.sessions.get(assignment.run_id)
        if current is not None and current.attempt == assignment.attempt:
            return "duplicate"
        if self.draining:
            return "draining"
        count = assignment.spec.accelerator.count
        if current is not None or count > self.free:
            return "busy"
        gpu_ids = [self._free_gpus.pop(0) for _ in range(count)] if self._free_gpus else []
        session = TrainingSession(assignment, self.work_root, self.device, self._threads_per_run(count),
                                  self.emit, cache, gpu_ids)
        self.sessions[assignment.run_id] = session
        await publish_event(
            self.broker, self.subjects, self.subjects.run_accepted(self.trainer_id),
            RunAccepted(run_id=assignment.run_id, attempt=assignment.attempt, trainer_id=self.trainer_id,
                        instance=self.instance),
            dedup_key=f"{assignment.run_id}:{assignment.attempt}:accepted",
        )
        task = asyncio.create_task(self._train(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("training run %s attempt %d on %s", assignment.run_id, assignment.attempt, self.device)
        return "accepted"

    def _threads_per_run(self, count: int) -> int:
        # CPU threads are shared out in proportion to the accelerators a run holds.
        return max(1, self.threads * count // max(1, self.capacity))

    @traced_training
    async def _train(self, session: TrainingSession) -> None:
        try:
            outcome = await session.run()
            log.info("run %s attempt %d ended: %s", session.run_id, session.attempt,
                     getattr(outcome, "status", "released"))
        finally:
            if self.sessions.get(session.run_id) is session:
                del self.sessions[session.run_id]
            self._free_gpus.extend(session.gpu_ids)
            with contextlib.suppress(Exception):
                await self.send_heartbeat()

    async def stop(self, request: RunStopRequested) -> None:
        session = self.sessions.get(request.run_id)
        if session is None or session.attempt != request.attempt:
            return
        log.info("stopping run %s attempt %d: %s", request.run_id, request.attempt, request.message)
        await session.stop(request.status, request.message)

    def rung_decided(self, decision: RunRungDecided) -> None:
        session = self.sessions.get(decision.run_id)
        if session is None or session.attempt != decision.attempt:
            return  # the attempt ended meanwhile, or the decision is for a superseded one
        log.info("run %s attempt %d epoch %d: %s", decision.run_id, decision.attempt, decision.epoch,
                 decision.message)
        session.decide(decision.epoch, decision.proceed, decision.message)

    async def send_heartbeat(self) -> None:
        beat = TrainerHeartbeat(
            trainer_id=self.trainer_id,
            instance=self.instance,
            host=socket.gethostname(),
            accelerators=self.accelerators,
            running=[RunningAttempt(run_id=s.run_id, attempt=s.attempt) for s in self.sessions.values()],
            free=self.free,
            version=VERSION,
            draining=self.draining,
        )
        await self.broker.publish(beat.model_dump_json(), self.subjects.trainer_heartbeat(self.trainer_id))

    async def heartbeat_forever(self) -> None:
        while True:
            try:
                await self.send_heartbeat()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    def clean_up_predecessors(self) -> Cleanup:
        """Before taking work: kill what a dead trainer left training under this work root, drop
        its checkpoints (services/trainer/lifeline.py)."""
        cleanup = clean_up_predecessors(self.work_root, self.work_root / "cache")
        for attempt in cleanup.attempts:
            log.warning("cleaned up %s of a trainer that died: killed %s, removed %d checkpoints", attempt,
                        cleanup.killed or "no process", len(cleanup.checkpoints_removed))
        return cleanup

    async def drain(self) -> None:
        """Take nothing new; each run finishes and stores the epoch in progress (or the whole
        run), then is handed back; what is still training after the drain time is stopped and
        handed back from its newest stored epoch."""
        self.draining = True
        with contextlib.suppress(Exception):
            await self.send_heartbeat()
        tasks = set(self._tasks)
        if not tasks:
            return
        reason = f"trainer {self.trainer_id} is draining"
        for session in list(self.sessions.values()):
            session.drain(reason)
        log.info("draining: up to %.0f s for %d runs to store the epoch in progress",
                 self.settings.drain_timeout_s, len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=self.settings.drain_timeout_s)
        if pending:
            for session in list(self.sessions.values()):
                await session.release(f"{reason}; its drain time ({self.settings.drain_timeout_s:g} s) ran out")
            await asyncio.wait(pending, timeout=30)
