"""Ground truth for COCOeval: a pycocotools ``COCO`` from an annotation file, a COCO-format dict
or reader records, with the ``area`` COCOeval needs.

COCOeval rasterises every ground-truth segmentation, trusting it as pycocotools does (a NaN
polygon coordinate is a segmentation fault), so an annotation whose segmentation the dataset
reader would refuse (``data.coco.check_segmentation``) is left out of the copy COCOeval scores,
with one warning line each; polygon parts under three points are left out of it too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def quiet(fn, *args, **kwargs):
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


def _scorable(annotations: list[dict], sizes: dict[int, tuple[int, int]]) -> list[dict]:
  """The annotations COCOeval can rasterise: corrupt segmentations left out (a warning each),
  unusable polygon parts removed, ``area`` added where missing (copies; the input is kept)."""
  from yolact_jax.data import coco as coco_lib
  from yolact_jax.data import masks as mask_lib
  kept = []
  for ann in annotations:
    size = sizes.get(int(ann['image_id']))
    segmentation = ann.get('segmentation')
    if size is not None and segmentation:
      try:
        cleaned, notes = coco_lib.check_segmentation(segmentation, *size)
      except mask_lib.SegmentationError as e:
        log.warning('ground truth annotation %s of image %s left out of the evaluation: corrupt '
                    'segmentation (%s)', ann.get('id'), ann['image_id'], e)
        continue
      if notes and isinstance(segmentation, list):  # polygon parts left out
        ann = dict(ann, segmentation=cleaned)
    if 'area' not in ann:
      ann = dict(ann, area=annotation_area(ann, *(size or (None, None))))
    kept.append(ann)
  if len(kept) < len(annotations):
    log.warning('%d of %d ground truth annotations left out of the evaluation (corrupt '
                'segmentations)', len(annotations) - len(kept), len(annotations))
  return kept


def ground_truth_from_dict(data: dict) -> Any:
  """A pycocotools ``COCO`` from a COCO-format dict (not modified; COCOeval uses a copy with
  :func:`_scorable` annotations)."""
  from pycocotools.coco import COCO
  sizes = {int(image['id']): (int(image['height']), int(image['width']))
           for image in data.get('images', [])}
  data = dict(data, annotations=_scorable(data.get('annotations', []), sizes))
  gt = COCO()
  gt.dataset = data
  quiet(gt.createIndex)
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


def annotated_images_in_file_order(gt: Any) -> list[int]:
  """Ids of the GT images with at least one annotation, in the order of the file's images."""
  return [int(image['id']) for image in gt.dataset['images'] if gt.imgToAnns[image['id']]]


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
