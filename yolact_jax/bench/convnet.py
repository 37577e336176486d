"""Every convolution of a preset's network at the train step's shapes, each timed alone and
summed over the network: how much of one train step the convolutions take with the network's
convolution (``yolact_jax/ops/conv.py``) and with PyTorch's (the original's kernels, where
PyTorch is installed).

The convolutions are read off the traced training-mode forward (every
``conv_general_dilated`` of its jaxpr, nested ones included), so the list follows the preset:
backbone, FPN, ProtoNet, prediction head at every level, semantic segmentation head. Each
distinct (input shape, kernel, stride, padding) is timed once (:mod:`yolact_jax.bench.convgrad`:
forward, input gradient, weight gradient) and counted as often as the network has it; the
first convolution's input is the image, so it has no input gradient in a train step. Deformable
convolutions (YOLACT++) are not ``conv_general_dilated`` and are not in the list."""

from __future__ import annotations

import collections
import importlib.util
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from yolact_jax.bench.convgrad import PYTORCH, STAGES, conv_gradient_case, pytorch_gradient_case
from yolact_jax.bench.grid import guarded
from yolact_jax.bench.timing import TimingOptions

OURS = 'yolact_jax'


def _conv_equations(jaxpr: Any, found: list) -> None:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      found.append(eqn)
    else:
      for sub in jax_core.jaxprs_in_params(eqn.params):
        _conv_equations(sub, found)


def network_convolutions(preset: str, batch: int) -> list[dict[str, Any]]:
  """The distinct convolutions of ``preset``'s network in a train step at ``batch`` images, in
  the order the forward first meets them: name, input_hw, in/out channels, kernel, stride,
  padding, count (how many the network has) and input_gradient (False where the input is the
  image)."""
  from yolact_jax.config import get_config
  from yolact_jax.model.variables import abstract_variables
  from yolact_jax.model.yolact import Yolact

  cfg = get_config(preset)
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  variables = abstract_variables(cfg)
  image = jax.ShapeDtypeStruct((batch, cfg.max_size, cfg.max_size, 3), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats'])[0])(
      variables, image)
  found: list = []
  _conv_equations(jaxpr.jaxpr, found)
  counts: collections.Counter = collections.Counter()
  for eqn in found:
    x_shape, w_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    strides, padding = tuple(eqn.params['window_strides']), tuple(map(tuple, eqn.params['padding']))
    kh, kw, cin, cout = w_shape
    if kh != kw or len(set(strides)) != 1 or len({p for pair in padding for p in pair}) != 1:
      raise ValueError(f'{preset}: convolution {w_shape} stride {strides} padding {padding} is '
                       'not square with the same padding on every side')
    counts[(tuple(x_shape[1:3]), cin, cout, kh, strides[0], padding[0][0])] += 1
  return [{'conv': f'{k}x{k}/{s} {cin}->{cout} @{hw[0]}x{hw[1]}', 'input_hw': list(hw),
           'in_channels': cin, 'out_channels': cout, 'kernel': k, 'stride': s, 'padding': p,
           'count': n, 'input_gradient': (batch, *hw, cin) != image.shape}
          for (hw, cin, cout, k, s, p), n in counts.items()]


def _timed(conv: dict[str, Any], impl: str, batch: int, opts: TimingOptions) -> dict[str, Any]:
  stages = [s for s in STAGES if s != 'input_gradient' or conv['input_gradient']]
  args = (conv['conv'], conv['input_hw'], conv['in_channels'], conv['out_channels'],
          conv['kernel'], conv['stride'], batch, 'float32', opts)
  if impl == PYTORCH:
    return pytorch_gradient_case(*args, padding=conv['padding'], stages=stages)
  return conv_gradient_case(*args, impl=impl, padding=conv['padding'], stages=stages)


def network_totals(convs: list[dict[str, Any]], impl: str) -> dict[str, Any]:
  """ms per train step of ``impl``'s convolutions: each stage's median times the count, summed
  over the network; ``complete`` is False where a convolution failed or was not timed."""
  totals = {f'{stage}_ms': 0.0 for stage in STAGES}
  complete = True
  for conv in convs:
    case = conv['impls'].get(impl)
    if not case or 'error' in case:
      complete = False
      continue
    for stage in case['stages']:
      totals[f'{stage["stage"]}_ms'] += conv['count'] * stage['median_ms']
  return {**totals, 'total_ms': sum(totals.values()), 'complete': complete}


def run_convnet(preset: str, batch: int, opts: TimingOptions, log: Callable,
                impls: tuple[str, ...] | None = None) -> dict[str, Any]:
  """Every convolution of ``preset`` at ``batch`` timed alone by each of ``impls`` (default:
  ours, and PyTorch's where installed), and their sums per train step."""
  if impls is None:
    impls = (OURS,) + ((PYTORCH,) if importlib.util.find_spec('torch') else ())
  convs = network_convolutions(preset, batch)
  for i, conv in enumerate(convs):
    conv['impls'] = {}
    for impl in impls:
      log(f'convnet {preset} batch {batch} [{i + 1}/{len(convs)}] {conv["conv"]} {impl}')
      conv['impls'][impl] = guarded(lambda: _timed(conv, impl, batch, opts),
                                    {'conv': conv['conv'], 'impl': impl}, log)
  return {'preset': preset, 'batch': batch, 'impls': list(impls),
          'num_convolutions': sum(c['count'] for c in convs), 'convolutions': convs,
          'totals': {impl: network_totals(convs, impl) for impl in impls}}
