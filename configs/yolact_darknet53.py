"""YOLACT DarkNet-53 at 550 px (x/255 input normalisation). Original: 28.7 mask mAP, 40.0 fps.

Train:     python train.py --config configs/yolact_darknet53.py [--config.train.batch_size=8 ...]
Evaluate:  python evaluate.py --config configs/yolact_darknet53.py --weights yolact_darknet53_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_darknet53 yolact_darknet53_54_800000.pth weights/yolact_darknet53

"""

from yolact_jax.config import YolactConfig, get_config


def get() -> YolactConfig:
  return get_config('yolact_darknet53')
