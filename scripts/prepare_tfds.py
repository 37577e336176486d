"""Check a COCO-format dataset and turn it into a TFDS (array_record) dataset.

  # the synthetic dataset (splits train / val)
  python scripts/prepare_tfds.py --manual_dir data_cache/synthetic --data_dir data_cache/tfds \
      --config synthetic
  # COCO 2017 (annotations/instances_{train,val}2017.json, train2017/, val2017/)
  python scripts/prepare_tfds.py --manual_dir /data/coco --data_dir /data/tfds --config coco2017
  # any layout: TFDS split name = file tag
  python scripts/prepare_tfds.py --manual_dir my_data --data_dir tfds --splits train=trn,validation=dev
  # only report the problems (no build)
  python scripts/prepare_tfds.py --manual_dir my_data --splits train=train --validate_only

Every problem found (file, image id, annotation id, what was done) is printed and, with
--report, written to a file. The exit status is 1 when --strict is given and problems were found,
2 when the dataset is unusable (not COCO format, empty).
"""

from __future__ import annotations

import logging
import os
import sys


def _parse_splits(text: str | None) -> dict[str, str] | None:
  if not text:
    return None
  pairs = [item.split('=', 1) for item in text.split(',') if item]
  if any(len(pair) != 2 for pair in pairs):
    raise SystemExit(f'--splits must look like train=train2017,validation=val2017: {text!r}')
  return {name: tag for name, tag in pairs}


def _validate(manual_dir: str, split_tags: dict[str, str]) -> list:
  from yolact_jax.data import coco
  problems = []
  for split, tag in split_tags.items():
    ann_file = os.path.join(manual_dir, 'annotations', f'instances_{tag}.json')
    data = coco.load_annotation_file(ann_file)
    records, found, label_map = coco.build_records(
        data, ann_file, os.path.join(manual_dir, tag), keep='all')
    print(f'{split}: {len(records)} images, {sum(len(r["is_crowd"]) for r in records)} '
          f'annotations, {label_map.num_classes} classes')
    problems.extend(found)
  return problems


def main(argv=None) -> int:
  from yolact_jax.cli.common import Parser  # dashed spellings stay accepted
  parser = Parser(description=__doc__)
  parser.add_argument('--manual_dir', required=True, help='the COCO-format folder')
  parser.add_argument('--data_dir', default='data_cache/tfds', help='TFDS data dir')
  parser.add_argument('--config', default='custom',
                      choices=['synthetic', 'custom', 'coco2017', 'coco2014'])
  parser.add_argument('--splits', help='split=tag list overriding the config, e.g. '
                                       'train=train2017,validation=val2017')
  parser.add_argument('--no_verify', action='store_true',
                      help='do not decode every image while building (faster, finds less)')
  parser.add_argument('--validate_only', action='store_true', help='report problems, no build')
  parser.add_argument('--report', help='write every problem to this file')
  parser.add_argument('--strict', action='store_true', help='exit 1 if any problem was found')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.ERROR, format='%(message)s')

  from yolact_jax.data import coco, tfds_builder
  split_tags = _parse_splits(args.splits)
  try:
    if args.validate_only:
      tags = split_tags or tfds_builder.CONFIG_SPLIT_TAGS[args.config]
      problems = _validate(args.manual_dir, tags)
    else:
      builder_dir, problems = tfds_builder.build_tfds_dataset(
          args.manual_dir, args.data_dir, config=args.config, split_tags=split_tags,
          verify_images=not args.no_verify)
      print(f'TFDS dataset: {builder_dir}')
      print(f"read with tfds.data_source('coco_format_instances/{args.config}', "
            f"data_dir={args.data_dir!r}) or yolact_jax.data.loader.open_tfds_source("
            f'{builder_dir!r}, split)')
  except (coco.CocoFormatError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for problem in problems:
    print(f'problem: {problem}')
  for summary in coco.summarize_problems(problems):
    print(f'summary: {summary}')
  print(f'{len(problems)} problems')
  if args.report:
    with open(args.report, 'w') as f:
      f.writelines(f'{p}\n' for p in problems)
  return 1 if (args.strict and problems) else 0


if __name__ == '__main__':
  sys.exit(main())
