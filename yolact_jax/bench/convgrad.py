"""The convolution-gradient probe: forward, input gradient and weight gradient of the network's
typical convolutions, each alone, with XLA's convolution, with the network's, and (where PyTorch
is installed) with PyTorch's, the original's kernels (oneDNN on CPU)."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolact_jax.bench.grid import DTYPES, guarded
from yolact_jax.bench.timing import TimingOptions, measure_stage, summarize_times, time_calls
from yolact_jax.ops.conv import conv_general_dilated

# Representative convolutions of yolact_resnet50 / yolact_base at 550 px (per image):
# (name, input h=w, in channels, out channels, kernel, stride).
CONVGRAD_CASES = (
    ('stem 7x7/2 3->64', 550, 3, 64, 7, 2),
    ('layer1 3x3 64->64', 138, 64, 64, 3, 1),
    ('layer2 downsample 1x1/2 256->512', 138, 256, 512, 1, 2),
    ('layer3 3x3 256->256', 35, 256, 256, 3, 1),
    ('layer4 3x3 512->512', 18, 512, 512, 3, 1),
    ('FPN/ProtoNet 3x3 256->256 @P3', 69, 256, 256, 3, 1),
    ('ProtoNet 3x3 256->256 after x2 upsample', 138, 256, 256, 3, 1),
    ('head class scores 3x3 256->243 @P3', 69, 256, 243, 3, 1),
)
# 'xla': jax.lax.conv_general_dilated; 'yolact_jax': the network's (yolact_jax.ops.conv);
# 'pytorch': torch.nn.functional.conv2d and its backward (NCHW), timed by pytorch_gradient_case.
CONV_IMPLS = {'xla': jax.lax.conv_general_dilated, 'yolact_jax': conv_general_dilated}
PYTORCH = 'pytorch'


STAGES = ('forward', 'input_gradient', 'weight_gradient')


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def conv_gradient_case(name: str, size: int | Sequence[int], cin: int, cout: int, kernel: int,
                       stride: int, batch: int, dtype: str, opts: TimingOptions,
                       impl: str = 'xla', padding: int | None = None,
                       stages: Sequence[str] = STAGES) -> dict[str, Any]:
  """One convolution's forward, input gradient (dx) and weight gradient (dw) (those of
  ``stages``), each jitted, on x [batch, h, w, cin] (``size``: h = w, or (h, w)) with a
  ``kernel`` x ``kernel`` x cin x cout kernel and ``padding`` on every side (default
  kernel // 2), by ``impl`` (a key of ``CONV_IMPLS``)."""
  conv_fn = CONV_IMPLS[impl]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, *_hw(size), cin)), DTYPES[dtype])
  w = jnp.asarray(rng.standard_normal((kernel, kernel, cin, cout)) * 0.02, DTYPES[dtype])
  pad = ((kernel // 2 if padding is None else padding,) * 2,) * 2

  def conv(x, w):
    return conv_fn(x, w, (stride, stride), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  dy = jnp.ones(jax.eval_shape(conv, x, w).shape, DTYPES[dtype])
  programs = {'forward': (jax.jit(conv), (x, w)),
              'input_gradient': (jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
                                 (x, w, dy)),
              'weight_gradient': (jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
                                  (x, w, dy))}
  timed = [measure_stage(stage, fn, args, opts)[0] for stage, (fn, args) in programs.items()
           if stage in stages]
  return {'conv': name, 'impl': impl, 'input_size': size, 'in_channels': cin,
          'out_channels': cout, 'kernel': kernel, 'stride': stride, 'batch': batch,
          'dtype': dtype, 'stages': timed}


def pytorch_gradient_case(name: str, size: int | Sequence[int], cin: int, cout: int,
                          kernel: int, stride: int, batch: int, dtype: str, opts: TimingOptions,
                          padding: int | None = None, stages: Sequence[str] = STAGES
                          ) -> dict[str, Any]:
  """:func:`conv_gradient_case` for PyTorch's convolution (float32, NCHW, PyTorch's threads):
  ``conv2d`` and ``aten.convolution_backward`` for the input or the weight gradient alone, the
  calls autograd makes in the original's train step."""
  import torch
  if dtype != 'float32':
    raise ValueError(f'pytorch_gradient_case: float32 only, got {dtype}')
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.standard_normal((batch, cin, *_hw(size)), np.float32))
  w = torch.from_numpy((rng.standard_normal((cout, cin, kernel, kernel)) * 0.02).astype(np.float32))
  pad = kernel // 2 if padding is None else padding
  with torch.no_grad():
    dy = torch.ones_like(torch.nn.functional.conv2d(x, w, None, stride, pad))

    def backward(input_grad: bool, weight_grad: bool):
      return lambda: torch.ops.aten.convolution_backward(
          dy, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1,
          [input_grad, weight_grad, False])
    calls = {'forward': lambda: torch.nn.functional.conv2d(x, w, None, stride, pad),
             'input_gradient': backward(True, False), 'weight_gradient': backward(False, True)}
    timed = [{'stage': stage, 'flops': None,
              **summarize_times(time_calls(fn, opts.repeats, opts.warmup, opts.max_seconds,
                                           wait=None))}
             for stage, fn in calls.items() if stage in stages]
  return {'conv': name, 'impl': PYTORCH, 'input_size': size, 'in_channels': cin,
          'out_channels': cout, 'kernel': kernel, 'stride': stride, 'batch': batch,
          'dtype': dtype, 'threads': torch.get_num_threads(), 'stages': timed}


def run_convgrad(batch: int, dtype: str, opts: TimingOptions, log: Callable) -> list[dict]:
  """Forward vs gradient cost of the network's typical convolutions: on XLA:CPU some weight
  gradients run far below the forward's FLOP rate, which dominates the train step. PyTorch's
  rows are added where it is installed."""
  impls = list(CONV_IMPLS) + ([PYTORCH] if importlib.util.find_spec('torch') else [])
  results = []
  for case in CONVGRAD_CASES:
    for impl in impls:
      log(f'convgrad {case[0]} batch {batch} {dtype} {impl}')
      run = ((lambda: pytorch_gradient_case(*case, batch, dtype, opts)) if impl == PYTORCH else
             (lambda: conv_gradient_case(*case, batch, dtype, opts, impl)))
      results.append(guarded(run, {'conv': case[0], 'impl': impl}, log))
  return results
