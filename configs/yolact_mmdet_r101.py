"""mmdetection's YOLACT ResNet-101 at 550 px on COCO 2017 (its yolact_r101_1xb8-55e_coco
config): yolact_mmdet_r50 with ResNet-101. mmdetection reports 30.4 mask AP on COCO val.

Train:     yolact-jax train --config configs/yolact_mmdet_r101.py --data coco --imagenet weights/
Evaluate:  yolact-jax evaluate --config yolact_mmdet_r101 --weights yolact_r101_1x8_coco.pth --data coco
Convert:   yolact-jax convert --config yolact_mmdet_r101 yolact_r101_1x8_coco.pth weights/yolact_mmdet_r101
Load:      yolact_jax.config.load_config('configs/yolact_mmdet_r101.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_mmdet_r50


def get_config() -> YolactConfig:
  """yolact_mmdet_r50 with ResNet-101 (3, 4, 23, 3) and torchvision's ImageNet file."""
  base = yolact_mmdet_r50.get_config()
  return replace(base, name='yolact_mmdet_r101', model=replace(base.model, backbone=replace(
      base.model.backbone, layers=(3, 4, 23, 3), pretrained_weights='resnet101-63fe2227.pth')))
