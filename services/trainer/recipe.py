"""Fitting MMDetection's stock recipe to a job: pipeline sizes, schedule, pretrained weights, norms.

The stock configs are tuned for COCO on 8 GPUs (640-1333 px inputs, 12-300
epochs). These keep each recipe's shape and scale what depends on the job's
input size and epoch count (services/trainer/mmdet_config.py composes them).
"""

from __future__ import annotations

from typing import Any

from mmengine.config import Config

# Keys of data transforms (Resize, RandomResize, RandomCrop, Pad, (Cached)Mosaic,
# (Cached)MixUp, TestTimeAug...) that hold a (w, h) size in pixels.
_SIZE_KEYS = frozenset({"img_scale", "scale", "crop_size", "size"})

# Warm-up is at most this fraction of the run: stock warm-ups (500-1000
# iterations) are longer than a whole short run on a small dataset.
_MAX_WARMUP_FRACTION = 0.1

# Runs shorter than this skip RTMDet's Mosaic/MixUp stage (see fit_pipeline_switch).
# The measurements were at 30 epochs; 100 is a judgement, not a measurement.
_MOSAIC_MIN_EPOCHS = 100


def replace_norm(node: Any, old: str, new: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "norm_cfg" and isinstance(value, dict) and value.get("type") == old:
                node[key] = {**value, "type": new}
            else:
                replace_norm(value, old, new)
    elif isinstance(node, list | tuple):
        for value in node:
            replace_norm(value, old, new)


def drop_pretrained(node: Any) -> None:
    """Remove every init_cfg that loads weights (they would download)."""
    if isinstance(node, dict):
        init = node.get("init_cfg")
        inits = init if isinstance(init, list) else [init]
        if any(isinstance(i, dict) and i.get("type") == "Pretrained" for i in inits):
            node.pop("init_cfg")
        for value in node.values():
            drop_pretrained(value)
    elif isinstance(node, list | tuple):
        for value in node:
            drop_pretrained(value)


def rescale_pipelines(cfg: Config, factor: float) -> None:
    """Scale every transform size in the train/val/test pipelines, the stage-2
    pipeline RTMDet switches to, and the TTA pipeline, by `factor`, as squares."""
    seen: set[int] = set()  # a pipeline may be shared: scale each dict once

    def walk(node: Any) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _SIZE_KEYS and _is_size(value):
                    side = round(max(value) * factor)
                    node[key] = (side, side)
                else:
                    walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    for key in list(cfg):
        if key.endswith("pipeline") or key.endswith("dataloader"):
            walk(cfg[key])
    for hook in cfg.get("custom_hooks", []):
        walk(hook.get("switch_pipeline", []))


def _is_size(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value)


def fit_schedule(cfg: Config, stock_epochs: int, epochs: int, total_iters: int) -> None:
    """Squeeze the stock param_scheduler from stock_epochs into `epochs`.

    Epoch positions (begin, end, T_max, milestones) scale proportionally and
    are rounded to whole epochs (MultiStepLR only fires on whole iterations);
    iteration-based warm-ups are cut to a tenth of the run, or dropped when
    that is under 2 iterations.
    """

    def at(epoch: float) -> int:
        return round(epoch * epochs / stock_epochs)

    schedulers = []
    for sched in cfg.param_scheduler:
        sched = dict(sched)
        if not sched.get("by_epoch", True):  # iteration-based: a warm-up
            sched["end"] = min(sched["end"], int(total_iters * _MAX_WARMUP_FRACTION))
            if sched["end"] < 2:  # LinearLR needs 2 steps to ramp; shorter runs start at full rate
                continue
        else:
            begin = min(at(sched.get("begin", 0)), epochs - 1)
            end = max(min(at(sched.get("end", stock_epochs)), epochs), begin + 1)
            sched.update(begin=begin, end=end, convert_to_iter_based=True)
            if "T_max" in sched:
                sched["T_max"] = end - begin
            if "milestones" in sched:
                sched["milestones"] = sorted({at(m) for m in sched["milestones"]})
            if sched.get("eta_min") is not None:
                # As a ratio, the floor follows a learning rate set by the job.
                sched["eta_min_ratio"] = sched.pop("eta_min") / cfg.optim_wrapper.optimizer.lr
        schedulers.append(sched)
    cfg.param_scheduler = schedulers


def fit_batch_resize(model: Any, factor: float) -> None:
    """YOLOX resizes whole batches to a random multiple of 32 in a range around
    its native input: scale that range with the input (at least one step of 32)."""
    for augment in model.get("data_preprocessor", {}).get("batch_augments") or []:
        if augment.get("type") == "BatchSyncRandomResize":
            divisor = augment.get("size_divisor", 32)
            low, high = (max(divisor, round(v * factor / divisor) * divisor) for v in augment["random_size_range"])
            augment["random_size_range"] = (low, max(low, high))


def fit_pipeline_switch(cfg: Config, stock_epochs: int, epochs: int) -> None:
    """RTMDet trains with Mosaic/MixUp, then PipelineSwitchHook turns them off
    for the last 20 of 300 epochs. Long runs keep that, squeezed
    proportionally (at least one stage-2 epoch). Short runs train on the
    stage-2 pipeline throughout: measured on 32 images, 30 epochs, mAP50 0.95
    without the mosaic stage, 0.24 with it for 15 epochs, 0.36 for 28.
    """
    for hook in [h for h in cfg.get("custom_hooks", []) if h.get("type") == "PipelineSwitchHook"]:
        if epochs < _MOSAIC_MIN_EPOCHS:
            cfg.train_dataloader.dataset.pipeline = hook["switch_pipeline"]
            cfg.custom_hooks.remove(hook)
        else:
            stage2 = max(1, round((stock_epochs - hook["switch_epoch"]) * epochs / stock_epochs))
            hook["switch_epoch"] = epochs - stage2
    # YOLOX's equivalent (last 15 of 300 epochs without Mosaic, with an L1 loss):
    # short runs switch from the first epoch, for the same reason.
    for hook in [h for h in cfg.get("custom_hooks", []) if h.get("type") == "YOLOXModeSwitchHook"]:
        if epochs < _MOSAIC_MIN_EPOCHS:
            hook["num_last_epochs"] = epochs
        else:
            hook["num_last_epochs"] = max(1, round(hook["num_last_epochs"] * epochs / stock_epochs))
