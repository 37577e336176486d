"""Train YOLACT (resumes automatically from the newest checkpoint in --workdir).

  # the CPU demo model on the built-in synthetic dataset (generated on first use)
  python train.py --config configs/yolact_cpu.py --workdir runs/demo
  # COCO 2017 (cfg.dataset paths, or --ann_file/--image_dir), ImageNet backbone, batch 8
  python train.py --config configs/yolact_base.py --workdir runs/base --data coco \
      --imagenet weights/resnet101_reducedfc.pth
  # a TFDS dataset prepared with scripts/prepare_tfds.py
  python train.py --config configs/yolact_resnet50.py --data tfds:data/tfds/coco_format_instances/coco2017/1.0.0

Any config field can be overridden: --config.train.batch_size=4 --config.train.lr=5e-4.
Ctrl-C or SIGTERM saves a checkpoint and exits; running the same command again resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default='yolact_cpu',
                      help='preset name or configs/<name>.py (default: yolact_cpu)')
  parser.add_argument('--workdir', default=None, help='run directory (default runs/<config>)')
  parser.add_argument('--data', default=None,
                      help="'synthetic', 'coco' (cfg.dataset or --ann_file/--image_dir) or "
                           "'tfds:<prepared dataset dir>'; default: synthetic for the synthetic "
                           'presets, coco otherwise')
  parser.add_argument('--data_dir', default='data/synthetic',
                      help='where the synthetic dataset lives (generated if absent)')
  parser.add_argument('--synthetic_train', type=int, default=600, help='synthetic train images')
  parser.add_argument('--synthetic_val', type=int, default=60, help='synthetic val images')
  parser.add_argument('--ann_file', default=None, help='COCO-format instances json (training)')
  parser.add_argument('--image_dir', default=None, help='image folder (training)')
  parser.add_argument('--steps', type=int, default=None,
                      help='stop after this many iterations (default: the schedule max_iter)')
  parser.add_argument('--imagenet', default=None,
                      help='ImageNet backbone .pth (resnet101_reducedfc.pth, '
                           'resnet50-19c8e357.pth, darknet53.pth) for a new run')
  parser.add_argument('--init_weights', default=None,
                      help='start a new run from these weights (.pth or Flax directory)')
  parser.add_argument('--eval_every', type=int, default=0,
                      help='validate every N steps (0: at the end only); needs a val split')
  parser.add_argument('--no_eval', action='store_true', help='skip validation')
  parser.add_argument('--save_every', type=int, default=500)
  parser.add_argument('--keep', type=int, default=3, help='newest checkpoints to keep')
  parser.add_argument('--log_every', type=int, default=10)
  parser.add_argument('--workers', type=int, default=0, help='grain worker processes')
  parser.add_argument('--export_pth', default=None,
                      help='also write the final weights as an original-layout .pth')
  parser.add_argument('--no_progress', action='store_true')
  from yolact_jax.config import parse_args_with_overrides
  from yolact_jax.parallel import add_distributed_args
  add_distributed_args(parser)
  args, overrides = parse_args_with_overrides(parser, argv)
  return args, overrides


def build_sources(cfg, args):
  """(train record source, validation source or None, validation annotation file or None)."""
  from yolact_jax.data import coco, loader, synthetic
  kind = args.data or ('synthetic' if cfg.dataset.name == 'synthetic shapes' else 'coco')
  if kind == 'synthetic':
    paths = synthetic.generate_synthetic_coco(args.data_dir, num_train=args.synthetic_train,
                                              num_val=args.synthetic_val, seed=0)
    train_ann, train_dir = paths['train']
    val = paths.get('val')
  elif kind == 'coco':
    train_ann = args.ann_file or cfg.dataset.train_info
    train_dir = args.image_dir or cfg.dataset.train_images
    val = (cfg.dataset.valid_info, cfg.dataset.valid_images)
  elif kind.startswith('tfds:'):
    directory = kind[len('tfds:'):]
    train = loader.open_tfds_source(directory, 'train')
    try:
      val_source = loader.open_tfds_source(directory, 'validation', keep='with_annotations')
    except (KeyError, ValueError, FileNotFoundError) as e:
      logging.warning('no validation split in %s (%s): training without validation',
                      directory, e)
      val_source = None
    return train, val_source, None
  else:
    raise SystemExit(f"error: --data must be 'synthetic', 'coco' or 'tfds:<dir>', got {kind!r}")
  for path in (train_ann, train_dir):
    if not os.path.exists(path):
      raise SystemExit(f'error: dataset path not found: {path}')
  train_set = coco.CocoDataset(train_ann, train_dir)
  train_source = loader.InMemoryRecordSource.from_coco(train_set)
  val_source, val_ann = None, None
  if val is not None and all(os.path.exists(p) for p in val):
    val_set = coco.CocoDataset(val[0], val[1], keep='with_annotations')
    val_source, val_ann = loader.InMemoryRecordSource.from_coco(val_set), val[0]
  return train_source, val_source, val_ann


def make_eval_fn(cfg, val_source, val_ann):
  """The validation hook: COCO box/mask mAP on the validation split."""
  try:
    from yolact_jax import evaluation, tracking
  except ImportError:
    return None
  if val_source is None:
    return None

  def eval_fn(variables, step):
    del step
    return {**evaluation.evaluate_model(cfg, variables, val_source, ann_file=val_ann,
                                        progress=False),
            tracking.OVERLAYS: tracking.prediction_overlays(cfg, variables, val_source)}

  return eval_fn


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
  for noisy in ('absl', 'orbax', 'jax'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  args, overrides = parse_args(argv)
  from yolact_jax import parallel
  try:
    parallel.initialize_from_args(args)
  except parallel.DistributedError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  import jax
  from yolact_jax import trainer
  from yolact_jax.checkpoint import convert, io
  from yolact_jax.config import load_config
  from yolact_jax.data import categories
  from yolact_jax.model.variables import init_variables

  cfg = load_config(args.config, overrides)
  workdir = args.workdir or os.path.join('runs', cfg.name)
  train_source, val_source, val_ann = build_sources(cfg, args)
  cfg = categories.check_source(cfg, train_source)  # classes: the dataset's vs the config's

  def init():
    if args.init_weights:
      return io.load_weights(args.init_weights, cfg)
    variables = init_variables(cfg)
    if args.imagenet:
      return convert.load_imagenet_backbone(args.imagenet, cfg, variables)
    return variables

  options = trainer.TrainOptions(
      num_steps=args.steps, log_every=args.log_every, save_every=args.save_every,
      keep=args.keep, eval_every=args.eval_every, workers=args.workers,
      progress=not args.no_progress, init=init,
      eval_fn=None if args.no_eval else make_eval_fn(cfg, val_source, val_ann))
  summary = trainer.train(cfg, workdir, train_source, options)
  variables = trainer.state_variables(summary.pop('state'))
  if jax.process_index() != 0:
    return 0
  if args.export_pth:
    convert.save_original_weights(jax.device_get(variables), args.export_pth)
    print(f'wrote {args.export_pth}')
  out = {k: v for k, v in summary.items() if k != 'last_eval'}
  if summary.get('last_eval'):
    out['last_eval'] = {k: v for k, v in summary['last_eval'].items()
                        if isinstance(v, (int, float))}
  print(json.dumps(out, indent=1, default=float))
  if summary['stopped_by'] == 'SIGINT':
    return 130
  if summary['stopped_by'] == 'SIGTERM':
    return 143
  return 0


if __name__ == '__main__':
  sys.exit(main())
