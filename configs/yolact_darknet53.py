"""YOLACT DarkNet-53 at 550 px (x/255 input normalisation): yolact_base with the DarkNet-53
backbone. Original: 28.7 mask mAP, 40.0 fps.

Train:     yolact-jax train --config configs/yolact_darknet53.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_darknet53.py --weights yolact_darknet53_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_darknet53 yolact_darknet53_54_800000.pth weights/yolact_darknet53
Load:      yolact_jax.config.load_config('configs/yolact_darknet53.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_base


def get_config() -> YolactConfig:
  """yolact_base with DarkNet-53 (stages C3-C5 of five) and its input transform."""
  base = yolact_base.get_config()
  return replace(base, name='yolact_darknet53', model=replace(base.model, backbone=replace(
      base.model.backbone, kind='darknet', layers=(1, 2, 8, 8, 4), base_width=32,
      selected_layers=(2, 3, 4), pretrained_weights='darknet53.pth', transform='darknet')))
