"""Architectures a run may train: the API validates against it, the trainer builds from it."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TunableParameter(BaseModel):
    """One RunSpec field a user may set for an architecture, as GET /v1/architectures shows it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the RunSpec field")
    type: Literal["int", "float", "str"]
    default: int | float | str | None = Field(description="None: derived from the stock config (see description)")
    minimum: float | None = None
    maximum: float | None = None
    choices: list[str] | None = None
    description: str


class Architecture(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    family: str
    # Path of the stock config inside mmdet's packaged configs (mmdet/.mim/configs).
    base_config: str
    backbone: str
    single_stage: bool
    description: str
    # ResNet depth replacing the stock config's (None keeps it): the neck's
    # input channels follow. Lets a stock R50 recipe train with ResNet-18.
    backbone_depth: int | None = None
    optimizer: Literal["sgd", "adamw"] = Field(description="the stock recipe's optimizer, the default")
    # Stages of the backbone num_frozen_stages may freeze (0 = none).
    backbone_stages: int = 4
    parameters: list[TunableParameter] = Field(default_factory=list)


def _parameters(optimizer: str, stages: int, learning_rate_note: str) -> list[TunableParameter]:
    """The tunable RunSpec fields, with this architecture's defaults and ranges."""
    return [
        TunableParameter(name="epochs", type="int", default=12, minimum=1, maximum=1000,
                         description="training epochs; the stock schedule's shape is squeezed into them"),
        TunableParameter(name="batch_size", type="int", default=4, minimum=1, maximum=256,
                         description="images per iteration"),
        TunableParameter(name="input_size", type="int", default=128, minimum=32, maximum=2048,
                         description="square input side in pixels, a multiple of 32"),
        TunableParameter(name="learning_rate", type="float", default=None, minimum=0, maximum=10,
                         description=learning_rate_note),
        TunableParameter(name="optimizer", type="str", default=optimizer, choices=["sgd", "adamw"],
                         description="the optimizer; the default is the stock recipe's"),
        TunableParameter(name="num_frozen_stages", type="int", default=0, minimum=0, maximum=stages,
                         description="backbone stages kept frozen (0: train everything)"),
        TunableParameter(name="evaluation_interval", type="int", default=1, minimum=1, maximum=1000,
                         description="evaluate (COCO metrics, confusion matrix) every N epochs and at the last"),
        TunableParameter(name="workers", type="int", default=0, minimum=0, maximum=32,
                         description="data loader worker processes (0: load in the training process)"),
        TunableParameter(name="seed", type="int", default=0, minimum=0, maximum=2**31 - 1,
                         description="random seed"),
        TunableParameter(name="log_interval", type="int", default=10, minimum=1, maximum=100_000,
                         description="log the training losses every N iterations"),
        TunableParameter(name="patience", type="int", default=None, minimum=1, maximum=1000,
                         description="stop when the checkpoint metric has not improved for N evaluations"),
    ]


_SGD_LR = "default: the stock SGD rate scaled linearly by batch_size / 16"

ARCHITECTURES: dict[str, Architecture] = {
    a.id: a
    for a in (
        Architecture(
            id="rtmdet-tiny",
            family="rtmdet",
            base_config="rtmdet/rtmdet_tiny_8xb32-300e_coco.py",
            backbone="CSPNeXt-tiny",
            single_stage=True,
            description="RTMDet-tiny: fast single-stage detector; learns from random init in a few CPU minutes",
            optimizer="adamw",
            parameters=_parameters("adamw", 4, "default: the stock AdamW rate (0.004)"),
        ),
        Architecture(
            id="retinanet-r18",
            family="retinanet",
            base_config="retinanet/retinanet_r18_fpn_1x_coco.py",
            backbone="ResNet-18",
            single_stage=True,
            description="RetinaNet with a ResNet-18 FPN backbone",
            optimizer="sgd",
            parameters=_parameters("sgd", 4, _SGD_LR),
        ),
        Architecture(
            id="retinanet-r50",
            family="retinanet",
            base_config="retinanet/retinanet_r50_fpn_1x_coco.py",
            backbone="ResNet-50",
            single_stage=True,
            description="RetinaNet with a ResNet-50 FPN backbone",
            optimizer="sgd",
            parameters=_parameters("sgd", 4, _SGD_LR),
        ),
        Architecture(
            id="faster-rcnn-r18",
            family="faster_rcnn",
            base_config="faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
            backbone="ResNet-18",
            backbone_depth=18,
            single_stage=False,
            description="Faster R-CNN (two-stage) with a ResNet-18 FPN backbone; the slowest on a CPU",
            optimizer="sgd",
            parameters=_parameters("sgd", 4, _SGD_LR),
        ),
        Architecture(
            id="faster-rcnn-r50",
            family="faster_rcnn",
            base_config="faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
            backbone="ResNet-50",
            single_stage=False,
            description="Faster R-CNN (two-stage) with a ResNet-50 FPN backbone; the slowest on a CPU",
            optimizer="sgd",
            parameters=_parameters("sgd", 4, _SGD_LR),
        ),
        Architecture(
            id="fcos-r18",
            family="fcos",
            base_config="fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
            backbone="ResNet-18",
            backbone_depth=18,
            single_stage=True,
            description="FCOS (anchor-free) with a ResNet-18 FPN backbone and a GroupNorm head",
            optimizer="sgd",
            parameters=_parameters("sgd", 4, "default: the stock SGD rate (0.01) scaled by batch_size / 16"),
        ),
        Architecture(
            id="fcos-r50",
            family="fcos",
            base_config="fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
            backbone="ResNet-50 (caffe style)",
            single_stage=True,
            description="FCOS (anchor-free) with a ResNet-50 FPN backbone and a GroupNorm head",
            optimizer="sgd",
            parameters=_parameters("sgd", 4, "default: the stock SGD rate (0.01) scaled by batch_size / 16"),
        ),
        Architecture(
            id="yolox-tiny",
            family="yolox",
            base_config="yolox/yolox_tiny_8xb8-300e_coco.py",
            backbone="CSPDarknet-tiny",
            single_stage=True,
            description="YOLOX-tiny: anchor-free single-stage detector",
            optimizer="sgd",
            parameters=_parameters("sgd", 4, "default: the stock SGD rate (0.01) scaled by batch_size / 64"),
        ),
    )
}
