import pytest
from pydantic import ValidationError

from shared.specs import RunSpec

DATASET = "0" * 32


def test_unknown_architecture_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValidationError, match=r"unknown architecture 'yolo9000'; known: .*rtmdet-tiny"):
        RunSpec(name="r", dataset_id=DATASET, architecture="yolo9000")


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("batch_size", 0), ("input_size", 100), ("name", ""), ("dataset_id", "../etc")],
)
def test_out_of_range_fields_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny", field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_unknown_fields_are_rejected_not_ignored() -> None:
    with pytest.raises(ValidationError, match="epoch"):
        RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny", "epoch": 3})


@pytest.mark.parametrize(
    ("field", "value"),
    [("optimizer", "adam"), ("num_frozen_stages", 5), ("evaluation_interval", 0), ("workers", -1)],
)
def test_training_parameters_out_of_range_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "retinanet-r18", field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_training_parameters_have_defaults_that_keep_the_stock_recipe() -> None:
    spec = RunSpec(name="r", dataset_id=DATASET, architecture="retinanet-r18")
    assert (spec.optimizer, spec.num_frozen_stages, spec.evaluation_interval, spec.workers) == (None, 0, 1, 0)


def test_checkpoint_policy_limits_and_patience() -> None:
    spec = RunSpec.model_validate({
        "name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny",
        "checkpoint": {"strategy": "lowest_val_loss", "keep": 3}, "limit": {"metric": "bbox_mAP_50", "value": 0.9},
        "patience": 4,
    })
    assert spec.watched_metric == "val_loss" and spec.needs_val_loss
    assert spec.checkpoint.interval == 1, "a checkpoint every epoch unless asked otherwise"
    assert not RunSpec(name="r", dataset_id=DATASET, architecture="rtmdet-tiny").needs_val_loss
    with pytest.raises(ValidationError, match="bbox_mAP"):
        RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny",
                                "limit": {"metric": "accuracy", "value": 1}})


def test_matrix_is_on_and_previews_off_unless_asked_for() -> None:
    spec = RunSpec(name="r", dataset_id=DATASET, architecture="rtmdet-tiny")
    assert (spec.matrix, spec.preview, spec.preview_images) == (True, False, 4)
    asked = RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny",
                                    "matrix": False, "preview": True, "preview_images": 16})
    assert (asked.matrix, asked.preview, asked.preview_images) == (False, True, 16)
    for count in (0, 17):
        with pytest.raises(ValidationError) as info:
            RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny",
                                    "preview": True, "preview_images": count})
        assert info.value.errors()[0]["loc"] == ("preview_images",)


@pytest.mark.parametrize(("field", "value"), [("epochs", True), ("epochs", "3"), ("batch_size", 2.0),
                                               ("matrix", 1), ("preview", "yes")])
def test_ints_and_bools_are_not_coerced(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny", field: value})
    assert info.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_learning_rate_or_limit_must_be_finite(value: float) -> None:
    base = {"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny"}
    with pytest.raises(ValidationError, match="finite number"):
        RunSpec.model_validate({**base, "learning_rate": value})
    with pytest.raises(ValidationError, match="finite number"):
        RunSpec.model_validate({**base, "limit": {"metric": "bbox_mAP", "value": value}})


def test_an_integer_learning_rate_is_still_a_float() -> None:
    spec = RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny",
                                   "learning_rate": 1, "accelerator": {"count": 1}})
    assert spec.learning_rate == 1.0


def test_checkpoint_interval_is_1_to_1000_epochs_and_may_exceed_the_runs_epochs() -> None:
    def spec(**checkpoint: object) -> RunSpec:
        return RunSpec.model_validate({"name": "r", "dataset_id": DATASET, "architecture": "rtmdet-tiny",
                                       "epochs": 4, "checkpoint": checkpoint})

    assert spec(interval=2).checkpoint.interval == 2
    # More than the run's epochs: only the last epoch (and new bests) are saved, as documented.
    assert spec(interval=1000).checkpoint.interval == 1000
    for bad in (0, 1001, "2", 2.5, True):
        with pytest.raises(ValidationError, match=r"checkpoint\.interval"):
            spec(interval=bad)
    description = RunSpec.model_json_schema()["$defs"]["CheckpointPolicy"]["properties"]["interval"]["description"]
    assert "N-1 epochs are trained again" in description
