"""Tests of yolact_jax.detect: reference parity and hand-made cases against plain-Python rules."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.reference_data import load_npz
from yolact_jax import detect as det
from yolact_jax.boxes import decode
from yolact_jax.config import get_config


# ---------------------------------------------------------------------------------------------
# Plain-Python reference of the original's Detect (dynamic shapes, loops, float32 scalars)


def iou_plain(a, b):
  """IoU of two point-form float32 boxes, as the original's jaccard."""
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), np.float32(0))
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), np.float32(0))
  inter = iw * ih
  area_a = (a[2] - a[0]) * (a[3] - a[1])
  area_b = (b[2] - b[0]) * (b[3] - b[1])
  return inter / (area_a + area_b - inter)


def iou_plus_one(a, b):
  """IoU with the +1-pixel convention of the original's Cython NMS (float32 scalars)."""
  one = np.float32(1)
  iw = max(np.float32(0), min(a[2], b[2]) - max(a[0], b[0]) + one)
  ih = max(np.float32(0), min(a[3], b[3]) - max(a[1], b[1]) + one)
  inter = iw * ih
  area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one)
  area_b = (b[2] - b[0] + one) * (b[3] - b[1] + one)
  return inter / (area_a + area_b - inter)


def fast_nms_plain(boxes, iou_thresh):
  """Indices kept by the original Fast NMS rule on a score-ranked list of boxes."""
  keep = []
  for j in range(len(boxes)):
    iou_max = max((iou_plain(boxes[i], boxes[j]) for i in range(j)), default=0.0)
    if iou_max <= iou_thresh:
      keep.append(j)
  return keep


def greedy_nms_plain(boxes, iou_thresh):
  """Indices kept by the original's Cython greedy NMS on a score-ranked list of pixel boxes."""
  suppressed = [False] * len(boxes)
  keep = []
  for i in range(len(boxes)):
    if suppressed[i]:
      continue
    keep.append(i)
    for j in range(i + 1, len(boxes)):
      if not suppressed[j] and iou_plus_one(boxes[i], boxes[j]) >= iou_thresh:
        suppressed[j] = True
  return keep


def reference_detect(boxes, conf, coefs, *, nms='fast', top_k=200, conf_thresh=0.05,
                     iou_thresh=0.5, max_detections=100, box_scale=550.0, standard_top_k=None):
  """The original Detect for one image, on decoded boxes [P,4], probabilities [P,C+1].

  ``standard_top_k`` None is the original traditional NMS (no per-class limit); an int applies
  this port's documented per-class candidate limit.
  """
  fg = conf[:, 1:].T  # [C, P]
  priors = np.flatnonzero(fg.max(axis=0) > conf_thresh)
  entries = []  # (score, class, box, prior) in class-major, then rank order
  if nms == 'cross_class':
    best = fg[:, priors].max(axis=0)
    best_class = fg[:, priors].argmax(axis=0)
    order = np.argsort(-best, kind='stable')[:top_k]
    for j in fast_nms_plain(boxes[priors[order]], iou_thresh):
      entries.append((best[order[j]], best_class[order[j]], boxes[priors[order[j]]],
                      priors[order[j]]))
  else:
    for c in range(fg.shape[0]):
      if nms == 'fast':
        order = priors[np.argsort(-fg[c, priors], kind='stable')[:top_k]]
        kept = fast_nms_plain(boxes[order], iou_thresh)
        box_of = lambda p: boxes[p]
      else:
        above = priors[fg[c, priors] > conf_thresh]
        order = above[np.argsort(-fg[c, above], kind='stable')[:standard_top_k]]
        pixels = boxes * np.float32(box_scale)
        kept = greedy_nms_plain(pixels[order], iou_thresh)
        box_of = lambda p: pixels[p] / np.float32(box_scale)
      entries += [(fg[c, order[j]], c, box_of(order[j]), order[j]) for j in kept]
  ranking = sorted(range(len(entries)), key=lambda i: -entries[i][0])[:max_detections]
  n = len(ranking)
  return {
      'scores': np.array([entries[i][0] for i in ranking], np.float32).reshape(n),
      'classes': np.array([entries[i][1] for i in ranking], np.int64).reshape(n),
      'boxes': np.array([entries[i][2] for i in ranking], np.float32).reshape(n, 4),
      'coefs': coefs[[entries[i][3] for i in ranking]].reshape(n, coefs.shape[-1]),
  }


def random_head_outputs(seed, batch=2, num_priors=400, num_classes=6, k=4, bg_bias=3.0):
  """Heavily overlapping random boxes and scores where part of the priors pass the filter."""
  rng = np.random.default_rng(seed)
  priors = np.concatenate([rng.uniform(0.3, 0.7, (num_priors, 2)),
                           rng.uniform(0.1, 0.4, (num_priors, 2))], -1).astype(np.float32)
  loc = (rng.normal(size=(batch, num_priors, 4)) * 0.5).astype(np.float32)
  logits = rng.normal(size=(batch, num_priors, num_classes + 1)) * 2
  logits[..., 0] += bg_bias
  conf = np.array(jax.nn.softmax(jnp.asarray(logits, jnp.float32), axis=-1))
  coefs = rng.uniform(-1, 1, (batch, num_priors, k)).astype(np.float32)
  return loc, conf, coefs, priors


def run_detect(loc, conf, coefs, priors, **kwargs):
  fn = jax.jit(functools.partial(det.detect, priors=priors, **kwargs))
  return jax.tree.map(np.asarray, fn(loc, conf, coefs))


def assert_same_as_reference(ours, loc, conf, coefs, priors, **kwargs):
  boxes = np.asarray(decode(jnp.asarray(loc), jnp.asarray(priors)))
  d = ours['valid'].shape[1]
  for b in range(loc.shape[0]):
    ref = reference_detect(boxes[b], conf[b], coefs[b], **kwargs)
    n = len(ref['scores'])
    assert ours['num_detections'][b] == n
    assert ours['valid'][b].tolist() == [True] * n + [False] * (d - n)
    np.testing.assert_array_equal(ours['classes'][b, :n], ref['classes'])
    np.testing.assert_array_equal(ours['scores'][b, :n], ref['scores'])
    np.testing.assert_allclose(ours['boxes'][b, :n], ref['boxes'], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ours['coefs'][b, :n], ref['coefs'])
    for key in ('boxes', 'classes', 'scores', 'coefs'):
      assert not np.any(ours[key][b, n:]), f'invalid slots of {key} must be zero'


# ---------------------------------------------------------------------------------------------
# Hand-made cases


@pytest.mark.parametrize('top_k', [50, 400])  # fewer / more than the priors passing the filter
@pytest.mark.parametrize('nms', ['fast', 'cross_class'])
def test_fast_nms_matches_plain_python_rule(nms, top_k):
  loc, conf, coefs, priors = random_head_outputs(seed=0)
  kwargs = dict(nms=nms, top_k=top_k, conf_thresh=0.05, iou_thresh=0.5, max_detections=60)
  ours = run_detect(loc, conf, coefs, priors, **kwargs)
  assert ours['num_detections'].min() > 0
  assert_same_as_reference(ours, loc, conf, coefs, priors, **kwargs)


def test_standard_nms_matches_plain_greedy_nms():
  loc, conf, coefs, priors = random_head_outputs(seed=1)
  kwargs = dict(nms='standard', conf_thresh=0.05, iou_thresh=0.5, max_detections=60,
                box_scale=550.0)
  # top_k >= P: the original's traditional NMS exactly (no per-class limit).
  ours = run_detect(loc, conf, coefs, priors, top_k=400, **kwargs)
  assert_same_as_reference(ours, loc, conf, coefs, priors, **kwargs)
  # top_k < P: the documented per-class candidate limit.
  ours = run_detect(loc, conf, coefs, priors, top_k=30, **kwargs)
  assert_same_as_reference(ours, loc, conf, coefs, priors, standard_top_k=30, **kwargs)


def test_greedy_nms_keep_plus_one_pixel_rule():
  # Two 10x10 pixel boxes shifted by 5: +1 convention IoU = 66/(121+121-66) = 0.375; identical
  # boxes: IoU 1 >= thresh. The third box is suppressed only by the second.
  boxes = jnp.array([[[0, 0, 10, 10], [5, 0, 15, 10], [5, 0, 15, 10]]], jnp.float32)
  valid = jnp.array([[True, True, True]])
  keep = det.greedy_nms_keep(boxes, valid, 0.375)
  assert keep.tolist() == [[True, False, False]]  # 0.375 >= 0.375 suppresses
  keep = det.greedy_nms_keep(boxes, valid, 0.4)
  assert keep.tolist() == [[True, True, False]]


def test_fast_nms_suppressed_boxes_still_suppress():
  # a > b > c in score; IoU(a,b) and IoU(b,c) are high, IoU(a,c) is 0. Greedy NMS keeps a and c,
  # Fast NMS keeps only a (b suppresses c although b itself is suppressed).
  boxes = jnp.array([[0.0, 0, 0.2, 1], [0.1, 0, 0.3, 1], [0.2, 0, 0.4, 1]])
  valid = jnp.ones(3, bool)
  assert det.fast_nms_keep(boxes, valid, 0.3).tolist() == [True, False, False]
  assert det.greedy_nms_keep(boxes * 550, valid, 0.3).tolist() == [True, False, True]


def test_invalid_candidates_never_kept_and_never_suppress():
  boxes = jnp.array([[0.0, 0, 0.2, 1], [0.0, 0, 0.2, 1], [0.5, 0, 0.7, 1]])
  valid = jnp.array([False, True, False])
  assert det.fast_nms_keep(boxes, valid, 0.5).tolist() == [False, True, False]
  assert det.greedy_nms_keep(boxes * 550, valid, 0.5).tolist() == [False, True, False]


@pytest.mark.parametrize('nms', det.NMS_KINDS)
def test_filtered_prior_does_not_enter_class_lists(nms):
  # Prior 0 passes the filter through class 1 (0.9); prior 1 does not pass (best fg 0.04) but has
  # a higher class-2 score than prior 0 and the same box. The original drops prior 1 entirely,
  # so class 2 keeps prior 0 with its (sub-threshold) score 0.01 under Fast NMS.
  priors = np.array([[0.5, 0.5, 0.2, 0.2]] * 2, np.float32)
  conf = np.array([[[0.09, 0.9, 0.01], [0.92, 0.04, 0.04]]], np.float32)
  loc = np.zeros((1, 2, 4), np.float32)
  coefs = np.array([[[1.0], [2.0]]], np.float32)
  out = run_detect(loc, conf, coefs, priors, nms=nms, max_detections=5)
  n = out['num_detections'][0]
  expected = {'fast': [(0, 0.9), (1, 0.01)], 'cross_class': [(0, 0.9)], 'standard': [(0, 0.9)]}
  assert out['classes'][0, :n].tolist() == [c for c, _ in expected[nms]]
  assert out['scores'][0, :n].tolist() == pytest.approx([s for _, s in expected[nms]])
  assert np.all(out['coefs'][0, :n] == 1.0)


@pytest.mark.parametrize('nms', det.NMS_KINDS)
def test_no_prior_above_threshold_gives_no_detections(nms):
  loc, conf, coefs, priors = random_head_outputs(seed=2, batch=2, bg_bias=0.0)
  conf[1] = 0.0
  conf[1, :, 0] = 1.0  # image 1: background everywhere
  conf[1, :7, 1] = 0.05  # exactly at the threshold: not above it
  out = run_detect(loc, conf, coefs, priors, nms=nms, max_detections=10)
  assert out['num_detections'][1] == 0 and not out['valid'][1].any()
  for key in ('boxes', 'classes', 'scores', 'coefs'):
    assert not np.any(out[key][1])
  assert out['num_detections'][0] == 10  # the other image is unaffected


def test_fewer_candidates_than_max_detections_pads():
  loc, conf, coefs, priors = random_head_outputs(seed=3, num_priors=12, num_classes=2)
  out = run_detect(loc, conf, coefs, priors, nms='fast', top_k=200, max_detections=100)
  assert out['scores'].shape == (2, 100) and out['coefs'].shape == (2, 100, 4)
  assert_same_as_reference(out, loc, conf, coefs, priors, nms='fast', max_detections=100)


def test_detect_is_traceable_and_free_of_host_transfers():
  loc, conf, coefs, priors = random_head_outputs(seed=4)
  for nms in det.NMS_KINDS:
    fn = jax.jit(functools.partial(det.detect_from_logits, priors=priors, nms=nms, top_k=50,
                                   max_detections=20))
    jaxpr = jax.make_jaxpr(fn)(loc, np.log(conf), coefs)
    assert 'callback' not in str(jaxpr)
    args = jax.device_put((loc, np.log(conf), coefs))
    with jax.transfer_guard('disallow'):
      out = fn(*args)
      jax.block_until_ready(out)


def test_detect_kwargs_from_config():
  cfg = get_config('yolact_resnet50')
  assert det.detect_kwargs(cfg) == dict(nms='fast', top_k=200, conf_thresh=0.05, iou_thresh=0.5,
                                        max_detections=100, box_scale=550.0)


# ---------------------------------------------------------------------------------------------
# Reference parity: the original's Detect on its own head outputs


def pairwise_iou(a, b):
  """IoU matrix [A, B] of point-form boxes (numpy)."""
  wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:])
               - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
  inter = wh[..., 0] * wh[..., 1]
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
  return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def match_detections(ref_boxes, ref_classes, ours_boxes, ours_classes, min_iou):
  """Greedy one-to-one matching by class and box IoU > ``min_iou``: list of (ref, ours) pairs."""
  iou = pairwise_iou(ref_boxes, ours_boxes)
  pairs, used = [], set()
  for i in range(len(ref_boxes)):
    for j in np.argsort(-iou[i], kind='stable'):
      if j not in used and ours_classes[j] == ref_classes[i] and iou[i, j] > min_iou:
        pairs.append((i, int(j)))
        used.add(int(j))
        break
  return pairs


def test_detect_reference_parity():
  raw = load_npz('yolact_resnet50', 'raw.npz')
  ref = load_npz('yolact_resnet50', 'dets.npz')
  kwargs = det.detect_kwargs(get_config('yolact_resnet50'))
  fn = jax.jit(functools.partial(det.detect_from_logits, priors=raw['priors'], **kwargs))
  out = jax.tree.map(np.asarray, fn(raw['loc'], raw['conf_logits'], raw['mask']))
  for b in range(2):
    n = int(out['num_detections'][b])
    ref_scores = ref[f'detect_score_{b}']
    assert n == len(ref_scores)
    pairs = match_detections(ref[f'detect_box_{b}'], ref[f'detect_class_{b}'],
                             out['boxes'][b, :n], out['classes'][b, :n], min_iou=0.99)
    cut = ref_scores[-1]
    unmatched_ref = sorted(set(range(len(ref_scores))) - {i for i, _ in pairs})
    unmatched_ours = sorted(set(range(n)) - {j for _, j in pairs})
    assert len(unmatched_ref) <= 1, f'image {b}: unmatched reference detections {unmatched_ref}'
    for i in unmatched_ref:
      assert abs(ref_scores[i] - cut) < 1e-5, f'image {b}: reference detection {i} unmatched'
    for j in unmatched_ours:
      assert abs(out['scores'][b, j] - cut) < 1e-5, f'image {b}: extra detection {j}'
    ri, oi = (np.array(x) for x in zip(*pairs))
    np.testing.assert_allclose(out['scores'][b, oi], ref_scores[ri], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out['boxes'][b, oi], ref[f'detect_box_{b}'][ri], rtol=0,
                               atol=1e-5)
    np.testing.assert_allclose(out['coefs'][b, oi], ref[f'detect_coef_{b}'][ri], rtol=0,
                               atol=1e-6)
