"""Every kind of bad input: reported with file and annotation id at preparation, skipped (with a
warning naming the file) during training, clear errors for unusable files."""

import json
import logging
import os
import re

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from tests.test_data_common import (coco_uncompressed_rle, rect_dataset, rect_mask, rect_polygon,
                                    write_coco)
from yolact_jax.data import augment, coco, loader, tfds_builder
from yolact_jax.data import masks as mask_lib

SMALL = loader.PipelineOptions(max_size=48, max_instances=4, proto_hw=(12, 12), segm_hw=(6, 6))


def _ann(ann_id, image_id, category_id, box, crowd=0):
  x, y, w, h = box
  return {'id': ann_id, 'image_id': image_id, 'category_id': category_id, 'iscrowd': crowd,
          'bbox': list(box), 'segmentation': [rect_polygon(x, y, x + max(w, 1), y + max(h, 1))]}


def _image(image_id, name, h=40, w=50, **extra):
  return {'id': image_id, 'file_name': name, 'height': h, 'width': w, **extra}


PIXELS = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)


# ------------------------------------------------------------------------ image files

def test_missing_image_file_reported_and_dropped(tmp_path):
  ann_file, image_dir = write_coco(
      tmp_path, [_image(1, 'there.png', pixels=PIXELS), _image(2, 'missing.png')],
      [_ann(1, 1, 1, (1, 1, 10, 10)), _ann(2, 2, 1, (1, 1, 10, 10))], [{'id': 1, 'name': 'a'}])
  ds = coco.CocoDataset(ann_file, image_dir)
  assert ds.image_ids == [1]
  [problem] = ds.problems
  assert problem.file == os.path.join(image_dir, 'missing.png') and problem.image_id == 2
  assert 'not found' in problem.message


def _dataset_with_a_corrupt_and_a_missing_image(tmp_path):
  ann_file, image_dir, _ = rect_dataset(tmp_path, num_images=4, objects_per_image=1)
  with open(os.path.join(image_dir, '0002.png'), 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n this is not an image')
  os.remove(os.path.join(image_dir, '0003.png'))
  return ann_file, image_dir


def test_corrupt_image_raises_broken_sample_naming_the_file(tmp_path):
  ann_file, image_dir = _dataset_with_a_corrupt_and_a_missing_image(tmp_path)
  ds = coco.CocoDataset(ann_file, image_dir, check_files=False)
  with pytest.raises(coco.BrokenSampleError, match='0002.png.*cannot decode'):
    ds[1]
  with pytest.raises(coco.BrokenSampleError, match='0003.png.*cannot read'):
    ds[2]


def test_training_skips_broken_samples_with_a_warning(tmp_path, caplog):
  ann_file, image_dir = _dataset_with_a_corrupt_and_a_missing_image(tmp_path)
  ds = coco.CocoDataset(ann_file, image_dir, check_files=False)
  source = loader.InMemoryRecordSource.from_coco(ds)
  with caplog.at_level(logging.WARNING, logger='yolact_jax.data.loader'):
    batches = loader.make_train_loader(source, batch_size=2, seed=0, options=SMALL,
                                       num_epochs=2)
    ids = [int(i) for batch in batches for i in batch['image_id']]
  assert len(ids) == 8  # every position produced an example: broken ones were substituted
  assert set(ids) <= {1, 4}
  assert '0002.png' in caplog.text and '0003.png' in caplog.text
  assert 'skipping broken sample' in caplog.text
  # The substitution is deterministic.
  again = [int(i) for batch in loader.make_train_loader(source, batch_size=2, seed=0,
                                                        options=SMALL, num_epochs=2)
           for i in batch['image_id']]
  assert again == ids


def test_image_size_differing_from_json_is_a_broken_sample(tmp_path):
  ann_file, image_dir = write_coco(tmp_path, [_image(1, 'a.png', h=30, w=50, pixels=PIXELS)],
                                   [_ann(1, 1, 1, (1, 1, 10, 10))], [{'id': 1, 'name': 'a'}])
  with pytest.raises(coco.BrokenSampleError, match='50x40 but the annotations say 50x30'):
    coco.CocoDataset(ann_file, image_dir)[0]


@pytest.mark.parametrize('kind', ['gray', 'rgba', 'gray16', 'bgr16'])
def test_grayscale_rgba_and_16_bit_images_become_8_bit_bgr(tmp_path, kind):
  gray = PIXELS[:, :, 0]
  written = {
      'gray': gray,
      'rgba': np.dstack([PIXELS, np.full((40, 50), 77, np.uint8)]),  # cv2 writes BGRA order
      'gray16': gray.astype(np.uint16) * 256 + 100,
      'bgr16': PIXELS.astype(np.uint16) * 256 + 100,
  }[kind]
  expected = {
      'gray': np.dstack([gray] * 3),
      'rgba': PIXELS,
      'gray16': np.dstack([gray] * 3),  # 16-bit -> 8-bit: v / 256 (as cv2.imread)
      'bgr16': PIXELS,
  }[kind]
  ann_file, image_dir = write_coco(tmp_path, [_image(1, 'a.png', pixels=written)],
                                   [_ann(1, 1, 1, (1, 1, 10, 10))], [{'id': 1, 'name': 'a'}])
  sample = coco.CocoDataset(ann_file, image_dir)[0]
  assert sample.image.dtype == np.uint8 and sample.image.shape == (40, 50, 3)
  np.testing.assert_array_equal(sample.image, expected)
  np.testing.assert_array_equal(sample.image, cv2.imread(os.path.join(image_dir, 'a.png')))


# ------------------------------------------------------------------------ annotations

def test_zero_area_and_out_of_image_boxes(tmp_path):
  anns = [
      _ann(1, 1, 1, (5, 5, 10, 10)),                           # fine
      _ann(2, 1, 1, (5, 5, 0, 10)),                            # zero width: dropped
      _ann(3, 1, 1, (40, 30, 20, 20)),                         # reaches outside: clipped
      _ann(4, 1, 1, (60, 5, 10, 10)),                          # entirely outside: dropped
      _ann(5, 1, 1, (-3, -2, 8, 6)),                           # negative corner: clipped
      {**_ann(6, 1, 1, (1, 1, 2, 2)), 'bbox': [1, 2, 'x', 4]},  # malformed: dropped
  ]
  ann_file, image_dir = write_coco(tmp_path, [_image(1, 'a.png', pixels=PIXELS)], anns,
                                   [{'id': 1, 'name': 'a'}])
  ds = coco.CocoDataset(ann_file, image_dir)
  by_ann = {p.annotation_id: p.message for p in ds.problems}
  assert set(by_ann) == {2, 3, 4, 5, 6}
  assert 'zero-area' in by_ann[2] and 'dropped' in by_ann[2]
  assert 'clipped' in by_ann[3] and 'clipped' in by_ann[5]
  assert 'outside the image' in by_ann[4] and 'dropped' in by_ann[4]
  assert 'not numeric' in by_ann[6]
  assert all(p.file == ann_file and p.image_id == 1 for p in ds.problems)
  np.testing.assert_array_equal(ds.records[0]['annotation_ids'], [1, 3, 5])
  sample = ds[0]
  np.testing.assert_allclose(sample.boxes, np.array(
      [[5, 5, 15, 15], [40, 30, 50, 40], [0, 0, 5, 4]], np.float32) / [50, 40, 50, 40],
      atol=1e-7)


def test_category_absent_from_categories(tmp_path):
  ann_file, image_dir = write_coco(
      tmp_path, [_image(1, 'a.png', pixels=PIXELS)],
      [_ann(1, 1, 1, (1, 1, 10, 10)), _ann(2, 1, 99, (1, 1, 10, 10))], [{'id': 1, 'name': 'a'}])
  ds = coco.CocoDataset(ann_file, image_dir)
  [problem] = ds.problems
  assert problem.annotation_id == 2 and 'category_id 99 is not in categories' in problem.message
  assert len(ds[0].labels) == 1


def test_unknown_image_id_and_unusable_segmentation_reported(tmp_path):
  anns = [_ann(1, 1, 1, (1, 1, 10, 10)), _ann(2, 5, 1, (1, 1, 10, 10)),
          {**_ann(3, 1, 1, (20, 10, 10, 10)), 'segmentation': [[1, 2, 3, 4]]}]
  ann_file, image_dir = write_coco(tmp_path, [_image(1, 'a.png', pixels=PIXELS)], anns,
                                   [{'id': 1, 'name': 'a'}])
  ds = coco.CocoDataset(ann_file, image_dir)
  messages = [(p.annotation_id, p.message) for p in ds.problems]
  assert (2, 'image_id not in images: annotation dropped') in messages
  # No usable polygon part left: the annotation is dropped (not replaced by its box).
  assert any(a == 3 and 'no usable polygon part' in m and 'part 0' in m
             and m.endswith('annotation dropped') for a, m in messages)
  np.testing.assert_array_equal(ds.records[0]['annotation_ids'], [1])
  assert ds[0].masks.shape == (1, 40, 50)


def test_image_with_only_crowd_annotations(tmp_path):
  anns = [_ann(1, 1, 1, (1, 1, 10, 10)), _ann(2, 2, 1, (2, 2, 20, 20), crowd=1),
          _ann(3, 2, 1, (30, 5, 10, 10), crowd=1)]
  ann_file, image_dir = write_coco(
      tmp_path, [_image(1, 'a.png', pixels=PIXELS), _image(2, 'crowd.png', pixels=PIXELS)],
      anns, [{'id': 1, 'name': 'a'}])
  assert coco.CocoDataset(ann_file, image_dir).image_ids == [1]  # training: no object
  ds = coco.CocoDataset(ann_file, image_dir, keep='with_annotations')
  assert ds.image_ids == [1, 2]
  sample = ds[1]
  assert sample.num_crowds == 2 and sample.labels.tolist() == [-1, -1]
  transformed = augment.eval_transform(sample.image, sample.boxes, sample.labels, max_size=48)
  example = loader.pack_example(transformed, 2, sample.orig_hw, 4, None, None)
  assert example['is_crowd'].tolist() == [True, True, False, False]
  assert example['num_crowds'] == 2


# ------------------------------------------------------------------------ segmentations
# The image is 50 wide, 40 high: polygon coordinates may lie in x [-50, 100], y [-40, 80].

CATEGORIES = [{'id': 1, 'name': 'a'}]


def _one_image_dataset(tmp_path, anns):
  ann_file, image_dir = write_coco(tmp_path, [_image(1, 'a.png', pixels=PIXELS)], anns,
                                   CATEGORIES)
  return coco.CocoDataset(ann_file, image_dir)


def _segmented(ann_id, segmentation, box=(5, 5, 10, 10)):
  ann = _ann(ann_id, 1, 1, box)
  if segmentation is not _ABSENT:
    ann['segmentation'] = segmentation
  else:
    del ann['segmentation']
  return ann


_ABSENT = object()


def _problems_of(ds, ann_id):
  return [p for p in ds.problems if p.annotation_id == ann_id]


@pytest.mark.parametrize('value,axis', [
    (float('nan'), 'x'), (float('inf'), 'x'), (-float('inf'), 'y'), (1e9, 'x'), (-1e9, 'y'),
    (100.5, 'x'), (-50.5, 'x'), (80.5, 'y'), (-40.5, 'y'), ('x', 'x'), (None, 'y'),
    ([1, 2], 'x')])
def test_corrupt_polygon_coordinate_drops_the_annotation(tmp_path, value, axis):
  polygon = rect_polygon(20, 10, 30, 20)
  polygon[2 if axis == 'x' else 3] = value  # point 1
  ds = _one_image_dataset(tmp_path, [_ann(1, 1, 1, (5, 5, 10, 10)),
                                     _segmented(2, [rect_polygon(0, 0, 4, 4), polygon])])
  [problem] = _problems_of(ds, 2)
  assert problem.kind == 'corrupt segmentation' and problem.image_id == 1
  assert problem.message.startswith('corrupt segmentation: polygon part 1 point 1')
  assert problem.message.endswith(': annotation dropped')
  assert str(problem).startswith(f'{ds.ann_file}, image 1, annotation 2: ')
  np.testing.assert_array_equal(ds.records[0]['annotation_ids'], [1])
  assert ds.summary.annotations_dropped == 1 and ds.summary.count('corrupt segmentation') == 1
  sample = ds[0]  # decoding is safe: the corrupt polygon never reaches pycocotools
  np.testing.assert_array_equal(sample.masks, rect_mask(40, 50, 5, 5, 15, 15)[None])


def test_polygon_slightly_or_exactly_at_the_margin_is_kept(tmp_path):
  overshoot = [-0.5, -0.5, 50.7, -0.5, 50.7, 40.3, -0.5, 40.3]  # as real COCO files have
  at_margin = [-50.0, -40.0, 100.0, -40.0, 100.0, 80.0, -50.0, 80.0]
  ds = _one_image_dataset(tmp_path, [_segmented(1, [overshoot], box=(0, 0, 50, 40)),
                                     _segmented(2, [at_margin], box=(0, 0, 50, 40))])
  assert ds.problems == []
  np.testing.assert_array_equal(ds[0].masks, np.ones((2, 40, 50), np.uint8))


def test_polygon_parts_under_three_points(tmp_path):
  ds = _one_image_dataset(tmp_path, [
      _segmented(1, [[1, 2, 3, 4], rect_polygon(20, 10, 30, 20)]),  # one part left: kept
      _segmented(2, [[1, 2, 3, 4], [1, 2, 3, 4, 5]]),               # none left: dropped
  ])
  [kept] = _problems_of(ds, 1)
  assert kept.kind == 'polygon part dropped' and 'part 0 dropped (4 coordinates' in kept.message
  [dropped] = _problems_of(ds, 2)
  assert dropped.kind == 'corrupt segmentation'
  assert dropped.message == (
      'corrupt segmentation: no usable polygon part (polygon part 0 dropped (4 coordinates; '
      'needs an even number >= 6); polygon part 1 dropped (5 coordinates; needs an even number '
      '>= 6)): annotation dropped')
  np.testing.assert_array_equal(ds.records[0]['annotation_ids'], [1])
  np.testing.assert_array_equal(ds[0].masks, rect_mask(40, 50, 20, 10, 30, 20)[None])


def test_missing_or_empty_segmentation_is_the_filled_box(tmp_path):
  ds = _one_image_dataset(tmp_path, [_segmented(1, _ABSENT, (2, 3, 10, 8)),
                                     _segmented(2, [], (20, 10, 5, 5)),
                                     _segmented(3, None, (30, 20, 6, 4))])
  assert [(p.annotation_id, p.kind) for p in ds.problems] == [
      (1, 'filled-box mask'), (2, 'filled-box mask'), (3, 'filled-box mask')]
  np.testing.assert_array_equal(ds[0].masks, np.stack([
      rect_mask(40, 50, 2, 3, 12, 11), rect_mask(40, 50, 20, 10, 25, 15),
      rect_mask(40, 50, 30, 20, 36, 24)]))
  assert ds.summary.count('filled-box mask') == 3 and ds.summary.annotations_dropped == 0


def _compressed(mask):
  return mask_utils.encode(np.asfortranarray(mask))['counts'].decode('ascii')


RECT = rect_mask(40, 50, 5, 5, 15, 15)


@pytest.mark.parametrize('segmentation,why', [
    ({'size': [40, 49], 'counts': coco_uncompressed_rle(RECT)['counts']}, 'RLE size [40, 49]'),
    ({'size': [40, 50, 3], 'counts': [2000]}, 'RLE size [40, 50, 3]'),
    ({'counts': [2000]}, 'RLE size None'),
    ({'size': [40, 50], 'counts': [1000, 999]}, 'runs cover 1999 pixels, not 40 x 50 = 2000'),
    ({'size': [40, 50], 'counts': [1000, 1001]}, 'runs cover 2001 pixels'),
    ({'size': [40, 50], 'counts': [1000, -1, 1001]}, 'negative run'),
    ({'size': [40, 50], 'counts': [1000.5, 999.5]}, 'not a list of integers'),
    ({'size': [40, 50], 'counts': ['a']}, 'not a list of integers'),
    ({'size': [40, 50], 'counts': []}, 'runs cover 0 pixels'),
    ({'size': [40, 50], 'counts': '~~~'}, "character '~'"),
    ({'size': [40, 50], 'counts': _compressed(RECT) + 'o'}, 'ends inside a run'),
    ({'size': [40, 50], 'counts': _compressed(RECT[:, :49].copy())}, 'runs cover 1960 pixels'),
    ({'size': [40, 50], 'counts': 'é'}, "character 'é'"),
    ({'size': [40, 50], 'counts': 7}, 'counts of type int'),
    ({'size': [40, 50]}, 'no counts'),
    (42, 'unknown segmentation form (int)'),
])
def test_corrupt_rle_drops_the_annotation(tmp_path, segmentation, why):
  ds = _one_image_dataset(tmp_path, [_ann(1, 1, 1, (20, 10, 10, 10)),
                                     _segmented(2, segmentation)])
  [problem] = _problems_of(ds, 2)
  assert problem.kind == 'corrupt segmentation'
  assert why in problem.message and problem.message.endswith(': annotation dropped')
  np.testing.assert_array_equal(ds.records[0]['annotation_ids'], [1])
  with pytest.raises(mask_lib.SegmentationError, match=re.escape(why.split(' (')[0])):
    mask_lib.segmentation_to_rle(segmentation, 40, 50)  # refused there too


def test_well_formed_rles_are_kept(tmp_path):
  ds = _one_image_dataset(tmp_path, [
      _segmented(1, coco_uncompressed_rle(RECT)),
      _segmented(2, {'size': [40, 50], 'counts': _compressed(RECT)})])
  assert ds.problems == []
  np.testing.assert_array_equal(ds[0].masks, np.stack([RECT, RECT]))


def test_compressed_rle_runs_match_an_independent_run_length_encoding():
  rng = np.random.default_rng(0)
  masks = [np.zeros((300, 400), np.uint8), np.ones((7, 3), np.uint8), RECT]
  big = np.zeros((300, 400), np.uint8)
  big[290:, 399] = 1  # one long run first (a multi-character count), then short ones
  masks.append(big)
  masks += [(rng.random((31, 17)) < p).astype(np.uint8) for p in (0.05, 0.5, 0.95)]
  for mask in masks:
    runs = mask_lib.rle_runs(mask_utils.encode(np.asfortranarray(mask))['counts'])
    assert runs.tolist() == coco_uncompressed_rle(mask)['counts']


@pytest.mark.parametrize('value', [float('nan'), float('inf'), 1e9, -1e9])
def test_segmentation_to_rle_refuses_corrupt_polygons(value):
  polygon = rect_polygon(2, 2, 8, 8)
  polygon[4] = value
  with pytest.raises(mask_lib.SegmentationError, match='polygon part 0 point 2'):
    mask_lib.segmentation_to_rle([polygon], 10, 10)
  with pytest.raises(mask_lib.SegmentationError, match='polygon part 0 point 2'):
    mask_lib.clean_polygons([polygon], 10, 10)
  if not np.isfinite(value):  # without the image size only finiteness can be checked
    with pytest.raises(mask_lib.SegmentationError, match='not finite'):
      mask_lib.clean_polygons([polygon])


def test_a_corrupt_segmentation_in_a_record_decodes_as_the_filled_box(tmp_path):
  """Records not made by ``build_records`` (hand-made, older TFDS builds) are still safe."""
  ds = _one_image_dataset(tmp_path, [_ann(1, 1, 1, (5, 5, 10, 10))])
  ds.records[0]['segmentations'][0] = [[5.0, 5.0, float('nan'), 5.0, 15.0, 15.0]]
  np.testing.assert_array_equal(ds[0].masks, RECT[None])
  ds.records[0]['segmentations'][0] = {'size': [40, 50], 'counts': [1000, -1, 1001]}
  np.testing.assert_array_equal(ds[0].masks, RECT[None])


# ------------------------------------------------------------------------ boxes under a pixel

def test_boxes_under_one_pixel_are_kept_and_reported(tmp_path):
  ds = _one_image_dataset(tmp_path, [
      _ann(1, 1, 1, (5, 5, 10, 10)),
      _ann(2, 1, 1, (10, 10, 0.5, 0.4)),
      _ann(3, 1, 1, (20, 20, 3, 0.9)),
      _ann(4, 1, 1, (49.5, 5, 4, 4)),  # clipped to 0.5 x 4
      _ann(5, 1, 1, (30, 30, 1, 1)),   # exactly one pixel: fine
  ])
  np.testing.assert_array_equal(ds.records[0]['annotation_ids'], [1, 2, 3, 4, 5])
  np.testing.assert_allclose(ds.records[0]['boxes_xywh'][1:4],
                             [[10, 10, 0.5, 0.4], [20, 20, 3, 0.9], [49.5, 5, 0.5, 4]])
  tiny = {p.annotation_id: p.message for p in ds.problems if p.kind == 'box under one pixel'}
  assert sorted(tiny) == [2, 3, 4]
  assert tiny[2] == (
      'box 0.5x0.4 px is under one pixel: kept, as the original\'s discard rule keeps it '
      '(augment.discard_box_width/height is compared in pixels); such boxes can make the mask '
      'loss explode: --config.augment.fix_discard_box_units=True drops boxes under '
      'augment.discard_box_width/height (4/550) of the training image')
  assert tiny[3].startswith('box 3x0.9 px is under one pixel: kept')
  assert tiny[4].startswith('box 0.5x4 px is under one pixel: kept')
  assert [p.kind for p in _problems_of(ds, 4)] == ['box clipped', 'box under one pixel']
  assert ds.summary.count('box under one pixel') == 3 and ds.summary.count('box clipped') == 1
  assert ds.summary.annotations_dropped == 0


# ------------------------------------------------------------------------ duplicate ids

def test_duplicate_image_ids_refused(tmp_path):
  ann_file, image_dir = write_coco(
      tmp_path, [_image(1, 'a.png', pixels=PIXELS), _image(2, 'b.png', pixels=PIXELS),
                 _image(1, 'c.png', pixels=PIXELS)],
      [_ann(1, 1, 1, (1, 1, 10, 10)), _ann(2, 2, 1, (1, 1, 10, 10))], CATEGORIES)
  with pytest.raises(coco.CocoFormatError) as info:
    coco.CocoDataset(ann_file, image_dir)
  assert str(info.value) == (f"{ann_file}: image id 1 is used twice (file names 'a.png' and "
                             "'c.png'): image ids must be unique")


def test_duplicate_annotation_ids_refused(tmp_path):
  ann_file, image_dir = write_coco(
      tmp_path, [_image(1, 'a.png', pixels=PIXELS), _image(2, 'b.png', pixels=PIXELS)],
      [_ann(7, 1, 1, (1, 1, 10, 10)), _ann(8, 1, 1, (1, 1, 10, 10)),
       _ann(7, 2, 1, (1, 1, 10, 10))], CATEGORIES)
  with pytest.raises(coco.CocoFormatError) as info:
    coco.CocoDataset(ann_file, image_dir)
  assert str(info.value) == (f'{ann_file}: annotation id 7 is used twice (on images 1 and 2): '
                             'annotation ids must be unique')


# ------------------------------------------------------------------------ counts and logging

def _many_defects(tmp_path):
  nan_polygon = [5.0, 5.0, float('nan'), 5.0, 15.0, 15.0]
  anns = [
      _ann(1, 1, 1, (5, 5, 10, 10)),
      _segmented(2, [nan_polygon]),
      _segmented(3, {'size': [10, 10], 'counts': [100]}),
      _ann(4, 1, 1, (5, 5, 0, 10)),
      _ann(5, 1, 1, (45, 5, 10, 10)),
      _ann(6, 1, 1, (-2, 5, 10, 10)),
      _ann(7, 1, 1, (20, 20, 0.5, 3)),
      _ann(8, 1, 99, (5, 5, 10, 10)),
      _ann(9, 2, 1, (5, 5, 10, 10)),
  ]
  images = [_image(1, 'a.png', pixels=PIXELS), _image(2, 'missing.png')]
  return write_coco(tmp_path, images, anns, CATEGORIES)


def test_summary_counts_problems_by_kind(tmp_path):
  ann_file, image_dir = _many_defects(tmp_path)
  ds = coco.CocoDataset(ann_file, image_dir, log_found_problems=False)
  assert ds.summary.counts == {'corrupt segmentation': 2, 'zero-area box': 1,
                               'unknown category': 1, 'missing image file': 1,
                               'box clipped': 2, 'box under one pixel': 1}
  assert ds.summary.annotations_dropped == 4 and ds.summary.images_dropped == 1
  assert str(ds.summary) == (
      f'{ann_file}: 4 annotations dropped (2 corrupt segmentations, 1 zero-area box, 1 unknown '
      'category), 1 image dropped (1 missing image file), 2 boxes clipped, 1 box under one '
      'pixel kept')
  # Every dropped annotation: exactly one problem, naming it.
  for ann_id in (2, 3, 4, 8):
    [problem] = _problems_of(ds, ann_id)
    assert problem.message.endswith('annotation dropped')
  assert coco.summarize_problems(ds.problems) == [ds.summary]
  np.testing.assert_array_equal(ds.records[0]['annotation_ids'], [1, 5, 6, 7])


def test_log_problems_caps_the_lines_and_adds_one_summary_line_per_file(tmp_path, caplog):
  first = _many_defects(tmp_path / 'first')
  second = write_coco(tmp_path / 'second', [_image(1, 'a.png', pixels=PIXELS)],
                      [_ann(1, 1, 1, (5, 5, 10, 10)), _ann(2, 1, 1, (5, 5, 0, 1))], CATEGORIES)
  datasets = [coco.CocoDataset(*paths, log_found_problems=False) for paths in (first, second)]
  problems = datasets[0].problems + datasets[1].problems
  assert len(problems) == 9
  with caplog.at_level(logging.WARNING, logger='yolact_jax.data.coco'):
    coco.log_problems(problems, limit=4)
  lines = [r.getMessage() for r in caplog.records]
  assert lines == [str(p) for p in problems[:4]] + [
      '... and 5 more problems', str(datasets[0].summary), str(datasets[1].summary)]
  assert str(datasets[1].summary) == f'{second[0]}: 1 annotation dropped (1 zero-area box)'


def test_dataset_logs_its_problems_and_summary(tmp_path, caplog):
  ann_file, image_dir = _many_defects(tmp_path)
  with caplog.at_level(logging.WARNING, logger='yolact_jax.data.coco'):
    ds = coco.CocoDataset(ann_file, image_dir)
  lines = [r.getMessage() for r in caplog.records]
  assert lines == [str(p) for p in ds.problems] + [str(ds.summary)]


# ------------------------------------------------------------------------ whole files

def test_empty_dataset_errors(tmp_path):
  categories = [{'id': 1, 'name': 'a'}]
  ann_file, image_dir = write_coco(tmp_path / 'none', [], [], categories)
  with pytest.raises(coco.CocoFormatError, match='empty dataset'):
    coco.CocoDataset(ann_file, image_dir)
  ann_file, image_dir = write_coco(tmp_path / 'unannotated',
                                   [_image(1, 'a.png', pixels=PIXELS)], [], categories)
  with pytest.raises(coco.CocoFormatError, match=r"empty dataset.*keep='with_objects'"):
    coco.CocoDataset(ann_file, image_dir)
  assert len(coco.CocoDataset(ann_file, image_dir, keep='all')) == 1
  ann_file, image_dir = write_coco(tmp_path / 'nocats', [_image(1, 'a.png', pixels=PIXELS)],
                                   [], [])
  with pytest.raises(coco.CocoFormatError, match="'categories' is empty"):
    coco.CocoDataset(ann_file, image_dir, keep='all')


@pytest.mark.parametrize('content,message', [
    ({'images': [], 'categories': []}, "missing top-level key 'annotations'"),
    ([1, 2, 3], 'the top level is a list'),
    ({'images': {}, 'annotations': [], 'categories': []}, "'images' must be a list"),
    ({'images': [{'id': 1, 'file_name': 'a.png', 'width': 3}], 'annotations': [],
      'categories': []}, "images\\[0\\] lacks key 'height'"),
    ({'images': [], 'annotations': [{'id': 1, 'image_id': 1}], 'categories': []},
     "annotations\\[0\\] lacks key 'category_id'"),
])
def test_not_coco_format_names_file_and_key(tmp_path, content, message):
  path = tmp_path / 'labels.json'
  path.write_text(json.dumps(content))
  with pytest.raises(coco.CocoFormatError, match=message) as info:
    coco.CocoDataset(path, tmp_path)
  assert str(path) in str(info.value)


def test_invalid_json(tmp_path):
  path = tmp_path / 'broken.json'
  path.write_text('{"images": [')
  with pytest.raises(coco.CocoFormatError, match='broken.json: not COCO format: invalid JSON'):
    coco.load_annotation_file(path)


def test_tfds_build_reports_every_problem(tmp_path, caplog):
  images = [_image(1, 'a.png', pixels=PIXELS), _image(2, 'missing.png'),
            _image(3, 'corrupt.png', raw=b'not an image'),
            _image(4, 'small.png', h=20, w=50, pixels=PIXELS)]
  anns = [_ann(1, 1, 1, (1, 1, 10, 10)), _ann(2, 1, 7, (1, 1, 10, 10)),
          _ann(3, 1, 1, (5, 5, 0, 3)), _ann(4, 1, 1, (45, 35, 10, 10)),
          _ann(5, 2, 1, (1, 1, 10, 10)), _ann(6, 3, 1, (1, 1, 10, 10)),
          _ann(7, 4, 1, (1, 1, 10, 10))]
  write_coco(tmp_path / 'manual', images, anns, [{'id': 1, 'name': 'a'}])
  with caplog.at_level(logging.WARNING):
    builder_dir, problems = tfds_builder.build_tfds_dataset(
        tmp_path / 'manual', tmp_path / 'data', split_tags={'train': 'train'})
  found = {(os.path.basename(p.file), p.image_id, p.annotation_id) for p in problems}
  assert ('instances_train.json', 1, 2) in found  # category 7 absent
  assert ('instances_train.json', 1, 3) in found  # zero area
  assert ('instances_train.json', 1, 4) in found  # clipped
  assert ('missing.png', 2, None) in found
  assert ('corrupt.png', 3, None) in found
  assert ('small.png', 4, None) in found  # 50x40 file, JSON says 50x20
  assert len(problems) == 6
  for problem in problems:
    assert str(problem) in caplog.text
  source, metadata = tfds_builder.load_tfds_split(builder_dir, 'train')
  assert len(source) == 1 and metadata['train/image_ids'] == [1]
  assert metadata['problems'] == [str(p) for p in problems]


def test_tfds_build_of_a_non_coco_file_fails_clearly(tmp_path):
  (tmp_path / 'manual' / 'annotations').mkdir(parents=True)
  (tmp_path / 'manual' / 'annotations' / 'instances_train.json').write_text('{"images": []}')
  with pytest.raises(coco.CocoFormatError, match="instances_train.json: not COCO format"):
    tfds_builder.build_tfds_dataset(tmp_path / 'manual', tmp_path / 'data',
                                    split_tags={'train': 'train'})
  with pytest.raises(coco.CocoFormatError, match='no annotation file found'):
    tfds_builder.build_tfds_dataset(tmp_path / 'manual', tmp_path / 'data2',
                                    split_tags={'train': 'other'})
