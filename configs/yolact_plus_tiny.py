"""A tiny YOLACT++ (yolact_tiny with DCNv2 as conv2 of C3-C5, 9 anchors per location and a
3-conv mask-IoU network for its 16 x 16 prototypes) for fast tests.

Train:     yolact-jax train --config configs/yolact_plus_tiny.py --workdir runs/plus_tiny --steps 20
Evaluate:  yolact-jax evaluate --config configs/yolact_plus_tiny.py --weights runs/plus_tiny
Convert:   python scripts/convert_weights.py --config yolact_plus_tiny runs/plus_tiny weights/yolact_plus_tiny
Load:      yolact_jax.config.load_config('configs/yolact_plus_tiny.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_plus_tiny preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_plus_tiny')


get = get_config  # the older name, still accepted by load_config
