"""Helpers shared by the data tests (no tests here): tiny COCO-format datasets written to tmp_path."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np


def write_coco(root, images, annotations, categories, split='train'):
  """Writes ``root/annotations/instances_<split>.json`` and ``root/<split>/`` images.

  Args:
    images: list of dicts with 'id', 'file_name', 'height', 'width' and optionally 'pixels'
      (an array written with cv2.imwrite), 'raw' (bytes written as is) or neither (no file).
    annotations, categories: COCO lists (written as given).
  Returns:
    (annotation file path, image folder path)
  """
  root = os.fspath(root)
  image_dir = os.path.join(root, split)
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
  entries = []
  for image in images:
    entry = {k: image[k] for k in ('id', 'file_name', 'height', 'width')}
    path = os.path.join(image_dir, image['file_name'])
    if 'pixels' in image:
      assert cv2.imwrite(path, image['pixels'])
    elif 'raw' in image:
      with open(path, 'wb') as f:
        f.write(image['raw'])
    entries.append(entry)
  ann_file = os.path.join(root, 'annotations', f'instances_{split}.json')
  with open(ann_file, 'w') as f:
    json.dump({'images': entries, 'annotations': annotations, 'categories': categories}, f)
  return ann_file, image_dir


def noise_image(height, width, seed=0):
  """uint8 [H, W, 3] random BGR image."""
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def rect_polygon(x1, y1, x2, y2):
  """COCO polygon of an axis-aligned rectangle; pycocotools fills pixels x1..x2-1, y1..y2-1."""
  return [float(x1), float(y1), float(x2), float(y1), float(x2), float(y2), float(x1), float(y2)]


def rect_mask(height, width, x1, y1, x2, y2):
  """uint8 [H, W] with ones on rows y1..y2-1, cols x1..x2-1."""
  mask = np.zeros((height, width), np.uint8)
  mask[y1:y2, x1:x2] = 1
  return mask


def coco_uncompressed_rle(mask):
  """Independent column-major run-length encoding (COCO's uncompressed RLE) of a mask."""
  flat = mask.T.reshape(-1)
  counts, current, run = [], 0, 0
  for value in flat:
    if value == current:
      run += 1
    else:
      counts.append(run)
      current, run = value, 1
  counts.append(run)
  return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': counts}


def rect_dataset(root, num_images=6, height=120, width=160, objects_per_image=2, split='train',
                 seed=0):
  """A clean dataset of solid rectangles on noise (category ids 10 and 20).

  Returns (ann_file, image_dir, list of per-image object lists [(x1, y1, x2, y2, cat_id)]).
  """
  rng = np.random.default_rng(seed)
  images, annotations, truth = [], [], []
  for image_index in range(num_images):
    pixels = noise_image(height, width, seed + image_index)
    objects = []
    for k in range(objects_per_image):
      w, h = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 2))
      x1, y1 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
      cat = 10 if k % 2 == 0 else 20
      objects.append((x1, y1, x1 + w, y1 + h, cat))
      annotations.append({'id': len(annotations) + 1, 'image_id': image_index + 1,
                          'category_id': cat, 'iscrowd': 0,
                          'segmentation': [rect_polygon(x1, y1, x1 + w, y1 + h)],
                          'bbox': [x1, y1, w, h], 'area': w * h})
    truth.append(objects)
    images.append({'id': image_index + 1, 'file_name': f'{image_index + 1:04d}.png',
                   'height': height, 'width': width, 'pixels': pixels})
  categories = [{'id': 20, 'name': 'twenty'}, {'id': 10, 'name': 'ten'}]
  ann_file, image_dir = write_coco(root, images, annotations, categories, split=split)
  return ann_file, image_dir, truth
