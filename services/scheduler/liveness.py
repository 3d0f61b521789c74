"""Trainer liveness in the scheduler's memory; the database hears of it only when it matters.

A heartbeat from a trainer process already registered, saying nothing new
about it, is only remembered here: 50 trainers beating every 2 s were 25
fsync'd updates a second. What the database needs is written when it changes:
a trainer joining, restarting as a new process, changing its accelerators or
draining goes through `SchedulerStore.record_heartbeat` at once; being
presumed lost is the periodic pass's conditional update. The stored
`last_seen` (what the API shows) is refreshed in one bulk write per periodic
pass, each trainer's at most once per half timeout, so it stays inside the
timeout.

Every replica hears every heartbeat (a core subscription, no queue group), so
each keeps its own memory; a restarted scheduler counts silence from its own
start, so heartbeats sent while it was down are never taken for missed ones.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.scheduler.placement import TrainerView
from services.scheduler.store import HeartbeatNews, SchedulerStore
from shared.events import TrainerHeartbeat
from shared.store import Document

# What, if it changes, is written at once: the trainer's identity and what placement reads.
Signature = tuple[str, tuple[tuple[str, int], ...], str | None, bool, str]


@dataclass
class Heard:
    at: datetime
    signature: Signature
    running: list[Document]


def signature_of(beat: TrainerHeartbeat) -> Signature:
    return (beat.host, tuple((a.name, a.count) for a in beat.accelerators), beat.version, beat.draining,
            beat.instance)


class Liveness:
    def __init__(self, store: SchedulerStore, started_at: datetime, timeout: timedelta) -> None:
        self.store = store
        self.started_at = started_at
        self.timeout = timeout
        self._heard: dict[str, Heard] = {}
        self._unflushed: set[str] = set()
        self._flushed_at: dict[str, datetime] = {}

    async def heartbeat(self, beat: TrainerHeartbeat, now: datetime) -> HeartbeatNews:
        signature = signature_of(beat)
        running = [r.model_dump() for r in beat.running]
        known = self._heard.get(beat.trainer_id)
        if known is not None and known.signature == signature:
            known.at, known.running = now, running
            self._unflushed.add(beat.trainer_id)
            return "known"
        news = await self.store.record_heartbeat(beat, now)
        self._heard[beat.trainer_id] = Heard(now, signature, running)
        self._flushed_at[beat.trainer_id] = now
        return news

    def forget(self, trainer_id: str) -> None:
        """The trainer was marked lost: its next heartbeat registers it again."""
        self._heard.pop(trainer_id, None)
        self._unflushed.discard(trainer_id)

    def last_alive(self, doc: Document) -> datetime:
        """The latest moment a stored trainer is known to have been alive, as far as this process can tell."""
        heard = self._heard.get(doc["_id"])
        moments: list[datetime] = [doc["last_seen"], self.started_at] + ([heard.at] if heard else [])
        return max(moments)

    def online_views(self, docs: list[Document], now: datetime) -> list[TrainerView]:
        """Placement's view of the stored trainers not lost and heard from within the timeout."""
        views = []
        for doc in docs:
            heard = self._heard.get(doc["_id"])
            if doc.get("lost"):
                # Presumed lost (by this replica or another): its next heartbeat registers it again.
                self.forget(doc["_id"])
                continue
            seen = max([doc["last_seen"]] + ([heard.at] if heard else []))
            if now - seen > self.timeout:
                continue
            views.append(TrainerView(trainer_id=doc["_id"], accelerator_name=doc.get("accelerator_name", "CPU"),
                                     capacity=int(doc.get("capacity", 0)), free=int(doc.get("free", 0)),
                                     draining=bool(doc.get("draining"))))
        return views

    async def flush(self, now: datetime) -> None:
        """Store when trainers were last heard from, in one bulk write: each trainer at most once per
        half timeout, so the stored `last_seen` stays inside the timeout (the API's view of
        health) for a fraction of the writes (each update is fsync'd on its own)."""
        due = {tid for tid in self._unflushed if now - self._flushed_at.get(tid, datetime.min.replace(
            tzinfo=now.tzinfo)) >= self.timeout / 2}
        beats = {tid: self._heard[tid] for tid in due if tid in self._heard}
        self._unflushed -= due
        if not beats:
            return
        for tid in beats:
            self._flushed_at[tid] = now
        await self.store.touch_trainers(
            [(tid, heard.signature[4], heard.at, heard.running) for tid, heard in beats.items()])
