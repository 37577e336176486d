"""Loss: parity with the original's four terms, hand-made OHEM / target cases, the masks_to_train
cap, and finite gradients (also for images without ground truth)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.reference_data import load_npz, require_reference
from tests.reference_losses import reference_batch, reference_losses, reference_predictions
from yolact_jax import loss as L
from yolact_jax.anchors import make_priors
from yolact_jax.config import get_config
from yolact_jax.model.shapes import feature_sizes, proto_size
from yolact_jax.matching import match

yolact_loss_jit = jax.jit(L.yolact_loss, static_argnames='cfg')


# --------------------------------------------------------------------------------------------
# Parity with the original
# --------------------------------------------------------------------------------------------


def test_downsample_gt_masks_matches_torch_interpolate():
  torch = pytest.importorskip('torch')
  gt = load_npz('yolact_resnet50', 'gt.npz')
  for b in range(2):
    masks = gt[f'masks_{b}']
    for size in (138, 69):
      expected = torch.nn.functional.interpolate(
          torch.from_numpy(masks).float()[None], (size, size), mode='bilinear',
          align_corners=False)[0] > 0.5
      ours = L.downsample_gt_masks(masks, (size, size))
      assert ours.dtype == jnp.uint8
      np.testing.assert_array_equal(np.asarray(ours), expected.numpy().astype(np.uint8))


@pytest.fixture(scope='module')
def reference_run():
  cfg = get_config('yolact_resnet50')
  total, terms = yolact_loss_jit(reference_predictions(), make_priors(cfg), reference_batch(),
                                 cfg=cfg)
  return float(total), {k: np.asarray(v) for k, v in terms.items()}


@pytest.mark.parametrize('term', ['B', 'C', 'M', 'S', 'total'])
def test_reference_loss_terms(reference_run, term):
  total, terms = reference_run
  ours = total if term == 'total' else float(terms[term])
  assert ours == pytest.approx(reference_losses()[term], rel=1e-4)


def test_reference_counts(reference_run):
  _, terms = reference_run
  ref = reference_losses()
  assert int(terms['num_pos']) == sum(ref['num_pos_per_image'])
  assert int(terms['num_neg']) == sum(ref['num_neg_per_image'])
  assert int(terms['num_neutral']) == sum(ref['num_neutral_per_image'])


def test_reference_hard_negatives_identical():
  aux = load_npz('yolact_resnet50', 'loss_aux.npz')
  negatives = L.hard_negatives(jnp.asarray(reference_predictions()['conf']),
                               jnp.asarray(aux['conf_t'], jnp.int32), 3)
  np.testing.assert_array_equal(np.asarray(negatives), aux['ohem_neg'])


# --------------------------------------------------------------------------------------------
# Elementwise pieces against torch
# --------------------------------------------------------------------------------------------


def test_elementwise_losses_match_torch():
  torch = pytest.importorskip('torch')
  F = torch.nn.functional
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(0, 3, 200), [0.0, 1.0, -1.0, 30.0, -30.0]]).astype(np.float32)
  t = (rng.random(x.shape) > 0.5).astype(np.float32)
  np.testing.assert_allclose(np.asarray(L.smooth_l1(x)), F.smooth_l1_loss(
      torch.from_numpy(x), torch.zeros(x.shape), reduction='none').numpy(), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(L.bce_with_logits(x, t)), F.binary_cross_entropy_with_logits(
      torch.from_numpy(x), torch.from_numpy(t), reduction='none').numpy(), rtol=1e-5, atol=1e-6)

  # Probabilities including exact 0 and 1 (cropped pixels, saturated sigmoid): value and gradient.
  p = np.concatenate([rng.random(100), [0.0, 0.0, 1.0, 1.0, 1e-30, 1 - 1e-7]]).astype(np.float32)
  t = np.concatenate([(rng.random(100) > 0.5), [0, 1, 0, 1, 1, 0]]).astype(np.float32)
  p_torch = torch.from_numpy(p).requires_grad_()
  value_torch = F.binary_cross_entropy(p_torch, torch.from_numpy(t), reduction='none')
  value_torch.sum().backward()
  value, grad = jax.value_and_grad(lambda q: jnp.sum(L.torch_bce(q, t)))(p)
  np.testing.assert_allclose(np.asarray(L.torch_bce(p, t)), value_torch.detach().numpy(),
                             rtol=1e-6)
  assert float(value) == pytest.approx(float(value_torch.sum().detach()), rel=1e-6)
  np.testing.assert_allclose(np.asarray(grad), p_torch.grad.numpy(), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Hand-made OHEM and semantic-target cases
# --------------------------------------------------------------------------------------------


def logits_with_background_loss(values):
  """Two-class logits [1, P, 2] whose background loss (-log softmax[0]) equals ``values``."""
  values = np.asarray(values, np.float64)
  foreground = np.log(np.expm1(values))  # -log(1 / (1 + e^f)) = v  <=>  f = log(e^v - 1)
  return np.stack([np.zeros_like(values), foreground], -1)[None].astype(np.float32)


OHEM_CASES = {
    # 1 positive -> 3 negatives: the three hardest background priors. The neutral (idx 1) and
    # the positive (idx 0) are harder but excluded.
    'three_per_positive': ([2, -1, 0, 0, 0, 0, 0, 0], [9, 9, 1, 5, 2, 4, 3, 0.5],
                           [3, 5, 6]),
    # 6 positives want 18 negatives; capped at P - 1 = 7, i.e. every background prior.
    'cap_at_p_minus_1': ([1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 2, 3], [6, 7]),
    'no_positive_no_negative': ([0, 0, 0, 0, -1, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8], []),
}


@pytest.mark.parametrize('name', list(OHEM_CASES))
def test_hard_negatives_hand_made(name):
  conf_t, scores, expected = OHEM_CASES[name]
  conf = logits_with_background_loss(scores)
  negatives = np.asarray(L.hard_negatives(conf, np.asarray([conf_t], np.int32), 3))[0]
  assert np.flatnonzero(negatives).tolist() == expected


def test_conf_loss_sums_cross_entropy_over_positives_and_negatives():
  rng = np.random.default_rng(1)
  conf = rng.normal(0, 2, (1, 6, 4)).astype(np.float32)
  conf_t = np.array([[2, 0, -1, 3, 0, 0]], np.int32)
  negatives = np.array([[False, True, False, False, False, True]])
  log_probs = conf - np.log(np.exp(conf).sum(-1, keepdims=True))
  expected = -(log_probs[0, 0, 2] + log_probs[0, 1, 0] + log_probs[0, 3, 3] + log_probs[0, 5, 0])
  assert float(L.conf_loss(conf, conf_t, negatives, 1.0)) == pytest.approx(expected, rel=1e-5)


def test_semantic_target_unions_same_class_and_ignores_crowd_and_padding():
  masks = np.zeros((1, 4, 4, 4), np.uint8)
  masks[0, 0, 0, :2] = 1  # class 1
  masks[0, 1, 0, 1:3] = 1  # class 1 again: union
  masks[0, 2, 3, :] = 1  # crowd: ignored
  masks[0, 3, 2, :] = 1  # padding: ignored
  labels = np.array([[1, 1, -1, 0]], np.int32)
  real = np.array([[True, True, False, False]])
  target = np.asarray(L.semantic_target(masks, labels, real, 3))
  expected = np.zeros((1, 4, 4, 3), np.float32)
  expected[0, 0, :3, 1] = 1
  np.testing.assert_array_equal(target, expected)


# --------------------------------------------------------------------------------------------
# Small synthetic batches (yolact_tiny: 64 px, 258 priors, 16x16 protos, 8x8 semantic maps)
# --------------------------------------------------------------------------------------------

TINY = get_config('yolact_tiny')


def synthetic_batch(cfg, images):
  """A padded batch from per-image lists of (x1, y1, x2, y2, label, is_crowd) boxes."""
  num_slots, size = 4, cfg.max_size
  hp, hs = proto_size(cfg), feature_sizes(cfg)[0]
  batch_size = len(images)
  boxes = np.zeros((batch_size, num_slots, 4), np.float32)
  labels = np.zeros((batch_size, num_slots), np.int32)
  is_crowd = np.zeros((batch_size, num_slots), bool)
  valid = np.zeros((batch_size, num_slots), bool)
  full = np.zeros((batch_size, num_slots, size, size), np.uint8)
  for b, objects in enumerate(images):
    for g, (x1, y1, x2, y2, label, crowd) in enumerate(objects):
      boxes[b, g] = (x1, y1, x2, y2)
      labels[b, g], is_crowd[b, g], valid[b, g] = label, crowd, True
      # an ellipse inscribed in the box
      yy, xx = np.mgrid[:size, :size] + 0.5
      cx, cy, rx, ry = (x1 + x2) / 2 * size, (y1 + y2) / 2 * size, (x2 - x1) / 2 * size, \
          (y2 - y1) / 2 * size
      full[b, g] = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
  return dict(boxes=boxes, labels=labels, is_crowd=is_crowd, valid=valid,
              masks_proto=np.asarray(L.downsample_gt_masks(full, (hp, hp))),
              masks_segm=np.asarray(L.downsample_gt_masks(full, (hs, hs))))


def synthetic_predictions(cfg, batch_size, seed=0, proto_scale=1.0):
  """Random head outputs of the right shapes (numpy, so no per-shape compilation)."""
  num_priors, k, c = make_priors(cfg).shape[0], cfg.model.mask.mask_dim, cfg.num_classes
  hp, hs = proto_size(cfg), feature_sizes(cfg)[0]
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
  return dict(
      loc=normal(batch_size, num_priors, 4),
      conf=2 * normal(batch_size, num_priors, c),
      coefs=np.tanh(normal(batch_size, num_priors, k)),
      proto=proto_scale * np.maximum(normal(batch_size, hp, hp, k), 0),
      segm=normal(batch_size, hs, hs, c - 1))


BIG_OBJECT = (0.1, 0.1, 0.9, 0.85, 2, False)
CENTRE_OBJECT = (0.3, 0.3, 0.7, 0.7, 3, False)
CORNER_OBJECT = (0.0, 0.0, 0.5, 0.5, 1, False)
SMALL_OBJECT = (0.55, 0.6, 0.8, 0.9, 0, False)
CROWD = (0.0, 0.0, 0.5, 0.5, -1, True)


def per_prior_mask_losses(preds, targets, masks_proto, cfg):
  """Unsubsampled reference: the slot loss of EVERY prior [B, P] (only positives meaningful)."""
  @jax.jit
  def every_prior(proto, coef, masks_proto, idx_t, gt_box_t):
    gt_masks = jnp.take_along_axis(masks_proto, idx_t[:, :, None, None], axis=1)
    return L.mask_loss_per_slot(L.slot_mask_predictions(proto, coef, gt_box_t), gt_masks,
                                gt_box_t)

  return np.asarray(every_prior(preds['proto'], preds['coefs'], masks_proto, targets.idx_t,
                                targets.gt_box_t))


def test_masks_to_train_cap_scales_the_chosen_subset():
  cap = 2
  cfg = dataclasses.replace(TINY, loss=dataclasses.replace(TINY.loss, masks_to_train=cap))
  batch = synthetic_batch(cfg, [[BIG_OBJECT, CENTRE_OBJECT, CORNER_OBJECT, CROWD],
                                [SMALL_OBJECT]])
  preds = synthetic_predictions(cfg, 2)
  targets = jax.jit(match, static_argnames='cfg')(
      make_priors(cfg), batch['boxes'], batch['labels'], batch['is_crowd'], batch['valid'],
      cfg=cfg.loss)
  positive = np.asarray(targets.conf_t > 0)
  num_pos = positive.sum(1)
  assert num_pos[0] > cap and num_pos[1] <= cap, num_pos  # the cases this test is about
  all_priors = per_prior_mask_losses(preds, targets, batch['masks_proto'], cfg)
  mask_loss = jax.jit(L.mask_loss, static_argnames='cfg')

  rng = jax.random.key(3)
  _, per_image, _ = mask_loss(preds['proto'], preds['coefs'], batch['masks_proto'], targets, cfg,
                           rng)
  select = jax.jit(L.select_mask_slots, static_argnums=1)
  prior_idx, slot_valid, scale = map(np.asarray, select(positive, cap, rng))
  # Image 0: `cap` distinct positives, loss = old/new x their sum.
  assert slot_valid[0].all() and positive[0, prior_idx[0]].all()
  assert len(set(prior_idx[0].tolist())) == cap
  assert scale[0] == pytest.approx(num_pos[0] / cap)
  assert float(per_image[0]) == pytest.approx(
      num_pos[0] / cap * all_priors[0, prior_idx[0]].sum(), rel=1e-5)
  # Image 1 (positives <= cap): exactly the unsubsampled sum, random key or not.
  unsubsampled = all_priors[1, positive[1]].sum()
  assert scale[1] == 1.0
  assert float(per_image[1]) == pytest.approx(unsubsampled, rel=1e-5)
  _, per_image_no_rng, _ = mask_loss(preds['proto'], preds['coefs'], batch['masks_proto'], targets,
                                  cfg, None)
  assert float(per_image_no_rng[1]) == pytest.approx(unsubsampled, rel=1e-5)

  # A high enough cap makes image 0 unsubsampled too.
  roomy = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, masks_to_train=1000))
  _, per_image_roomy, _ = mask_loss(preds['proto'], preds['coefs'], batch['masks_proto'], targets,
                                 roomy, rng)
  np.testing.assert_allclose(np.asarray(per_image_roomy), all_priors.sum(1, where=positive),
                             rtol=1e-5)

  # Different keys draw different subsets, and every positive gets drawn by some key.
  drawn = jax.jit(jax.vmap(lambda key: L.select_mask_slots(positive, cap, key)[0]))(
      jax.random.split(jax.random.key(4), 40))
  drawn = np.asarray(drawn)[:, 0]
  assert len({tuple(sorted(d)) for d in drawn}) >= math.comb(num_pos[0], cap) // 2
  assert set(drawn.ravel().tolist()) == set(np.flatnonzero(positive[0]).tolist())


# --------------------------------------------------------------------------------------------
# Images without ground truth, finiteness and gradients
# --------------------------------------------------------------------------------------------

GRAD_CASES = {
    'one_image_without_gt': ([[BIG_OBJECT, SMALL_OBJECT, CROWD], []], 1.0),
    'batch_without_gt': ([[], []], 1.0),
    'crowd_only_and_saturated_masks': ([[CROWD], [SMALL_OBJECT]], 50.0),
}


@pytest.mark.parametrize('name', list(GRAD_CASES))
def test_loss_and_gradients_finite(name):
  images, proto_scale = GRAD_CASES[name]
  batch = synthetic_batch(TINY, images)
  preds = synthetic_predictions(TINY, len(images), seed=1, proto_scale=proto_scale)
  priors = make_priors(TINY)

  def total(p):
    return L.yolact_loss(p, priors, batch, TINY, jax.random.key(0))

  (value, terms), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(preds)
  assert np.isfinite(float(value))
  for key, term in terms.items():
    assert np.isfinite(float(term)), key
  for key, grad in grads.items():
    assert np.all(np.isfinite(np.asarray(grad))), key
  if name == 'batch_without_gt':
    assert int(terms['num_pos']) == 0 and int(terms['num_neg']) == 0
    for key in 'BCM':
      assert float(terms[key]) == 0.0
      assert not np.any(np.asarray(grads[{'B': 'loc', 'C': 'conf', 'M': 'coefs'}[key]]))
    assert float(terms['S']) > 0 and float(value) == pytest.approx(float(terms['S']))
  else:
    assert int(terms['num_pos']) > 0 and float(terms['M']) > 0
    assert np.any(np.asarray(grads['coefs'])) and np.any(np.asarray(grads['proto']))


# --------------------------------------------------------------------------------------------
# End to end: our network on the original's weights and input, then our loss
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reference_losses_through_our_network():
  """weights.pth + input.npy -> Flax YOLACT (train mode, BN on running stats as the reference
  run's freeze_bn) -> loss: each term within 1e-3 relative of the original (measured ~4e-6)."""
  from yolact_jax.checkpoint.convert import load_pth_weights
  from yolact_jax.model.yolact import Yolact

  cfg = get_config('yolact_resnet50')
  variables = load_pth_weights(require_reference('yolact_resnet50', 'weights.pth'), cfg)
  images = np.load(require_reference('yolact_resnet50', 'input.npy'))
  images = np.transpose(images, (0, 2, 3, 1))  # NCHW -> NHWC
  model = Yolact(cfg.model, num_classes=cfg.num_classes, freeze_bn=True)
  preds = jax.jit(lambda v, x: model.apply(v, x, train=True))(variables, images)
  total, terms = yolact_loss_jit(preds, make_priors(cfg), reference_batch(), cfg=cfg)
  ref = reference_losses()
  for term in 'BCMS':
    assert float(terms[term]) == pytest.approx(ref[term], rel=1e-3), term
  assert float(total) == pytest.approx(ref['total'], rel=1e-3)

