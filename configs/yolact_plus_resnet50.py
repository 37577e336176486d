"""YOLACT++ ResNet-50 FPN at 550 px (DCNv2 in every block of C3-C5, 13 DCNs). Original: 34.1 mask
mAP test-dev, 33.5 fps.

Nine anchors per location (three scales x three aspect ratios), the fast mask re-scoring network
(mask score = class score x predicted mask IoU) and its loss term. Trains from the torchvision
ImageNet file resnet50-19c8e357.pth; every DCN starts as 0.5 x the ImageNet 3x3 conv (zero
offsets, modulation sigmoid(0)).

Train:     yolact-jax train --config configs/yolact_plus_resnet50.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_plus_resnet50.py --weights yolact_plus_resnet50_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_plus_resnet50 yolact_plus_resnet50_54_800000.pth weights/yolact_plus_resnet50
Load:      yolact_jax.config.load_config('configs/yolact_plus_resnet50.py') (calls get_config())
"""

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_plus_base, yolact_resnet50


def get_config() -> YolactConfig:
  """yolact_resnet50 as YOLACT++ (yolact_plus_base.plus): DCNv2 in every block of C3-C5."""
  return yolact_plus_base.plus(yolact_resnet50.get_config(), 'yolact_plus_resnet50',
                               (0, 4, 6, 3), 1)
