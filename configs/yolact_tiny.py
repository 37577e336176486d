"""A tiny YOLACT (64 px, 8-wide ResNet, 16-channel FPN) for fast tests.

Train:     python train.py --config configs/yolact_tiny.py [--config.train.batch_size=8 ...]
Evaluate:  python evaluate.py --config configs/yolact_tiny.py --weights runs/tiny
Convert:   python scripts/convert_weights.py --config yolact_tiny runs/tiny weights/yolact_tiny

"""

from yolact_jax.config import YolactConfig, get_config


def get() -> YolactConfig:
  return get_config('yolact_tiny')
