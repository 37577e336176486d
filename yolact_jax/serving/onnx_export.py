"""ONNX artefacts: the inference program converted by jax2onnx (optional ``[onnx]`` extra).

What is inside the graph: the WHOLE program, as the StableHLO artefact has it: preprocessing
(bilinear resize from each image's own size, normalisation), the network, Detect with the
configured NMS ('fast' and 'cross_class' as tensor ops; 'standard' as an ONNX ``Loop``), mask
assembly, crop, upsampling to each image's size and bit packing. The weights are initializers
of the graph (one file). Inputs ``images`` uint8 [B, Hc, Wc, 3] and ``image_sizes`` int32
[B, 2], outputs named as ``OUTPUT_KEYS``. The batch is fixed (jax2onnx does not trace this
program with a symbolic batch).

Two rewrites, both exact (the same values), make the program convertible: XLA's convolutions
instead of the CPU branch, and the backbone's max pool as strided slices
(:func:`convertible_tracing`).
"""

from __future__ import annotations

import contextlib
import pathlib
from typing import Any, Callable
from unittest import mock

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from yolact_jax.predict import OUTPUT_KEYS, InferenceProgram, resolve_variables
from yolact_jax.serving import artefact as af
from yolact_jax.serving.export import ExportSpec, base_versions

OPSET = 21
NETWORK_OUTPUTS = ('loc', 'conf', 'coefs', 'proto')


def max_pool_by_slices(x: jnp.ndarray, window_shape: tuple[int, int],
                       strides: tuple[int, int] | None = None, padding: Any = 'VALID'
                       ) -> jnp.ndarray:
  """``flax.linen.max_pool`` on x [N, H, W, C] as the maximum of the window's strided slices
  (explicit padding only, padded with -inf as flax does)."""
  if isinstance(padding, str):
    raise NotImplementedError(f'max_pool_by_slices: explicit padding only, got {padding!r}')
  (kh, kw), (sh, sw) = window_shape, strides or (1, 1)
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
  ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
          for i in range(kh) for j in range(kw)]
  out = taps[0]
  for tap in taps[1:]:
    out = jnp.maximum(out, tap)
  return out


@contextlib.contextmanager
def convertible_tracing():
  """While tracing: XLA's convolutions everywhere, the max pool as slices.

  * the network's convolutions take XLA's branch (``lax.conv_general_dilated``, ONNX ``Conv``)
    instead of the CPU branch picked by ``lax.platform_dependent``, which has no ONNX form;
  * the backbone's 3x3/2 max pool is traced as the maximum of its nine strided slices of the
    -inf-padded input (jax2onnx's own ``reduce_window_max`` lowering gives a ``MaxPool`` that
    ONNX Runtime rejects, "Unsupported pooling size").
  """
  import flax.linen

  from yolact_jax.ops import conv
  with mock.patch.object(conv, '_cpu_or_xla', lambda a, b, cpu, xla: xla(a, b)), \
       mock.patch.object(flax.linen, 'max_pool', max_pool_by_slices):
    yield


def trace(fn: Callable, specs: list[jax.ShapeDtypeStruct]) -> Callable:
  """``fn`` traced under :func:`convertible_tracing`, as a function of its jaxpr.

  jax2onnx converts that jaxpr, so its own patching of flax during tracing is not involved.
  """
  with convertible_tracing():
    closed = jax.make_jaxpr(fn)(*specs)
  return jex.core.jaxpr_as_fun(closed)


# What exporting imports, and how to install it: pyproject.toml's onnx extra, and jax2onnx apart
# (its orbax-checkpoint pin conflicts with ours; it never imports orbax).
EXPORT_MODULES = ('onnx', 'jax2onnx')
INSTALL = "pip install 'yolact-jax[onnx]' and pip install --no-deps jax2onnx==0.17.1"


def require_exporter() -> None:
  """An ImportError in one line that says what to install, unless every one of
  :data:`EXPORT_MODULES` imports."""
  import importlib
  for module in EXPORT_MODULES:
    try:
      importlib.import_module(module)
    except ImportError as e:
      reason = str(e).splitlines()[0] if str(e) else type(e).__name__
      raise ImportError(f'ONNX export cannot import {module!r} ({reason}): {INSTALL} '
                        '(docs/serving.md)') from e


def _to_onnx(fn: Callable, specs: list[jax.ShapeDtypeStruct], input_names: tuple[str, ...],
             output_names: tuple[str, ...], name: str) -> Any:
  require_exporter()
  import jax2onnx
  import logging
  serde = logging.getLogger('onnx_ir.serde')  # warns once per untyped shape constant
  level = serde.level
  serde.setLevel(logging.ERROR)
  try:
    return jax2onnx.to_onnx(trace(fn, specs), specs, model_name=name, opset=OPSET,
                            input_names=list(input_names), output_names=list(output_names))
  finally:
    serde.setLevel(level)


def program_model(spec: ExportSpec, variables: Any, entry: str = 'images') -> Any:
  """The whole inference program as an ONNX ModelProto (weights as initializers). ``entry``
  'images' takes the uint8 canvas (the served program); 'network_input' the float32 network
  input [B, S, S, 3] after preprocessing (side-by-side comparisons on the same inputs)."""
  if spec.dtype != 'float32':
    raise ValueError(f'ONNX export is float32 only, got dtype {spec.dtype!r}')
  if entry not in ('images', 'network_input'):
    raise ValueError(f"entry must be 'images' or 'network_input', got {entry!r}")
  program = InferenceProgram(spec.cfg, jnp.float32)
  hc, wc = spec.canvas

  def served(inputs, image_sizes):
    if entry == 'images':
      outputs = program._from_images(variables, inputs, image_sizes)
    else:
      outputs = program._from_network_input(variables, inputs, image_sizes, (hc, wc))
    # Each output its own value: without mask re-scoring mask_scores IS scores, and one ONNX
    # value cannot carry two output names.
    seen: set[int] = set()
    values = []
    for key in OUTPUT_KEYS:
      value = outputs[key]
      values.append(jnp.copy(value) if id(value) in seen else value)
      seen.add(id(value))
    return tuple(values)

  size = spec.cfg.max_size
  inputs = (jax.ShapeDtypeStruct((spec.batch, hc, wc, 3), jnp.uint8) if entry == 'images' else
            jax.ShapeDtypeStruct((spec.batch, size, size, 3), jnp.float32))
  specs = [inputs, jax.ShapeDtypeStruct((spec.batch, 2), jnp.int32)]
  return _to_onnx(served, specs, af.INPUT_NAMES, OUTPUT_KEYS, spec.cfg.name)


def network_model(spec: ExportSpec, variables: Any) -> Any:
  """The network alone (normalised input [B, S, S, 3] -> loc, conf, coefs, proto) as ONNX: the
  raw head outputs, for checks and timing."""
  program = InferenceProgram(spec.cfg, jnp.float32)
  size = spec.cfg.max_size

  def network(net_input):
    out = program.network(variables, net_input)
    return tuple(out[k] for k in NETWORK_OUTPUTS)

  specs = [jax.ShapeDtypeStruct((spec.batch, size, size, 3), jnp.float32)]
  return _to_onnx(network, specs, ('net_input',), NETWORK_OUTPUTS, spec.cfg.name + '_network')


def export_onnx(spec: ExportSpec, variables: Any, out: str | pathlib.Path) -> dict[str, Any]:
  """Writes ``out`` (the ONNX program, fixed batch ``spec.batch``) and ``out.json``; returns the
  metadata."""
  require_exporter()  # before the weights are read or anything is written
  import onnx

  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  variables = jax.device_get(resolve_variables(variables, spec.cfg))
  model = program_model(spec, variables)
  onnx.save_model(model, str(out))
  import jax2onnx
  versions = dict(base_versions(), serialization=f'onnx opset {OPSET}', onnx=onnx.__version__,
                  jax2onnx=_version('jax2onnx', jax2onnx))
  meta = af.make_metadata(
      kind='onnx', artefact=out, preset=spec.cfg.name, class_names=spec.cfg.dataset.class_names,
      nms=spec.cfg.detect.nms, dtype=spec.dtype, canvas_hw=spec.canvas, batch=spec.batch,
      suggested_batch=spec.batch, outputs=tuple(OUTPUT_KEYS), versions=versions,
      platforms=('onnxruntime',), extra={'opset': OPSET, 'graph': 'whole program'})
  af.write_metadata(out, meta)
  return meta


def _version(dist: str, module: Any) -> str:
  try:
    from importlib import metadata
    return metadata.version(dist)
  except Exception:  # pylint: disable=broad-except
    return str(getattr(module, '__version__', 'unknown'))


def numpy_outputs(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Runs an ONNX ModelProto in ONNX Runtime (CPU): {output name: array} (tests, timing)."""
  import onnxruntime as ort
  session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
  names = [o.name for o in session.get_outputs()]
  return dict(zip(names, session.run(None, feeds)))
