"""Priors: exact against the original's numbers."""

import math

import numpy as np
import pytest

from yolact_jax.anchors import level_priors, make_priors
from yolact_jax.config import get_config
from tests.reference_data import REFERENCE_DIR, require_reference


def test_first_priors_of_yolact_base():  # the original's first priors at 550 px
  priors = make_priors(get_config('yolact_base'))
  assert priors.shape == (19248, 4) and priors.dtype == np.float32
  np.testing.assert_allclose(priors[:3], [[0.007246, 0.007246, 0.043636, 0.043636],
                                          [0.007246, 0.007246, 0.030856, 0.030856],
                                          [0.007246, 0.007246, 0.061711, 0.061711]], atol=1e-6)


def test_order_rows_then_cols_then_scale_then_ratio():
  p = level_priors(2, 3, scales=(10, 20), aspect_ratios=(1, 4), max_size=100,
                   use_square_anchors=False)
  assert p.shape == (2 * 3 * 2 * 2, 4)
  # second location is column 1 of row 0
  np.testing.assert_allclose(p[4, :2], [1.5 / 3, 0.5 / 2])
  # within a location: (s0, r0), (s0, r1), (s1, r0), (s1, r1); ratio square-rooted
  np.testing.assert_allclose(p[:4, 2], [0.1, 0.1 * 2, 0.2, 0.2 * 2])
  np.testing.assert_allclose(p[:4, 3], [0.1, 0.1 / 2, 0.2, 0.2 / 2])


def test_square_anchors_make_ratios_extra_scales():
  p = level_priors(1, 1, scales=(24,), aspect_ratios=(1, 0.5, 2), max_size=550)
  np.testing.assert_allclose(p[:, 2] * 550, [24, 24 * math.sqrt(0.5), 24 * math.sqrt(2)])
  np.testing.assert_array_equal(p[:, 2], p[:, 3])


def test_priors_equal_reference_bit_for_bit():
  require_reference()
  raw = np.load(REFERENCE_DIR / 'yolact_resnet50' / 'raw.npz')
  np.testing.assert_array_equal(make_priors(get_config('yolact_resnet50')), raw['priors'])


@pytest.mark.parametrize('name', ['yolact_im400', 'yolact_im700', 'yolact_tiny'])
def test_prior_count_matches_feature_sizes(name):
  from yolact_jax.model.shapes import num_priors
  cfg = get_config(name)
  assert make_priors(cfg).shape == (num_priors(cfg), 4)
