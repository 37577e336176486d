"""A tiny mmdetection-style YOLACT for tests: yolact_mmdet_r50's ResNet-50 at width 8, a
16-channel FPN and head, 8 prototypes, 96 px, the synthetic shapes (yolact_tiny's shrinking).
mmdetection's own ResNet builds it (depth 50, base_channels 8), so tests/data/mmdet_reference
holds mmdetection's outputs for it (scripts/make_mmdet_reference.py).

Train:     yolact-jax train --config configs/yolact_mmdet_tiny.py --workdir runs/mmdet_tiny --steps 20
Test:      pytest tests/test_mmdet.py
Load:      yolact_jax.config.load_config('configs/yolact_mmdet_tiny.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_mmdet_r50, yolact_tiny


def get_config() -> YolactConfig:
  """yolact_mmdet_r50 shrunk to 96 px; Detect keeps 50 candidates a class, 20 detections."""
  cfg = yolact_tiny.shrunk(yolact_mmdet_r50.get_config(), 'yolact_mmdet_tiny', 96,
                           (3, 4, 6, 3), 8, 16, 8)
  return replace(cfg, train=replace(cfg.train, batch_size=2, max_instances=8, max_iter=100,
                                    lr_steps=(80,), lr_warmup_until=10, autoscale=False),
                 detect=replace(cfg.detect, nms_top_k=50, max_num_detections=20,
                                candidates_per_level=100))
