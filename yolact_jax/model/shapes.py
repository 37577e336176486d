"""Feature-map sizes of a config, read off the network itself with ``jax.eval_shape``.

Tracing the network's ``init`` (``Yolact(cfg.model, num_classes=cfg.num_classes)``) on a
``jax.ShapeDtypeStruct`` input computes no numbers, only shapes, so the sizes here are those of
the code that runs: whatever the backbone, FPN and ProtoNet do to
the spatial size, these follow. At 550 px every v1 preset gives levels [69, 35, 18, 9, 5] (P3..P7),
prototypes 138 x 138 and 19248 priors (3 per location).

Results are cached per (config, input size); configs are frozen, hence hashable.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from yolact_jax.config import YolactConfig
from yolact_jax.model.fpn import FPN


class ModelShapes(NamedTuple):
  """Spatial sizes of one square input.

  levels: side of each pyramid level P3..P7 (square: height = width), e.g. (69, 35, 18, 9, 5).
  proto:  side of the prototypes (138 at 550).
  priors: number of priors P = sum(level**2) * anchors per location (19248 at 550).
  """
  levels: tuple[int, ...]
  proto: int
  priors: int


def _is_fpn(module, method_name: str) -> bool:
  return isinstance(module, FPN) and method_name == '__call__'


@functools.lru_cache(maxsize=64)
def model_shapes(cfg: YolactConfig, size: int | None = None) -> ModelShapes:
  """The shapes of the network of ``cfg`` on a [1, size, size, 3] input (default
  ``cfg.max_size``).

  The pyramid sizes come from the FPN's output (captured as an intermediate), the prototype size
  from ``proto`` and the prior count from ``loc``; raises ValueError if a level is not square or
  the prior count disagrees with the levels (the head must emit A priors per location).
  """
  from yolact_jax.model.yolact import Yolact  # the network module imports config; keep it lazy
  size = cfg.max_size if size is None else size
  model = Yolact(cfg.model, num_classes=cfg.num_classes)

  def run(images):
    out, state = model.init_with_output(jax.random.key(0), images, capture_intermediates=_is_fpn,
                                        mutable=['params', 'batch_stats', 'intermediates'])
    (pyramid,) = state['intermediates']['fpn']['__call__']
    return out, pyramid

  out, pyramid = jax.eval_shape(run, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  levels = []
  for level in pyramid:  # [1, H, W, F]
    if level.shape[1] != level.shape[2]:
      raise ValueError(f'{cfg.name}: non-square pyramid level {level.shape} at {size} px')
    levels.append(int(level.shape[1]))
  proto = int(out['proto'].shape[1])
  priors = int(out['loc'].shape[1])
  if priors != sum(n * n for n in levels) * cfg.model.anchors.num_anchors:
    raise ValueError(f'{cfg.name}: {priors} priors from the head, but levels {levels} with '
                     f'{cfg.model.anchors.num_anchors} anchors per location')
  return ModelShapes(tuple(levels), proto, priors)


def feature_sizes(cfg: YolactConfig, size: int | None = None) -> list[int]:
  """Side of each pyramid level P3..P7 for a square input of ``size`` (550 -> [69, 35, 18, 9, 5])."""
  return list(model_shapes(cfg, size).levels)


def proto_size(cfg: YolactConfig, size: int | None = None) -> int:
  """Side of the prototypes (138 at 550)."""
  return model_shapes(cfg, size).proto


def num_priors(cfg: YolactConfig, size: int | None = None) -> int:
  """Number of priors P (19248 at 550 for every v1 preset)."""
  return model_shapes(cfg, size).priors
