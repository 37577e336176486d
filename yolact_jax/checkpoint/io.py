"""Reading and writing model weights: Flax (orbax) directories and the original's ``.pth``.

A *weights directory* is an orbax checkpoint of ``{'params', 'batch_stats'}`` plus a small
``yolact.json`` naming the preset it belongs to. :func:`load_weights` accepts such a directory, a
training run directory (the newest checkpoint of ``train.py``'s CheckpointManager), or an
original ``.pth`` file, and always returns Flax variables for the given config.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from yolact_jax.checkpoint import convert, runs
from yolact_jax.config import YolactConfig
from yolact_jax.model.variables import abstract_variables

_META = 'yolact.json'


def save_weights(path: str | os.PathLike, variables: dict[str, Any], cfg: YolactConfig) -> None:
  """Writes ``variables`` ({'params', 'batch_stats'}) as an orbax weights directory."""
  path = pathlib.Path(path).absolute()
  tree = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path / 'variables', jax.device_get(tree), force=True)
  checkpointer.wait_until_finished()
  (path / _META).write_text(json.dumps({'preset': cfg.name, 'format': 'yolact-jax weights'}))


def _restore_tree(directory: pathlib.Path, cfg: YolactConfig) -> dict[str, Any]:
  try:
    target = runs.host_target(abstract_variables(cfg))  # whatever devices wrote it
    return ocp.StandardCheckpointer().restore(directory, target)
  except Exception as e:  # orbax raises several types for shape / structure mismatches
    raise convert.CheckpointError(
        f'Cannot restore {directory} as {cfg.name!r} weights: {type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else ""}') from e


def load_weights(path: str | os.PathLike, cfg: YolactConfig) -> dict[str, Any]:
  """Flax variables for ``cfg`` from a ``.pth``, a weights directory or a training run directory.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise convert.CheckpointError(f'Weights not found: {path}')
  if path.is_file():
    return convert.load_pth_weights(path, cfg)
  if (path / 'variables').is_dir():
    meta = path / _META
    if meta.exists():
      preset = json.loads(meta.read_text()).get('preset')
      if preset and preset != cfg.name:
        print(f'warning: weights in {path} were saved for preset {preset!r}, loading into '
              f'{cfg.name!r}')
    return jax.tree_util.tree_map(np.asarray, _restore_tree(path / 'variables', cfg))
  if runs.is_run_directory(path):  # a train.py run directory: its newest checkpoint
    return runs.load_run_variables(path, cfg)
  raise convert.CheckpointError(
      f'{path} is neither a .pth file, a yolact-jax weights directory (variables/) nor a '
      f'train.py run directory (checkpoints/)')
