"""grain loaders: fixed-shape batches, determinism, checkpointable state, sharding, eval batches."""

import gc
import logging

import numpy as np
import pytest

from tests.test_data_common import rect_dataset
from yolact_jax.data import augment, coco, loader
from yolact_jax.data import masks as mask_lib

SMALL = loader.PipelineOptions(max_size=64, max_instances=3, proto_hw=(16, 16), segm_hw=(8, 8))


@pytest.fixture(scope='module')
def rect_source(tmp_path_factory):
  ann_file, image_dir, _ = rect_dataset(tmp_path_factory.mktemp('rects'), num_images=8,
                                        objects_per_image=2)
  dataset = coco.CocoDataset(ann_file, image_dir)
  return dataset, loader.InMemoryRecordSource.from_coco(dataset)


def _sample(n_objects, n_crowds, size=64):
  labels = np.array([i % 2 for i in range(n_objects)] + [-1] * n_crowds, np.int32)
  n = len(labels)
  masks = np.zeros((n, size, size), np.uint8)
  boxes = np.zeros((n, 4), np.float32)
  for i in range(n):
    masks[i, i:i + 20, 2 * i:2 * i + 30] = 1
    boxes[i] = np.array([2 * i, i, 2 * i + 30, i + 20]) / size
  return augment.TransformedSample(image=np.ones((size, size, 3), np.float32), masks=masks,
                                   boxes=boxes, labels=labels, num_crowds=n_crowds)


@pytest.mark.parametrize('n_objects,n_crowds', [(0, 0), (1, 0), (1, 1), (5, 2), (2, 4)])
def test_pack_example_fixed_shapes(n_objects, n_crowds, caplog):
  sample = _sample(n_objects, n_crowds)
  with caplog.at_level(logging.WARNING):
    example = loader.pack_example(sample, 42, (30, 40), max_instances=3, proto_hw=(16, 16),
                                  segm_hw=(8, 8), name='x.png')
  assert example['image'].shape == (64, 64, 3)
  assert example['boxes'].shape == (3, 4) and example['boxes'].dtype == np.float32
  assert example['labels'].shape == (3,) and example['labels'].dtype == np.int32
  assert example['is_crowd'].shape == example['valid'].shape == (3,)
  assert example['masks_proto'].shape == (3, 16, 16) and example['masks_proto'].dtype == np.uint8
  assert example['masks_segm'].shape == (3, 8, 8)
  assert example['image_id'] == 42 and example['image_id'].dtype == np.int64
  np.testing.assert_array_equal(example['orig_hw'], [30, 40])
  # Objects first, then crowds in the slots left, then padding (-1, invalid, zero).
  kept_objects = min(n_objects, 3)
  kept_crowds = min(n_crowds, 3 - kept_objects)
  n = kept_objects + kept_crowds
  expected_rows = list(range(kept_objects)) + list(range(n_objects, n_objects + kept_crowds))
  np.testing.assert_array_equal(example['labels'][:n], sample.labels[expected_rows])
  np.testing.assert_array_equal(example['boxes'][:n], sample.boxes[expected_rows])
  np.testing.assert_array_equal(example['masks_proto'][:n], mask_lib.downsample_binarize_masks(
      sample.masks[expected_rows], (16, 16)))
  assert example['valid'].tolist() == [True] * n + [False] * (3 - n)
  assert example['is_crowd'].tolist() == [False] * kept_objects + [True] * kept_crowds + [
      False] * (3 - n)
  assert np.all(example['labels'][n:] == -1) and np.all(example['boxes'][n:] == 0)
  assert np.all(example['masks_proto'][n:] == 0)
  assert example['num_crowds'] == kept_crowds
  overflow = n_objects + n_crowds > 3
  assert ('exceed max_instances=3' in caplog.text) == overflow
  if overflow:
    assert 'x.png' in caplog.text and 'image 42' in caplog.text


def test_train_example_is_the_transform_then_packing(rect_source):
  dataset, source = rect_source
  example = loader.make_train_example(source, 3, np.random.default_rng(9), SMALL)
  raw = dataset[3]
  sample = augment.train_transform(raw.image, raw.masks, raw.boxes, raw.labels, raw.num_crowds,
                                   np.random.default_rng(9), max_size=64)
  n = len(sample.labels)
  np.testing.assert_array_equal(example['image'], sample.image)
  np.testing.assert_array_equal(example['boxes'][:n], sample.boxes)
  np.testing.assert_array_equal(example['masks_proto'][:n],
                                mask_lib.downsample_binarize_masks(sample.masks, (16, 16)))
  np.testing.assert_array_equal(example['masks_segm'][:n],
                                mask_lib.downsample_binarize_masks(sample.masks, (8, 8)))
  assert example['image_id'] == raw.image_id


def test_batches_fixed_shapes_with_more_instances_than_slots(tmp_path):
  ann_file, image_dir, _ = rect_dataset(tmp_path, num_images=4, objects_per_image=5)
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(ann_file, image_dir))
  batches = loader.make_train_loader(source, batch_size=2, seed=1, options=SMALL)
  iterator = iter(batches)
  for _ in range(3):
    batch = next(iterator)
    assert batch['image'].shape == (2, 64, 64, 3) and batch['image'].dtype == np.float32
    assert batch['boxes'].shape == (2, 3, 4)
    assert batch['labels'].shape == batch['valid'].shape == batch['is_crowd'].shape == (2, 3)
    assert batch['masks_proto'].shape == (2, 3, 16, 16)
    assert batch['masks_segm'].shape == (2, 3, 8, 8)
    assert batch['num_crowds'].shape == (2,) and batch['image_id'].shape == (2,)
    assert batch['orig_hw'].shape == (2, 2) and batch['orig_hw'].dtype == np.int32
    assert batch['valid'][:, 0].all()  # at least one object per image


def _same_batches(got, expected):
  assert len(got) == len(expected)
  for a, b in zip(got, expected):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_loader_started_at_a_position_continues_the_stream(rect_source):
  _, source = rect_source
  iterator = iter(loader.make_train_loader(source, batch_size=3, seed=4, options=SMALL))
  stream = [next(iterator) for _ in range(7)]  # more than two epochs (8 images / 3 per batch)
  resumed = iter(loader.make_train_loader(source, batch_size=3, seed=4, options=SMALL,
                                          start=4 * 3))
  _same_batches([next(resumed) for _ in range(3)], stream[4:])
  # Every epoch is a permutation of all the records (positions 0..7 and 8..15).
  ids = [int(i) for batch in stream for i in batch['image_id']]
  assert sorted(ids[:8]) == sorted(ids[8:16]) == sorted(set(ids))
  # Another seed shuffles and augments differently.
  other = next(iter(loader.make_train_loader(source, batch_size=3, seed=5, options=SMALL)))
  assert not np.array_equal(other['image'], stream[0]['image'])


def test_worker_processes_give_the_in_process_stream(rect_source):
  _, source = rect_source
  in_process = iter(loader.make_train_loader(source, batch_size=2, seed=2, options=SMALL))
  expected = [next(in_process) for _ in range(4)]
  iterator = iter(loader.make_train_loader(source, batch_size=2, seed=2, options=SMALL,
                                           worker_count=2))
  _same_batches([next(iterator) for _ in range(4)], expected)
  del iterator
  gc.collect()


def test_the_rows_of_two_processes_make_the_global_batch(rect_source):
  """What each process of a two-process run loads: its half of every global batch, so the run
  sees the batches of a one-process run (and resumes on either topology)."""
  _, source = rect_source
  whole = list(loader.make_train_loader(source, batch_size=4, seed=0, options=SMALL,
                                        num_epochs=2))
  halves = [list(loader.make_train_loader(source, batch_size=4, seed=0, options=SMALL,
                                          num_epochs=2, rows=rows)) for rows in ((0, 2), (2, 4))]
  assert len(whole) == 4
  _same_batches([{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves)], whole)
  with pytest.raises(ValueError, match='not a slice'):
    loader.make_train_loader(source, batch_size=4, seed=0, rows=(2, 5))
