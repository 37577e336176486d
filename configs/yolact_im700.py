"""YOLACT ResNet-101 at 700 px: yolact_base with prior scales int(s / 550 * 700) and 300 masks
per image in the mask loss. Original: 31.2 mask mAP, 23.6 fps.

Train:     yolact-jax train --config configs/yolact_im700.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_im700.py --weights yolact_im700_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_im700 yolact_im700_54_800000.pth weights/yolact_im700
Load:      yolact_jax.config.load_config('configs/yolact_im700.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_base


def get_config() -> YolactConfig:
  """yolact_base at 700 px, its anchors scaled as the original does, masks_to_train 300."""
  base = yolact_base.get_config()
  scales = tuple((int(s / base.max_size * 700),) for (s,) in base.model.anchors.pred_scales)
  return replace(base, name='yolact_im700', max_size=700,
                 model=replace(base.model, anchors=replace(base.model.anchors,
                                                           pred_scales=scales)),
                 loss=replace(base.loss, masks_to_train=300))
