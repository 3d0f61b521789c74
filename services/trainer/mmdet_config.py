"""Build the MMEngine config of a training job from MMDetection's stock config.

The stock configs are tuned for COCO on 8 GPUs (640-1333 px inputs, 12-300
epochs, batches of 16-256). A job here is usually a small dataset, a small
input, a few epochs, one process. We keep the stock recipe (model, losses,
augmentations, optimiser, schedule shape) and rescale what depends on the
job: classes, paths, input size, batch, epoch count, learning rate, seed.
A job with world_size > 1 trains with distributed data parallel, batch_size
images per process (see _distribute).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine.config import Config

from services.trainer.annotations import check_annotations
from services.trainer.evaluation import METRIC_PREFIX  # importing registers the Trainyard metrics used below
from services.trainer.hooks import TrainingDiverged  # noqa: F401  (importing registers the Trainyard hooks)
from services.trainer.recipe import (
    drop_pretrained,
    fit_batch_resize,
    fit_pipeline_switch,
    fit_schedule,
    replace_norm,
    rescale_pipelines,
)
from services.trainer.reports import TrainingJob
from services.trainer.transfer import BASE_WEIGHTS_FILE
from shared.catalogue import ARCHITECTURES
from shared.specs import LOWER_IS_BETTER


@dataclass(frozen=True)
class _Family:
    # Long side of the stock input: every pipeline size becomes a square of
    # input_size * (its long side / native_size), so RTMDet's 2x mosaic canvas
    # stays 2x and RetinaNet's (1333, 800) becomes (input_size, input_size).
    native_size: int
    # SGD recipes scale the learning rate linearly with the batch (the stock lr
    # is for this total batch); None keeps the stock lr (AdamW is insensitive).
    lr_reference_batch: int | None
    # The stock backbone freezes its stem and BatchNorm statistics because it
    # expects ImageNet weights; from random init they must train.
    unfreeze_backbone: bool


_FAMILIES: dict[str, _Family] = {
    "rtmdet": _Family(native_size=640, lr_reference_batch=None, unfreeze_backbone=False),
    "retinanet": _Family(native_size=1333, lr_reference_batch=16, unfreeze_backbone=True),
    "faster_rcnn": _Family(native_size=1333, lr_reference_batch=16, unfreeze_backbone=True),
    "fcos": _Family(native_size=1333, lr_reference_batch=16, unfreeze_backbone=True),
    # YOLOX trains at 640 (its test pipeline at 416 scales with it).
    "yolox": _Family(native_size=640, lr_reference_batch=64, unfreeze_backbone=False),
}

# Output channels of each ResNet stage, by depth: the FPN's in_channels follow
# a backbone_depth that replaces the stock one.
_RESNET_CHANNELS = {18: [64, 128, 256, 512], 34: [64, 128, 256, 512], 50: [256, 512, 1024, 2048]}


# An optimizer other than the architecture's stock one: MMDetection's common
# recipes (SGD as in schedule_1x, AdamW as in RTMDet), each with the batch its
# learning rate is for (None: AdamW's rate is not scaled with the batch).
_OTHER_OPTIMIZER: dict[str, dict[str, Any]] = {
    "sgd": {"type": "SGD", "lr": 0.02, "momentum": 0.9, "weight_decay": 0.0001},
    "adamw": {"type": "AdamW", "lr": 0.004, "weight_decay": 0.05},
}
_OTHER_OPTIMIZER_BATCH: dict[str, int | None] = {"sgd": 16, "adamw": None}


class FormattedOnceConfig(Config):  # type: ignore[misc]
    """A Config that formats its text once per content. MMEngine formats the whole config with
    yapf (~0.2 s for RTMDet's) each time it needs the text: when the Runner logs and dumps it, and
    in every checkpoint's meta, so once per epoch; the child's config no longer changes once
    built, and the same content always formats to the same text."""

    @classmethod
    def of(cls, cfg: Config) -> FormattedOnceConfig:
        formatted: FormattedOnceConfig = cls.__new__(cls)
        formatted.__dict__.update(cfg.__dict__)  # Config's own state (its dict, filename, text)
        return formatted

    @property
    def pretty_text(self) -> str:
        # Keyed by the content, so an edit after the first formatting is formatted anew.
        key = (repr(self._cfg_dict.to_dict()), self._format_python_code)
        cache: dict[tuple[str, bool], str] = self.__dict__.setdefault("_formatted_text", {})
        if key not in cache:
            cache.clear()
            cache[key] = super().pretty_text
        return cache[key]

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as a plain Config: whoever loads it needs MMEngine, not trainyard.
        return (_plain_config, self.__getstate__())


def _plain_config(*state: Any) -> Config:
    cfg = Config()
    cfg.__setstate__(state)
    return cfg


def mmdet_config_dir() -> Path:
    import mmdet

    return Path(mmdet.__file__).parent / ".mim" / "configs"


def build_config(job: TrainingJob) -> Config:
    """The full MMEngine config for one training child."""
    spec, dataset = job.spec, job.dataset
    arch = ARCHITECTURES[spec.architecture]
    family = _FAMILIES[arch.family]
    cfg = Config.fromfile(str(mmdet_config_dir() / arch.base_config))
    classes = tuple(dataset.classes)
    train_images, train_ann = check_annotations(dataset.train.annotations, classes, "train", job.work_dir)
    _, val_ann = check_annotations(dataset.val.annotations, classes, "val", job.work_dir)

    # Model: our classes, no downloads.
    # Two-stage detectors classify in the RoI head; single-stage ones in bbox_head.
    head = cfg.model.roi_head.bbox_head if "roi_head" in cfg.model else cfg.model.bbox_head
    head.num_classes = len(classes)
    drop_pretrained(cfg.model)
    cfg.pop("checkpoint", None)  # RTMDet's top-level pretrained URL, unused without init_cfg
    if arch.backbone_depth is not None:
        cfg.model.backbone.depth = arch.backbone_depth
        cfg.model.neck.in_channels = _RESNET_CHANNELS[arch.backbone_depth]
    if family.unfreeze_backbone:
        cfg.model.backbone.frozen_stages = -1
        cfg.model.backbone.norm_eval = False
        # FCOS's caffe recipe also fixes the BatchNorm affine parameters. Its
        # style='caffe' (ResNet-50's bottlenecks stride in the 1x1 conv; BGR,
        # unscaled input) stays: only the caffe weights need it, but it is the
        # recipe and runs without them (finite losses from random init; not
        # compared with 'pytorch' style). ResNet-18's basic blocks ignore style.
        cfg.model.backbone.norm_cfg = {**cfg.model.backbone.get("norm_cfg", {"type": "BN"}), "requires_grad": True}
    if spec.num_frozen_stages > 0:
        # ResNet, CSPNeXt and CSPDarknet all read frozen_stages=N as "the stem
        # and the first N stages"; -1 (set above or stock) freezes nothing.
        cfg.model.backbone.frozen_stages = spec.num_frozen_stages
    fit_batch_resize(cfg.model, spec.input_size / family.native_size)

    # Data: absolute paths, our classes (CocoDataset maps categories by name),
    # one process (no workers: tiny sets, and the trainer budgets threads).
    splits = {"train_dataloader": (dataset.train, train_ann), "val_dataloader": (dataset.val, val_ann)}
    for key, (split, ann_file) in splits.items():
        loader = cfg[key]
        loader.batch_size = spec.batch_size
        loader.num_workers = spec.workers
        loader.persistent_workers = spec.workers > 0  # must be False without workers
        loader.pin_memory = job.device == "cuda"
        # YOLOX wraps its train set in a MultiImageMixDataset (for Mosaic).
        leaf = loader.dataset.dataset if "dataset" in loader.dataset else loader.dataset
        leaf.data_root = dataset.root
        leaf.ann_file = ann_file
        leaf.data_prefix = {"img": split.images}
        leaf.metainfo = {"classes": classes}
    # The reported metrics, matrix and previews: Trainyard's metrics (services/trainer/evaluation.py),
    # in place of the stock CocoMetric: TrainyardCocoMetric runs the evaluation's one COCOeval (COCO's
    # 100 detections per image, for every architecture) and logs its table to train.log. The stock
    # metric beside it evaluated the same predictions a second time, for the log alone.
    cfg.val_evaluator = [
        {"type": "TrainyardCocoMetric", "ann_file": val_ann, "work_dir": job.work_dir},
        *([{"type": "TrainyardConfusionMetric"}] if spec.matrix else []),
        *([{"type": "TrainyardPreviewMetric", "images": spec.preview_images, "data_root": dataset.root,
            "work_dir": job.work_dir}] if spec.preview and spec.preview_images > 0 else []),
    ]
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    rescale_pipelines(cfg, spec.input_size / family.native_size)

    # Schedule: every epoch validated, stock schedule shape squeezed into the run.
    stock_epochs = cfg.train_cfg.max_epochs
    # MMEngine's loop validates every val_interval epochs and always the last one;
    # TrainyardReportHook reports the epochs in between with their losses only.
    cfg.train_cfg = {"type": "EpochBasedTrainLoop", "max_epochs": spec.epochs,
                     "val_interval": spec.evaluation_interval}
    # Each of world_size processes takes batch_size images per iteration.
    total_batch = spec.batch_size * job.world_size
    iters_per_epoch = math.ceil(train_images / total_batch)
    fit_schedule(cfg, stock_epochs, spec.epochs, spec.epochs * iters_per_epoch)
    fit_pipeline_switch(cfg, stock_epochs, spec.epochs)
    stock_lr = cfg.optim_wrapper.optimizer.lr  # after fit_schedule, which reads it too
    if spec.optimizer is not None and spec.optimizer != arch.optimizer:
        cfg.optim_wrapper.optimizer = dict(_OTHER_OPTIMIZER[spec.optimizer])  # a copy: the config is edited
        reference_batch = _OTHER_OPTIMIZER_BATCH[spec.optimizer]
        stock_lr = cfg.optim_wrapper.optimizer.lr
    else:
        reference_batch = family.lr_reference_batch
    if spec.learning_rate is not None:
        cfg.optim_wrapper.optimizer.lr = spec.learning_rate
    elif reference_batch is not None:
        cfg.optim_wrapper.optimizer.lr = stock_lr * total_batch / reference_batch

    # Runtime: where, what to keep, how to report.
    cfg.work_dir = job.work_dir
    cfg.randomness = {"seed": spec.seed, "deterministic": False}
    cfg.default_hooks.checkpoint = {
        # MMEngine's, plus the full checkpoint of each new best epoch and of an early stop (services/trainer/hooks.py).
        "type": "TrainyardCheckpointHook",
        "interval": spec.checkpoint.interval,
        # At least two: a resume may need the epoch before the last (see session.latest_checkpoint).
        "max_keep_ckpts": max(2, spec.checkpoint.keep),
        # The last epoch is saved off the interval too: it is the run's result.
        "save_last": True,
    }
    watched = spec.watched_metric
    if spec.checkpoint.strategy != "latest":
        # The Trainyard metrics (and TrainyardValLossHook, before CheckpointHook's lower
        # priority) name their results trainyard/<name> in the evaluation's results.
        cfg.default_hooks.checkpoint.update(
            save_best=f"{METRIC_PREFIX}{watched}", rule=_rule(watched)
        )
    cfg.default_hooks.logger = {"type": "LoggerHook", "interval": 5}
    cfg.log_processor = {"type": "LogProcessor", "window_size": 5, "by_epoch": True}
    cfg.vis_backends = [{"type": "LocalVisBackend"}]
    cfg.visualizer = {"type": "DetLocalVisualizer", "vis_backends": cfg.vis_backends, "name": "visualizer"}
    cfg.custom_hooks = [
        *cfg.get("custom_hooks", []),
        {"type": "TrainyardDivergenceHook"},
        {"type": "TrainyardIterationLogHook", "log_interval": spec.log_interval},
        *([{"type": "TrainyardValLossHook"}] if spec.needs_val_loss else []),
        {"type": "TrainyardReportHook"},
    ]
    early_stopping = {"type": "TrainyardEarlyStoppingHook", "min_delta": 0.0, "check_finite": False}
    if spec.limit is not None:
        cfg.custom_hooks.append({**early_stopping, "monitor": METRIC_PREFIX + spec.limit.metric,
                                 "rule": _rule(spec.limit.metric), "stopping_threshold": spec.limit.value,
                                 "patience": _NEVER})
    if spec.patience is not None:
        cfg.custom_hooks.append({**early_stopping, "monitor": METRIC_PREFIX + watched, "rule": _rule(watched),
                                 "patience": spec.patience})
    if job.decision_epochs:
        cfg.custom_hooks.append({"type": "TrainyardRungHook", "epochs": job.decision_epochs,
                                 "work_dir": job.work_dir})
    # Last of all: stops after the epoch in progress when the trainer drains (services/trainer/drain.py).
    cfg.custom_hooks.append({"type": "TrainyardDrainHook"})
    _distribute(cfg, job)
    # Resuming restores epoch, optimizer, schedule and EMA, so epochs continue
    # where the earlier attempt's last checkpoint left them.
    cfg.load_from = job.resume_from
    cfg.resume = job.resume_from is not None
    if job.base_model is not None and job.resume_from is None:
        # Transfer learning: the child writes the base model's fitting weights
        # here once the model is built (services/trainer/transfer.py), before training.
        cfg.load_from = str(Path(job.work_dir) / BASE_WEIGHTS_FILE)
    # The stock files' own variables (max_epochs = 300, data_root='data/coco/', ...) were
    # read into the fields above when they loaded; left in, they would misstate what trains.
    for leftover in _STOCK_VARIABLES & set(cfg.keys()):
        cfg.pop(leftover)
    return cfg


# A limit's early stopping never stops for patience.
_NEVER = 2**31


def _rule(metric: str) -> str:
    """How MMEngine's CheckpointHook and EarlyStoppingHook compare values of a reported metric."""
    return "less" if metric in LOWER_IS_BETTER else "greater"


_STOCK_VARIABLES = {"max_epochs", "stage2_num_epochs", "num_last_epochs", "data_root", "base_lr", "interval",
                    "train_batch_size_per_gpu", "train_num_workers", "val_batch_size_per_gpu", "val_num_workers",
                    "img_scale", "img_scales", "close_mosaic_epochs", "train_dataset"}


def dist_backend(device: str) -> str:
    return "nccl" if device == "cuda" else "gloo"


def _distribute(cfg: Config, job: TrainingJob) -> None:
    """Distributed data parallel over job.world_size processes (MMEngine's
    launcher='pytorch': the env:// rendezvous the trainer's launcher sets up).

    On CUDA: NCCL, MMEngine's default DDP wrapper, and SyncBN where the stock
    config has it (single-process runs revert it to BN). On CPU: gloo; DDP
    without device_ids (MMEngine's default wrapper passes LOCAL_RANK, which
    DDP refuses for a CPU module); SyncBN becomes BN (torch's SyncBatchNorm
    runs on GPUs only), so each rank normalises with the statistics of its own
    share of the batch.
    """
    if job.world_size == 1:
        return
    cfg.launcher = "pytorch"
    env_cfg = dict(cfg.get("env_cfg", {}))
    env_cfg["dist_cfg"] = {**env_cfg.get("dist_cfg", {}), "backend": dist_backend(job.device)}
    cfg.env_cfg = env_cfg
    if job.device == "cpu":
        replace_norm(cfg.model, "SyncBN", "BN")
        cfg.pop("sync_bn", None)
        if cfg.model.get("type") == "RTMDet":
            cfg.model.use_syncbn = False  # else the detector converts every BN itself when world size > 1
        cfg.model_wrapper_cfg = {
            "type": "MMDistributedDataParallel",
            "device_ids": None,  # set explicitly: MMEngine would add [LOCAL_RANK]
            "broadcast_buffers": False,
            "find_unused_parameters": cfg.get("find_unused_parameters", False),
        }


