"""YOLACT++ ResNet-101 FPN at 550 px (DCNv2 in every third block of C3-C5, 11 DCNs). Original:
34.6 mask mAP test-dev, 27.3 fps.

Nine anchors per location (three scales x three aspect ratios), the fast mask re-scoring network
(mask score = class score x predicted mask IoU) and its loss term. Trains from
resnet101_reducedfc.pth (the ResNet-101 file of yolact_base); every DCN starts as 0.5 x the
ImageNet 3x3 conv (zero offsets, modulation sigmoid(0)). :func:`plus` turns a YOLACT preset into
its YOLACT++ form (also used by yolact_plus_resnet50 and yolact_plus_tiny).

Train:     yolact-jax train --config configs/yolact_plus_base.py --data coco --imagenet weights/
           (weights/ holds the ImageNet file named by model.backbone.pretrained_weights)
Evaluate:  yolact-jax evaluate --config configs/yolact_plus_base.py --weights yolact_plus_base_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_plus_base yolact_plus_base_54_800000.pth weights/yolact_plus_base
Load:      yolact_jax.config.load_config('configs/yolact_plus_base.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_base

# The original's mask-IoU network: five 3x3 stride-2 convs (138 -> 68, 33, 16, 7, 3 px).
MASKIOU_NET = ((8, 3, 2), (16, 3, 2), (32, 3, 2), (64, 3, 2), (128, 3, 2))


def plus(cfg: YolactConfig, name: str, dcn_layers: tuple[int, ...], dcn_interval: int,
         maskiou_net: tuple[tuple[int, int, int], ...] = MASKIOU_NET) -> YolactConfig:
  """The YOLACT preset ``cfg`` turned into YOLACT++: DCNv2 blocks (``dcn_layers`` /
  ``dcn_interval``), 9 anchors per location (``cfg``'s scale s of each level becomes
  s * 2^(j/3), j = 0, 1, 2, computed as the original does so the priors are bit-identical, with
  real aspect ratios), the mask-IoU network with its loss term, and mask re-scoring."""
  m = cfg.model
  scales = tuple(tuple(s[0] * 2 ** (j / 3.0) for j in range(3)) for s in m.anchors.pred_scales)
  return replace(
      cfg, name=name,
      model=replace(
          m, backbone=replace(m.backbone, dcn_layers=dcn_layers, dcn_interval=dcn_interval),
          anchors=replace(m.anchors, pred_scales=scales, pred_aspect_ratios=((1, 1 / 2, 2),) * 5,
                          use_pixel_scales=True, preapply_sqrt=False, use_square_anchors=False),
          use_maskiou=True, maskiou_net=maskiou_net),
      loss=replace(cfg.loss, maskiou_alpha=25.0, discard_mask_area=5 * 5),
      detect=replace(cfg.detect, rescore_mask=True, rescore_bbox=False))


def get_config() -> YolactConfig:
  """yolact_base as YOLACT++: DCNv2 in every third block of C3-C5."""
  return plus(yolact_base.get_config(), 'yolact_plus_base', (0, 4, 23, 3), 3)
