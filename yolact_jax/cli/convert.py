"""``yolact-jax convert``: YOLACT weights between .pth files (the original's, or mmdetection's
2.x / 3.x: told by their keys) and yolact-jax (orbax) directories.

  # original checkpoint -> Flax weights directory
  yolact-jax convert --config yolact_base yolact_base_54_800000.pth out/yolact_base
  # Flax weights (or a training run: no --config needed) -> .pth for the original's load_weights
  yolact-jax convert runs/base yolact_base_jax.pth
  # the same with flags: --weights SOURCE --out DEST
  yolact-jax convert --config yolact_base --weights out/yolact_base --out yolact_base_jax.pth
  # mmdetection's checkpoint -> Flax weights, and Flax weights -> an mmdetection 3.x checkpoint
  yolact-jax convert --config yolact_mmdet_r50 yolact_r50_1x8_coco.pth out/r50
  yolact-jax convert --config yolact_mmdet_r50 out/r50 r50_for_mmdet.pth --pth_layout mmdet3
  # ImageNet backbone file -> a Flax starting point (rest initialised as the original)
  yolact-jax convert --config yolact_resnet50 --imagenet resnet50-19c8e357.pth out/r50_init
"""

from __future__ import annotations

from yolact_jax.checkpoint import mmdet
from yolact_jax.cli import common


def build_parser():
  parser = common.Parser(prog='yolact-jax convert', description=__doc__)
  common.add_config_arg(parser)
  parser.add_argument('--imagenet', action='store_true',
                      help='SOURCE is an ImageNet backbone file (torchvision/darknet layout)')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'float16'],
                      help='tensor dtype of a written .pth')
  parser.add_argument('--pth_layout', default='original', choices=mmdet.PTH_LAYOUTS,
                      help="keys of a written .pth: the original's, or mmdetection's (3.x or "
                           '2.x names); a .pth read is told by its keys')
  parser.add_argument('--seed', type=int, default=0, help='init seed for --imagenet')
  parser.add_argument('--weights', default=None, help='SOURCE as a flag')
  parser.add_argument('--out', default=None, help='DEST as a flag')
  parser.add_argument('source', nargs='?', default=None,
                      help='.pth file, weights directory or training run directory')
  parser.add_argument('dest', nargs='?', default=None,
                      help='.pth file or weights directory to write')
  return parser


def parse_args(argv=None):
  parser = build_parser()
  args, overrides = common.parse_with_overrides(parser, argv)
  rest = [p for p in (args.source, args.dest) if p is not None]
  source = args.weights or (rest.pop(0) if rest else None)
  dest = args.out or (rest.pop(0) if rest else None)
  if rest or source is None or dest is None:
    parser.error('give SOURCE DEST, or --weights SOURCE --out DEST')
  args.source, args.dest = source, dest
  return args, overrides


@common.cli_errors
def main(argv=None) -> int:
  args, overrides = parse_args(argv)
  common.check_weights(args.source, 'SOURCE')
  cfg = common.resolve_config(args.config, overrides, None if args.imagenet else args.source)
  import numpy as np

  from yolact_jax.checkpoint import convert, io
  if args.imagenet:
    from yolact_jax.model.variables import init_variables
    variables = convert.load_imagenet_backbone(args.source, cfg, init_variables(cfg, args.seed))
  else:
    variables = io.load_weights(args.source, cfg)
  if args.dest.endswith('.pth'):
    convert.save_pth_weights(variables, args.dest, cfg, np.dtype(args.dtype), args.pth_layout)
  else:
    io.save_weights(args.dest, variables, cfg)
  print(f'wrote {args.dest}')
  return 0
