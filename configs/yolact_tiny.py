"""A tiny YOLACT (64 px, 8-wide ResNet, 16-channel FPN) on the synthetic shapes, for fast tests:
yolact_resnet50's architecture shrunk by :func:`shrunk` (also used by yolact_cpu).

Train:     yolact-jax train --config configs/yolact_tiny.py --workdir runs/tiny --steps 20
Evaluate:  yolact-jax evaluate --config configs/yolact_tiny.py --weights runs/tiny
Convert:   python scripts/convert_weights.py --config yolact_tiny runs/tiny weights/yolact_tiny
Load:      yolact_jax.config.load_config('configs/yolact_tiny.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import SYNTHETIC_CLASSES, DatasetConfig, YolactConfig
from yolact_jax.configs import yolact_resnet50


def shrunk(base: YolactConfig, name: str, max_size: int, layers: tuple[int, ...],
           base_width: int, features: int, mask_dim: int) -> YolactConfig:
  """``base``'s architecture at ``max_size`` px with ``layers`` blocks per stage of stem width
  ``base_width``, ``features`` channels in the FPN, ProtoNet and head, ``mask_dim`` prototypes
  and the anchors' pixel sizes scaled with the input; no ImageNet file; the synthetic shapes."""
  m = base.model
  scales = tuple((s * max_size / base.max_size,) for (s,) in m.anchors.pred_scales)
  proto = ((features, 3, 1),) * 3 + ((None, -2, 0), (features, 3, 1), (mask_dim, 1, 0))
  return replace(
      base, name=name, max_size=max_size,
      model=replace(
          m, backbone=replace(m.backbone, layers=layers, base_width=base_width,
                              pretrained_weights=''),
          anchors=replace(m.anchors, pred_scales=scales),
          fpn=replace(m.fpn, num_features=features),
          mask=replace(m.mask, mask_dim=mask_dim, proto_net=proto),
          head=replace(m.head, extra_head_net=(features,))),
      dataset=DatasetConfig(name='synthetic shapes', train_images='', train_info='',
                            valid_images='', valid_info='', class_names=SYNTHETIC_CLASSES))


def get_config() -> YolactConfig:
  """A few-thousand-parameter model at 64 px (the YOLACT architecture), a 100-step schedule."""
  cfg = shrunk(yolact_resnet50.get_config(), 'yolact_tiny', 64, (1, 1, 1, 1), 8, 16, 8)
  return replace(cfg, train=replace(cfg.train, batch_size=2, max_instances=8, lr=1e-3,
                                    max_iter=100, lr_steps=(80,), lr_warmup_until=10,
                                    autoscale=False),
                 detect=replace(cfg.detect, nms_top_k=50, max_num_detections=20))
