"""Priors: exact against the original's numbers."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from yolact_jax.anchors import level_priors, make_priors
from yolact_jax.boxes import jaccard
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


def test_cpu_preset_anchors_cover_the_demo_objects(tmp_path):
  """yolact_cpu's anchors fit the demo's synthetic objects: nearly every object has an anchor at
  IoU >= 0.5 (the positive threshold), several on average (v1's scales shrunk to 128 px: 42%)."""
  import json

  from yolact_jax.data import synthetic
  ann_file, _ = synthetic.generate_synthetic_coco(
      tmp_path, num_train=40, num_val=0, side_range=(128, 256), square=True)['train']
  data = json.loads(open(ann_file).read())
  sizes = {im['id']: (im['width'], im['height']) for im in data['images']}
  boxes = np.array([[x / sizes[a['image_id']][0], y / sizes[a['image_id']][1],
                     (x + w) / sizes[a['image_id']][0], (y + h) / sizes[a['image_id']][1]]
                    for a in data['annotations'] if not a['iscrowd']
                    for x, y, w, h in [a['bbox']]])
  priors = make_priors(get_config('yolact_cpu'))
  corners = np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2],
                           1)
  iou = np.asarray(jaccard(jnp.asarray(boxes), jnp.asarray(corners)))
  assert len(boxes) > 60
  assert np.mean(iou.max(1) >= 0.5) >= 0.95
  assert np.mean((iou >= 0.5).sum(1)) >= 4
