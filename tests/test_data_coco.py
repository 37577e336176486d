"""COCO-format reader and label maps on small hand-written datasets."""

import os

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from tests.test_data_common import coco_uncompressed_rle, rect_mask, rect_polygon, write_coco
from yolact_jax.coco_classes import COCO_CATEGORY_IDS, COCO_CLASSES, COCO_LABEL_MAP
from yolact_jax.data import coco


H, W = 40, 50


def _handwritten(tmp_path):
  pixels = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
  compressed = mask_utils.encode(np.asfortranarray(rect_mask(H, W, 20, 2, 28, 9)))
  annotations = [
      # A crowd listed FIRST in the file: it must come out last with label -1.
      {'id': 101, 'image_id': 7, 'category_id': 4, 'iscrowd': 1, 'bbox': [0, 0, 10, 8],
       'segmentation': coco_uncompressed_rle(rect_mask(H, W, 0, 0, 10, 8)), 'area': 80},
      # A polygon with two parts.
      {'id': 102, 'image_id': 7, 'category_id': 9, 'iscrowd': 0, 'bbox': [5, 10, 35, 25],
       'segmentation': [rect_polygon(5, 10, 15, 20), rect_polygon(30, 25, 40, 35)],
       'area': 200},
      # A compressed RLE (counts as a string, as in JSON files).
      {'id': 103, 'image_id': 7, 'category_id': 2, 'iscrowd': 0, 'bbox': [20, 2, 8, 7],
       'segmentation': {'size': [H, W], 'counts': compressed['counts'].decode('ascii')},
       'area': 56},
      {'id': 104, 'image_id': 9, 'category_id': 2, 'iscrowd': 0, 'bbox': [1, 2, 3, 4],
       'segmentation': [rect_polygon(1, 2, 4, 6)], 'area': 12},
  ]
  images = [
      {'id': 7, 'file_name': 'a.png', 'height': H, 'width': W, 'pixels': pixels},
      {'id': 8, 'file_name': 'no_annotations.png', 'height': H, 'width': W, 'pixels': pixels},
      {'id': 9, 'file_name': 'b.png', 'height': 20, 'width': 30,
       'pixels': pixels[:20, :30].copy()},
  ]
  categories = [{'id': 9, 'name': 'nine'}, {'id': 2, 'name': 'two'}, {'id': 4, 'name': 'four'}]
  ann_file, image_dir = write_coco(tmp_path, images, annotations, categories)
  return ann_file, image_dir, pixels


def test_label_map_custom_categories_sorted_by_id(tmp_path):
  ann_file, image_dir, _ = _handwritten(tmp_path)
  ds = coco.CocoDataset(ann_file, image_dir)
  assert ds.label_map == {2: 0, 4: 1, 9: 2}
  assert ds.class_names == ('two', 'four', 'nine')
  assert ds.category_ids == (2, 4, 9)


def test_coco_label_map_matches_original():
  shuffled = list(COCO_CATEGORY_IDS)[::-1]
  names = dict(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
  label_map = coco.build_label_map([{'id': i, 'name': names[i]} for i in shuffled])
  assert label_map.id_to_index == {cat: index - 1 for cat, index in COCO_LABEL_MAP.items()}
  assert label_map.class_names == COCO_CLASSES
  assert coco.coco_label_map() == label_map


def test_reader_sample_crowd_last_polygon_parts_rle(tmp_path):
  ann_file, image_dir, pixels = _handwritten(tmp_path)
  ds = coco.CocoDataset(ann_file, image_dir)
  assert len(ds) == 2  # the image without annotations is excluded
  assert ds.image_ids == [7, 9]
  assert ds.problems == []

  sample = ds[0]
  assert sample.image_id == 7 and sample.orig_hw == (H, W) and sample.file_name == 'a.png'
  assert sample.image.dtype == np.uint8 and sample.image.shape == (H, W, 3)
  np.testing.assert_array_equal(sample.image, pixels)  # BGR as written by cv2
  np.testing.assert_array_equal(sample.labels, [2, 0, -1])  # cat 9 -> 2, cat 2 -> 0, crowd
  assert sample.num_crowds == 1
  expected_boxes = np.array([[5 / W, 10 / H, 40 / W, 35 / H],
                             [20 / W, 2 / H, 28 / W, 9 / H],
                             [0, 0, 10 / W, 8 / H]], np.float32)
  assert sample.boxes.dtype == np.float32
  np.testing.assert_allclose(sample.boxes, expected_boxes, rtol=0, atol=1e-7)
  assert sample.masks.dtype == np.uint8 and sample.masks.shape == (3, H, W)
  np.testing.assert_array_equal(sample.masks[0], rect_mask(H, W, 5, 10, 15, 20)
                                | rect_mask(H, W, 30, 25, 40, 35))
  np.testing.assert_array_equal(sample.masks[1], rect_mask(H, W, 20, 2, 28, 9))
  np.testing.assert_array_equal(sample.masks[2], rect_mask(H, W, 0, 0, 10, 8))

  other = ds[1]
  assert other.image.shape == (20, 30, 3) and other.num_crowds == 0
  np.testing.assert_array_equal(other.masks[0], rect_mask(20, 30, 1, 2, 4, 6))


def test_keep_options(tmp_path):
  ann_file, image_dir, _ = _handwritten(tmp_path)
  assert coco.CocoDataset(ann_file, image_dir, keep='all').image_ids == [7, 8, 9]
  assert coco.CocoDataset(ann_file, image_dir, keep='with_annotations').image_ids == [7, 9]
  empty = coco.CocoDataset(ann_file, image_dir, keep='all')[1]
  assert empty.masks.shape == (0, H, W) and empty.boxes.shape == (0, 4)
  assert empty.labels.shape == (0,) and empty.num_crowds == 0
  with pytest.raises(ValueError, match='keep must be one of'):
    coco.CocoDataset(ann_file, image_dir, keep='everything')


def test_coco2014_file_names_are_reduced_like_the_original(tmp_path):
  pixels = np.zeros((8, 8, 3), np.uint8)
  ann_file, image_dir = write_coco(
      tmp_path, [{'id': 1, 'file_name': 'COCO_train2014_000000000001.jpg', 'height': 8,
                  'width': 8}],
      [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 4, 4],
        'segmentation': [rect_polygon(0, 0, 4, 4)], 'iscrowd': 0}],
      [{'id': 1, 'name': 'x'}])
  cv2.imwrite(os.path.join(image_dir, '000000000001.png'), pixels)
  os.rename(os.path.join(image_dir, '000000000001.png'),
            os.path.join(image_dir, '000000000001.jpg'))
  ds = coco.CocoDataset(ann_file, image_dir)
  assert ds.records[0]['image_path'].endswith(os.sep + '000000000001.jpg')
  assert ds[0].image.shape == (8, 8, 3)


def test_problem_str_names_file_image_and_annotation():
  problem = coco.Problem('x.json', 'bad thing', image_id=3, annotation_id=12)
  assert str(problem) == 'x.json, image 3, annotation 12: bad thing'
