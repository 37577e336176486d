"""The original's train / eval transforms: a literal re-implementation as oracle, plus properties."""

import cv2
import numpy as np
import pytest

from yolact_jax.config import AugmentConfig
from yolact_jax.data import augment

MEANS = (103.94, 116.78, 123.68)
STD = (57.38, 57.12, 58.40)


class _LegacyRandom:
  """``numpy.random``'s legacy calls as the original makes them, drawn from a Generator with
  the same consumption as ``augment`` (randint(n) = integers(n); uniform(low, high=1.0))."""

  def __init__(self, seed):
    self.rng = np.random.default_rng(seed)

  def randint(self, n):
    return int(self.rng.integers(n))

  def uniform(self, low, high=1.0):
    return low + (high - low) * self.rng.random()


def _reference_train_transform(image, masks, boxes, labels, num_crowds, seed, size):
  """The original's SSDAugmentation step by step, building every intermediate array in full
  (the whole expanded canvas, numpy flips, masks resized as one multi-channel image)."""
  rand = _LegacyRandom(seed)
  img = image.astype(np.float32)
  height, width, _ = img.shape
  boxes = boxes.astype(np.float64).copy()
  boxes[:, [0, 2]] *= width
  boxes[:, [1, 3]] *= height
  labels = labels.copy()

  # PhotometricDistort
  im = img.copy()
  if rand.randint(2):
    im += rand.uniform(-32, 32)

  def contrast(x):
    if rand.randint(2):
      x *= rand.uniform(0.5, 1.5)
    return x

  def saturation(x):
    if rand.randint(2):
      x[:, :, 1] *= rand.uniform(0.5, 1.5)
    return x

  def hue(x):
    if rand.randint(2):
      x[:, :, 0] += rand.uniform(-18.0, 18.0)
      x[:, :, 0][x[:, :, 0] > 360.0] -= 360.0
      x[:, :, 0][x[:, :, 0] < 0.0] += 360.0
    return x

  steps = [contrast, lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2HSV), saturation, hue,
           lambda x: cv2.cvtColor(x, cv2.COLOR_HSV2BGR), contrast]
  for step in (steps[:-1] if rand.randint(2) else steps[1:]):
    im = step(im)
  img = im

  # Expand
  if not rand.randint(2):
    ratio = rand.uniform(1, 4)
    left = rand.uniform(0, width * ratio - width)
    top = rand.uniform(0, height * ratio - height)
    canvas = np.zeros((int(height * ratio), int(width * ratio), 3), np.float32)
    canvas[:, :, :] = MEANS
    canvas[int(top):int(top + height), int(left):int(left + width)] = img
    img = canvas
    mask_canvas = np.zeros((masks.shape[0], int(height * ratio), int(width * ratio)),
                           np.uint8)
    mask_canvas[:, int(top):int(top + height), int(left):int(left + width)] = masks
    masks = mask_canvas
    boxes[:, :2] += (int(left), int(top))
    boxes[:, 2:] += (int(left), int(top))

  # RandomSampleCrop
  height, width, _ = img.shape
  while True:
    if rand.randint(6) == 0:
      break
    cropped = False
    for _ in range(50):
      w = rand.uniform(0.3 * width, width)
      h = rand.uniform(0.3 * height, height)
      if h / w < 0.5 or h / w > 2:
        continue
      left = rand.uniform(width - w)
      top = rand.uniform(height - h)
      rect = np.array([int(left), int(top), int(left + w), int(top + h)])
      centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
      keep = ((rect[0] < centers[:, 0]) * (rect[1] < centers[:, 1])
              * (rect[2] > centers[:, 0]) * (rect[3] > centers[:, 1]))
      crowd = np.zeros(keep.shape, np.int32)
      if num_crowds > 0:
        crowd[-num_crowds:] = 1
      if not keep.any() or np.sum(1 - crowd[keep]) == 0:
        continue
      img = img[rect[1]:rect[3], rect[0]:rect[2], :]
      masks = masks[keep][:, rect[1]:rect[3], rect[0]:rect[2]]
      boxes = boxes[keep].copy()
      labels = labels[keep]
      boxes[:, :2] = np.maximum(boxes[:, :2], rect[:2]) - rect[:2]
      boxes[:, 2:] = np.minimum(boxes[:, 2:], rect[2:]) - rect[:2]
      cropped = True
      break
    if cropped:
      break

  # RandomMirror
  _, width, _ = img.shape
  if rand.randint(2):
    img = img[:, ::-1]
    masks = masks[:, :, ::-1]
    boxes = boxes.copy()
    boxes[:, 0::2] = width - boxes[:, 2::-2]

  # Resize with its filter, ToPercentCoords, BackboneTransform
  img_h, img_w, _ = img.shape
  img = cv2.resize(np.ascontiguousarray(img), (size, size))
  resized = cv2.resize(np.ascontiguousarray(masks.transpose(1, 2, 0)), (size, size))
  masks = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
  boxes[:, [0, 2]] *= size / img_w
  boxes[:, [1, 3]] *= size / img_h
  keep = ((boxes[:, 2] - boxes[:, 0]) > 4 / 550) * ((boxes[:, 3] - boxes[:, 1]) > 4 / 550)
  masks, boxes, labels = masks[keep], boxes[keep] / size, labels[keep]
  img = (img - np.array(MEANS, np.float32)) / np.array(STD, np.float32)
  return img[:, :, (2, 1, 0)].astype(np.float32), masks, boxes, labels


def _scene(rng, height, width, n, num_crowds=0):
  """Noise image with n rectangle objects (the last ``num_crowds`` are crowds)."""
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  masks = np.zeros((n, height, width), np.uint8)
  boxes = np.zeros((n, 4), np.float32)
  for i in range(n):
    w, h = rng.integers(width // 8, width // 2), rng.integers(height // 8, height // 2)
    x, y = rng.integers(0, width - w), rng.integers(0, height - h)
    masks[i, y:y + h, x:x + w] = 1
    boxes[i] = [x / width, y / height, (x + w) / width, (y + h) / height]
  labels = np.array([i % 3 for i in range(n - num_crowds)] + [-1] * num_crowds, np.int32)
  return image, masks, boxes, labels


@pytest.mark.parametrize('seed', range(40))
def test_train_transform_equals_literal_reference(seed):
  rng = np.random.default_rng(1000 + seed)
  num_crowds = seed % 2
  image, masks, boxes, labels = _scene(rng, int(rng.integers(30, 60)), int(rng.integers(30, 60)),
                                       4, num_crowds)
  size = 48
  out = augment.train_transform(image, masks, boxes, labels, num_crowds,
                                np.random.default_rng(seed), max_size=size)
  ref_image, ref_masks, ref_boxes, ref_labels = _reference_train_transform(
      image, masks, boxes, labels, num_crowds, seed, size)
  np.testing.assert_array_equal(out.image, ref_image)
  np.testing.assert_array_equal(out.masks, ref_masks)
  np.testing.assert_array_equal(out.boxes, ref_boxes.astype(np.float32))
  np.testing.assert_array_equal(out.labels, ref_labels)
  assert out.num_crowds == int((ref_labels < 0).sum())


def test_train_transform_at_550_equals_reference_and_is_deterministic():
  rng = np.random.default_rng(7)
  image, masks, boxes, labels = _scene(rng, 240, 320, 5, 1)
  for seed in (3, 11):
    out = augment.train_transform(image, masks, boxes, labels, 1, np.random.default_rng(seed))
    again = augment.train_transform(image, masks, boxes, labels, 1,
                                    np.random.default_rng(seed))
    ref = _reference_train_transform(image, masks, boxes, labels, 1, seed, 550)
    assert out.image.shape == (550, 550, 3) and out.image.dtype == np.float32
    for got, want in zip((out.image, out.masks, out.boxes, out.labels), ref):
      np.testing.assert_array_equal(got, np.asarray(want).astype(got.dtype))
    for a, b in zip((out.image, out.masks, out.boxes), (again.image, again.masks,
                                                        again.boxes)):
      np.testing.assert_array_equal(a, b)
  other = augment.train_transform(image, masks, boxes, labels, 1, np.random.default_rng(12))
  assert not np.array_equal(other.image, out.image)


@pytest.mark.parametrize('seed', range(12))
def test_boxes_inside_image_and_consistent_with_masks(seed):
  rng = np.random.default_rng(seed)
  image, masks, boxes, labels = _scene(rng, int(rng.integers(150, 300)),
                                       int(rng.integers(150, 300)), 5, 1)
  out = augment.train_transform(image, masks, boxes, labels, 1, np.random.default_rng(seed))
  assert out.boxes.shape == (len(out.labels), 4) and out.masks.shape[0] == len(out.labels)
  assert (out.labels >= 0).any()  # the crop always keeps an object
  assert np.all(out.boxes >= 0) and np.all(out.boxes <= 1)
  assert np.all(out.boxes[:, 2:] > out.boxes[:, :2])
  assert set(np.unique(out.masks)) <= {0, 1}
  for mask, box, label in zip(out.masks, out.boxes, out.labels):
    if label < 0:
      continue
    ys, xs = np.nonzero(mask)
    mask_box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    assert np.abs(mask_box - box * 550).max() <= 2.0


def test_mirror_maps_a_known_box_exactly():
  image = np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8)
  masks = np.zeros((1, 100, 200), np.uint8)
  masks[0, 20:60, 10:50] = 1
  boxes = np.array([[10 / 200, 20 / 100, 50 / 200, 60 / 100]], np.float32)
  only_mirror = AugmentConfig(photometric_distort=False, expand=False,
                              random_sample_crop=False, random_mirror=True)
  outcomes = set()
  for seed in range(8):
    flipped = bool(np.random.default_rng(seed).integers(2))  # the only draw made
    out = augment.train_transform(image, masks, boxes, np.array([0]), 0,
                                  np.random.default_rng(seed), max_size=550,
                                  flags=only_mirror)
    source = image[:, ::-1] if flipped else image
    expected_image = augment.backbone_transform(cv2.resize(source.astype(np.float32), (550, 550)))
    np.testing.assert_array_equal(out.image, expected_image)
    expected_box = [150 / 200, 0.2, 190 / 200, 0.6] if flipped else [0.05, 0.2, 0.25, 0.6]
    np.testing.assert_allclose(out.boxes[0], expected_box, rtol=0, atol=1e-7)
    outcomes.add(flipped)
  assert outcomes == {True, False}


def test_expand_fills_with_the_mean():
  image = np.full((40, 40, 3), 255, np.uint8)
  masks = np.ones((1, 40, 40), np.uint8)
  boxes = np.array([[0, 0, 1, 1]], np.float32)
  only_expand = AugmentConfig(photometric_distort=False, expand=True,
                              random_sample_crop=False, random_mirror=False)
  expanded = 0
  for seed in range(12):
    out = augment.train_transform(image, masks, boxes, np.array([0]), 0,
                                  np.random.default_rng(seed), max_size=160,
                                  flags=only_expand)
    background = out.masks[0] == 0
    if not background.any():
      continue
    expanded += 1
    # The mean fill normalises to ~0, far from the white image (> 2.2 in every channel).
    far = cv2.erode(background.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert np.abs(out.image[far]).max() < 1e-4
    inside = cv2.erode(out.masks[0], np.ones((5, 5), np.uint8)) > 0
    assert out.image[inside].min() > 2.2
  assert expanded >= 2


def test_normalisation_constants_exact():
  bgr = np.array([[[0, 128, 255], [103.94, 116.78, 123.68]]], np.float32)
  resnet = augment.backbone_transform(bgr, 'resnet')
  expected_rgb = np.array([[[(255 - 123.68) / 58.40, (128 - 116.78) / 57.12,
                             (0 - 103.94) / 57.38], [0, 0, 0]]])
  np.testing.assert_allclose(resnet, expected_rgb, rtol=1e-6, atol=1e-6)
  float32_exact = ((bgr - np.array(MEANS, np.float32)) / np.array(STD, np.float32))[:, :, ::-1]
  np.testing.assert_array_equal(resnet, float32_exact)
  darknet = augment.backbone_transform(bgr, 'darknet')
  np.testing.assert_array_equal(darknet, (bgr / np.float32(255))[:, :, ::-1])
  assert resnet.dtype == darknet.dtype == np.float32
  with pytest.raises(ValueError):
    augment.backbone_transform(bgr, 'vgg')


def test_eval_transform_is_resize_then_normalise_and_filters_relative_boxes():
  image = np.random.default_rng(2).integers(0, 256, (120, 90, 3), dtype=np.uint8)
  boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.2 + 3 / 550, 0.6], [0, 0, 1, 1]],
                   np.float32)
  labels = np.array([1, 2, -1])
  for kind in ('resnet', 'darknet'):
    out = augment.eval_transform(image, boxes, labels, max_size=550, kind=kind)
    expected = augment.backbone_transform(cv2.resize(image.astype(np.float32), (550, 550),
                                                     interpolation=cv2.INTER_LINEAR), kind)
    np.testing.assert_array_equal(out.image, expected)
    # The 3/550-wide box is dropped by the eval filter (relative sizes; training compares pixels).
    np.testing.assert_array_equal(out.boxes, boxes[[0, 2]])
    np.testing.assert_array_equal(out.labels, [1, -1])
    assert out.num_crowds == 1 and out.masks is None


def test_small_box_filter_unit_bug_and_fix():
  image = np.zeros((550, 550, 3), np.uint8)
  masks = np.zeros((2, 550, 550), np.uint8)
  masks[0, 10:100, 10:100] = 1
  masks[1, 10:100, 200:202] = 1
  boxes = np.array([[10, 10, 100, 100], [200, 10, 202, 100]], np.float32) / 550
  no_augment = AugmentConfig(photometric_distort=False, expand=False,
                             random_sample_crop=False, random_mirror=False)
  faithful = augment.train_transform(image, masks, boxes, np.array([0, 1]), 0,
                                     np.random.default_rng(0), flags=no_augment)
  assert len(faithful.labels) == 2  # a 2-px box survives the original's pixel-unit test
  fixed = augment.train_transform(
      image, masks, boxes, np.array([0, 1]), 0, np.random.default_rng(0),
      flags=AugmentConfig(photometric_distort=False, expand=False,
                          random_sample_crop=False, random_mirror=False,
                          fix_discard_box_units=True))
  np.testing.assert_array_equal(fixed.labels, [0])


def test_crowd_only_sample_is_not_cropped_and_keeps_crowds_last():
  rng = np.random.default_rng(5)
  image, masks, boxes, _ = _scene(rng, 80, 80, 2)
  labels = np.array([-1, -1], np.int32)
  out = augment.train_transform(image, masks, boxes, labels, 2, np.random.default_rng(1),
                                max_size=64)
  # RandomSampleCrop needs a non-crowd object, so only its "no crop" mode can end the loop.
  assert out.num_crowds == len(out.labels) == 2
