"""A small deterministic COCO-format instance dataset of coloured shapes (the built-in default).

``generate_synthetic_coco(out_dir, ...)`` writes::

  out_dir/{train,val}/000000000001.jpg ...    images (JPEG or PNG, via cv2)
  out_dir/annotations/instances_train.json    COCO format
  out_dir/annotations/instances_val.json
  out_dir/manifest.json                       parameters + counts; written last

Four shape classes with NON-contiguous category ids (1 circle, 3 square, 5 triangle, 7 star:
``yolact_jax.config.SYNTHETIC_CLASSES``), so the label map is exercised. Later shapes occlude
earlier ones; annotations describe the VISIBLE part in COCO's encodings (:func:`_draw_image`).
Each image comes from its own generator seeded by (seed, split, index): the same arguments give
byte-identical files; generation is skipped when ``manifest.json`` matches and every file exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from yolact_jax.data import masks as mask_lib

log = logging.getLogger(__name__)

CATEGORIES = (
    {'id': 1, 'name': 'circle', 'supercategory': 'shape'},
    {'id': 3, 'name': 'square', 'supercategory': 'shape'},
    {'id': 5, 'name': 'triangle', 'supercategory': 'shape'},
    {'id': 7, 'name': 'star', 'supercategory': 'shape'},
)
SPLITS = {'train': 1, 'val': 2}  # split name -> code mixed into the per-image seed
_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """Parameters of a synthetic dataset (also stored in manifest.json).

  image_hw: fixed (H, W), or None to draw each side uniformly from ``side_range``.
  square: with ``image_hw`` None, draw one side from ``side_range`` for both (square images).
  max_objects: shapes per image, drawn from 1..max_objects.
  object_scale: shape radius as a fraction of min(H, W), drawn from this range.
  crowd_fraction: fraction of images that get a crowd region.
  rle_fraction: fraction of unoccluded shapes annotated with an RLE instead of a polygon.
  image_format: 'jpg' or 'png'.
  """
  num_train: int = 200
  num_val: int = 50
  seed: int = 0
  image_hw: tuple[int, int] | None = None
  side_range: tuple[int, int] = (256, 550)
  square: bool = False
  max_objects: int = 6
  object_scale: tuple[float, float] = (0.12, 0.3)
  crowd_fraction: float = 0.1
  rle_fraction: float = 0.15
  image_format: str = 'jpg'


def uncompressed_rle(mask: np.ndarray) -> dict:
  """uint8 mask [H, W] -> COCO uncompressed RLE ``{'size': [H, W], 'counts': [ints]}``.

  Counts are run lengths over the column-major pixel order, starting with a run of zeros.
  """
  flat = np.asarray(mask, np.uint8).reshape(-1, order='F')
  change = np.flatnonzero(np.diff(flat)) + 1
  bounds = np.concatenate([[0], change, [flat.size]])
  counts = np.diff(bounds).tolist()
  if flat.size and flat[0] == 1:
    counts = [0] + counts
  return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': counts}


def _shape_polygon(kind: str, center: np.ndarray, radius: float, angle: float,
                   rng: np.random.Generator) -> np.ndarray:
  """Vertices [k, 2] (x, y) of one shape."""
  if kind == 'circle':
    theta = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    local = np.stack([np.cos(theta), np.sin(theta)], 1) * radius
  elif kind == 'square':
    half = radius * 0.85  # about the area of the circle of the same radius
    local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
  elif kind == 'triangle':
    theta = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
    local = np.stack([np.cos(theta), np.sin(theta)], 1) * radius
  elif kind == 'star':
    theta = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    local = np.stack([np.cos(theta) * r, np.sin(theta) * r], 1)
  else:
    raise ValueError(kind)
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  return local @ rotation.T + center


def _polygon_mask(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
  """pycocotools' rasterisation of one polygon -> uint8 [H, W]."""
  rle = mask_utils.merge(mask_utils.frPyObjects([polygon.reshape(-1).tolist()], height, width))
  return mask_lib.decode_rle(rle)


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
  """Smooth, half-desaturated random colour field + stripes + noise, uint8 [H, W, 3]."""
  grid = rng.uniform(30, 225, (int(rng.integers(3, 7)), int(rng.integers(3, 7)), 3))
  field = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
  field = 0.5 * field + 0.5 * field.mean(axis=2, keepdims=True)  # half-desaturated
  angle, period = rng.uniform(0, np.pi), rng.uniform(8, 40)
  ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
  stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period))
  field += (stripes * rng.uniform(5, 25))[:, :, None]
  noise = rng.integers(0, 24, (height, width, 3), dtype=np.uint8).astype(np.float32)
  return np.clip(field + noise - 12, 0, 255).astype(np.uint8)


def _paint(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
  """Paints ``mask`` with a saturated random colour and a linear shading gradient."""
  hsv = np.array([[[rng.uniform(0, 180), rng.uniform(150, 255), rng.uniform(140, 255)]]],
                 np.uint8)
  colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
  ys, xs = np.nonzero(mask)
  direction = rng.normal(size=2)
  direction /= np.linalg.norm(direction) + 1e-9
  ramp = (xs * direction[0] + ys * direction[1]).astype(np.float32)
  ramp = (ramp - ramp.mean()) / (np.ptp(ramp) + 1e-6) * rng.uniform(20, 60)
  image[ys, xs] = np.clip(colour[None, :] + ramp[:, None], 0, 255).astype(np.uint8)


def _encode_visible(visible: np.ndarray, occluded: bool, use_rle: bool,
                    polygon: np.ndarray) -> list | dict:
  """Annotation segmentation for a visible mask, as COCO encodes one.

  An unoccluded shape: its polygon (the painted pixels are exactly pycocotools' rasterisation of
  that polygon, so the mask and the picture agree), or with ``use_rle`` a compressed RLE. An
  occluded shape: the polygons of its visible outline (several parts when the occluder splits
  it; ~1 px of boundary approximation like real annotations), or an RLE when the visible part
  has holes.
  """
  if not occluded:
    if use_rle:
      rle = mask_utils.encode(np.asfortranarray(visible))
      return {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}
    return [polygon.reshape(-1).round(2).tolist()]
  contours, hierarchy = cv2.findContours(visible, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
  has_holes = hierarchy is not None and (hierarchy[0, :, 3] >= 0).any()
  parts = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
  if has_holes or not parts:
    rle = mask_utils.encode(np.asfortranarray(visible))
    return {'size': rle['size'], 'counts': rle['counts'].decode('ascii')}
  return parts


def _draw_image(spec: SyntheticSpec, split: str, index: int
                ) -> tuple[np.ndarray, list[dict]]:
  """One image and its annotations (without ids). Deterministic in (seed, split, index).

  The background is a smooth random colour field with stripes and noise; on it 1..``max_objects``
  shapes of random size, colour (with a shading gradient) and rotation are painted in order, and
  a placement that would hide more than half of an earlier instance is redrawn. In
  ``crowd_fraction`` of the images a crowd (a cluster of small shapes of one class) lies below
  them, annotated as one ``iscrowd=1`` region with an uncompressed RLE (COCO's crowd format);
  ``rle_fraction`` of the unoccluded shapes get an RLE instead of a polygon
  (:func:`_encode_visible`). Boxes are the tight boxes of the annotation masks (pycocotools
  ``toBbox``).
  """
  rng = np.random.default_rng([spec.seed, SPLITS[split], index])
  if spec.image_hw is not None:
    height, width = spec.image_hw
  elif spec.square:
    height = width = int(rng.integers(spec.side_range[0], spec.side_range[1] + 1))
  else:
    height, width = (int(v) for v in rng.integers(spec.side_range[0], spec.side_range[1] + 1,
                                                  2))
  image = _background(height, width, rng)
  side = min(height, width)
  owner = np.full((height, width), -1, np.int32)  # index of the instance on top
  instances = []  # dicts: category, full area, polygon (None for crowd), crowd flag

  def place(full: np.ndarray) -> bool:
    """Accepts a new top mask unless it hides > half of an existing instance."""
    covered = np.bincount(owner[full > 0] + 1, minlength=len(instances) + 1)[1:]
    for j, inst in enumerate(instances):
      visible_now = inst['visible_area']
      if visible_now - covered[j] < 0.5 * inst['area']:
        return False
    for j in range(len(instances)):
      instances[j]['visible_area'] -= covered[j]
    owner[full > 0] = len(instances)
    return True

  if rng.random() < spec.crowd_fraction:  # crowd first: it lies below the objects
    category = int(rng.integers(len(CATEGORIES)))
    kind = CATEGORIES[category]['name']
    region = rng.uniform(0.25, 0.45) * side
    corner = rng.uniform([0, 0], [width - region, height - region])
    full = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(8, 20))):
      center = corner + rng.uniform(0, region, 2)
      small = _polygon_mask(_shape_polygon(kind, center, rng.uniform(0.03, 0.06) * side,
                                           rng.uniform(0, 2 * np.pi), rng), height, width)
      _paint(image, small, rng)
      full |= small
    owner[full > 0] = 0
    instances.append({'category': category, 'area': int(full.sum()),
                      'visible_area': int(full.sum()), 'polygon': None, 'crowd': True})

  for _ in range(int(rng.integers(1, spec.max_objects + 1))):
    for _attempt in range(20):
      category = int(rng.integers(len(CATEGORIES)))
      radius = rng.uniform(*spec.object_scale) * side
      center = rng.uniform([radius * 0.6, radius * 0.6],
                           [width - radius * 0.6, height - radius * 0.6])
      polygon = _shape_polygon(CATEGORIES[category]['name'], center, radius,
                               rng.uniform(0, 2 * np.pi), rng)
      full = _polygon_mask(polygon, height, width)
      if full.sum() < 100 or not place(full):
        continue
      _paint(image, full, rng)
      instances.append({'category': category, 'area': int(full.sum()),
                        'visible_area': int(full.sum()), 'polygon': polygon,
                        'crowd': False})
      break

  annotations = []
  for j, inst in enumerate(instances):
    visible = (owner == j).astype(np.uint8)
    if inst['crowd']:
      segmentation = uncompressed_rle(visible)
    else:
      occluded = inst['visible_area'] < inst['area']
      segmentation = _encode_visible(visible, occluded, rng.random() < spec.rle_fraction,
                                     inst['polygon'])
    rle = _segmentation_rle(segmentation, height, width)
    annotations.append({
        'category_id': CATEGORIES[inst['category']]['id'],
        'segmentation': segmentation,
        'area': float(mask_utils.area(rle)),
        'bbox': [float(v) for v in mask_utils.toBbox(rle)],
        'iscrowd': int(inst['crowd']),
    })
  return image, annotations


def _segmentation_rle(segmentation, height: int, width: int) -> dict:
  if isinstance(segmentation, list):
    return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
  if isinstance(segmentation['counts'], list):
    return mask_utils.frPyObjects(segmentation, height, width)
  return {'size': segmentation['size'], 'counts': segmentation['counts'].encode('ascii')}


def _manifest(spec: SyntheticSpec) -> dict:
  params = dataclasses.asdict(spec)
  params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
  return {'format_version': _FORMAT_VERSION, 'params': params,
          'categories': [dict(c) for c in CATEGORIES]}


def dataset_paths(out_dir: str | os.PathLike, split: str) -> tuple[str, str]:
  """(annotation file, image folder) of a split of a generated dataset."""
  out_dir = os.fspath(out_dir)
  return (os.path.join(out_dir, 'annotations', f'instances_{split}.json'),
          os.path.join(out_dir, split))


def _is_complete(out_dir: str, manifest: dict) -> bool:
  path = os.path.join(out_dir, 'manifest.json')
  if not os.path.isfile(path):
    return False
  with open(path) as f:
    found = json.load(f)
  if {k: v for k, v in found.items() if k != 'files'} != manifest:
    return False
  return all(os.path.isfile(os.path.join(out_dir, name)) for name in found.get('files', []))


def generate_synthetic_coco(out_dir: str | os.PathLike, num_train: int = 200, num_val: int = 50,
                            seed: int = 0, image_hw: tuple[int, int] | None = None,
                            side_range: tuple[int, int] = (256, 550), overwrite: bool = False,
                            **spec_kwargs) -> dict[str, tuple[str, str]]:
  """Writes the synthetic dataset (see the module docstring) unless it is already complete.

  Args:
    out_dir: destination folder.
    num_train, num_val: images per split (a split with 0 images is not written).
    seed: everything is a function of it.
    image_hw: fixed (H, W), or None for sides drawn from ``side_range``.
    overwrite: regenerate even when a complete dataset with these arguments exists.
    **spec_kwargs: other ``SyntheticSpec`` fields (max_objects, crowd_fraction, ...).
  Returns:
    {split: (annotation file, image folder)}.
  """
  out_dir = os.fspath(out_dir)
  spec = SyntheticSpec(num_train=num_train, num_val=num_val, seed=seed,
                       image_hw=tuple(image_hw) if image_hw is not None else None,
                       side_range=tuple(side_range), **spec_kwargs)
  if spec.image_format not in ('jpg', 'png'):
    raise ValueError(f"image_format must be 'jpg' or 'png', got {spec.image_format!r}")
  counts = {'train': spec.num_train, 'val': spec.num_val}
  manifest = _manifest(spec)
  paths = {split: dataset_paths(out_dir, split) for split, n in counts.items() if n > 0}
  if not overwrite and _is_complete(out_dir, manifest):
    log.info('synthetic dataset in %s is complete: skipped', out_dir)
    return paths

  os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
  manifest_path = os.path.join(out_dir, 'manifest.json')
  if os.path.exists(manifest_path):
    os.remove(manifest_path)
  files = []
  for split, (ann_file, image_dir) in paths.items():
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for index in range(counts[split]):
      image, anns = _draw_image(spec, split, index)
      image_id = index + 1
      file_name = f'{image_id:012d}.{spec.image_format}'
      params = [cv2.IMWRITE_JPEG_QUALITY, 92] if spec.image_format == 'jpg' else []
      if not cv2.imwrite(os.path.join(image_dir, file_name), image, params):
        raise OSError(f'cannot write {os.path.join(image_dir, file_name)}')
      files.append(os.path.join(split, file_name))
      images.append({'id': image_id, 'file_name': file_name, 'height': image.shape[0],
                     'width': image.shape[1]})
      for ann in anns:
        annotations.append({'id': len(annotations) + 1, 'image_id': image_id, **ann})
    coco = {'info': {'description': 'yolact_jax synthetic shapes', 'version': '1.0'},
            'licenses': [], 'images': images, 'annotations': annotations,
            'categories': [dict(c) for c in CATEGORIES]}
    with open(ann_file, 'w') as f:
      json.dump(coco, f)
    files.append(os.path.relpath(ann_file, out_dir))
  with open(manifest_path, 'w') as f:
    json.dump({**manifest, 'files': files}, f)
  return paths
