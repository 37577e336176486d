"""Evaluation sets: what evaluation needs of a dataset (:class:`EvalSet`), built from a COCO-format
annotation file and image folder, any record source, a prepared TFDS split or the synthetic
dataset; and the check that a model's classes are the dataset's.

Only images with at least one annotation (crowds included) are kept, as the original's
``eval.py`` (its dataset skips the others).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any, Sequence

import numpy as np

from yolact_jax.config import YolactConfig
from yolact_jax.evaluation.ground_truth import (ground_truth_from_dict, ground_truth_from_records,
                                                load_ground_truth)

log = logging.getLogger(__name__)


class _Subset:
  """The records of a source at ``indices`` (``len`` / ``[i]``)."""

  def __init__(self, source: Any, indices: Sequence[int]):
    self._source = source
    self._indices = list(indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self._indices):
      raise IndexError(index)
    return self._source[self._indices[index]]


@dataclasses.dataclass
class EvalSet:
  """What evaluation needs of a dataset.

  source: ``len(source)`` records, ``source[i]`` -> record with ``image_id``, ``height``,
    ``width``, ``file_name`` and the image as ``image_path`` or ``image_bytes``.
  ground_truth: pycocotools ``COCO`` holding (at least) these images' annotations.
  category_ids: class index -> category id (the label map of the results files).
  class_names: class index -> name.
  image_ids: [N] the records' image ids, in order.
  image_sizes: int [N, 2] their (h, w).
  name: where it comes from (for messages and the summary).
  """
  source: Any
  ground_truth: Any
  category_ids: tuple[int, ...]
  class_names: tuple[str, ...]
  image_ids: tuple[int, ...]
  image_sizes: np.ndarray
  name: str
  canvas: tuple[int, int] | None = None  # fixed canvas (default: fitted to image_sizes)

  def __len__(self) -> int:
    return len(self.image_ids)

  def first(self, count: int | None) -> 'EvalSet':
    """The set of the first ``count`` images (all when None)."""
    if count is None or count >= len(self):
      return self
    if count < 1:
      raise ValueError(f'max_images must be >= 1, got {count}')
    return dataclasses.replace(self, source=_Subset(self.source, range(count)),
                               image_ids=self.image_ids[:count],
                               image_sizes=self.image_sizes[:count],
                               name=f'{self.name} (first {count})')

  def shard(self, index: int, count: int) -> 'EvalSet':
    """Every ``count``-th image from ``index`` (one process's part of a multi-process
    evaluation); the canvas stays the whole set's."""
    if count == 1:
      return self
    picked = range(index, len(self), count)
    return dataclasses.replace(self, source=_Subset(self.source, picked),
                               image_ids=tuple(self.image_ids[i] for i in picked),
                               image_sizes=self.image_sizes[index::count],
                               name=f'{self.name} (shard {index} of {count})',
                               canvas=self.canvas_hw)

  @property
  def canvas_hw(self) -> tuple[int, int]:
    """The fixed inference canvas of the whole set (``predict.fit_canvas`` of its sizes)."""
    from yolact_jax.host import fit_canvas
    return self.canvas if self.canvas is not None else fit_canvas(self.image_sizes)


def coco_eval_set(ann_file: str | os.PathLike, image_dir: str | os.PathLike,
                  max_images: int | None = None) -> EvalSet:
  """EvalSet of a COCO-format dataset: images with annotations, in annotation-file order.

  The ground truth is the annotation file itself (as the original's ``run_coco_eval.py``);
  images whose file is missing are reported (logged) and left out of the evaluation.

  Raises:
    FileNotFoundError: ``ann_file`` or ``image_dir`` does not exist (named).
    yolact_jax.data.coco.CocoFormatError: not COCO format, or no usable image.
  """
  from yolact_jax.data import coco as coco_lib
  ann_file, image_dir = os.fspath(ann_file), os.fspath(image_dir)
  if not os.path.isfile(ann_file):
    raise FileNotFoundError(f'annotation file not found: {ann_file}')
  if not os.path.isdir(image_dir):
    raise FileNotFoundError(f'image folder not found: {image_dir}')
  dataset = coco_lib.CocoDataset(ann_file, image_dir, keep='with_annotations')
  records = dataset.records
  eval_set = EvalSet(
      source=records, ground_truth=load_ground_truth(ann_file),
      category_ids=tuple(dataset.category_ids), class_names=tuple(dataset.class_names),
      image_ids=tuple(r['image_id'] for r in records),
      image_sizes=np.array([(r['height'], r['width']) for r in records], np.int64).reshape(-1, 2),
      name=ann_file)
  return eval_set.first(max_images)


def records_eval_set(source: Any, category_ids: Sequence[int] | None = None,
                     class_names: Sequence[str] | None = None, name: str = 'records',
                     max_images: int | None = None, ground_truth: Any = None) -> EvalSet:
  """EvalSet of any record source (``len`` / ``[i]`` -> record, e.g. ``InMemoryRecordSource``).

  The ground truth is ``ground_truth`` (a ``COCO``, dict or annotation file path) when given,
  and then the label map defaults to its categories (ids sorted, as ``coco.build_label_map``);
  otherwise it is built from the records (:func:`ground_truth_from_records`) with the given
  ``category_ids`` / ``class_names``. Records without any annotation are skipped. Reads every
  record once (images included, for sources that store them).
  """
  gt = None
  if ground_truth is not None:
    gt = load_ground_truth(ground_truth)
    if category_ids is None:
      from yolact_jax.data.coco import build_label_map
      label_map = build_label_map(gt.dataset['categories'])
      category_ids, class_names = label_map.category_ids, label_map.class_names
  if category_ids is None:
    raise ValueError(f'{name}: pass category_ids (the label map) or the ground truth')
  if class_names is None:
    class_names = tuple(str(c) for c in category_ids)
  count = len(source) if max_images is None else min(len(source), max_images)
  kept, gt_records = [], []
  for index in range(len(source)):
    if len(kept) >= count:
      break
    record = source[index]
    if len(record['is_crowd']) == 0:
      continue
    kept.append(index)
    gt_records.append({k: v for k, v in record.items() if k != 'image_bytes'})
  if not kept:
    raise ValueError(f'{name}: no image with annotations to evaluate')
  if gt is None:
    gt = ground_truth_from_dict(ground_truth_from_records(gt_records, category_ids, class_names))
  else:
    missing = sorted({int(r['image_id']) for r in gt_records} - set(gt.getImgIds()))
    if missing:
      raise ValueError(f'{name}: image ids {missing[:10]} are not in the ground truth')
  return EvalSet(
      source=_Subset(source, kept), ground_truth=gt,
      category_ids=tuple(int(c) for c in category_ids), class_names=tuple(class_names),
      image_ids=tuple(int(r['image_id']) for r in gt_records),
      image_sizes=np.array([(r['height'], r['width']) for r in gt_records],
                           np.int64).reshape(-1, 2),
      name=name if max_images is None else f'{name} (first {count})')


def tfds_eval_set(builder_dir: str | os.PathLike, split: str = 'validation',
                  max_images: int | None = None) -> EvalSet:
  """EvalSet of a TFDS split prepared by ``scripts/prepare_tfds.py`` (the dataset version
  directory, e.g. ``tfds/coco_format_instances/synthetic/1.0.0``); ground truth from its records.

  Raises:
    FileNotFoundError: ``builder_dir`` does not exist.
  """
  from yolact_jax.data.loader import open_tfds_source
  builder_dir = os.fspath(builder_dir)
  if not os.path.isdir(builder_dir):
    raise FileNotFoundError(f'TFDS dataset directory not found: {builder_dir}')
  source = open_tfds_source(builder_dir, split, keep='with_annotations')
  return records_eval_set(source, source.label_map.category_ids, source.label_map.class_names,
                          name=f'{builder_dir}:{split}', max_images=max_images)


def synthetic_eval_set(out_dir: str | os.PathLike, num_val: int = 50,
                       max_images: int | None = None, **generate_kwargs) -> EvalSet:
  """EvalSet of the synthetic dataset's val split in ``out_dir``; when that split does not exist
  yet it is generated (``num_val`` images, no train split, other ``generate_synthetic_coco``
  arguments from ``generate_kwargs``)."""
  from yolact_jax.data.synthetic import dataset_paths, generate_synthetic_coco
  ann_file, image_dir = dataset_paths(out_dir, 'val')
  if not os.path.isfile(ann_file):
    log.info('generating the synthetic val split in %s', out_dir)
    generate_synthetic_coco(out_dir, num_train=0, num_val=num_val, **generate_kwargs)
  return coco_eval_set(ann_file, image_dir, max_images=max_images)


def as_eval_set(data: Any, max_images: int | None = None, ann_file: Any = None) -> EvalSet:
  """An EvalSet from an EvalSet, a ``CocoDataset`` (its annotation file and folder), a
  ``TfdsRecordSource`` (ground truth from its records), or any record source with ``ann_file``
  (its ground truth: a path, dict or ``COCO``)."""
  if isinstance(data, EvalSet):
    return data.first(max_images)
  from yolact_jax.data.coco import CocoDataset
  if isinstance(data, CocoDataset):
    if ann_file is None:
      return coco_eval_set(data.ann_file, data.image_dir, max_images)
    data = data.records
  label_map = getattr(data, 'label_map', None)
  if not hasattr(label_map, 'category_ids'):
    label_map = None
  if label_map is not None or ann_file is not None:
    return records_eval_set(
        data, label_map.category_ids if label_map else None,
        label_map.class_names if label_map else None,
        name=os.fspath(ann_file) if isinstance(ann_file, (str, os.PathLike)) else repr(data),
        max_images=max_images, ground_truth=ann_file)
  raise TypeError(f'cannot evaluate on a {type(data).__name__} alone: pass an EvalSet '
                  '(coco_eval_set, tfds_eval_set, synthetic_eval_set, records_eval_set), a '
                  'CocoDataset, a TfdsRecordSource, or a record source with ann_file')


# Eval sets built by evaluate_model for sources given without an EvalSet, so that a training
# loop calling it every few epochs reads the ground truth once: (id, source, ann, max) -> set.
_EVAL_SET_CACHE: collections.OrderedDict = collections.OrderedDict()


def cached_eval_set(data: Any, max_images: int | None = None, ann_file: Any = None) -> EvalSet:
  """:func:`as_eval_set`, remembered for the last 4 (source, ann_file, max_images) (the source
  object is kept alive by the cache, so its id stays unique)."""
  if isinstance(data, EvalSet):
    return data.first(max_images)
  key = (id(data), id(ann_file) if not isinstance(ann_file, (str, os.PathLike)) else
         os.fspath(ann_file), max_images)
  if key not in _EVAL_SET_CACHE:
    _EVAL_SET_CACHE[key] = (data, as_eval_set(data, max_images, ann_file))
    while len(_EVAL_SET_CACHE) > 4:
      _EVAL_SET_CACHE.popitem(last=False)
  _EVAL_SET_CACHE.move_to_end(key)
  return _EVAL_SET_CACHE[key][1]


def check_classes(cfg: YolactConfig, eval_set: EvalSet) -> None:
  """The model's classes must be the dataset's: same count (ValueError), names (a warning)."""
  model_names = tuple(cfg.dataset.class_names)
  if len(model_names) != len(eval_set.category_ids):
    raise ValueError(
        f'the model ({cfg.name}) predicts {len(model_names)} classes but the dataset '
        f'{eval_set.name} has {len(eval_set.category_ids)} categories (ids '
        f'{list(eval_set.category_ids)[:20]}); pick the config of this dataset')
  if model_names != tuple(eval_set.class_names):
    differ = [(a, b) for a, b in zip(model_names, eval_set.class_names) if a != b][:5]
    warnings.warn(f'class names of the model and the dataset differ (model, dataset: {differ}); '
                  'classes are matched by index', stacklevel=2)
