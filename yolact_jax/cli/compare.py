"""``yolact-jax compare``: side by side with the original PyTorch YOLACT (same weights, same
inputs): outputs and speed.

    # seeded random weights (identical on both sides), seeded images, CPU, 2 threads
    yolact-jax compare --yolact_repo ~/src/yolact --config yolact_resnet50 \\
        --random_weights 0 --num_images 8 --batch_size 1 --threads 2
    # an official checkpoint on real images
    yolact-jax compare --yolact_repo ~/src/yolact --config yolact_base \\
        --weights weights/yolact_base_54_800000.pth --images data/coco/images/val2017 \\
        --num_images 50
    # also one training step (losses, parameter update) and the train-step speed, batch 2
    yolact-jax compare --yolact_repo ~/src/yolact --config yolact_resnet50 \\
        --random_weights 0 --threads 2 --train_step --train_batch_size 2
    # training studies (yolact_cpu by default): 500 steps side by side on the same batches
    yolact-jax compare --yolact_repo ~/src/yolact --train_steps 500 --threads 2
    # whole 500-iteration runs, scored by the same COCO evaluator (the original: 3 data seeds)
    yolact-jax compare --yolact_repo ~/src/yolact --train_run 500 --threads 2
    # mmdetection's YOLACT as the reference (mmdet 3.x installed), against it in float64 too
    yolact-jax compare --reference mmdet --config yolact_mmdet_r50 --random_weights 0 \\
        --threads 2 --float64_yardstick

``--yolact_repo`` is the user's checkout of dbolya/yolact, imported at run time (nothing of it is
copied into this project; the checkout is not modified). What is compared, how both sides are
timed and the shims the original needs: :mod:`yolact_jax.compare` (this module only parses the
command line). JAX is imported only after ``--threads`` has pinned the process.
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any, Sequence

from yolact_jax.cli import common
# Neither imports JAX or torch at module level (they start after --threads pins the process).
from yolact_jax.compare.inference import OURS_KINDS
from yolact_jax.compare.original import NMS_TO_ORIGINAL_FLAGS
from yolact_jax.compare.session import STUDY_PRESET, run_comparison, run_training_study


def build_parser() -> argparse.ArgumentParser:
  p = common.Parser(prog='yolact-jax compare', description=__doc__.split('\n\n')[0])
  p.add_argument('--reference', choices=('original', 'mmdet'), default='original',
                 help="the PyTorch side: the original (--yolact_repo) or mmdetection's YOLACT "
                      '(mmdet 3.x installed; its presets yolact_mmdet_r50/r101/tiny)')
  p.add_argument('--yolact_repo', default=None,
                 help='a checkout of dbolya/yolact (the original reference)')
  p.add_argument('--config', default=None,
                 help='preset name, the same on both sides (the original gets <name>_config, '
                      'or one built from ours); default yolact_resnet50, and '
                      f'{STUDY_PRESET} for the training studies')
  weights = p.add_mutually_exclusive_group()
  weights.add_argument('--weights', help='an original .pth checkpoint')
  weights.add_argument('--random_weights', type=int, metavar='SEED',
                       help='seeded random weights, identical on both sides')
  p.add_argument('--images', nargs='+', help='image files and/or folders')
  p.add_argument('--num_images', type=int, default=4,
                 help='images to use (seeded random images when --images is not given)')
  p.add_argument('--seed', type=int, default=0, help='seed of the random images')
  p.add_argument('--batch_size', type=int, default=1)
  p.add_argument('--nms', choices=tuple(NMS_TO_ORIGINAL_FLAGS), default='fast',
                 help='NMS on both sides (standard: the original compiles its Cython NMS '
                      'through pyximport)')
  p.add_argument('--match_iou', type=float, default=0.9, help='box IoU to match detections')
  p.add_argument('--threads', type=int, default=None, help='CPU threads for both sides '
                 '(default: every CPU this process may use)')
  p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
  p.add_argument('--warmup', type=int, default=2, help='untimed batches per side (the '
                 'original\'s benchmark skips 2 images)')
  p.add_argument('--repeats', type=int, default=10, help='timed batches per side')
  p.add_argument('--skip_speed', action='store_true', help='compare outputs only')
  p.add_argument('--float64_yardstick', action='store_true',
                 help="also run the original in float64 (the true function on these weights) "
                      "and judge both sides' float32 errors against it: ours may be at most "
                      "1.5x the original's own (shared/reference/README.md's parity rule)")
  p.add_argument('--ours', choices=OURS_KINDS, default='live',
                 help="our end-to-end program: 'live' (jitted), 'stablehlo' (exported with "
                      'jax.export, serialized and read back, as yolact_jax.serving runs it) or '
                      "'onnx' (converted by jax2onnx, run by ONNX Runtime; the [onnx] extra); "
                      'the network stage and the raw outputs stay the live ones')
  train = p.add_argument_group('training step (--train_step)')
  train.add_argument('--train_step', action='store_true',
                     help='also compare one training step (losses, parameter update) and time '
                          'both sides\' steps')
  train.add_argument('--train_batch_size', type=int, default=2,
                     help='images per training batch (the first images, network input size)')
  train.add_argument('--train_objects', type=int, default=3,
                     help='seeded ground-truth objects per training image')
  train.add_argument('--train_warmup', type=int, default=1, help='untimed steps per side')
  train.add_argument('--train_repeats', type=int, default=3, help='timed steps per side')
  study = p.add_argument_group(
      'training studies (--train_steps / --train_run; from our seeded initialisation, '
      '--random_weights SEED, default 0)')
  study.add_argument('--train_steps', type=int, default=None, metavar='N',
                     help='N steps on both sides on the same batches: every loss term, the '
                          "parameter drift per tensor group and the original's own drift")
  study.add_argument('--train_run', type=int, default=None, metavar='ITER',
                     help='whole runs of ITER iterations (the schedule scaled to it), both '
                          'sides scored by the same COCO evaluator, both on each --data_seeds')
  study.add_argument('--study_batch_size', type=int, default=None,
                     help="images per step (default: the preset's train.batch_size)")
  study.add_argument('--data_seeds', type=lambda s: [int(x) for x in s.split(',')],
                     default=[0, 1, 2], help='--train_run: the data seeds, each trained by '
                     'both sides on the same batches')
  study.add_argument('--record_every', type=int, default=1,
                     help='--train_steps: steps between parameter comparisons')
  study.add_argument('--data_dir', default='data/synthetic',
                     help='the synthetic dataset (the demo\'s; generated if absent)')
  study.add_argument('--num_train', type=int, default=3000, help='synthetic train images')
  study.add_argument('--num_val', type=int, default=100, help='synthetic val images')
  study.add_argument('--image_side', type=int, nargs=2, default=(128, 256),
                     metavar=('MIN', 'MAX'), help='square synthetic images of sides in MIN..MAX')
  p.add_argument('--out', type=pathlib.Path, default=None,
                 help='JSON path (default results/compare_pytorch_<config>_<device>.json); '
                      '.md beside it')
  return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  import shlex
  import sys
  parser = build_parser()
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  args.command = shlex.join(['yolact-jax', 'compare', *map(str, argv)])
  if args.reference == 'original' and not args.yolact_repo:
    parser.error('--yolact_repo is required (a checkout of dbolya/yolact), unless '
                 '--reference mmdet')
  if args.reference == 'mmdet' and args.nms != 'fast':
    parser.error("--reference mmdet: mmdetection's YOLACT has Fast NMS only (--nms fast)")
  if args.reference == 'mmdet' and (args.train_steps or args.train_run):
    parser.error('--reference mmdet: the training studies run against the original; against '
                 'mmdetection one step compares (--train_step)')
  if args.train_steps and args.train_run:
    parser.error('--train_steps and --train_run are separate studies: give one')
  if args.train_steps or args.train_run:
    if args.weights:
      parser.error('the training studies start from our seeded initialisation '
                   '(--random_weights SEED), not from --weights')
    return run_training_study(args)
  if args.weights is None and args.random_weights is None:
    parser.error('one of --weights or --random_weights is required')
  args.config = args.config or ('yolact_mmdet_r50' if args.reference == 'mmdet'
                                else 'yolact_resnet50')
  return run_comparison(args)


if __name__ == '__main__':
  main()
