"""Streaming inference over an evaluation set: the jitted program of :mod:`yolact_jax.predict` in
fixed-shape batches (the last one padded) on a canvas fixed from the largest image of the set, so
the whole set compiles once; images are decoded on host threads ahead of the device; a tqdm
progress bar. Yields one :class:`ImageDetections` per image that could be read.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from yolact_jax.config import YolactConfig
from yolact_jax.evaluation.eval_sets import EvalSet, as_eval_set, check_classes

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageDetections:
  """The detections of one evaluated image: ``detections`` is a ``predict.Detections``."""
  image_id: int
  detections: Any

  @property
  def image_size(self) -> tuple[int, int]:
    return self.detections.image_size


def read_image(record: dict) -> np.ndarray:
  """The record's image as BGR uint8 [h, w, 3] (``cv2.imread`` conversion).

  Raises:
    yolact_jax.data.coco.BrokenSampleError: unreadable, or its size differs from the record's.
  """
  from yolact_jax.data import coco as coco_lib
  name = record.get('image_path') or record.get('file_name', '?')
  image = coco_lib.decode_image(record.get('image_bytes'), record.get('image_path'), name)
  h, w = int(record['height']), int(record['width'])
  if image.shape[:2] != (h, w):
    raise coco_lib.BrokenSampleError(name, f'image is {image.shape[1]}x{image.shape[0]} but the '
                                     f'annotations say {w}x{h}')
  return image


def read_first_images(eval_set: EvalSet, count: int) -> tuple[list[np.ndarray], list[str]]:
  """The readable ones of the first ``count`` images of the set as RGB uint8 [h, w, 3] (e.g. to
  benchmark with), and a message for each unreadable one."""
  from yolact_jax.data.coco import BrokenSampleError
  images, problems = [], []
  for index in range(min(len(eval_set), count)):
    try:
      images.append(read_image(eval_set.source[index])[..., ::-1])  # BGR -> RGB
    except BrokenSampleError as e:
      problems.append(str(e))
  return images, problems


def prefetch_map(fn, items: Iterable[Any], workers: int = 2, window: int = 16) -> Iterator[Any]:
  """``map(fn, items)`` on ``workers`` threads, in order, at most ``window`` results ahead."""
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= window:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _progress(iterable, total: int, enabled: bool, desc: str):
  if not enabled:
    return iterable
  from tqdm import tqdm
  return tqdm(iterable, total=total, unit='img', desc=desc)


def make_predictor(cfg: YolactConfig, variables: Any, batch_size: int,
                   canvas_hw: tuple[int, int], nms: str | None = None, dtype: Any = None) -> Any:
  """A ``predict.Predictor`` with a fixed batch and canvas (one compiled shape).

  Raises:
    yolact_jax.checkpoint.convert.CheckpointError: a weights path that does not exist or does
      not fit the config.
  """
  import jax.numpy as jnp
  from yolact_jax.predict import Predictor
  return Predictor(cfg, variables, max_batch=batch_size, canvas_hw=canvas_hw, nms=nms,
                   dtype=jnp.float32 if dtype is None else dtype)


def stream_inference(cfg: YolactConfig, variables: Any, data: Any, batch_size: int = 8, *,
                     nms: str | None = None, dtype: Any = None, max_images: int | None = None,
                     progress: bool = True, decode_workers: int = 2,
                     skipped: list[tuple[int, str]] | None = None) -> Iterator[ImageDetections]:
  """Every detection (<= ``cfg.detect.max_num_detections`` per image, no score filter, as eval)
  of every image of ``data`` (an EvalSet or what :func:`as_eval_set` accepts), in order.

  Images are decoded on ``decode_workers`` threads; the device runs batch k + 1 while the host
  unpacks batch k. Batches have ``batch_size`` slots (the last one padded) on the set's fixed
  canvas, so the set compiles once (and not again on later calls with the same shapes).
  An unreadable image is logged, appended to ``skipped`` as (image id, reason) and left out.

  ``variables``: Flax variables or a weights path (``.pth``, weights or run directory).
  """
  from yolact_jax.data import coco as coco_lib
  eval_set = as_eval_set(data, max_images)
  check_classes(cfg, eval_set)
  predictor = make_predictor(cfg, variables, batch_size, eval_set.canvas_hw, nms, dtype)

  def load(index: int):
    record = eval_set.source[index]
    try:
      return index, read_image(record), None
    except coco_lib.BrokenSampleError as e:
      return index, None, e.reason

  order = collections.deque()

  def readable_images():
    for index, image, problem in prefetch_map(load, range(len(eval_set)), decode_workers):
      if image is None:
        image_id = eval_set.image_ids[index]
        log.warning('evaluation: image %d cannot be used (%s): left out', image_id, problem)
        if skipped is not None:
          skipped.append((image_id, problem))
        continue
      order.append(eval_set.image_ids[index])
      yield image

  results = predictor.stream(readable_images(), channel_order='bgr')
  for detections in _progress(results, len(eval_set), progress, 'evaluating'):
    yield ImageDetections(order.popleft(), detections)


def run_inference(cfg: YolactConfig, variables: Any, data: Any, batch_size: int = 8,
                  **kwargs) -> list[ImageDetections]:
  """:func:`stream_inference` collected in a list. Every detection keeps its full-size mask, so
  this is for small sets; for a large one stream and convert each image to results records
  (``results.CocoResults.add``) as ``runner.predict_coco_results`` does."""
  return list(stream_inference(cfg, variables, data, batch_size, **kwargs))
