"""YOLACT ResNet-50 FPN at 550 px: yolact_base with ResNet-50. Original: 28.2 mask mAP test-dev,
42.5 fps.

Trains from the torchvision ImageNet file resnet50-19c8e357.pth.

Train:     yolact-jax train --config configs/yolact_resnet50.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_resnet50.py --weights yolact_resnet50_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_resnet50 yolact_resnet50_54_800000.pth weights/yolact_resnet50
Load:      yolact_jax.config.load_config('configs/yolact_resnet50.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_base


def get_config() -> YolactConfig:
  """yolact_base with ResNet-50 (3, 4, 6, 3) and its ImageNet file."""
  base = yolact_base.get_config()
  return replace(base, name='yolact_resnet50', model=replace(base.model, backbone=replace(
      base.model.backbone, layers=(3, 4, 6, 3), pretrained_weights='resnet50-19c8e357.pth')))
