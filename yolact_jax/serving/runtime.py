"""Running a served artefact without the model code: ``load(path)`` -> a Predictor-like model.

    from yolact_jax.serving import load
    model = load('yolact_base.stablehlo')          # or an .onnx artefact
    results = model(images, channel_order='bgr')  # one Detections per image

A StableHLO artefact needs only jax and numpy here; an ONNX one only onnxruntime and numpy.
Neither flax nor the model code is imported: this module and what it imports
(:mod:`yolact_jax.host`, :mod:`yolact_jax.serving.artefact`) are numpy and the standard library.

The model takes the images :class:`yolact_jax.predict.Predictor` takes (any size up to the
artefact's canvas, mixed sizes, grayscale, RGBA; ``channel_order`` required), pads each call to
the artefact's batch (symbolic-batch artefacts: ``max_batch``, default the one given at export),
and returns the same :class:`~yolact_jax.host.Detections`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable

import numpy as np

from yolact_jax.host import Detections, as_rgb_uint8, chunks, pack_canvas, unpack_detections
from yolact_jax.serving import artefact as af

Runner = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


class ServedModel:
  """A loaded artefact: ``model(images, channel_order=...)`` -> ``[Detections]``.

  Attributes: ``metadata`` (the JSON dict), ``class_names``, ``canvas_hw``, ``max_batch`` (the
  batch every call is padded to), ``kind`` ('stablehlo' or 'onnx').
  """

  def __init__(self, metadata: dict[str, Any], runner: Runner, max_batch: int):
    self.metadata = metadata
    self.kind = metadata['kind']
    self.class_names = tuple(metadata['class_names'])
    self.canvas_hw = tuple(metadata['input']['canvas_hw'])
    self.max_batch = int(max_batch)
    self._runner = runner

  def run(self, images: np.ndarray, image_sizes: np.ndarray) -> dict[str, np.ndarray]:
    """The raw program: canvas ``images [B, Hc, Wc, 3]`` uint8 RGB and ``image_sizes [B, 2]``
    int32 (h, w) -> the output dict (numpy), checked against the input contract."""
    check_inputs(self.metadata, images, image_sizes, self.max_batch)
    return self._runner(images, image_sizes)

  def stream(self, images: Iterable[Any], *, channel_order: str, score_threshold: float = 0.0,
             top_k: int | None = None) -> Iterator[Detections]:
    """Detections for each image of an iterable, in order (batches of ``max_batch``)."""
    index = 0
    for chunk in chunks(images, self.max_batch):
      rgb = [as_rgb_uint8(image, channel_order, f'image {index + i}')
             for i, image in enumerate(chunk)]
      self._check_fit(rgb, index)
      index += len(chunk)
      canvas, sizes = pack_canvas(rgb, self.canvas_hw, self.max_batch)
      outputs = self.run(canvas, sizes)
      yield from unpack_detections(outputs, sizes, len(chunk), self.class_names,
                                   score_threshold, top_k)

  def __call__(self, images: Sequence[Any], *, channel_order: str, score_threshold: float = 0.0,
               top_k: int | None = None) -> list[Detections]:
    """As :meth:`yolact_jax.predict.Predictor.__call__`."""
    if isinstance(images, np.ndarray) and images.ndim < 4:
      raise TypeError(f'expected a list of images, got one array of shape {images.shape}; '
                      'for a single image pass [image]')
    return list(self.stream(images, channel_order=channel_order,
                            score_threshold=score_threshold, top_k=top_k))

  def _check_fit(self, images: Sequence[np.ndarray], first: int) -> None:
    for i, image in enumerate(images):
      h, w = image.shape[:2]
      if h > self.canvas_hw[0] or w > self.canvas_hw[1]:
        raise af.InputError(
            f'image {first + i} of size {h}x{w} does not fit the artefact\'s canvas '
            f'{self.canvas_hw[0]}x{self.canvas_hw[1]}; resize it or export with a larger '
            '--canvas')


def check_inputs(meta: dict[str, Any], images: Any, image_sizes: Any, batch: int) -> None:
  """Raises :class:`InputError` unless images / image_sizes are the contract's arrays."""
  hc, wc = meta['input']['canvas_hw']
  expected = {'images': ((batch, hc, wc, 3), np.uint8), 'image_sizes': ((batch, 2), np.int32)}
  for name, value in (('images', images), ('image_sizes', image_sizes)):
    shape, dtype = expected[name]
    if not isinstance(value, np.ndarray):
      raise af.InputError(f'{name}: expected a numpy array, got {type(value).__name__}')
    if value.dtype != dtype:
      raise af.InputError(f'{name}: expected dtype {np.dtype(dtype).name}, got {value.dtype}')
    if value.shape != shape:
      raise af.InputError(f'{name}: expected shape {list(shape)}, got {list(value.shape)}')


def _batch(meta: dict[str, Any], max_batch: int | None) -> int:
  fixed = meta['input']['batch']
  if fixed is not None:
    if max_batch not in (None, fixed):
      raise af.ContractError(f'the artefact has a fixed batch of {fixed}; max_batch={max_batch} '
                             'needs an export with a symbolic batch (no --static_batch)')
    return int(fixed)
  if max_batch is not None and max_batch < 1:
    raise ValueError(f'max_batch must be >= 1, got {max_batch}')
  return int(max_batch or meta['input']['suggested_batch'])


def load(path: str | pathlib.Path, *, max_batch: int | None = None,
         providers: Sequence[str] | None = None) -> ServedModel:
  """The artefact at ``path`` (its metadata ``path.json`` beside it) as a :class:`ServedModel`.

  ``max_batch``: images per call for a symbolic-batch artefact (default: the export's batch).
  ``providers``: ONNX Runtime execution providers (default: CPU).
  Errors (all :class:`~yolact_jax.serving.artefact.ServingError`): ArtefactError (missing,
  foreign or changed files), PlatformError, SerializationVersionError, ContractError.
  """
  meta = af.read_metadata(path)
  batch = _batch(meta, max_batch)
  if meta['kind'] == 'stablehlo':
    from yolact_jax.serving import stablehlo_runtime
    runner = stablehlo_runtime.make_runner(pathlib.Path(path), meta)
  else:
    from yolact_jax.serving import onnx_runtime
    runner = onnx_runtime.make_runner(pathlib.Path(path), meta, providers)
  return ServedModel(meta, runner, batch)
