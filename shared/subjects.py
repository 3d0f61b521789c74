"""Subject and stream names: the one place they are spelled."""

from dataclasses import dataclass

# Subjects a trainer publishes, each followed by the trainer's id.
TRAINER_REPORTS = ("run.accepted", "run.started", "epoch.logged", "iteration.logged", "run.completed",
                   "run.released", "model.registered", "checkpoint.saved", "trainer.heartbeat")


@dataclass(frozen=True)
class Subjects:
    """Subjects under an optional prefix, so tests and tenants can share one NATS."""

    prefix: str = ""

    def _s(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    @property
    def stream(self) -> str:
        return f"TRAINYARD_{self.prefix.upper()}" if self.prefix else "TRAINYARD"

    @property
    def stream_subjects(self) -> list[str]:
        return [self._s("run.>"), self._s("epoch.>"), self._s("model.>"), self._s("iteration.>"),
                self._s("checkpoint.>"), self._s("sweep.>"), self._s("deadletter.>")]

    @property
    def run_created(self) -> str:
        return self._s("run.created")

    # What a trainer reports is published under its own id (<report>.<trainer id>): NATS lets each
    # trainer's credentials publish only its own subjects, and consumers read the sender from the
    # subject. Called without an id, each gives the pattern consumers subscribe to.

    def run_started(self, trainer_id: str = "*") -> str:
        return self._s(f"run.started.{trainer_id}")

    def epoch_logged(self, trainer_id: str = "*") -> str:
        return self._s(f"epoch.logged.{trainer_id}")

    def iterations_logged(self, trainer_id: str = "*") -> str:
        # A batch of training-loss logs every spec.log_interval iterations.
        return self._s(f"iteration.logged.{trainer_id}")

    def run_completed(self, trainer_id: str = "*") -> str:
        return self._s(f"run.completed.{trainer_id}")

    def model_registered(self, trainer_id: str = "*") -> str:
        return self._s(f"model.registered.{trainer_id}")

    def checkpoint_saved(self, trainer_id: str = "*") -> str:
        return self._s(f"checkpoint.saved.{trainer_id}")

    def run_accepted(self, trainer_id: str = "*") -> str:
        return self._s(f"run.accepted.{trainer_id}")

    def run_released(self, trainer_id: str = "*") -> str:
        return self._s(f"run.released.{trainer_id}")

    def trainer_heartbeat(self, trainer_id: str = "*") -> str:
        # Core NATS, not JetStream: a lost heartbeat is replaced by the next one.
        return self._s(f"trainer.heartbeat.{trainer_id}")

    def reporting_trainer(self, subject: str) -> str | None:
        """The trainer a trainer report was published by (its subject's last token), None for
        any other subject."""
        name = subject.removeprefix(self.prefix + ".") if self.prefix else subject
        report, _, trainer_id = name.rpartition(".")
        return trainer_id if report in TRAINER_REPORTS and trainer_id else None

    @property
    def run_status_changed(self) -> str:
        return self._s("run.status_changed")

    @property
    def run_kill_requested(self) -> str:
        return self._s("run.kill_requested")

    @property
    def run_rerun_requested(self) -> str:
        return self._s("run.rerun_requested")

    @property
    def run_removed(self) -> str:
        return self._s("run.removed")

    @property
    def sweep_created(self) -> str:
        return self._s("sweep.created")

    @property
    def sweep_kill_requested(self) -> str:
        return self._s("sweep.kill_requested")

    @property
    def sweep_trial_stopped(self) -> str:
        return self._s("sweep.trial_stopped")

    @property
    def sweep_completed(self) -> str:
        return self._s("sweep.completed")

    def run_rung_decided(self, trainer_id: str) -> str:
        # ASHA's decision for a trial at a rung, to the trainer holding it.
        return self._s(f"run.rung_decided.{trainer_id}")

    def run_stop_requested(self, trainer_id: str) -> str:
        return self._s(f"run.stop_requested.{trainer_id}")

    def run_assigned(self, trainer_id: str) -> str:
        return self._s(f"run.assigned.{trainer_id}")

    def dead_letter(self, subject: str) -> str:
        return self._s(f"deadletter.{subject.removeprefix(self.prefix + '.') if self.prefix else subject}")
