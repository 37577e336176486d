"""Training-run directories on disk: the orbax CheckpointManager the trainer writes through, and
reading a run's weights back (for prediction, evaluation, export) without the training code.

A run directory holds ``checkpoints/<step>/`` with two items per step: ``state`` (the whole
``TrainState`` pytree: step, params, batch_stats, opt_state, rng, num_skipped) and ``data`` (the
grain iterator position). The newest ``keep`` steps are kept, plus the one with the best
validation mask mAP.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from yolact_jax.checkpoint.convert import CheckpointError
from yolact_jax.config import YolactConfig
from yolact_jax.model.variables import abstract_variables

CHECKPOINTS = 'checkpoints'  # sub-directory of a run directory


def checkpoint_manager(directory: str | os.PathLike, keep: int) -> ocp.CheckpointManager:
  """The manager of a run's ``checkpoints/``: newest ``keep`` plus the best ``mask_map``."""
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(keep),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m['mask_map'], n=1,
                                keep_checkpoints_without_metrics=False)])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)


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
