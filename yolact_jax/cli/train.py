"""``yolact-jax train``: train YOLACT (resumes from the newest checkpoint in --workdir).

  # the CPU demo model on the built-in synthetic dataset (generated on first use)
  yolact-jax train --config yolact_cpu --workdir runs/demo
  # COCO 2017 (cfg.dataset paths, or --ann_file/--image_dir) from the ImageNet backbone
  yolact-jax train --config yolact_base --workdir runs/base --data coco \\
      --imagenet weights/resnet101_reducedfc.pth
  # a TFDS dataset prepared with scripts/prepare_tfds.py
  yolact-jax train --config yolact_resnet50 --data tfds \\
      --data_dir data/tfds/coco_format_instances/coco2017/1.0.0

The dataset flags are the same in ``yolact-jax evaluate``. The run directory records the dataset
(``data.json``): evaluating the run, or resuming it, without dataset flags reads that one.

The COCO presets start from the ImageNet backbone file their config names
(``model.backbone.pretrained_weights``): ``--imagenet`` (the file or its folder), else
``weights/<file>`` as the original; without it the run stops with an error unless ``--from_scratch`` asks for random
weights (the synthetic presets train from scratch by default). Resuming needs neither.

Any config field can be overridden: --config.train.lr=5e-4 (--batch_size N is train.batch_size).
Ctrl-C or SIGTERM saves a checkpoint and exits; running the same command again resumes.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any, Callable

from yolact_jax.cli import common
from yolact_jax.cli.common import UsageError

DEFAULT_CONFIG = 'yolact_cpu'
ORIGINAL_WEIGHTS_DIR = 'weights'  # where the original's train.py looks for the backbone file


def build_parser():
  parser = common.Parser(prog='yolact-jax train', description=__doc__)
  parser.add_argument('--config', default=None,
                      help=f'preset name or configs/<name>.py (default: the config.json of an '
                           f'existing --workdir, else {DEFAULT_CONFIG})')
  parser.add_argument('--workdir', default=None, help='run directory (default runs/<config>)')
  parser.add_argument('--batch_size', type=int, default=None,
                      help='images per step over all devices (train.batch_size)')
  common.add_data_args(parser, 'train')
  parser.add_argument('--steps', type=int, default=None,
                      help='stop after this many iterations (default: the schedule max_iter)')
  start = parser.add_argument_group('starting weights of a new run')
  start.add_argument('--imagenet', default=None,
                     help='ImageNet backbone .pth (resnet101_reducedfc.pth, '
                          'resnet50-19c8e357.pth, darknet53.pth) or a folder holding the one '
                          f'the preset names (default: {ORIGINAL_WEIGHTS_DIR}/<that file>)')
  start.add_argument('--weights', default=None,
                     help='start from these weights (.pth, Flax directory or run directory)')
  common.add_alias(start, '--init_weights', 'weights')
  start.add_argument('--from_scratch', action='store_true',
                     help='train from random weights even though the preset names an ImageNet '
                          'backbone (with frozen BatchNorm this rarely converges)')
  parser.add_argument('--eval_every', type=int, default=0,
                      help='validate every N steps (0: at the end only); needs a val split')
  parser.add_argument('--no_eval', action='store_true', help='skip validation')
  parser.add_argument('--save_every', type=int, default=500)
  parser.add_argument('--keep', type=int, default=3, help='newest checkpoints to keep')
  parser.add_argument('--log_every', type=int, default=10)
  parser.add_argument('--workers', type=int, default=0, help='grain worker processes')
  parser.add_argument('--wandb', action='store_true', help='also log to Weights & Biases')
  parser.add_argument('--profile_steps', default=None, metavar='A:B',
                      help='write a JAX profiler trace of steps A..B into the run directory')
  parser.add_argument('--export_pth', default=None,
                      help='also write the final weights as an original-layout .pth')
  parser.add_argument('--no_progress', action='store_true')
  from yolact_jax.parallel import add_distributed_args
  add_distributed_args(parser)
  return parser


def parse_args(argv=None):
  parser = build_parser()
  args, overrides = common.parse_with_overrides(parser, argv)
  if args.batch_size is not None:
    if args.batch_size < 1:
      parser.error(f'--batch_size must be >= 1, got {args.batch_size}')
    overrides.insert(0, f'--config.train.batch_size={args.batch_size}')
  if args.profile_steps is not None:
    first, _, last = args.profile_steps.partition(':')
    if not (first.isdigit() and last.isdigit() and int(first) < int(last)):
      parser.error(f'--profile_steps must be A:B with A < B, got {args.profile_steps!r}')
    args.profile_steps = (int(first), int(last))
  return args, overrides


def train_config(args, overrides):
  """``--config``, else the config.json of an existing --workdir, else the default preset."""
  if args.config is None and args.workdir and common.run_config_path(args.workdir):
    return common.resolve_config(None, overrides, args.workdir)
  return common.resolve_config(args.config or DEFAULT_CONFIG, overrides)


def has_checkpoint(workdir: str) -> bool:
  """Whether ``workdir`` holds a checkpoint to resume from (``checkpoints/<step>/``)."""
  directory = pathlib.Path(workdir) / 'checkpoints'
  return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def imagenet_file(args, cfg, resuming: bool) -> str | None:
  """The ImageNet backbone file a new run starts from (None: random weights, or not needed).

  Raises UsageError when the preset names one and it is nowhere to be found, unless
  --from_scratch, --weights or a checkpoint to resume from makes it unnecessary."""
  expected = cfg.model.backbone.pretrained_weights
  if args.imagenet:
    common.check_weights(args.imagenet, '--imagenet')
    if os.path.isdir(args.imagenet):
      if not expected:
        raise UsageError(f'--imagenet {args.imagenet} is a folder and {cfg.name} names no '
                         'ImageNet file (model.backbone.pretrained_weights is empty): pass the '
                         'file')
      common.check_weights(os.path.join(args.imagenet, expected), '--imagenet')
    return args.imagenet
  if resuming or args.weights or args.from_scratch or not expected:
    return None
  default = os.path.join(ORIGINAL_WEIGHTS_DIR, expected)
  if os.path.isfile(default):
    logging.info('ImageNet backbone: %s', default)
    return default
  raise UsageError(f'{cfg.name} trains from the ImageNet backbone {expected} '
                   f'(model.backbone.pretrained_weights), not found in {ORIGINAL_WEIGHTS_DIR}/: '
                   'pass --imagenet PATH (the file or its folder), or --from_scratch to train from '
                   'random weights')


def build_sources(data: common.DataSelection, validate: bool = True):
  """(train record source, validation source or None, validation annotation file or None) of
  the dataset ``data`` (:func:`common.resolve_data`; the synthetic one is generated if absent).
  ``validate=False`` (--no_eval): no validation source is read."""
  from yolact_jax.data import coco, loader, synthetic
  if data.kind == 'tfds':
    return tfds_sources(data.data_dir, validate)
  if data.kind == 'synthetic':
    if data.synthetic_train < 1:
      raise UsageError('--synthetic_train must be >= 1 to train')
    synthetic.generate_synthetic_coco(data.data_dir, num_train=data.synthetic_train,
                                      num_val=data.synthetic_val, seed=0)
  train_ann, train_dir = common.split_files(data, 'train')
  for path in (train_ann, train_dir):
    if not os.path.exists(path):
      raise UsageError(f'dataset path not found: {path}')
  train_set = coco.CocoDataset(train_ann, train_dir)
  train_source = loader.InMemoryRecordSource.from_coco(train_set)
  if not validate:
    return train_source, None, None
  val = data.files('val')
  if val is None:
    logging.warning('%s has no val split: training without validation', data.describe())
    return train_source, None, None
  missing = [p for p in val if not os.path.exists(p)]
  if missing:
    logging.warning('validation set not found (%s): training without validation',
                    ', '.join(missing))
    return train_source, None, None
  val_set = coco.CocoDataset(val[0], val[1], keep='with_annotations')
  return train_source, loader.InMemoryRecordSource.from_coco(val_set), val[0]


def tfds_sources(directory: str, validate: bool = True):
  from yolact_jax.data import loader
  train = loader.open_tfds_source(directory, common.tfds_split_name('train'))
  if not validate:
    return train, None, None
  try:
    val_source = loader.open_tfds_source(directory, common.tfds_split_name('val'),
                                         keep='with_annotations')
  except (KeyError, ValueError, FileNotFoundError) as e:
    logging.warning('no validation split in %s (%s): training without validation', directory, e)
    val_source = None
  return train, val_source, None


def make_eval_fn(cfg, val_source, val_ann):
  """The validation hook: COCO box/mask mAP on the validation split (None without one)."""
  if val_source is None:
    return None
  try:
    from yolact_jax import evaluation, tracking
  except ImportError as e:  # a missing dependency of validation: say which, do not skip it
    what = f'the module {e.name!r}' if e.name else 'a module'
    raise UsageError(f'validation needs {what}, which cannot be imported ({e}): install it, '
                     'or pass --no_eval to train without validation') from e

  def eval_fn(variables, step):
    del step
    return {**evaluation.evaluate_model(cfg, variables, val_source, ann_file=val_ann,
                                        progress=False),
            tracking.OVERLAYS: tracking.prediction_overlays(cfg, variables, val_source)}

  return eval_fn


def naming_the_file(read: Callable[[], Any], flag: str, path: str) -> Any:
  """``read()``, whose CheckpointError names the file it read (``FLAG PATH: ...``) if it does not
  already."""
  from yolact_jax.checkpoint.convert import CheckpointError
  try:
    return read()
  except CheckpointError as e:
    if str(path) in str(e):
      raise
    raise CheckpointError(f'{flag} {path}: {e}') from e


def starting_weights(args, cfg, imagenet: str | None, resuming: bool) -> Callable[[], Any]:
  """The trainer's ``init``: the variables a new run starts from (--weights, else random with
  the ImageNet backbone ``imagenet`` when given). A new run reads and checks them now, before the
  trainer makes the run directory, so that bad weights leave nothing behind; a resumed run reads
  them only if the trainer asks (no readable checkpoint after all)."""
  from yolact_jax.checkpoint import convert, io
  from yolact_jax.model.variables import init_variables

  def load():
    if args.weights:
      return naming_the_file(lambda: io.load_weights(args.weights, cfg), '--weights',
                             args.weights)
    variables = init_variables(cfg)
    if not imagenet:
      return variables
    return naming_the_file(lambda: convert.load_imagenet_backbone(imagenet, cfg, variables),
                           '--imagenet', imagenet)

  if resuming:
    return load
  loaded = [load()]  # handed over once, not kept alive for the whole run
  return lambda: loaded.pop() if loaded else load()


def train_options(args, init, eval_fn):
  """TrainOptions from the flags."""
  from yolact_jax import trainer
  kwargs = dict(num_steps=args.steps, log_every=args.log_every, save_every=args.save_every,
                keep=args.keep, eval_every=args.eval_every, workers=args.workers,
                progress=not args.no_progress, init=init, eval_fn=eval_fn)
  return trainer.TrainOptions(**kwargs, wandb=args.wandb, profile_steps=args.profile_steps,
                              classes_checked=True)  # main() ran categories.check_source


def record_data(workdir: str, data: common.DataSelection) -> None:
  """The run directory's ``data.json`` (process 0): what the run trains on, which evaluate and a
  resumed train read when no dataset flag is given."""
  import jax
  if jax.process_index() == 0:
    common.write_data_record(workdir, data)


def report(summary, variables, cfg, args) -> int:
  """Prints the run's summary (process 0), writes --export_pth; the exit status."""
  import jax

  from yolact_jax.checkpoint import convert
  if jax.process_index() != 0:
    return 0
  if args.export_pth:
    convert.save_pth_weights(jax.device_get(variables), args.export_pth, cfg)
    print(f'wrote {args.export_pth}')
  out = {k: v for k, v in summary.items() if k != 'last_eval'}
  if summary.get('last_eval'):
    out['last_eval'] = {k: v for k, v in summary['last_eval'].items()
                        if isinstance(v, (int, float))}
  print(json.dumps(out, indent=1, default=float))
  return {'SIGINT': 130, 'SIGTERM': 143}.get(summary['stopped_by'], 0)


@common.cli_errors
def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
  for noisy in ('absl', 'orbax', 'jax'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  args, overrides = parse_args(argv)
  cfg = train_config(args, overrides)
  workdir = args.workdir or os.path.join('runs', cfg.name)
  common.check_weights(args.weights, '--weights')
  resuming = has_checkpoint(workdir)
  imagenet = imagenet_file(args, cfg, resuming)  # before the run directory
  data = common.resolve_data(args, cfg, 'train', common.read_data_record(workdir))
  from yolact_jax import parallel
  parallel.initialize_from_args(args)
  from yolact_jax import trainer
  from yolact_jax.data import categories
  train_source, val_source, val_ann = build_sources(data, validate=not args.no_eval)
  # the classes, the dataset's against the config's, checked once: here, so that the starting
  # weights and the validation hook are built from the config the trainer trains
  cfg = categories.check_source(cfg, train_source)
  init = starting_weights(args, cfg, imagenet, resuming)
  options = train_options(args, init,
                          None if args.no_eval else make_eval_fn(cfg, val_source, val_ann))
  record_data(workdir, data)
  try:
    summary = trainer.train(cfg, workdir, train_source, options)
  except trainer.TrainingDiverged as e:  # the data or the learning rate: the user's to fix
    raise UsageError(str(e)) from e
  variables = trainer.state_variables(summary.pop('state'))
  return report(summary, variables, cfg, args)
