"""The images both sides see: files or seeded random images, batched on one canvas."""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

SEEDED_IMAGE_SIZES = ((480, 640), (640, 427), (427, 640), (375, 500))
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')

# One batch: (canvas [B, Hc, Wc, 3] uint8, image sizes [B, 2] int32, number of real images).
Batch = tuple[np.ndarray, np.ndarray, int]


def list_images(paths: Sequence[str]) -> list[pathlib.Path]:
  """Image files from files and folders (folders: sorted, by suffix)."""
  files = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    elif p.is_file():
      files.append(p)
    else:
      raise FileNotFoundError(f'no such image or folder: {p}')
  return files


def read_images_rgb(files: Sequence[pathlib.Path]) -> list[np.ndarray]:
  """Decoded RGB uint8 images [H, W, 3]."""
  import cv2
  images = []
  for f in files:
    bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
    if bgr is None:
      raise ValueError(f'cannot decode image {f}')
    images.append(np.ascontiguousarray(bgr[..., ::-1]))
  return images


def seeded_images(count: int, seed: int) -> list[np.ndarray]:
  """Smooth random RGB uint8 images of COCO-like sizes (low-frequency noise, upsampled)."""
  import cv2
  rng = np.random.default_rng(seed)
  images = []
  for i in range(count):
    h, w = SEEDED_IMAGE_SIZES[i % len(SEEDED_IMAGE_SIZES)]
    coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
    images.append(np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255)
                  .astype(np.uint8))
  return images


def load_images(paths: Sequence[str] | None, count: int, seed: int
                ) -> tuple[list[np.ndarray], str]:
  """(images, a description): the first ``count`` of the files under ``paths``, or ``count``
  seeded random images when no paths are given."""
  if paths:
    files = list_images(paths)[:count]
    if not files:
      raise SystemExit('no images found')
    return read_images_rgb(files), f'{len(files)} images from {list(paths)}'
  return seeded_images(count, seed), f'{count} seeded random images (seed {seed})'


def make_batches(images: Sequence[np.ndarray], batch_size: int
                 ) -> tuple[list[Batch], tuple[int, int]]:
  """Batches of (canvas [B,Hc,Wc,3], sizes [B,2], real count) and the canvas (the largest h, w).
  The last batch is filled by cycling from the first images; only the real ones are compared."""
  from yolact_jax.bench import inputs as bench_inputs
  from yolact_jax.host import fit_canvas
  canvas_hw = fit_canvas([image.shape[:2] for image in images], step=1)
  filled = bench_inputs.cycle_to(images, -(-len(images) // batch_size) * batch_size)
  batches = bench_inputs.make_batches(filled, batch_size, canvas_hw)
  return [(canvas, sizes, min(batch_size, len(images) - k * batch_size))
          for k, (canvas, sizes, _) in enumerate(batches)], canvas_hw
