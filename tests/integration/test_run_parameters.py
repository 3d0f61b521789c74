"""Run-spec training parameters reach the generated MMEngine config, and the config is kept."""

import math
from pathlib import Path

import pytest

from services.trainer.reports import EpochReport
from shared.catalogue import ARCHITECTURES
from tests.integration.test_architectures import tiny_job
from tests.integration.test_child_training import run_child

pytest.importorskip("mmdet")


def test_parameters_shape_the_config(tmp_path: Path) -> None:
    from services.trainer.mmdet_config import build_config

    stock = build_config(tiny_job(tmp_path / "a", "retinanet-r18"))
    assert stock.optim_wrapper.optimizer.type == "SGD"
    assert stock.model.backbone.frozen_stages == -1 and stock.train_cfg.val_interval == 1
    assert stock.train_dataloader.num_workers == 0 and not stock.train_dataloader.persistent_workers
    assert stock.default_hooks.checkpoint == {"type": "TrainyardCheckpointHook", "interval": 1, "max_keep_ckpts": 2,
                                              "save_last": True}

    cfg = build_config(tiny_job(tmp_path / "b", "retinanet-r18", optimizer="adamw", num_frozen_stages=2,
                                evaluation_interval=3, workers=2, learning_rate=0.001))
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.optim_wrapper.optimizer.lr == 0.001
    assert cfg.model.backbone.frozen_stages == 2
    assert cfg.train_cfg.val_interval == 3
    assert cfg.train_dataloader.num_workers == 2 and cfg.train_dataloader.persistent_workers

    # Every 3rd epoch and the last; the best one too (save_best, TrainyardCheckpointHook).
    best = build_config(tiny_job(tmp_path / "e", "retinanet-r18", epochs=10,
                                 checkpoint={"strategy": "best", "metric": "bbox_mAP_50", "interval": 3, "keep": 4}))
    assert best.default_hooks.checkpoint == {
        "type": "TrainyardCheckpointHook", "interval": 3, "max_keep_ckpts": 4, "save_last": True,
        "save_best": "trainyard/bbox_mAP_50", "rule": "greater",
    }

    # RTMDet's stock optimizer is AdamW; asking for it explicitly changes nothing.
    rtm = build_config(tiny_job(tmp_path / "c", "rtmdet-tiny", optimizer="adamw"))
    assert rtm.optim_wrapper.optimizer.type == "AdamW" and rtm.optim_wrapper.optimizer.lr == 0.004
    sgd = build_config(tiny_job(tmp_path / "d", "rtmdet-tiny", optimizer="sgd"))
    assert sgd.optim_wrapper.optimizer.type == "SGD"
    assert sgd.optim_wrapper.optimizer.lr == pytest.approx(0.02 * 2 / 16)  # scaled to batch 2


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_every_architecture_starts_from_random_init_with_its_whole_backbone_trainable(
    tmp_path: Path, architecture: str
) -> None:
    from services.trainer.mmdet_config import build_config

    cfg = build_config(tiny_job(tmp_path / "a", architecture))
    assert "Pretrained" not in cfg.pretty_text  # it would download
    # The served config is the one that trains: none of the stock files' own variables stay behind.
    for leftover in ("max_epochs = 300", "stage2_num_epochs", "data_root = 'data/coco/'", "data/coco"):
        assert leftover not in cfg.pretty_text, leftover
    assert cfg.train_cfg.max_epochs == tiny_job(tmp_path / "c", architecture).spec.epochs
    backbone = cfg.model.backbone
    assert backbone.get("frozen_stages", -1) == -1
    if backbone.type == "ResNet":  # the stock recipes freeze stem and BatchNorm for ImageNet weights
        assert backbone.norm_eval is False and backbone.norm_cfg.requires_grad is True
        assert ARCHITECTURES[architecture].backbone.startswith(f"ResNet-{backbone.depth}")  # what the API shows
        # The FPN takes the backbone's stage outputs: 4x wider from ResNet-50's bottlenecks than from ResNet-18.
        assert cfg.model.neck.in_channels[-1] == (2048 if backbone.depth == 50 else 512)
    stages = ARCHITECTURES[architecture].backbone_stages
    frozen = build_config(tiny_job(tmp_path / "b", architecture, num_frozen_stages=stages))
    assert frozen.model.backbone.frozen_stages == stages


@pytest.mark.training
def test_epochs_between_evaluations_report_losses_only_and_the_config_is_written(tmp_path: Path) -> None:
    from mmengine.config import Config

    job = tiny_job(tmp_path, "rtmdet-tiny", epochs=3, evaluation_interval=2)
    rc, reports, log = run_child(job, tmp_path)
    assert rc == 0, log[-3000:]
    epochs = [r for r in reports if isinstance(r, EpochReport)]
    assert [e.epoch for e in epochs] == [1, 2, 3]
    # Epoch 1 was not evaluated; 2 by the interval, 3 as the last.
    assert epochs[0].metrics == {} and epochs[0].confusion_matrix is None
    assert all(math.isfinite(v) for v in [epochs[0].loss, *epochs[0].losses.values()])
    for evaluated in epochs[1:]:
        assert "bbox_mAP" in evaluated.metrics and evaluated.confusion_matrix is not None

    config = Path(job.work_dir) / "config.py"
    reloaded = Config.fromfile(str(config))
    assert reloaded.train_cfg.max_epochs == 3 and reloaded.train_cfg.val_interval == 2
    assert reloaded.randomness.seed == job.spec.seed
    assert reloaded.train_dataloader.dataset.ann_file == job.dataset.train.annotations


@pytest.mark.training
def test_iteration_logs_every_log_interval_steps(tmp_path: Path) -> None:
    from services.trainer.reports import IterationsReport

    # 4 images, batch 2: 2 iterations per epoch, 4 in all; logged at steps 2 and 4.
    job = tiny_job(tmp_path, "rtmdet-tiny", epochs=2, log_interval=2)
    rc, reports, log = run_child(job, tmp_path)
    assert rc == 0, log[-3000:]
    kinds = [r.kind for r in reports]
    assert kinds == ["started", "iterations", "epoch", "iterations", "epoch", "finished"], kinds
    steps = [s for r in reports if isinstance(r, IterationsReport) for s in r.steps]
    assert [(s.step, s.epoch) for s in steps] == [(2, 1), (4, 2)]
    for s in steps:
        assert {"loss_cls", "loss_bbox"} <= s.losses.keys() and s.learning_rate > 0
        assert s.loss == pytest.approx(sum(s.losses.values()), rel=1e-5)


def test_a_comparison_of_two_configs_shows_what_differs_and_not_where_each_trained(tmp_path: Path) -> None:
    import difflib

    from services.api.routes.compare import WORK_DIR, config_lines
    from services.trainer.mmdet_config import build_config

    job = tiny_job(tmp_path, "rtmdet-tiny")
    first = build_config(job.model_copy(update={"work_dir": str(tmp_path / "first")})).pretty_text
    # The same dataset, another learning rate, trained in another directory.
    spec = job.spec.model_copy(update={"learning_rate": 0.001})
    other = build_config(job.model_copy(update={"spec": spec, "work_dir": str(tmp_path / "other")})).pretty_text
    assert first.count(str(tmp_path / "first")) > 1
    changed = [line for line in difflib.unified_diff(config_lines(first), config_lines(other), lineterm="", n=0)
               if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed and all("lr=" in line for line in changed), changed
    assert f"work_dir = '{WORK_DIR}'" in config_lines(first)
    assert not any(str(tmp_path / "first") in line for line in config_lines(first))
