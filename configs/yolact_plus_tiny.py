"""A tiny YOLACT++ for fast tests: yolact_tiny with DCNv2 as conv2 of C3-C5, 9 anchors per
location and a 3-conv mask-IoU network sized for its 16 x 16 prototypes (16 -> 7 -> 3 -> 1).

Train:     yolact-jax train --config configs/yolact_plus_tiny.py --workdir runs/plus_tiny --steps 20
Evaluate:  yolact-jax evaluate --config configs/yolact_plus_tiny.py --weights runs/plus_tiny
Convert:   python scripts/convert_weights.py --config yolact_plus_tiny runs/plus_tiny weights/yolact_plus_tiny
Load:      yolact_jax.config.load_config('configs/yolact_plus_tiny.py') (calls get_config())
"""

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_plus_base, yolact_tiny


def get_config() -> YolactConfig:
  """yolact_tiny as YOLACT++ (yolact_plus_base.plus)."""
  return yolact_plus_base.plus(yolact_tiny.get_config(), 'yolact_plus_tiny', (0, 1, 1, 1), 1,
                               maskiou_net=((4, 3, 2), (8, 3, 2), (16, 3, 2)))
