"""YOLACT ResNet-101 at 700 px, masks_to_train 300. Original: 31.2 mask mAP, 23.6 fps.

Train:     yolact-jax train --config configs/yolact_im700.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_im700.py --weights yolact_im700_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_im700 yolact_im700_54_800000.pth weights/yolact_im700
Load:      yolact_jax.config.load_config('configs/yolact_im700.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_im700 preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_im700')


get = get_config  # the older name, still accepted by load_config
