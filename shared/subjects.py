"""Subject and stream names: the one place they are spelled."""

from dataclasses import dataclass


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

    @property
    def run_started(self) -> str:
        return self._s("run.started")

    @property
    def epoch_logged(self) -> str:
        return self._s("epoch.logged")

    @property
    def iterations_logged(self) -> str:
        # A batch of training-loss logs every spec.log_interval iterations.
        return self._s("iteration.logged")

    @property
    def run_completed(self) -> str:
        return self._s("run.completed")

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
    def model_registered(self) -> str:
        return self._s("model.registered")

    @property
    def checkpoint_saved(self) -> str:
        return self._s("checkpoint.saved")

    @property
    def run_accepted(self) -> str:
        return self._s("run.accepted")

    @property
    def run_released(self) -> str:
        return self._s("run.released")

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

    @property
    def trainer_heartbeat(self) -> str:
        # Core NATS, not JetStream: a lost heartbeat is replaced by the next one.
        return self._s("trainer.heartbeat")

    def dead_letter(self, subject: str) -> str:
        return self._s(f"deadletter.{subject.removeprefix(self.prefix + '.') if self.prefix else subject}")
