"""Architectures a run may train: the API validates against it, the trainer builds from it."""

from pydantic import BaseModel, ConfigDict


class Architecture(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    family: str
    # Path of the stock config inside mmdet's packaged configs (mmdet/.mim/configs).
    base_config: str
    backbone: str
    single_stage: bool
    description: str


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
        ),
        Architecture(
            id="retinanet-r18",
            family="retinanet",
            base_config="retinanet/retinanet_r18_fpn_1x_coco.py",
            backbone="ResNet-18",
            single_stage=True,
            description="RetinaNet with a ResNet-18 FPN backbone",
        ),
    )
}
