"""Priors (anchors) for a config and input size, exactly as the original's ``make_priors``.

Built in float64 from Python-float arithmetic and cast to float32 once, so they equal the
original's bit for bit. Layout: levels P3..P7 concatenated; within a level rows (y) outer, then
columns (x), then scale, then aspect ratio.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from yolact_jax.config import YolactConfig
from yolact_jax.model.shapes import feature_sizes


def level_priors(conv_h: int, conv_w: int, scales: tuple[float, ...],
                 aspect_ratios: tuple[float, ...], max_size: int, use_pixel_scales: bool = True,
                 preapply_sqrt: bool = False, use_square_anchors: bool = True) -> np.ndarray:
  """Priors [conv_h * conv_w * len(scales) * len(aspect_ratios), 4] (cx, cy, w, h), float64."""
  sizes = []
  for scale in scales:
    for ratio in aspect_ratios:
      r = ratio if preapply_sqrt else math.sqrt(ratio)
      if use_pixel_scales:
        w = scale * r / max_size
        h = scale / r / max_size
      else:
        w = scale * r / conv_w
        h = scale / r / conv_h
      if use_square_anchors:
        h = w
      sizes.append((w, h))
  sizes = np.asarray(sizes, np.float64)  # [A, 2]
  cy, cx = np.meshgrid((np.arange(conv_h) + 0.5) / conv_h, (np.arange(conv_w) + 0.5) / conv_w,
                       indexing='ij')
  centres = np.stack([cx, cy], axis=-1).reshape(-1, 1, 2)  # [H*W, 1, 2]
  centres = np.broadcast_to(centres, (centres.shape[0], len(sizes), 2))
  wh = np.broadcast_to(sizes[None], centres.shape)
  return np.concatenate([centres, wh], axis=-1).reshape(-1, 4)


@functools.lru_cache(maxsize=32)
def make_priors(cfg: YolactConfig, size: int | None = None) -> np.ndarray:
  """All priors [P, 4] float32 (cx, cy, w, h) for a square input of ``size`` (default max_size).

  Anchors from ``cfg.model.anchors``; scales are divided by ``cfg.max_size`` (not the runtime
  size), as the original.
  """
  a = cfg.model.anchors
  levels = []
  for n, scales, ratios in zip(feature_sizes(cfg, size), a.pred_scales, a.pred_aspect_ratios):
    levels.append(level_priors(n, n, scales, ratios, cfg.max_size, a.use_pixel_scales,
                               a.preapply_sqrt, a.use_square_anchors))
  priors = np.concatenate(levels, axis=0).astype(np.float32)
  priors.setflags(write=False)
  return priors


def level_prior_counts(cfg: YolactConfig, size: int | None = None) -> tuple[int, ...]:
  """The number of priors of each level, in :func:`make_priors`' order."""
  a = cfg.model.anchors
  return tuple(n * n * len(scales) * len(ratios)
               for n, scales, ratios in zip(feature_sizes(cfg, size), a.pred_scales,
                                            a.pred_aspect_ratios))
