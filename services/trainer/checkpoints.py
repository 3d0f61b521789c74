"""An attempt's checkpoints in the artifact store: what a later attempt, on any trainer, resumes from.

The training child writes MMEngine checkpoints into the attempt's local work
dir: every `checkpoint.interval` epochs, the last one, each new best and an
early stop's (services/trainer/hooks.py, TrainyardCheckpointHook), each before
the epoch's report goes out. After each reported epoch that has one, the session
stores that epoch's checkpoint
under the attempt's own prefix, records it in the attempt's manifest (with the
run's best epoch by the spec's watched metric), drops what the checkpoint
policy no longer keeps, and announces it (`checkpoint.saved`). The scheduler
records the newest checkpoint of the run's *current* attempt and hands it to
the next attempt (`RunAssigned.resume_from`); a superseded attempt that is
still running writes only under its own prefix and is never recorded.

Retention is fenced by the connection: what the next attempt resumes from is one
of the superseded attempt's own checkpoints, and an attempt is superseded while
it runs only when the scheduler stops hearing its trainer (presumed lost). So an
attempt deletes only epochs it stored since its NATS connection last broke and
was made again; older ones stay (orphans once the run moves on, never holes).

Only reported epochs are stored, so a resume never leaves a hole in the run's
epochs (MMEngine saves epoch N before validating it: a trainer lost in between
holds a checkpoint of an epoch nobody saw).

Stored off the training's path (`queue_epoch`): the report's handler links the
epoch's file aside (the child may delete its own copy, `max_keep_ckpts`, before
the upload) and returns; one task per attempt stores the queued epochs in order
while the child trains on, each fully stored (object, then manifest) before its
`checkpoint.saved` goes out, so a resume is only ever offered a whole one. An
epoch the policy would drop at once, because `keep` newer ones are already
queued behind it and it is not (or no longer) the best, is never uploaded. The session waits
for the queue (`settled`) before it publishes the attempt's outcome or hands
the run back.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.trainer.reports import QUEUED_DIR
from services.trainer.weights import convert_in_subprocess, weights_path
from shared.artifacts import (
    ArtifactCache,
    CheckpointManifest,
    attempt_prefix,
    checkpoint_name,
    describe_checkpoint,
    model_weights_name,
)
from shared.events import BestCheckpoint, StoredCheckpoint
from shared.specs import LOWER_IS_BETTER, RunSpec

log = logging.getLogger(__name__)

# The newest two are always kept: the newest may be one whose upload a lost
# trainer cut short; the one before it is then what the run resumes from.
MIN_KEPT = 2

# Called with each checkpoint once it is fully stored (the session publishes checkpoint.saved).
Announce = Callable[[StoredCheckpoint], Awaitable[None]]


@dataclass(frozen=True)
class _Queued:
    epoch: int
    metrics: Mapping[str, float | None]
    path: Path  # a hard link to the child's epoch_<N>.pth, in QUEUED_DIR
    announce: Announce


class CheckpointStoreError(RuntimeError):
    """The artifact store cannot give a run what it needs to start."""


def improves(spec: RunSpec, epoch: int, name: str, metrics: Mapping[str, float | None],
             best: BestCheckpoint | None) -> BestCheckpoint | None:
    """The new best when this evaluation beats `best` on the watched metric (ties keep the earlier one,
    as MMEngine's CheckpointHook does)."""
    if spec.checkpoint.strategy == "latest":
        return None
    metric = spec.watched_metric
    value = metrics.get(metric)
    if value is None:
        return None  # an epoch without evaluation, or the metric undefined in this one: never the best
    if best is not None and best.metric == metric:
        better = value < best.value if metric in LOWER_IS_BETTER else value > best.value
        if not better:
            return None
    return BestCheckpoint(epoch=epoch, metric=metric, value=value, name=name)


class RunCheckpoints:
    def __init__(self, run_id: str, attempt: int, spec: RunSpec, cache: ArtifactCache,
                 resume_from: StoredCheckpoint | None = None) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.spec = spec
        self.cache = cache
        self.artifacts = cache.artifacts
        self.resume_from = resume_from
        # The best so far carries over from the attempt this one continues.
        self.manifest = CheckpointManifest(attempt=attempt, best=resume_from.best if resume_from else None)
        self.newest: StoredCheckpoint | None = resume_from
        # The connection's reconnect count when each epoch was stored: retention deletes only epochs
        # stored since the connection last broke (see store_epoch).
        self._stored_at: dict[int, int] = {}
        self._queue: list[_Queued] = []
        self._storing: asyncio.Task[None] | None = None
        # The newest reported epoch that had no checkpoint when reported, with its metrics:
        # the child saves it after its report when training stops there (queue_saved_late).
        self._unsaved: tuple[int, Mapping[str, float | None]] | None = None

    async def resume_point(self) -> Path | None:
        """A local copy of the checkpoint this attempt continues from, or None for a fresh start."""
        if self.resume_from is None:
            return None
        try:
            return await self.cache.fetch(self.resume_from.name)
        except Exception as error:
            raise CheckpointStoreError(
                f"cannot fetch checkpoint {self.resume_from.name} (epoch {self.resume_from.epoch}) "
                f"to resume from: {error}"
            ) from error

    def queue_epoch(self, epoch: int, metrics: Mapping[str, float | None], work_dir: Path,
                    announce: Announce) -> None:
        """Store a reported epoch's checkpoint in the background (see the module's doc); returns at once."""
        source = work_dir / f"epoch_{epoch}.pth"
        if not source.is_file():
            # The child writes an epoch's checkpoints before its report: this epoch has none
            # (between checkpoint.interval's epochs, and not a new best).
            log.debug("run %s: epoch %d saved no checkpoint; none to store", self.run_id, epoch)
            self._unsaved = (epoch, dict(metrics))
            return
        self._unsaved = None
        queued = work_dir / QUEUED_DIR / source.name
        queued.parent.mkdir(exist_ok=True)
        queued.unlink(missing_ok=True)
        os.link(source, queued)  # instant, no copy; the bytes stay until both names are gone
        self._queue.append(_Queued(epoch, dict(metrics), queued, announce))
        if self._storing is None or self._storing.done():
            self._storing = asyncio.create_task(self._store_queued())

    def queue_saved_late(self, work_dir: Path, announce: Announce) -> None:
        """Training ended (finished or drained): store the last reported epoch if the child saved
        its checkpoint only after reporting it (a rung decision's or a drain's stop off
        checkpoint.interval, services/trainer/hooks.py `save_stopped_epoch`)."""
        if self._unsaved is not None and (work_dir / f"epoch_{self._unsaved[0]}.pth").is_file():
            epoch, metrics = self._unsaved
            self.queue_epoch(epoch, metrics, work_dir, announce)

    async def settled(self) -> None:
        """Wait until every queued epoch is stored (or its storing failed, which is logged)."""
        while self._storing is not None and not self._storing.done():
            await asyncio.shield(self._storing)

    async def _store_queued(self) -> None:
        while self._queue:
            queued = self._queue.pop(0)
            try:
                if self._dropped_at_once(queued):
                    log.info("run %s: epoch %d not stored: %d newer epochs wait behind it", self.run_id,
                             queued.epoch, len(self._queue))
                    continue
                stored = await self.store_epoch(queued.epoch, queued.metrics, queued.path.parent)
                if stored is not None:
                    await queued.announce(stored)
            except Exception:
                # Training goes on; a resume would start from the previous stored epoch.
                log.exception("run %s: storing the checkpoint of epoch %d failed", self.run_id, queued.epoch)
            finally:
                queued.path.unlink(missing_ok=True)

    def _dropped_at_once(self, queued: _Queued) -> bool:
        """The policy would delete this epoch as soon as the ones queued behind it are stored."""
        if len(self._queue) < max(MIN_KEPT, self.spec.checkpoint.keep):
            return False
        best = improves(self.spec, queued.epoch, checkpoint_name(self.run_id, self.attempt, queued.epoch),
                        queued.metrics, self.manifest.best)
        # Not the best, or not once a better one queued behind it is stored.
        return best is None or any(
            improves(self.spec, later.epoch, checkpoint_name(self.run_id, self.attempt, later.epoch),
                     later.metrics, best) is not None
            for later in self._queue
        )

    async def store_epoch(self, epoch: int, metrics: Mapping[str, float | None],
                          work_dir: Path) -> StoredCheckpoint | None:
        """Store the checkpoint of a reported epoch, keep what the policy keeps; what was stored."""
        path = work_dir / f"epoch_{epoch}.pth"
        if not path.is_file():
            log.warning("run %s: epoch %d has no checkpoint at %s; not stored", self.run_id, epoch, path)
            return None
        name = checkpoint_name(self.run_id, self.attempt, epoch)
        # Counted before the upload: one the connection broke during counts as stored before that.
        self._stored_at.setdefault(epoch, self.artifacts.reconnects())
        await self.artifacts.upload_file(name, path, description=describe_checkpoint(epoch, metrics))
        manifest = self.manifest
        best = improves(self.spec, epoch, name, metrics, manifest.best)
        if best is not None:
            manifest = manifest.model_copy(update={"best": best})
        mine = attempt_prefix(self.run_id, self.attempt)
        own_best = manifest.best.name if manifest.best and manifest.best.name.startswith(mine) else None
        manifest, dropped = manifest.keeping(epoch, keep=max(MIN_KEPT, self.spec.checkpoint.keep), own_best=own_best)
        reconnects = self.artifacts.reconnects()
        pinned = [old for old in dropped if self._stored_at.get(old, -1) != reconnects]
        if pinned:
            # Stored before the connection last broke: the scheduler may have presumed this trainer lost
            # meanwhile and handed one of them to the next attempt as `resume_from`. Kept, not deleted.
            log.info("run %s attempt %d keeps epochs %s: stored before its NATS connection broke", self.run_id,
                     self.attempt, pinned)
            dropped = [old for old in dropped if old not in pinned]
        await self.artifacts.write_manifest(self.run_id, manifest)
        self.manifest = manifest
        for old in dropped:
            await self.artifacts.delete(checkpoint_name(self.run_id, self.attempt, old))
        self.newest = StoredCheckpoint(attempt=self.attempt, epoch=epoch, name=name, best=manifest.best)
        return self.newest

    def final_checkpoint(self) -> tuple[str, int] | None:
        """The stored checkpoint whose weights become the trained model, and its epoch:
        the best one when the policy keeps one, else the newest."""
        best = self.manifest.best
        if self.spec.checkpoint.strategy != "latest" and best is not None:
            return best.name, best.epoch
        if self.newest is not None:
            return self.newest.name, self.newest.epoch
        return None

    async def store_model_weights(self, model_id: str, work_dir: Path) -> tuple[str, int] | None:
        """Store the final epoch's weights (no optimizer state) as the model's; its name and epoch.
        The child wrote them for its own last and best epochs (services/trainer/weights.py); those of
        an earlier attempt's epoch are converted here, in a process of their own."""
        final = self.final_checkpoint()
        if final is None:
            return None
        name, epoch = final
        weights = weights_path(work_dir, epoch)
        if name != checkpoint_name(self.run_id, self.attempt, epoch) or not weights.is_file():
            local = work_dir / f"epoch_{epoch}.pth"
            if name != checkpoint_name(self.run_id, self.attempt, epoch) or not local.is_file():
                local = await self.cache.fetch(name)  # an earlier attempt (maybe on another machine) trained it
            await convert_in_subprocess(local, weights, {"run_id": self.run_id, "epoch": epoch})
        stored = model_weights_name(model_id)
        await self.artifacts.upload_file(stored, weights, description=describe_checkpoint(epoch, {}))
        weights.unlink(missing_ok=True)
        return stored, epoch
