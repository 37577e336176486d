"""What every subcommand shares: one flag style, the config (preset, file or a run's saved
config.json) with ``--config.x.y=value`` overrides, weights checks, and one-line errors.

Flags are spelled with underscores (the original's style); a dashed spelling of a known flag
(``--batch-size``) is accepted as a hidden alias, as are older names kept for scripts that use
them (:func:`add_alias`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys
from typing import Any, Callable, Sequence

RUN_CONFIG = 'config.json'  # what the trainer writes into a run directory


class UsageError(Exception):
  """A bad input the user can fix; printed as ``error: ...`` with exit status 1."""


class Parser(argparse.ArgumentParser):
  """An ArgumentParser that reads ``--some-flag`` as ``--some_flag`` when only the underscored
  spelling is defined, and keeps the module docstring's layout in ``--help``."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('formatter_class', argparse.RawDescriptionHelpFormatter)
    super().__init__(*args, **kwargs)

  def parse_known_args(self, args=None, namespace=None):
    args = sys.argv[1:] if args is None else list(args)
    return super().parse_known_args([self._underscored(a) for a in args], namespace)

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
