"""Evaluate YOLACT with COCO box and mask mAP. (Entry point; lands with the evaluation issue.)

  python evaluate.py --config configs/yolact_base.py --weights yolact_base_54_800000.pth
"""

import sys


def main(argv=None) -> int:
  print('evaluate.py: evaluation is not implemented yet (see the evaluation issue).',
        file=sys.stderr)
  return 2


if __name__ == '__main__':
  sys.exit(main())
