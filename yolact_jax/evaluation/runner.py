"""The whole evaluation of a model: inference over an evaluation set -> results records (and files)
-> COCOeval summary. :func:`evaluate` is what ``evaluate.py`` runs; :func:`evaluate_model` is
what a training loop calls for validation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from yolact_jax.config import YolactConfig
from yolact_jax.evaluation.coco_eval import coco_evaluate
from yolact_jax.evaluation.eval_sets import EvalSet, as_eval_set, cached_eval_set
from yolact_jax.evaluation.inference import stream_inference
from yolact_jax.evaluation.results import CocoResults, ResultsError


def predict_coco_results(cfg: YolactConfig, variables: Any, data: Any, batch_size: int = 8,
                         **kwargs) -> CocoResults:
  """:func:`stream_inference` turned into results records image by image (masks are freed as it
  goes). ``kwargs`` as :func:`stream_inference`.

  With several processes (``jax.distributed``), each runs every ``process_count``-th image on its
  own devices and the records of all processes are gathered, so every process returns the
  results of the whole set.
  """
  import jax
  eval_set = as_eval_set(data, kwargs.pop('max_images', None))
  results = CocoResults(eval_set.category_ids)
  part = eval_set.shard(jax.process_index(), jax.process_count())
  for item in stream_inference(cfg, variables, part, batch_size, skipped=results.skipped,
                               **kwargs):
    results.add(item.image_id, item.detections)
  return gather_results(results) if jax.process_count() > 1 else results


def gather_results(results: CocoResults) -> CocoResults:
  """Every process's records, merged on every process (JSON bytes through an all-gather)."""
  import jax
  import numpy as np
  from jax.experimental import multihost_utils
  mine = json.dumps({'bbox': results.bbox, 'segm': results.segm,
                     'image_ids': results.image_ids, 'skipped': results.skipped}).encode()
  lengths = np.asarray(multihost_utils.process_allgather(np.int64(len(mine)))).reshape(-1)
  size = int(lengths.max())
  padded = np.zeros(size, np.uint8)
  padded[:len(mine)] = np.frombuffer(mine, np.uint8)
  everything = multihost_utils.process_allgather(padded)
  merged = CocoResults(results.category_ids)
  for row, length in zip(np.asarray(everything).reshape(jax.process_count(), size), lengths):
    part = json.loads(row[:int(length)].tobytes())
    merged.bbox += part['bbox']
    merged.segm += part['segm']
    merged.image_ids += part['image_ids']
    merged.skipped += [tuple(s) for s in part['skipped']]
  return merged


@dataclasses.dataclass
class Evaluation:
  """What :func:`evaluate` returns: the COCOeval ``summary`` (plus ``skipped_images``), the
  ``results`` records it scored, and the paths of the written results ``files`` ({'bbox',
  'segm'}; empty when none were written)."""
  summary: dict[str, Any]
  results: CocoResults
  files: dict[str, str]


def evaluate(cfg: YolactConfig, variables: Any, data: EvalSet | Any, batch_size: int = 8, *,
             output_dir: str | os.PathLike | None = None, **kwargs) -> Evaluation:
  """Runs the model over ``data`` (an EvalSet or what :func:`as_eval_set` accepts) and scores
  the images that ran with :func:`coco_evaluate`.

  ``output_dir``: also write the original's two results files there. ``kwargs``:
  :func:`stream_inference` options (nms, dtype, max_images, progress, decode_workers).
  The summary gets ``skipped_images``: [{'image_id', 'reason'}] of the unreadable images.

  Raises:
    ResultsError: no image of the set could be read.
  """
  eval_set = as_eval_set(data, kwargs.pop('max_images', None))
  results = predict_coco_results(cfg, variables, eval_set, batch_size, **kwargs)
  files = {}
  if output_dir is not None:
    files = dict(zip(('bbox', 'segm'), results.write(output_dir)))
  if not results.image_ids:
    raise ResultsError(f'{eval_set.name}: no image could be evaluated '
                       f'({len(results.skipped)} unreadable)')
  summary = coco_evaluate(eval_set.ground_truth, results.bbox, results.segm,
                          image_ids=results.image_ids)
  summary['skipped_images'] = [{'image_id': i, 'reason': r} for i, r in results.skipped]
  return Evaluation(summary, results, files)


def evaluate_model(cfg: YolactConfig, variables: Any, data: Any, batch_size: int = 8, *,
                   ann_file: Any = None, output_dir: str | os.PathLike | None = None,
                   **kwargs) -> dict[str, Any]:
  """:func:`evaluate`'s summary, for a training loop: over the images that ran, plus
  ``skipped_images``; no progress bar unless ``progress=True``.

  ``data``: an EvalSet or what :func:`as_eval_set` accepts (e.g. ``InMemoryRecordSource`` with
  ``ann_file``, or a ``TfdsRecordSource``); for the latter the EvalSet is built once and cached,
  so a training loop can pass the same source every time. The compiled program is reused across
  calls (same config, batch size and set). ``output_dir``: also write the two results files.
  ``kwargs``: :func:`stream_inference` options (nms, dtype, max_images, progress, decode_workers).
  """
  kwargs.setdefault('progress', False)
  eval_set = cached_eval_set(data, kwargs.pop('max_images', None), ann_file)
  return evaluate(cfg, variables, eval_set, batch_size, output_dir=output_dir, **kwargs).summary
