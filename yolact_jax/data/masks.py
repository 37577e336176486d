"""Instance-mask helpers: COCO segmentations -> binary masks, RLE round trips, and the loss's
mask downsampling done on the host.

pycocotools trusts its input (a NaN polygon coordinate is a segmentation fault, a coordinate of
1e9 gigabytes of memory, an RLE whose runs do not cover the mask a read or write past it), so
every segmentation is checked here before it is handed over (``clean_polygons``, ``check_rle``).

Masks are uint8 {0, 1} arrays of shape ``[n, H, W]`` throughout.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_utils


class SegmentationError(ValueError):
  """A segmentation that cannot be turned into a mask (message says why)."""


# How far outside the image a polygon coordinate may lie, in image sizes: x in [-W, 2W] and y in
# [-H, 2H] for a W x H image. Real COCO polygons overshoot the image by a pixel or so, which stays
# legal; a coordinate far outside is corrupt, and pycocotools would rasterise the whole polygon
# (a coordinate of 1e9: gigabytes of memory, then a crash; NaN or inf: a segmentation fault).
POLYGON_MARGIN = 1.0


def _polygon_bounds(height: int, width: int) -> tuple[float, float, float, float]:
  """(x_low, x_high, y_low, y_high): where polygon coordinates may lie (``POLYGON_MARGIN``)."""
  return (-POLYGON_MARGIN * width, (1 + POLYGON_MARGIN) * width,
          -POLYGON_MARGIN * height, (1 + POLYGON_MARGIN) * height)


def _coordinate_problem(part_index: int, coords: Sequence[Any],
                        bounds: tuple[float, float, float, float] | None) -> str:
  """What is wrong with the first bad coordinate of a polygon part (the slow path)."""
  for position, value in enumerate(coords):
    axis = position % 2
    where = f'polygon part {part_index} point {position // 2}: {"xy"[axis]}'
    try:
      number = float(value)
    except (TypeError, ValueError):
      return f'{where} is {value!r}, not a number'
    if not math.isfinite(number):
      return f'{where} = {number} is not finite'
    if bounds is not None:
      low, high = bounds[2 * axis], bounds[2 * axis + 1]
      if not low <= number <= high:
        return (f'{where} = {number:g} is outside [{low:g}, {high:g}] ({POLYGON_MARGIN:g} '
                f'image {("width", "height")[axis]} beyond each side of the image)')
  return f'polygon part {part_index}: unusable coordinates'


def _part_coordinates(part_index: int, coords: Sequence[Any],
                      bounds: tuple[float, float, float, float] | None) -> list[float]:
  """A polygon part's coordinates as floats: all finite, and within ``bounds`` when given.

  Raises:
    SegmentationError: a coordinate that is not a number, not finite or out of bounds (point and
      axis named).
  """
  try:
    values = list(map(float, coords))
  except (TypeError, ValueError):
    values = None
  if values is None or not all(map(math.isfinite, values)) or not _within(values, bounds):
    raise SegmentationError(_coordinate_problem(part_index, coords, bounds))
  return values


def _within(values: list[float], bounds: tuple[float, float, float, float] | None) -> bool:
  """Finite x, y, x, y, ... all inside ``bounds`` (always true without bounds)."""
  if bounds is None:
    return True
  xs, ys = values[0::2], values[1::2]
  return bounds[0] <= min(xs) and max(xs) <= bounds[1] and bounds[2] <= min(ys) and (
      max(ys) <= bounds[3])


def clean_polygons(polygons: Sequence[Sequence[float]], height: int | None = None,
                   width: int | None = None) -> tuple[list[list[float]], list[str]]:
  """Drops polygon parts pycocotools cannot rasterise; refuses corrupt ones.

  A part needs an even number of at least 6 coordinates (3 points). pycocotools would treat a
  4-number part as a box and crash on it, so such parts are dropped here and reported. Every
  coordinate of a part kept must be a finite number and, when the image size is given, lie
  within ``POLYGON_MARGIN`` of the image; anything else makes the whole segmentation corrupt.

  Returns:
    (usable parts as float lists, one message per dropped part)
  Raises:
    SegmentationError: a coordinate that is not a finite number, or out of range (point named).
  """
  bounds = None if height is None or width is None else _polygon_bounds(height, width)
  kept, problems = [], []
  for part_index, part in enumerate(polygons):
    coords = list(part) if isinstance(part, (list, tuple, np.ndarray)) else None
    if coords is None or len(coords) < 6 or len(coords) % 2:
      size = 'not a list' if coords is None else f'{len(coords)} coordinates'
      problems.append(f'polygon part {part_index} dropped ({size}; needs an even number >= 6)')
      continue
    kept.append(_part_coordinates(part_index, coords, bounds))
  return kept, problems


def _compressed_runs(counts: bytes) -> np.ndarray:
  """Run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, in numpy).

  Each run is a little-endian base-32 number written as characters '0' + 5 bits, bit 0x20 meaning
  "more characters follow" and bit 0x10 of the last one the sign; from the fourth run on, a run
  is stored as its difference from the run two before.

  Raises:
    SegmentationError: a character outside '0'..'o', a string ending inside a run, or a run
      longer than 7 characters (no mask has 2**35 pixels).
  """
  chars = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
  bad = np.flatnonzero((chars < 0) | (chars > 63))
  if bad.size:
    raise SegmentationError(f'compressed RLE counts: character {chr(counts[bad[0]])!r} at '
                            f"{bad[0]} is outside '0'..'o'")
  if chars.size == 0:
    return np.zeros(0, np.int64)
  more = (chars & 0x20) != 0
  if more[-1]:
    raise SegmentationError('compressed RLE counts: the string ends inside a run')
  ends = np.flatnonzero(~more)
  starts = np.concatenate([[0], ends[:-1] + 1])
  lengths = ends - starts + 1
  if lengths.max() > 7:
    raise SegmentationError(f'compressed RLE counts: a run of {lengths.max()} characters '
                            '(at most 7 encode any mask)')
  shift = 5 * (np.arange(chars.size) - np.repeat(starts, lengths))
  values = np.add.reduceat((chars & 0x1f) << shift, starts)
  values -= ((chars[ends] & 0x10) != 0).astype(np.int64) << (5 * lengths)  # sign extension
  runs = values.copy()
  runs[1::2] = np.cumsum(values[1::2])  # run m += run m - 2, for m > 2
  runs[2::2] = np.cumsum(values[2::2])
  return runs


def _integer_runs(counts: list) -> np.ndarray:
  """An uncompressed RLE's counts as int64 runs (integral floats accepted, as pycocotools does).

  Raises:
    SegmentationError: an entry that is not an integer.
  """
  if not counts:
    return np.zeros(0, np.int64)
  try:
    runs = np.asarray(counts)
  except (TypeError, ValueError):  # ragged nesting
    runs = np.zeros(0, object)
  integral = runs.ndim == 1 and (
      runs.dtype.kind in 'iu' or (runs.dtype.kind == 'f' and bool(np.all(np.isfinite(runs)))
                                  and bool(np.all(runs == np.floor(runs)))))
  if not integral:
    raise SegmentationError(f'RLE counts are not a list of integers (they start {counts[:3]!r})')
  return runs.astype(np.int64)


def rle_runs(counts: Any) -> np.ndarray:
  """The run lengths (int64) of an RLE's ``counts``: a list of integers (uncompressed RLE) or a
  COCO compressed string / bytes. Runs alternate 0s and 1s in column-major order, 0s first.

  Raises:
    SegmentationError: counts of another type, a list with a non-integer, or a malformed string.
  """
  if isinstance(counts, str):
    try:
      counts = counts.encode('ascii')
    except UnicodeEncodeError as e:
      raise SegmentationError(f'compressed RLE counts: character {e.object[e.start]!r} at '
                              f"{e.start} is outside '0'..'o'") from None
  if isinstance(counts, (bytes, np.bytes_)):
    return _compressed_runs(bytes(counts))
  if isinstance(counts, list):
    return _integer_runs(counts)
  raise SegmentationError(f'RLE counts of type {type(counts).__name__} (expected a list of '
                          'integers or a compressed string)')


def check_rle(rle: dict, height: int, width: int) -> np.ndarray:
  """Checks that ``rle`` is a well-formed RLE of a ``height x width`` mask without decoding it.

  ``size`` must be ``[height, width]``; ``counts`` (see :func:`rle_runs`) must be non-negative
  runs covering exactly ``height * width`` pixels. pycocotools trusts the runs: too few leave
  pixels uninitialised, too many write past the mask.

  Returns:
    the runs (int64).
  Raises:
    SegmentationError: the first defect found.
  """
  if 'counts' not in rle:
    raise SegmentationError(f'RLE has no counts (keys: {sorted(rle)})')
  size = rle.get('size')
  try:
    size_ok = [int(s) for s in size] == [height, width]
  except (TypeError, ValueError):
    size_ok = False
  if not size_ok:
    raise SegmentationError(f'RLE size {size!r} differs from the image size {[height, width]}')
  runs = rle_runs(rle['counts'])
  if runs.size and runs.min() < 0:
    raise SegmentationError(f'RLE has a negative run ({int(runs.min())})')
  if int(runs.sum()) != height * width:
    raise SegmentationError(f'RLE runs cover {int(runs.sum())} pixels, not {height} x {width} '
                            f'= {height * width}')
  return runs


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict:
  """Any COCO segmentation -> one compressed RLE dict (``counts`` as bytes).

  Accepts what pycocotools' ``COCO.annToRLE`` accepts: a list of polygons (merged into one
  mask), an uncompressed RLE (``counts`` a list of ints, as COCO crowds use) or a compressed RLE
  (``counts`` a str or bytes). Everything is checked before pycocotools sees it
  (:func:`clean_polygons` with the image size, :func:`check_rle`), so a corrupt segmentation is
  an error here, never a crash or a runaway allocation.

  Raises:
    SegmentationError: the segmentation is empty, corrupt or of an unknown form.
  """
  if isinstance(segmentation, (list, tuple)):
    polygons, _ = clean_polygons(segmentation, height, width)
    if not polygons:
      raise SegmentationError('no usable polygon')
    return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
  if isinstance(segmentation, dict):
    runs = check_rle(segmentation, height, width)
    counts = segmentation['counts']
    if isinstance(counts, list):
      return mask_utils.frPyObjects({'size': [height, width], 'counts': runs.tolist()}, height,
                                    width)
    if isinstance(counts, str):
      counts = counts.encode('ascii')
    return {'size': [height, width], 'counts': bytes(counts)}
  raise SegmentationError(f'unknown segmentation form ({type(segmentation).__name__})')


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
