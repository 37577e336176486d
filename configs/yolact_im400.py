"""YOLACT ResNet-101 at 400 px: yolact_base with prior scales int(s / 550 * 400).

Train:     yolact-jax train --config configs/yolact_im400.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_im400.py --weights yolact_im400_53_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_im400 yolact_im400_53_800000.pth weights/yolact_im400
Load:      yolact_jax.config.load_config('configs/yolact_im400.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_base


def get_config() -> YolactConfig:
  """yolact_base at 400 px, its anchors scaled as the original does."""
  base = yolact_base.get_config()
  scales = tuple((int(s / base.max_size * 400),) for (s,) in base.model.anchors.pred_scales)
  return replace(base, name='yolact_im400', max_size=400, model=replace(
      base.model, anchors=replace(base.model.anchors, pred_scales=scales)))
