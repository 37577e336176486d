"""YOLACT ResNet-101 FPN at 550 px on COCO 2017 (the paper's main model).

The original reports 29.8 mask mAP on test-dev at 33.5 fps (Titan Xp). Trains from the ImageNet
file resnet101_reducedfc.pth.

Train:     python train.py --config configs/yolact_base.py [--config.train.batch_size=8 ...]
Evaluate:  python evaluate.py --config configs/yolact_base.py --weights yolact_base_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_base yolact_base_54_800000.pth weights/yolact_base

"""

from yolact_jax.config import YolactConfig, get_config


def get() -> YolactConfig:
  return get_config('yolact_base')
