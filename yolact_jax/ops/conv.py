"""The network's 2-D convolution: XLA's, or on CPU the rewrites of :mod:`yolact_jax.ops.cpu_conv`.

:func:`conv_general_dilated` has ``jax.lax.conv_general_dilated``'s signature, so it is handed to
``flax.linen.Conv(conv_general_dilated=...)`` (``yolact_jax.model.layers.conv``). Cases outside
the rewrites (dilation, grouped convolution, other layouts, string or negative padding) fall
through to ``jax.lax.conv_general_dilated``. The rest goes through :func:`conv2d_nhwc`, a custom
VJP whose forward, input gradient and weight gradient each pick their implementation in
:func:`_cpu_or_xla`, the one place the platform matters: on CPU a 1x1 convolution without
padding as products, and the weight gradient of larger kernels as products where
:func:`~yolact_jax.ops.cpu_conv.matmul_weight_grad_pays` says so for this machine's CPU
(:func:`~yolact_jax.ops.cpu_conv.weight_grad_rule`); elsewhere (cuDNN ...) XLA's throughout.

The pick is ``jax.lax.platform_dependent``, resolved when the program is lowered, so one traced
program serves every backend. It sits inside the custom VJP's rules (never differentiated
through), so lowered for one platform the program holds that platform's branch only.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from yolact_jax.ops import cpu_conv

NHWC = ('NHWC', 'HWIO', 'NHWC')
Padding = tuple[tuple[int, int], ...]


def _cpu_or_xla(a: jnp.ndarray, b: jnp.ndarray, cpu: Callable, xla: Callable) -> jnp.ndarray:
  """``cpu(a, b)`` in a program lowered for CPU, ``xla(a, b)`` for any other platform."""
  return lax.platform_dependent(a, b, cpu=cpu, default=xla)


def _xla_conv(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], padding: Padding,
              precision: Any) -> jnp.ndarray:
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=NHWC,
                                  precision=precision)


def _forward(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], padding: Padding,
             precision: Any) -> jnp.ndarray:
  if not cpu_conv.is_pointwise(w.shape, padding):
    return _xla_conv(x, w, strides, padding, precision)
  return _cpu_or_xla(x, w, lambda x, w: cpu_conv.pointwise_conv(x, w, strides, precision),
                     lambda x, w: _xla_conv(x, w, strides, padding, precision))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d_nhwc(x: jnp.ndarray, w: jnp.ndarray, strides: tuple[int, int], padding: Padding,
                precision: Any = None) -> jnp.ndarray:
  """``lax.conv_general_dilated(x, w, strides, padding)`` in NHWC/HWIO: x [N, H, W, Cin],
  w [kh, kw, Cin, Cout] -> [N, Ho, Wo, Cout]; on CPU with the rewrites where they apply."""
  return _forward(x, w, strides, padding, precision)


def _conv2d_fwd(x, w, strides, padding, precision):
  return _forward(x, w, strides, padding, precision), (x, w)


def _input_grad(x, w, dy, strides, padding, precision):
  def by_xla(dy, w):
    return jax.vjp(lambda x: _xla_conv(x, w, strides, padding, precision), x)[1](dy)[0]

  if not cpu_conv.is_pointwise(w.shape, padding):
    return by_xla(dy, w)
  return _cpu_or_xla(
      dy, w, lambda dy, w: cpu_conv.pointwise_input_grad(dy, w, x.shape, strides, precision),
      by_xla)


def _weight_grad(x, w, dy, strides, padding, precision):
  rule = cpu_conv.weight_grad_rule()

  def by_matmul(x, dy):
    return cpu_conv.weight_grad_by_matmul(x, dy, w.shape[:2], strides, padding,
                                          rule).astype(w.dtype)

  def by_xla(x, dy):
    return jax.vjp(lambda w: _xla_conv(x, w, strides, padding, precision), w)[1](dy)[0]

  if not cpu_conv.matmul_weight_grad_pays(w.shape, dy.shape, rule):
    return by_xla(x, dy)
  return _cpu_or_xla(x, dy, by_matmul, by_xla)


def _conv2d_bwd(strides, padding, precision, residuals, dy):
  x, w = residuals
  return (_input_grad(x, w, dy, strides, padding, precision),
          _weight_grad(x, w, dy, strides, padding, precision))


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
