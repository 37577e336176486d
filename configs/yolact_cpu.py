"""The CPU demo model on the built-in synthetic shapes dataset (the README's main job): the
YOLACT architecture sized for 2 CPU cores and ~10 minutes.

ResNet bottlenecks (1, 2, 2, 1) at quarter width, 128 px input, 64-channel FPN/ProtoNet, 32
prototypes (yolact_resnet50 shrunk by yolact_tiny.shrunk). Trained from scratch, so it departs
from the original's recipe where that needs an ImageNet backbone and 800k iterations: Adam
(train.optimizer), a short schedule, and no expand / random crop (the synthetic shapes already
vary in size and position). Anchors fit the synthetic objects (25-60 px wide at 128 px, median
40): the original's pixel sizes 24-384 are kept, not shrunk with the input, with YOLACT++'s three
scales per level and one square shape (the same 3 anchors per location as the shrunk v1 ones,
which left 58% of the objects without an anchor at IoU >= 0.5 and trained to a third of the mAP
in the same time).

Demo:      python scripts/demo.py            (dataset + training + evaluation + pictures)
Train:     yolact-jax train --config configs/yolact_cpu.py --workdir runs/cpu
Evaluate:  yolact-jax evaluate --weights outputs/demo/run   (the run records its config and dataset)
Load:      yolact_jax.config.load_config('configs/yolact_cpu.py') (calls get_config())
"""

from dataclasses import replace

from yolact_jax.config import YolactConfig
from yolact_jax.configs import yolact_plus_base, yolact_resnet50, yolact_tiny


def get_config() -> YolactConfig:
  """The CPU demo experiment."""
  cfg = yolact_tiny.shrunk(yolact_resnet50.get_config(), 'yolact_cpu', 128, (1, 2, 2, 1), 16, 64,
                           32)
  plus_scales = yolact_plus_base.get_config().model.anchors.pred_scales  # 550 px, 3 per level
  return replace(
      cfg,
      model=replace(cfg.model, anchors=replace(cfg.model.anchors, pred_scales=plus_scales,
                                               pred_aspect_ratios=((1,),) * 5)),
      train=replace(cfg.train, batch_size=8, optimizer='adam', lr=2e-3, max_iter=3000,
                    lr_steps=(2300, 2800), lr_warmup_until=200, autoscale=False,
                    max_instances=16),
      augment=replace(cfg.augment, expand=False, random_sample_crop=False))
