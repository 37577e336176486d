"""Tests of yolact_jax.predict: preprocessing parity, image handling, compile-once batching,
empty results, and the end-to-end reference run through the public API.

Every model here is yolact_tiny (64 px) except the one 550 px reference test (compiled once per
module in a fixture).
"""

from __future__ import annotations


import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.reference_data import RESNET50_DIR, load_npz, require_reference
from tests.test_detect import match_detections, pairwise_iou
from yolact_jax import normalise
from yolact_jax import predict as pr
from yolact_jax.checkpoint.io import save_weights
from yolact_jax.config import get_config
from yolact_jax.model.yolact import Yolact

MEAN_BGR = np.array(normalise.MEANS_BGR, np.float32)
STD_BGR = np.array(normalise.STD_BGR, np.float32)


def random_image(seed, h, w, channels=3):
  shape = (h, w) if channels is None else (h, w, channels)
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def tiny_config(*overrides):
  return get_config('yolact_tiny', list(overrides))


@pytest.fixture(scope='module')
def tiny_variables():
  cfg = tiny_config()
  x = np.zeros((1, cfg.max_size, cfg.max_size, 3), np.float32)
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  return jax.device_get(jax.jit(model.init)(jax.random.key(0), x))


# ---------------------------------------------------------------------------------------------
# Preprocessing = the original's eval transform


def torch_fast_base_transform(bgr, size, transform):
  """The original's FastBaseTransform on one BGR uint8 image -> NHWC [size, size, 3] (RGB)."""
  x = torch.from_numpy(bgr.astype(np.float32))[None].permute(0, 3, 1, 2).contiguous()
  x = F.interpolate(x, (size, size), mode='bilinear', align_corners=False)
  if transform == 'resnet':
    x = (x - torch.from_numpy(MEAN_BGR)[None, :, None, None]) / torch.from_numpy(STD_BGR)[
        None, :, None, None]
  else:
    x = x / 255
  return x[:, (2, 1, 0)].permute(0, 2, 3, 1)[0].numpy()


def cv2_base_transform(bgr, size, transform):
  """The original's BaseTransform (cv2.resize INTER_LINEAR) -> [size, size, 3] RGB."""
  x = cv2.resize(bgr.astype(np.float32), (size, size))
  x = (x - MEAN_BGR) / STD_BGR if transform == 'resnet' else x / 255
  return x[..., ::-1]


def run_preprocess(bgr_images, size, transform):
  rgb = [pr.as_rgb_uint8(image, 'bgr') for image in bgr_images]
  canvas_hw = (max(i.shape[0] for i in rgb), max(i.shape[1] for i in rgb) + 3)
  canvas, sizes = pr.pack_canvas(rgb, canvas_hw, len(rgb) + 1)
  fn = jax.jit(pr.preprocess, static_argnums=(2, 3))
  return np.asarray(fn(canvas, sizes, size, transform))


@pytest.mark.parametrize('transform', ['resnet', 'darknet'])
@pytest.mark.parametrize('size,hw_list', [
    (64, [(37, 53), (80, 61), (64, 64)]),  # up, down/up, identity
    (550, [(700, 300), (480, 640), (23, 1000)]),  # downsampling in one or both axes
])
def test_preprocess_matches_original_eval_transforms(size, hw_list, transform):
  images = [random_image(i, h, w) for i, (h, w) in enumerate(hw_list)]
  ours = run_preprocess(images, size, transform)
  scale = 1 / STD_BGR.min() if transform == 'resnet' else 1 / 255
  for i, image in enumerate(images):
    np.testing.assert_allclose(ours[i], torch_fast_base_transform(image, size, transform),
                               rtol=0, atol=1e-4)
    # cv2's fixed-point bilinear weights (11 bits) differ from exact ones by up to ~0.013 on
    # the 0..255 scale; 0.015 leaves room for rounding
    np.testing.assert_allclose(ours[i], cv2_base_transform(image, size, transform), rtol=0,
                               atol=0.015 * scale)


def test_bilinear_taps_never_read_canvas_padding():
  from yolact_jax.postprocess import bilinear_taps
  for in_size in (1, 2, 37, 550, 700):
    lo, hi, t = (np.asarray(a) for a in bilinear_taps(jnp.int32(in_size), 64, 64))
    assert lo.min() >= 0 and hi.max() <= in_size - 1
    assert np.all((t >= 0) & (t <= 1))


# ---------------------------------------------------------------------------------------------
# Image handling on the host


def test_as_rgb_uint8_conversions():
  rgb = random_image(0, 5, 7)
  np.testing.assert_array_equal(pr.as_rgb_uint8(rgb, 'rgb'), rgb)
  np.testing.assert_array_equal(pr.as_rgb_uint8(rgb[..., ::-1], 'bgr'), rgb)
  gray = random_image(1, 5, 7, channels=None)
  expected = np.repeat(gray[..., None], 3, -1)  # what cv2.imread in colour mode gives
  np.testing.assert_array_equal(pr.as_rgb_uint8(gray, 'rgb'), expected)
  np.testing.assert_array_equal(pr.as_rgb_uint8(gray[..., None], 'bgr'), expected)
  np.testing.assert_array_equal(pr.as_rgb_uint8(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 'bgr'),
                                expected)
  rgba = random_image(2, 5, 7, channels=4)
  np.testing.assert_array_equal(pr.as_rgb_uint8(rgba, 'rgb'), rgba[..., :3])  # alpha dropped
  bgra = np.concatenate([rgb[..., ::-1], rgba[..., 3:]], -1)
  np.testing.assert_array_equal(pr.as_rgb_uint8(bgra, 'bgr'), rgb)


@pytest.mark.parametrize('image,error,message', [
    (np.zeros((5, 7, 3), np.float32), TypeError, 'uint8'),
    (np.zeros((5, 7, 3), np.int64), TypeError, 'uint8'),
    (np.zeros((5, 7, 2), np.uint8), ValueError, 'shape'),
    (np.zeros((2, 5, 7, 3), np.uint8), ValueError, 'shape'),
    (np.zeros(5, np.uint8), ValueError, 'shape'),
    (np.zeros((0, 7, 3), np.uint8), ValueError, 'empty'),
])
def test_bad_images_are_clear_errors(image, error, message):
  with pytest.raises(error, match=message):
    pr.as_rgb_uint8(image, 'rgb', 'image 3')


def test_channel_order_is_required_and_checked(tiny_variables):
  predictor = pr.Predictor(tiny_config(), tiny_variables, max_batch=1)
  image = random_image(0, 20, 20)
  with pytest.raises(TypeError, match='channel_order'):
    predictor([image])  # pylint: disable=missing-kwoa
  with pytest.raises(ValueError, match="'rgb' or 'bgr'"):
    predictor([image], channel_order='RGBA')
  with pytest.raises(TypeError, match='single image'):
    predictor(image, channel_order='rgb')
  with pytest.raises(TypeError, match='image 1: expected a uint8'):
    predictor([image, image.astype(np.float32)], channel_order='rgb')


def test_pack_canvas_layout():
  images = [random_image(0, 3, 5), random_image(1, 6, 2)]
  canvas, sizes = pr.pack_canvas(images, (8, 8), 3)
  assert canvas.shape == (3, 8, 8, 3) and canvas.dtype == np.uint8
  assert sizes.tolist() == [[3, 5], [6, 2], [1, 1]]
  np.testing.assert_array_equal(canvas[0, :3, :5], images[0])
  assert not canvas[0, 3:].any() and not canvas[0, :, 5:].any() and not canvas[2].any()
  with pytest.raises(ValueError, match='does not fit the canvas'):
    pr.pack_canvas([random_image(0, 9, 2)], (8, 8), 1)


# ---------------------------------------------------------------------------------------------
# The compiled program on the tiny model


def assert_same_detections(a, b):
  assert len(a) == len(b) and a.image_size == b.image_size
  np.testing.assert_array_equal(a.classes, b.classes)
  np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(a.boxes, b.boxes)
  np.testing.assert_array_equal(a.masks, b.masks)


def test_mixed_size_batch_compiles_once_and_equals_single_images(tiny_variables, monkeypatch):
  # A program of its own, so that this test counts all its traces (the process-wide one of a
  # config may have been traced by another test in this process).
  monkeypatch.setattr(pr, 'inference_program', pr.InferenceProgram)
  cfg = tiny_config('detect.nms_conf_thresh=0.01')
  predictor = pr.Predictor(cfg, tiny_variables, max_batch=3, canvas_hw=(96, 96))
  assert predictor.program.trace_count == 0
  images = [random_image(0, 37, 53), random_image(1, 80, 61, channels=None),
            random_image(2, 64, 96, channels=4)]
  batch = predictor(images, channel_order='rgb')
  assert predictor.program.trace_count == 1
  singles = [predictor([image], channel_order='rgb')[0] for image in images]
  more = predictor([random_image(3, 11, 17), random_image(4, 96, 5)], channel_order='bgr')
  assert predictor.program.trace_count == 1  # other sizes, partial batch: no recompilation
  for result, single, image in zip(batch, singles, images):
    assert len(result) == cfg.detect.max_num_detections  # a random model detects plenty
    assert result.image_size == image.shape[:2]
    assert result.masks.shape == (len(result),) + image.shape[:2]
    assert result.masks.dtype == np.uint8 and result.masks.max() <= 1
    assert result.boxes.dtype == np.int64 and result.boxes.shape == (len(result), 4)
    assert result.classes.dtype == np.int64 and result.scores.dtype == np.float32
    assert np.all(np.diff(result.scores) <= 0)
    assert result.class_names == tuple(cfg.dataset.class_names[c] for c in result.classes)
    assert_same_detections(result, single)
  assert [m.image_size for m in more] == [(11, 17), (96, 5)]


def test_growing_canvas_recompiles_only_when_it_grows(tiny_variables, monkeypatch):
  # A program of its own: the process-wide one of this config may have been traced by an earlier
  # test in this process (other files share the worker when the suite runs in parallel).
  monkeypatch.setattr(pr, 'inference_program', pr.InferenceProgram)
  cfg = tiny_config('detect.nms_conf_thresh=0.02')
  predictor = pr.Predictor(cfg, tiny_variables, max_batch=2)
  predictor([random_image(0, 40, 50)], channel_order='rgb')
  assert predictor.canvas_hw == (128, 128) and predictor.program.trace_count == 1
  predictor([random_image(1, 128, 7), random_image(2, 3, 100)], channel_order='rgb')
  assert predictor.program.trace_count == 1
  result = predictor([random_image(3, 130, 20)], channel_order='rgb')
  assert predictor.canvas_hw == (256, 128) and predictor.program.trace_count == 2
  assert result[0].masks.shape[1:] == (130, 20)
  fixed = pr.Predictor(cfg, tiny_variables, max_batch=2, canvas_hw=(64, 64))
  with pytest.raises(ValueError, match='does not fit the canvas'):
    fixed([random_image(0, 65, 10)], channel_order='rgb')


def test_no_detection_gives_empty_results(tiny_variables):
  cfg = tiny_config('detect.nms_conf_thresh=1.0')  # no score is > 1
  images = [random_image(0, 30, 40), random_image(1, 25, 20, channels=None)]
  results = pr.predict(images, cfg, tiny_variables, channel_order='rgb')
  for result, image in zip(results, images):
    assert len(result) == 0 and result.class_names == ()
    assert result.boxes.shape == (0, 4) and result.boxes.dtype == np.int64
    assert result.classes.shape == (0,) and result.scores.shape == (0,)
    assert result.masks.shape == (0,) + image.shape[:2] and result.masks.dtype == np.uint8


def test_display_filters_and_weights_from_a_directory(tiny_variables, tmp_path):
  cfg = tiny_config('detect.nms_conf_thresh=0.0')
  save_weights(tmp_path / 'w', tiny_variables, cfg)
  images = [random_image(0, 30, 40)]
  every = pr.predict(images, cfg, tmp_path / 'w', channel_order='rgb')[0]
  assert len(every) == cfg.detect.max_num_detections
  cut = float(every.scores[4])
  top = pr.predict(images, cfg, tiny_variables, channel_order='rgb', score_threshold=cut,
                   top_k=2)[0]
  assert len(top) == 2
  assert_same_detections(top, every.select(top_k=2))
  assert len(every.select(score_threshold=cut)) == int(np.sum(every.scores > cut))
  assert_same_detections(every.select(score_threshold=cut, top_k=2), top)
  with pytest.raises(TypeError, match='variables'):
    pr.Predictor(cfg, [1, 2])


def test_nms_override(tiny_variables):
  predictor = pr.Predictor(tiny_config(), tiny_variables, max_batch=1, nms='cross_class')
  assert predictor.cfg.detect.nms == 'cross_class'
  with pytest.raises(ValueError, match='detect.nms'):
    pr.Predictor(tiny_config(), tiny_variables, nms='greedy')


def test_program_has_no_host_round_trips(tiny_variables):
  program = pr.inference_program(tiny_config())
  canvas, sizes = pr.pack_canvas([random_image(0, 30, 40), random_image(1, 64, 8)], (64, 64), 2)
  jaxpr = jax.make_jaxpr(program.from_images)(tiny_variables, canvas, sizes)
  assert 'callback' not in str(jaxpr)
  args = jax.device_put((tiny_variables, canvas, sizes))
  with jax.transfer_guard('disallow'):
    jax.block_until_ready(program.from_images(*args))


# ---------------------------------------------------------------------------------------------
# End to end on the reference: weights.pth + network input -> detections, via the public API


@pytest.fixture(scope='module')
def reference_predictions():
  require_reference('yolact_resnet50', 'weights.pth')
  ref = load_npz('yolact_resnet50', 'dets.npz')
  sizes = np.stack([ref['orig_hw_0'], ref['orig_hw_1']])
  net_input = np.load(RESNET50_DIR / 'input.npy').transpose(0, 2, 3, 1)  # NCHW -> NHWC
  predictor = pr.Predictor(get_config('yolact_resnet50'), RESNET50_DIR / 'weights.pth',
                           max_batch=2)
  return predictor.predict_network_input(net_input, sizes), ref


def reference_candidates(b):
  """The original's per-class Fast NMS candidate lists of image b, from its own head outputs:
  boxes [C, K, 4] relative and scores [C, K], ranked by score (K = 200)."""
  from yolact_jax.boxes import decode
  raw = load_npz('yolact_resnet50', 'raw.npz')
  boxes = np.asarray(decode(jnp.asarray(raw['loc'][b]), jnp.asarray(raw['priors'])))  # [P, 4]
  fg = np.asarray(jax.nn.softmax(jnp.asarray(raw['conf_logits'][b]), axis=-1))[:, 1:]  # [P, C]
  keep = fg.max(axis=-1) > 0.05
  boxes, fg = boxes[keep], fg[keep].T
  order = np.argsort(-fg, axis=1, kind='stable')[:, :200]
  return boxes[order], np.take_along_axis(fg, order, axis=1)


def nms_max_iou(box_px, cls, score, candidates, image_hw):
  """Max IoU of the reference candidate that is this detection (same class, integer pixel box
  within 1 px, score within 1e-3) with the candidates ranked above it; None if none is."""
  boxes, scores = candidates
  h, w = image_hw
  scale = np.array([w, h, w, h], np.float32)
  px = np.concatenate([np.minimum(boxes[cls, :, :2], boxes[cls, :, 2:]),
                       np.maximum(boxes[cls, :, :2], boxes[cls, :, 2:])], -1) * scale
  px = np.clip(px, 0, scale).astype(np.int64)  # the postprocess rule (truncation)
  same = np.flatnonzero((np.abs(px - np.asarray(box_px)).max(-1) <= 1)
                        & (np.abs(scores[cls] - score) < 1e-3))
  if not len(same):
    return None
  j = same[0]
  return 0.0 if j == 0 else float(pairwise_iou(boxes[cls, j][None], boxes[cls, :j])[0].max())


@pytest.mark.slow
def test_end_to_end_reference_parity(reference_predictions):
  results, ref = reference_predictions
  for b, result in enumerate(results):
    h, w = (int(v) for v in ref[f'orig_hw_{b}'])
    assert result.image_size == (h, w) and result.masks.shape[1:] == (h, w)
    ref_boxes, ref_classes, ref_scores = ref[f'boxes_{b}'], ref[f'classes_{b}'], ref[f'scores_{b}']
    pairs = match_detections(ref_boxes.astype(np.float32), ref_classes,
                             result.boxes.astype(np.float32), result.classes, min_iou=0.98)
    assert len(pairs) >= 0.98 * len(ref_scores), f'image {b}: {len(pairs)} matched'
    cut = ref_scores[-1]
    candidates = None
    unmatched = ([(ref_boxes[i], ref_classes[i], ref_scores[i])
                  for i in sorted(set(range(len(ref_scores))) - {i for i, _ in pairs})]
                 + [(result.boxes[j], result.classes[j], result.scores[j])
                    for j in sorted(set(range(len(result))) - {j for _, j in pairs})])
    for box, cls, score in unmatched:  # float noise at the score cut or at an NMS IoU tie only
      if abs(score - cut) < 1e-3:
        continue
      candidates = candidates or reference_candidates(b)
      max_iou = nms_max_iou(box, cls, score, candidates, (h, w))
      assert max_iou is not None and abs(max_iou - 0.5) < 1e-3, (
          f'image {b}: unmatched detection class {cls} score {score} box {box}')
    ri, oi = (np.array(x) for x in zip(*pairs))
    np.testing.assert_allclose(result.scores[oi], ref_scores[ri], rtol=0, atol=1e-3)
    assert np.abs(result.boxes[oi] - ref_boxes[ri]).max() <= 1
    assert result.class_names[oi[0]] == get_config('yolact_resnet50').dataset.class_names[
        ref_classes[ri[0]]]
    ours, theirs = result.masks[oi].astype(bool), ref[f'masks_{b}'][ri].astype(bool)
    union = (ours | theirs).sum((1, 2))
    iou = np.where(union > 0, (ours & theirs).sum((1, 2)) / np.maximum(union, 1), 1.0)
    assert iou.min() > 0.99, f'image {b}: worst mask IoU {iou.min()}'
    assert (union > 0).sum() > 50  # the comparison is not vacuous


def test_nms_tie_helper_on_reference_detections():
  """The tie helper finds the reference's own detections, each kept with max IoU <= 0.5."""
  ref = load_npz('yolact_resnet50', 'dets.npz')
  candidates = reference_candidates(1)
  hw = tuple(int(v) for v in ref['orig_hw_1'])
  for i in range(0, 100, 7):
    max_iou = nms_max_iou(ref['boxes_1'][i], ref['classes_1'][i], ref['scores_1'][i], candidates,
                          hw)
    assert max_iou is not None and max_iou <= 0.5, i
