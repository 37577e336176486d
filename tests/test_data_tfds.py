"""TFDS array_record build from a COCO-format folder and ``tfds.data_source`` round trip."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.test_data_common import coco_uncompressed_rle, rect_mask, rect_polygon, write_coco
from yolact_jax.data import coco, loader, synthetic, tfds_builder


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfds')
  manual = root / 'manual'
  synthetic.generate_synthetic_coco(manual, num_train=6, num_val=2, seed=3,
                                    side_range=(64, 96), crowd_fraction=0.5)
  builder_dir, problems = tfds_builder.build_tfds_dataset(manual, root / 'data',
                                                          config='synthetic')
  return manual, root / 'data', builder_dir, problems


@pytest.mark.parametrize('split,tag', [('train', 'train'), ('validation', 'val')])
def test_data_source_round_trip_identical_to_reader(built, split, tag):
  manual, data_dir, _, problems = built
  assert problems == []
  source = tfds.data_source('coco_format_instances/synthetic', data_dir=str(data_dir))[split]
  reader = coco.CocoDataset(*synthetic.dataset_paths(manual, tag), keep='all')
  assert len(source) == len(reader)
  for index in range(len(reader)):
    from_tfds = coco.decode_record(tfds_builder.example_to_record(source[index]))
    expected = reader[index]
    assert from_tfds.image_id == expected.image_id
    assert from_tfds.orig_hw == expected.orig_hw
    assert from_tfds.file_name == expected.file_name
    assert from_tfds.num_crowds == expected.num_crowds
    np.testing.assert_array_equal(from_tfds.image, expected.image)
    np.testing.assert_array_equal(from_tfds.boxes, expected.boxes)
    np.testing.assert_array_equal(from_tfds.labels, expected.labels)
    np.testing.assert_array_equal(from_tfds.masks, expected.masks)


def test_metadata_label_map_and_selection(built):
  manual, _, builder_dir, _ = built
  data_source, metadata = tfds_builder.load_tfds_split(builder_dir, 'train')
  label_map = tfds_builder.label_map_from_metadata(metadata)
  assert label_map.category_ids == (1, 3, 5, 7)
  assert label_map.class_names == ('circle', 'square', 'triangle', 'star')
  reader = coco.CocoDataset(*synthetic.dataset_paths(manual, 'train'), keep='all')
  assert metadata['train/image_ids'] == reader.image_ids
  assert [data_source[i]['image_id'] for i in range(len(data_source))] == reader.image_ids
  records = loader.open_tfds_source(builder_dir, 'train', keep='with_objects')
  assert len(records) == len(coco.CocoDataset(*synthetic.dataset_paths(manual, 'train')))
  assert records.label_map == label_map


def test_zero_instance_examples_and_every_annotation_form(tmp_path):
  h, w = 30, 40
  pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
  images = [{'id': 1, 'file_name': 'a.png', 'height': h, 'width': w, 'pixels': pixels},
            {'id': 2, 'file_name': 'empty.png', 'height': h, 'width': w, 'pixels': pixels}]
  annotations = [
      {'id': 1, 'image_id': 1, 'category_id': 5, 'iscrowd': 1, 'bbox': [0, 0, 6, 6],
       'segmentation': coco_uncompressed_rle(rect_mask(h, w, 0, 0, 6, 6))},
      {'id': 2, 'image_id': 1, 'category_id': 8, 'iscrowd': 0, 'bbox': [10, 10, 15, 12],
       'segmentation': [rect_polygon(10, 10, 15, 15), rect_polygon(20, 16, 25, 22)]},
      {'id': 3, 'image_id': 1, 'category_id': 5, 'iscrowd': 0, 'bbox': [30, 3, 5, 5]},
  ]
  ann_file, _ = write_coco(tmp_path / 'manual', images, annotations,
                           [{'id': 5, 'name': 'five'}, {'id': 8, 'name': 'eight'}])
  builder_dir, problems = tfds_builder.build_tfds_dataset(
      tmp_path / 'manual', tmp_path / 'data', split_tags={'train': 'train'})
  assert [p.annotation_id for p in problems] == [3]  # no segmentation: the box is used
  source, _ = tfds_builder.load_tfds_split(builder_dir, 'train')
  first = coco.decode_record(tfds_builder.example_to_record(source[0]))
  np.testing.assert_array_equal(first.labels, [1, 0, -1])
  np.testing.assert_array_equal(first.masks[0], rect_mask(h, w, 10, 10, 15, 15)
                                | rect_mask(h, w, 20, 16, 25, 22))
  np.testing.assert_array_equal(first.masks[1], rect_mask(h, w, 30, 3, 35, 8))
  np.testing.assert_array_equal(first.masks[2], rect_mask(h, w, 0, 0, 6, 6))
  empty = coco.decode_record(tfds_builder.example_to_record(source[1]))
  assert empty.masks.shape == (0, h, w) and empty.boxes.shape == (0, 4)
  # The form TFDS may use for a zero-instance example: an empty dict.
  record = tfds_builder.example_to_record({**source[1], 'objects': {}})
  assert record['boxes_xywh'].shape == (0, 4) and record['segmentations'] == []


def test_train_loader_over_the_tfds_source(built):
  manual, _, builder_dir, _ = built
  options = loader.PipelineOptions(max_size=64, max_instances=5, proto_hw=(16, 16),
                                   segm_hw=(8, 8))
  train = loader.open_tfds_source(builder_dir, 'train')
  in_memory = loader.InMemoryRecordSource.from_coco(
      coco.CocoDataset(*synthetic.dataset_paths(manual, 'train')))
  from_tfds = next(iter(loader.make_train_loader(train, batch_size=2, seed=1, options=options)))
  from_json = next(iter(loader.make_train_loader(in_memory, batch_size=2, seed=1,
                                                 options=options)))
  for key in from_json:  # same records in the same order: identical batches
    np.testing.assert_array_equal(from_tfds[key], from_json[key], err_msg=key)
  validation = loader.open_tfds_source(builder_dir, 'validation', keep='all')
  assert len(validation) == 2
