"""The trainer's runtime state: what it advertises, what it is training."""

import asyncio
import contextlib
import logging
import os
import re
import socket
from pathlib import Path
from typing import Literal

from faststream.nats import NatsBroker

from services.trainer.accelerators import detect_accelerators, training_device
from services.trainer.session import TrainingSession
from shared.bus import publish_event
from shared.events import Event, RunAssigned, TrainerHeartbeat
from shared.settings import TrainerSettings
from shared.subjects import Subjects

log = logging.getLogger(__name__)
VERSION = "0.1.0"


def default_trainer_id() -> str:
    # A trainer id is a NATS subject token and a durable consumer name.
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())


class Trainer:
    def __init__(self, settings: TrainerSettings, broker: NatsBroker, subjects: Subjects) -> None:
        self.settings = settings
        self.broker = broker
        self.subjects = subjects
        self.trainer_id = settings.trainer_id or default_trainer_id()
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.trainer_id):
            raise ValueError(f"TRAINYARD_TRAINER_ID={self.trainer_id!r}: use 1-64 letters, digits, '-' or '_'")
        self.accelerators = detect_accelerators(settings)
        self.device = training_device(self.accelerators)
        self.threads = settings.threads or os.cpu_count() or 1
        self.work_root = Path(settings.work_root).resolve()
        self.session: TrainingSession | None = None
        self._session_task: asyncio.Task[None] | None = None

    async def emit(self, kind: str, event: Event, dedup_key: str) -> None:
        subject = {
            "started": self.subjects.run_started,
            "epoch": self.subjects.epoch_logged,
            "completed": self.subjects.run_completed,
        }[kind]
        await publish_event(self.broker, self.subjects, subject, event, dedup_key=dedup_key)

    def accept(self, assignment: RunAssigned) -> Literal["started", "duplicate", "busy"]:
        current = self.session
        if current is not None:
            same = (current.run_id, current.assignment.attempt) == (assignment.run_id, assignment.attempt)
            return "duplicate" if same else "busy"
        session = TrainingSession(assignment, self.work_root, self.device, self.threads, self.emit)
        self.session = session
        self._session_task = asyncio.create_task(self._train(session))
        log.info("training run %s attempt %d on %s", assignment.run_id, assignment.attempt, self.device)
        return "started"

    async def _train(self, session: TrainingSession) -> None:
        try:
            completed = await session.run()
            log.info("run %s ended %s", session.run_id, completed.status)
        finally:
            self.session = None
            with contextlib.suppress(Exception):
                await self.send_heartbeat()

    async def send_heartbeat(self) -> None:
        beat = TrainerHeartbeat(
            trainer_id=self.trainer_id,
            host=socket.gethostname(),
            accelerators=self.accelerators,
            running_run_ids=[self.session.run_id] if self.session else [],
            version=VERSION,
        )
        await self.broker.publish(beat.model_dump_json(), self.subjects.trainer_heartbeat)

    async def heartbeat_forever(self) -> None:
        while True:
            try:
                await self.send_heartbeat()
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self.settings.heartbeat_interval_s)

    async def shutdown(self) -> None:
        """Stop training on the way out; the run is reported, not left running."""
        session, task = self.session, self._session_task
        if session is not None and session.process is not None and session.process.returncode is None:
            log.warning("shutting down while training run %s: stopping it", session.run_id)
            session.process.terminate()
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=30)
