"""A run's checkpoints in the artifact store: what a later attempt, on any trainer, resumes from.

The training child writes MMEngine checkpoints into the attempt's local work
dir; after each epoch is reported the session stores that epoch's checkpoint
here, records it in the run's manifest (with the best epoch by the spec's
watched metric), and drops what the checkpoint policy no longer keeps. Only
reported epochs are stored, so a resume never leaves a hole in the run's epochs
(MMEngine saves epoch N before validating it: a trainer lost in between holds a
checkpoint of an epoch nobody saw).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from shared.artifacts import (
    ArtifactCache,
    BestCheckpoint,
    CheckpointManifest,
    checkpoint_name,
    describe_checkpoint,
    model_weights_name,
)
from shared.specs import LOWER_IS_BETTER, RunSpec

log = logging.getLogger(__name__)

# The newest two are always kept: a resume needs the newest reported epoch, and
# the one before it covers a checkpoint whose upload was cut short.
MIN_KEPT = 2


class CheckpointStoreError(RuntimeError):
    """The artifact store cannot give a run what it needs to start."""


def improves(spec: RunSpec, epoch: int, metrics: dict[str, float],
             best: BestCheckpoint | None) -> BestCheckpoint | None:
    """The new best when this evaluation beats `best` on the watched metric (ties keep the earlier one,
    as MMEngine's CheckpointHook does)."""
    if spec.checkpoint.strategy == "latest":
        return None
    metric = spec.watched_metric
    value = metrics.get(metric)
    if value is None:
        return None  # an epoch without evaluation
    if best is not None and best.metric == metric:
        better = value < best.value if metric in LOWER_IS_BETTER else value > best.value
        if not better:
            return None
    return BestCheckpoint(epoch=epoch, metric=metric, value=value)


class RunCheckpoints:
    def __init__(self, run_id: str, spec: RunSpec, cache: ArtifactCache) -> None:
        self.run_id = run_id
        self.spec = spec
        self.cache = cache
        self.artifacts = cache.artifacts
        self.manifest: CheckpointManifest | None = None

    async def load(self) -> CheckpointManifest:
        if self.manifest is None:
            self.manifest = await self.artifacts.manifest(self.run_id)
        return self.manifest

    async def resume_point(self) -> Path | None:
        """A local copy of the run's newest stored checkpoint, or None for a fresh start."""
        manifest = await self.load()
        if manifest.latest is None:
            return None
        name = checkpoint_name(self.run_id, manifest.latest)
        try:
            return await self.cache.fetch(name)
        except Exception as error:
            raise CheckpointStoreError(f"cannot fetch checkpoint {name} to resume from: {error}") from error

    async def store_epoch(self, epoch: int, metrics: dict[str, float], work_dir: Path) -> None:
        """Store the checkpoint of a reported epoch; keep what the policy keeps."""
        path = work_dir / f"epoch_{epoch}.pth"
        if not path.is_file():
            log.warning("run %s: epoch %d has no checkpoint at %s; not stored", self.run_id, epoch, path)
            return
        manifest = await self.load()
        await self.artifacts.upload_file(checkpoint_name(self.run_id, epoch), path,
                                         description=describe_checkpoint(epoch, metrics))
        best = improves(self.spec, epoch, metrics, manifest.best)
        if best is not None:
            manifest = manifest.model_copy(update={"best": best})
        manifest, dropped = manifest.keeping(epoch, keep=max(MIN_KEPT, self.spec.checkpoint.keep))
        await self.artifacts.write_manifest(self.run_id, manifest)
        self.manifest = manifest
        for old in dropped:
            await self.artifacts.delete(checkpoint_name(self.run_id, old))

    def final_epoch(self) -> int | None:
        """The epoch whose weights become the trained model: the best one when the policy keeps one."""
        manifest = self.manifest
        if manifest is None:
            return None
        if self.spec.checkpoint.strategy != "latest" and manifest.best is not None:
            return manifest.best.epoch
        return manifest.latest

    async def store_model_weights(self, model_id: str, work_dir: Path) -> tuple[str, int] | None:
        """Store the final epoch's weights (no optimizer state) as the model's; its name and epoch."""
        epoch = self.final_epoch()
        if epoch is None:
            return None
        local = work_dir / f"epoch_{epoch}.pth"
        if not local.is_file():  # an earlier attempt (maybe on another machine) trained that epoch
            local = await self.cache.fetch(checkpoint_name(self.run_id, epoch))
        weights = work_dir / "model_weights.pth"
        await asyncio.to_thread(write_weights, local, weights, {"run_id": self.run_id, "epoch": epoch})
        name = model_weights_name(model_id)
        await self.artifacts.upload_file(name, weights, description=describe_checkpoint(epoch, {}))
        weights.unlink(missing_ok=True)
        return name, epoch


def write_weights(checkpoint: Path, out: Path, meta: dict[str, object]) -> None:
    """The model's state_dict alone: what a fine-tune loads and what a user downloads."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    torch.save({"state_dict": state.get("state_dict", state), "meta": {**state.get("meta", {}), **meta}}, out)
