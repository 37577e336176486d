"""YOLACT ResNet-101 FPN at 550 px on COCO 2017 (the paper's main model).

The original reports 29.8 mask mAP on test-dev at 33.5 fps (Titan Xp). Trains from the ImageNet
file resnet101_reducedfc.pth.

Train:     yolact-jax train --config configs/yolact_base.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_base.py --weights yolact_base_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_base yolact_base_54_800000.pth weights/yolact_base
Load:      yolact_jax.config.load_config('configs/yolact_base.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_base preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_base')


get = get_config  # the older name, still accepted by load_config
