"""The CPU rewrites of a 2-D convolution: the same sums as matrix products, NHWC / HWIO.

Two rewrites, each the same sums in another order (float32 rounding differences only):

* A 1x1 convolution without padding (the bottlenecks' conv1/conv3, the downsample shortcuts,
  the FPN laterals) IS a matrix product over the channels: :func:`pointwise_conv` and its input
  gradient :func:`pointwise_input_grad`; its weight gradient is :func:`weight_grad_by_matmul`
  with one tap.
* The weight gradient of any convolution is, per kernel tap, one matrix product
  (:func:`weight_grad_by_matmul`).

XLA:CPU's own convolutions are slow for these cases; :func:`matmul_weight_grad_pays` says for
which weight shapes the products win. Nothing here looks at the platform:
:mod:`yolact_jax.ops.conv` decides where these run (on CPU only) and is what the network calls.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
from jax import lax

# 3x3 and larger kernels: XLA:CPU's weight gradient falls behind the products as the contracted
# positions (batch x output positions) grow, unless the channels are few; and it wastes its
# vector lanes on an input with a handful of channels (the stem's 3). Measured, docs/performance.md.
MATMUL_MIN_POSITIONS = 16384  # batch x output positions: 2 x 138 x 138 pays, 2 x 69 x 69 does not
MATMUL_MIN_CHANNELS = 128  # min(Cin, Cout): the 64-channel ResNet layer1 stays with XLA
MATMUL_MAX_FEW_INPUT_CHANNELS = 4  # inputs with at most this many channels always pay


def is_pointwise(w_shape: Sequence[int], padding: tuple[tuple[int, int], ...]) -> bool:
  """Whether a convolution with kernel ``w_shape`` [kh, kw, Cin, Cout] and ``padding`` is a
  1x1 convolution without padding (the case :func:`pointwise_conv` computes)."""
  return tuple(w_shape[:2]) == (1, 1) and all(p == (0, 0) for p in padding)


def pointwise_conv(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int],
                   precision: Any) -> jnp.ndarray:
  """A 1x1 convolution without padding as a product over the channels: x [N, H, W, Cin],
  w [1, 1, Cin, Cout] -> [N, Ho, Wo, Cout] (strided positions sampled first)."""
  if strides != (1, 1):
    x = x[:, ::strides[0], ::strides[1]]
  return lax.dot_general(x, w[0, 0], (((3,), (0,)), ((), ())), precision=precision)


def pointwise_input_grad(dy: jnp.ndarray, w: jnp.ndarray, x_shape: Sequence[int],
                         strides: tuple[int, int], precision: Any) -> jnp.ndarray:
  """dX [N, H, W, Cin] of :func:`pointwise_conv` from dY [N, Ho, Wo, Cout]: dY W^T, spread back
  onto the strided positions (zeros elsewhere)."""
  dx = lax.dot_general(dy, w[0, 0], (((3,), (1,)), ((), ())), precision=precision)
  if strides != (1, 1):  # zeros between and after the sampled rows / columns
    (sh, sw), (ho, wo) = strides, dy.shape[1:3]
    dx = lax.pad(dx, jnp.zeros((), dx.dtype),
                 ((0, 0, 0), (0, x_shape[1] - 1 - (ho - 1) * sh, sh - 1),
                  (0, x_shape[2] - 1 - (wo - 1) * sw, sw - 1), (0, 0, 0)))
  return dx


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
  """dW [kh, kw, Cin, Cout] of an NHWC/HWIO convolution from its input x [N, H, W, Cin] and
  output gradient dy [N, Ho, Wo, Cout]: one product per kernel tap, the input window shifted by
  (i, j) contracted with the output gradient over the batch and the output positions:

      dW[i, j] = sum_{n, y, x} X_pad[n, s*y + i, s*x + j, :]^T  dY[n, y, x, :]     ([Cin, Cout])

  Both operands hold the contracted positions as rows, so one must be transposed: the one with
  fewer channels (the input windows, or else the output gradient once for every tap), as a
  transpose of its own (:func:`_transposed`), and every product then has the plain
  [M, K] x [K, N] form.
  """
  # Accumulate in float32 at least (XLA:CPU has no bf16 x bf16 -> f32 product).
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  x, dy = x.astype(accumulate), dy.astype(accumulate)
  (n, ho, wo, cout), cin = dy.shape, x.shape[-1]
  rows = n * ho * wo
  taps = [tap.reshape(rows, cin) for tap in _windows(x, (ho, wo), kernel_hw, strides, padding)]
  dy = dy.reshape(rows, cout)
  if cin < cout:
    dw = jnp.stack([jnp.dot(_transposed(tap), dy) for tap in taps])  # [taps, Cin, Cout]
  else:
    dy_t = _transposed(dy)
    dw = jnp.stack([jnp.dot(dy_t, tap).T for tap in taps])
  return dw.reshape(*kernel_hw, cin, cout)


def _transposed(a: jnp.ndarray) -> jnp.ndarray:
  """``a.T`` computed on its own. Left to itself, XLA folds the transpose into the product,
  which then transposes the operand inside the fusion that computes it (BatchNorm's backward,
  residual sums), recomputing those in transposed order at a fraction of memory speed (up to
  140 ms for a 39 MB operand); the optimisation barrier keeps the transpose out of the product
  (measured: the step 7% slower without it). XLA may still compute the operand's element-wise
  producers inside the transpose's own fusion (a barrier before the transpose compiles to the
  same program)."""
  return lax.optimization_barrier(a.T)


def matmul_weight_grad_pays(w_shape: Sequence[int], out_shape: Sequence[int]) -> bool:
  """Whether :func:`weight_grad_by_matmul` beats XLA:CPU's weight gradient for a kernel
  ``w_shape`` [kh, kw, Cin, Cout] and output ``out_shape`` [N, Ho, Wo, Cout]: always for 1x1
  kernels and for inputs of at most ``MATMUL_MAX_FEW_INPUT_CHANNELS`` channels; for larger
  kernels from ``MATMUL_MIN_POSITIONS`` contracted positions (N x Ho x Wo) with at least
  ``MATMUL_MIN_CHANNELS`` channels on both sides (measured: ``docs/performance.md``, CPU
  convolutions)."""
  kh, kw, cin, cout = w_shape
  if kh * kw == 1 or cin <= MATMUL_MAX_FEW_INPUT_CHANNELS:
    return True
  positions = out_shape[0] * out_shape[1] * out_shape[2]
  return positions >= MATMUL_MIN_POSITIONS and min(cin, cout) >= MATMUL_MIN_CHANNELS
