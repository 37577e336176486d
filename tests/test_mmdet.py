"""mmdetection's YOLACT: its checkpoints, its network, Detect and masks against the outputs
mmdetection itself made (tests/data/mmdet_reference, by scripts/make_mmdet_reference.py with
mmdetection 3.3.0), and each of its options on hand-made cases. The comparison run against an
installed mmdetection skips where it is absent."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolact_jax import boxes as box_lib
from yolact_jax import detect as det
from yolact_jax.anchors import make_priors
from yolact_jax.checkpoint import convert, mmdet
from yolact_jax.compare.outputs import compare_detections, ours_result
from yolact_jax.config import get_config
from yolact_jax.model.yolact import Yolact
from yolact_jax.postprocess import pixel_boxes, postprocess
from yolact_jax.predict import Predictor, pack_canvas, preprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = ROOT / 'tests' / 'data' / 'mmdet_reference'
CFG = get_config('yolact_mmdet_tiny')
torch = pytest.importorskip('torch')


@pytest.fixture(scope='module')
def ref():
  with np.load(REFERENCE / 'reference.npz') as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope='module')
def variables():
  return convert.load_pth_weights(REFERENCE / 'weights.pth', CFG)


def _images(ref):
  return [ref[f'image_{i}'] for i in range(2)]


def _mmdet_detections(ref, i):
  h, w = ref[f'image_{i}'].shape[:2]
  masks = np.unpackbits(ref[f'dets{i}_masks'], axis=-1, count=w).reshape(-1, h, w)
  scores = ref[f'dets{i}_scores']
  return {'classes': ref[f'dets{i}_classes'], 'scores': scores, 'mask_scores': scores,
          'boxes': ref[f'dets{i}_boxes'], 'masks': masks}


# ----------------------------------------------------------------------------- checkpoints


def test_an_mmdetection_checkpoint_is_told_by_its_keys_and_written_back_bit_exact(variables,
                                                                                 tmp_path):
  """The shipped file is mmdetection's own state_dict (its keys, order and class channels):
  read into our variables and written back as 3.x it is the same file, tensor for tensor; as
  2.x the semantic conv is segm_head's and the rest the same."""
  theirs = torch.load(REFERENCE / 'weights.pth', weights_only=True)
  assert set(theirs) == {'meta', 'state_dict'}
  state = theirs['state_dict']
  assert mmdet.layout_of(state) == 'mmdet3'
  assert {'backbone.layer1.0.conv1.weight', 'neck.lateral_convs.0.conv.weight',
          'neck.fpn_convs.3.conv.weight', 'bbox_head.head_convs.0.conv.weight',
          'bbox_head.conv_cls.weight', 'mask_head.protonet.0.weight',
          'mask_head.segm_branch.segm_conv.weight'} <= set(state)
  for layout in ('mmdet3', 'mmdet2'):
    path = tmp_path / f'{layout}.pth'
    convert.save_pth_weights(variables, path, CFG, layout=layout)
    back = torch.load(path, weights_only=True)
    rename = (lambda k: k) if layout == 'mmdet3' else (
        lambda k: k.replace('mask_head.segm_branch.', 'segm_head.'))
    expected = {rename(k): v for k, v in state.items()}
    if layout == 'mmdet3':
      assert list(back['state_dict']) == list(state)  # mmdetection's state_dict() order
      assert back['meta']['dataset_meta']['classes'] == list(CFG.dataset.class_names)
    assert mmdet.layout_of(back['state_dict']) == layout
    assert set(back['state_dict']) == set(expected)
    for key, value in back['state_dict'].items():
      assert torch.equal(value, expected[key]), key
    again = convert.load_pth_weights(path, CFG)
    jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_the_background_moves_between_last_and_first_class_channel():
  """2 anchors x 3 classes: mmdetection [a0c0, a0c1, a0bg, a1c0, a1c1, a1bg] -> the original's
  [a0bg, a0c0, a0c1, a1bg, a1c0, a1c1], weights and bias alike, and back."""
  weight = np.arange(6, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 3, 3), np.float32)
  state = {'bbox_head.conv_cls.weight': weight, 'bbox_head.conv_cls.bias': np.arange(6.0)}
  keys = ['prediction_layers.0.conf_layer.weight', 'prediction_layers.0.conf_layer.bias']
  original = mmdet.to_original(state, keys, num_classes=3)
  np.testing.assert_array_equal(original['prediction_layers.0.conf_layer.bias'],
                                [2, 0, 1, 5, 3, 4])
  np.testing.assert_array_equal(original['prediction_layers.0.conf_layer.weight'][:, 0, 0, 0],
                                [2, 0, 1, 5, 3, 4])
  back = mmdet.from_original(original, num_classes=3)
  np.testing.assert_array_equal(back['bbox_head.conv_cls.bias'], np.arange(6.0))


def test_the_fpn_levels_swap_order_and_p6_p7_are_fpn_convs():
  state = {f'neck.lateral_convs.{i}.conv.bias': np.full(1, i) for i in range(3)}
  state.update({f'neck.fpn_convs.{i}.conv.bias': np.full(1, 10 + i) for i in range(5)})
  expected = {
      'fpn.lat_layers.2.bias': 0, 'fpn.lat_layers.1.bias': 1, 'fpn.lat_layers.0.bias': 2,
      'fpn.pred_layers.2.bias': 10, 'fpn.pred_layers.1.bias': 11, 'fpn.pred_layers.0.bias': 12,
      'fpn.downsample_layers.0.bias': 13, 'fpn.downsample_layers.1.bias': 14}
  original = mmdet.to_original(state, expected, num_classes=3)
  assert {k: int(v[0]) for k, v in original.items()} == expected


def test_an_mmdetection_checkpoint_that_does_not_fit_is_one_error(tmp_path):
  state = torch.load(REFERENCE / 'weights.pth', weights_only=True)['state_dict']
  torch.save({'meta': {}, 'state_dict': {**state, 'bbox_head.conv_extra.weight': torch.ones(1)}},
             tmp_path / 'extra.pth')
  with pytest.raises(convert.CheckpointError, match='bbox_head.conv_extra.weight'):
    convert.load_pth_weights(tmp_path / 'extra.pth', CFG)
  with pytest.raises(convert.CheckpointError,
                     match=r'mmdetection 3\.x checkpoint; its presets are yolact_mmdet_r50'):
    convert.load_pth_weights(REFERENCE / 'weights.pth', get_config('yolact_tiny'))


def test_convert_reads_and_writes_mmdetection_files_through_the_command_line(tmp_path):
  run = lambda *args: subprocess.run(  # noqa: E731
      [sys.executable, '-m', 'yolact_jax', 'convert', '--config', 'yolact_mmdet_tiny', *args],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  done = run(str(REFERENCE / 'weights.pth'), str(tmp_path / 'ours'))
  assert done.returncode == 0, done.stderr[-2000:]
  done = run(str(tmp_path / 'ours'), str(tmp_path / 'back.pth'), '--pth_layout', 'mmdet3')
  assert done.returncode == 0, done.stderr[-2000:]
  theirs = torch.load(REFERENCE / 'weights.pth', weights_only=True)['state_dict']
  back = torch.load(tmp_path / 'back.pth', weights_only=True)['state_dict']
  assert list(back) == list(theirs)
  assert all(torch.equal(back[k], theirs[k]) for k in theirs)


def test_predict_reads_an_mmdetection_checkpoint_directly(ref, tmp_path):
  """``predict --weights <mmdetection .pth> --config yolact_mmdet_tiny`` on an image file gives
  mmdetection's detections (its COCO results: float boxes, as mmdetection's)."""
  import cv2
  cv2.imwrite(str(tmp_path / 'image.png'), ref['image_0'][..., ::-1])
  done = subprocess.run(
      [sys.executable, '-m', 'yolact_jax', 'predict', '--config', 'yolact_mmdet_tiny',
       '--weights', str(REFERENCE / 'weights.pth'), str(tmp_path / 'image.png'), '--out',
       str(tmp_path / 'out'), '--coco_json', str(tmp_path / 'results.json')],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  records = json.loads((tmp_path / 'results.json').read_text())['bbox']
  theirs = _mmdet_detections(ref, 0)
  assert len(records) == len(theirs['scores'])
  for record, box, score in zip(records, theirs['boxes'], theirs['scores']):
    x1, y1, w, h = record['bbox']
    np.testing.assert_allclose([x1, y1, x1 + w, y1 + h], box, atol=0.1)  # rounded to 0.1
    assert record['score'] == pytest.approx(float(score), abs=1e-4)


# ----------------------------------------------------------------------- against mmdetection


def test_our_network_input_is_mmdetections_test_pipeline(ref):
  """OpenCV's resize of the uint8 image (model.backbone.input_resize='uint8'), then mean / std:
  mmdetection's Resize, PackDetInputs and data preprocessor, to float32 rounding."""
  images = _images(ref)
  canvas, sizes = pack_canvas(images, (120, 130), 2)
  b = CFG.model.backbone
  ours = np.asarray(jax.jit(lambda c, s: preprocess(c, s, CFG.max_size, b.transform,
                                                    b.input_resize))(canvas, sizes))
  np.testing.assert_allclose(ours, ref['net_input'], rtol=0, atol=1e-6)
  float_resize = np.asarray(preprocess(canvas, sizes, CFG.max_size, b.transform, 'float'))
  assert np.abs(float_resize - ref['net_input']).max() > 1e-2  # the option matters


def test_the_network_against_mmdetection_in_float64(variables, ref):
  """Our float32 head outputs are no further from mmdetection's float64 ones than 1.5x its own
  float32 outputs are (shared/reference/README.md's rule); the priors are its anchors."""
  model = Yolact(CFG.model, num_classes=CFG.num_classes)
  out = jax.jit(lambda v, x: model.apply(v, x))(variables, ref['net_input'])
  ours = {'loc': out['loc'], 'conf': jax.nn.softmax(out['conf'], -1), 'mask': out['coefs'],
          'proto': out['proto']}
  for key, value in ours.items():
    truth = ref[f'raw64_{key}']
    our_err = np.abs(np.asarray(value, np.float64) - truth)
    their_err = np.abs(ref[f'raw32_{key}'] - truth)
    assert our_err.max() <= 1.5 * their_err.max(), key
    assert our_err.mean() <= 1.5 * their_err.mean(), key
  np.testing.assert_allclose(make_priors(CFG), ref['raw32_priors'], rtol=0, atol=2e-7)


def test_detect_on_mmdetections_head_outputs_gives_its_detections(ref):
  """Our Detect and masks with the preset's mmdetection options, on mmdetection's own float32
  head outputs: its detections in its order, boxes to float rounding, the same masks."""
  sizes = np.array([image.shape[:2] for image in _images(ref)], np.int32)
  detections = det.detect(ref['raw32_loc'], ref['raw32_conf'], ref['raw32_mask'],
                          make_priors(CFG), **det.detect_kwargs(CFG))
  results = postprocess(detections, jnp.asarray(ref['raw32_proto']), sizes, (120, 130),
                        float_boxes=True)
  for i, (h, w) in enumerate(sizes.tolist()):
    theirs = _mmdet_detections(ref, i)
    n = int(results['num_detections'][i])
    assert n == len(theirs['classes']) > 0
    np.testing.assert_array_equal(results['classes'][i, :n], theirs['classes'])
    np.testing.assert_allclose(results['scores'][i, :n], theirs['scores'], rtol=1e-6)
    np.testing.assert_allclose(results['boxes_px'][i, :n], theirs['boxes'], atol=2e-3)
    masks = np.asarray(results['masks'][i, :n, :h, :w])
    assert (masks != theirs['masks'].astype(bool)).sum() <= 2, i  # pixels at 0.5 +- rounding


def test_end_to_end_from_the_images_matches_mmdetection(variables, ref):
  predictor = Predictor(CFG, variables, max_batch=2)
  for i, ours in enumerate(predictor(_images(ref), channel_order='rgb')):
    assert ours.boxes.dtype == np.float32  # detect.float_boxes
    entry = compare_detections(ours_result(ours), _mmdet_detections(ref, i), 0.9)
    assert entry['agreement'] >= 0.98 and entry['mask_iou_min'] > 0.99, entry
    assert entry['score_abs_diff_max'] < 1e-4, entry


# --------------------------------------------------------------------------- the options


def test_level_filter_keeps_the_best_priors_of_each_level_whatever_their_score():
  """Levels of 4 and 2 priors, 2 per level: the two best of the first level (0.3 and 0.2) and
  both of the second (it has no more than 2), the one at 0.001 included."""
  best = np.array([[0.01, 0.3, 0.02, 0.2, 0.001, 0.5]], np.float32)
  fg = np.stack([best, best / 2], axis=-1)  # two classes; the best is the first
  mask = det.level_filter(jnp.asarray(fg), (4, 2), 2)
  np.testing.assert_array_equal(mask, [[False, True, False, True, True, True]])
  with pytest.raises(ValueError, match='sum to 5'):
    det.level_filter(jnp.asarray(fg), (4, 1), 2)


def _two_box_scene(second_score):
  """Two far-apart priors, one class; scores 0.9 and ``second_score``."""
  priors = np.array([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]], np.float32)
  conf = np.array([[[0.1, 0.9], [1 - second_score, second_score]]], np.float32)
  return np.zeros((1, 2, 4), np.float32), conf, np.zeros((1, 2, 1), np.float32), priors


def test_the_second_threshold_drops_low_scores_after_nms():
  """With candidates chosen per level (no threshold before NMS) the 0.01 box survives NMS;
  the second threshold (score > nms_conf_thresh after NMS) drops it."""
  scene = _two_box_scene(0.01)
  common = dict(top_k=2, conf_thresh=0.05, max_detections=2, candidates_per_level=2,
                level_sizes=(2,))
  assert int(det.detect(*scene, **common)['num_detections'][0]) == 2
  assert int(det.detect(*scene, second_threshold=True, **common)['num_detections'][0]) == 1
  assert int(det.detect(*scene, top_k=2, conf_thresh=0.05,
                        max_detections=2)['num_detections'][0]) == 1  # the original's filter


def test_log_sizes_are_clamped_and_boxes_clipped():
  """A width offset of 100 (x 0.2 = 20 in log space) becomes exp(4.135...) = 62.5 x the prior's
  width when clamped (0.02 -> 1.25, centred at 0.5 + 100 x 0.1 x 0.02 = 0.7: 0.075 to 1.325);
  clipping ends it at 1."""
  prior = np.array([[0.5, 0.5, 0.02, 0.02]], np.float32)
  loc = np.array([[100.0, 0.0, 100.0, 0.0]], np.float32)
  clamp = abs(np.log(16 / 1000))
  wide = np.asarray(box_lib.decode(loc, prior, clamp_log_size=clamp))
  np.testing.assert_allclose(wide[0, [0, 2]], [0.7 - 0.625, 0.7 + 0.625], rtol=1e-5)
  assert np.asarray(box_lib.decode(loc, prior))[0, 2] > 1e6  # unclamped: exp(20)
  scene = (loc[None], np.array([[[0.0, 1.0]]], np.float32), np.zeros((1, 1, 1), np.float32),
           prior)
  clipped = det.detect(*scene, top_k=1, max_detections=1, clamp_log_size=clamp, clip_boxes=True)
  np.testing.assert_allclose(clipped['boxes'][0, 0], [0.075, 0.49, 1.0, 0.51], rtol=1e-5)


def test_a_union_floor_keeps_two_empty_boxes():
  """Two boxes of zero width at one place: their IoU is 0 / 0 (NaN, which suppresses) without
  a floor under the union, 0 with mmdetection's 1e-6 px^2."""
  boxes = jnp.array([[[0.5, 0.2, 0.5, 0.4], [0.5, 0.2, 0.5, 0.4]]])
  valid = jnp.array([[True, True]])
  np.testing.assert_array_equal(det.fast_nms_keep(boxes, valid, 0.5), [[True, False]])
  np.testing.assert_array_equal(det.fast_nms_keep(boxes, valid, 0.5, 1e-6 / 550 ** 2),
                                [[True, True]])


def test_float_boxes_are_not_truncated():
  boxes = jnp.array([[[0.1, 0.2, 0.55, 0.9]]])
  sizes = jnp.array([[100, 50]])  # h, w
  np.testing.assert_array_equal(pixel_boxes(boxes, sizes), [[[5, 20, 27, 90]]])
  np.testing.assert_allclose(pixel_boxes(boxes, sizes, truncate=False),
                             [[[5.0, 20.0, 27.5, 90.0]]], rtol=1e-6)


def test_p6_is_made_from_c5_with_its_channels():
  """model.fpn.downsample_from_backbone: the first extra level's conv reads C5 (256 channels
  in the tiny ResNet-50), so its kernel has C5's input channels and the network computes
  otherwise than with P6 from P5."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 96, 96, 3)), jnp.float32)
  base = get_config('yolact_mmdet_tiny', ['model.fpn.downsample_from_backbone=False'])
  shapes = {}
  for cfg in (CFG, base):
    model = Yolact(cfg.model, num_classes=cfg.num_classes)
    shapes[cfg.model.fpn.downsample_from_backbone] = jax.eval_shape(
        model.init, jax.random.key(0), x)['params']['fpn']['downsample_layers_0']['kernel'].shape
  assert shapes == {True: (3, 3, 256, 16), False: (3, 3, 16, 16)}


# ------------------------------------------------------------------- with mmdetection here


@pytest.mark.skipif(importlib.util.find_spec('mmdet') is None,
                    reason='mmdetection is not installed (pip install --no-deps mmdet==3.3.0 '
                           'mmengine==0.10.7 mmcv-lite==2.1.0 and their small dependencies)')
def test_compare_against_mmdetection_through_the_command_line(tmp_path):
  out = tmp_path / 'cmp.json'
  done = subprocess.run(
      [sys.executable, '-m', 'yolact_jax', 'compare', '--reference', 'mmdet', '--config',
       'yolact_mmdet_tiny', '--random_weights', '1', '--num_images', '2', '--skip_speed',
       '--float64_yardstick', '--threads', '1', '--train_step', '--out', str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report['settings']['reference'] == 'mmdet'
  assert report['detections']['total']['agreement'] >= 0.98
  assert all(entry['within_factor'] for entry in report['float64_yardstick']['raw_outputs'].values())
  assert "mmdetection's YOLACT" in out.with_suffix('.md').read_text()
  step = report['train_step']  # one step on the same batch: each term and the update
  assert all(d['rel_diff'] < 1e-4 for d in step['losses'].values()), step['losses']
  assert step['update']['relative'] < step['original_self']['update']['relative']


# ------------------------------------------------------------------------------ training


def _training_batch(ref, name):
  """A reference training batch as ours and mmdetection's per-prior assignment: 'train' (3
  objects an image) or 'train2' (8 crowded objects, then an image without any)."""
  from yolact_jax.compare.train import our_train_batch
  targets = {k: list(ref[f'{name}_{k}']) for k in ('boxes', 'labels', 'masks')}
  if name == 'train2':
    targets = {k: [v[0], v[0][:0]] for k, v in targets.items()}
  return our_train_batch(ref['net_input'], targets, CFG), ref[f'{name}_assigned'], targets


def _loss_terms(variables, batch, cfg):
  from yolact_jax.loss import yolact_loss
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  preds, _ = model.apply(variables, batch['image'], train=True, mutable=['batch_stats'])
  return jax.device_get(yolact_loss(preds, make_priors(cfg), batch, cfg)[1])


@pytest.mark.parametrize('name', ['train', 'train2'])
def test_matching_and_loss_are_mmdetections_on_its_training_batches(variables, ref, name):
  """On each reference training batch (its network input, seeded boxes and masks) the preset's
  matcher assigns every prior as mmdetection's MaxIoUAssigner did, and each loss term
  (BatchNorm on batch statistics) is mmdetection's loss_cls / loss_bbox / loss_mask /
  loss_segm within 1e-4 relative."""
  from yolact_jax.matching import match
  batch, assigned, targets = _training_batch(ref, name)  # assigned: 0 bg, -1 ignored, j + 1
  matched = match(make_priors(CFG), batch['boxes'], batch['labels'], batch['is_crowd'],
                  batch['valid'], CFG.loss)
  for b, labels in enumerate(targets['labels']):
    gt = np.maximum(assigned[b] - 1, 0)
    label = np.asarray(labels)[gt] + 1 if len(labels) else gt
    np.testing.assert_array_equal(matched.conf_t[b], np.where(assigned[b] > 0, label,
                                                              assigned[b]))
    np.testing.assert_array_equal(np.asarray(matched.idx_t[b])[assigned[b] > 0],
                                  gt[assigned[b] > 0])
  terms = _loss_terms(variables, batch, CFG)
  theirs = json.loads((REFERENCE / 'about.json').read_text())[f'{name}_losses']
  for key in ('B', 'C', 'M', 'S'):  # loss_bbox, loss_cls, loss_mask, loss_segm
    assert float(terms[key]) == pytest.approx(theirs[key], rel=1e-4), key


def test_each_mmdetection_loss_field_matters_on_the_reference_batches(variables, ref):
  """Setting any one of the preset's mmdetection loss fields back to the original's value moves
  the matching or a term away from mmdetection's: the agreement above is the fields' doing."""
  import dataclasses
  original = get_config('yolact_resnet50').loss
  theirs = json.loads((REFERENCE / 'about.json').read_text())
  for field in ('matcher', 'ohem_keep_negatives_without_positives', 'count_one_positive_at_least',
                'semantic_class_offset', 'semantic_skips_empty_images'):
    cfg = dataclasses.replace(CFG, loss=dataclasses.replace(
        CFG.loss, **{field: getattr(original, field)}))
    moved = []
    for name in ('train', 'train2'):
      terms = _loss_terms(variables, _training_batch(ref, name)[0], cfg)
      moved += [key for key in ('B', 'C', 'M', 'S')
                if float(terms[key]) != pytest.approx(theirs[f'{name}_losses'][key], rel=1e-3)]
    assert moved, field


def test_the_mask_term_over_the_masks_trained(variables, ref):
  """At most one mask trained per image (loss.masks_to_train=1): the original scales an image's
  sum up to its positives and divides by all positives; mmdetection divides the plain sums by
  the masks trained (here one an image)."""
  import dataclasses
  from yolact_jax.loss import mask_loss
  from yolact_jax.matching import match
  batch, _, _ = _training_batch(ref, 'train')
  model = Yolact(CFG.model, num_classes=CFG.num_classes)
  preds, _ = model.apply(variables, batch['image'], train=True, mutable=['batch_stats'])
  targets = match(make_priors(CFG), batch['boxes'], batch['labels'], batch['is_crowd'],
                  batch['valid'], CFG.loss)
  positives = np.asarray(targets.conf_t > 0).sum(axis=1)
  assert positives.min() > 1
  sums, terms = {}, {}
  for by_trained in (False, True):
    cfg = dataclasses.replace(CFG, loss=dataclasses.replace(
        CFG.loss, masks_to_train=1, mask_normalise_by_trained=by_trained))
    _, sums[by_trained], _ = mask_loss(preds['proto'], preds['coefs'], batch['masks_proto'],
                                       targets, cfg, None, batch['labels'])
    terms[by_trained] = float(_loss_terms(variables, batch, cfg)['M'])
  np.testing.assert_allclose(sums[False], sums[True] * positives, rtol=1e-6)
  hw_alpha = CFG.loss.mask_alpha / (preds['proto'].shape[1] * preds['proto'].shape[2])
  assert terms[False] == pytest.approx(float(np.sum(sums[False])) * hw_alpha / positives.sum(),
                                       rel=1e-5)
  assert terms[True] == pytest.approx(float(np.sum(sums[True])) * hw_alpha / 2, rel=1e-5)


# --------------------------------------------------------------------------- augmentation


class _ReplayDraws:
  """mmdet_augment.Draws answering from recorded values (in their order)."""

  def __init__(self, values):
    self.values = list(values)

  def _next(self, *args):
    return self.values.pop(0)

  uniform = randint = choice = _next

  def permutation(self, n):
    return np.asarray(self._next())


def test_the_mmdet_augmentation_is_mmdetections_transforms_given_the_same_draws():
  """mmdetection's own FilterAnnotations, Expand, MinIoURandomCrop, Resize, RandomFlip and
  PhotoMetricDistortion (its YOLACT config's arguments) made tests/data/mmdet_reference/augment.*
  from a sample with a box under 4 px, for 12 seeds, drawing exactly the random values ours drew:
  replayed into ours, every draw is used in the same order and the image, masks, boxes and labels
  come out as mmdetection's."""
  from scripts.make_mmdet_reference import AUGMENT_SIZE, augment_sample
  from yolact_jax.data import mmdet_augment
  image, masks, boxes, labels = augment_sample()
  h, w = image.shape[:2]
  draws = json.loads((REFERENCE / 'augment.json').read_text())['draws']
  seen_modes = set()
  with np.load(REFERENCE / 'augment.npz') as data:
    for seed, values in enumerate(draws):
      replay = _ReplayDraws(values)
      out = mmdet_augment.train_transform(image, masks, boxes / [w, h, w, h], labels, 0, replay,
                                          max_size=AUGMENT_SIZE)
      assert not replay.values, seed
      np.testing.assert_array_equal(out.labels, data[f'labels_{seed}'], err_msg=str(seed))
      np.testing.assert_array_equal(out.masks, data[f'masks_{seed}'], err_msg=str(seed))
      np.testing.assert_allclose(out.boxes, data[f'boxes_{seed}'], atol=1e-6, err_msg=str(seed))
      np.testing.assert_allclose(out.image, data[f'image_{seed}'], atol=1e-5, err_msg=str(seed))
      assert 3 not in out.labels  # the 3 x 6 px box: filtered
      seen_modes |= {v for v in values if v in mmdet_augment.CROP_MODES}
  assert len(seen_modes) >= 4  # crops of several IoU modes among the seeds


def test_the_mmdet_pipeline_is_the_presets_and_feeds_training(tmp_path):
  """augment.pipeline='mmdet' (the mmdet presets') is what the loader runs: a training example
  of yolact_mmdet_tiny comes through its transform."""
  from unittest import mock

  from yolact_jax.data import coco, loader, mmdet_augment, synthetic
  from yolact_jax.trainer import pipeline_options
  assert CFG.augment.pipeline == 'mmdet'
  assert get_config('yolact_tiny').augment.pipeline == 'original'
  paths = synthetic.generate_synthetic_coco(tmp_path, num_train=2, num_val=0, image_hw=(64, 80),
                                            seed=3)
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(*paths['train']))
  options = pipeline_options(CFG)
  with mock.patch.object(mmdet_augment, 'train_transform',
                         wraps=mmdet_augment.train_transform) as spy:
    example = loader.make_train_example(source, 0, np.random.default_rng(0), options)
  assert spy.called and example['image'].shape == (96, 96, 3)
