"""The CPU demo model on the built-in synthetic shapes dataset (the README's main job).

ResNet bottlenecks (1, 2, 2, 1) at quarter width, 128 px input, 64-channel FPN and ProtoNet:
the YOLACT architecture sized for a 2-core machine, trained from scratch with Adam, with anchors
fitted to the synthetic objects (see yolact_jax.config.yolact_cpu).

Demo:      python scripts/demo.py            (dataset + training + evaluation + pictures)
Train:     yolact-jax train --config configs/yolact_cpu.py --workdir runs/cpu
Evaluate:  yolact-jax evaluate --config configs/yolact_cpu.py --weights outputs/demo/run --synthetic data/synthetic
Load:      yolact_jax.config.load_config('configs/yolact_cpu.py') (calls get_config())
"""

from yolact_jax import config
from yolact_jax.config import YolactConfig


def get_config() -> YolactConfig:
  """The yolact_cpu preset of yolact_jax.config (validated)."""
  return config.get_config('yolact_cpu')


get = get_config  # the older name, still accepted by load_config
