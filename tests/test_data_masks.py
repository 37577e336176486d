"""Mask helpers: the loss's downsampling against torch, cv2 mask resizing, segmentation forms."""

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest

from tests.test_data_common import coco_uncompressed_rle, rect_mask, rect_polygon
from yolact_jax.data import masks as mask_lib

torch = pytest.importorskip('torch')
F = torch.nn.functional


def _random_masks(rng, n, size, block):
  """Blocky random binary masks [n, size, size] (blocks of ``block`` px, like object masks)."""
  cells = -(-size // block)
  coarse = rng.random((n, cells, cells)) > 0.5
  return np.kron(coarse, np.ones((block, block), np.uint8))[:, :size, :size].astype(np.uint8)


@pytest.mark.parametrize('out_size', [138, 69])
@pytest.mark.parametrize('block', [1, 7, 40])
def test_downsample_binarize_matches_torch(out_size, block):
  rng = np.random.default_rng(out_size * 100 + block)
  masks = _random_masks(rng, 4, 550, block)
  interpolated = F.interpolate(torch.from_numpy(masks).float()[None], (out_size, out_size),
                               mode='bilinear', align_corners=False)[0].numpy()
  expected = (interpolated > 0.5).astype(np.uint8)
  ours = mask_lib.downsample_binarize_masks(masks, (out_size, out_size))
  assert ours.dtype == np.uint8 and ours.shape == (4, out_size, out_size)
  differ = ours != expected
  # Only where torch's float32 value sits within 1e-6 of the threshold may the two disagree.
  assert np.all(np.abs(interpolated[differ] - 0.5) < 1e-6)
  assert differ.sum() <= 0.0001 * differ.size


def test_bilinear_resize_values_match_torch_non_square():
  rng = np.random.default_rng(3)
  values = rng.random((2, 37, 53)).astype(np.float32)
  for out_hw in [(20, 11), (74, 106), (37, 53)]:
    expected = F.interpolate(torch.from_numpy(values)[None], out_hw, mode='bilinear',
                             align_corners=False)[0].numpy()
    np.testing.assert_allclose(mask_lib.bilinear_resize(values, out_hw), expected,
                               rtol=0, atol=2e-6)


def test_downsample_empty():
  assert mask_lib.downsample_binarize_masks(np.zeros((0, 550, 550), np.uint8),
                                            (138, 138)).shape == (0, 138, 138)


def test_resize_masks_equals_multichannel_cv2_resize():
  rng = np.random.default_rng(0)
  masks = _random_masks(rng, 5, 90, 3)[:, :, :70]
  as_channels = cv2.resize(np.ascontiguousarray(masks.transpose(1, 2, 0)), (55, 61))
  ours = mask_lib.resize_masks(masks, (61, 55))
  np.testing.assert_array_equal(ours, as_channels.transpose(2, 0, 1))
  mirrored = mask_lib.resize_masks(masks, (61, 55), mirror=True)
  np.testing.assert_array_equal(
      mirrored, cv2.resize(np.ascontiguousarray(masks[:, :, ::-1].transpose(1, 2, 0)),
                           (55, 61)).transpose(2, 0, 1))
  assert set(np.unique(ours)) <= {0, 1}


def test_segmentation_forms_decode_to_the_same_mask():
  h, w = 30, 40
  expected = rect_mask(h, w, 3, 4, 20, 25)
  compressed = mask_utils.encode(np.asfortranarray(expected))
  forms = [
      [rect_polygon(3, 4, 20, 25)],
      coco_uncompressed_rle(expected),
      {'size': [h, w], 'counts': compressed['counts'].decode('ascii')},
      {'size': [h, w], 'counts': compressed['counts']},
  ]
  for form in forms:
    rle = mask_lib.segmentation_to_rle(form, h, w)
    np.testing.assert_array_equal(mask_lib.decode_rles([rle], h, w)[0], expected)


def test_unusable_polygon_parts_are_dropped_and_reported():
  parts, problems = mask_lib.clean_polygons([[1, 2, 3, 4], rect_polygon(0, 0, 5, 5), [1, 2, 3]])
  assert parts == [rect_polygon(0, 0, 5, 5)]
  assert len(problems) == 2 and 'part 0' in problems[0] and 'part 2' in problems[1]
  with pytest.raises(mask_lib.SegmentationError):
    mask_lib.segmentation_to_rle([[1, 2, 3, 4]], 10, 10)
  with pytest.raises(mask_lib.SegmentationError, match='RLE size'):
    mask_lib.segmentation_to_rle({'size': [5, 5], 'counts': [25]}, 10, 10)


def test_encode_roundtrip_and_box_mask():
  masks = np.stack([rect_mask(12, 9, 1, 2, 5, 7), rect_mask(12, 9, 0, 0, 9, 12)])
  np.testing.assert_array_equal(mask_lib.decode_rles(mask_lib.encode_masks(masks), 12, 9),
                                masks)
  np.testing.assert_array_equal(mask_lib.box_mask([1, 2, 4, 5], 12, 9),
                                rect_mask(12, 9, 1, 2, 5, 7))
