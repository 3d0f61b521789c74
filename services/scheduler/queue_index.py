"""The scheduler's in-memory index of the queue, per accelerator name.

A placement pass walks this instead of reading the whole queue from the
database: runs are added when they enter the queue (the lifecycle says so),
dropped when they are claimed or found gone, and the whole index is rebuilt
from the database by the periodic pass, so a missed event heals within one
interval. The database stays the source of truth: every claim is still a
conditional update there, so a stale entry costs one refused claim, never a
double assignment.
"""

from collections.abc import Iterator
from datetime import datetime

from services.scheduler.placement import QueuedRun, queue_order


class QueueIndex:
    def __init__(self) -> None:
        self._by_accelerator: dict[str, dict[str, QueuedRun]] = {}
        self._accelerator_of: dict[str, str] = {}
        # Runs added while a rebuild read the database: the rebuild's snapshot may predate them.
        self._added_during_rebuild: dict[str, QueuedRun] | None = None
        # Runs dropped while it read (claimed meanwhile: claims do not wait for passes): the
        # snapshot may still hold them.
        self._dropped_during_rebuild: set[str] = set()

    def __len__(self) -> int:
        return len(self._accelerator_of)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._accelerator_of

    def add(self, run: QueuedRun) -> None:
        self.discard(run.run_id)
        name = run.accelerator.name
        self._by_accelerator.setdefault(name, {})[run.run_id] = run
        self._accelerator_of[run.run_id] = name
        if self._added_during_rebuild is not None:
            self._added_during_rebuild[run.run_id] = run
            self._dropped_during_rebuild.discard(run.run_id)

    def discard(self, run_id: str) -> None:
        name = self._accelerator_of.pop(run_id, None)
        if name is not None:
            self._by_accelerator[name].pop(run_id, None)
        if self._added_during_rebuild is not None:
            self._added_during_rebuild.pop(run_id, None)
            self._dropped_during_rebuild.add(run_id)

    def begin_rebuild(self) -> None:
        self._added_during_rebuild = {}
        self._dropped_during_rebuild = set()

    def finish_rebuild(self, snapshot: list[QueuedRun]) -> None:
        """Replace the index by a snapshot read from the database, keeping what was added while it
        was read and leaving out what was dropped meanwhile (a claim that ended during the read)."""
        added = self._added_during_rebuild or {}
        dropped = self._dropped_during_rebuild
        self._added_during_rebuild = None
        self._dropped_during_rebuild = set()
        self._by_accelerator.clear()
        self._accelerator_of.clear()
        for run in snapshot:
            if run.run_id not in dropped:
                self.add(run)
        for run in added.values():
            self.add(run)

    def accelerators(self) -> list[str]:
        return [name for name, runs in self._by_accelerator.items() if runs]

    def ordered(self, accelerator: str, now: datetime, aging_s: float) -> list[QueuedRun]:
        return queue_order(list(self._by_accelerator.get(accelerator, {}).values()), now, aging_s)

    def everything(self, now: datetime, aging_s: float) -> Iterator[QueuedRun]:
        for name in self.accelerators():
            yield from self.ordered(name, now, aging_s)
