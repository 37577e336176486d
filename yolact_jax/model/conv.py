"""2-D convolution computed as matrix products where XLA:CPU's convolutions are slow.

Two things, both the same sums in another order (float32 rounding differences only):

* A 1x1 convolution (the bottlenecks' conv1/conv3, the downsample shortcuts, the FPN laterals)
  IS a matrix product over the channels: forward, input gradient and weight gradient run as
  ``dot_general``, 1.2-2x faster than XLA:CPU's 1x1 convolutions at 138x138 and 69x69.
* The weight gradient of a convolution is, for every kernel tap (i, j), the product of the
  input window shifted by (i, j) and the output gradient, contracted over the batch and the
  output positions:

      dW[i, j] = sum_{n, y, x} X_pad[n, s*y + i, s*x + j, :]^T  dY[n, y, x, :]     ([Cin, Cout])

  XLA:CPU's own weight-gradient convolution is slow for some shapes. Measured on 2 cores,
  batch 2, dW alone (ms, XLA vs products):

      1x1, 138x138, 64 -> 256      103 vs 11     1x1 stride 2, 138x138, 256 -> 512   224 vs 25
      1x1, 69x69, 512 -> 256        55 vs 17     3x3, 138x138, 256 -> 256 (ProtoNet) 1206 vs 475
      3x3, 69x69, 256 -> 256       129 vs 120    3x3, 138x138, 64 -> 64               31 vs 79
      3x3 stride 2, 138, 128->128   23 vs 58     7x7 stride 2, 550x550, 3 -> 64      157 vs 194

  so :func:`matmul_weight_grad_pays` takes the products for every 1x1 convolution and for larger
  kernels only where XLA's is far off (large outputs with many channels). The products contract
  dY (as the left operand) with the input windows: the other orientation makes XLA transpose the
  input inside a fusion that recomputes its producers (BatchNorm, residual sums), which ran at a
  fraction of memory speed (100-270 ms per 39 MB operand).

Both apply on CPU only: :func:`jax.lax.platform_dependent` picks at lowering time, and every other
platform (cuDNN) keeps XLA's convolutions, so one traced program serves every backend.

``conv_general_dilated`` has ``jax.lax.conv_general_dilated``'s signature, so it can be handed to
``flax.linen.Conv(conv_general_dilated=...)``; cases outside the fast path (dilation, grouped
convolution, other layouts, negative padding) fall through to ``jax.lax.conv_general_dilated``.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _xla_conv(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int],
              padding: tuple[tuple[int, int], ...], precision: Any) -> jnp.ndarray:
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                  precision=precision)


def _is_pointwise(w_shape: Sequence[int], padding: tuple[tuple[int, int], ...]) -> bool:
  return tuple(w_shape[:2]) == (1, 1) and all(p == (0, 0) for p in padding)


def _pointwise_conv(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int],
                    precision: Any) -> jnp.ndarray:
  """A 1x1 convolution without padding as a product over the channels."""
  if strides != (1, 1):
    x = x[:, ::strides[0], ::strides[1]]
  return lax.dot_general(x, w[0, 0], (((3,), (0,)), ((), ())), precision=precision)


def _pointwise_input_grad(dy: jnp.ndarray, w: jnp.ndarray, x_shape: Sequence[int],
                          strides: tuple[int, int], precision: Any) -> jnp.ndarray:
  """dX of :func:`_pointwise_conv`: dY W^T, spread back onto the strided positions."""
  dx = lax.dot_general(dy, w[0, 0], (((3,), (1,)), ((), ())), precision=precision)
  if strides != (1, 1):  # zeros between and after the sampled rows / columns
    (sh, sw), (ho, wo) = strides, dy.shape[1:3]
    dx = lax.pad(dx, jnp.zeros((), dx.dtype),
                 ((0, 0, 0), (0, x_shape[1] - 1 - (ho - 1) * sh, sh - 1),
                  (0, x_shape[2] - 1 - (wo - 1) * sw, sw - 1), (0, 0, 0)))
  return dx


def _forward(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int],
             padding: tuple[tuple[int, int], ...], precision: Any) -> jnp.ndarray:
  if not _is_pointwise(w.shape, padding):
    return _xla_conv(x, w, strides, padding, precision)
  return lax.platform_dependent(
      x, w, cpu=lambda x, w: _pointwise_conv(x, w, strides, precision),
      default=lambda x, w: _xla_conv(x, w, strides, padding, precision))


def _windows(x: jnp.ndarray, out_hw: tuple[int, int], kernel_hw: tuple[int, int],
             strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
             ) -> list[jnp.ndarray]:
  """The padded input window [N, Ho, Wo, Cin] of every kernel tap (i, j), in row-major order."""
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  (ho, wo), (sh, sw) = out_hw, strides
  return [lax.slice(xp, (0, i, j, 0),
                    (xp.shape[0], i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, xp.shape[3]),
                    (1, sh, sw, 1))
          for i in range(kernel_hw[0]) for j in range(kernel_hw[1])]


def weight_grad_by_matmul(x: jnp.ndarray, dy: jnp.ndarray, kernel_hw: tuple[int, int],
                          strides: tuple[int, int], padding: tuple[tuple[int, int], ...]
                          ) -> jnp.ndarray:
  """dW [kh, kw, Cin, Cout] of an NHWC/HWIO convolution from its input and output gradient:
  one product dY^T X_tap per kernel tap."""
  # Accumulate in float32 at least (XLA:CPU has no bf16 x bf16 -> f32 product).
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  x, dy = x.astype(accumulate), dy.astype(accumulate)
  contract = (((0, 1, 2), (0, 1, 2)), ((), ()))
  taps = _windows(x, dy.shape[1:3], kernel_hw, strides, padding)
  dw = jnp.stack([lax.dot_general(dy, tap, contract).T for tap in taps])  # [taps, Cin, Cout]
  return dw.reshape(*kernel_hw, x.shape[-1], dy.shape[-1])


# 3x3 and larger kernels: products only from this many output positions x Cin x Cout (the
# ProtoNet's 3x3 conv at 138x138 has 1.25e9; the FPN's and the heads' at 69x69 3.1e8).
MATMUL_MIN_WORK = 2 ** 30


def matmul_weight_grad_pays(w_shape: Sequence[int], out_shape: Sequence[int]) -> bool:
  """Whether :func:`weight_grad_by_matmul` beats XLA:CPU's weight gradient (see the table above)."""
  kh, kw, cin, cout = w_shape
  if kh * kw == 1:
    return True
  return out_shape[1] * out_shape[2] * cin * cout >= MATMUL_MIN_WORK


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d_nhwc(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int],
                padding: tuple[tuple[int, int], ...], precision: Any = None) -> jnp.ndarray:
  """``lax.conv_general_dilated(x, w, strides, padding)`` in NHWC/HWIO; on CPU 1x1 kernels as
  products and the weight gradient as products where that pays."""
  return _forward(x, w, strides, padding, precision)


def _conv2d_fwd(x, w, strides, padding, precision):
  return _forward(x, w, strides, padding, precision), (x, w)


def _conv2d_bwd(strides, padding, precision, residuals, dy):
  x, w = residuals

  def xla_input_grad(dy, w):
    return jax.vjp(lambda x: _xla_conv(x, w, strides, padding, precision), x)[1](dy)[0]

  if _is_pointwise(w.shape, padding):
    dx = lax.platform_dependent(
        dy, w, cpu=lambda dy, w: _pointwise_input_grad(dy, w, x.shape, strides, precision),
        default=xla_input_grad)
  else:
    dx = xla_input_grad(dy, w)

  def by_matmul(x, dy):
    return weight_grad_by_matmul(x, dy, w.shape[:2], strides, padding).astype(w.dtype)

  def by_xla(x, dy):
    _, weight_vjp = jax.vjp(lambda w: _xla_conv(x, w, strides, padding, precision), w)
    return weight_vjp(dy)[0]

  if not matmul_weight_grad_pays(w.shape, dy.shape):
    return dx, by_xla(x, dy)
  return dx, lax.platform_dependent(x, dy, cpu=by_matmul, default=by_xla)


conv2d_nhwc.defvjp(_conv2d_fwd, _conv2d_bwd)


def _is_nhwc(dimension_numbers: Any, ndim: int) -> bool:
  if dimension_numbers is None:
    return False
  if isinstance(dimension_numbers, tuple) and all(isinstance(d, str) for d in dimension_numbers):
    return tuple(dimension_numbers) == NHWC
  return dimension_numbers == lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, NHWC)


def conv_general_dilated(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision: Any = None,
                         preferred_element_type: Any = None) -> jnp.ndarray:
  """Drop-in for ``jax.lax.conv_general_dilated``: :func:`conv2d_nhwc` where it applies."""
  fast = (lhs.ndim == 4 and _is_nhwc(dimension_numbers, 4)
          and not isinstance(padding, str)
          and all(lo >= 0 and hi >= 0 for lo, hi in padding)
          and all(d == 1 for d in (lhs_dilation or (1, 1)))
          and all(d == 1 for d in (rhs_dilation or (1, 1)))
          and feature_group_count == 1 and batch_group_count == 1
          and preferred_element_type is None)
  if not fast:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        batch_group_count=batch_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  return conv2d_nhwc(lhs, rhs, tuple(int(s) for s in window_strides),
                     tuple((int(lo), int(hi)) for lo, hi in padding), precision)
