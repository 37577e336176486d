"""Side by side with the original PyTorch YOLACT: same weights, same inputs, outputs and speed.

    # seeded random weights (identical on both sides), seeded images, CPU, 2 threads
    python scripts/compare_pytorch.py --yolact-repo ~/src/yolact --config yolact_resnet50 \\
        --random-weights 0 --num-images 8 --batch-size 1 --threads 2
    # an official checkpoint on real images
    python scripts/compare_pytorch.py --yolact-repo ~/src/yolact --config yolact_base \\
        --weights weights/yolact_base_54_800000.pth --images data/coco/images/val2017 \\
        --num-images 50
    # also one training step (losses, parameter update) and the train-step speed, batch 2
    python scripts/compare_pytorch.py --yolact-repo ~/src/yolact --config yolact_resnet50 \\
        --random-weights 0 --threads 2 --train-step --train-batch-size 2

``--yolact-repo`` is the user's checkout of dbolya/yolact, imported at run time (nothing of it is
copied into this project; the checkout is not modified). What is compared, how both sides are
timed and the shims the original needs: :mod:`yolact_jax.compare` (this script only parses the
command line). JAX is imported only after ``--threads`` has pinned the process.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Sequence

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(PROJECT_ROOT))

# Neither imports JAX or torch at module level (they start after --threads pins the process).
from yolact_jax.compare.original import NMS_TO_ORIGINAL_FLAGS  # noqa: E402
from yolact_jax.compare.session import run_comparison  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--yolact-repo', required=True, help='a checkout of dbolya/yolact')
  p.add_argument('--config', default='yolact_resnet50',
                 help='preset name, the same on both sides (the original gets <name>_config)')
  weights = p.add_mutually_exclusive_group(required=True)
  weights.add_argument('--weights', help='an original .pth checkpoint')
  weights.add_argument('--random-weights', type=int, metavar='SEED',
                       help='seeded random weights, identical on both sides')
  p.add_argument('--images', nargs='+', help='image files and/or folders')
  p.add_argument('--num-images', type=int, default=4,
                 help='images to use (seeded random images when --images is not given)')
  p.add_argument('--seed', type=int, default=0, help='seed of the random images')
  p.add_argument('--batch-size', type=int, default=1)
  p.add_argument('--nms', choices=tuple(NMS_TO_ORIGINAL_FLAGS), default='fast',
                 help='NMS on both sides (standard: the original compiles its Cython NMS '
                      'through pyximport)')
  p.add_argument('--match-iou', type=float, default=0.9, help='box IoU to match detections')
  p.add_argument('--threads', type=int, default=None, help='CPU threads for both sides '
                 '(default: every CPU this process may use)')
  p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
  p.add_argument('--warmup', type=int, default=2, help='untimed batches per side (the '
                 'original\'s benchmark skips 2 images)')
  p.add_argument('--repeats', type=int, default=10, help='timed batches per side')
  p.add_argument('--skip-speed', action='store_true', help='compare outputs only')
  train = p.add_argument_group('training step (--train-step)')
  train.add_argument('--train-step', action='store_true',
                     help='also compare one training step (losses, parameter update) and time '
                          'both sides\' steps')
  train.add_argument('--train-batch-size', type=int, default=2,
                     help='images per training batch (the first images, network input size)')
  train.add_argument('--train-objects', type=int, default=3,
                     help='seeded ground-truth objects per training image')
  train.add_argument('--train-warmup', type=int, default=1, help='untimed steps per side')
  train.add_argument('--train-repeats', type=int, default=3, help='timed steps per side')
  p.add_argument('--out', type=pathlib.Path, default=None,
                 help='JSON path (default results/compare_pytorch_<config>_<device>.json); '
                      '.md beside it')
  return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return run_comparison(build_parser().parse_args(argv))


if __name__ == '__main__':
  main()
