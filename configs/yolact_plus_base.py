"""YOLACT++ ResNet-101 FPN at 550 px (DCNv2 in every third block of C3-C5, 11 DCNs). Original:
34.6 mask mAP test-dev, 27.3 fps.

Nine anchors per location (three scales x three aspect ratios), the fast mask re-scoring network
(mask score = class score x predicted mask IoU) and its loss term. Trains from
resnet101_reducedfc.pth (the ResNet-101 file of yolact_base); every DCN starts as 0.5 x the
ImageNet 3x3 conv (zero offsets, modulation sigmoid(0)).

Train:     yolact-jax train --config configs/yolact_plus_base.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_plus_base.py --weights yolact_plus_base_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_plus_base yolact_plus_base_54_800000.pth weights/yolact_plus_base
Load:      yolact_jax.config.load_config('configs/yolact_plus_base.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_plus_base preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_plus_base')


get = get_config  # the older name, still accepted by load_config
