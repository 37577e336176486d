"""Instance-mask helpers: COCO segmentations -> binary masks, RLE round trips, and the loss's
mask downsampling done on the host.

Masks are uint8 {0, 1} arrays of shape ``[n, H, W]`` throughout.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_utils

class SegmentationError(ValueError):
  """A segmentation that cannot be turned into a mask (message says why)."""


def clean_polygons(polygons: Sequence[Sequence[float]]) -> tuple[list[list[float]], list[str]]:
  """Drops polygon parts pycocotools cannot rasterise.

  A part needs an even number of at least 6 coordinates (3 points). pycocotools would treat a
  4-number part as a box and crash on it, so such parts are dropped here and reported.

  Returns:
    (usable parts as float lists, one message per dropped part)
  """
  kept, problems = [], []
  for part_index, part in enumerate(polygons):
    coords = list(part) if isinstance(part, (list, tuple, np.ndarray)) else None
    if coords is None or len(coords) < 6 or len(coords) % 2:
      size = 'not a list' if coords is None else f'{len(coords)} coordinates'
      problems.append(f'polygon part {part_index} dropped ({size}; needs an even number >= 6)')
      continue
    kept.append([float(v) for v in coords])
  return kept, problems


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict:
  """Any COCO segmentation -> one compressed RLE dict (``counts`` as bytes).

  Accepts what pycocotools' ``COCO.annToRLE`` accepts: a list of polygons (merged into one
  mask), an uncompressed RLE (``counts`` a list of ints, as COCO crowds use) or a compressed RLE
  (``counts`` a str or bytes).

  Raises:
    SegmentationError: the segmentation is empty or of an unknown form.
  """
  if isinstance(segmentation, (list, tuple)):
    polygons, _ = clean_polygons(segmentation)
    if not polygons:
      raise SegmentationError('no usable polygon')
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
  if isinstance(segmentation, dict) and 'counts' in segmentation:
    counts = segmentation['counts']
    size = segmentation.get('size', [height, width])
    if [int(s) for s in size] != [height, width]:
      raise SegmentationError(f'RLE size {list(size)} differs from the image size '
                              f'{[height, width]}')
    if isinstance(counts, list):
      return mask_utils.frPyObjects({'size': [height, width], 'counts': counts}, height,
                                    width)
    if isinstance(counts, str):
      counts = counts.encode('ascii')
    if isinstance(counts, (bytes, np.bytes_)):
      return {'size': [height, width], 'counts': bytes(counts)}
  raise SegmentationError(f'unknown segmentation form {type(segmentation).__name__}')


def decode_rles(rles: Sequence[dict], height: int, width: int) -> np.ndarray:
  """Compressed RLEs -> uint8 masks ``[n, height, width]`` (zero masks for n = 0)."""
  if not rles:
    return np.zeros((0, height, width), np.uint8)
  with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
    warnings.simplefilter('ignore', DeprecationWarning)
    stacked = mask_utils.decode(list(rles))  # [H, W, n], Fortran order
  return np.ascontiguousarray(np.transpose(stacked, (2, 0, 1)))


def decode_rle(rle: dict) -> np.ndarray:
  """One compressed RLE -> uint8 mask [H, W] (C-contiguous)."""
  with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning
    warnings.simplefilter('ignore', DeprecationWarning)
    return np.ascontiguousarray(mask_utils.decode(rle))


def encode_masks(masks: np.ndarray) -> list[dict]:
  """uint8 masks ``[n, H, W]`` -> list of compressed RLE dicts (``counts`` bytes)."""
  if len(masks) == 0:
    return []
  return mask_utils.encode(np.asfortranarray(np.transpose(masks, (1, 2, 0)).astype(np.uint8)))


def box_mask(box_xywh: Sequence[float], height: int, width: int) -> np.ndarray:
  """Filled rectangle mask ``[height, width]`` for a box given as COCO [x, y, w, h] pixels.

  Pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) lies inside the box.
  """
  x, y, w, h = (float(v) for v in box_xywh)
  mask = np.zeros((height, width), np.uint8)
  x1, y1 = int(np.clip(np.round(x), 0, width)), int(np.clip(np.round(y), 0, height))
  x2, y2 = int(np.clip(np.round(x + w), 0, width)), int(np.clip(np.round(y + h), 0, height))
  mask[y1:y2, x1:x2] = 1
  return mask


def resize_masks(masks: np.ndarray, out_hw: tuple[int, int], mirror: bool = False) -> np.ndarray:
  """Resizes uint8 masks ``[n, H, W]`` -> ``[n, out_h, out_w]`` the original's way.

  The original resizes the masks as one multi-channel uint8 image with ``cv2.resize``
  (INTER_LINEAR), so values stay in {0, 1}. cv2 resizes every channel independently, so
  resizing mask by mask gives the same result without transposing ``[n, H, W]`` to channels-last
  (and works past cv2's 512-channel limit).

  Args:
    masks: uint8 [n, H, W] (any strides).
    out_hw: (out_h, out_w).
    mirror: reverse the columns of every mask BEFORE resizing (the original's RandomMirror).
  Returns:
    uint8 [n, out_h, out_w].
  """
  out_h, out_w = out_hw
  out = np.empty((masks.shape[0], out_h, out_w), np.uint8)
  for index, mask in enumerate(masks):
    mask = np.ascontiguousarray(mask)
    if mirror:
      mask = cv2.flip(mask, 1)
    out[index] = cv2.resize(mask, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
  return out


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source taps of torch's bilinear resize (align_corners=False, scale from the sizes).

  Mirrors ATen's ``area_pixel_compute_source_index`` in float32: src = scale * (dst + 0.5)
  - 0.5, clamped at 0; i0 = floor(src); i1 = i0 + 1 unless i0 is the last index; lambda1 =
  src - i0.

  Returns:
    (i0 [out] int, i1 [out] int, lambda1 [out] float32)
  """
  scale = np.float32(in_size) / np.float32(out_size)
  dst = np.arange(out_size, dtype=np.float32)
  src = scale * (dst + np.float32(0.5)) - np.float32(0.5)
  src = np.maximum(src, np.float32(0.0))
  i0 = np.floor(src).astype(np.int64)
  i0 = np.minimum(i0, in_size - 1)
  i1 = i0 + (i0 < in_size - 1).astype(np.int64)
  lambda1 = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
  return i0, i1, lambda1


def bilinear_resize(values: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """torch ``F.interpolate(x, out_hw, mode='bilinear', align_corners=False)`` on ``[n, H, W]``.

  No antialiasing (each output pixel reads 2x2 input pixels), as the original's loss. Returns
  float64 ``[n, out_h, out_w]``; the interpolation weights are computed in float32 like torch.
  """
  n, in_h, in_w = values.shape
  out_h, out_w = out_hw
  y0, y1, ly = _bilinear_taps(in_h, out_h)
  x0, x1, lx = _bilinear_taps(in_w, out_w)
  ly = ly.astype(np.float64)[None, :, None]
  lx = lx.astype(np.float64)[None, None, :]
  rows0 = values[:, y0, :]  # [n, out_h, W], gathered before any float conversion
  rows1 = values[:, y1, :]
  top = rows0[:, :, x0] * (1.0 - lx) + rows0[:, :, x1] * lx
  bottom = rows1[:, :, x0] * (1.0 - lx) + rows1[:, :, x1] * lx
  return top * (1.0 - ly) + bottom * ly


def downsample_binarize_masks(masks: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
  """The loss's GT-mask downsampling, on the host: bilinear (torch, align_corners=False, no
  antialias) to ``out_hw`` then ``> 0.5``.

  Args:
    masks: uint8 ``[n, H, W]`` in {0, 1} (e.g. the 550x550 augmented masks).
    out_hw: (out_h, out_w), e.g. (138, 138) for prototypes or (69, 69) for semantic seg.
  Returns:
    uint8 ``[n, out_h, out_w]`` in {0, 1}.
  """
  if masks.shape[0] == 0:
    return np.zeros((0, *out_hw), np.uint8)
  return (bilinear_resize(masks, out_hw) > 0.5).astype(np.uint8)
