"""The run state machine: which status may follow which, nothing else."""

from shared.status import TERMINAL_STATUSES, RunStatus

S = RunStatus

ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    S.CREATED: frozenset({S.PENDING, S.TERMINATED}),
    S.PENDING: frozenset({S.IN_PROGRESS, S.TERMINATED, S.FAILED, S.ABORTED}),
    S.IN_PROGRESS: frozenset({S.SUCCESS, S.FAILED, S.ABORTED, S.TERMINATED, S.RERUN}),
    S.RERUN: frozenset({S.PENDING, S.TERMINATED, S.ABORTED}),
    **{terminal: frozenset() for terminal in TERMINAL_STATUSES},
}


def can_move(current: RunStatus, target: RunStatus) -> bool:
    return target in ALLOWED[current]


def sources_of(target: RunStatus) -> list[str]:
    """Every status a run may be in to move to target: the guard of an atomic update."""
    return sorted(str(status) for status, nexts in ALLOWED.items() if target in nexts)
