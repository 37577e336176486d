"""YOLACT ResNet-50 FPN at 550 px. Original: 28.2 mask mAP test-dev, 42.5 fps.

Trains from the torchvision ImageNet file resnet50-19c8e357.pth.

Train:     python train.py --config configs/yolact_resnet50.py [--config.train.batch_size=8 ...]
Evaluate:  python evaluate.py --config configs/yolact_resnet50.py --weights yolact_resnet50_54_800000.pth
Convert:   python scripts/convert_weights.py --config yolact_resnet50 yolact_resnet50_54_800000.pth weights/yolact_resnet50

"""

from yolact_jax.config import YolactConfig, get_config


def get() -> YolactConfig:
  return get_config('yolact_resnet50')
