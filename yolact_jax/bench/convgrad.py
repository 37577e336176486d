"""The convolution-gradient probe: forward, input gradient and weight gradient of the network's
typical convolutions, each alone, with XLA's convolution and with the network's."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from yolact_jax.bench.grid import DTYPES, guarded
from yolact_jax.bench.timing import TimingOptions, measure_stage
from yolact_jax.ops.conv import conv_general_dilated

# Representative convolutions of yolact_resnet50 / yolact_base at 550 px (per image):
# (name, input h=w, in channels, out channels, kernel, stride).
CONVGRAD_CASES = (
    ('stem 7x7/2 3->64', 550, 3, 64, 7, 2),
    ('layer1 3x3 64->64', 138, 64, 64, 3, 1),
    ('layer2 downsample 1x1/2 256->512', 138, 256, 512, 1, 2),
    ('FPN/ProtoNet 3x3 256->256 @P3', 69, 256, 256, 3, 1),
    ('ProtoNet 3x3 256->256 after x2 upsample', 138, 256, 256, 3, 1),
    ('head class scores 3x3 256->243 @P3', 69, 256, 243, 3, 1),
)
# 'xla': jax.lax.conv_general_dilated; 'yolact_jax': the network's (yolact_jax.ops.conv).
CONV_IMPLS = {'xla': jax.lax.conv_general_dilated, 'yolact_jax': conv_general_dilated}


def conv_gradient_case(name: str, size: int, cin: int, cout: int, kernel: int, stride: int,
                       batch: int, dtype: str, opts: TimingOptions, impl: str = 'xla'
                       ) -> dict[str, Any]:
  """One convolution's forward, input gradient (dx) and weight gradient (dw), each jitted, on
  x [batch, size, size, cin] with a ``kernel`` x ``kernel`` x cin x cout kernel, by ``impl``
  (a key of ``CONV_IMPLS``)."""
  conv_fn = CONV_IMPLS[impl]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), DTYPES[dtype])
  w = jnp.asarray(rng.standard_normal((kernel, kernel, cin, cout)) * 0.02, DTYPES[dtype])
  pad = ((kernel // 2, kernel // 2),) * 2

  def conv(x, w):
    return conv_fn(x, w, (stride, stride), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  dy = jnp.ones(jax.eval_shape(conv, x, w).shape, DTYPES[dtype])
  programs = {'forward': (jax.jit(conv), (x, w)),
              'input_gradient': (jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
                                 (x, w, dy)),
              'weight_gradient': (jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
                                  (x, w, dy))}
  stages = [measure_stage(stage, fn, args, opts)[0] for stage, (fn, args) in programs.items()]
  return {'conv': name, 'impl': impl, 'input_size': size, 'in_channels': cin,
          'out_channels': cout, 'kernel': kernel, 'stride': stride, 'batch': batch,
          'dtype': dtype, 'stages': stages}


def run_convgrad(batch: int, dtype: str, opts: TimingOptions, log: Callable) -> list[dict]:
  """Forward vs gradient cost of the network's typical convolutions: on XLA:CPU some weight
  gradients run far below the forward's FLOP rate, which dominates the train step."""
  results = []
  for case in CONVGRAD_CASES:
    for impl in CONV_IMPLS:
      log(f'convgrad {case[0]} batch {batch} {dtype} {impl}')
      results.append(guarded(lambda: conv_gradient_case(*case, batch, dtype, opts, impl),
                             {'conv': case[0], 'impl': impl}, log))
  return results
