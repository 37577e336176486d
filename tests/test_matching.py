"""Matching: parity with the original's matcher outputs, and hand-made cases with known answers."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.reference_data import load_npz
from tests.reference_losses import reference_batch, reference_losses
from yolact_jax.anchors import make_priors
from yolact_jax.config import LossConfig, get_config
from yolact_jax.matching import match

# --------------------------------------------------------------------------------------------
# Parity with the original (loss_aux.npz)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def reference_match():
  aux = load_npz('yolact_resnet50', 'loss_aux.npz')
  cfg = get_config('yolact_resnet50')
  batch = reference_batch()
  run = jax.jit(match, static_argnames='cfg')
  targets = run(make_priors(cfg), batch['boxes'], batch['labels'], batch['is_crowd'],
                batch['valid'], cfg=cfg.loss)
  return jax.tree.map(np.asarray, targets), aux


def test_reference_labels_and_indices_identical(reference_match):
  ours, aux = reference_match
  np.testing.assert_array_equal(ours.conf_t, aux['conf_t'])
  np.testing.assert_array_equal(ours.idx_t, aux['idx_t'])
  ref = reference_losses()
  np.testing.assert_array_equal((ours.conf_t > 0).sum(1), ref['num_pos_per_image'])
  np.testing.assert_array_equal((ours.conf_t < 0).sum(1), ref['num_neutral_per_image'])


def test_reference_regression_targets(reference_match):
  ours, aux = reference_match
  positive = aux['conf_t'] > 0
  np.testing.assert_allclose(ours.loc_t[positive], aux['loc_t'][positive], rtol=0, atol=1e-5)
  # Every prior (not only positives) gets the encoded matched box; far priors give large
  # offsets (|t| up to ~30) that agree to float32 rounding.
  np.testing.assert_allclose(ours.loc_t, aux['loc_t'], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ours.gt_box_t, aux['gt_box_t'])


# --------------------------------------------------------------------------------------------
# Hand-made cases
# --------------------------------------------------------------------------------------------

# Full-height strip priors (cx, cy, w, h): IoU reduces to the 1-D IoU of the x intervals.
#   p0 [0, .2]  p1 [.2, .4]  p2 [.4, .6]  p3 [.6, .8]  p4 [.8, 1]  p5 [.3, .5]
STRIP_PRIORS = np.array([[0.1, 0.5, 0.2, 1.0], [0.3, 0.5, 0.2, 1.0], [0.5, 0.5, 0.2, 1.0],
                         [0.7, 0.5, 0.2, 1.0], [0.9, 0.5, 0.2, 1.0], [0.4, 0.5, 0.2, 1.0]],
                        np.float32)
NUM_SLOTS = 3


def real(x1, x2, label):
  return dict(x=(x1, x2), label=label, crowd=False, valid=True)


def crowd(x1, x2):
  return dict(x=(x1, x2), label=-1, crowd=True, valid=True)


def padding(x1, x2, label, is_crowd=False):
  return dict(x=(x1, x2), label=label, crowd=is_crowd, valid=False)


# name: (GT slots, expected conf_t per prior, expected GT slot of each positive prior)
CASES = {
    # IoU with p0 is 0.25 < 0.4, yet the GT is forced onto its best prior.
    'forced_low_iou': ([real(0.0, 0.05, 2)], [3, 0, 0, 0, 0, 0], {0: 0}),
    # Both GTs' best prior is p1. The greedy order is by overlap, not by slot: A (slot 1, IoU 1.0)
    # takes p1 before B (slot 0, IoU 0.82); B is forced onto its next best, p5 (IoU 0.43).
    'two_gts_one_prior': ([real(0.22, 0.42, 1), real(0.2, 0.4, 0)], [0, 1, 0, 0, 0, 2],
                          {1: 1, 5: 0}),
    # Identical GTs tie: the first slot wins p1, the second gets p5 (IoU 1/3, forced).
    'duplicate_gts': ([real(0.2, 0.4, 0), real(0.2, 0.4, 1)], [0, 1, 0, 0, 0, 2], {1: 0, 5: 1}),
    # p1 forced (0.71); p5 positive on its own IoU (0.6); p2 background (0.2).
    'threshold_positive': ([real(0.2, 0.48, 0)], [0, 1, 0, 0, 0, 1], {1: 0, 5: 0}),
    # p5 has IoU 0.448: the neutral band [0.4, 0.5).
    'neutral_band': ([real(0.21, 0.43, 3)], [0, 4, 0, 0, 0, -1], {1: 0}),
    # Priors >70% inside the crowd box become neutral; p0, p3 are only 25% inside.
    'crowd_only': ([crowd(0.15, 0.65)], [0, -1, -1, 0, 0, -1], {}),
    # A positive inside a crowd stays positive; background inside it turns neutral.
    'crowd_keeps_positive': ([real(0.2, 0.4, 3), crowd(0.15, 0.65)], [0, 4, -1, 0, 0, -1],
                             {1: 0}),
    'no_gt': ([], [0, 0, 0, 0, 0, 0], {}),
    # Padding slots (even a perfect box, even flagged crowd) are never matched or used.
    'padding_ignored': ([real(0.8, 1.0, 2), padding(0.2, 0.4, 1), padding(0.0, 1.0, -1, True)],
                        [0, 0, 0, 0, 3, 0], {4: 0}),
}


def slots_to_arrays(slots):
  """GT slot dicts -> padded arrays [G, 4], [G], [G], [G] (unused slots: zeros, invalid)."""
  boxes = np.zeros((NUM_SLOTS, 4), np.float32)
  labels = np.zeros(NUM_SLOTS, np.int32)
  is_crowd = np.zeros(NUM_SLOTS, bool)
  valid = np.zeros(NUM_SLOTS, bool)
  for g, slot in enumerate(slots):
    boxes[g] = (slot['x'][0], 0.0, slot['x'][1], 1.0)
    labels[g], is_crowd[g], valid[g] = slot['label'], slot['crowd'], slot['valid']
  return boxes, labels, is_crowd, valid


@pytest.fixture(scope='module')
def hand_made():
  """All cases matched as one batch (one compilation): case name -> per-image numpy targets."""
  arrays = [slots_to_arrays(CASES[name][0]) for name in CASES]
  stacked = [np.stack(column) for column in zip(*arrays)]
  targets = jax.jit(match, static_argnames='cfg')(STRIP_PRIORS, *stacked, cfg=LossConfig())
  targets = jax.tree.map(np.asarray, targets)
  return {name: (jax.tree.map(lambda x, b=b: x[b], targets), arrays[b])
          for b, name in enumerate(CASES)}


def encode_np(box, prior):
  """The SSD encoding in float64 (reference for the targets of positive priors)."""
  box, prior = box.astype(np.float64), prior.astype(np.float64)
  centre = ((box[:2] + box[2:]) / 2 - prior[:2]) / (0.1 * prior[2:])
  size = np.log((box[2:] - box[:2]) / prior[2:]) / 0.2
  return np.concatenate([centre, size])


@pytest.mark.parametrize('name', list(CASES))
def test_hand_made_case(hand_made, name):
  targets, (boxes, _, is_crowd, valid) = hand_made[name]
  _, expected_conf, expected_owner = CASES[name]
  np.testing.assert_array_equal(targets.conf_t, expected_conf)
  positives = np.flatnonzero(targets.conf_t > 0)
  assert {int(p): int(targets.idx_t[p]) for p in positives} == expected_owner
  assert np.all(np.isfinite(targets.loc_t)) and np.all(np.isfinite(targets.gt_box_t))
  for p in positives:
    g = targets.idx_t[p]
    np.testing.assert_array_equal(targets.gt_box_t[p], boxes[g])
    np.testing.assert_allclose(targets.loc_t[p], encode_np(boxes[g], STRIP_PRIORS[p]),
                               rtol=1e-5, atol=1e-5)
  real_slots = valid & ~is_crowd
  # Matched slots are always real GT; every real GT owns at least one positive prior.
  assert np.all(real_slots[targets.idx_t]) or not real_slots.any()
  assert set(np.flatnonzero(real_slots)) <= set(targets.idx_t[positives].tolist())
  if not real_slots.any():
    np.testing.assert_array_equal(targets.idx_t, 0)
    np.testing.assert_array_equal(targets.loc_t, 0)
    np.testing.assert_array_equal(targets.gt_box_t, 0)


# --------------------------------------------------------------------------------------------
# Random dense cases against a direct numpy transcription of the original loop
# --------------------------------------------------------------------------------------------


def original_match_np(priors, boxes, labels, crowd_boxes, cfg):
  """Spec section 10 step by step on the full [G, P] matrix (float32, numpy, first-max ties)."""
  prior_boxes = np.concatenate([priors[:, :2] - priors[:, 2:] / 2,
                                priors[:, :2] + priors[:, 2:] / 2], 1)

  def intersection(a, b):
    wh = np.maximum(np.minimum(a[:, None, 2:], b[None, :, 2:])
                    - np.maximum(a[:, None, :2], b[None, :, :2]), 0)
    return wh[..., 0] * wh[..., 1]

  def area(a):
    return (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])

  inter = intersection(boxes, prior_boxes)
  overlaps = inter / (area(boxes)[:, None] + area(prior_boxes)[None, :] - inter)
  best_overlap, best_idx = overlaps.max(0), overlaps.argmax(0)
  for _ in range(len(boxes)):
    j = overlaps.max(1).argmax()
    i = overlaps[j].argmax()
    overlaps[:, i] = -1
    overlaps[j, :] = -1
    best_overlap[i], best_idx[i] = 2, j
  conf = labels[best_idx] + 1
  conf[best_overlap < cfg.positive_iou_threshold] = -1
  conf[best_overlap < cfg.negative_iou_threshold] = 0
  if len(crowd_boxes):
    in_crowd = (intersection(prior_boxes, crowd_boxes) / area(prior_boxes)[:, None]).max(1)
    conf[(conf <= 0) & (in_crowd > cfg.crowd_iou_threshold)] = -1
  return conf, best_idx


def test_random_dense_cases_match_the_original_loop():
  """Many overlapping, duplicated and grid-snapped GTs (ties everywhere), up to all slots used."""
  cfg = get_config('yolact_tiny')
  priors = make_priors(cfg)
  rng = np.random.default_rng(0)
  batch_size, num_slots = 12, 12
  corners = rng.integers(0, 8, (batch_size, num_slots, 2))
  sizes = rng.integers(1, 5, (batch_size, num_slots, 2))
  boxes = (np.concatenate([corners, np.minimum(corners + sizes, 8)], -1) / 8).astype(np.float32)
  boxes[:, 1::4] = boxes[:, 0::4]  # exact duplicates
  labels = rng.integers(0, 4, (batch_size, num_slots)).astype(np.int32)
  num_real = rng.integers(0, num_slots + 1, batch_size)
  num_crowd = rng.integers(0, 3, batch_size)
  slot = np.arange(num_slots)[None]
  is_crowd = (slot >= num_real[:, None]) & (slot < (num_real + num_crowd)[:, None])
  valid = slot < np.minimum(num_real + num_crowd, num_slots)[:, None]
  targets = jax.jit(match, static_argnames='cfg')(priors, boxes, labels, is_crowd, valid,
                                                   cfg=cfg.loss)
  for b in range(batch_size):
    real_slots = valid[b] & ~is_crowd[b]
    if not real_slots.any():
      continue
    conf, idx = original_match_np(priors, boxes[b][real_slots], labels[b][real_slots],
                                  boxes[b][valid[b] & is_crowd[b]], cfg.loss)
    np.testing.assert_array_equal(np.asarray(targets.conf_t[b]), conf, err_msg=f'image {b}')
    np.testing.assert_array_equal(np.asarray(targets.idx_t[b]), idx, err_msg=f'image {b}')
