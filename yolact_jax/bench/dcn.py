"""The DCN section (YOLACT++): what the deformable convolutions cost, in the network (forward, at
the inference batch) and in the train step (forward + backward, at the train batch), two ways:

* each distinct DCN layer alone at its real shape (:func:`time_layer`) next to the plain 3x3
  convolution it replaces; summed over the layers (times their count) and divided by the whole
  program's time, the DCN layers' share;
* the whole network / train step against the same preset with ``model.backbone.dcn_layers``
  zeroed (every DCN a plain 3x3 conv, nothing else changed): what the DCNs add inside the fused
  program.

The two need not agree exactly: XLA fuses and schedules a layer differently alone and inside the
network, and the shares are of medians taken at different moments of a shared machine's load.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from yolact_jax.bench.grid import DTYPES, guarded
from yolact_jax.bench.inputs import random_network_input
from yolact_jax.bench.timing import TimingOptions, measure_stage
from yolact_jax.bench.train import train_case
from yolact_jax.config import get_config
from yolact_jax.model.dcn import ModulatedDeformConv
from yolact_jax.model.variables import abstract_variables, init_variables
from yolact_jax.model.yolact import Yolact
from yolact_jax.ops.conv import conv_general_dilated

NO_DCN = 'model.backbone.dcn_layers=(0, 0, 0, 0)'
OFFSET_GAIN = 2.0  # offset conv weights ~ N(0, gain^2 / fan_in): offsets of ~1-3 px


def dcn_layer_calls(cfg: Any, batch: int, dtype: Any, train: bool) -> list[dict[str, Any]]:
  """The network's DCN calls on a [batch, S, S, 3] input, grouped: per distinct (module
  settings, input shape) one entry ``{'layer': unbound module, 'input_shape', 'count',
  'names'}``, in order of first call. The network is traced abstractly (``jax.eval_shape``)
  with a method interceptor recording every :class:`ModulatedDeformConv` call."""
  model = Yolact(cfg.model, num_classes=cfg.num_classes, dtype=dtype)
  x = jax.ShapeDtypeStruct((batch, cfg.max_size, cfg.max_size, 3), jnp.float32)
  calls: dict[tuple, dict[str, Any]] = collections.OrderedDict()

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, ModulatedDeformConv) and context.method_name == '__call__':
      layer = module.clone(parent=None, name=None)
      key = (repr(layer), tuple(args[0].shape), str(args[0].dtype))
      entry = calls.setdefault(key, {'layer': layer, 'input_shape': tuple(args[0].shape),
                                     'input_dtype': args[0].dtype, 'count': 0, 'names': []})
      entry['count'] += 1
      entry['names'].append('/'.join(module.path))
    return next_fun(*args, **kwargs)

  variables = abstract_variables(cfg)
  with nn.intercept_methods(record):
    if train:
      jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']),
                     variables, x)
    else:
      jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return list(calls.values())


def _random_params(layer: nn.Module, x: jnp.ndarray, seed: int) -> dict:
  """The layer's parameters with random offset/modulation conv weights (initially zero)."""
  params = jax.device_get(layer.init(jax.random.PRNGKey(seed), x)['params'])
  rng = np.random.default_rng(seed)
  offset = params['conv_offset_mask']
  fan_in = int(np.prod(offset['kernel'].shape[:-1]))
  offset['kernel'] = rng.normal(0, OFFSET_GAIN / np.sqrt(fan_in), offset['kernel'].shape
                                ).astype(np.float32)
  offset['bias'] = rng.normal(0, 0.5, offset['bias'].shape).astype(np.float32)
  return params


def _plain_conv(layer: ModulatedDeformConv) -> nn.Module:
  """The plain 3x3 convolution a DCN replaces (same features, stride, padding; no bias)."""
  k, pad = layer.kernel_size, layer.padding
  return nn.Conv(layer.features, (k, k), strides=(layer.stride,) * 2,
                 padding=((pad, pad), (pad, pad)), kernel_dilation=(layer.dilation,) * 2,
                 use_bias=False, dtype=layer.dtype, precision=layer.precision,
                 conv_general_dilated=conv_general_dilated)


def _forward_and_backward(module: nn.Module, params: dict, x: jnp.ndarray,
                          backward: bool) -> tuple[Callable, tuple]:
  """(jitted program, its arguments): the forward, or the forward + the parameter and input
  gradient for a random cotangent."""
  def forward(p, x):
    return module.apply({'params': p}, x)
  if not backward:
    return jax.jit(forward), (params, x)
  out = jax.eval_shape(forward, params, x)
  cotangent = jnp.asarray(np.random.default_rng(1).standard_normal(out.shape), out.dtype)

  def forward_backward(p, x, ct):
    _, vjp = jax.vjp(forward, p, x)
    return vjp(ct)
  return jax.jit(forward_backward), (params, x, cotangent)


def time_layer(entry: dict[str, Any], backward: bool, opts: TimingOptions) -> dict[str, Any]:
  """One distinct DCN layer and the plain conv it replaces (the network's convolution, no bias),
  each timed alone at its shape: the forward, or with ``backward`` the forward + the gradient of
  parameters and input (``jax.vjp``). The layer gets random offset/modulation weights."""
  layer = entry['layer']
  x = jnp.asarray(np.random.default_rng(0).standard_normal(entry['input_shape']),
                  entry['input_dtype'])
  stage = 'forward_backward' if backward else 'forward'
  dcn_fn, dcn_args = _forward_and_backward(layer, _random_params(layer, x, 0), x, backward)
  dcn, _ = measure_stage(stage, dcn_fn, dcn_args, opts)
  plain = _plain_conv(layer)
  plain_params = plain.init(jax.random.PRNGKey(0), x)['params']
  plain_fn, plain_args = _forward_and_backward(plain, plain_params, x, backward)
  conv, _ = measure_stage(stage, plain_fn, plain_args, opts)
  return {'input_shape': list(entry['input_shape']), 'features': layer.features,
          'stride': layer.stride, 'chunk_rows': layer.chunk_rows, 'count': entry['count'],
          'names': entry['names'], 'dcn': dcn, 'plain_conv': conv}


def _whole_network(preset: str, batch: int, dtype: str, overrides: Sequence[str],
                   opts: TimingOptions) -> dict[str, Any]:
  """The network (eval mode) of ``preset`` with config ``overrides``, timed."""
  cfg = get_config(preset, list(overrides))
  model = Yolact(cfg.model, num_classes=cfg.num_classes, dtype=DTYPES[dtype])
  variables = init_variables(cfg, seed=0)
  x = jnp.asarray(random_network_input(cfg, batch))
  record, _ = measure_stage('network', jax.jit(lambda v, x: model.apply(v, x, train=False)),
                            (variables, x), opts)
  return record


def _found(results: Sequence[dict] | None, preset: str, batch: int, dtype: str, stage: str
           ) -> dict | None:
  """A stage already timed by another section for the same (preset, batch, dtype)."""
  for case in results or ():
    if (case.get('preset'), case.get('batch'), case.get('dtype')) == (preset, batch, dtype):
      return next((s for s in case.get('stages', []) if s['stage'] == stage), None)
  return None


def _share(layers: list[dict], with_dcn: dict | None, without: dict | None) -> dict[str, Any]:
  """The layers' summed time (x count) against the whole program's, with and without DCN."""
  dcn = sum(l['dcn']['median_ms'] * l['count'] for l in layers if 'error' not in l)
  plain = sum(l['plain_conv']['median_ms'] * l['count'] for l in layers if 'error' not in l)
  whole = with_dcn['median_ms'] if with_dcn else None
  base = without['median_ms'] if without else None
  return {'dcn_layers': sum(l['count'] for l in layers), 'dcn_layers_alone_ms': dcn,
          'plain_convs_alone_ms': plain, 'with_dcn_ms': whole, 'without_dcn_ms': base,
          'share_alone': dcn / whole if whole else None,
          'share_by_difference': (whole - base) / whole if whole and base else None}


def _layers(cfg: Any, batch: int, dtype: str, train: bool, opts: TimingOptions,
            log: Callable) -> list[dict]:
  """:func:`time_layer` for every distinct DCN layer of ``cfg`` at ``batch``."""
  out = []
  for entry in dcn_layer_calls(cfg, batch, DTYPES[dtype], train):
    log(f'  DCN {"x".join(map(str, entry["input_shape"]))} stride {entry["layer"].stride} '
        f'x{entry["count"]} {"forward + backward" if train else "forward"}')
    out.append(guarded(lambda: time_layer(entry, train, opts),
                       {'input_shape': list(entry['input_shape']), 'count': entry['count']},
                       log))
  return out


def dcn_case(preset: str, dtype: str, batch: int, train_batch: int, opts: TimingOptions,
             log: Callable, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
  """The DCN layers' share of ``preset``'s network at ``batch`` and of its train step at
  ``train_batch`` (0: skip the train step). Programs another section already timed on the same
  (preset, batch, dtype) (``earlier``: the run's results so far) are reused, not re-run."""
  earlier = earlier or {}
  cfg = get_config(preset)
  if not any(cfg.model.backbone.dcn_layers):
    raise ValueError(f'{preset} has no DCN layers (model.backbone.dcn_layers all zero)')
  out: dict[str, Any] = {'preset': preset, 'dtype': dtype, 'input_size': cfg.max_size,
                         'batch': batch, 'train_batch': train_batch,
                         'dcn_layers': list(cfg.model.backbone.dcn_layers),
                         'dcn_interval': cfg.model.backbone.dcn_interval}
  log(f'dcn {preset} network batch {batch} {dtype}')
  with_dcn = _found(earlier.get('inference'), preset, batch, dtype, 'network') \
      or _whole_network(preset, batch, dtype, (), opts)
  log(f'dcn {preset} network without DCN')
  without = _whole_network(preset, batch, dtype, (NO_DCN,), opts)
  layers = _layers(cfg, batch, dtype, False, opts, log)
  out['network'] = {'with_dcn': with_dcn, 'without_dcn': without, 'layers': layers,
                    **_share(layers, with_dcn, without)}
  if train_batch:
    log(f'dcn {preset} train step batch {train_batch}')
    found = _found(earlier.get('train'), preset, train_batch, dtype, 'train_step')
    with_dcn = found or train_case(preset, train_batch, dtype, opts)['stages'][0]
    log(f'dcn {preset} train step without DCN')
    without = train_case(preset, train_batch, dtype, opts, overrides=(NO_DCN,))['stages'][0]
    layers = _layers(get_config(preset, [f'train.batch_size={train_batch}']), train_batch,
                     dtype, True, opts, log)
    out['train_step'] = {'with_dcn': with_dcn, 'without_dcn': without, 'layers': layers,
                         **_share(layers, with_dcn, without)}
  return out


def run_dcn(presets: Sequence[str], dtype: str, batch: int, train_batch: int,
            opts: TimingOptions, log: Callable, earlier: dict[str, Any] | None = None
            ) -> list[dict]:
  """:func:`dcn_case` for every preset; a failed one is recorded with its error."""
  return [guarded(lambda: dcn_case(p, dtype, batch, train_batch, opts, log, earlier),
                  {'preset': p, 'dtype': dtype, 'batch': batch}, log) for p in presets]
