"""The CPU demo model on the built-in synthetic shapes dataset.

ResNet with (1, 2, 2, 1) bottleneck blocks at half width, 256 px input, 128-channel FPN and
ProtoNet: the YOLACT architecture sized for a 2-core machine.

Train:     python train.py --config configs/yolact_cpu.py [--config.train.batch_size=8 ...]
Evaluate:  python evaluate.py --config configs/yolact_cpu.py --weights runs/demo
Convert:   python scripts/convert_weights.py --config yolact_cpu runs/demo weights/yolact_cpu

"""

from yolact_jax.config import YolactConfig, get_config


def get() -> YolactConfig:
  return get_config('yolact_cpu')
