"""``yolact-jax evaluate``: COCO box and mask mAP (pycocotools), results files, a benchmark mode.

  # COCO val2017 (default paths of the config: cfg.dataset.valid_info / valid_images)
  yolact-jax evaluate --config configs/yolact_base.py --weights yolact_base_54_800000.pth \\
      --out results/base
  # a training run: its config and the dataset it trained on (val split) are read back
  yolact-jax evaluate --weights runs/demo
  # any COCO-format dataset, a prepared TFDS split, or the synthetic shapes (made if absent):
  # the same dataset flags as `yolact-jax train`
  yolact-jax evaluate --config yolact_base --weights w.pth --ann_file a.json --image_dir imgs/
  yolact-jax evaluate --weights runs/demo --data tfds \\
      --data_dir tfds/coco_format_instances/synthetic/1.0.0
  yolact-jax evaluate --weights runs/demo --data synthetic --data_dir data/synthetic
  # score existing results files (the original's names, or predict's --coco_json)
  yolact-jax evaluate --config yolact_base --results_only results/bbox_detections.json,results/mask_detections.json
  # time inference the way the original's --benchmark does (no mAP)
  yolact-jax evaluate --config yolact_base --weights w.pth --benchmark --benchmark_images 100 \\
      --batch_size 1 --out results/bench
  # the original eval.py's flags: --trained_model, --output_coco_json, --fast_nms,
  # --cross_class_nms, and --image / --images / --video (these run `yolact-jax predict`)
  yolact-jax evaluate --trained_model=weights/yolact_base_54_800000.pth --config yolact_base \\
      --output_coco_json --fast_nms false

Evaluation runs every image with at least one annotation (as the original), all detections (up
to detect.max_num_detections, 100) with no score filter; ``--top_k`` and ``--score_threshold``
are display settings only, as the original's (they change the printed detection count and the
benchmark's host copy, never the mAP). ``--nms`` picks the NMS variant (the original's
--fast_nms / --cross_class_nms are accepted too). Any config field:
``--config.detect.max_num_detections=50``.

``--out`` (older name ``--output_dir``; ``results/`` with the original's ``--output_coco_json``)
receives ``bbox_detections.json`` and ``mask_detections.json`` in the original's
``--output_coco_json`` format (its ``run_coco_eval.py`` accepts them) and ``summary.json``: the 12
COCO numbers of each type (fractions; -1 where there is no ground truth), per-class AP, number of
images, config name and weights path. With ``--benchmark``: ``benchmark.json``.

Exit status: 0 on success, 1 on a bad input (the message says which), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from yolact_jax.cli import common
from yolact_jax.cli.common import UsageError
from yolact_jax.config import COMPUTE_DTYPES, NMS_KINDS

ORIGINAL_RESULTS_DIR = 'results'  # where the original's --output_coco_json writes


def build_parser() -> argparse.ArgumentParser:
  parser = common.Parser(prog='yolact-jax evaluate', description=__doc__)
  common.add_config_arg(parser)
  parser.add_argument('--weights', default=None,
                      help='original .pth, yolact-jax weights directory or training run dir')
  data = common.add_data_args(parser, 'eval')
  data.add_argument('--max_images', type=int, default=None, help='evaluate the first N images')
  parser.add_argument('--batch_size', type=int, default=8, help='images per compiled call')
  parser.add_argument('--nms', choices=NMS_KINDS, default=None,
                      help="NMS variant (default: the config's detect.nms, 'fast')")
  parser.add_argument('--top_k', type=int, default=5,
                      help='display only: detections per image shown / copied in --benchmark')
  parser.add_argument('--score_threshold', type=float, default=0.0,
                      help='display only: detections counted as shown (mAP uses all)')
  parser.add_argument('--dtype', choices=COMPUTE_DTYPES, default='float32',
                      help='network computation dtype')
  parser.add_argument('--out', default=None,
                      help='write bbox_detections.json, mask_detections.json, summary.json here')
  common.add_alias(parser, '--output_dir', 'out')
  parser.add_argument('--output_coco_json', action='store_true',
                      help=f'the original\'s flag: write the results files (to --out, default '
                           f'{ORIGINAL_RESULTS_DIR}/)')
  results = parser.add_argument_group('evaluate existing results (no model)')
  results.add_argument('--results_only', default=None, metavar='BBOX.json,MASK.json',
                       help='two results files, or one {"bbox": [...], "segm": [...]} file')
  results.add_argument('--bbox_results', default=None)
  results.add_argument('--mask_results', default=None)
  bench = parser.add_argument_group('benchmark')
  bench.add_argument('--benchmark', action='store_true',
                     help='time inference (network + Detect + postprocess + copy to host); no mAP')
  bench.add_argument('--benchmark_images', type=int, default=100,
                     help='images timed (the dataset repeated if smaller)')
  bench.add_argument('--benchmark_repeats', type=int, default=10, help='calls per stage timing')
  predict = parser.add_argument_group(
      "the original eval.py's prediction modes (run `yolact-jax predict`; no mAP)")
  predict.add_argument('--image', default=None, metavar='IN[:OUT]', help='one image')
  predict.add_argument('--images', default=None, metavar='IN:OUT', help='a folder of images')
  predict.add_argument('--video', default=None, metavar='IN[:OUT]',
                       help='a video file or a camera index')
  parser.add_argument('--no_per_class', action='store_true', help='do not print per-class AP')
  parser.add_argument('--no_progress', action='store_true', help='no progress bar')
  parser.add_argument('--decode_workers', type=int, default=2, help='image decoding threads')
  common.add_original_eval_flags(parser)
  from yolact_jax.parallel import add_distributed_args
  add_distributed_args(parser)
  return parser


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
  parser = build_parser()
  args, extra = common.parse_with_overrides(parser, argv)
  results_mode = bool(args.results_only or args.bbox_results or args.mask_results)
  if args.results_only and (args.bbox_results or args.mask_results):
    parser.error('use either --results_only or --bbox_results/--mask_results')
  if results_mode and args.benchmark:
    parser.error('--benchmark needs the model, not results files')
  if not results_mode and not args.weights:
    parser.error('--weights is required (or --results_only to score existing results files)')
  for name in ('batch_size', 'max_images', 'benchmark_images', 'benchmark_repeats'):
    value = getattr(args, name)
    if value is not None and value < 1:
      parser.error(f'--{name} must be >= 1, got {value}')
  if args.output_coco_json and not args.out:
    args.out = ORIGINAL_RESULTS_DIR
  return args, extra


# ---------------------------------------------------------------------------------------------
# Dataset and results


def dataset(args, cfg) -> common.DataSelection:
  """The dataset the flags name (:func:`common.resolve_data`), else the one the run directory
  --weights trained on, else the config's; says which when it was not named."""
  record = common.read_data_record(args.weights)
  data = common.resolve_data(args, cfg, common.chosen_split(args), record)
  if not common.data_flags_given(args):
    where = (f'the one {args.weights} trained on' if record is not None
             else f'the default of {cfg.name}')
    print(f'dataset: {data.describe()} ({where}), split {args.split}')
  return data


def build_eval_set(args, cfg):
  from yolact_jax import evaluation as ev
  data, split = dataset(args, cfg), common.chosen_split(args)
  if data.kind == 'tfds':
    return ev.tfds_eval_set(data.data_dir, common.tfds_split_name(split),
                            max_images=args.max_images)
  ann_file, image_dir = common.split_files(data, split)
  if data.kind == 'synthetic' and split == 'val':  # generated if absent
    return ev.synthetic_eval_set(data.data_dir, num_val=data.synthetic_val,
                                 max_images=args.max_images)
  return ev.coco_eval_set(ann_file, image_dir, max_images=args.max_images)


def ground_truth_only(args, cfg) -> tuple[object, list[int], str]:
  """(GT, image ids, dataset name) for --results_only: no image is read for a COCO-format file.
  The images are the annotated ones in file order (the first --max_images of them)."""
  from yolact_jax import evaluation as ev
  data, split = dataset(args, cfg), common.chosen_split(args)
  if data.kind == 'tfds':
    eval_set = ev.tfds_eval_set(data.data_dir, common.tfds_split_name(split),
                                max_images=args.max_images)
    return eval_set.ground_truth, list(eval_set.image_ids), eval_set.name
  ann_file, _ = common.split_files(data, split)
  gt = ev.load_ground_truth(ann_file)
  return gt, ev.annotated_images_in_file_order(gt)[:args.max_images], ann_file


def results_sources(args) -> tuple[object, object]:
  """(bbox, segm) results: file paths, or None for a type that is not given."""
  if args.results_only:
    paths = [p for p in args.results_only.split(',') if p]
    if len(paths) == 1:
      return paths[0], paths[0]  # one {"bbox": [...], "segm": [...]} file
    if len(paths) != 2:
      raise UsageError(f'--results_only takes BBOX.json,MASK.json or one combined file, got '
                       f'{args.results_only!r}')
    return paths[0], paths[1]
  return args.bbox_results, args.mask_results


# ---------------------------------------------------------------------------------------------
# Output


def write_json(path: str, data: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(data, f, indent=1)


def print_summary(summary: dict, per_class: bool) -> None:
  from yolact_jax import evaluation as ev
  print(ev.format_report(summary, per_class))


# ---------------------------------------------------------------------------------------------
# Modes


def run_results_only(args, cfg) -> int:
  from yolact_jax import evaluation as ev
  bbox, segm = results_sources(args)
  gt, image_ids, name = ground_truth_only(args, cfg)
  summary = ev.coco_evaluate(gt, bbox, segm, image_ids=image_ids)
  summary.update(config=cfg.name, weights=None, dataset=name,
                 results_files={'bbox': bbox, 'segm': segm})
  print_summary(summary, not args.no_per_class)
  if args.out:
    write_json(os.path.join(args.out, 'summary.json'), summary)
  return 0


def run_evaluation(args, cfg, variables, eval_set) -> int:
  import jax.numpy as jnp

  from yolact_jax import evaluation as ev
  run = ev.evaluate(cfg, variables, eval_set, args.batch_size, output_dir=args.out,
                    dtype=jnp.dtype(args.dtype), progress=not args.no_progress,
                    decode_workers=args.decode_workers)
  print(ev.format_detection_counts(run.results.bbox, len(run.results.image_ids),
                                   args.score_threshold, args.top_k))
  summary = run.summary
  summary.update(config=cfg.name, weights=os.path.abspath(args.weights), dataset=eval_set.name,
                 nms=cfg.detect.nms, max_num_detections=cfg.detect.max_num_detections,
                 batch_size=args.batch_size, dtype=args.dtype, results_files=run.files)
  print_summary(summary, not args.no_per_class)
  if args.out:
    write_json(os.path.join(args.out, 'summary.json'), summary)
    print(f'results and summary written to {args.out}')
  return 0


def run_benchmark(args, cfg, variables, eval_set) -> int:
  import jax.numpy as jnp

  from yolact_jax import evaluation as ev
  from yolact_jax.bench import fps
  images, problems = ev.read_first_images(eval_set, args.benchmark_images)
  for problem in problems:
    print(f'warning: {problem} (not used)', file=sys.stderr)
  if not images:
    raise UsageError(f'{eval_set.name}: no readable image to benchmark with')
  report = fps.benchmark_inference(
      cfg, variables, images, batch_size=args.batch_size, num_images=args.benchmark_images,
      repeats=args.benchmark_repeats, top_k=args.top_k, dtype=jnp.dtype(args.dtype))
  report.update(weights=os.path.abspath(args.weights), dataset=eval_set.name)
  print(fps.format_benchmark(report))
  if args.out:
    path = os.path.join(args.out, 'benchmark.json')
    write_json(path, report)
    print(f'written to {path}')
  return 0


def predict_argv(args: argparse.Namespace, overrides: list[str]) -> list[str]:
  """The ``yolact-jax predict`` command line of the original's --image/--images/--video."""
  argv = ['--weights', args.weights, '--top_k', str(args.top_k),
          '--score_threshold', str(args.score_threshold), '--dtype', args.dtype]
  for flag in ('config', 'image', 'images', 'video', 'max_images'):
    if getattr(args, flag) is not None:
      argv += [f'--{flag}', str(getattr(args, flag))]
  nms = common.nms_choice(args)
  argv += (['--nms', nms] if nms else []) + (['--no_progress'] if args.no_progress else [])
  return argv + list(overrides)


@common.cli_errors
def main(argv=None) -> int:
  common.quiet_tensorflow()
  args, overrides = parse_args(argv)
  if args.image or args.images or args.video:
    from yolact_jax.cli import predict
    return predict.main(predict_argv(args, overrides))
  results_mode = bool(args.results_only or args.bbox_results or args.mask_results)
  if not results_mode:
    common.check_weights(args.weights)
  cfg = common.resolve_config(args.config, overrides, args.weights)
  nms = common.nms_choice(args)
  if nms:
    from yolact_jax.config import validate
    cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, nms=nms))
    validate(cfg)
  if results_mode:
    return run_results_only(args, cfg)
  from yolact_jax import parallel
  parallel.initialize_from_args(args)
  eval_set = build_eval_set(args, cfg)
  from yolact_jax.checkpoint.io import load_weights
  from yolact_jax.evaluation import check_classes
  check_classes(cfg, eval_set)  # before the weights are read
  variables = load_weights(args.weights, cfg)
  print(f'{cfg.name} ({args.weights}) on {eval_set.name}: {len(eval_set)} images')
  if args.benchmark:
    return run_benchmark(args, cfg, variables, eval_set)
  return run_evaluation(args, cfg, variables, eval_set)
