"""Generate the built-in synthetic COCO-format shapes dataset (skipped if already complete).

  python scripts/make_synthetic.py --out data_cache/synthetic --num_train 1000 --num_val 200
  python scripts/make_synthetic.py --out /tmp/shapes --num_train 50 --num_val 10 --image_hw 256 256

Writes <out>/{train,val}/ images, <out>/annotations/instances_{train,val}.json and
<out>/manifest.json. Same arguments -> identical files.
"""

from __future__ import annotations

import logging
import sys
import time


def main(argv=None) -> int:
  from yolact_jax.cli.common import Parser  # dashed spellings stay accepted
  parser = Parser(description=__doc__)
  parser.add_argument('--out', default='data_cache/synthetic', help='output folder')
  parser.add_argument('--num_train', type=int, default=1000)
  parser.add_argument('--num_val', type=int, default=200)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--image_hw', type=int, nargs=2, metavar=('H', 'W'),
                      help='fixed image size (default: each side drawn from --side_range)')
  parser.add_argument('--side_range', type=int, nargs=2, default=(256, 550),
                      metavar=('MIN', 'MAX'))
  parser.add_argument('--max_objects', type=int, default=6)
  parser.add_argument('--crowd_fraction', type=float, default=0.1)
  parser.add_argument('--format', choices=['jpg', 'png'], default='jpg')
  parser.add_argument('--overwrite', action='store_true', help='regenerate even if complete')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')

  from yolact_jax.data.synthetic import generate_synthetic_coco
  start = time.perf_counter()
  paths = generate_synthetic_coco(
      args.out, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
      image_hw=args.image_hw, side_range=tuple(args.side_range), overwrite=args.overwrite,
      max_objects=args.max_objects, crowd_fraction=args.crowd_fraction,
      image_format=args.format)
  for split, (ann_file, image_dir) in paths.items():
    print(f'{split}: {ann_file}  images in {image_dir}')
  print(f'done in {time.perf_counter() - start:.1f} s')
  return 0


if __name__ == '__main__':
  sys.exit(main())
