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

# 3x3 and larger kernels: products only from this many output positions x Cin x Cout (the
# ProtoNet's 3x3 conv at 138x138 has 1.25e9; the FPN's and the heads' at 69x69 3.1e8).
MATMUL_MIN_WORK = 2 ** 30


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
  output gradient dy [N, Ho, Wo, Cout]: one product dY^T X_tap per kernel tap, the input window
  shifted by (i, j) contracted with the output gradient over the batch and the output positions:

      dW[i, j] = sum_{n, y, x} X_pad[n, s*y + i, s*x + j, :]^T  dY[n, y, x, :]     ([Cin, Cout])

  dY is the left operand: the other orientation makes XLA transpose the input inside a fusion
  that recomputes its producers (BatchNorm, residual sums), which ran at a fraction of memory
  speed.
  """
  # Accumulate in float32 at least (XLA:CPU has no bf16 x bf16 -> f32 product).
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  x, dy = x.astype(accumulate), dy.astype(accumulate)
  contract = (((0, 1, 2), (0, 1, 2)), ((), ()))
  taps = _windows(x, dy.shape[1:3], kernel_hw, strides, padding)
  dw = jnp.stack([lax.dot_general(dy, tap, contract).T for tap in taps])  # [taps, Cin, Cout]
  return dw.reshape(*kernel_hw, x.shape[-1], dy.shape[-1])


def matmul_weight_grad_pays(w_shape: Sequence[int], out_shape: Sequence[int]) -> bool:
  """Whether :func:`weight_grad_by_matmul` beats XLA:CPU's weight gradient for a kernel
  ``w_shape`` [kh, kw, Cin, Cout] and output ``out_shape`` [N, Ho, Wo, Cout]: always for 1x1
  kernels, for larger ones from ``MATMUL_MIN_WORK`` output positions x Cin x Cout (measured:
  ``docs/performance.md``, CPU convolutions)."""
  kh, kw, cin, cout = w_shape
  if kh * kw == 1:
    return True
  return out_shape[1] * out_shape[2] * cin * cout >= MATMUL_MIN_WORK
