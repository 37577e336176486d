"""COCO evaluation: batched inference over a dataset, results files in the original's format, and
pycocotools' box and mask mAP.

    from yolact_jax import evaluation as ev

    eval_set = ev.coco_eval_set('instances_val2017.json', 'val2017/')     # or tfds/synthetic
    summary = ev.evaluate_model(cfg, variables, eval_set, batch_size=8)
    summary['mask_map'], summary['segm']['AP50'], summary['bbox']['per_class_AP']['person']

Pieces (each usable alone):

* an :class:`EvalSet` holds what evaluation needs of a dataset: the records to run (images),
  the ground truth as a pycocotools ``COCO`` object, and the label map (class index -> category
  id). Build one with :func:`coco_eval_set` (a COCO-format annotation file and image folder, e.g.
  COCO val2017 or the synthetic dataset), :func:`tfds_eval_set` (a split prepared by
  ``scripts/prepare_tfds.py``), :func:`synthetic_eval_set` (generated if absent) or
  :func:`records_eval_set` (any record source, ground truth from an annotation file or from the
  records). Only images with at least one annotation (crowds included) are kept, as the
  original's ``eval.py`` (its dataset skips the others).
* :func:`stream_inference` / :func:`run_inference`: the jitted program of
  :mod:`yolact_jax.predict` over an EvalSet in fixed-shape batches (the last one padded), on a
  canvas fixed from the largest image of the set, so the whole set compiles once; images are
  decoded on host threads ahead of the device; a tqdm progress bar.
* :func:`detections_to_coco_results`: the original's ``--output_coco_json`` records.
* :func:`coco_evaluate`: pycocotools ``COCOeval`` for 'bbox' and 'segm' -> a summary dict.
* :func:`evaluate_model`: all of the above; what a training loop calls for validation (with an
  EvalSet, or a record source and its ``ann_file``: the EvalSet is then built once and cached).
  Repeated calls with the same config, batch size and set reuse the compiled program (cached per
  config by :func:`yolact_jax.predict.inference_program`; the shapes stay fixed).

Metric values are pycocotools' own: fractions in [0, 1], and -1 where the evaluated images have
no ground truth in that area range (or, per class, of that class). mAP over all images with no
detection at all (an empty results list, on which pycocotools' ``loadRes`` crashes) is computed
on an empty detection set: 0 wherever there is ground truth, -1 elsewhere, with a warning.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from yolact_jax.config import YolactConfig

log = logging.getLogger(__name__)

IOU_TYPES = ('bbox', 'segm')
# COCOeval.stats order (params.maxDets = [1, 10, 100]).
METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')
# The original's results file names (eval.py --output_coco_json).
BBOX_RESULTS_FILE = 'bbox_detections.json'
MASK_RESULTS_FILE = 'mask_detections.json'


class ResultsError(ValueError):
  """A results list or file that does not fit the ground truth (the message says what)."""


# ---------------------------------------------------------------------------------------------
# Ground truth


def _quiet(fn, *args, **kwargs):
  """Calls ``fn`` with its prints (pycocotools' progress lines) swallowed."""
  with contextlib.redirect_stdout(io.StringIO()):
    return fn(*args, **kwargs)


def annotation_area(ann: dict, height: int | None, width: int | None) -> float:
  """The area COCOeval needs of a GT annotation: its segmentation's pixel count, or the box area
  when there is no usable segmentation."""
  from pycocotools import mask as mask_util
  from yolact_jax.data import masks as mask_lib
  try:
    if height is None or 'segmentation' not in ann:
      raise mask_lib.SegmentationError('no segmentation')
    return float(mask_util.area(mask_lib.segmentation_to_rle(ann['segmentation'], height, width)))
  except (mask_lib.SegmentationError, TypeError, ValueError):
    bbox = ann.get('bbox') or [0, 0, 0, 0]
    return float(bbox[2] * bbox[3])


def ground_truth_from_dict(data: dict) -> Any:
  """A pycocotools ``COCO`` from a COCO-format dict (not modified; annotations without ``area``
  get :func:`annotation_area` in the copy COCOeval uses)."""
  from pycocotools.coco import COCO
  sizes = {int(image['id']): (int(image['height']), int(image['width']))
           for image in data.get('images', [])}
  annotations = data.get('annotations', [])
  if any('area' not in ann for ann in annotations):
    annotations = [ann if 'area' in ann else
                   dict(ann, area=annotation_area(ann, *sizes.get(int(ann['image_id']),
                                                                  (None, None))))
                   for ann in annotations]
    data = dict(data, annotations=annotations)
  gt = COCO()
  gt.dataset = data
  _quiet(gt.createIndex)
  return gt


def load_ground_truth(gt: Any) -> Any:
  """A pycocotools ``COCO`` from a ``COCO`` (returned as is), a COCO-format dict or a path to an
  ``instances_*.json``.

  Raises:
    FileNotFoundError: the annotation file does not exist (named).
    yolact_jax.data.coco.CocoFormatError: it is not COCO format (file and key named).
  """
  from pycocotools.coco import COCO
  if isinstance(gt, COCO):
    return gt
  if isinstance(gt, dict):
    return ground_truth_from_dict(gt)
  from yolact_jax.data import coco as coco_lib
  path = os.fspath(gt)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'annotation file not found: {path}')
  return ground_truth_from_dict(coco_lib.load_annotation_file(path))


def images_with_annotations(gt: Any) -> list[int]:
  """Ids of the GT images with at least one annotation (crowds count), sorted."""
  return sorted(int(i) for i, anns in gt.imgToAnns.items() if anns)


def ground_truth_from_records(records: Iterable[dict], category_ids: Sequence[int],
                              class_names: Sequence[str]) -> dict:
  """A COCO-format dict from reader records (``coco.build_records`` / TFDS ``example_to_record``).

  Boxes are the records' (clipped) boxes; segmentations become compressed RLEs with ASCII counts
  (a record without a usable segmentation gets its filled box, as the loaders do); ``area`` is the
  mask area; crowds keep ``iscrowd`` 1.
  """
  from pycocotools import mask as mask_util
  from yolact_jax.data import masks as mask_lib
  images, annotations = [], []
  for record in records:
    h, w = int(record['height']), int(record['width'])
    images.append({'id': int(record['image_id']), 'file_name': str(record['file_name']),
                   'height': h, 'width': w})
    boxes = np.asarray(record['boxes_xywh'], np.float64).reshape(-1, 4)
    for k, box in enumerate(boxes):
      try:
        if record['segmentations'][k] is None:
          raise mask_lib.SegmentationError('no segmentation')
        rle = mask_lib.segmentation_to_rle(record['segmentations'][k], h, w)
      except mask_lib.SegmentationError:
        rle = mask_lib.encode_masks(mask_lib.box_mask(box, h, w)[None])[0]
      counts = rle['counts']
      annotations.append({
          'id': len(annotations) + 1,
          'image_id': int(record['image_id']),
          'category_id': int(category_ids[int(record['category_index'][k])]),
          'bbox': [float(v) for v in box],
          'area': float(mask_util.area(rle)),
          'iscrowd': int(bool(record['is_crowd'][k])),
          'segmentation': {'size': [h, w], 'counts': counts.decode('ascii')
                           if isinstance(counts, bytes) else counts},
      })
  categories = [{'id': int(c), 'name': str(n)} for c, n in zip(category_ids, class_names)]
  return {'images': images, 'annotations': annotations, 'categories': categories}


# ---------------------------------------------------------------------------------------------
# Evaluation sets


class _Subset:
  """The first ``count`` records of a source (``len`` / ``[i]``)."""

  def __init__(self, source: Any, count: int):
    self._source = source
    self._count = min(int(count), len(source))

  def __len__(self) -> int:
    return self._count

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self._count:
      raise IndexError(index)
    return self._source[index]


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

  def __len__(self) -> int:
    return len(self.image_ids)

  def first(self, count: int | None) -> 'EvalSet':
    """The set of the first ``count`` images (all when None)."""
    if count is None or count >= len(self):
      return self
    if count < 1:
      raise ValueError(f'max_images must be >= 1, got {count}')
    return dataclasses.replace(self, source=_Subset(self.source, count),
                               image_ids=self.image_ids[:count],
                               image_sizes=self.image_sizes[:count],
                               name=f'{self.name} (first {count})')

  @property
  def canvas_hw(self) -> tuple[int, int]:
    """The fixed inference canvas: the largest (h, w) rounded up to predict.CANVAS_STEP."""
    from yolact_jax.predict import CANVAS_STEP, round_up
    h, w = np.max(self.image_sizes, axis=0)
    return round_up(int(h), CANVAS_STEP), round_up(int(w), CANVAS_STEP)


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
      source=_Indexed(source, kept), ground_truth=gt,
      category_ids=tuple(int(c) for c in category_ids), class_names=tuple(class_names),
      image_ids=tuple(int(r['image_id']) for r in gt_records),
      image_sizes=np.array([(r['height'], r['width']) for r in gt_records],
                           np.int64).reshape(-1, 2),
      name=name if max_images is None else f'{name} (first {count})')


class _Indexed:
  """A source seen through a list of indices."""

  def __init__(self, source: Any, indices: Sequence[int]):
    self._source = source
    self._indices = list(indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict:
    return self._source[self._indices[index]]


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


# ---------------------------------------------------------------------------------------------
# Inference over an EvalSet


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
  this is for small sets; for a large one stream and convert each image
  (:func:`detections_to_coco_results`) as :func:`predict_coco_results` does."""
  return list(stream_inference(cfg, variables, data, batch_size, **kwargs))


# ---------------------------------------------------------------------------------------------
# Results records


def detections_to_coco_results(images: Iterable[ImageDetections | tuple[int, Any]],
                               category_ids: Sequence[int]) -> tuple[list[dict], list[dict]]:
  """COCO results records (bbox list, segm list) as the original's ``--output_coco_json``.

  Per detection with positive box area: ``{'image_id', 'category_id' (= category_ids[class]),
  'bbox': [x1, y1, x2 - x1, y2 - y1] of the integer pixel box rounded to 0.1, 'score'}`` and the
  same with ``'segmentation'``: the pycocotools RLE (ASCII counts) of the full-size uint8 mask.

  Args:
    images: ``ImageDetections`` or (image_id, ``predict.Detections``) pairs.
    category_ids: class index -> category id (``EvalSet.category_ids``; COCO_CATEGORY_IDS for
      COCO).
  Raises:
    ResultsError: a class index without a category id.
  """
  from yolact_jax.predict import to_coco_results
  bbox_records, segm_records = [], []
  for item in images:
    image_id, detections = ((item.image_id, item.detections)
                            if isinstance(item, ImageDetections) else item)
    classes = np.asarray(detections.classes)
    if len(classes) and (classes.min() < 0 or classes.max() >= len(category_ids)):
      raise ResultsError(f'image {image_id}: class index {int(classes.max())} has no category id '
                         f'(the label map has {len(category_ids)} classes)')
    bbox, segm = to_coco_results(detections, image_id, category_ids)
    bbox_records += bbox
    segm_records += segm
  return bbox_records, segm_records


@dataclasses.dataclass
class CocoResults:
  """Results records of a run: ``bbox`` / ``segm`` lists, the evaluated ``image_ids`` (images that
  ran) and the ``skipped`` (image id, reason) pairs."""
  bbox: list[dict]
  segm: list[dict]
  image_ids: list[int]
  skipped: list[tuple[int, str]]


def predict_coco_results(cfg: YolactConfig, variables: Any, data: Any, batch_size: int = 8,
                         **kwargs) -> CocoResults:
  """:func:`stream_inference` turned into results records image by image (masks are freed as it
  goes). ``kwargs`` as :func:`stream_inference`."""
  eval_set = as_eval_set(data, kwargs.pop('max_images', None))
  skipped: list[tuple[int, str]] = []
  bbox, segm, image_ids = [], [], []
  for item in stream_inference(cfg, variables, eval_set, batch_size, skipped=skipped, **kwargs):
    b, s = detections_to_coco_results([item], eval_set.category_ids)
    bbox += b
    segm += s
    image_ids.append(item.image_id)
  return CocoResults(bbox, segm, image_ids, skipped)


# ---------------------------------------------------------------------------------------------
# Results files


def write_results(output_dir: str | os.PathLike, bbox: list[dict], segm: list[dict]
                  ) -> tuple[str, str]:
  """Writes ``bbox_detections.json`` and ``mask_detections.json`` (the original's names)."""
  os.makedirs(output_dir, exist_ok=True)
  paths = (os.path.join(output_dir, BBOX_RESULTS_FILE), os.path.join(output_dir, MASK_RESULTS_FILE))
  for path, records in zip(paths, (bbox, segm)):
    with open(path, 'w') as f:
      json.dump(records, f)
  return paths


def load_results_file(path: str | os.PathLike, iou_type: str | None = None) -> list[dict]:
  """A results list from a JSON file: a list of records, or a ``{"bbox": [...], "segm": [...]}``
  object (``scripts/predict.py --coco_json``), from which ``iou_type`` is taken.

  Raises:
    FileNotFoundError: the file does not exist. ResultsError: not a results file.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'results file not found: {path}')
  try:
    with open(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise ResultsError(f'{path}: not a JSON results file ({e})') from e
  if isinstance(data, dict):
    if iou_type not in data:
      raise ResultsError(f'{path}: expected a list of results or an object with key '
                         f'{iou_type!r}, found keys {sorted(data)[:10]}')
    data = data[iou_type]
  if not isinstance(data, list):
    raise ResultsError(f'{path}: expected a list of results records, got {type(data).__name__}')
  return data


def check_results(records: Sequence[dict], iou_type: str, gt: Any, name: str = 'results'
                  ) -> None:
  """Checks records against the ground truth before pycocotools sees them.

  Raises:
    ResultsError: a record that is not an object or lacks a key; an image id or a category id
      that the ground truth does not have (the message names the ids and the valid ones).
  """
  needed = ('image_id', 'category_id', 'score', 'bbox' if iou_type == 'bbox' else 'segmentation')
  for index, record in enumerate(records):
    if not isinstance(record, dict):
      raise ResultsError(f'{name}: record {index} is a {type(record).__name__}, expected an '
                         'object')
    missing = [k for k in needed if k not in record]
    if missing:
      raise ResultsError(f'{name}: record {index} lacks {missing} (a {iou_type} record needs '
                         f'{list(needed)})')
  valid_categories = set(int(c) for c in gt.getCatIds())
  unknown = sorted({r['category_id'] for r in records} - valid_categories)
  if unknown:
    raise ResultsError(f'{name}: unknown category id(s) {unknown[:10]} (in '
                       f'{sum(r["category_id"] in unknown for r in records)} records); the '
                       f'ground truth has category ids {sorted(valid_categories)}')
  valid_images = set(int(i) for i in gt.getImgIds())
  unknown = sorted({r['image_id'] for r in records} - valid_images)
  if unknown:
    raise ResultsError(f'{name}: image id(s) {unknown[:10]} are not in the ground truth '
                       f'({len(valid_images)} images, e.g. {sorted(valid_images)[:5]})')


def load_detections(gt: Any, records: Sequence[dict]) -> Any:
  """``gt.loadRes`` of copies of ``records`` (loadRes adds keys to the dicts it is given); for
  an empty list (loadRes crashes on it) an empty detection set."""
  from pycocotools.coco import COCO
  if not records:
    empty = COCO()
    empty.dataset = {'images': list(gt.dataset['images']),
                     'categories': copy.deepcopy(gt.dataset['categories']), 'annotations': []}
    _quiet(empty.createIndex)
    return empty
  return _quiet(gt.loadRes, [dict(r) for r in records])


# ---------------------------------------------------------------------------------------------
# COCOeval


def per_class_ap(evaluator: Any, gt: Any) -> dict[str, float]:
  """AP @[IoU .50:.95, area all, maxDets 100] per category name (-1: no GT of that class).

  From ``evaluator.eval['precision']`` [T, R, K, A, M] at area index 0 ('all') and the last
  maxDets (100); the mean over IoU thresholds and recall points of the defined (> -1) entries.
  """
  precision = evaluator.eval['precision']
  names = {c['id']: c.get('name', str(c['id'])) for c in gt.loadCats(evaluator.params.catIds)}
  table = {}
  for k, cat_id in enumerate(evaluator.params.catIds):
    p = precision[:, :, k, 0, -1]
    defined = p[p > -1]
    table[names[cat_id]] = float(np.mean(defined)) if defined.size else -1.0
  return table


def evaluate_type(gt: Any, records: Sequence[dict], iou_type: str,
                  image_ids: Sequence[int]) -> dict[str, Any]:
  """COCOeval of one type: the 12 numbers by name, ``per_class_AP``, ``num_detections``."""
  from pycocotools.cocoeval import COCOeval
  if not records:
    warnings.warn(f'no {iou_type} detections to evaluate: every metric is 0 where there is '
                  'ground truth (-1 elsewhere)', stacklevel=3)
  evaluator = COCOeval(gt, load_detections(gt, records), iou_type)
  evaluator.params.imgIds = list(image_ids)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)  # pycocotools on numpy 2
    _quiet(evaluator.evaluate)
    _quiet(evaluator.accumulate)
    _quiet(evaluator.summarize)
  summary: dict[str, Any] = {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats)}
  summary['per_class_AP'] = per_class_ap(evaluator, gt)
  summary['num_detections'] = len(records)
  return summary


def coco_evaluate(gt: Any, bbox_results: Sequence[dict] | str | os.PathLike | None,
                  segm_results: Sequence[dict] | str | os.PathLike | None,
                  image_ids: Sequence[int] | None = None) -> dict[str, Any]:
  """pycocotools COCOeval for 'bbox' and 'segm'.

  Args:
    gt: a pycocotools ``COCO``, a COCO-format dict or an annotation file path.
    bbox_results, segm_results: results lists or paths of results files (None: skip that type).
    image_ids: the images to evaluate; default: every GT image with an annotation (as the
      original, whose dataset only holds those).
  Returns:
    ``{'bbox': {...}, 'segm': {...}, 'box_map', 'mask_map', 'num_images'}``, each type with the
    12 numbers (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl), its
    ``per_class_AP`` {class name: AP} and ``num_detections``; ``box_map`` / ``mask_map`` are the
    AP of bbox / segm (None when skipped). Values in [0, 1]; -1 where undefined (no GT).
  Raises:
    ResultsError: unknown category or image ids, malformed records (named).
  """
  gt = load_ground_truth(gt)
  if image_ids is None:
    image_ids = images_with_annotations(gt)
  image_ids = [int(i) for i in image_ids]
  if not image_ids:
    raise ResultsError('no image to evaluate (the ground truth has no annotated image)')
  summary: dict[str, Any] = {'num_images': len(image_ids)}
  for iou_type, results in (('bbox', bbox_results), ('segm', segm_results)):
    if results is None:
      continue
    name = 'results'
    if isinstance(results, (str, os.PathLike)):
      name = os.fspath(results)
      results = load_results_file(results, iou_type)
    check_results(results, iou_type, gt, name)
    summary[iou_type] = evaluate_type(gt, results, iou_type, image_ids)
  summary['box_map'] = summary['bbox']['AP'] if 'bbox' in summary else None
  summary['mask_map'] = summary['segm']['AP'] if 'segm' in summary else None
  return summary


def evaluate_model(cfg: YolactConfig, variables: Any, data: Any, batch_size: int = 8, *,
                   ann_file: Any = None, output_dir: str | os.PathLike | None = None,
                   **kwargs) -> dict[str, Any]:
  """Runs the model over ``data`` and returns :func:`coco_evaluate`'s summary over the images
  that ran, plus ``skipped_images``.

  ``data``: an EvalSet or what :func:`as_eval_set` accepts (e.g. ``InMemoryRecordSource`` with
  ``ann_file``, or a ``TfdsRecordSource``); for the latter the EvalSet is built once and cached,
  so a training loop can pass the same source every time. The compiled program is reused across
  calls (same config, batch size and set). ``output_dir``: also write the two results files.
  ``kwargs``: :func:`stream_inference` options (nms, dtype, max_images, progress (default off),
  decode_workers).
  """
  kwargs.setdefault('progress', False)
  eval_set = cached_eval_set(data, kwargs.pop('max_images', None), ann_file)
  results = predict_coco_results(cfg, variables, eval_set, batch_size, **kwargs)
  if output_dir is not None:
    write_results(output_dir, results.bbox, results.segm)
  if not results.image_ids:
    raise ResultsError(f'{eval_set.name}: no image could be evaluated '
                       f'({len(results.skipped)} unreadable)')
  summary = coco_evaluate(eval_set.ground_truth, results.bbox, results.segm,
                          image_ids=results.image_ids)
  summary['skipped_images'] = [{'image_id': i, 'reason': r} for i, r in results.skipped]
  return summary


# ---------------------------------------------------------------------------------------------
# Printing


def format_summary(summary: dict[str, Any]) -> str:
  """The 12 numbers of each type as a table (x100, as the original prints mAP)."""
  header = f'{"":6}|' + ''.join(f'{n:>7}' for n in METRIC_NAMES)
  lines = [header, '-' * len(header)]
  for iou_type, label in (('bbox', 'box'), ('segm', 'mask')):
    if iou_type in summary:
      values = summary[iou_type]
      lines.append(f'{label:6}|' + ''.join(f'{_pct(values[n]):>7}' for n in METRIC_NAMES))
  return '\n'.join(lines)


def format_per_class(summary: dict[str, Any]) -> str:
  """Per-class AP (x100) of box and mask, one class a line; '-' where the class has no GT."""
  types = [t for t in IOU_TYPES if t in summary]
  if not types:
    return ''
  names = list(summary[types[0]]['per_class_AP'])
  width = max([len(n) for n in names] + [5])
  lines = [f'{"class":{width}}' + ''.join(f'{("box" if t == "bbox" else "mask") + " AP":>10}'
                                          for t in types)]
  for name in names:
    lines.append(f'{name:{width}}' + ''.join(f'{_pct(summary[t]["per_class_AP"][name]):>10}'
                                             for t in types))
  return '\n'.join(lines)


def _pct(value: float) -> str:
  return '-' if value is None or value < 0 else f'{100 * value:.2f}'
