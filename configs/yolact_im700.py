"""YOLACT ResNet-101 at 700 px, masks_to_train 300. Original: 31.2 mask mAP, 23.6 fps.

Train:     python train.py --config configs/yolact_im700.py [--config.train.batch_size=8 ...]
Evaluate:  python evaluate.py --config configs/yolact_im700.py --weights yolact_im700_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_im700 yolact_im700_54_800000.pth weights/yolact_im700

"""

from yolact_jax.config import YolactConfig, get_config


def get() -> YolactConfig:
  return get_config('yolact_im700')
