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


def test_state_restore_gives_identical_following_batches(rect_source):
  _, source = rect_source
  batches = loader.make_train_loader(source, batch_size=3, seed=4, options=SMALL)
  iterator = iter(batches)
  for _ in range(4):  # more than an epoch (8 images / 3 per batch)
    next(iterator)
  state = iterator.get_state()
  following = [next(iterator) for _ in range(3)]
  resumed = iter(loader.make_train_loader(source, batch_size=3, seed=4, options=SMALL))
  resumed.set_state(state)
  for expected in following:
    got = next(resumed)
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  # Another seed shuffles and augments differently.
  other = next(iter(loader.make_train_loader(source, batch_size=3, seed=5, options=SMALL)))
  first = next(iter(batches))
  assert not np.array_equal(other['image'], first['image'])


def test_worker_process_matches_in_process_and_restores(rect_source):
  _, source = rect_source
  in_process = iter(loader.make_train_loader(source, batch_size=2, seed=2, options=SMALL))
  expected = [next(in_process) for _ in range(4)]
  workers = loader.make_train_loader(source, batch_size=2, seed=2, options=SMALL,
                                     worker_count=1)
  iterator = iter(workers)
  got = [next(iterator)]
  state = iterator.get_state()
  got += [next(iterator) for _ in range(3)]
  for a, b in zip(expected, got):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  resumed = iter(workers)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)['image'], expected[1]['image'])
  del iterator, resumed
  gc.collect()


def test_sharding_splits_each_epoch_disjointly(rect_source):
  dataset, source = rect_source
  seen = []
  for shard in range(2):
    batches = loader.make_train_loader(source, batch_size=2, seed=0, options=SMALL,
                                       shard_index=shard, shard_count=2, num_epochs=1)
    seen.append([int(i) for batch in batches for i in batch['image_id']])
  assert len(seen[0]) == len(seen[1]) == 4
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(dataset.image_ids)


def test_state_round_trips_through_an_orbax_checkpoint(rect_source, tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  grain = loader.grain
  _, source = rect_source
  iterator = iter(loader.make_train_loader(source, batch_size=2, seed=3, options=SMALL))
  for _ in range(3):
    next(iterator)
  manager = ocp.CheckpointManager(tmp_path / 'ckpt', item_names=('data',))
  manager.save(3, args=ocp.args.Composite(data=grain.PyGrainCheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = next(iterator)
  resumed = iter(loader.make_train_loader(source, batch_size=2, seed=3, options=SMALL))
  manager.restore(3, args=ocp.args.Composite(data=grain.PyGrainCheckpointRestore(resumed)))
  got = next(resumed)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
