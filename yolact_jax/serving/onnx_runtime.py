"""Running an ONNX artefact with onnxruntime and numpy only (no jax, no flax, no model code)."""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np

from yolact_jax.bench.machine import usable_cores
from yolact_jax.serving import artefact as af

ORT_TYPES = {'tensor(uint8)': 'uint8', 'tensor(int32)': 'int32', 'tensor(float)': 'float32'}


def check_contract(path: pathlib.Path, session: Any, meta: dict[str, Any]) -> None:
  """Raises :class:`ContractError` unless the graph's inputs and outputs are the metadata's."""
  inputs = {i.name: i for i in session.get_inputs()}
  if sorted(inputs) != sorted(af.INPUT_NAMES):
    raise af.ContractError(f'{path}: graph inputs {sorted(inputs)}, the contract has '
                           f'{list(af.INPUT_NAMES)}')
  for name in af.INPUT_NAMES:
    want, got = meta['input'][name], inputs[name]
    dims = [d if isinstance(d, int) else 'B' for d in got.shape]
    if dims != want['shape'] or ORT_TYPES.get(got.type) != want['dtype']:
      raise af.ContractError(f'{path}: the graph takes {name} {got.type}{dims}, its metadata '
                             f'says {want["dtype"]}{want["shape"]}: the files belong to '
                             'different exports')
  outputs = [o.name for o in session.get_outputs()]
  if sorted(outputs) != sorted(meta['outputs']):
    raise af.ContractError(f'{path}: graph outputs {outputs}, the metadata says '
                           f'{meta["outputs"]}')


def session_options(threads: int | None = None, spinning: bool = True) -> Any:
  """ONNX Runtime's session options for an artefact: all graph optimisations (fusions, NCHWc
  layouts) and ``threads`` intra-op threads (default: one per usable CPU; ONNX Runtime's own
  default counts the machine's cores even where this process is pinned to fewer).

  ``spinning=False``: the intra-op threads sleep as soon as a call ends instead of spinning
  for more work (``session.intra_op.allow_spinning``). Spinning is ONNX Runtime's default and
  about 1% faster alone; off, the threads do not take the CPU from other work in the process
  (``compare`` runs the original right after: with spinning it ran up to 16% slower)."""
  import onnxruntime as ort
  options = ort.SessionOptions()
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  options.intra_op_num_threads = threads or usable_cores()
  options.add_session_config_entry('session.intra_op.allow_spinning', '1' if spinning else '0')
  return options


def make_runner(path: pathlib.Path, meta: dict[str, Any],
                providers: Sequence[str] | None = None):
  """``run(images, image_sizes) -> outputs`` (numpy) of the ONNX artefact in ONNX Runtime."""
  try:
    import onnxruntime as ort
  except ImportError as e:
    raise ImportError('running an ONNX artefact needs onnxruntime: pip install '
                      "'yolact-jax[onnx]'") from e
  available = ort.get_available_providers()
  wanted = list(providers or ['CPUExecutionProvider'])
  missing = [p for p in wanted if p not in available]
  if missing:
    raise af.PlatformError(f'{path}: ONNX Runtime here has no {", ".join(missing)} (it has '
                           f'{", ".join(available)})')
  try:
    session = ort.InferenceSession(str(path), session_options(), providers=wanted)
  except Exception as e:  # onnxruntime's own error types for unreadable models
    raise af.ArtefactError(f'{path}: not an ONNX model ONNX Runtime can load '
                           f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})'
                           ) from None
  check_contract(path, session, meta)

  def run(images: np.ndarray, image_sizes: np.ndarray) -> dict[str, np.ndarray]:
    values = session.run(list(meta['outputs']), {'images': images, 'image_sizes': image_sizes})
    return dict(zip(meta['outputs'], values))

  return run
