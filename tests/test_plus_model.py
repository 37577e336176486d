"""YOLACT++ model: DCN block placement, state_dict manifests, conversion both ways, ImageNet
initialisation of DCN blocks, priors with 9 anchors, and training of yolact_plus_tiny."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.reference_data import PLUS_RESNET50_DIR, require_reference
from tests.test_convert import read_manifest
from tests.test_train_step import synthetic_batch
from yolact_jax import train_step as ts
from yolact_jax.anchors import level_priors
from yolact_jax.checkpoint import convert
from yolact_jax.config import get_config
from yolact_jax.model.backbone import dcn_blocks
from yolact_jax.model.dcn import ModulatedDeformConv
from yolact_jax.model.variables import abstract_variables, init_variables


def _dcn_blocks_of_model(cfg):
  """{stage: [block, ...]} of the Bottlenecks whose conv2 is a DCN in the built network."""
  backbone = abstract_variables(cfg)['params']['backbone']
  found = {}
  for name, block in backbone.items():
    if name.startswith('layers_') and 'conv_offset_mask' in block.get('conv2', {}):
      stage, index = (int(i) for i in name.split('_')[1:])
      found.setdefault(stage, []).append(index)
  return {stage: sorted(blocks) for stage, blocks in sorted(found.items())}


@pytest.mark.parametrize('preset,expected', [
    # ResNet-101, dcn_layers (0, 4, 23, 3), interval 3: 11 DCNs.
    ('yolact_plus_base', {1: [0, 3], 2: [0, 3, 6, 9, 12, 15, 18, 21], 3: [0]}),
    # ResNet-50, dcn_layers (0, 4, 6, 3), interval 1: every block of C3-C5, 13 DCNs.
    ('yolact_plus_resnet50', {1: [0, 1, 2, 3], 2: [0, 1, 2, 3, 4, 5], 3: [0, 1, 2]}),
    ('yolact_plus_tiny', {1: [0], 2: [0], 3: [0]}),
    ('yolact_resnet50', {}),
])
def test_dcn_block_placement(preset, expected):
  assert _dcn_blocks_of_model(get_config(preset)) == expected


def test_dcn_rule():
  assert dcn_blocks(3, 0) == (False,) * 3
  assert dcn_blocks(4, 4, 3) == (True, False, False, True)
  assert dcn_blocks(6, 2) == (False,) * 4 + (True,) * 2  # only the last dcn_layers blocks
  assert dcn_blocks(6, 6, 2) == (True, False, True, False, True, False)


@pytest.mark.parametrize('preset', ['yolact_plus_base', 'yolact_plus_resnet50'])
def test_flax_variables_map_one_to_one_onto_manifest(preset):
  require_reference('state_dict_keys')
  expected = convert.expected_state_dict_shapes(get_config(preset))
  assert list(expected.items()) == read_manifest(preset)


def test_nine_priors_per_location_scale_major():
  """Per location: (s0, 1), (s0, 1/2), (s0, 2), (s1, 1), ...; ratio 1/2 is a tall box."""
  cfg = get_config('yolact_plus_resnet50')
  a = cfg.model.anchors
  priors = level_priors(2, 3, a.pred_scales[0], a.pred_aspect_ratios[0], 550,
                        use_square_anchors=False)
  assert priors.shape == (2 * 3 * 9, 4)
  first = priors[:9]
  np.testing.assert_array_equal(first[:, :2], [[0.5 / 3, 0.25]] * 9)
  for k, (scale, ratio) in enumerate((s, r) for s in a.pred_scales[0] for r in (1, 0.5, 2)):
    np.testing.assert_allclose(first[k, 2:], [scale * ratio ** 0.5 / 550,
                                              scale / ratio ** 0.5 / 550], rtol=1e-15)
  assert first[1, 3] > first[1, 2] and first[2, 2] > first[2, 3]


@pytest.fixture(scope='module')
def plus_state_dict():
  return convert.load_pth(require_reference('yolact_plus_resnet50', 'weights.pth'))


def test_round_trip_is_bit_exact(plus_state_dict, tmp_path):
  cfg = get_config('yolact_plus_resnet50')
  variables = convert.state_dict_to_variables(plus_state_dict, cfg)
  dcn = variables['params']['backbone']['layers_1_0']['conv2']
  assert dcn['conv_offset_mask']['kernel'].shape == (3, 3, 128, 27)
  assert variables['params']['maskiou_net']['maskiou_net_10']['kernel'].shape == (1, 1, 128, 80)
  back = convert.variables_to_state_dict(variables, dtype=np.float16)
  assert list(back) == list(plus_state_dict)  # same keys, same order
  convert.save_pth(back, tmp_path / 'rt.pth')
  again = convert.load_pth(tmp_path / 'rt.pth')
  assert list(again) == list(plus_state_dict)
  for key, value in plus_state_dict.items():
    assert back[key].dtype == value.dtype and again[key].shape == value.shape, key
    np.testing.assert_array_equal(back[key], value, err_msg=key)
    np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_yolact_and_yolact_plus_checkpoints_do_not_mix(plus_state_dict):
  with pytest.raises(convert.CheckpointError) as info:
    convert.state_dict_to_variables(plus_state_dict, get_config('yolact_resnet50'))
  text = str(info.value)
  assert 'unexpected key backbone.layers.1.0.conv2.conv_offset_mask.weight' in text
  assert 'unexpected key maskiou_net.maskiou_net.0.weight' in text
  assert ('shape mismatch for prediction_layers.0.bbox_layer.weight: checkpoint has '
          '(36, 256, 3, 3), model expects (12, 256, 3, 3)') in text
  v1 = {k: v for k, v in plus_state_dict.items()
        if 'conv_offset_mask' not in k and not k.startswith('maskiou_net')}
  with pytest.raises(convert.CheckpointError, match=r'missing key maskiou_net\.maskiou_net\.0'):
    convert.state_dict_to_variables(v1, get_config('yolact_plus_resnet50'))


def test_imagenet_init_makes_every_dcn_half_the_plain_conv(tmp_path):
  """A torchvision-layout ResNet file (no DCN tensors) into yolact_plus_tiny: conv2.weight loads
  into the DCN, its bias and offset conv are zero, so the DCN computes 0.5 x the plain conv."""
  import torch
  cfg = get_config('yolact_plus_tiny')
  variables = init_variables(cfg, seed=0)
  # Make the DCN tensors non-zero first, as in a model that was already trained.
  variables = jax.tree_util.tree_map_with_path(
      lambda path, v: v + 1.0 if 'conv2' in str(path) else v, variables)
  rng = np.random.default_rng(0)
  plain = {}
  for key, value in convert.variables_to_state_dict(variables).items():
    if not key.startswith('backbone.') or '.conv2.bias' in key or 'conv_offset_mask' in key:
      continue
    name = key[len('backbone.'):]
    if name.startswith('layers.'):
      stage, rest = name[len('layers.'):].split('.', 1)
      name = f'layer{int(stage) + 1}.{rest}'
    plain[name] = torch.from_numpy(rng.normal(size=value.shape).astype(value.dtype))
  plain['fc.weight'] = torch.zeros(10, 64)
  torch.save(plain, tmp_path / 'resnet.pth')
  loaded = convert.load_imagenet_backbone(tmp_path / 'resnet.pth', cfg, variables)
  for stage in (1, 2, 3):
    dcn = loaded['params']['backbone'][f'layers_{stage}_0']['conv2']
    weight = plain[f'layer{stage + 1}.0.conv2.weight'].numpy()
    np.testing.assert_array_equal(dcn['kernel'], weight.transpose(2, 3, 1, 0))
    assert not np.any(dcn['bias']) and not np.any(dcn['conv_offset_mask']['kernel'])
    assert not np.any(dcn['conv_offset_mask']['bias'])
    x = jax.random.normal(jax.random.key(stage), (1, 9, 9, weight.shape[1]))
    ours = ModulatedDeformConv(weight.shape[0], 3, 2, 1).apply({'params': dcn}, x)  # stride 2
    conv = jax.lax.conv_general_dilated(x, jnp.asarray(dcn['kernel']), (2, 2),
                                        ((1, 1), (1, 1)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        precision=jax.lax.Precision.HIGHEST)
    np.testing.assert_allclose(ours, 0.5 * conv, rtol=1e-5, atol=1e-5)


def test_plus_tiny_overfits_one_batch_with_all_five_terms():
  """200 steps on one batch: every term gets a gradient, and the box, class, mask and semantic
  terms fall below a tenth of their start. The mask-IoU term is not held to that: the tiny
  mask-IoU network's ReLU output can die on this batch and hold the term at a constant, and
  whether it does turns on float32 rounding (seen both ways at learning rates 0.001-0.003 with
  programs that differ only in summation order)."""
  cfg = get_config('yolact_plus_tiny', [
      'train.lr=0.003', 'train.lr_warmup_until=20', 'train.max_iter=400', 'train.lr_steps=(1000,)',
      'train.freeze_bn=False'])
  training = ts.build_training(cfg)
  state = training.init_state(init_variables(cfg, seed=0))
  batch = synthetic_batch(cfg)
  maskiou_before = jax.tree_util.tree_map(np.asarray, state.params['maskiou_net'])
  losses, terms = [], []
  for step in range(200):
    state, metrics = training.step(state, batch)
    if step == 0:  # the mask-IoU term reaches its network: the first step moves every kernel
      moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != b)),
                                     state.params['maskiou_net'], maskiou_before)
      assert all(jax.tree_util.tree_leaves(moved)), moved
    losses.append(float(metrics['loss']))
    terms.append({k: float(metrics[k]) for k in 'BCMIS'})
  assert np.all(np.isfinite(losses)) and int(state.num_skipped) == 0
  assert all(np.isfinite(v) for t in terms for v in t.values())
  assert terms[0]['I'] > 0
  for k in 'BCMS':
    assert terms[-1][k] <= 0.1 * terms[0][k], (k, terms[0][k], terms[-1][k])
  assert losses[-1] < losses[0]


def test_a_mask_iou_net_too_deep_for_the_prototypes_is_named():
  cfg = get_config('yolact_plus_tiny',
                   ['model.maskiou_net=((4, 3, 2), (8, 3, 2), (16, 3, 2), (8, 3, 2))'])
  with pytest.raises(ValueError, match='shrinks 16x16 masks to nothing'):
    abstract_variables(cfg)
