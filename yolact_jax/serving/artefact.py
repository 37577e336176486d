"""The served artefact's files, its metadata JSON and the errors of loading or running it.

An artefact is the inference program (uint8 canvas + per-image sizes -> detections) in a file
of its own, with files beside it named after it (``PATH`` the artefact):

* ``PATH.json``: the metadata (:func:`make_metadata`): kind ('stablehlo' or 'onnx'), preset,
  class names, the input contract, the output names, the versions it was built with and the
  sha256 of every file it names;
* ``PATH.weights.npz`` (StableHLO only): the weights, one array per leaf of the variables tree,
  in the program's argument order (``w00000``, ``w00001``, ...).

Only the standard library here: the runtime reads this before it imports anything else.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

FORMAT = 'yolact-jax-serving'
FORMAT_VERSION = 1
KINDS = ('stablehlo', 'onnx')
# The input contract: images uint8 [B, Hc, Wc, 3] RGB on a zero canvas (each image in the
# top-left corner of its slot), image_sizes int32 [B, 2] (h, w); see yolact_jax.predict.
CONTRACT = 'uint8-rgb-canvas+sizes/1'
INPUT_NAMES = ('images', 'image_sizes')


class ServingError(Exception):
  """Base class of every error of loading or running a served artefact."""


class ArtefactError(ServingError):
  """The artefact or its metadata is missing, unreadable, not ours, or does not match its sha256."""


class PlatformError(ServingError):
  """The artefact was not built for the platform (backend) this process runs on."""


class SerializationVersionError(ServingError):
  """The artefact was written by a newer serializer than this jax (or this runtime) reads."""


class ContractError(ServingError):
  """The artefact's input contract is not the one this runtime speaks, or it disagrees with
  its metadata (another canvas, batch, dtype or weights layout)."""


class InputError(ServingError, ValueError):
  """An input array of the wrong dtype or shape for the artefact's contract."""


def sidecar(path: str | pathlib.Path, what: str) -> pathlib.Path:
  """The file beside the artefact ``path`` holding ``what`` ('json', 'weights.npz')."""
  path = pathlib.Path(path)
  return path.with_name(f'{path.name}.{what}')


def sha256(path: str | pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def make_metadata(*, kind: str, artefact: pathlib.Path, preset: str, class_names: tuple[str, ...],
                  nms: str, dtype: str, canvas_hw: tuple[int, int], batch: int | None,
                  suggested_batch: int, outputs: tuple[str, ...], versions: dict[str, Any],
                  platforms: tuple[str, ...], extra: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
  """The metadata dict of an artefact already written at ``artefact``.

  ``batch`` None means a symbolic batch dimension (any B >= 1); ``suggested_batch`` is the
  batch the runtime pads calls to (one compilation).
  """
  batch_dim = 'B' if batch is None else int(batch)
  meta = {
      'format': FORMAT, 'format_version': FORMAT_VERSION, 'kind': kind,
      'artefact': artefact.name, 'sha256': sha256(artefact),
      'preset': preset, 'class_names': list(class_names), 'nms': nms, 'dtype': dtype,
      'input': {
          'contract': CONTRACT,
          'names': list(INPUT_NAMES),
          'images': {'dtype': 'uint8', 'shape': [batch_dim, int(canvas_hw[0]),
                                                  int(canvas_hw[1]), 3]},
          'image_sizes': {'dtype': 'int32', 'shape': [batch_dim, 2]},
          'canvas_hw': [int(canvas_hw[0]), int(canvas_hw[1])],
          'batch': batch, 'suggested_batch': int(suggested_batch),
          'channel_order': 'rgb',
      },
      'outputs': list(outputs),
      'platforms': list(platforms),
      'versions': versions,
  }
  meta.update(extra or {})
  return meta


def write_metadata(artefact: pathlib.Path, meta: dict[str, Any]) -> pathlib.Path:
  path = sidecar(artefact, 'json')
  path.write_text(json.dumps(meta, indent=2) + '\n')
  return path


def read_metadata(artefact: str | pathlib.Path) -> dict[str, Any]:
  """The checked metadata of ``artefact``: ours, a known kind and format version, sha256 equal.
  """
  artefact = pathlib.Path(artefact)
  if not artefact.is_file():
    raise ArtefactError(f'no artefact at {artefact}')
  path = sidecar(artefact, 'json')
  try:
    meta = json.loads(path.read_text())
  except FileNotFoundError:
    raise ArtefactError(f'{artefact}: its metadata {path.name} is missing beside it') from None
  except (OSError, ValueError) as e:
    raise ArtefactError(f'{path}: unreadable metadata ({e})') from None
  if not isinstance(meta, dict) or meta.get('format') != FORMAT:
    raise ArtefactError(f'{path} is not {FORMAT} metadata')
  if int(meta.get('format_version', 0)) > FORMAT_VERSION:
    raise SerializationVersionError(
        f'{artefact}: metadata format version {meta["format_version"]} is newer than this '
        f'runtime reads ({FORMAT_VERSION}); upgrade yolact-jax')
  if meta.get('kind') not in KINDS:
    raise ArtefactError(f'{path}: unknown artefact kind {meta.get("kind")!r}')
  if meta.get('input', {}).get('contract') != CONTRACT:
    raise ContractError(f'{artefact}: input contract {meta.get("input", {}).get("contract")!r}, '
                        f'this runtime speaks {CONTRACT!r}')
  check_sha256(artefact, meta['sha256'], 'artefact')
  return meta


def check_sha256(path: pathlib.Path, expected: str, what: str) -> None:
  if not path.is_file():
    raise ArtefactError(f'{path}: the {what} file is missing')
  if sha256(path) != expected:
    raise ArtefactError(f'{path}: sha256 differs from the metadata\'s; the {what} was changed '
                        'or replaced after export')
