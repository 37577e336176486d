"""COCO-format instance datasets: validation, label maps, per-image records and raw samples.

Any ``instances_*.json`` (COCO format) with an image folder works, COCO itself or a custom
dataset, in three stages: :func:`load_annotation_file` reads the JSON and checks its structure;
:func:`build_records` validates every image and annotation and makes one plain *record* per
image (cheap to keep and to send to loader workers; nothing is decoded yet); :func:`decode_record`
turns a record into a :class:`RawSample` exactly as the original's ``COCODetection.pull_item``
does (BGR uint8 image as ``cv2.imread`` gives it, relative x1y1x2y2 boxes, 0-based labels,
crowds last with label -1, masks ``[n, H, W]`` decoded with pycocotools).

Each defect is one :class:`Problem` logged as one warning line, and every file gets ONE summary
line of counts by kind (:class:`ProblemSummary`); what is dropped, clipped or kept is the policy
in :func:`build_records`. Pixel problems (corrupt bytes, a size other than the JSON's) raise
``BrokenSampleError`` from :func:`decode_record`; the training loader logs and substitutes them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from yolact_jax.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES, COCO_LABEL_MAP
from yolact_jax.data import masks as mask_lib

log = logging.getLogger(__name__)

# Which images a dataset keeps (see CocoDataset):
#   'with_objects'     at least one non-crowd annotation (training default: the original keeps
#                      crowd-only images, but with no non-crowd object its loss cannot match
#                      anything).
#   'with_annotations' at least one annotation of any kind, crowds included (the original's rule,
#                      used for evaluation).
#   'all'              every image.
KEEP_CHOICES = ('with_objects', 'with_annotations', 'all')


class CocoFormatError(ValueError):
  """The annotation file is not usable COCO format, or the dataset is empty."""


class BrokenSampleError(RuntimeError):
  """A sample whose image cannot be read or does not match its annotations."""

  def __init__(self, file_name: str, reason: str):
    super().__init__(f'{file_name}: {reason}')
    self.file_name = file_name
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Problem:
  """One defect found while preparing a dataset.

  ``file`` is where the defect is (the annotation file, or an image file); ``kind`` one of
  ``PROBLEM_KINDS`` ('' when not classified) and ``source`` the annotation file being read (None
  when the problem was not found reading one); summaries count problems by both.
  """
  file: str
  message: str
  image_id: int | None = None
  annotation_id: int | None = None
  kind: str = ''
  source: str | None = None

  def __str__(self) -> str:
    where = [self.file]
    if self.image_id is not None:
      where.append(f'image {self.image_id}')
    if self.annotation_id is not None:
      where.append(f'annotation {self.annotation_id}')
    return f"{', '.join(where)}: {self.message}"


DROPS_ANNOTATION, DROPS_IMAGE, KEPT = 'annotation dropped', 'image dropped', 'kept'

# What ``build_records`` reports, in summary order: kind -> (how a summary counts one, how it
# counts several, what happens to the annotation or image).
PROBLEM_KINDS = {
    'corrupt segmentation': ('corrupt segmentation', 'corrupt segmentations', DROPS_ANNOTATION),
    'zero-area box': ('zero-area box', 'zero-area boxes', DROPS_ANNOTATION),
    'box outside the image': ('box outside the image', 'boxes outside the image',
                              DROPS_ANNOTATION),
    'malformed box': ('malformed box', 'malformed boxes', DROPS_ANNOTATION),
    'unknown category': ('unknown category', 'unknown categories', DROPS_ANNOTATION),
    'unknown image id': ('unknown image id', 'unknown image ids', DROPS_ANNOTATION),
    'invalid image size': ('invalid image size', 'invalid image sizes', DROPS_IMAGE),
    'missing image file': ('missing image file', 'missing image files', DROPS_IMAGE),
    'unreadable image': ('unreadable image', 'unreadable images', DROPS_IMAGE),
    'box clipped': ('box clipped', 'boxes clipped', KEPT),
    'box under one pixel': ('box under one pixel kept', 'boxes under one pixel kept', KEPT),
    'polygon part dropped': ('polygon part dropped', 'polygon parts dropped', KEPT),
    'filled-box mask': ('filled-box mask', 'filled-box masks', KEPT),
}
_OTHER = ('other problem', 'other problems', KEPT)


def _kind_info(kind: str) -> tuple[str, str, str]:
  """(one, several, effect) of a kind (``PROBLEM_KINDS``; anything else is 'other')."""
  return PROBLEM_KINDS.get(kind, _OTHER)

Note = tuple[str, str]  # (kind, message) of one problem, before file and ids are attached


def _counted(number: int, singular: str, plural: str) -> str:
  return f'{number} {singular if number == 1 else plural}'


@dataclasses.dataclass(frozen=True)
class ProblemSummary:
  """How many problems of each kind reading one annotation file found.

  ``counts``: kind -> number (kinds with none left out, in ``PROBLEM_KINDS`` order; an
  unclassified problem counts as 'other'). ``str()`` is the one-line summary the dataset logs,
  e.g. ``instances_train.json: 3 annotations dropped (2 corrupt segmentations, 1 zero-area
  box), 1 image dropped (1 missing image file), 5 boxes clipped``.
  """
  file: str
  counts: dict[str, int]

  def count(self, kind: str) -> int:
    """Number of problems of ``kind``."""
    return self.counts.get(kind, 0)

  def _total(self, effect: str) -> int:
    return sum(n for kind, n in self.counts.items() if _kind_info(kind)[2] == effect)

  @property
  def annotations_dropped(self) -> int:
    return self._total(DROPS_ANNOTATION)

  @property
  def images_dropped(self) -> int:
    return self._total(DROPS_IMAGE)

  def _phrases(self, effect: str) -> list[str]:
    return [_counted(n, *_kind_info(kind)[:2]) for kind, n in self.counts.items()
            if _kind_info(kind)[2] == effect]

  def __str__(self) -> str:
    parts = []
    for effect, noun in ((DROPS_ANNOTATION, 'annotation'), (DROPS_IMAGE, 'image')):
      if self._total(effect):
        parts.append(f'{_counted(self._total(effect), f"{noun} dropped", f"{noun}s dropped")} '
                     f'({", ".join(self._phrases(effect))})')
    parts += self._phrases(KEPT)
    return f'{self.file}: {", ".join(parts) or "no problems"}'


def summarize(file: str, problems: Iterable[Problem]) -> ProblemSummary:
  """The summary of ``problems`` (all counted) under the name ``file``."""
  counts = collections.Counter(p.kind if p.kind in PROBLEM_KINDS else 'other' for p in problems)
  order = [*PROBLEM_KINDS, 'other']
  return ProblemSummary(file, {kind: counts[kind] for kind in order if counts[kind]})


def summarize_problems(problems: Iterable[Problem]) -> list[ProblemSummary]:
  """One summary per annotation file the problems were found reading (``Problem.source``), in
  order of first appearance; problems without a source are not summarised."""
  by_source: dict[str, list[Problem]] = {}
  for problem in problems:
    if problem.source is not None:
      by_source.setdefault(problem.source, []).append(problem)
  return [summarize(source, found) for source, found in by_source.items()]


@dataclasses.dataclass(frozen=True)
class LabelMap:
  """Category ids <-> contiguous 0-based class indices, and class names.

  Categories are ordered by id. For COCO's 80 categories this is exactly the original's
  ``COCO_LABEL_MAP`` (minus one); a custom dataset gets its own map the same way.
  """
  category_ids: tuple[int, ...]
  class_names: tuple[str, ...]

  @property
  def id_to_index(self) -> dict[int, int]:
    """category id -> 0-based class index."""
    return {cat_id: index for index, cat_id in enumerate(self.category_ids)}

  @property
  def num_classes(self) -> int:
    """Number of foreground classes (no background)."""
    return len(self.category_ids)


def build_label_map(categories: Sequence[dict]) -> LabelMap:
  """Label map from a COCO ``categories`` list (ids sorted ascending, names kept)."""
  by_id = {int(cat['id']): str(cat.get('name', cat['id'])) for cat in categories}
  ids = tuple(sorted(by_id))
  return LabelMap(category_ids=ids, class_names=tuple(by_id[i] for i in ids))


def coco_label_map() -> LabelMap:
  """The original's COCO label map (80 classes)."""
  assert all(COCO_LABEL_MAP[c] == i + 1 for i, c in enumerate(COCO_CATEGORY_IDS))
  return LabelMap(category_ids=tuple(COCO_CATEGORY_IDS), class_names=tuple(COCO_CLASSES))


_REQUIRED_KEYS = {
    'images': ('id', 'file_name', 'height', 'width'),
    'annotations': ('id', 'image_id', 'category_id'),
    'categories': ('id',),
}


def check_coco_structure(data: Any, file: str) -> None:
  """Raises ``CocoFormatError`` naming ``file`` and the key that is missing or malformed."""
  if not isinstance(data, dict):
    raise CocoFormatError(f'{file}: not COCO format: the top level is a '
                          f'{type(data).__name__}, expected an object with keys '
                          f'{sorted(_REQUIRED_KEYS)}')
  for key, item_keys in _REQUIRED_KEYS.items():
    if key not in data:
      raise CocoFormatError(f"{file}: not COCO format: missing top-level key '{key}' "
                            f'(found keys: {sorted(data)[:10]})')
    if not isinstance(data[key], list):
      raise CocoFormatError(f"{file}: not COCO format: '{key}' must be a list, got "
                            f'{type(data[key]).__name__}')
    for position, item in enumerate(data[key]):
      if not isinstance(item, dict):
        raise CocoFormatError(f"{file}: not COCO format: {key}[{position}] is a "
                              f'{type(item).__name__}, expected an object')
      missing = [k for k in item_keys if k not in item]
      if missing:
        raise CocoFormatError(f"{file}: not COCO format: {key}[{position}] lacks key "
                              f"'{missing[0]}' (required: {list(item_keys)})")


def load_annotation_file(ann_file: str | os.PathLike) -> dict:
  """Reads a COCO ``instances_*.json`` and checks its structure.

  Raises:
    CocoFormatError: unreadable JSON, or a required key missing (message names file and key).
    FileNotFoundError: the file does not exist.
  """
  ann_file = os.fspath(ann_file)
  try:
    with open(ann_file, 'rb') as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise CocoFormatError(f'{ann_file}: not COCO format: invalid JSON ({e})') from e
  check_coco_structure(data, ann_file)
  return data


def resolve_image_path(image_dir: str, file_name: str) -> str:
  """Image path for a COCO ``file_name``.

  The original reduces COCO2014-style names ('COCO_train2014_000000000009.jpg') to the part
  after the last '_'; here that reduced name is used when the full name does not exist.
  """
  path = os.path.join(image_dir, file_name)
  if file_name.startswith('COCO') and not os.path.exists(path):
    reduced = os.path.join(image_dir, file_name.split('_')[-1])
    if os.path.exists(reduced):
      return reduced
  return path


def _clip_box(bbox: Any, height: int, width: int) -> tuple[list[float] | None, Note | None]:
  """COCO [x, y, w, h] -> (clipped [x, y, w, h], or None when unusable; a note when it changed
  or was dropped)."""
  if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
    return None, ('malformed box', f'bbox {bbox!r} is not [x, y, w, h]: annotation dropped')
  try:
    x, y, w, h = (float(v) for v in bbox)
  except (TypeError, ValueError):
    return None, ('malformed box', f'bbox {bbox!r} is not numeric: annotation dropped')
  if not all(math.isfinite(v) for v in (x, y, w, h)):
    return None, ('malformed box', f'bbox {bbox!r} is not finite: annotation dropped')
  x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
  x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
  if x2 - x1 <= 0 or y2 - y1 <= 0:
    kind, what = (('zero-area box', 'zero-area') if (w <= 0 or h <= 0) else
                  ('box outside the image', 'outside the image'))
    return None, (kind, f'{what} bbox {list(bbox)} in a {width}x{height} image: annotation '
                  'dropped')
  clipped = [x1, y1, x2 - x1, y2 - y1]
  if (x1, y1, x2, y2) != (x, y, x + w, y + h):
    return clipped, ('box clipped', f'bbox {list(bbox)} extends outside the {width}x{height} '
                     'image: clipped')
  return clipped, None


# Boxes under one pixel pass the original's small-box filter (see data/augment.py).
_SUB_PIXEL_ADVICE = (
    "kept, as the original's discard rule keeps it (augment.discard_box_width/height is "
    'compared in pixels); such boxes can make the mask loss explode: '
    '--config.augment.fix_discard_box_units=True drops boxes under '
    'augment.discard_box_width/height (4/550) of the training image')


def _sub_pixel_note(box_xywh: Sequence[float]) -> Note | None:
  """A note for a (clipped) box under one pixel in width or height; it is kept."""
  width, height = box_xywh[2], box_xywh[3]
  if width >= 1 and height >= 1:
    return None
  return ('box under one pixel', f'box {width:g}x{height:g} px is under one pixel: '
          f'{_SUB_PIXEL_ADVICE}')


def check_segmentation(segmentation: Any, height: int, width: int) -> tuple[Any, list[Note]]:
  """Checks a segmentation without rasterising it (``mask_lib.clean_polygons`` with the image
  size, ``mask_lib.check_rle``).

  Corrupt means: a polygon coordinate that is not a finite number or lies outside
  ``masks.POLYGON_MARGIN`` (x in [-W, 2W], y in [-H, 2H]; real COCO polygons overshoot the image
  by a pixel or so, which stays legal); an RLE whose ``size`` is not the image's or whose
  ``counts`` are not non-negative runs covering exactly H x W pixels (or not a well-formed
  compressed string); an unknown form; a polygon with no part of 3 points or more.

  Returns:
    (the usable segmentation, or None when there is none: the filled box is the mask; notes on
    what was left out: polygon parts under 3 points, a missing segmentation)
  Raises:
    mask_lib.SegmentationError: the segmentation is corrupt, or no polygon part is usable; the
      annotation must be dropped.
  """
  if segmentation is None or (isinstance(segmentation, (list, tuple)) and not segmentation):
    return None, [('filled-box mask', 'no segmentation: the filled box is used as mask')]
  if isinstance(segmentation, (list, tuple)):
    polygons, messages = mask_lib.clean_polygons(segmentation, height, width)
    if not polygons:
      raise mask_lib.SegmentationError(f'no usable polygon part ({"; ".join(messages)})')
    return polygons, [('polygon part dropped', m) for m in messages]
  if isinstance(segmentation, dict):
    mask_lib.check_rle(segmentation, height, width)
    return segmentation, []
  raise mask_lib.SegmentationError(f'unknown segmentation form ({type(segmentation).__name__})')


def _check_annotation(ann: dict, images: dict[int, dict], class_of: dict[int, int],
                      ) -> tuple[dict | None, list[Note]]:
  """One annotation -> (its entry for the image's record, or None when it is dropped; notes).

  A dropped annotation has exactly one note, the reason it is dropped. A kept one may have
  several (box clipped, box under one pixel, polygon parts dropped, filled-box mask).
  """
  image = images.get(int(ann['image_id']))
  if image is None:
    return None, [('unknown image id', 'image_id not in images: annotation dropped')]
  if ann['category_id'] not in class_of:
    return None, [('unknown category', f"category_id {ann['category_id']} is not in "
                   'categories: annotation dropped')]
  height, width = int(image['height']), int(image['width'])
  box, box_note = _clip_box(ann.get('bbox'), height, width)
  if box is None:
    return None, [box_note]
  try:
    segmentation, notes = check_segmentation(ann.get('segmentation'), height, width)
  except mask_lib.SegmentationError as e:
    return None, [('corrupt segmentation', f'corrupt segmentation: {e}: annotation dropped')]
  notes = [n for n in (box_note, _sub_pixel_note(box)) if n is not None] + notes
  return {'id': int(ann['id']), 'box': box, 'class': class_of[ann['category_id']],
          'crowd': bool(ann.get('iscrowd', 0)), 'segmentation': segmentation}, notes


def _first_duplicate_id(items: list[dict], other_key: str) -> tuple[int, Any, Any] | None:
  """The first ``id`` two items share: (id, ``other_key`` of the first, of the second)."""
  seen: dict[int, Any] = {}
  for item in items:
    item_id = int(item['id'])
    if item_id in seen:
      return item_id, seen[item_id], item[other_key]
    seen[item_id] = item[other_key]
  return None


def check_unique_ids(data: dict, ann_file: str) -> None:
  """Raises ``CocoFormatError`` (one line: the id and what both entries are) when two images or
  two annotations share an id: the lookups by id would silently put one image's annotations on
  another's pixels."""
  duplicate = _first_duplicate_id(data['images'], 'file_name')
  if duplicate:
    raise CocoFormatError(f'{ann_file}: image id {duplicate[0]} is used twice (file names '
                          f'{duplicate[1]!r} and {duplicate[2]!r}): image ids must be unique')
  duplicate = _first_duplicate_id(data['annotations'], 'image_id')
  if duplicate:
    raise CocoFormatError(f'{ann_file}: annotation id {duplicate[0]} is used twice (on images '
                          f'{duplicate[1]} and {duplicate[2]}): annotation ids must be unique')


def _valid_images(data: dict, ann_file: str, problems: list[Problem]) -> dict[int, dict]:
  """Images by id, without those of non-positive size (reported in ``problems``)."""
  images = {}
  for image in data['images']:
    image_id = int(image['id'])
    height, width = int(image['height']), int(image['width'])
    if height <= 0 or width <= 0:
      problems.append(Problem(ann_file, f'image size {width}x{height} is invalid: image '
                              'dropped', image_id, kind='invalid image size', source=ann_file))
      continue
    images[image_id] = image
  return images


def _valid_annotations(data: dict, images: dict[int, dict], label_map: LabelMap, ann_file: str,
                       problems: list[Problem]) -> dict[int, list[dict]]:
  """Per image id, its usable annotations in file order (box clipped, segmentation checked);
  unusable ones are dropped and reported in ``problems`` (see ``_check_annotation``)."""
  class_of = label_map.id_to_index
  annotations_of: dict[int, list[dict]] = {image_id: [] for image_id in images}
  for ann in data['annotations']:
    image_id, ann_id = int(ann['image_id']), int(ann['id'])
    entry, notes = _check_annotation(ann, images, class_of)
    problems.extend(Problem(ann_file, message, image_id, ann_id, kind=kind, source=ann_file)
                    for kind, message in notes)
    if entry is not None:
      annotations_of[image_id].append(entry)
  return annotations_of


def _record(image_id: int, image: dict, path: str, anns: list[dict]) -> dict:
  """One image's record (see :func:`build_records`)."""
  return {
      'image_id': image_id,
      'file_name': str(image['file_name']),
      'height': int(image['height']),
      'width': int(image['width']),
      'image_path': path,
      'boxes_xywh': np.array([a['box'] for a in anns], np.float64).reshape(-1, 4),
      'category_index': np.array([a['class'] for a in anns], np.int32),
      'is_crowd': np.array([a['crowd'] for a in anns], bool),
      'annotation_ids': np.array([a['id'] for a in anns], np.int64),
      'segmentations': [a['segmentation'] for a in anns],
  }


def build_records(data: dict, ann_file: str, image_dir: str, label_map: LabelMap | None = None,
                  keep: str = 'with_objects', check_files: bool = True,
                  ) -> tuple[list[dict], list[Problem], LabelMap]:
  """Validates a COCO dict and makes one record per kept image.

  A record is a plain dict::

    image_id int, file_name str, height int, width int, image_path str,
    boxes_xywh float64 [n, 4] (pixels, clipped), category_index int32 [n] (0-based class of every
    annotation, crowds included), is_crowd bool [n], annotation_ids int64 [n],
    segmentations list[n] (polygon list | RLE dict | None = use the filled box)

  Annotations keep their file order here; ``decode_record`` moves crowds last.

  Defect policy (each defect is one ``Problem``; a dropped annotation has exactly one, saying why):

  * two images, or two annotations, with the same id: the file is refused
    (:func:`check_unique_ids`);
  * ``category_id`` not in ``categories``, ``image_id`` not in ``images``, a box missing,
    malformed or not finite: the annotation is dropped;
  * a box reaching outside the image is clipped to it; zero (or negative) width or height after
    clipping: dropped;
  * a box under one pixel in width or height (after clipping): KEPT, as the original keeps it
    (its small-box filter compares ``augment.discard_box_width/height`` with pixel widths), and
    reported, naming ``--config.augment.fix_discard_box_units=True``, which drops such boxes
    (they can make the mask loss explode);
  * a corrupt segmentation (:func:`check_segmentation`): the annotation is DROPPED, not given its
    box as mask; polygon parts under 3 points are dropped and the others used; a missing or empty
    segmentation makes the filled box the mask;
  * an image of non-positive size in the JSON, or whose file is missing: dropped;
  * an image whose only annotations are crowds: kept only by ``keep='with_annotations'`` or
    ``'all'`` (``KEEP_CHOICES``).

  Args:
    data: the parsed JSON (``load_annotation_file``).
    ann_file: its path, for messages.
    image_dir: folder holding the images.
    label_map: category map to use; default: built from ``data['categories']``.
    keep: one of ``KEEP_CHOICES``.
    check_files: report and drop images whose file does not exist.
  Returns:
    (records, problems, label_map)
  Raises:
    CocoFormatError: ``keep`` unknown, no categories, an image or annotation id used twice, or
      no image left (message says why).
  """
  if keep not in KEEP_CHOICES:
    raise ValueError(f'keep must be one of {KEEP_CHOICES}, got {keep!r}')
  check_unique_ids(data, ann_file)
  if label_map is None:
    if not data['categories']:
      raise CocoFormatError(f"{ann_file}: 'categories' is empty: no class to learn")
    label_map = build_label_map(data['categories'])
  problems: list[Problem] = []
  images = _valid_images(data, ann_file, problems)
  annotations_of = _valid_annotations(data, images, label_map, ann_file, problems)
  records = []
  for image_id, image in images.items():
    anns = annotations_of[image_id]
    num_objects = sum(not a['crowd'] for a in anns)
    if (keep == 'with_objects' and num_objects == 0) or (keep == 'with_annotations'
                                                         and not anns):
      continue
    path = resolve_image_path(image_dir, str(image['file_name']))
    if check_files and not os.path.isfile(path):
      problems.append(Problem(path, 'image file not found: image dropped', image_id,
                              kind='missing image file', source=ann_file))
      continue
    records.append(_record(image_id, image, path, anns))
  if not records:
    raise CocoFormatError(
        f'{ann_file}: empty dataset: no image left (keep={keep!r}; {len(data["images"])} '
        f'images, {len(data["annotations"])} annotations in the file; '
        f'{len(problems)} problems: {"; ".join(str(p) for p in problems[:5])})')
  return records, problems, label_map


@dataclasses.dataclass
class RawSample:
  """One decoded sample, as the original's dataset hands it to the transform.

  image:      uint8 [H, W, 3] BGR (cv2.imread's conversion: grayscale, RGBA, 16-bit -> 8-bit BGR).
  masks:      uint8 [n, H, W] in {0, 1}.
  boxes:      float32 [n, 4] relative x1, y1, x2, y2 (fractions of W, H).
  labels:     int32 [n] 0-based class; -1 for crowds, which are the last ``num_crowds`` rows.
  num_crowds: number of crowd rows.
  image_id, orig_hw (H, W), file_name: identification.
  """
  image: np.ndarray
  masks: np.ndarray
  boxes: np.ndarray
  labels: np.ndarray
  num_crowds: int
  image_id: int
  orig_hw: tuple[int, int]
  file_name: str


def decode_image(encoded: bytes | None, path: str | None, name: str) -> np.ndarray:
  """Encoded image bytes (or a file path) -> uint8 [H, W, 3] BGR, like ``cv2.imread``.

  Raises:
    BrokenSampleError: the file is missing or cv2 cannot decode it.
  """
  if encoded is None:
    try:
      with open(path, 'rb') as f:
        encoded = f.read()
    except OSError as e:
      raise BrokenSampleError(name, f'cannot read image file ({e.strerror})') from e
  buffer = np.frombuffer(encoded, np.uint8)
  image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
  if image is None:
    raise BrokenSampleError(name, f'cannot decode image ({len(encoded)} bytes)')
  return image


def decode_record(record: dict) -> RawSample:
  """A record (from ``build_records`` or the TFDS source) -> ``RawSample``.

  The record gives the image either as ``image_bytes`` or as ``image_path``. A segmentation
  ``masks.segmentation_to_rle`` refuses (none in records from ``build_records``, which drops
  them; possible in hand-made or older records) gets the filled box, like a missing one.

  Raises:
    BrokenSampleError: unreadable image, or its size differs from the annotation's.
  """
  name = record.get('image_path') or record['file_name']
  image = decode_image(record.get('image_bytes'), record.get('image_path'), name)
  height, width = int(record['height']), int(record['width'])
  if image.shape[:2] != (height, width):
    raise BrokenSampleError(name, f'image is {image.shape[1]}x{image.shape[0]} but the '
                            f'annotations say {width}x{height}')
  is_crowd = np.asarray(record['is_crowd'], bool).reshape(-1)
  order = np.concatenate([np.flatnonzero(~is_crowd), np.flatnonzero(is_crowd)])
  boxes_xywh = np.asarray(record['boxes_xywh'], np.float64).reshape(-1, 4)[order]
  labels = np.asarray(record['category_index'], np.int32).reshape(-1)[order]
  labels[is_crowd[order]] = -1
  num_crowds = int(is_crowd.sum())

  masks = np.zeros((len(order), height, width), np.uint8)
  segmentations = [record['segmentations'][i] for i in order]
  rle_rows, rles = [], []
  for row, (segmentation, box) in enumerate(zip(segmentations, boxes_xywh)):
    if segmentation is None:
      masks[row] = mask_lib.box_mask(box, height, width)
      continue
    try:
      rles.append(mask_lib.segmentation_to_rle(segmentation, height, width))
      rle_rows.append(row)
    except mask_lib.SegmentationError:
      masks[row] = mask_lib.box_mask(box, height, width)
  if rles:
    masks[rle_rows] = mask_lib.decode_rles(rles, height, width)

  scale = np.array([width, height, width, height], np.float64)
  boxes = np.concatenate([boxes_xywh[:, :2], boxes_xywh[:, :2] + boxes_xywh[:, 2:]], axis=1)
  return RawSample(image=image, masks=masks, boxes=(boxes / scale).astype(np.float32),
                   labels=labels, num_crowds=num_crowds, image_id=int(record['image_id']),
                   orig_hw=(height, width), file_name=str(record['file_name']))


def log_problems(problems: Iterable[Problem], limit: int = 50) -> None:
  """Logs problems as warnings: the first ``limit`` in full, then how many more, then one
  summary line per annotation file (``summarize_problems``; it counts every problem)."""
  problems = list(problems)
  for problem in problems[:limit]:
    log.warning('%s', problem)
  if len(problems) > limit:
    log.warning('... and %d more problems', len(problems) - limit)
  for summary in summarize_problems(problems):
    log.warning('%s', summary)


class CocoDataset:
  """A COCO-format instance dataset: records in memory, samples decoded on access.

  Attributes:
    ann_file, image_dir: where it comes from.
    label_map: category id -> 0-based class index (dict).
    class_names: tuple of class names in class-index order.
    category_ids: tuple, class index -> category id (for results files).
    problems: list of ``Problem`` found while reading (also logged).
    summary: ``ProblemSummary`` of them (counts by kind; also logged, as one line).
    records: one dict per kept image (see ``build_records``).
  ``len(ds)`` images; ``ds[i]`` -> ``RawSample`` (may raise ``BrokenSampleError``).
  """

  def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike,
               keep: str = 'with_objects', label_map: LabelMap | None = None,
               check_files: bool = True, log_found_problems: bool = True):
    """
    Args:
      ann_file: the ``instances_*.json``.
      image_dir: folder with the images named by ``file_name``.
      keep: which images to keep, one of ``KEEP_CHOICES``; 'with_objects' (default) is the
        training choice, 'with_annotations' the original's evaluation set, 'all' everything.
      label_map: force a label map (e.g. ``coco_label_map()``); default from the categories.
      check_files: check that every image file exists (reported and dropped if not).
      log_found_problems: log every problem found as a warning.
    """
    self.ann_file = os.fspath(ann_file)
    self.image_dir = os.fspath(image_dir)
    data = load_annotation_file(self.ann_file)
    self.records, self.problems, self._label_map = build_records(
        data, self.ann_file, self.image_dir, label_map=label_map, keep=keep,
        check_files=check_files)
    self.keep = keep
    self.summary = summarize(self.ann_file, self.problems)
    if log_found_problems:
      log_problems(self.problems)

  @property
  def label_map(self) -> dict[int, int]:
    """category id -> 0-based contiguous class index."""
    return self._label_map.id_to_index

  @property
  def labels(self) -> LabelMap:
    """The ``LabelMap`` (ids and names in class order)."""
    return self._label_map

  @property
  def class_names(self) -> tuple[str, ...]:
    return self._label_map.class_names

  @property
  def category_ids(self) -> tuple[int, ...]:
    return self._label_map.category_ids

  @property
  def image_ids(self) -> list[int]:
    return [r['image_id'] for r in self.records]

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> RawSample:
    return decode_record(self.records[index])

  def __repr__(self) -> str:
    return (f'CocoDataset({self.ann_file!r}, images={len(self)}, keep={self.keep!r}, '
            f'classes={len(self.class_names)})')
