"""Tests of yolact_jax.postprocess: torch bilinear parity, box rules, reference parity."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.reference_data import load_npz
from tests.test_detect import match_detections
from yolact_jax import postprocess as pp
from yolact_jax.config import get_config
from yolact_jax.detect import detect_from_logits, detect_kwargs

MIXED_SIZES = np.array([[480, 640], [640, 427], [37, 200], [100, 50]], np.int32)


def torch_resize(masks, h, w):
  """The original's upsampling: F.interpolate bilinear, align_corners=False. [D,Hp,Wp] -> [D,h,w]."""
  t = torch.from_numpy(np.array(masks, np.float32))[None]
  return F.interpolate(t, (int(h), int(w)), mode='bilinear', align_corners=False)[0].numpy()


def random_detections(seed, batch, num_dets=6, proto_hw=(138, 138), k=8):
  rng = np.random.default_rng(seed)
  proto = np.maximum(rng.normal(size=(batch,) + proto_hw + (k,)), 0).astype(np.float32)
  centre = rng.uniform(0.2, 0.8, (batch, num_dets, 2))
  half = rng.uniform(0.05, 0.3, (batch, num_dets, 2))
  boxes = np.concatenate([centre - half, centre + half], -1).astype(np.float32)
  boxes[:, 0] = boxes[:, 0, [2, 3, 0, 1]]  # one box with swapped corners
  valid = np.ones((batch, num_dets), bool)
  valid[:, -1] = False
  dets = {
      'boxes': boxes * valid[..., None],
      'coefs': (rng.uniform(-1, 1, (batch, num_dets, k)) * valid[..., None]).astype(np.float32),
      'classes': rng.integers(0, 80, (batch, num_dets)).astype(np.int32) * valid,
      'scores': np.sort(rng.uniform(0, 1, (batch, num_dets)))[:, ::-1].astype(np.float32) * valid,
      'valid': valid,
      'num_detections': valid.sum(-1).astype(np.int32),
  }
  return dets, proto


# ---------------------------------------------------------------------------------------------
# Bilinear upsampling in a fixed canvas


@pytest.mark.parametrize('resize', [pp.resize_to_canvas, pp.resize_to_canvas_by_products])
@pytest.mark.parametrize('proto_hw', [(138, 138), (20, 30)])
def test_resize_to_canvas_matches_torch_interpolate(proto_hw, resize):
  """Both forms (gathers; matrix products, the ONNX export's) as torch, 0 outside each image."""
  rng = np.random.default_rng(0)
  masks = rng.uniform(0, 1, (len(MIXED_SIZES), 3) + proto_hw).astype(np.float32)
  out = np.asarray(jax.jit(resize, static_argnums=2)(masks, MIXED_SIZES, (640, 640)))
  for b, (h, w) in enumerate(MIXED_SIZES):
    np.testing.assert_allclose(out[b, :, :h, :w], torch_resize(masks[b], h, w), rtol=0, atol=2e-6)
    assert not out[b, :, h:].any() and not out[b, :, :, w:].any()


def test_bilinear_taps_downsampling_matches_torch():
  """The taps also hold when shrinking (550 -> 138, as the GT masks), with spare positions."""
  x = np.random.default_rng(1).uniform(size=(1, 550, 7)).astype(np.float32)
  lo, hi, t = (np.asarray(a) for a in pp.bilinear_taps(550, jnp.int32(138), 140))
  ours = x[:, lo] * (1 - t)[None, :, None] + x[:, hi] * t[None, :, None]
  np.testing.assert_allclose(ours[:, :138], torch_resize(x, 138, 7), rtol=0, atol=2e-6)
  assert lo.max() <= 549 and hi.max() <= 549  # spare positions stay inside the input


def test_mixed_sizes_compile_once():
  traces = []

  def count_and_resize(masks, sizes):
    traces.append(1)
    return pp.resize_to_canvas(masks, sizes, (64, 64))

  fn = jax.jit(count_and_resize)
  masks = np.ones((2, 1, 10, 10), np.float32)
  a = fn(masks, np.array([[64, 30], [17, 64]], np.int32))
  b = fn(masks, np.array([[5, 7], [64, 64]], np.int32))
  assert len(traces) == 1
  assert float(a[0, 0, :64, :30].min()) == pytest.approx(1) and not a[0, 0, :, 30:].any()
  assert float(b[0, 0, :5, :7].min()) == pytest.approx(1) and not b[0, 0, 5:].any()


# ---------------------------------------------------------------------------------------------
# Boxes and masks of the whole postprocess on hand-made detections


def test_pixel_boxes_match_original_rule():
  boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.5, 0.6, 0.1, 0.2], [-0.3, -0.1, 1.2, 1.5],
                     [-0.5, -0.4, -0.2, -0.1], [0.33333334, 0.1, 0.7777778, 0.9999999]]],
                   np.float32)
  boxes = np.concatenate([boxes, boxes], 0)
  sizes = np.array([[480, 640], [640, 427]], np.int32)
  ours = np.asarray(pp.pixel_boxes(boxes, sizes))
  for b, (h, w) in enumerate(sizes):  # the original's sanitize_coordinates(cast=False) + .long()
    t = torch.from_numpy(boxes[b].copy())
    x1, x2 = t[:, 0] * int(w), t[:, 2] * int(w)
    y1, y2 = t[:, 1] * int(h), t[:, 3] * int(h)
    expected = torch.stack([torch.clamp(torch.min(x1, x2), min=0),
                            torch.clamp(torch.min(y1, y2), min=0),
                            torch.clamp(torch.max(x1, x2), max=int(w)),
                            torch.clamp(torch.max(y1, y2), max=int(h))], 1).long().numpy()
    np.testing.assert_array_equal(ours[b], expected)
  assert ours[0, 3].tolist() == [0, 0, -128, -48]  # left of / above the image: negative x2, y2


def test_postprocess_mixed_sizes_match_per_image_torch():
  dets, proto = random_detections(seed=2, batch=len(MIXED_SIZES))
  fn = jax.jit(pp.postprocess, static_argnums=3)
  out = jax.tree.map(np.asarray, fn(dets, proto, MIXED_SIZES, (640, 640)))
  assert out['masks'].shape == (4, 6, 640, 640) and out['masks'].dtype == bool
  assert out['proto_masks'].shape == (4, 6, 138, 138)
  for b, (h, w) in enumerate(MIXED_SIZES):
    # proto-resolution masks: sigmoid(proto @ coefs), cropped with padding 1 (torch, for reference)
    soft = torch.sigmoid(torch.from_numpy(proto[b]) @ torch.from_numpy(dets['coefs'][b]).T)
    soft = soft.permute(2, 0, 1).numpy() * crop_window_plain(dets['boxes'][b], 138, 138)
    soft = soft * dets['valid'][b][:, None, None]
    np.testing.assert_allclose(out['proto_masks'][b], soft, rtol=0, atol=1e-6)
    upsampled = torch_resize(out['proto_masks'][b], h, w)
    expected = upsampled > 0.5
    near_half = np.abs(upsampled - 0.5) < 1e-5
    assert np.array_equal(out['masks'][b, :, :h, :w] & ~near_half, expected & ~near_half)
    assert not out['masks'][b, :, h:].any() and not out['masks'][b, :, :, w:].any()
    assert not out['masks'][b, -1].any() and (out['boxes_px'][b, -1] == 0).all()
    assert out['masks'][b, :-1].any(axis=(1, 2)).all()


def crop_window_plain(boxes, height, width, padding=1):
  """The original crop rule with loops: [D,4] relative -> [D,H,W] float indicator."""
  out = np.zeros((len(boxes), height, width), np.float32)
  for d, (bx1, by1, bx2, by2) in enumerate(boxes):
    x1 = max(min(bx1 * width, bx2 * width) - padding, 0)
    x2 = min(max(bx1 * width, bx2 * width) + padding, width)
    y1 = max(min(by1 * height, by2 * height) - padding, 0)
    y2 = min(max(by1 * height, by2 * height) + padding, height)
    cols, rows = np.arange(width), np.arange(height)
    out[d] = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
  return out


def test_postprocess_no_host_transfers():
  dets, proto = random_detections(seed=3, batch=2)
  sizes = MIXED_SIZES[:2]
  fn = jax.jit(pp.postprocess, static_argnums=3)
  assert 'callback' not in str(jax.make_jaxpr(fn, static_argnums=3)(dets, proto, sizes,
                                                                    (64, 64)))
  args = jax.device_put((dets, proto, np.minimum(sizes, 64)))
  with jax.transfer_guard('disallow'):
    jax.block_until_ready(fn(*args, (64, 64)))


# ---------------------------------------------------------------------------------------------
# Reference parity: raw head outputs -> Detect -> postprocess in one batched jitted call


def host_results(out: dict, sizes: np.ndarray) -> list[dict[str, np.ndarray]]:
  """Per-image numpy results of a postprocess batch through the inference program's host side
  (its output dict, then ``predict.unpack_detections``): boxes [n, 4], classes [n], scores [n],
  masks [n, h, w] uint8."""
  from yolact_jax.predict import program_outputs, unpack_detections
  outputs = jax.device_get(program_outputs(out))
  names = [str(c) for c in range(int(np.max(out['classes'])) + 1)]
  return [{'boxes': d.boxes, 'classes': d.classes, 'scores': d.scores, 'masks': d.masks}
          for d in unpack_detections(outputs, sizes, len(sizes), names)]


def test_postprocess_reference_parity():
  raw = load_npz('yolact_resnet50', 'raw.npz')
  ref = load_npz('yolact_resnet50', 'dets.npz')
  sizes = np.stack([ref['orig_hw_0'], ref['orig_hw_1']]).astype(np.int32)
  assert sizes.tolist() == [[480, 640], [640, 427]]
  kwargs = detect_kwargs(get_config('yolact_resnet50'))

  @functools.partial(jax.jit, static_argnums=5)
  def infer(loc, conf_logits, coefs, proto, image_sizes, canvas_hw):
    dets = detect_from_logits(loc, conf_logits, coefs, raw['priors'], **kwargs)
    return pp.postprocess(dets, proto, image_sizes, canvas_hw)

  out = infer(raw['loc'], raw['conf_logits'], raw['mask'], raw['proto'], sizes, (640, 640))
  out = jax.tree.map(np.asarray, out)
  results = host_results(out, sizes)
  for b, (h, w) in enumerate(sizes):
    res = results[b]
    pairs = match_detections(ref[f'detect_box_{b}'], ref[f'detect_class_{b}'],
                             out['boxes'][b, :len(res['scores'])], res['classes'], 0.99)
    assert len(pairs) >= len(ref[f'scores_{b}']) - 1  # a swap at the 100th place is allowed
    ri, oi = (np.array(x) for x in zip(*pairs))
    np.testing.assert_array_equal(res['classes'][oi], ref[f'classes_{b}'][ri])
    np.testing.assert_allclose(res['scores'][oi], ref[f'scores_{b}'][ri], rtol=0, atol=1e-5)

    # boxes: exact ints; 1 px allowed only where the float lies within 1e-4 of an integer
    rel = out['boxes'][b, oi]
    scale = np.array([w, h, w, h], np.float32)
    floats = np.concatenate([np.minimum(rel[:, :2], rel[:, 2:]), np.maximum(rel[:, :2], rel[:, 2:])],
                            1) * scale
    floats = np.clip(floats, 0, scale)
    diff = np.abs(res['boxes'][oi] - ref[f'boxes_{b}'][ri])
    near_int = np.abs(floats - np.round(floats)) < 1e-4
    assert diff.max() <= 1 and np.all((diff == 0) | near_int), f'image {b}: boxes differ'

    # masks at the original size, per-mask IoU > 0.99 (two empty masks count as equal)
    ours, theirs = res['masks'][oi].astype(bool), ref[f'masks_{b}'][ri].astype(bool)
    assert ours.shape[1:] == (h, w)
    inter = (ours & theirs).sum((1, 2))
    union = (ours | theirs).sum((1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    assert iou.min() > 0.99, f'image {b}: worst mask IoU {iou.min()}'
    assert (union > 0).sum() > 50  # the comparison is not vacuous

    np.testing.assert_allclose(out['proto_masks'][b, oi], ref[f'proto_res_mask_{b}'][ri],
                               rtol=0, atol=1e-5)
