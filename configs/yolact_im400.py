"""YOLACT ResNet-101 at 400 px: prior scales int(s / 550 * 400).

Train:     python train.py --config configs/yolact_im400.py [--config.train.batch_size=8 ...]
Evaluate:  python evaluate.py --config configs/yolact_im400.py --weights yolact_im400_53_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_im400 yolact_im400_53_800000.pth weights/yolact_im400

"""

from yolact_jax.config import YolactConfig, get_config


def get() -> YolactConfig:
  return get_config('yolact_im400')
