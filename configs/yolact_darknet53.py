"""YOLACT DarkNet-53 at 550 px (x/255 input normalisation). Original: 28.7 mask mAP, 40.0 fps.

Train:     yolact-jax train --config configs/yolact_darknet53.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_darknet53.py --weights yolact_darknet53_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_darknet53 yolact_darknet53_54_800000.pth weights/yolact_darknet53
Load:      yolact_jax.config.load_config('configs/yolact_darknet53.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_darknet53 preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_darknet53')


get = get_config  # the older name, still accepted by load_config
