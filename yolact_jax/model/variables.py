"""The one place that builds a model's variables: real ones (``init_variables``) and their shapes
only (``abstract_variables``).

Both initialise the network of the experiment ``cfg``, ``Yolact(cfg.model,
num_classes=cfg.num_classes)``, on a zero image of the preset's input size ``[1, S, S, 3]``; the
result is ``{'params': ..., 'batch_stats': ...}``. Initialisation is jitted (eager Flax init of a
ResNet is slow), and the abstract form costs no computation (``jax.eval_shape``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from yolact_jax.config import YolactConfig
from yolact_jax.model.yolact import Yolact


def _init(cfg: YolactConfig, key: jax.Array) -> dict[str, Any]:
  images = jnp.zeros((1, cfg.max_size, cfg.max_size, 3), jnp.float32)
  variables = Yolact(cfg.model, num_classes=cfg.num_classes).init(key, images)
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def init_variables(cfg: YolactConfig, seed: int | None = None) -> dict[str, Any]:
  """Randomly initialised ``{'params', 'batch_stats'}`` (seed default: ``cfg.train.seed``)."""
  seed = cfg.train.seed if seed is None else seed
  return jax.jit(_init, static_argnums=0)(cfg, jax.random.key(seed))


def abstract_variables(cfg: YolactConfig) -> dict[str, Any]:
  """The tree of ``init_variables(cfg)`` as ``jax.ShapeDtypeStruct`` leaves (nothing computed)."""
  return jax.eval_shape(lambda key: _init(cfg, key), jax.random.key(0))
