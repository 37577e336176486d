"""What every subcommand shares: one flag style, the config (preset, file or a run's saved
config.json) with ``--config.x.y=value`` overrides, the dataset flags (``--data`` and its paths)
and the run directory's record of them, weights checks, and one-line errors.

Flags are spelled with underscores (the original's style); a dashed spelling of a known flag
(``--batch-size``) is accepted as a hidden alias, as are older names kept for scripts that use
them (:func:`add_alias`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import pathlib
import sys
import textwrap
from typing import Any, Callable, Sequence

from yolact_jax import host_memory

RUN_CONFIG = 'config.json'  # what the trainer writes into a run directory
DATA_RECORD = 'data.json'  # what `yolact-jax train` trained on, written into the run directory


class UsageError(Exception):
  """A bad input the user can fix; printed as ``error: ...`` with exit status 1."""


class Parser(argparse.ArgumentParser):
  """An ArgumentParser that reads ``--some-flag`` as ``--some_flag`` when only the underscored
  spelling is defined, and keeps the module docstring's layout in ``--help``.

  Every command has ``--host_memory`` (:mod:`yolact_jax.host_memory`), applied as soon as the
  flags are parsed, before any JAX computation."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('formatter_class', argparse.RawDescriptionHelpFormatter)
    super().__init__(*args, **kwargs)
    self.add_argument(
        '--host_memory', choices=host_memory.MODES, default=host_memory.DEFAULT,
        help='keep: freed host memory stays in the process for the next step to reuse (glibc '
             'malloc: one arena, no mmap, no trimming; no page faults on XLA:CPU\'s per-call '
             "buffers); release: glibc's defaults (default: %(default)s)")

  def parse_known_args(self, args=None, namespace=None):
    args = sys.argv[1:] if args is None else list(args)
    parsed, rest = super().parse_known_args([self._underscored(a) for a in args], namespace)
    host_memory.apply(parsed.host_memory)
    return parsed, rest

  def _underscored(self, arg: Any) -> Any:
    if not isinstance(arg, str) or not arg.startswith('--') or '-' not in arg[2:]:
      return arg
    flag, sep, value = arg.partition('=')
    if flag in self._option_string_actions:
      return arg
    underscored = '--' + flag[2:].replace('-', '_')
    return underscored + sep + value if underscored in self._option_string_actions else arg


def add_alias(parser: argparse.ArgumentParser, alias: str, dest: str, **kwargs) -> None:
  """A hidden older spelling of a flag: same destination, not listed in ``--help``."""
  parser.add_argument(alias, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                      **kwargs)


def add_config_arg(parser: argparse.ArgumentParser, default: str | None = None) -> None:
  parser.add_argument(
      '--config', default=default,
      help='preset name or configs/<name>.py; not needed when --weights is a training run '
           f'directory (its {RUN_CONFIG} is read back)'
           + (f' (default: {default})' if default else ''))


def parse_with_overrides(parser: argparse.ArgumentParser, argv: Sequence[str] | None
                         ) -> tuple[argparse.Namespace, list[str]]:
  """Known flags plus ``--config.x.y=value`` overrides; anything else is a usage error."""
  from yolact_jax.config import parse_args_with_overrides
  return parse_args_with_overrides(parser, argv)


def run_config_path(weights: str | os.PathLike | None) -> pathlib.Path | None:
  """``<weights>/config.json`` when ``weights`` is a training run directory that has one."""
  if not weights:
    return None
  path = pathlib.Path(weights) / RUN_CONFIG
  return path if path.is_file() else None


def resolve_config(config: str | None, overrides: Sequence[str], weights: Any = None):
  """The config of a command: ``--config`` (a preset or a file), else the ``config.json`` of the
  run directory ``weights``, with the overrides applied on top (validated either way)."""
  from yolact_jax.config import ConfigError, apply_overrides, config_from_dict, load_config
  saved = run_config_path(weights)
  if config:
    if saved is not None:
      print(f'note: --config {config} replaces the config saved in {saved}', file=sys.stderr)
    try:
      return load_config(config, overrides)
    except KeyError as e:  # an unknown preset: the message is the first argument
      raise UsageError(e.args[0] if e.args else str(e)) from None
  if saved is None:
    where = f' ({weights} has no {RUN_CONFIG})' if weights else ''
    raise UsageError(f'--config is needed: a preset name or configs/<name>.py{where}')
  try:
    data = json.loads(saved.read_text())
  except (OSError, ValueError) as e:
    raise UsageError(f'cannot read {saved}: {e}') from None
  try:
    return apply_overrides(config_from_dict(data), overrides)
  except ConfigError as e:
    raise ConfigError(f'{saved}: {e}') from None


def config_for_weights(args: argparse.Namespace, overrides: Sequence[str]):
  """A command's weights checked (:func:`check_weights`), then its config resolved
  (:func:`resolve_config`, the run directory's saved config when there is no --config)."""
  check_weights(args.weights)
  return resolve_config(args.config, overrides, args.weights)


def check_weights(path: str | os.PathLike | None, flag: str = '--weights') -> None:
  """A clear error for weights that are missing or unreadable, before anything is built."""
  if path is None:
    return
  if not os.path.exists(path):
    raise UsageError(f'weights not found: {path} ({flag})')
  if not os.access(path, os.R_OK) or (os.path.isfile(path) and not _readable(path)):
    raise UsageError(f'weights not readable: {path} ({flag})')


def _readable(path: str | os.PathLike) -> bool:
  try:
    with open(path, 'rb') as f:
      f.read(1)
    return True
  except OSError:
    return False


def known_errors() -> tuple[type[BaseException], ...]:
  """The exception types that mean a bad input or a failed run: one line, exit status 1.
  (ValueError covers the project's ClassMismatchError, LabelError and CheckpointError; OSError a
  full disk or a lost mount, FileNotFoundError and PermissionError; set YOLACT_JAX_TRACEBACK=1 to
  see the traceback of any of them.)"""
  from yolact_jax.checkpoint.convert import CheckpointError
  from yolact_jax.config import ConfigError
  from yolact_jax.data.coco import CocoFormatError
  from yolact_jax.evaluation import ResultsError
  from yolact_jax.parallel import DistributedError
  from yolact_jax.tracking import TrackingError
  return (UsageError, ConfigError, CheckpointError, CocoFormatError, ResultsError,
          DistributedError, TrackingError, OSError, ValueError, ImportError)


def one_line(error: BaseException) -> str:
  """The error's message on one line: a multi-line one (a heading and its list of problems) as
  its heading, the first problem and how many more there are."""
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(error).__name__]
  if len(lines) == 1:
    return lines[0]
  more = len(lines) - 2
  return f'{lines[0]} {lines[1]}' + (
      f' (+{more} more; YOLACT_JAX_TRACEBACK=1 shows all)' if more else '')


def cli_errors(main: Callable[..., Any]) -> Callable[..., Any]:
  """Turns a bad input (:func:`known_errors`) into ``error: <one line>`` on stderr and exit
  status 1. ``YOLACT_JAX_TRACEBACK=1`` re-raises instead (for debugging)."""

  @functools.wraps(main)
  def wrapper(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except UsageError as e:
      print(f'error: {one_line(e)}', file=sys.stderr)
      return 1
    except Exception as e:  # noqa: BLE001 - filtered against known_errors() below
      if os.environ.get('YOLACT_JAX_TRACEBACK') or not isinstance(e, known_errors()):
        raise
      print(f'error: {one_line(e)}', file=sys.stderr)
      return 1

  return wrapper


def quiet_tensorflow() -> None:
  """TFDS may pull in TensorFlow's C++ logging; keep it to errors."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def str2bool(text: str) -> bool:
  """The original's ``str2bool``: yes/true/t/y/1 and no/false/f/n/0."""
  value = str(text).lower()
  if value in ('yes', 'true', 't', 'y', '1'):
    return True
  if value in ('no', 'false', 'f', 'n', '0'):
    return False
  raise argparse.ArgumentTypeError(f'expected a boolean, got {text!r}')


# ---------------------------------------------------------------------------------------------
# The dataset: one set of flags in every command that reads one (train, evaluate), and the run
# directory's record of what a run trained on

DATA_KINDS = ('synthetic', 'coco', 'tfds')
SPLITS = ('train', 'val')
TFDS_SPLITS = {'train': 'train', 'val': 'validation'}  # their names in a prepared TFDS dataset
DEFAULT_SYNTHETIC_DIR = os.path.join('data', 'synthetic')
SYNTHETIC_IMAGES = {'train': 600, 'val': 60}  # images per split when the synthetic set is made
SYNTHETIC_DATASET_NAME = 'synthetic shapes'  # cfg.dataset.name of the synthetic-class presets
DATA_FLAGS = ('data', 'data_dir', 'ann_file', 'image_dir')  # the flags that name a dataset


@dataclasses.dataclass(frozen=True)
class DataSelection:
  """A dataset as the data flags name it (:func:`resolve_data`) and a run directory records it
  (:func:`write_data_record`, :func:`read_data_record`).

  ``kind``: 'synthetic' (the built-in shapes), 'coco' (a COCO-format annotation file and image
  folder per split) or 'tfds' (a dataset prepared by ``scripts/prepare_tfds.py``).
  ``data_dir``: the synthetic dataset's folder, or the prepared TFDS dataset's version directory.
  ``train`` / ``val``: (annotation file, image folder) of each split of a 'coco' dataset (None:
  not named). ``synthetic_train`` / ``synthetic_val``: images per split of the synthetic set (it
  is generated with these counts when absent; a split of 0 images is not made).
  """
  kind: str
  data_dir: str | None = None
  train: tuple[str, str] | None = None
  val: tuple[str, str] | None = None
  synthetic_train: int = SYNTHETIC_IMAGES['train']
  synthetic_val: int = SYNTHETIC_IMAGES['val']

  def files(self, split: str) -> tuple[str, str] | None:
    """(annotation file, image folder) of ``split`` ('train' or 'val'); None for a TFDS dataset
    and for a split the dataset does not have."""
    if self.kind == 'synthetic':
      from yolact_jax.data.synthetic import dataset_paths
      count = self.synthetic_train if split == 'train' else self.synthetic_val
      return dataset_paths(self.data_dir, split) if count else None
    return (self.train if split == 'train' else self.val) if self.kind == 'coco' else None

  def describe(self) -> str:
    """How messages name it: 'synthetic data/synthetic', 'coco a.json', 'tfds DIR'."""
    if self.kind == 'coco':
      named = self.val or self.train
      return f'coco {named[0]}' if named else 'coco (no annotation file named)'
    return f'{self.kind} {self.data_dir}'


class _RetiredDataFlag(argparse.Action):
  """An older spelling of a data flag, hidden and kept for one release: it sets what its new
  spelling sets (``--data KIND`` too when it named the kind) and says the new spelling."""

  def __init__(self, option_strings, dest, new: str, kind: str | None = None, **kwargs):
    super().__init__(option_strings, dest, **kwargs)
    self.new, self.kind = new, kind

  def __call__(self, parser, namespace, values, option_string=None):
    if self.kind:
      namespace.data = self.kind
    setattr(namespace, self.dest, values)
    retired_spelling(option_string, self.new)


def retired_spelling(old: str, new: str) -> None:
  print(f'note: {old} is spelled {new} now (the old spelling goes in the next release)',
        file=sys.stderr)


def _data_kind(text: str) -> str:
  if text in DATA_KINDS or (text.startswith('tfds:') and len(text) > len('tfds:')):
    return text
  raise argparse.ArgumentTypeError(f'expected {", ".join(DATA_KINDS)}, got {text!r}')


def _image_count(text: str) -> int:
  value = int(text)
  if value < 0:
    raise argparse.ArgumentTypeError(f'expected a number of images >= 0, got {text!r}')
  return value


def add_data_args(parser: argparse.ArgumentParser, split: str) -> argparse._ArgumentGroup:
  """The dataset flags, spelled the same in every command that reads a dataset: ``--data
  {synthetic,coco,tfds}``, ``--data_dir``, ``--ann_file``, ``--image_dir``, ``--synthetic_train``,
  ``--synthetic_val``; read them back with :func:`resolve_data`.

  ``split``: 'train' (train: ``--ann_file`` / ``--image_dir`` name the training split, validation
  is the same dataset's val split) or 'eval' (evaluate: they name the split it scores, chosen by
  ``--split``; evaluate's older spellings are hidden aliases). Returns the group (a command adds
  its own dataset flags to it)."""
  evaluating = split == 'eval'
  recorded = 'the run directory --weights' if evaluating else 'the run in --workdir'
  which = 'the split evaluated' if evaluating else 'the training split'
  group = parser.add_argument_group(
      'dataset (the same flags in train and evaluate)', textwrap.fill(
          f'With none of --data, --data_dir, --ann_file, --image_dir: the dataset {recorded} '
          f'trained on (its {DATA_RECORD}), else the synthetic set in '
          f'{DEFAULT_SYNTHETIC_DIR} for the synthetic-class presets, else the config\'s dataset '
          'paths (COCO 2017).', 76))
  group.add_argument('--data', type=_data_kind, default=None, metavar='{synthetic,coco,tfds}',
                     help='synthetic: the built-in shapes in --data_dir (generated if absent); '
                          'coco: a COCO-format dataset (--ann_file, --image_dir; default the '
                          'config\'s dataset paths); tfds: a dataset prepared by '
                          'scripts/prepare_tfds.py in --data_dir')
  group.add_argument('--data_dir', default=None, metavar='DIR',
                     help=f'synthetic: its folder (default {DEFAULT_SYNTHETIC_DIR}); tfds: the '
                          'prepared dataset\'s version directory (e.g. '
                          'data/tfds/coco_format_instances/coco2017/1.0.0)')
  group.add_argument('--ann_file', default=None,
                     help=f'coco: the instances json of {which} (default: the config\'s '
                          + ('dataset.valid_info, train_info with --split train)' if evaluating
                             else 'dataset.train_info; validation: dataset.valid_info)'))
  group.add_argument('--image_dir', default=None,
                     help='coco: its image folder (default: the config\'s '
                          + ('dataset.valid_images)' if evaluating else 'dataset.train_images)'))
  group.add_argument('--synthetic_train', type=_image_count, default=None, metavar='N',
                     help=f'synthetic: train images (default {SYNTHETIC_IMAGES["train"]})')
  group.add_argument('--synthetic_val', type=_image_count, default=None, metavar='N',
                     help=f'synthetic: val images (default {SYNTHETIC_IMAGES["val"]})')
  if evaluating:
    group.add_argument('--split', default='val',
                       help="the split evaluated: val (default) or train; of a tfds dataset any "
                            "split it has ('val' is its 'validation')")
    for old, new, kind, dest in (
        ('--synthetic', '--data synthetic --data_dir DIR', 'synthetic', 'data_dir'),
        ('--tfds_dir', '--data tfds --data_dir DIR', 'tfds', 'data_dir'),
        ('--tfds_split', '--split', None, 'split'),
        ('--synthetic_num_val', '--synthetic_val', None, 'synthetic_val')):
      add_alias(group, old, dest, action=_RetiredDataFlag, new=new, kind=kind,
                type=_image_count if dest == 'synthetic_val' else None)
  return group


def data_flags_given(args: argparse.Namespace) -> bool:
  """Whether the command line names a dataset (any of --data, --data_dir, --ann_file,
  --image_dir or their older spellings)."""
  return any(getattr(args, name, None) is not None for name in DATA_FLAGS)


def default_data_kind(cfg: Any, split: str) -> str:
  """'synthetic' for a synthetic-class preset whose config names no files for ``split``, else
  'coco' (the config's dataset paths)."""
  info = cfg.dataset.train_info if split == 'train' else cfg.dataset.valid_info
  return 'synthetic' if cfg.dataset.name == SYNTHETIC_DATASET_NAME and not info else 'coco'


def resolve_data(args: argparse.Namespace, cfg: Any, split: str,
                 record: DataSelection | None = None) -> DataSelection:
  """The dataset the flags of :func:`add_data_args` name.

  With none of --data, --data_dir, --ann_file, --image_dir it is ``record`` (what the run
  directory trained on: :func:`read_data_record`) when there is one, else the config's
  (:func:`default_data_kind`); --synthetic_train / --synthetic_val apply either way. ``split``:
  the split --ann_file / --image_dir name ('train' or 'val'; any TFDS split name for a tfds
  dataset). A combination that does not name one dataset is a UsageError naming the flags."""
  sizes = {name: getattr(args, name) for name in ('synthetic_train', 'synthetic_val')
           if getattr(args, name, None) is not None}
  kind, data_dir = args.data, args.data_dir
  if kind is not None and kind.startswith('tfds:'):  # the older spelling --data tfds:DIR
    retired_spelling('--data tfds:DIR', '--data tfds --data_dir DIR')
    if data_dir is not None and data_dir != kind[len('tfds:'):]:
      raise UsageError(f'--data {kind} and --data_dir {data_dir} name two datasets')
    kind, data_dir = 'tfds', kind[len('tfds:'):]
  coco_files = args.ann_file is not None or args.image_dir is not None
  if not data_flags_given(args) and record is not None:
    chosen = dataclasses.replace(record, **sizes)
  else:
    kind = kind or ('coco' if coco_files else default_data_kind(cfg, split))
    if kind != 'coco' and coco_files:
      raise UsageError(f'--ann_file and --image_dir name a COCO-format dataset, not --data '
                       f'{kind} (use --data coco, or leave them out)')
    if kind == 'coco' and data_dir is not None:
      raise UsageError(f'--data_dir {data_dir} is the folder of a synthetic or tfds dataset: a '
                       'COCO-format one is named by --ann_file and --image_dir')
    if kind == 'tfds' and not data_dir:
      raise UsageError('--data tfds needs --data_dir: the dataset prepared by '
                       'scripts/prepare_tfds.py (its version directory, e.g. '
                       'data/tfds/coco_format_instances/coco2017/1.0.0)')
    if kind == 'coco':
      chosen = DataSelection('coco', **_coco_files(args, cfg, split), **sizes)
    else:
      chosen = DataSelection(kind, data_dir or DEFAULT_SYNTHETIC_DIR, **sizes)
  if chosen.kind != 'tfds' and split not in SPLITS:
    raise UsageError(f'--split {split}: a {chosen.kind} dataset has the splits '
                     f'{" and ".join(SPLITS)}')
  return chosen


def _coco_files(args: argparse.Namespace, cfg: Any, split: str) -> dict[str, Any]:
  """{'train': (annotation file, image folder) or None, 'val': ...}: --ann_file / --image_dir
  for ``split``, the config's dataset paths for the rest."""
  d = cfg.dataset
  files = {'train': (d.train_info, d.train_images), 'val': (d.valid_info, d.valid_images)}
  if split in files:
    ann_file, image_dir = args.ann_file or files[split][0], args.image_dir or files[split][1]
    if args.ann_file and not image_dir:
      raise UsageError(f'--image_dir is needed with --ann_file {args.ann_file}')
    if args.image_dir and not ann_file:
      raise UsageError(f'--ann_file is needed with --image_dir {args.image_dir}')
    files[split] = (ann_file, image_dir)
  return {name: pair if all(pair) else None for name, pair in files.items()}


def split_files(data: DataSelection, split: str) -> tuple[str, str]:
  """(annotation file, image folder) of ``split`` of a synthetic or coco dataset, or a
  UsageError saying how to name one."""
  files = data.files(split)
  if files is None:
    how = (f'--synthetic_{split} is 0' if data.kind == 'synthetic' else
           'pass --ann_file and --image_dir, or --data synthetic, or --data tfds --data_dir DIR')
    raise UsageError(f'no {split} split in {data.describe()} ({how})')
  return files


def chosen_split(args: argparse.Namespace) -> str:
  """The split ``--split`` names ('val', 'train', or a TFDS split; 'validation' is 'val')."""
  return 'val' if args.split == 'validation' else args.split


def tfds_split_name(split: str) -> str:
  """A split's name in a prepared TFDS dataset ('val' is 'validation')."""
  return TFDS_SPLITS.get(split, split)


def write_data_record(run_dir: str | os.PathLike, data: DataSelection) -> pathlib.Path:
  """Writes ``<run_dir>/data.json``: the dataset a run trains on, its paths absolute (evaluate's
  default for that run directory: :func:`read_data_record`)."""
  def absolute(path: str | None) -> str | None:
    return os.path.abspath(path) if path else path

  record = dataclasses.asdict(data)
  record['data_dir'] = absolute(data.data_dir)
  for split in SPLITS:
    files = getattr(data, split)
    record[split] = [absolute(p) for p in files] if files else None
  path = pathlib.Path(run_dir) / DATA_RECORD
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(path.name + '.partial')
  partial.write_text(json.dumps(record, indent=1) + '\n')
  os.replace(partial, path)
  return path


def data_record_path(run_dir: str | os.PathLike | None) -> pathlib.Path | None:
  """``<run_dir>/data.json`` when ``run_dir`` is a run directory that has one."""
  if not run_dir:
    return None
  path = pathlib.Path(run_dir) / DATA_RECORD
  return path if path.is_file() else None


def read_data_record(run_dir: str | os.PathLike | None) -> DataSelection | None:
  """The dataset a training run recorded (:func:`write_data_record`), or None when ``run_dir``
  has no record (not a run directory, or a run made without ``yolact-jax train``)."""
  path = data_record_path(run_dir)
  if path is None:
    return None
  try:
    record = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise UsageError(f'cannot read {path}: {e}') from None
  try:
    if record['kind'] not in DATA_KINDS:
      raise ValueError(f'kind {record["kind"]!r} is not one of {", ".join(DATA_KINDS)}')
    pairs = {split: tuple(map(str, record[split])) if record.get(split) else None
             for split in SPLITS}
    if any(pair is not None and len(pair) != 2 for pair in pairs.values()):
      raise ValueError('a split is not [annotation file, image folder]')
    return DataSelection(
        kind=record['kind'], data_dir=record.get('data_dir'), **pairs,
        **{name: int(record.get(name, SYNTHETIC_IMAGES[split]))
           for name, split in (('synthetic_train', 'train'), ('synthetic_val', 'val'))})
  except (KeyError, TypeError, ValueError) as e:
    raise UsageError(f'{path} is not a dataset record: {type(e).__name__} {e}') from None


# ---------------------------------------------------------------------------------------------
# The original eval.py's flags (evaluate and predict)


def add_original_eval_flags(parser: argparse.ArgumentParser) -> None:
  """The original eval.py spellings its users type: ``--trained_model`` (= ``--weights``) and
  ``--fast_nms`` / ``--cross_class_nms`` (booleans that pick ``--nms``)."""
  add_alias(parser, '--trained_model', 'weights')
  group = parser.add_argument_group("the original eval.py's NMS flags (they set --nms)")
  group.add_argument('--fast_nms', nargs='?', const=True, default=None, type=str2bool,
                     metavar='BOOL', help='true: fast NMS (default); false: standard NMS')
  group.add_argument('--cross_class_nms', nargs='?', const=True, default=None, type=str2bool,
                     metavar='BOOL', help='with fast NMS: one NMS across the classes')


def nms_choice(args: argparse.Namespace) -> str | None:
  """``--nms``, or the variant the original's ``--fast_nms`` / ``--cross_class_nms`` name."""
  if args.fast_nms is None and args.cross_class_nms is None:
    return args.nms
  if args.nms:
    raise UsageError('use either --nms or --fast_nms/--cross_class_nms')
  if args.fast_nms is False:
    return 'standard'
  return 'cross_class' if args.cross_class_nms else 'fast'
