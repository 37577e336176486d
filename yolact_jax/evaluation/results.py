"""COCO results records, as the original's ``eval.py --output_coco_json`` writes them: detections
-> bbox / segm records, and writing, reading and checking results files.

Two file layouts: the original's pair ``bbox_detections.json`` / ``mask_detections.json`` (each a
list of records; :func:`write_results`), and one ``{"bbox": [...], "segm": [...]}`` object
(``scripts/predict.py --coco_json``; :meth:`CocoResults.write_combined`).
:func:`load_results_file` reads either.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from yolact_jax.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES
from yolact_jax.evaluation.inference import ImageDetections

# The original's results file names (eval.py --output_coco_json).
BBOX_RESULTS_FILE = 'bbox_detections.json'
MASK_RESULTS_FILE = 'mask_detections.json'


class ResultsError(ValueError):
  """A results list or file that does not fit the ground truth (the message says what)."""


# ---------------------------------------------------------------------------------------------
# Detections -> records


def coco_category_ids(class_names: Sequence[str]) -> tuple[int, ...]:
  """Category id per 0-based class: COCO's ids for the 80 COCO classes, else index + 1."""
  if tuple(class_names) == COCO_CLASSES:
    return COCO_CATEGORY_IDS
  return tuple(range(1, len(class_names) + 1))


def to_coco_results(detections: Any, image_id: int, category_ids: Sequence[int]
                    ) -> tuple[list[dict], list[dict]]:
  """COCO results records (bbox, segm) of one image, as the original's ``eval.py`` writes them.

  Detections whose box area ``(y2 - y1) * (x2 - x1)`` is not positive are skipped (the original's
  test, verbatim); bbox = [x1, y1, x2 - x1, y2 - y1] rounded to 0.1; segmentation = pycocotools
  RLE of the full-size mask with ASCII counts; category ids via ``category_ids[class]``.
  Box records are scored (and so ranked by COCOeval) with the box score ``scores``, segm records
  with the mask score ``mask_scores`` (YOLACT++: class score x predicted mask IoU; YOLACT: the
  same class score).
  ``detections``: a ``predict.Detections`` (boxes [n, 4] int or float pixels, classes [n],
  scores [n], mask_scores [n], masks [n, h, w] uint8).
  """
  from pycocotools import mask as mask_util
  bbox_records, segm_records = [], []
  for i in range(len(detections)):
    x1, y1, x2, y2 = (v.item() for v in detections.boxes[i])  # int, or float boxes
    if (y2 - y1) * (x2 - x1) <= 0:
      continue
    category_id = int(category_ids[int(detections.classes[i])])
    bbox = [round(float(v) * 10) / 10 for v in (x1, y1, x2 - x1, y2 - y1)]
    bbox_records.append({'image_id': int(image_id), 'category_id': category_id, 'bbox': bbox,
                         'score': float(detections.scores[i])})
    rle = mask_util.encode(np.asfortranarray(detections.masks[i].astype(np.uint8)))
    rle['counts'] = rle['counts'].decode('ascii')
    segm_records.append({'image_id': int(image_id), 'category_id': category_id,
                         'segmentation': rle, 'score': float(detections.mask_scores[i])})
  return bbox_records, segm_records


def detections_to_coco_results(images: Iterable[ImageDetections | tuple[int, Any]],
                               category_ids: Sequence[int]) -> tuple[list[dict], list[dict]]:
  """COCO results records (bbox list, segm list) of many images: :func:`to_coco_results` of
  each, after checking that every class index has a category id.

  Args:
    images: ``ImageDetections`` or (image_id, ``predict.Detections``) pairs.
    category_ids: class index -> category id (``EvalSet.category_ids``; COCO_CATEGORY_IDS for
      COCO).
  Raises:
    ResultsError: a class index without a category id.
  """
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
  """Results records collected image by image: ``bbox`` / ``segm`` lists, the ``image_ids`` added
  (images that ran) and the ``skipped`` (image id, reason) pairs of images that could not run.

  category_ids: class index -> category id of the records (``EvalSet.category_ids``, or
    :func:`coco_category_ids` of the model's class names).
  """
  category_ids: tuple[int, ...]
  bbox: list[dict] = dataclasses.field(default_factory=list)
  segm: list[dict] = dataclasses.field(default_factory=list)
  image_ids: list[int] = dataclasses.field(default_factory=list)
  skipped: list[tuple[int, str]] = dataclasses.field(default_factory=list)

  def add(self, image_id: int, detections: Any) -> None:
    """Appends the records of one image's ``predict.Detections`` (its masks can then be freed).
    """
    bbox, segm = detections_to_coco_results([(image_id, detections)], self.category_ids)
    self.bbox += bbox
    self.segm += segm
    self.image_ids.append(int(image_id))

  def write(self, output_dir: str | os.PathLike) -> tuple[str, str]:
    """The original's two files in ``output_dir`` (:func:`write_results`); their paths."""
    return write_results(output_dir, self.bbox, self.segm)

  def write_combined(self, path: str | os.PathLike) -> None:
    """One ``{"bbox": [...], "segm": [...]}`` file (folders made as needed)."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      json.dump({'bbox': self.bbox, 'segm': self.segm}, f)


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
