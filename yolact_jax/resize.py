"""The input resize to the network's square size, on the device, from each image's traced size:
one of ``INPUT_RESIZES`` (``model.backbone.input_resize``).

* 'float' (the original's ``FastBaseTransform``): bilinear on the float image, PyTorch's
  ``F.interpolate(align_corners=False)``.
* 'uint8' (mmdetection's ``Resize``): OpenCV's ``cv2.resize(INTER_LINEAR)`` of the uint8 image,
  bit for bit: 11-bit fixed-point weights, an int32 horizontal pass, then the vertical pass of
  OpenCV's vectorised kernel ((S >> 4) x weight, high 16 bits, summed, rounded shift by 2).
  Horizontally an out-of-range source position takes the edge pixel with weight 1; vertically
  the weights are kept and the rows clamped (OpenCV treats the two axes so).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from yolact_jax.config import INPUT_RESIZES
from yolact_jax.postprocess import bilinear_taps

COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE (11 fractional bits)


def resize_float(image: jnp.ndarray, size: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
  """Bilinear resize of the top-left ``size`` = (h, w) of ``image`` [Hc, Wc, C] to [*out_hw, C],
  float32.

  Equals ``F.interpolate(image[:h, :w], out_hw, mode='bilinear', align_corners=False)`` (width
  pass, then height pass: the same two-level sum PyTorch's kernel forms).
  """
  image = image.astype(jnp.float32)
  row_lo, row_hi, row_t = bilinear_taps(size[0], out_hw[0], out_hw[0])
  col_lo, col_hi, col_t = bilinear_taps(size[1], out_hw[1], out_hw[1])
  col_t = col_t[None, :, None]
  wide = image[:, col_lo] * (1 - col_t) + image[:, col_hi] * col_t  # [Hc, W', C]
  row_t = row_t[:, None, None]
  return wide[row_lo] * (1 - row_t) + wide[row_hi] * row_t  # [H', W', C]


def opencv_taps(in_size: jnp.ndarray, out_size: int, clamp_weights: bool
                ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """OpenCV's linear taps for one axis: sources lo, hi int32 [out_size] and fixed-point weights
  w_lo, w_hi int32 (sum 2048).

  The source position ``(d + 0.5) * in / out - 0.5`` rounded once to float32, as OpenCV casts
  its double: here the exact quotient of two integers below 2^24 (IEEE division rounds it
  once). Its fraction f gives weights ``round(2048 (1 - f))`` and ``round(2048 f)`` (ties to
  even, as cvRound). ``clamp_weights`` (OpenCV's horizontal axis): a position left of 0 or at
  or beyond the last pixel reads that edge pixel with weight 2048.
  """
  in_size = jnp.asarray(in_size, jnp.int32)
  d = jnp.arange(out_size, dtype=jnp.int32)
  # XLA turns a division by a constant, or by values broadcast along an axis, into a product
  # with a rounded reciprocal (1 ulp off, which moves weights). A divisor that varies, to XLA,
  # along every axis (x 0.0 is kept: it is no 0 for inf or NaN), also under vmap over images,
  # is divided element by element, rounded once (IEEE); tests/test_resize.py holds XLA to it.
  zero = d.astype(jnp.float32) * 0.0 + in_size.astype(jnp.float32) * 0.0
  divisor = zero + jnp.float32(2 * out_size)
  position = ((2 * d + 1) * in_size - out_size).astype(jnp.float32) / divisor
  lo = jnp.floor(position)
  frac = position - lo
  lo = lo.astype(jnp.int32)
  if clamp_weights:
    outside = (lo < 0) | (lo >= in_size - 1)
    frac = jnp.where(outside, 0.0, frac)
    lo = jnp.where(lo < 0, 0, jnp.where(lo >= in_size - 1, in_size - 1, lo))
  w_lo = jnp.round((1 - frac) * COEF_SCALE).astype(jnp.int32)
  w_hi = jnp.round(frac * COEF_SCALE).astype(jnp.int32)
  last = in_size - 1
  return jnp.clip(lo, 0, last), jnp.clip(lo + 1, 0, last), w_lo, w_hi


def resize_uint8(image: jnp.ndarray, size: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
  """``cv2.resize(image[:h, :w], out_hw[::-1], interpolation=cv2.INTER_LINEAR)`` of a uint8
  image [Hc, Wc, C] with (h, w) = ``size``: [*out_hw, C], as float32 (values 0..255)."""
  pixels = image.astype(jnp.int32)
  c_lo, c_hi, c_wlo, c_whi = opencv_taps(size[1], out_hw[1], clamp_weights=True)
  r_lo, r_hi, r_wlo, r_whi = opencv_taps(size[0], out_hw[0], clamp_weights=False)
  wide = pixels[:, c_lo] * c_wlo[None, :, None] + pixels[:, c_hi] * c_whi[None, :, None]
  high16 = lambda rows, w: ((rows >> 4) * w[:, None, None]) >> 16  # noqa: E731
  total = high16(wide[r_lo], r_wlo) + high16(wide[r_hi], r_whi)
  return jnp.clip((total + 2) >> 2, 0, 255).astype(jnp.float32)


# model.backbone.input_resize -> (image [Hc, Wc, C], size (h, w), out_hw) -> float32 [*out_hw, C].
RESIZES: dict[str, Callable[[jnp.ndarray, jnp.ndarray, tuple[int, int]], jnp.ndarray]] = {
    'float': resize_float, 'uint8': resize_uint8}
assert tuple(RESIZES) == INPUT_RESIZES, (tuple(RESIZES), INPUT_RESIZES)


def resize_batch(images: jnp.ndarray, image_sizes: jnp.ndarray, out_hw: tuple[int, int],
                 kind: str) -> jnp.ndarray:
  """Each canvas image [B, Hc, Wc, C] from its own size [B, 2] to ``out_hw``, float32."""
  if kind not in RESIZES:
    raise ValueError(f'input_resize must be one of {INPUT_RESIZES}, got {kind!r}')
  sizes = jnp.asarray(image_sizes, jnp.int32)
  return jax.vmap(lambda x, s: RESIZES[kind](x, s, out_hw))(images, sizes)
