"""The run status vocabulary: fixed, integrations depend on these strings."""

from enum import StrEnum


class RunStatus(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILED = "failed"
    ABORTED = "aborted"
    TERMINATED = "terminated"
    RERUN = "rerun"


TERMINAL_STATUSES: frozenset[RunStatus] = frozenset(
    {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED, RunStatus.TERMINATED}
)
