"""Training-run directories on disk: the orbax CheckpointManager the trainer writes through, and
reading a run's weights back (for prediction, evaluation, export) without the training code.

A run directory holds ``checkpoints/<step>/`` with two items per step: ``state`` (the whole
``TrainState`` pytree: step, params, batch_stats, opt_state, rng, num_skipped) and ``data`` (the
grain iterator position). The newest ``keep`` steps are kept, plus the one with the best
validation mask mAP.

Resuming reads the newest *readable* step (:func:`restore_newest_readable`): a newer step that
cannot be read (e.g. its array files truncated after the save committed) is renamed to
``<step>.unreadable`` (kept on disk for inspection, invisible to the manager, so the run can
write that step again) with a one-line warning; when no step can be read, one
``CheckpointError`` lists them.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pathlib
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
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = lines[0] if lines else ''
  text = text if len(text) <= 200 else text[:197] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


@contextlib.contextmanager
def _quiet_asyncio():
  """A failed restore leaves orbax's sibling read tasks failed too; asyncio would log each one
  ('Task exception was never retrieved', a TensorStore spec apiece) when they are collected.
  The one-line warning says it all: collect them here with that logger silenced."""
  logger = logging.getLogger('asyncio')
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    gc.collect()
    logger.setLevel(level)


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

  Each newer step that fails is reported in one warning line and, with ``rename`` (process 0
  of a multi-process run; the others pass False), set aside as ``<step>.unreadable``; the
  manager is then reloaded so later saves of that step do not collide with it.

  Raises:
    CheckpointError: there are steps but none can be read (nothing is renamed then).
  """
  failed: list[tuple[int, str]] = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      with _quiet_asyncio():
        restored = restore(step)
    except Exception as e:  # pylint: disable=broad-except  (orbax/TensorStore errors vary)
      failed.append((step, _first_line(e)))
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

  The state is restored from its own stored metadata, so this works whatever optimiser the run
  used; only the variables are checked against ``cfg``'s model.
  """
  directory = pathlib.Path(workdir) / CHECKPOINTS
  manager = ocp.CheckpointManager(directory.absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {directory}')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
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
