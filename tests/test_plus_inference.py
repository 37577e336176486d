"""YOLACT++ inference: mask re-scoring inside the compiled program, and (slow) the end-to-end
parity of ``yolact_plus_resnet50`` through the public API against the original's outputs.

The small tests use yolact_tiny with a two-layer mask-IoU network and ``detect.rescore_mask``
set by ``dataclasses.replace``; the rescoring is checked against the masks of
``postprocess.proto_masks`` scored by a separate call of ``MaskIoUNet``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.reference_data import REFERENCE_DIR, load_npz, require_reference
from tests.test_detect import match_detections
from yolact_jax import predict as pr
from yolact_jax.config import get_config
from yolact_jax.model.maskiou import MaskIoUNet
from yolact_jax.model.yolact import Yolact
from yolact_jax.postprocess import proto_masks, rescore, resize_to_canvas

PLUS_DIR = REFERENCE_DIR / 'yolact_plus_resnet50'
TINY_MASKIOU = ((8, 3, 2), (16, 3, 2))


def plus_tiny_config(rescore_bbox=False, conf_thresh=0.02):
  """yolact_tiny with a small mask-IoU network and mask re-scoring (not validated)."""
  cfg = get_config('yolact_tiny', [f'detect.nms_conf_thresh={conf_thresh}'])
  return dataclasses.replace(
      cfg, model=dataclasses.replace(cfg.model, use_maskiou=True, maskiou_net=TINY_MASKIOU),
      detect=dataclasses.replace(cfg.detect, rescore_mask=True, rescore_bbox=rescore_bbox))


def maskiou_params(cfg, hp, seed=1):
  """Mask-IoU parameters whose outputs vary: random kernels, biases shifted up so that the
  final ReLU does not zero most outputs."""
  net = MaskIoUNet(cfg.model.maskiou_net, cfg.num_classes - 1)
  params = net.init(jax.random.key(seed), jnp.zeros((1, hp, hp)))['params']
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.1 if path[-1].key == 'bias' else x, params)


@pytest.fixture(scope='module')
def plus_variables():
  """Variables of the tiny ++ config: the network's, with ``params['maskiou_net']`` added where
  the model does not build one itself."""
  cfg = plus_tiny_config()
  x = jnp.zeros((1, cfg.max_size, cfg.max_size, 3), jnp.float32)
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  variables = jax.device_get(jax.jit(model.init)(jax.random.key(0), x))
  proto = jax.eval_shape(lambda v: model.apply(v, x, train=False)['proto'], variables)
  params = dict(variables['params'])
  params['maskiou_net'] = jax.device_get(maskiou_params(cfg, proto.shape[1]))
  return dict(variables, params=params)


def random_images(count, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (int(rng.integers(40, 70)), int(rng.integers(40, 70)), 3),
                      dtype=np.uint8) for _ in range(count)]


def independent_rescoring(cfg, variables, images):
  """Class scores, classes, valid and the expected mask scores, from the program's stages
  without rescoring and a separate MaskIoUNet call on the masks of ``proto_masks``."""
  program = pr.InferenceProgram(cfg)
  canvas_hw = pr.fit_canvas([image.shape[:2] for image in images])
  canvas, sizes = pr.pack_canvas(images, canvas_hw, len(images))

  @jax.jit
  def stages(variables, canvas, sizes):
    out = program.network(variables, program.network_input(canvas, sizes))
    dets = program.detect(out)
    return dets, proto_masks(out['proto'], dets['coefs'], dets['boxes'], dets['valid'])

  dets, masks = jax.device_get(stages(variables, canvas, sizes))
  net = MaskIoUNet(cfg.model.maskiou_net, cfg.num_classes - 1)
  valid = dets['valid']
  iou = np.asarray(jax.jit(net.apply)({'params': variables['params']['maskiou_net']},
                                      masks[valid]))  # [n, C - 1]
  expected = np.zeros_like(dets['scores'])
  expected[valid] = dets['scores'][valid] * iou[np.arange(len(iou)), dets['classes'][valid]]
  return dets, expected, (canvas, sizes)


@pytest.mark.parametrize('rescore_bbox', [False, True])
def test_program_rescores_masks_with_the_mask_iou_net(plus_variables, rescore_bbox):
  cfg = plus_tiny_config(rescore_bbox)
  images = random_images(2)
  dets, expected, (canvas, sizes) = independent_rescoring(cfg, plus_variables, images)
  program = pr.inference_program(cfg)
  assert program.rescores
  out = jax.device_get(program.from_images(plus_variables, canvas, sizes))
  assert set(out) == set(pr.OUTPUT_KEYS)
  valid = out['valid']
  np.testing.assert_array_equal(valid, dets['valid'])
  np.testing.assert_array_equal(out['classes'], dets['classes'])
  assert valid.sum() > 10
  np.testing.assert_allclose(out['mask_scores'], expected, rtol=1e-5, atol=1e-6)
  assert np.all(out['mask_scores'][~valid] == 0)
  # not vacuous: the predicted IoU varies and differs from 1
  ratio = out['mask_scores'][valid] / dets['scores'][valid]
  assert ratio.std() > 1e-3 and np.any(np.abs(ratio - 1) > 1e-2)
  box_scores = expected if rescore_bbox else dets['scores']
  np.testing.assert_allclose(out['scores'], box_scores, rtol=1e-5, atol=1e-6)

  # the public API carries both scores per detection
  results = pr.Predictor(cfg, plus_variables, max_batch=2)(images, channel_order='rgb')
  for b, result in enumerate(results):
    n = int(valid[b].sum())
    assert len(result) == n and result.mask_scores.dtype == np.float32
    np.testing.assert_allclose(result.mask_scores, expected[b, :n], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.scores, box_scores[b, :n], rtol=1e-5, atol=1e-6)
    sub = result.select(top_k=3)
    np.testing.assert_array_equal(sub.mask_scores, result.mask_scores[:3])


def test_plus_tiny_preset_rescores_through_the_public_api():
  from yolact_jax.model.variables import init_variables
  cfg = get_config('yolact_plus_tiny', ['detect.nms_conf_thresh=0.02'])
  variables = jax.device_get(init_variables(cfg, seed=0))
  assert 'maskiou_net' in variables['params']  # the model creates it
  params = dict(variables['params'], maskiou_net=jax.device_get(maskiou_params(cfg, 16)))
  variables = dict(variables, params=params)
  images = random_images(2, seed=5)
  dets, expected, _ = independent_rescoring(cfg, variables, images)
  results = pr.Predictor(cfg, variables, max_batch=2)(images, channel_order='rgb')
  for b, result in enumerate(results):
    n = int(dets['valid'][b].sum())
    assert n > 0 and len(result) == n
    np.testing.assert_allclose(result.scores, dets['scores'][b, :n], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.mask_scores, expected[b, :n], rtol=1e-5, atol=1e-6)
  assert np.any(expected[dets['valid']] != dets['scores'][dets['valid']])


def test_rescoring_program_compiles_once_without_host_round_trips(plus_variables):
  cfg = plus_tiny_config(conf_thresh=0.03)
  program = pr.InferenceProgram(cfg)  # its own, so that it counts all its traces
  canvas, sizes = pr.pack_canvas(random_images(2, seed=3), (128, 128), 2)
  jaxpr = jax.make_jaxpr(program.from_images)(plus_variables, canvas, sizes)
  assert 'callback' not in str(jaxpr)
  args = jax.device_put((plus_variables, canvas, sizes))
  with jax.transfer_guard('disallow'):
    jax.block_until_ready(program.from_images(*args))
  canvas, sizes = pr.pack_canvas(random_images(1, seed=4), (128, 128), 2)
  program.from_images(plus_variables, canvas, sizes)
  assert program.trace_count == 1


def test_rescoring_without_mask_iou_parameters_is_a_clear_error(plus_variables):
  cfg = plus_tiny_config(conf_thresh=0.04)
  params = {k: v for k, v in plus_variables['params'].items() if k != 'maskiou_net'}
  canvas, sizes = pr.pack_canvas(random_images(1), (128, 128), 1)
  with pytest.raises(ValueError, match=r"variables\['params'\]\['maskiou_net'\]"):
    pr.inference_program(cfg).from_images(dict(plus_variables, params=params), canvas, sizes)


def test_v1_mask_scores_equal_scores(plus_variables):
  cfg = get_config('yolact_tiny', ['detect.nms_conf_thresh=0.02'])
  variables = dict(plus_variables, params={k: v for k, v in plus_variables['params'].items()
                                           if k != 'maskiou_net'})
  program = pr.inference_program(cfg)
  assert not program.rescores
  canvas, sizes = pr.pack_canvas(random_images(2), (128, 128), 2)
  out = jax.device_get(program.from_images(variables, canvas, sizes))
  assert out['valid'].sum() > 10
  np.testing.assert_array_equal(out['mask_scores'], out['scores'])
  for result in pr.Predictor(cfg, variables, max_batch=2)(random_images(2), channel_order='rgb'):
    np.testing.assert_array_equal(result.mask_scores, result.scores)


# ---------------------------------------------------------------------------------------------
# Against the original: its mask-IoU weights on its own cropped soft masks


def reference_maskiou_params():
  """``maskiou_net.maskiou_net.<i>`` of the ++ reference weights as MaskIoUNet parameters."""
  import torch
  state = torch.load(require_reference('yolact_plus_resnet50', 'weights.pth'),
                     map_location='cpu', weights_only=True)
  params = {}
  for key, value in state.items():
    if key.startswith('maskiou_net.maskiou_net.'):
      index, kind = key.split('.')[2:]
      array = value.float().numpy()
      leaf = 'kernel' if kind == 'weight' else 'bias'
      params.setdefault(f'maskiou_net_{index}', {})[leaf] = (
          array.transpose(2, 3, 1, 0) if kind == 'weight' else array)
  return params


def test_rescore_matches_the_original_on_its_masks():
  ref = load_npz('yolact_plus_resnet50', 'dets.npz')
  cfg = get_config('yolact_base')
  net = MaskIoUNet(((8, 3, 2), (16, 3, 2), (32, 3, 2), (64, 3, 2), (128, 3, 2)),
                   cfg.num_classes - 1)
  params = reference_maskiou_params()
  n = len(ref['scores_0'])
  results = {'proto_masks': ref['proto_res_mask_0'][None], 'scores': ref['scores_0'][None],
             'classes': ref['classes_0'][None], 'valid': np.ones((1, n), bool)}
  out = jax.jit(lambda r: rescore(r, lambda m: net.apply({'params': params}, m)))(results)
  np.testing.assert_allclose(out['mask_scores'][0], ref['mask_scores_0'], rtol=0, atol=1e-5)
  np.testing.assert_array_equal(out['scores'][0], ref['scores_0'])
  assert np.sum(ref['mask_scores_0'] > 0) > 10  # not vacuous


# ---------------------------------------------------------------------------------------------
# End to end on the ++ reference: weights.pth + network input -> detections, via the public API


@pytest.fixture(scope='module')
def plus_reference_predictions():
  require_reference('yolact_plus_resnet50', 'weights.pth')
  ref = load_npz('yolact_plus_resnet50', 'dets.npz')
  sizes = ref['orig_hw_0'][None]
  net_input = np.load(PLUS_DIR / 'input.npy').transpose(0, 2, 3, 1)  # NCHW -> NHWC
  predictor = pr.Predictor(get_config('yolact_plus_resnet50'), PLUS_DIR / 'weights.pth',
                           max_batch=1)
  return predictor.predict_network_input(net_input, sizes)[0], ref


def mask_ious(ours, theirs):
  """Per-pair IoU of binary masks [n, h, w] (1 where both are empty)."""
  ours, theirs = ours.astype(bool), theirs.astype(bool)
  union = (ours | theirs).sum((1, 2))
  return np.where(union > 0, (ours & theirs).sum((1, 2)) / np.maximum(union, 1), 1.0), union


@pytest.mark.slow
def test_plus_end_to_end_reference_parity(plus_reference_predictions):
  result, ref = plus_reference_predictions
  h, w = (int(v) for v in ref['orig_hw_0'])
  assert result.image_size == (h, w) and result.masks.shape[1:] == (h, w)
  ref_boxes, ref_classes = ref['boxes_0'], ref['classes_0']
  pairs = match_detections(ref_boxes.astype(np.float32), ref_classes,
                           result.boxes.astype(np.float32), result.classes, min_iou=0.98)
  assert len(pairs) >= 0.98 * len(ref_classes), f'{len(pairs)} of {len(ref_classes)} matched'
  ri, oi = (np.array(x) for x in zip(*pairs))
  np.testing.assert_allclose(result.scores[oi], ref['scores_0'][ri], rtol=0, atol=1e-3)
  np.testing.assert_allclose(result.mask_scores[oi], ref['mask_scores_0'][ri], rtol=0, atol=1e-3)
  assert np.sum(ref['mask_scores_0'][ri] > 0) > 10  # the rescoring comparison is not vacuous
  assert np.abs(result.boxes[oi] - ref_boxes[ri]).max() <= 1
  iou, union = mask_ious(result.masks[oi], ref['masks_0'][ri])
  assert (union > 0).sum() > 50  # the mask comparison is not vacuous
  # IoU > 0.99 per mask; a small mask may dip below by a pixel or two on which the original's
  # own soft mask sits within 1e-3 of the 0.5 threshold (float noise decides them)
  low = np.flatnonzero(iou <= 0.99)
  assert len(low) <= 2, f'mask IoUs {np.sort(iou)[:5]}'
  for k in low:
    ours, theirs = result.masks[oi[k]].astype(bool), ref['masks_0'][ri[k]].astype(bool)
    ys, xs = np.nonzero(ours ^ theirs)
    soft = ref['proto_res_mask_0'][ri[k]][None, None]
    upsampled = np.asarray(resize_to_canvas(jnp.asarray(soft), jnp.asarray([[h, w]]), (h, w)))
    assert len(ys) <= 2 and np.all(np.abs(upsampled[0, 0, ys, xs] - 0.5) < 1e-3), (
        f'mask {oi[k]}: IoU {iou[k]}, {len(ys)} pixels differ')
