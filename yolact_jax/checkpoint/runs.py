"""Training-run directories on disk: the orbax CheckpointManager the trainer writes through, and
reading a run's weights back (for prediction, evaluation, export) without the training code.

A run directory holds ``checkpoints/<step>/`` with two items per step: ``state`` (the whole
``TrainState`` pytree: step, params, batch_stats, opt_state, rng, num_skipped) and ``data`` (the
data position, JSON: ``yolact_jax.data.loader.DataPosition``). The newest ``keep`` steps are
kept, plus the one with the best validation mask mAP.

Resuming reads the newest *readable* step (:func:`restore_newest_readable`: a newer unreadable
one is set aside as ``<step>.unreadable``, with a one-line warning). A failed save is one
``CheckpointError`` naming the step and the newest intact one (:func:`save_error`). Checkpoints
carry no topology: readers restore onto the devices of the reading process (:func:`host_target`,
or the trainer's shardings), whatever number of devices or processes wrote them.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import pathlib
import re
import shutil
import sys
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from yolact_jax.checkpoint.convert import CheckpointError
from yolact_jax.config import YolactConfig
from yolact_jax.model.variables import abstract_variables

log = logging.getLogger(__name__)

CHECKPOINTS = 'checkpoints'  # sub-directory of a run directory
UNREADABLE = '.unreadable'  # suffix of a step directory set aside because it cannot be read


def checkpoint_manager(directory: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
  """The manager of a run's ``checkpoints/``: newest ``keep`` plus the best ``mask_map``."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(keep),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m['mask_map'], n=1,
                                keep_checkpoints_without_metrics=False)])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                         enable_async_checkpointing=False,
                                         cleanup_tmp_directories=True)
  silence_closed_event_loops()
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


TMP_MARK = '.orbax-checkpoint-tmp'  # orbax's suffix of a step directory still being written


def _closed_loop(error: BaseException | None) -> bool:
  return isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'


def silence_closed_event_loops() -> None:
  """After a failed save or restore, TensorStore's threads go on completing orbax's futures on
  an event loop that has closed, and each prints a traceback ('Event loop is closed', hundreds on
  a full disk) that says nothing the one-line error does not. Drops exactly those (installed once
  per process; every other exception is printed as before)."""
  if getattr(sys.excepthook, 'drops_closed_loops', False):
    return
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def filtered_excepthook(kind, value, traceback):
    if not _closed_loop(value):
      excepthook(kind, value, traceback)

  def filtered_unraisablehook(unraisable):
    if not _closed_loop(unraisable.exc_value):
      unraisablehook(unraisable)

  filtered_excepthook.drops_closed_loops = True
  sys.excepthook, sys.unraisablehook = filtered_excepthook, filtered_unraisablehook


def remove_partial_saves(directory: str | os.PathLike, step: int) -> None:
  """Deletes the temporary folders an interrupted or failed save of ``step`` left behind
  (``<step>.orbax-checkpoint-tmp``; the trainer calls it when a save fails). Those a killed
  process left are removed when the manager next opens the directory."""
  for path in pathlib.Path(directory).glob(f'{step}{TMP_MARK}*'):
    shutil.rmtree(path, ignore_errors=True)


def _os_error(error: BaseException) -> OSError | None:
  """The OSError behind ``error`` (orbax and TensorStore wrap them), if any."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno is not None:
      return error
    error = error.__cause__ or error.__context__
  return None


def save_error(error: BaseException, directory: str | os.PathLike, step: int,
               intact: int | None) -> 'CheckpointError':
  """The one-line ``CheckpointError`` for a failed save of ``step`` (a full disk, a lost mount;
  newest intact: ``intact``)."""
  os_error = _os_error(error)
  text = str(error)
  if (os_error is not None and os_error.errno == errno.ENOSPC) or 'No space left' in text:
    why = 'no space left on device'
  elif os_error is not None:
    why = os.strerror(os_error.errno).lower()
  else:
    why = first_line(error)
  kept = (f'checkpoint {intact} is intact' if intact is not None
          else 'no earlier checkpoint exists')
  return CheckpointError(f'{why} while saving checkpoint {step} in {directory}; {kept}')


def host_target(metadata: Any) -> Any:
  """A restore target of host numpy arrays shaped as ``metadata`` (a checkpoint's array
  metadata, or ``jax.ShapeDtypeStruct`` leaves): restoring into it ignores the topology that
  wrote the checkpoint. (``np.zeros`` pages are only touched when orbax writes into them.)"""
  return jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), metadata)


def first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else ''
  text = text if len(text) <= 200 else text[:197] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


@contextlib.contextmanager
def quiet(*names: str, collect: bool = False):
  """Silences the named loggers below CRITICAL for the block (``collect``: then collects garbage
  while they are silent).

  Used for orbax's advice on the read-only manager and the items a reader does not restore
  (absl), and after a failed restore, whose sibling read tasks asyncio would log one by one
  ('Task exception was never retrieved') when they are collected."""
  loggers = [logging.getLogger(name) for name in names]
  levels = [logger.level for logger in loggers]
  for logger in loggers:
    logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    if collect:
      gc.collect()
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


_NEVER_RETRIEVED = re.compile(r'\w+ exception was never retrieved')


class _OrphanedWrites(logging.Filter):
  """Drops asyncio's '<Task|Future|_GatheringFuture> exception was never retrieved' records about
  writes under one directory (see :func:`silence_orphaned_writes`); every other record passes."""

  def __init__(self, directory: pathlib.Path):
    super().__init__()
    self.directory = directory
    self.spellings = {str(directory), str(directory.resolve())}

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (_NEVER_RETRIEVED.match(message) is not None
                and any(spelling in message for spelling in self.spellings))


def silence_orphaned_writes(directory: str | os.PathLike) -> None:
  """After a failed save, orbax's sibling write tasks (one per array fragment, each failing
  the same way) stay unretrieved until garbage collection, which may come at any later
  moment; asyncio would then log each with its traceback. The failure is already reported in
  one line (:func:`save_error`), so those records about ``directory`` are dropped for the rest
  of the process."""
  logger = logging.getLogger('asyncio')
  directory = pathlib.Path(directory)
  if not any(isinstance(f, _OrphanedWrites) and f.directory == directory
             for f in logger.filters):
    logger.addFilter(_OrphanedWrites(directory))


def set_aside(directory: str | os.PathLike, step: int) -> pathlib.Path:
  """Renames ``directory/<step>`` to ``<step>.unreadable`` (``.unreadable.1``, ... when taken)."""
  directory = pathlib.Path(directory)
  target = directory / f'{step}{UNREADABLE}'
  count = 0
  while target.exists():
    count += 1
    target = directory / f'{step}{UNREADABLE}.{count}'
  (directory / str(step)).rename(target)
  return target


def restore_newest_readable(manager: ocp.CheckpointManager, restore: Callable[[int], Any],
                            rename: bool = True) -> tuple[int | None, Any]:
  """``(step, restore(step))`` of the newest step that reads; ``(None, None)`` without steps.

  Each newer step that fails (e.g. its array files truncated after the save committed) is
  reported in one warning line and, with ``rename`` (process 0 of a multi-process run; the
  others pass False), set aside as ``<step>.unreadable``: kept on disk for inspection, invisible
  to the manager, which is then reloaded so that the run can write that step again.

  Raises:
    CheckpointError: there are steps but none can be read (nothing is renamed then).
  """
  failed: list[tuple[int, str]] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      with quiet('asyncio', collect=True):
        restored = restore(step)
    except Exception as e:  # pylint: disable=broad-except  (orbax/TensorStore errors vary)
      failed.append((step, first_line(e)))
      continue
    for bad, why in failed:
      where = manager.directory / str(bad)
      if rename:
        where = set_aside(manager.directory, bad)
      log.warning('checkpoint step %d cannot be read (%s): resuming from step %d; the broken '
                  'one is kept as %s', bad, why, step, where)
    if failed:
      manager.reload()
    return step, restored
  if failed:
    listed = '; '.join(f'step {step}: {why}' for step, why in failed)
    raise CheckpointError(f'no checkpoint in {manager.directory} can be read ({listed}); '
                          'to start the run anew move that directory aside')
  return None, None


def is_run_directory(path: str | os.PathLike) -> bool:
  return (pathlib.Path(path) / CHECKPOINTS).is_dir()


def load_run_variables(workdir: str | os.PathLike, cfg: YolactConfig,
                       step: int | None = None) -> dict[str, Any]:
  """Params and batch stats of a run's newest (or given) checkpoint, as numpy arrays.

  The state is restored as host arrays shaped by its own stored metadata, so this works whatever
  optimiser and whatever devices or processes the run used; only the variables are checked
  against ``cfg``'s model.
  """
  directory = pathlib.Path(workdir) / CHECKPOINTS
  with quiet('absl'):
    manager = ocp.CheckpointManager(
        directory.absolute(), options=ocp.CheckpointManagerOptions(read_only=True),
        item_handlers={'state': ocp.StandardCheckpointHandler()})
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {directory}')
    target = host_target(manager.item_metadata(step)['state'])
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
    manager.close()
  state = restored['state']
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  shape = lambda x: tuple(x.shape)  # noqa: E731
  if (jax.tree_util.tree_map(shape, variables)
      != jax.tree_util.tree_map(shape, abstract_variables(cfg))):
    raise CheckpointError(
        f'the checkpoint in {directory} (step {step}) does not fit preset {cfg.name!r}: '
        f'different variable shapes (was it trained with other --config overrides?)')
  return jax.tree_util.tree_map(np.asarray, variables)
