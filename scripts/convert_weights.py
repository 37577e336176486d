"""Convert YOLACT weights between the original's .pth and yolact-jax (orbax) directories.

  # original checkpoint -> Flax weights directory
  python scripts/convert_weights.py --config yolact_base yolact_base_54_800000.pth out/yolact_base
  # Flax weights (or a train.py run) -> .pth that the original's Yolact.load_weights accepts
  python scripts/convert_weights.py --config yolact_base out/yolact_base yolact_base_jax.pth
  # ImageNet backbone file -> a Flax starting point (rest initialised as the original)
  python scripts/convert_weights.py --config yolact_resnet50 --imagenet resnet50-19c8e357.pth \
      out/r50_init
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='preset name, e.g. yolact_base')
  parser.add_argument('--imagenet', action='store_true',
                      help='SOURCE is an ImageNet backbone file (torchvision/darknet layout)')
  parser.add_argument('--dtype', default='float32', choices=['float32', 'float16'],
                      help='tensor dtype of a written .pth')
  parser.add_argument('--seed', type=int, default=0, help='init seed for --imagenet')
  parser.add_argument('source', help='.pth file, weights directory or train.py run directory')
  parser.add_argument('dest', help='.pth file or weights directory to write')
  parser.add_argument('overrides', nargs='*', help='--config.x.y=value overrides')
  args, extra = parser.parse_known_args(argv)

  from yolact_jax.checkpoint import convert, io
  from yolact_jax.config import get_config
  cfg = get_config(args.config, list(args.overrides) + extra)
  try:
    if args.imagenet:
      from yolact_jax.model.variables import init_variables
      variables = convert.load_imagenet_backbone(args.source, cfg,
                                                 init_variables(cfg, args.seed))
    else:
      variables = io.load_weights(args.source, cfg)
    if args.dest.endswith('.pth'):
      convert.save_original_weights(variables, args.dest, np.dtype(args.dtype))
    else:
      io.save_weights(args.dest, variables, cfg)
  except convert.CheckpointError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {args.dest}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
