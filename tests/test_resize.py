"""The device resizes of the input (yolact_jax.resize): 'uint8' is OpenCV's INTER_LINEAR bit for
bit, for any mix of sizes in one canvas; 'float' is the original's bilinear (test_predict)."""

import cv2
import jax
import numpy as np
import pytest

from yolact_jax import resize
from yolact_jax.host import pack_canvas

SIZES = [(1, 1), (2, 3), (7, 5), (33, 17), (64, 80), (300, 200), (427, 640), (480, 640),
         (551, 549), (1100, 1101), (3, 1200)]


@pytest.mark.parametrize('out_hw', [(550, 550), (128, 128), (700, 700), (17, 23)])
def test_uint8_resize_is_opencvs_bit_for_bit(out_hw):
  rng = np.random.default_rng(sum(out_hw))
  images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
  canvas, sizes = pack_canvas(images, (1104, 1200), len(images))
  ours = np.asarray(jax.jit(lambda c, s: resize.resize_batch(c, s, out_hw, 'uint8'))(
      canvas, sizes))
  for image, resized in zip(images, ours):
    expected = cv2.resize(image, out_hw[::-1], interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(resized.astype(np.uint8), expected, err_msg=str(image.shape))
    assert np.array_equal(resized, np.round(resized))  # whole numbers, 0..255


def test_opencv_taps_by_hand():
  """640 -> 550 columns: position (d + 0.5) * 640 / 550 - 0.5; d = 0 -> 0.0818..., weights
  round(2048 * 0.9181...) = 1880 and round(2048 * 0.0818...) = 168; d = 549 -> 638.918...
  (the mirror image). 2 -> 4: position -0.25 at d = 0 and 1.25 at d = 3 lie outside the pixels:
  the columns read the edge with weight 2048, the rows keep the weights of -0.25 and 1.25 (fractions
  0.75 and 0.25) on the clamped rows. 64 -> 550, row 145: 18074 / 1100 = 16.430908 in float32, fraction x 2048 = 882.5,
  a tie: 882 and 1166 (ties to even), where a product with 1 / 1100 gives 16.43091 (883)."""
  taps = lambda *args: [np.asarray(a) for a in resize.opencv_taps(*args)]  # noqa: E731
  lo, hi, w_lo, w_hi = taps(640, 550, True)
  assert (lo[0], hi[0], w_lo[0], w_hi[0]) == (0, 1, 1880, 168)
  assert (lo[-1], hi[-1], w_lo[-1], w_hi[-1]) == (638, 639, 168, 1880)
  assert np.all(w_lo + w_hi == 2048)
  lo, hi, w_lo, w_hi = taps(2, 4, True)
  assert [(lo[d], hi[d], w_lo[d], w_hi[d]) for d in (0, 3)] == [(0, 1, 2048, 0), (1, 1, 2048, 0)]
  lo, hi, w_lo, w_hi = taps(2, 4, False)
  assert [(lo[d], hi[d], w_lo[d], w_hi[d]) for d in (0, 3)] == [(0, 0, 512, 1536),
                                                                 (1, 1, 1536, 512)]
  lo, hi, w_lo, w_hi = jax.jit(lambda n: resize.opencv_taps(n, 550, False))(64)
  assert (int(lo[145]), int(w_lo[145]), int(w_hi[145])) == (16, 1166, 882)


def test_unknown_resize_is_refused():
  with pytest.raises(ValueError, match='input_resize'):
    resize.resize_batch(np.zeros((1, 4, 4, 3), np.uint8), np.array([[4, 4]]), (2, 2), 'area')
