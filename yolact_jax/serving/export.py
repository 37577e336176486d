"""Building served artefacts: the inference program exported once (StableHLO; ONNX in
:mod:`yolact_jax.serving.onnx_export`).

The exported function is exactly the live program's (:class:`yolact_jax.predict.
InferenceProgram`, the same trace as ``Predictor``): a uint8 RGB canvas ``images [B, Hc, Wc, 3]``
and ``image_sizes [B, 2]`` int32 (h, w) in, the program's output dict (``OUTPUT_KEYS``) out.

StableHLO (``jax.export``): one serialized ``Exported`` for every platform in ``platforms``
(default CPU and CUDA, one file), the batch dimension symbolic unless ``static_batch``. The
weights are the program's first argument and are saved beside it (``PATH.weights.npz``), not
baked in as constants: the artefact stays small and compiles as fast as the live program, the
compiled program is the live one (so its detections are identical, not just close), and weights
of the same architecture can be swapped without exporting again; the price is two files to ship
instead of one (both named, with their sha256, in the metadata).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

import yolact_jax
from yolact_jax.config import COMPUTE_DTYPES, YolactConfig, validate
from yolact_jax.host import CANVAS_STEP, round_up
from yolact_jax.predict import OUTPUT_KEYS, InferenceProgram, resolve_variables
from yolact_jax.serving import artefact as af

DEFAULT_PLATFORMS = ('cpu', 'cuda')


@dataclasses.dataclass(frozen=True)
class ExportSpec:
  """What to export: the config (with its NMS variant), compute dtype, canvas and batch."""
  cfg: YolactConfig
  dtype: str = 'float32'
  canvas_hw: tuple[int, int] | None = None  # default: max_size rounded up to CANVAS_STEP
  batch: int = 4  # the batch the runtime pads calls to (and THE batch if static)
  static_batch: bool = False

  @property
  def canvas(self) -> tuple[int, int]:
    if self.canvas_hw is not None:
      return (int(self.canvas_hw[0]), int(self.canvas_hw[1]))
    side = round_up(self.cfg.max_size, CANVAS_STEP)
    return (side, side)


def make_spec(cfg: YolactConfig, *, nms: str | None = None, dtype: str = 'float32',
              canvas_hw: tuple[int, int] | None = None, batch: int = 4,
              static_batch: bool = False) -> ExportSpec:
  """An :class:`ExportSpec`, with ``nms`` overriding ``cfg.detect.nms`` (checked)."""
  if nms is not None:
    cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, nms=nms))
    validate(cfg)
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f'dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}')
  if batch < 1:
    raise ValueError(f'batch must be >= 1, got {batch}')
  if canvas_hw is not None and min(canvas_hw) < 1:
    raise ValueError(f'canvas must be positive, got {canvas_hw}')
  return ExportSpec(cfg, dtype, None if canvas_hw is None else tuple(canvas_hw), int(batch),
                    bool(static_batch))


def input_specs(spec: ExportSpec) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
  """The abstract images [B, Hc, Wc, 3] uint8 and sizes [B, 2] int32 (B symbolic or fixed)."""
  batch = spec.batch if spec.static_batch else jax_export.symbolic_shape('B')[0]
  hc, wc = spec.canvas
  return (jax.ShapeDtypeStruct((batch, hc, wc, 3), jnp.uint8),
          jax.ShapeDtypeStruct((batch, 2), jnp.int32))


def base_versions() -> dict[str, Any]:
  import jaxlib
  return {'jax': jax.__version__, 'jaxlib': jaxlib.__version__,
          'yolact_jax': yolact_jax.__version__, 'numpy': np.__version__}


def _served_function(program: InferenceProgram, treedef: Any, entry: str,
                     canvas_hw: tuple[int, int]):
  """The exported function: (weight leaves, images, image_sizes) -> outputs (OUTPUT_KEYS).

  ``entry`` 'images' is the served program (``InferenceProgram.from_images``); 'network_input'
  the same program after preprocessing (``from_network_input``, for the reference tests, whose
  data are network inputs)."""
  def served(weights, inputs, image_sizes):
    variables = jax.tree_util.tree_unflatten(treedef, weights)
    if entry == 'images':
      outputs = program._from_images(variables, inputs, image_sizes)
    else:
      outputs = program._from_network_input(variables, inputs, image_sizes, canvas_hw)
    return {k: outputs[k] for k in OUTPUT_KEYS}
  return served


def export_program(spec: ExportSpec, variables: Any,
                   platforms: tuple[str, ...] = DEFAULT_PLATFORMS, entry: str = 'images'
                   ) -> tuple[jax_export.Exported, list[np.ndarray]]:
  """The program of ``spec`` exported for ``platforms``, weights as its first argument (a list
  of the variables tree's leaves), and those leaves (numpy). ``entry``: see
  :func:`_served_function`; 'network_input' takes float32 [B, S, S, 3] instead of the canvas."""
  program = InferenceProgram(spec.cfg, jnp.dtype(spec.dtype))
  leaves, treedef = jax.tree_util.tree_flatten(jax.device_get(variables))
  leaves = [np.asarray(leaf) for leaf in leaves]
  served = _served_function(program, treedef, entry, spec.canvas)
  images, sizes = input_specs(spec)
  if entry == 'network_input':
    size = spec.cfg.max_size
    images = jax.ShapeDtypeStruct((images.shape[0], size, size, 3), jnp.float32)
  elif entry != 'images':
    raise ValueError(f"entry must be 'images' or 'network_input', got {entry!r}")
  weight_specs = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves]
  exported = jax_export.export(jax.jit(served), platforms=platforms)(weight_specs, images, sizes)
  return exported, leaves


def export_stablehlo(spec: ExportSpec, variables: Any, out: str | pathlib.Path,
                     platforms: tuple[str, ...] = DEFAULT_PLATFORMS) -> dict[str, Any]:
  """Writes ``out`` (serialized ``jax.export``), ``out.weights.npz`` and ``out.json``; returns
  the metadata. ``variables``: Flax variables or a weights path (``load_weights``)."""
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  exported, leaves = export_program(spec, resolve_variables(variables, spec.cfg), platforms)
  out.write_bytes(exported.serialize())
  weights = af.sidecar(out, 'weights.npz')
  np.savez(weights, **{f'w{i:05d}': leaf for i, leaf in enumerate(leaves)})
  versions = dict(base_versions(), serialization=exported.calling_convention_version)
  meta = af.make_metadata(
      kind='stablehlo', artefact=out, preset=spec.cfg.name,
      class_names=spec.cfg.dataset.class_names, nms=spec.cfg.detect.nms, dtype=spec.dtype,
      canvas_hw=spec.canvas, batch=spec.batch if spec.static_batch else None,
      suggested_batch=spec.batch, outputs=tuple(OUTPUT_KEYS),
      versions=versions, platforms=tuple(exported.platforms),
      extra={'weights': {'file': weights.name, 'sha256': af.sha256(weights),
                         'count': len(leaves)}})
  af.write_metadata(out, meta)
  return meta
