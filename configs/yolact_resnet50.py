"""YOLACT ResNet-50 FPN at 550 px. Original: 28.2 mask mAP test-dev, 42.5 fps.

Trains from the torchvision ImageNet file resnet50-19c8e357.pth.

Train:     yolact-jax train --config configs/yolact_resnet50.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_resnet50.py --weights yolact_resnet50_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_resnet50 yolact_resnet50_54_800000.pth weights/yolact_resnet50
Load:      yolact_jax.config.load_config('configs/yolact_resnet50.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_resnet50 preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_resnet50')


get = get_config  # the older name, still accepted by load_config
