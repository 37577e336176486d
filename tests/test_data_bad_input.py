"""Every kind of bad input: reported with file and annotation id at preparation, skipped (with a
warning naming the file) during training, clear errors for unusable files."""

import json
import logging
import os

import cv2
import numpy as np
import pytest

from tests.test_data_common import rect_dataset, rect_mask, rect_polygon, write_coco
from yolact_jax.data import augment, coco, loader, tfds_builder

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


def test_unknown_image_id_and_bad_segmentation_reported(tmp_path):
  anns = [_ann(1, 1, 1, (1, 1, 10, 10)), _ann(2, 5, 1, (1, 1, 10, 10)),
          {**_ann(3, 1, 1, (20, 10, 10, 10)), 'segmentation': [[1, 2, 3, 4]]}]
  ann_file, image_dir = write_coco(tmp_path, [_image(1, 'a.png', pixels=PIXELS)], anns,
                                   [{'id': 1, 'name': 'a'}])
  ds = coco.CocoDataset(ann_file, image_dir)
  messages = [(p.annotation_id, p.message) for p in ds.problems]
  assert (2, 'image_id not in images: annotation dropped') in messages
  assert any(a == 3 and 'filled box' in m for a, m in messages)
  np.testing.assert_array_equal(ds[0].masks[1], rect_mask(40, 50, 20, 10, 30, 20))


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
