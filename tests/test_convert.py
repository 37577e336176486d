"""Checkpoint conversion: manifests, bit-exact round trip, bad input."""

import pickle

import numpy as np
import pytest

from yolact_jax.checkpoint import convert
from yolact_jax.config import get_config
from tests.reference_data import REFERENCE_DIR, RESNET50_DIR, require_reference


def read_manifest(preset):
  path = REFERENCE_DIR / 'state_dict_keys' / f'keys_{preset}.tsv'
  rows = []
  for line in path.read_text().splitlines()[1:]:
    key, shape, _ = line.split('\t')
    rows.append((key, () if shape == 'scalar' else tuple(int(s) for s in shape.split('x'))))
  return rows


@pytest.mark.parametrize('preset,manifest', [
    ('yolact_base', 'yolact_base'), ('yolact_darknet53', 'yolact_darknet53'),
    ('yolact_im700', 'yolact_base'), ('yolact_im400', 'yolact_base'),
    ('yolact_resnet50', 'yolact_resnet50')])
def test_flax_variables_map_one_to_one_onto_manifest(preset, manifest):
  require_reference('state_dict_keys')
  expected = convert.expected_state_dict_shapes(get_config(preset))
  assert list(expected.items()) == read_manifest(manifest)


@pytest.fixture(scope='module')
def reference_state_dict():
  require_reference('yolact_resnet50/weights.pth')
  return convert.load_pth(RESNET50_DIR / 'weights.pth')


def test_round_trip_is_bit_exact(reference_state_dict, tmp_path):
  cfg = get_config('yolact_resnet50')
  variables = convert.state_dict_to_variables(reference_state_dict, cfg)
  back = convert.variables_to_state_dict(variables, dtype=np.float16)
  assert list(back) == list(reference_state_dict)  # same keys, same order
  for key, value in reference_state_dict.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
    np.testing.assert_array_equal(back[key], value, err_msg=key)
  # through a .pth file on disk as well
  convert.save_pth(back, tmp_path / 'rt.pth')
  again = convert.load_pth(tmp_path / 'rt.pth')
  assert list(again) == list(reference_state_dict)
  for key, value in reference_state_dict.items():
    assert again[key].shape == value.shape, key
    np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_conversion_casts_to_float32_and_transposes(reference_state_dict):
  variables = convert.state_dict_to_variables(reference_state_dict, get_config('yolact_resnet50'))
  kernel = variables['params']['backbone']['conv1']['kernel']
  assert kernel.dtype == np.float32 and kernel.shape == (7, 7, 3, 64)
  torch_weight = reference_state_dict['backbone.conv1.weight']  # [64, 3, 7, 7]
  assert kernel[2, 5, 1, 10] == np.float32(torch_weight[10, 1, 2, 5])
  stats = variables['batch_stats']['backbone']['bn1']
  np.testing.assert_array_equal(stats['var'], reference_state_dict['backbone.bn1.running_var'])


def test_wrapped_and_module_prefixed_checkpoints(reference_state_dict, tmp_path):
  import torch
  wrapped = {'state_dict': {'module.' + k: torch.from_numpy(v)
                            for k, v in list(reference_state_dict.items())[:4]}}
  torch.save(wrapped, tmp_path / 'wrapped.pth')
  loaded = convert.load_pth(tmp_path / 'wrapped.pth')
  assert list(loaded) == list(reference_state_dict)[:4]


def test_checkpoint_of_another_preset_is_a_clear_error(reference_state_dict):
  with pytest.raises(convert.CheckpointError) as info:
    convert.state_dict_to_variables(reference_state_dict, get_config('yolact_base'))
  text = str(info.value)
  assert "'yolact_base'" in text
  assert 'missing key backbone.layers.2.6.conv1.weight' in text
  # darknet: misshapen keys are named with both shapes
  with pytest.raises(convert.CheckpointError) as info:
    convert.state_dict_to_variables(reference_state_dict, get_config('yolact_darknet53'))
  assert 'shape mismatch for fpn.lat_layers.0.weight: checkpoint has (256, 2048, 1, 1), ' \
         'model expects (256, 1024, 1, 1)' in str(info.value)


def test_unexpected_key_is_named(reference_state_dict):
  extra = dict(reference_state_dict)
  extra['maskiou_net.maskiou_net.0.weight'] = np.zeros((8, 1, 3, 3), np.float32)
  with pytest.raises(convert.CheckpointError, match=r'unexpected key maskiou_net\.maskiou_net'):
    convert.state_dict_to_variables(extra, get_config('yolact_resnet50'))


def test_legacy_keys_are_dropped_like_the_original(reference_state_dict):
  legacy = dict(reference_state_dict)
  legacy['backbone.layer1.0.conv1.weight'] = np.zeros(1, np.float32)
  legacy['fpn.downsample_layers.2.weight'] = np.zeros(1, np.float32)
  convert.state_dict_to_variables(legacy, get_config('yolact_resnet50'))  # no error


def test_truncated_file(tmp_path):
  require_reference('yolact_resnet50/weights.pth')
  data = (RESNET50_DIR / 'weights.pth').read_bytes()
  (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
  with pytest.raises(convert.CheckpointError, match='cut.pth'):
    convert.load_pth(tmp_path / 'cut.pth')


class NotWeights:
  def __reduce__(self):
    return (print, ('this must never run',))


def test_non_checkpoint_pickles(tmp_path, capsys):
  with open(tmp_path / 'evil.pth', 'wb') as f:
    pickle.dump(NotWeights(), f)
  with pytest.raises(convert.CheckpointError, match='not a plain weights checkpoint'):
    convert.load_pth(tmp_path / 'evil.pth')
  assert 'this must never run' not in capsys.readouterr().out
  import torch
  torch.save([1, 2, 3], tmp_path / 'list.pth')
  with pytest.raises(convert.CheckpointError, match='does not hold a state_dict'):
    convert.load_pth(tmp_path / 'list.pth')
  (tmp_path / 'text.pth').write_text('hello')
  with pytest.raises(convert.CheckpointError, match='text.pth'):
    convert.load_pth(tmp_path / 'text.pth')
  with pytest.raises(convert.CheckpointError, match='not found'):
    convert.load_pth(tmp_path / 'missing.pth')


def test_imagenet_backbone_from_torchvision_layout(tmp_path):
  """A torchvision-layout ResNet file (layerN., fc.) fills exactly the backbone."""
  import jax
  import torch
  cfg = get_config('yolact_tiny')
  from yolact_jax.model.yolact import Yolact
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, 64, 64, 3), np.float32))
  sd = convert.variables_to_state_dict(variables)
  rng = np.random.default_rng(0)
  torchvision = {}
  for key, value in sd.items():
    if not key.startswith('backbone.'):
      continue
    name = key[len('backbone.'):]
    if name.startswith('layers.'):
      stage, rest = name[len('layers.'):].split('.', 1)
      name = f'layer{int(stage) + 1}.{rest}'
    torchvision[name] = torch.from_numpy(np.asarray(rng.normal(size=value.shape)).astype(value.dtype))
  torchvision['fc.weight'] = torch.zeros(10, 64)
  torch.save(torchvision, tmp_path / 'resnet.pth')
  loaded = convert.load_imagenet_backbone(tmp_path / 'resnet.pth', cfg, variables)
  new_sd = convert.variables_to_state_dict(loaded)
  np.testing.assert_array_equal(new_sd['backbone.layers.1.0.conv2.weight'],
                                torchvision['layer2.0.conv2.weight'].numpy())
  np.testing.assert_array_equal(new_sd['fpn.lat_layers.0.weight'], sd['fpn.lat_layers.0.weight'])
  del torchvision['layer1.0.conv1.weight']
  torch.save(torchvision, tmp_path / 'partial.pth')
  with pytest.raises(convert.CheckpointError, match='missing key backbone.layers.0.0.conv1'):
    convert.load_imagenet_backbone(tmp_path / 'partial.pth', cfg, variables)


def test_cli_round_trip_through_a_flax_directory(tmp_path):
  require_reference('yolact_resnet50/weights.pth')
  from scripts import convert_weights
  src = RESNET50_DIR / 'weights.pth'
  assert convert_weights.main(['--config', 'yolact_resnet50', str(src), str(tmp_path / 'w')]) == 0
  assert convert_weights.main(['--config', 'yolact_resnet50', '--dtype', 'float16',
                               str(tmp_path / 'w'), str(tmp_path / 'back.pth')]) == 0
  original, back = convert.load_pth(src), convert.load_pth(tmp_path / 'back.pth')
  assert list(original) == list(back)
  for key in original:
    np.testing.assert_array_equal(original[key], back[key], err_msg=key)
  # the wrong preset is reported, not a traceback
  assert convert_weights.main(['--config', 'yolact_base', str(src), str(tmp_path / 'x')]) == 1
