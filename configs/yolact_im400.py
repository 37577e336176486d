"""YOLACT ResNet-101 at 400 px: prior scales int(s / 550 * 400).

Train:     yolact-jax train --config configs/yolact_im400.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_im400.py --weights yolact_im400_53_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_im400 yolact_im400_53_800000.pth weights/yolact_im400
Load:      yolact_jax.config.load_config('configs/yolact_im400.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_im400 preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_im400')


get = get_config  # the older name, still accepted by load_config
