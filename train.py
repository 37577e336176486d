"""Train YOLACT. (Entry point; the training loop lands with the training issue.)

  python train.py --config configs/yolact_cpu.py [--config.train.lr=1e-3 ...]
"""

import sys


def main(argv=None) -> int:
  print('train.py: the training loop is not implemented yet (see the training issue).',
        file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(main())
