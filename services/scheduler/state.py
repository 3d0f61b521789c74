"""The run state machine: which status may follow which, nothing else."""

from shared.status import TERMINAL_STATUSES, RunStatus

S = RunStatus

ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    S.CREATED: frozenset({S.PENDING, S.TERMINATED}),
    # pending -> pending: an assignment nobody acknowledged goes back to the queue.
    # pending -> failed: training broke before it started (a bad dataset, say).
    S.PENDING: frozenset({S.PENDING, S.IN_PROGRESS, S.TERMINATED, S.FAILED, S.ABORTED}),
    S.IN_PROGRESS: frozenset({S.SUCCESS, S.FAILED, S.ABORTED, S.TERMINATED, S.RERUN}),
    S.RERUN: frozenset({S.PENDING, S.TERMINATED, S.ABORTED}),
    S.SUCCESS: frozenset(),
    # A person may rerun a run that did not succeed: it resumes from its latest checkpoint.
    S.FAILED: frozenset({S.RERUN}),
    S.ABORTED: frozenset({S.RERUN}),
    S.TERMINATED: frozenset({S.RERUN}),
}

# Statuses in which a run holds (or waits for) a trainer.
ACTIVE_STATUSES: frozenset[RunStatus] = frozenset({S.PENDING, S.IN_PROGRESS})
assert all(terminal in ALLOWED for terminal in TERMINAL_STATUSES)


def can_move(current: RunStatus, target: RunStatus) -> bool:
    return target in ALLOWED[current]


def sources_of(target: RunStatus) -> list[str]:
    """Every status a run may be in to move to target: the guard of an atomic update."""
    return sorted(str(status) for status, nexts in ALLOWED.items() if target in nexts)
