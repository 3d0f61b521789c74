"""How an attempt ended, as the session reads it from the child's reports and exit."""

from dataclasses import dataclass
from pathlib import Path

from shared.exits import ended_how

LOG_TAIL_LINES = 8


@dataclass(frozen=True)
class AttemptOutcome:
    """How an attempt's training processes ended."""

    returncode: int
    # The child reported `finished`: training ran to its end (or its limit) and the last checkpoint is written.
    finished: bool = False
    # Why it failed, as the child (the first failing rank) or the trainer tells it.
    failure: str | None = None
    # The processes died of a signal nobody here sent (the OOM killer, say): a reset, not a failure.
    killed: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.finished and self.returncode == 0

    def failure_message(self, log_path: Path) -> str:
        return self.failure or (f"training process {ended_how(self.returncode)}; last lines of {log_path}:\n"
                                f"{log_tail(log_path)}")


# Stopped (or released) before any process started.
NOT_STARTED = AttemptOutcome(returncode=0)


@dataclass
class Progress:
    """What the child's reports of this attempt said so far."""

    finished: bool = False
    failure: str | None = None


def log_tail(path: Path) -> str:
    if not path.exists():
        return ""
    lines = path.read_text(errors="replace").strip().splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])
