"""pycocotools ``COCOeval`` for 'bbox' and 'segm': the 12 summary numbers by name and the AP of
each class.

Metric values are pycocotools' own: fractions in [0, 1], and -1 where the evaluated images have
no ground truth in that area range (or, per class, of that class). mAP over images with no
detection at all (an empty results list, on which pycocotools' ``loadRes`` crashes) is computed
on an empty detection set: 0 wherever there is ground truth, -1 elsewhere, with a warning.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from yolact_jax.evaluation.ground_truth import images_with_annotations, load_ground_truth, quiet
from yolact_jax.evaluation.results import ResultsError, check_results, load_results_file

IOU_TYPES = ('bbox', 'segm')
# COCOeval.stats order (params.maxDets = [1, 10, 100]).
METRIC_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


def load_detections(gt: Any, records: Sequence[dict]) -> Any:
  """``gt.loadRes`` of copies of ``records`` (loadRes adds keys to the dicts it is given); for
  an empty list (loadRes crashes on it) an empty detection set."""
  from pycocotools.coco import COCO
  if not records:
    empty = COCO()
    empty.dataset = {'images': list(gt.dataset['images']),
                     'categories': copy.deepcopy(gt.dataset['categories']), 'annotations': []}
    quiet(empty.createIndex)
    return empty
  return quiet(gt.loadRes, [dict(r) for r in records])


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
    quiet(evaluator.evaluate)
    quiet(evaluator.accumulate)
    quiet(evaluator.summarize)
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
