"""Inputs of the benchmark: given images cycled and batched on a canvas; synthetic network
inputs, uint8 images, training batches and the score maps Detect is timed on."""

from __future__ import annotations

import math
import os
import pathlib
from typing import Sequence

import numpy as np

from yolact_jax.bench.machine import PROJECT_ROOT
from yolact_jax.config import YolactConfig
from yolact_jax.host import chunks, pack_canvas
from yolact_jax.model.shapes import feature_sizes, proto_size


def cycle_to(images: Sequence[np.ndarray], count: int) -> list[np.ndarray]:
  """``count`` images, repeating the list as needed."""
  if not images:
    raise ValueError('no image to benchmark with')
  return [images[i % len(images)] for i in range(count)]


def make_batches(images_rgb: Sequence[np.ndarray], batch_size: int, canvas_hw: tuple[int, int]
                 ) -> list[tuple[np.ndarray, np.ndarray, int]]:
  """Consecutive batches of the images: (canvas [B, Hc, Wc, 3] uint8, sizes [B, 2] int32, count).
  """
  batches = []
  for chunk in chunks(images_rgb, batch_size):
    canvas, sizes = pack_canvas(chunk, canvas_hw, batch_size)
    batches.append((canvas, sizes, len(chunk)))
  return batches


def random_network_input(cfg: YolactConfig, batch: int, seed: int = 0) -> np.ndarray:
  """A normalised NHWC network input [B, S, S, 3] (values ~ N(0, 1))."""
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch, cfg.max_size, cfg.max_size, 3)).astype(np.float32)


def random_uint8_images(batch: int, image_hw: tuple[int, int], seed: int = 0) -> np.ndarray:
  """Uniform random RGB images [B, H, W, 3] uint8."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (batch,) + tuple(image_hw) + (3,), dtype=np.uint8)


def object_masks(boxes: np.ndarray, shapes: np.ndarray, size: int) -> np.ndarray:
  """Binary masks [G, size, size] uint8 of rectangles (shape 0) or ellipses (shape 1) inscribed
  in relative x1y1x2y2 ``boxes`` [G, 4], sampled at pixel centres."""
  centres = (np.arange(size) + 0.5) / size
  x, y = centres[None, None, :], centres[None, :, None]
  x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
  rect = (x >= x1) & (x < x2) & (y >= y1) & (y < y2)
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  rx, ry = np.maximum((x2 - x1) / 2, 1e-6), np.maximum((y2 - y1) / 2, 1e-6)
  ellipse = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
  return np.where(shapes[:, None, None] == 1, ellipse, rect).astype(np.uint8)


def synthetic_train_batch(cfg: YolactConfig, batch: int, objects: int = 4, seed: int = 0
                          ) -> dict[str, np.ndarray]:
  """A training batch in the loader's layout with ``objects`` random shapes per image.

  ``image`` [B, S, S, 3] float32, ``boxes`` [B, G, 4] relative, ``labels`` [B, G] int32,
  ``valid`` / ``is_crowd`` [B, G] bool, ``masks_proto`` [B, G, Hp, Hp] and ``masks_segm``
  [B, G, Hs, Hs] uint8 (drawn directly at those resolutions), G = ``cfg.train.max_instances``.
  """
  rng = np.random.default_rng(seed)
  slots = cfg.train.max_instances
  objects = min(objects, slots)
  size, hp, hs = cfg.max_size, proto_size(cfg), feature_sizes(cfg)[0]
  num_fg = cfg.num_classes - 1
  boxes = np.zeros((batch, slots, 4), np.float32)
  labels = np.zeros((batch, slots), np.int32)
  valid = np.zeros((batch, slots), bool)
  shapes = np.zeros((batch, slots), np.int32)
  for b in range(batch):
    wh = rng.uniform(0.15, 0.5, (objects, 2))
    xy = rng.uniform(0.0, 1.0 - wh)
    boxes[b, :objects] = np.concatenate([xy, xy + wh], axis=1)
    labels[b, :objects] = rng.integers(0, num_fg, objects)
    shapes[b, :objects] = rng.integers(0, 2, objects)
    valid[b, :objects] = True
  images = rng.standard_normal((batch, size, size, 3)).astype(np.float32) * 0.5
  full = [object_masks(boxes[b, :objects], shapes[b, :objects], size) for b in range(batch)]
  for b in range(batch):
    for g in range(objects):
      images[b][full[b][g].astype(bool)] += rng.uniform(-1.5, 1.5, 3).astype(np.float32)
  masks_at = lambda n: np.stack([object_masks(boxes[b], shapes[b], n) * valid[b, :, None, None]  # noqa: E731
                                 for b in range(batch)]).astype(np.uint8)
  return {'image': images, 'boxes': boxes, 'labels': labels, 'valid': valid,
          'is_crowd': np.zeros_like(valid), 'masks_proto': masks_at(hp),
          'masks_segm': masks_at(hs)}


def default_reference_dir() -> pathlib.Path:
  """The original's reference outputs (as tests/reference_data.py locates them)."""
  return pathlib.Path(os.environ.get('YOLACT_REFERENCE_DIR',
                                     PROJECT_ROOT.parent / 'shared' / 'reference'))


def softmax_np(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def reference_detect_inputs(reference_dir: pathlib.Path, batch: int
                            ) -> dict[str, np.ndarray] | None:
  """The original's head outputs (``yolact_resnet50/raw.npz``: loc, softmax conf, mask
  coefficients, priors) tiled to ``batch`` images; None when the file is absent."""
  path = reference_dir / 'yolact_resnet50' / 'raw.npz'
  if not path.exists():
    return None
  with np.load(path) as raw:
    tile = lambda x: np.concatenate([x] * math.ceil(batch / x.shape[0]))[:batch]  # noqa: E731
    return {'loc': tile(raw['loc']), 'conf': tile(softmax_np(raw['conf_logits'])),
            'coefs': tile(raw['mask']), 'priors': raw['priors'],
            'source': str(path)}


def synthetic_detect_inputs(batch: int, num_priors: int = 19248, num_classes: int = 80,
                            mask_dim: int = 32, objects: int = 20, seed: int = 0
                            ) -> dict[str, np.ndarray]:
  """Realistic-looking Detect inputs: priors clustered around ``objects`` objects per image (as
  a trained model's confident priors are), scores peaked on the object's class near its centre
  and background elsewhere. ``loc`` is small noise (N(0, 0.05)), so the decoded boxes stay near
  the priors, which every image shares.
  """
  rng = np.random.default_rng(seed)
  centres = rng.uniform(0.1, 0.9, (objects, 2))
  sizes = rng.uniform(0.05, 0.4, (objects, 2))
  near = rng.random(num_priors) < 0.1  # a tenth of the priors lie on an object
  owner = np.where(near, rng.integers(0, objects, num_priors), -1)
  jitter = rng.normal(0, 0.03, (num_priors, 4))
  cxcy = np.where(near[:, None], centres[owner] + jitter[:, :2], rng.uniform(0, 1, (num_priors, 2)))
  wh = np.where(near[:, None], sizes[owner] * np.exp(jitter[:, 2:]),
                rng.uniform(0.02, 0.5, (num_priors, 2)))
  priors = np.concatenate([cxcy, wh], axis=1).astype(np.float32)
  classes = rng.integers(1, num_classes + 1, objects)
  logits = rng.normal(0, 1, (batch, num_priors, num_classes + 1))
  logits[..., 0] += 6.0  # background dominates ...
  closeness = np.exp(-np.sum(jitter[:, :2] ** 2, axis=1) / (2 * 0.03 ** 2))
  boost = np.where(near, 9.0 * closeness, 0.0)  # ... except near an object's centre
  logits[:, np.flatnonzero(near), classes[owner[near]]] += boost[near]
  return {'loc': rng.normal(0, 0.05, (batch, num_priors, 4)).astype(np.float32),
          'conf': softmax_np(logits).astype(np.float32),
          'coefs': np.tanh(rng.normal(0, 1, (batch, num_priors, mask_dim))).astype(np.float32),
          'priors': priors, 'source': 'synthetic clustered boxes, peaked scores'}
