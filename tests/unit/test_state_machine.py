import itertools

from services.scheduler.state import can_move, sources_of
from shared.status import TERMINAL_STATUSES, RunStatus


def test_a_run_moves_forward_through_its_lifecycle() -> None:
    path = [RunStatus.CREATED, RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.SUCCESS]
    assert all(can_move(a, b) for a, b in itertools.pairwise(path))


def test_terminal_statuses_never_change() -> None:
    for terminal in TERMINAL_STATUSES:
        assert not any(can_move(terminal, target) for target in RunStatus)


def test_a_started_run_cannot_go_back_to_pending_without_a_rerun() -> None:
    assert not can_move(RunStatus.IN_PROGRESS, RunStatus.PENDING)
    assert can_move(RunStatus.IN_PROGRESS, RunStatus.RERUN)
    assert can_move(RunStatus.RERUN, RunStatus.PENDING)


def test_success_only_comes_from_a_run_in_progress() -> None:
    assert sources_of(RunStatus.SUCCESS) == ["in_progress"]
