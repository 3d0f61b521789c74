"""Announcing stored transitions off the path that stored them.

A transition and its `run.status_changed` are stored by one write (the run's
`status_outbox`). Publishing the event and pulling the acknowledged entry
back out used to be awaited inside the transition: a JetStream round trip and
one more fsync'd update, in a row, before the handler could go on (before a
completed run's trainer was offered its next run, say). Here they happen in
one background task instead:

- events are published in the order they were stored, one at a time, so one
  run's changes reach the stream in order;
- acknowledged entries leave their runs' outboxes in one multi-document update
  per flush (`SchedulerStore.announced_many`): the database commits it as one
  transaction, one fsync for the whole batch, where one `$pull` per event cost
  an fsync each;
- an event the bus does not take stays in the outbox, and the periodic pass
  publishes it (`RunLifecycle.announce_unannounced`), with the same Msg-Id so a
  repeat is dropped by the stream. Events still queued here when the process
  dies are in the outbox too: nothing is lost, at worst announced a few
  seconds late.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from services.scheduler.store import SchedulerStore
from shared.events import RunStatusChanged

log = logging.getLogger(__name__)

# Acknowledged entries are pulled when the queue runs dry, when this many wait, or when the oldest
# waited this long (well inside the periodic pass's 5 s grace, after which it would publish them again).
FLUSH_EVERY = 256
FLUSH_AFTER_S = 0.5


class Announcer:
    def __init__(self, store: SchedulerStore, publish: Callable[[RunStatusChanged], Awaitable[None]]) -> None:
        self.store = store
        self.publish = publish
        self._queue: asyncio.Queue[RunStatusChanged] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._acknowledged: list[tuple[str, str]] = []
        self._oldest_acknowledged = 0.0

    def announce(self, event: RunStatusChanged) -> None:
        """Publish `event` soon; its transition is already stored with it in the outbox."""
        self._queue.put_nowait(event)
        if self._task is None or self._task.done():
            # Started on first use: the lifecycle is built before the event loop runs.
            self._task = asyncio.create_task(self._run(), name="status-announcer")

    async def idle(self) -> None:
        """Wait until everything handed over so far was published (or given up) and flushed."""
        await self._queue.join()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            event = await self._queue.get()
            try:
                await self.publish(event)
                if not self._acknowledged:
                    self._oldest_acknowledged = loop.time()
                self._acknowledged.append((event.run_id, event.event_id))
            except Exception:
                log.warning("announcing the change of run %s to %s failed; it stays in its outbox",
                            event.run_id, event.status, exc_info=True)
            if self._queue.empty() or len(self._acknowledged) >= FLUSH_EVERY \
                    or loop.time() - self._oldest_acknowledged >= FLUSH_AFTER_S:
                await self._flush()
            self._queue.task_done()

    async def _flush(self) -> None:
        acknowledged, self._acknowledged = self._acknowledged, []
        if not acknowledged:
            return
        try:
            await self.store.announced_many(acknowledged)
        except Exception:
            # The entries stay; the periodic pass publishes them again (the stream drops the repeat
            # by its Msg-Id) and pulls them then.
            log.warning("pulling %d announced event(s) from the outbox failed", len(acknowledged), exc_info=True)
