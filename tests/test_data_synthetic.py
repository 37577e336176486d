"""The synthetic shapes dataset: COCO format, determinism, skipping, occlusion, crowds."""

import json
import os

import numpy as np
import pycocotools.mask as mask_utils

from yolact_jax.data import coco, synthetic


def _generate(root, **kwargs):
  defaults = dict(num_train=8, num_val=3, seed=5, side_range=(64, 128), crowd_fraction=0.5)
  defaults.update(kwargs)
  return synthetic.generate_synthetic_coco(root, **defaults)


def test_writes_coco_format_readable_by_the_reader(tmp_path):
  paths = _generate(tmp_path)
  assert set(paths) == {'train', 'val'}
  for split, count in (('train', 8), ('val', 3)):
    ann_file, image_dir = paths[split]
    with open(ann_file) as f:
      data = json.load(f)
    assert [c['id'] for c in data['categories']] == [1, 3, 5, 7]  # non-contiguous ids
    assert len(data['images']) == count
    ds = coco.CocoDataset(ann_file, image_dir, keep='all')
    assert ds.problems == []
    assert ds.label_map == {1: 0, 3: 1, 5: 2, 7: 3}
    assert ds.class_names == ('circle', 'square', 'triangle', 'star')
    for index in range(len(ds)):
      sample = ds[index]
      h, w = sample.orig_hw
      assert 64 <= h <= 128 and 64 <= w <= 128
      assert (sample.labels >= 0).sum() >= 1  # every image has an object
      # Boxes are the tight boxes of the decoded masks.
      for mask, box in zip(sample.masks, sample.boxes):
        ys, xs = np.nonzero(mask)
        np.testing.assert_allclose(
            box * [w, h, w, h], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
            atol=1e-3)


def test_annotation_forms_and_crowds(tmp_path):
  ann_file, image_dir = _generate(tmp_path, num_train=24, num_val=0, crowd_fraction=0.5,
                                  rle_fraction=0.3)['train']
  with open(ann_file) as f:
    anns = json.load(f)['annotations']
  crowds = [a for a in anns if a['iscrowd']]
  objects = [a for a in anns if not a['iscrowd']]
  assert crowds and all(isinstance(a['segmentation']['counts'], list) for a in crowds)
  assert any(isinstance(a['segmentation'], list) for a in objects)  # polygons
  assert any(isinstance(a['segmentation'], dict) for a in objects)  # RLE
  assert {a['category_id'] for a in objects} == {1, 3, 5, 7}
  for a in anns:  # area and bbox agree with the segmentation
    seg = a['segmentation']
    if isinstance(seg, list):
      continue
    height, width = seg['size']
    rle = (mask_utils.frPyObjects(seg, height, width) if isinstance(seg['counts'], list)
           else {'size': seg['size'], 'counts': seg['counts'].encode()})
    assert a['area'] == float(mask_utils.area(rle))
    np.testing.assert_allclose(a['bbox'], mask_utils.toBbox(rle))


def test_visible_masks_do_not_overlap(tmp_path):
  """Later shapes occlude earlier ones: masks describe visible parts, so they barely overlap
  (polygons of occluded outlines approximate the boundary by about a pixel)."""
  ann_file, image_dir = _generate(tmp_path, num_train=10, num_val=0, max_objects=6,
                                  crowd_fraction=0.0)['train']
  ds = coco.CocoDataset(ann_file, image_dir)
  overlapping_boxes = 0
  for index in range(len(ds)):
    sample = ds[index]
    masks = sample.masks.astype(np.int32)
    overlap = (masks.sum(0) > 1).sum()
    assert overlap <= 0.03 * (masks.sum(0) > 0).sum()
    boxes = sample.boxes
    for i in range(len(boxes)):
      for j in range(i + 1, len(boxes)):
        inter = (np.minimum(boxes[i, 2:], boxes[j, 2:])
                 - np.maximum(boxes[i, :2], boxes[j, :2])).clip(0).prod()
        overlapping_boxes += inter > 0.01
  assert overlapping_boxes > 0  # objects do overlap: the masks above are the visible parts


def test_deterministic_and_skips_when_complete(tmp_path):
  first, second = tmp_path / 'a', tmp_path / 'b'
  _generate(first)
  _generate(second)
  for split in ('train', 'val'):
    files = sorted(os.listdir(first / split))
    assert files == sorted(os.listdir(second / split))
    for name in files:
      assert (first / split / name).read_bytes() == (second / split / name).read_bytes()
    name = f'annotations/instances_{split}.json'
    assert (first / name).read_bytes() == (second / name).read_bytes()

  image = first / 'train' / sorted(os.listdir(first / 'train'))[0]
  stamp = image.stat().st_mtime_ns
  _generate(first)  # complete: nothing rewritten
  assert image.stat().st_mtime_ns == stamp
  image.unlink()  # incomplete: regenerated
  _generate(first)
  assert image.exists()
  _generate(first, seed=6)  # other arguments: regenerated with other content
  assert image.read_bytes() != (second / 'train' / image.name).read_bytes()


def test_fixed_size_and_png(tmp_path):
  ann_file, image_dir = _generate(tmp_path, num_train=2, num_val=0, image_hw=(70, 90),
                                  image_format='png')['train']
  ds = coco.CocoDataset(ann_file, image_dir)
  assert all(name.endswith('.png') for name in os.listdir(image_dir))
  assert all(ds[i].image.shape == (70, 90, 3) for i in range(len(ds)))


def test_uncompressed_rle_roundtrip():
  rng = np.random.default_rng(0)
  mask = (rng.random((13, 17)) > 0.6).astype(np.uint8)
  mask[0, 0] = 1  # starts with a run of ones: counts begin with 0
  rle = synthetic.uncompressed_rle(mask)
  assert rle['counts'][0] == 0
  decoded = mask_utils.decode(mask_utils.frPyObjects(rle, 13, 17))
  np.testing.assert_array_equal(decoded, mask)


def test_square_images_draw_one_side_from_the_range(tmp_path):
  ann_file, _ = _generate(tmp_path, num_train=6, num_val=0, square=True)['train']
  with open(ann_file) as f:
    sizes = [(im['height'], im['width']) for im in json.load(f)['images']]
  assert all(h == w and 64 <= h <= 128 for h, w in sizes)
  assert len(set(sizes)) > 1  # the side still varies
