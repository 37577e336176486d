"""Modulated deformable convolution (DCNv2), the 3x3 conv of YOLACT++'s DCN bottlenecks.

As the original's DCNv2 CUDA kernel, output (ho, wo) samples tap k = i * kw + j (row-major) at

    y = ho * stride - padding + i * dilation + offset[..., 2k]        (dy first,
    x = wo * stride - padding + j * dilation + offset[..., 2k + 1]     then dx: interleaved)

by bilinear interpolation in which every corner outside the image reads 0, and the whole sample is
0 unless -1 < y < H and -1 < x < W; it is multiplied by the tap's modulation, the columns are
contracted with the weight and the bias is added. Plain JAX: one gather per bilinear corner, ONE
matrix product of the columns ``[N * Ho * Wo, k * k * Cin]`` with the HWIO weight, and every
gradient (input, offsets, modulation, weight, bias) by autodiff. Pitfall: the columns are large
and the backward keeps 5x them (6.9 GB for YOLACT++ ResNet-50 at 550 px, batch 8, float32);
``chunk_rows`` bounds them (:func:`modulated_deform_conv`, :func:`column_bytes`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from yolact_jax.ops.conv import conv_general_dilated
from yolact_jax.model.layers import he_normal


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
  """floor((size + 2 padding - dilation (kernel - 1) - 1) / stride) + 1."""
  return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def column_bytes(batch: int, out_h: int, out_w: int, in_channels: int, kernel: int = 3,
                 itemsize: int = 4, chunk_rows: int | None = None) -> int:
  """Bytes of the sampled columns [N * rows * Wo, k * k * Cin] (of one row block if chunked).

  YOLACT++ ResNet-50 at 550 px, batch 8, float32 (4 bytes): every block of C3, C4 and C5 is a
  DCN (13 layers); conv2's output is 69x69 (Cin 128), 35x35 (256), 18x18 (512):

      C3: 8 * 69 * 69 * 9 * 128 * 4 B = 175.5 MB per layer, 4 layers
      C4: 8 * 35 * 35 * 9 * 256 * 4 B =  90.3 MB per layer, 6 layers
      C5: 8 * 18 * 18 * 9 * 512 * 4 B =  47.8 MB per layer, 3 layers

  For the backward pass autodiff keeps, per layer, the four gathered corner arrays and the
  columns (5x the column size: 0.88 GB for a C3 layer, 6.9 GB for the 13 layers).
  """
  rows = out_h if not chunk_rows else min(chunk_rows, out_h)
  return batch * rows * out_w * kernel * kernel * in_channels * itemsize


def _sample_columns(xp: jnp.ndarray, offset: jnp.ndarray, mask: jnp.ndarray, rows: jnp.ndarray,
                    image_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                    padding: tuple[int, int], dilation: tuple[int, int]) -> jnp.ndarray:
  """Modulated bilinear samples of every tap: the columns [N, R, Wo, K, C].

  xp: [N * (H + 2) * (W + 2), C], the image zero-padded by one pixel and flattened (so a corner
  outside the image reads a zero and only the (-1, H) x (-1, W) rule needs a select);
  offset: [N, R, Wo, 2K] float32 or float64 (dy, dx per tap); mask: [N, R, Wo, K];
  rows: [R] int32, the output rows the block covers. K = kh * kw.
  """
  (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = image_hw, kernel, stride, padding, dilation
  n, r, wo, taps = mask.shape
  tap_i = np.repeat(np.arange(kh), kw) * dh  # [K], row-major taps
  tap_j = np.tile(np.arange(kw), kh) * dw
  base_y = (rows * sh - ph)[:, None, None] + tap_i  # [R, 1, K]
  base_x = (np.arange(wo) * sw - pw)[:, None] + tap_j  # [Wo, K]
  offset = offset.reshape(n, r, wo, taps, 2)
  y = base_y.astype(offset.dtype) + offset[..., 0]  # [N, R, Wo, K]
  x = jnp.asarray(base_x, offset.dtype) + offset[..., 1]
  inside = (y > -1) & (y < h) & (x > -1) & (x < w)
  y0, x0 = jnp.floor(y), jnp.floor(x)
  ly, lx = y - y0, x - x0
  # Top-left corner in the padded image: y0 in [-1, H - 1] -> row y0 + 1 (clipped when outside).
  y0 = jnp.clip(y0, -1, h - 1).astype(jnp.int32) + 1
  x0 = jnp.clip(x0, -1, w - 1).astype(jnp.int32) + 1
  row = w + 2
  batch = (np.arange(n) * (h + 2) * row)[:, None, None, None]
  top_left = batch + y0 * row + x0
  # The modulation (zero for points outside (-1, H) x (-1, W)) joins the corner weights, so
  # that the backward keeps only the four gathered corners (not also the unmodulated sample):
  # sum_c (w_c m) v_c, where the original's kernel computes (sum_c w_c v_c) m (equal up to float
  # rounding).
  mod = jnp.where(inside, mask.astype(y.dtype), 0)
  corner_weights = (((1 - ly) * (1 - lx), 0), ((1 - ly) * lx, 1),
                    (ly * (1 - lx), row), (ly * lx, row + 1))
  cols = None
  for weight, shift in corner_weights:  # the four bilinear corners, in the kernel's order
    corner = jnp.take(xp, top_left + shift, axis=0, mode='clip')  # [N, R, Wo, K, C]
    term = (weight * mod)[..., None] * corner
    cols = term if cols is None else cols + term
  return cols.astype(xp.dtype)


def modulated_deform_conv(x: jnp.ndarray, offset: jnp.ndarray, mask: jnp.ndarray,
                          kernel: jnp.ndarray, bias: jnp.ndarray | None = None,
                          stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                          dilation: int | tuple[int, int] = 1, chunk_rows: int | None = None,
                          precision: Any = None) -> jnp.ndarray:
  """DCNv2 in NHWC: x [N, H, W, Cin], offset [N, Ho, Wo, 2K] (dy, dx interleaved per tap),
  mask [N, Ho, Wo, K] (the modulation, already through the sigmoid), kernel HWIO
  [kh, kw, Cin, Cout], bias [Cout] -> [N, Ho, Wo, Cout] in x's dtype.

  Sampling coordinates and bilinear weights are float32 (float64 for float64 offsets) whatever
  x's dtype; the columns and the product are in x's dtype. Unlike in the original's kernel, the
  bias is added after the product.

  ``chunk_rows=r`` computes the output in blocks of r rows with ``lax.map`` and rematerialises
  each block in the backward pass (``jax.checkpoint``), so only the inputs are kept and the
  columns alive at a time are those of one block (:func:`column_bytes`): 8 * r * 69 * 9 * 128 *
  4 B, 2.5 MB per row at C3 (r = 8: 20.3 MB), at the price of a second sampling pass in the
  backward. XLA:CPU's temporary buffers for one C3 layer (69x69, 128 -> 128, batch 8), forward /
  forward + backward: 196 MB / 1.66 GB unchunked, 66 MB / 316 MB with chunk_rows=8 (other
  backends assign buffers differently).
  """
  kernel_hw, stride, padding, dilation = kernel.shape[:2], _pair(stride), _pair(padding), \
      _pair(dilation)
  n, h, w, cin = x.shape
  ho, wo = (output_size(s, k, st, p, d)
            for s, k, st, p, d in zip((h, w), kernel_hw, stride, padding, dilation))
  taps = kernel_hw[0] * kernel_hw[1]
  if offset.shape != (n, ho, wo, 2 * taps) or mask.shape != (n, ho, wo, taps):
    raise ValueError(f'offset {offset.shape} / mask {mask.shape} do not fit the output '
                     f'{(n, ho, wo)} with {taps} taps')
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(-1, cin)
  weight = kernel.astype(x.dtype).reshape(taps * cin, -1)
  offset = offset.astype(jnp.promote_types(offset.dtype, jnp.float32))

  def block(offset, mask, rows):
    cols = _sample_columns(xp, offset, mask, rows, (h, w), kernel_hw, stride, padding, dilation)
    cols = cols.reshape(-1, taps * cin)
    return jnp.dot(cols, weight, precision=precision).reshape(n, rows.shape[0], wo, -1)

  if not chunk_rows or chunk_rows >= ho:
    out = block(offset, mask, jnp.arange(ho, dtype=jnp.int32))
  else:
    blocks = -(-ho // chunk_rows)
    extra = blocks * chunk_rows - ho  # padded rows: zero modulation, cut off below

    def split(a):
      a = jnp.pad(a, ((0, 0), (0, extra), (0, 0), (0, 0)))
      return jnp.moveaxis(a.reshape(n, blocks, chunk_rows, *a.shape[2:]), 1, 0)

    rows = jnp.arange(blocks * chunk_rows, dtype=jnp.int32).reshape(blocks, chunk_rows)
    out = lax.map(jax.checkpoint(lambda args: block(*args)), (split(offset), split(mask), rows))
    out = jnp.moveaxis(out, 0, 1).reshape(n, blocks * chunk_rows, wo, -1)[:, :ho]
  if bias is not None:
    out = out + bias.astype(out.dtype)
  return out


class ModulatedDeformConv(nn.Module):
  """YOLACT++'s DCN (DCNv2 with its own offset/modulation conv), NHWC: [B, H, W, Cin] ->
  [B, Ho, Wo, features].

  ``conv_offset_mask`` (a plain conv, same kernel size, stride, padding, with bias; zero-initialised
  so that the layer starts as 0.5 x the plain conv) gives 3K channels: the first 2K are the
  offsets (dy, dx) per tap, the last K go through a sigmoid to the modulation. It takes the
  layer's dilation; the original's ignores it, which only matches shapes for dilation 1, the only
  value YOLACT++ uses.

  Parameters (float32) and the original's state_dict keys, for the module named ``conv2``:

      conv2/kernel                   [k, k, Cin, features]  conv2.weight                   (OIHW)
      conv2/bias                     [features]             conv2.bias
      conv2/conv_offset_mask/kernel  [k, k, Cin, 3 k k]     conv2.conv_offset_mask.weight  (OIHW)
      conv2/conv_offset_mask/bias    [3 k k]                conv2.conv_offset_mask.bias

  ``dtype`` is the computation dtype (the sampling coordinates stay float32); ``chunk_rows``
  bounds the column memory (:func:`modulated_deform_conv`).
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 1
  dilation: int = 1
  use_bias: bool = True
  chunk_rows: int | None = None
  kernel_init: Any = he_normal
  dtype: Any = jnp.float32
  precision: Any = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k, taps = self.kernel_size, self.kernel_size ** 2
    x = x.astype(self.dtype)
    offset_mask = nn.Conv(
        3 * taps, (k, k), strides=(self.stride,) * 2, padding=((self.padding,) * 2,) * 2,
        kernel_dilation=(self.dilation,) * 2, use_bias=True,
        kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros, dtype=self.dtype,
        param_dtype=jnp.float32, precision=self.precision, name='conv_offset_mask',
        conv_general_dilated=conv_general_dilated)(x)
    offset, mask = offset_mask[..., :2 * taps], jax.nn.sigmoid(offset_mask[..., 2 * taps:])
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features),
                        jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
            if self.use_bias else None)
    return modulated_deform_conv(x, offset, mask, kernel, bias, self.stride, self.padding,
                                 self.dilation, self.chunk_rows, self.precision)
