"""The CPU rewrites of a 2-D convolution: the same sums as matrix products, NHWC / HWIO.

Two rewrites, each the same sums in another order (float32 rounding differences only):

* A 1x1 convolution without padding (the bottlenecks' conv1/conv3, the downsample shortcuts,
  the FPN laterals) IS a matrix product over the channels: :func:`pointwise_conv` and its input
  gradient :func:`pointwise_input_grad`; its weight gradient is :func:`weight_grad_by_matmul`
  with one tap.
* The weight gradient of any convolution is one matrix product per kernel tap, per kernel row
  or, for inputs with few channels, over all taps at once (:func:`weight_grad_by_matmul`).

XLA:CPU's own convolutions are slow for these cases; :func:`weight_grad_rule` says for which
weight shapes the products win on this machine's CPU. Nothing here looks at the JAX platform:
:mod:`yolact_jax.ops.conv` decides where these run (on CPU only) and is what the network calls.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax.numpy as jnp
from jax import lax

# Inputs with at most this many channels (the stem's 3) always take the products: XLA:CPU's
# weight gradient wastes its vector lanes on them.
MATMUL_MAX_FEW_INPUT_CHANNELS = 4


@dataclasses.dataclass(frozen=True)
class WeightGradRule:
  """When and how the weight gradient of a kernel larger than 1x1 is computed as products.

  XLA:CPU's own weight gradient and its products run at very different speeds on different
  CPUs, so the rule is measured per CPU vendor (docs/performance.md, CPU convolutions)."""
  min_positions: int  # products from this many contracted positions (batch x output positions)
  min_channels: int  # ... with at least this many channels on both sides
  per_row: bool  # one product per kernel row (its taps' windows side by side), not per tap
  # inputs with at most this many channels: one product over all taps, channels first
  stacked_max_channels: int


WEIGHT_GRAD_RULES = {
    # AMD EPYC: XLA's weight gradient holds 130-180 GFLOP/s below ~10 000 contracted positions
    # and for the 64-channel ResNet layer1, so the products only pay past both.
    'AuthenticAMD': WeightGradRule(min_positions=16384, min_channels=128, per_row=False,
                                   stacked_max_channels=0),
    # Intel Xeon (Sapphire Rapids): XLA's weight gradient is 1.4-4.9x slower than the products at
    # every 3x3 size of the network; only narrow outputs (the box head's 12 channels) keep it.
    # A product per kernel row beats one per tap by 1.1-1.6x (wider products).
    'GenuineIntel': WeightGradRule(min_positions=0, min_channels=32, per_row=True,
                                   stacked_max_channels=MATMUL_MAX_FEW_INPUT_CHANNELS),
}
DEFAULT_VENDOR = 'GenuineIntel'  # any other CPU


@functools.cache
def cpu_vendor() -> str:
  """This machine's CPU vendor as /proc/cpuinfo names it (``GenuineIntel``, ``AuthenticAMD``),
  or ``''`` where it cannot be read."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('vendor_id'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return ''


def weight_grad_rule(vendor: str | None = None) -> WeightGradRule:
  """The :class:`WeightGradRule` for ``vendor`` (default: this machine's CPU)."""
  vendor = cpu_vendor() if vendor is None else vendor
  return WEIGHT_GRAD_RULES.get(vendor, WEIGHT_GRAD_RULES[DEFAULT_VENDOR])


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


def weight_grad_by_matmul(x: jnp.ndarray, dy: jnp.ndarray, kernel_hw: tuple[int, int],
                          strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
                          rule: WeightGradRule | None = None) -> jnp.ndarray:
  """dW [kh, kw, Cin, Cout] of an NHWC/HWIO convolution from its input x [N, H, W, Cin] and
  output gradient dy [N, Ho, Wo, Cout]: per kernel tap, the input window shifted by (i, j)
  contracted with the output gradient over the batch and the output positions:

      dW[i, j] = sum_{n, y, x} X_pad[n, s*y + i, s*x + j, :]^T  dY[n, y, x, :]     ([Cin, Cout])

  Both operands hold the contracted positions as rows, so one is transposed first
  (:func:`_transposed`) and every product has the plain [M, K] x [K, N] form. How the taps
  are grouped into products is ``rule``'s (default: this CPU's :func:`weight_grad_rule`):

  * one product per tap; the operand with fewer channels is transposed (the input windows, or
    else the output gradient once for all taps);
  * with ``rule.per_row``, one product per kernel row: the output gradient transposed once
    against the row's windows side by side ([M, kw x Cin]);
  * for inputs of at most ``rule.stacked_max_channels`` channels (the stem's 3), one product
    over all taps: the padded input transposed once to channels first and its windows stacked
    as rows ([taps x Cin, M]) against the output gradient.
  """
  rule = weight_grad_rule() if rule is None else rule
  # Accumulate in float32 at least (XLA:CPU has no bf16 x bf16 -> f32 product).
  accumulate = jnp.promote_types(x.dtype, jnp.float32)
  x, dy = x.astype(accumulate), dy.astype(accumulate)
  (n, ho, wo, cout), cin = dy.shape, x.shape[-1]
  (kh, kw), positions = kernel_hw, n * ho * wo
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  if kh * kw > 1 and cin <= rule.stacked_max_channels:
    xt = _transposed(xp, (3, 0, 1, 2))  # [Cin, N, Hp, Wp]
    windows = jnp.stack(_windows(xt, (ho, wo), kernel_hw, strides, first_spatial_axis=2))
    return jnp.dot(windows.reshape(kh * kw * cin, positions), dy.reshape(positions, cout)).reshape(
        kh, kw, cin, cout)
  dy = dy.reshape(positions, cout)
  windows = [w.reshape(positions, cin) for w in _windows(xp, (ho, wo), kernel_hw, strides)]
  if kh * kw > 1 and rule.per_row:
    dy_t = _transposed(dy)
    dw = jnp.stack([jnp.dot(dy_t, jnp.concatenate(windows[i * kw:(i + 1) * kw], axis=1))
                    for i in range(kh)])  # [kh, Cout, kw x Cin]
    return dw.reshape(kh, cout, kw, cin).transpose(0, 2, 3, 1)
  if cin < cout:
    dw = jnp.stack([jnp.dot(_transposed(w), dy) for w in windows])  # [taps, Cin, Cout]
  else:
    dy_t = _transposed(dy)
    dw = jnp.stack([jnp.dot(dy_t, w).T for w in windows])
  return dw.reshape(kh, kw, cin, cout)


def _windows(xp: jnp.ndarray, out_hw: tuple[int, int], kernel_hw: tuple[int, int],
             strides: tuple[int, int], first_spatial_axis: int = 1) -> list[jnp.ndarray]:
  """The window of every kernel tap (i, j), in row-major order, of a padded input whose two
  spatial axes start at ``first_spatial_axis`` ([N, Hp, Wp, C] -> [N, Ho, Wo, C] by default)."""
  (ho, wo), (sh, sw), a = out_hw, strides, first_spatial_axis
  def window(i, j):
    start, limit, step = [0] * xp.ndim, list(xp.shape), [1] * xp.ndim
    start[a:a + 2] = i, j
    limit[a:a + 2] = i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1
    step[a:a + 2] = sh, sw
    return lax.slice(xp, start, limit, step)
  return [window(i, j) for i in range(kernel_hw[0]) for j in range(kernel_hw[1])]


def _transposed(a: jnp.ndarray, axes: Sequence[int] | None = None) -> jnp.ndarray:
  """``a.transpose(axes)`` computed from ``a`` in a buffer of its own.

  Left to itself XLA:CPU fuses the transpose with the element-wise work that produces ``a``
  (a BatchNorm's backward, residual sums, ReLU masks) and recomputes all of it in transposed
  order, far below memory speed (280 ms for one 78 MB operand in the batch-8 step, against
  17 ms for the plain transposing copy); an optimisation barrier does not stop that fusion.
  A conditional does: XLA fuses nothing across one and keeps it unless its predicate is a
  constant, so the transpose sits in both branches of a conditional on whether ``a``'s first
  element is NaN, the operand is written in its natural order, and the transposing copy reads
  it from memory. Both branches are the same, so the value never depends on the predicate."""
  transpose = lambda a: jnp.transpose(a, axes)
  return lax.cond(jnp.isnan(a[(0,) * a.ndim]), transpose, transpose, a)


def matmul_weight_grad_pays(w_shape: Sequence[int], out_shape: Sequence[int],
                            rule: WeightGradRule | None = None) -> bool:
  """Whether :func:`weight_grad_by_matmul` beats XLA:CPU's weight gradient for a kernel
  ``w_shape`` [kh, kw, Cin, Cout] and output ``out_shape`` [N, Ho, Wo, Cout]: always for 1x1
  kernels and for inputs of at most ``MATMUL_MAX_FEW_INPUT_CHANNELS`` channels; for larger
  kernels where ``rule`` (default: this CPU's :func:`weight_grad_rule`) says so."""
  kh, kw, cin, cout = w_shape
  if kh * kw == 1 or cin <= MATMUL_MAX_FEW_INPUT_CHANNELS:
    return True
  rule = weight_grad_rule() if rule is None else rule
  positions = out_shape[0] * out_shape[1] * out_shape[2]
  return positions >= rule.min_positions and min(cin, cout) >= rule.min_channels
