"""ONNX artefacts: the inference program converted by jax2onnx (optional ``[onnx]`` extra).

What is inside the graph: the WHOLE program, as the StableHLO artefact has it: preprocessing
(bilinear resize from each image's own size, normalisation), the network, Detect with the
configured NMS ('fast' and 'cross_class' as tensor ops; 'standard' as an ONNX ``Loop``), mask
assembly, crop, upsampling to each image's size and bit packing. The weights are initializers
of the graph (one file). Inputs ``images`` uint8 [B, Hc, Wc, 3] and ``image_sizes`` int32
[B, 2], outputs named as ``OUTPUT_KEYS``. The batch is fixed (jax2onnx does not trace this
program with a symbolic batch).

The program is traced in forms that convert and that ONNX Runtime runs fast
(:func:`convertible_tracing`): XLA's convolutions instead of the CPU branch, the backbone's max
pool over channel planes, the masks' resize and bit packing as matrix products. The converted
graph is then cleaned up exactly (:func:`yolact_jax.serving.onnx_graph.simplify`: broadcasts
left to ONNX, so BatchNorm folds into the convolutions).
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
from typing import Any, Callable
from unittest import mock

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax import lax

from yolact_jax.predict import OUTPUT_KEYS, InferenceProgram, resolve_variables
from yolact_jax.serving import artefact as af
from yolact_jax.serving import onnx_graph
from yolact_jax.serving.export import ExportSpec, base_versions

OPSET = 21
# Full float32 products in the traced forms (as ONNX computes them; XLA:CPU's default may not).
HIGHEST = lax.Precision.HIGHEST
NETWORK_OUTPUTS = ('loc', 'conf', 'coefs', 'proto')


def max_pool_on_planes(x: jnp.ndarray, window_shape: tuple[int, int],
                       strides: tuple[int, int] | None = None, padding: Any = 'VALID'
                       ) -> jnp.ndarray:
  """``flax.linen.max_pool`` on x [N, H, W, C] (explicit padding, -inf as flax pads) as a
  window over each channel plane [N * C, H, W]: jax2onnx converts a window over all of an
  operand's dimensions to one ``MaxPool``, which ONNX Runtime runs for up to 3 of them (over
  NHWC's 4 it refuses, "Unsupported pooling size")."""
  if isinstance(padding, str):
    raise NotImplementedError(f'max_pool_on_planes: explicit padding only, got {padding!r}')
  (kh, kw), (sh, sw) = window_shape, strides or (1, 1)
  batch, _, _, channels = x.shape
  planes = jnp.transpose(x, (0, 3, 1, 2)).reshape((batch * channels,) + x.shape[1:3])
  pooled = lax.reduce_window(planes, -jnp.inf, lax.max, (1, kh, kw), (1, sh, sw),
                             ((0, 0), *padding))
  pooled = pooled.reshape((batch, channels) + pooled.shape[1:])
  return jnp.transpose(pooled, (0, 2, 3, 1))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _resize_weights(size_in: int, size_out: int) -> jnp.ndarray:
  """``jax.image.resize``'s bilinear weights [size_out, size_in] (the resize of the identity)."""
  eye = jnp.eye(size_in, dtype=jnp.float32)
  return jax.image.resize(eye, (size_out, size_in), 'bilinear', antialias=False)


def resize_bilinear_by_products(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """:func:`yolact_jax.model.fpn.resize_bilinear` (``jax.image.resize``, static sizes) as two
  matrix products with ``jax.image.resize``'s own weights (height pass, then width pass, its
  order), each a plain ONNX ``MatMul`` on channel planes (NCHW, ONNX Runtime's layout, so the
  transposes cancel with the convolutions'): converted as they are, the einsums run as
  ``Einsum`` nodes and a full-size transpose."""
  batch, rows, cols, channels = x.shape

  def weights(size_in: int, size_out: int) -> jnp.ndarray:
    with jax.ensure_compile_time_eval():  # a constant, computed by XLA as the live program does
      return _resize_weights(size_in, size_out)

  planes = jnp.transpose(x, (0, 3, 1, 2)).reshape(batch * channels, rows, cols)
  tall = jnp.matmul(weights(rows, height), planes, precision=HIGHEST)  # [B * C, height, cols]
  wide = jnp.matmul(tall.reshape(-1, cols), weights(cols, width).T, precision=HIGHEST)
  return jnp.transpose(wide.reshape(batch, channels, height, width), (0, 2, 3, 1))


def pack_bits_by_product(masks: jnp.ndarray) -> jnp.ndarray:
  """:func:`yolact_jax.predict.pack_mask_bits` as one matrix product: each group of 8 bits (as
  0./1.) times (128, 64, ..., 1), summed exactly in float32 (in ONNX Runtime several times
  faster than shifting and summing bytes)."""
  width = masks.shape[-1]
  if width % 8:
    masks = jnp.pad(masks, [(0, 0)] * (masks.ndim - 1) + [(0, -width % 8)])
  groups = masks.shape[:-1] + (masks.shape[-1] // 8,)
  bits = masks.reshape(-1, 8).astype(jnp.float32)
  weights = jnp.asarray([[128], [64], [32], [16], [8], [4], [2], [1]], jnp.float32)
  return jnp.matmul(bits, weights, precision=HIGHEST).astype(jnp.uint8).reshape(groups)


@contextlib.contextmanager
def convertible_tracing():
  """While tracing: the forms that convert to ONNX and run fast in ONNX Runtime.

  * the network's convolutions take XLA's branch (``lax.conv_general_dilated``, ONNX ``Conv``)
    instead of the CPU branch picked by ``lax.platform_dependent``, which has no ONNX form;
  * the backbone's 3x3/2 max pool as a window over channel planes (:func:`max_pool_on_planes`);
  * the FPN's and ProtoNet's bilinear upsampling as plain matrix products
    (:func:`resize_bilinear_by_products`);
  * the masks' resize to the canvas as matrix products
    (:func:`yolact_jax.postprocess.resize_to_canvas_by_products`) and the bit packing as one
    product (:func:`pack_bits_by_product`): as gathers, shifts and sums they run as many
    separate full-canvas passes in ONNX Runtime (3x slower end to end).

  The first two give the same values; the products equal the live program's resize up to
  float rounding (a mask pixel on the 0.5 threshold may differ).
  """
  import flax.linen

  from yolact_jax import postprocess, predict
  from yolact_jax.model import fpn, protonet
  from yolact_jax.ops import conv
  with mock.patch.object(conv, '_cpu_or_xla', lambda a, b, cpu, xla: xla(a, b)), \
       mock.patch.object(flax.linen, 'max_pool', max_pool_on_planes), \
       mock.patch.dict(fpn.RESIZE, {'bilinear': resize_bilinear_by_products}), \
       mock.patch.object(protonet, 'resize_bilinear_2x', lambda x: resize_bilinear_by_products(
           x, 2 * x.shape[1], 2 * x.shape[2])), \
       mock.patch.object(postprocess, 'resize_to_canvas',
                         postprocess.resize_to_canvas_by_products), \
       mock.patch.object(predict, 'pack_mask_bits', pack_bits_by_product):
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
    model = jax2onnx.to_onnx(trace(fn, specs), specs, model_name=name, opset=OPSET,
                             input_names=list(input_names), output_names=list(output_names))
  finally:
    serde.setLevel(level)
  onnx_graph.simplify(model)
  return model


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
