"""A tiny YOLACT (64 px, 8-wide ResNet, 16-channel FPN) for fast tests.

Train:     yolact-jax train --config configs/yolact_tiny.py --workdir runs/tiny --steps 20
Evaluate:  yolact-jax evaluate --config configs/yolact_tiny.py --weights runs/tiny
Convert:   python scripts/convert_weights.py --config yolact_tiny runs/tiny weights/yolact_tiny
Load:      yolact_jax.config.load_config('configs/yolact_tiny.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_tiny preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_tiny')


get = get_config  # the older name, still accepted by load_config
