"""Running a StableHLO artefact (``jax.export``) with jax and numpy only (no flax, no model code).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
from jax import export as jax_export

from yolact_jax.serving import artefact as af


def current_platform() -> str:
  """The platform name ``jax.export`` uses for this process's default backend ('cpu', 'cuda'...).
  """
  return jax_export.default_export_platform()


def check_platform(platforms: Any, where: str) -> None:
  current = current_platform()
  if current not in tuple(platforms):
    raise af.PlatformError(f'{where}: exported for {", ".join(platforms)}, but this process '
                           f'runs on {current}; export again with --platforms {current}')


def deserialize(path: pathlib.Path, meta: dict[str, Any]) -> jax_export.Exported:
  """The checked ``Exported`` of ``path``: a serialization version this jax reads, a platform
  of this process."""
  version = int(meta['versions']['serialization'])
  newest = jax_export.maximum_supported_calling_convention_version
  if version > newest:
    raise af.SerializationVersionError(
        f'{path}: serialized with calling convention version {version}, this jax '
        f'{jax.__version__} reads up to {newest}; upgrade jax or export with this one')
  check_platform(meta['platforms'], str(path))
  try:
    exported = jax_export.deserialize(bytearray(path.read_bytes()))
  except Exception as e:  # flatbuffer / MLIR errors of a foreign or damaged file
    raise af.ArtefactError(f'{path}: not a jax.export artefact this jax can read '
                           f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})'
                           ) from None
  check_platform(exported.platforms, str(path))
  return exported


def _dims(aval: Any) -> list[Any]:
  return [d if isinstance(d, int) else 'B' for d in aval.shape]


def check_contract(path: pathlib.Path, exported: jax_export.Exported, meta: dict[str, Any],
                   weights: list[np.ndarray]) -> None:
  """Raises :class:`ContractError` unless the program takes ``weights`` and the metadata's
  images / image_sizes."""
  avals = exported.in_avals
  if len(avals) != len(weights) + 2:
    raise af.ContractError(f'{path}: the program takes {len(avals)} arrays, the metadata and '
                           f'weights file describe {len(weights) + 2}')
  for name, aval in zip(af.INPUT_NAMES, avals[-2:]):
    want = meta['input'][name]
    if _dims(aval) != want['shape'] or aval.dtype.name != want['dtype']:
      raise af.ContractError(
          f'{path}: the program takes {name} {aval.dtype.name}{_dims(aval)}, its metadata says '
          f'{want["dtype"]}{want["shape"]}: the files belong to different exports')
  for i, (aval, leaf) in enumerate(zip(avals, weights)):
    if tuple(aval.shape) != leaf.shape or aval.dtype != leaf.dtype:
      raise af.ContractError(f'{path}: weight {i} is {leaf.dtype}{list(leaf.shape)}, the program '
                             f'takes {aval.dtype}{list(aval.shape)}')


def load_weights(path: pathlib.Path, meta: dict[str, Any]) -> list[np.ndarray]:
  """The weight leaves of the artefact, in the program's argument order (sha256 checked)."""
  info = meta.get('weights') or {}
  file = path.with_name(info.get('file', af.sidecar(path, 'weights.npz').name))
  af.check_sha256(file, info.get('sha256', ''), 'weights')
  with np.load(file) as arrays:
    names = sorted(arrays.files)
    if len(names) != info.get('count'):
      raise af.ContractError(f'{file}: {len(names)} arrays, the metadata says {info.get("count")}')
    return [arrays[name] for name in names]


def make_runner(path: pathlib.Path, meta: dict[str, Any]):
  """``run(images, image_sizes) -> outputs`` (numpy) of the artefact, compiled per batch size."""
  exported = deserialize(path, meta)
  weights = load_weights(path, meta)
  check_contract(path, exported, meta, weights)
  device_weights = jax.device_put(weights)
  call = jax.jit(exported.call)

  def run(images: np.ndarray, image_sizes: np.ndarray) -> dict[str, np.ndarray]:
    outputs = jax.device_get(call(device_weights, images, image_sizes))
    return {k: np.asarray(outputs[k]) for k in meta['outputs']}

  return run
