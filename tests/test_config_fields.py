"""An honest config: every field formerly ignored now changes the computation or is rejected
with an error naming it; one registry per enumeration; the FPN and head options."""

import dataclasses
import math
import pathlib
import re
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolact_jax import config as C
from yolact_jax import detect as detect_lib
from yolact_jax import normalise, predict
from yolact_jax.data import augment
from yolact_jax.model import backbone, fpn, head

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _loads_named_imagenet_file(tmp_path):
  """model.backbone.pretrained_weights names the file that ``--imagenet <folder>`` loads."""
  import torch
  from yolact_jax.checkpoint import convert
  from yolact_jax.model.yolact import Yolact
  cfg = C.get_config('yolact_tiny')
  x = np.zeros((1, cfg.max_size, cfg.max_size, 3), np.float32)
  init = jax.jit(Yolact(cfg.model, num_classes=cfg.num_classes).init)
  fresh, other = init(jax.random.key(0), x), init(jax.random.key(1), x)
  backbone_only = {k[len('backbone.'):]: torch.from_numpy(np.array(v))
                   for k, v in convert.variables_to_state_dict(other).items()
                   if k.startswith('backbone.')}
  torch.save(backbone_only, tmp_path / 'mine.pth')
  with pytest.raises(convert.CheckpointError, match='model.backbone.pretrained_weights'):
    convert.load_imagenet_backbone(tmp_path, cfg, fresh)  # the tiny preset names no file
  named = C.get_config('yolact_tiny', ['model.backbone.pretrained_weights=mine.pth'])
  loaded = convert.load_imagenet_backbone(tmp_path, named, fresh)
  kernel = lambda v: np.asarray(v['params']['backbone']['conv1']['kernel'])  # noqa: E731
  assert not np.array_equal(kernel(fresh), kernel(other))
  np.testing.assert_array_equal(kernel(loaded), kernel(other))
  return True


def _changes_the_network(field, value, preset='yolact_tiny', base=()):
  """The tiny network at 128 px (P5 4 x 4, so unpadded 3x3 convs fit) has other parameters, or
  computes other outputs, with ``field=value``."""
  from yolact_jax.model.yolact import Yolact

  x = jax.random.normal(jax.random.key(0), (1, 128, 128, 3))
  cfgs = [C.get_config(preset, ['max_size=128', *base, *extra])
          for extra in ([], [f'{field}={value}'])]
  models = [Yolact(cfg.model, num_classes=cfg.num_classes) for cfg in cfgs]
  trees = [jax.eval_shape(m.init, jax.random.key(1), x) for m in models]  # no computation
  if jax.tree.structure(trees[0]) != jax.tree.structure(trees[1]):
    return True
  out0, out1 = (m.apply(m.init(jax.random.key(1), x), x) for m in models)
  return any(out0[k].shape != out1[k].shape or not np.allclose(out0[k], out1[k]) for k in out0)


def _changes_the_maskiou_loss(field, value):
  """The mask-IoU term I of yolact_plus_tiny on a synthetic batch differs with ``field=value``
  (a loss field: the network's outputs are the same for both)."""
  from tests.test_train_step import synthetic_batch
  from yolact_jax.anchors import make_priors
  from yolact_jax.loss import yolact_loss
  from yolact_jax.model.variables import init_variables
  from yolact_jax.model.yolact import Yolact

  cfg = C.get_config('yolact_plus_tiny')
  variables = init_variables(cfg, seed=0)
  batch = synthetic_batch(cfg)
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  preds = jax.jit(lambda v, x: model.apply(v, x, return_segm=True))(variables, batch['image'])

  def term_i(cfg):
    loss = jax.jit(lambda p, b: yolact_loss(preds, make_priors(cfg), b, cfg, None, p)[1]['I'])
    return float(loss(variables['params'], batch))

  before = term_i(cfg)
  after = term_i(C.get_config('yolact_plus_tiny', [f'{field}={value}']))
  return before > 0 and before != after


ACCEPTED = 'accepted'  # valid; its reader lives outside the network and the loss

# Every field the code used to ignore: a non-default value, and a check that the value changes
# what is computed (the fields that could not honour another value are gone: REMOVED below).
FORMERLY_IGNORED = [
    ('model.backbone.dcn_layers', '(0, 1, 1, 1)',
     lambda _: _changes_the_network('model.backbone.dcn_layers', '(0, 1, 1, 1)')),
    ('model.backbone.dcn_interval', '3',
     lambda _: _changes_the_network('model.backbone.dcn_interval', '3',
                                    base=['model.backbone.layers=(1, 1, 4, 1)',
                                          'model.backbone.dcn_layers=(0, 0, 4, 0)'])),
    ('model.backbone.pretrained_weights', 'mine.pth', _loads_named_imagenet_file),
    ('model.fpn.interpolation', 'nearest',
     lambda _: _changes_the_network('model.fpn.interpolation', 'nearest')),
    ('model.fpn.use_conv_downsample', 'False',
     lambda _: _changes_the_network('model.fpn.use_conv_downsample', 'False')),
    ('model.fpn.pad', 'False', lambda _: _changes_the_network('model.fpn.pad', 'False')),
    ('model.head.share_prediction_module', 'False',
     lambda _: _changes_the_network('model.head.share_prediction_module', 'False')),
    ('loss.maskiou_alpha', '10.0',
     lambda _: _changes_the_maskiou_loss('loss.maskiou_alpha', '10.0')),
    ('loss.discard_mask_area', '1000',
     lambda _: _changes_the_maskiou_loss('loss.discard_mask_area', '1000')),
    # Read by the inference program (mask / box re-scoring); its own tests show the effect.
    ('detect.rescore_mask', 'False', ACCEPTED),
    ('detect.rescore_bbox', 'True', ACCEPTED),
    ('model.use_maskiou', 'False',
     lambda _: _changes_the_network('model.use_maskiou', 'False', 'yolact_plus_tiny',
                                    ['detect.rescore_mask=False'])),
    ('model.maskiou_net', '((4, 3, 2), (8, 3, 2))',
     lambda _: _changes_the_network('model.maskiou_net', '((4, 3, 2), (8, 3, 2))',
                                    'yolact_plus_tiny')),
]


@pytest.mark.parametrize('field,value,expect', FORMERLY_IGNORED,
                         ids=[row[0] for row in FORMERLY_IGNORED])
def test_formerly_ignored_field_changes_the_computation(field, value, expect, tmp_path):
  if expect == ACCEPTED:
    C.get_config('yolact_plus_tiny', [f'{field}={value}'])
  else:
    assert expect(tmp_path)


@pytest.mark.parametrize('preset,overrides,message', [
    ('yolact_tiny', ['model.backbone.dcn_layers=(0, 1, 1)'], 'one entry per stage'),
    ('yolact_tiny', ['model.backbone.dcn_layers=(0, -1, 1, 1)'], '>= 0'),
    ('yolact_tiny', ['model.backbone.dcn_interval=0'], 'model.backbone.dcn_interval=0'),
    ('yolact_darknet53', ['model.backbone.dcn_layers=(0, 1, 1, 1, 1)'], 'only in the ResNet'),
    ('yolact_tiny', ['model.use_maskiou=True'], 'needs model.maskiou_net'),
    ('yolact_tiny', ['detect.rescore_mask=True'], 'set model.use_maskiou=True'),
    ('yolact_plus_tiny', ['model.use_maskiou=False', 'detect.rescore_mask=False',
                          'detect.rescore_bbox=True'], 'detect.rescore_bbox'),
    ('yolact_plus_tiny', ['model.maskiou_net=((4, 3, 0),)'], 'model.maskiou_net='),
])
def test_yolact_plus_fields_are_validated(preset, overrides, message):
  with pytest.raises(C.ConfigError, match=re.escape(message)):
    C.get_config(preset, overrides)


# Fields of the earlier layout that went: nothing read dataset.has_gt, and
# mask.binarize_downsampled_gt had one legal value.
REMOVED = [('dataset.has_gt', 'False', 'nothing read it'),
           ('mask.binarize_downsampled_gt', 'True', 'one legal value')]


@pytest.mark.parametrize('field,value,why', REMOVED, ids=[row[0] for row in REMOVED])
def test_a_removed_field_is_an_error_that_says_so(field, value, why):
  with pytest.raises(C.ConfigError, match=re.escape(f"'{field}': it was removed")) as info:
    C.get_config('yolact_tiny', [f'{field}={value}'])
  assert why in str(info.value)
  assert not C.moved_field(field)[1]


def test_every_field_lives_in_one_place():
  """No field name of the earlier layout is still a field path, and each moved one exists."""
  cfg = C.get_config('yolact_plus_tiny')
  for old, new, _ in C.MOVED_FIELDS:
    with pytest.raises(AttributeError):
      C.get_field(cfg, old)
    if new is not None:
      C.get_field(cfg, new)


@pytest.mark.parametrize('name', C.PRESETS)
def test_every_preset_is_valid_as_defined(name):
  import importlib
  C.validate(importlib.import_module(f'yolact_jax.configs.{name}').get_config())


def test_config_files_validate(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('from yolact_jax import config\n\n\ndef get_config():\n'
                 '  import dataclasses\n  from yolact_jax.configs import yolact_tiny\n'
                 '  cfg = yolact_tiny.get_config()\n'
                 '  return dataclasses.replace(cfg, loss=dataclasses.replace(\n'
                 '      cfg.loss, masks_to_train=0))\n')
  with pytest.raises(C.ConfigError, match='loss.masks_to_train=0'):
    C.load_config(str(bad))
  derived = tmp_path / 'mine.py'
  derived.write_text('import dataclasses\n\nfrom yolact_jax.configs import yolact_tiny\n\n\n'
                     'def get_config():\n  cfg = yolact_tiny.get_config()\n'
                     "  return dataclasses.replace(cfg, name='mine')\n")
  assert C.load_config(str(derived), ['train.seed=2']) == dataclasses.replace(
      C.get_config('yolact_tiny', ['train.seed=2']), name='mine')
  for text in ('X = 1\n', 'def get():\n  return None\n'):  # the older name get() is gone
    none = tmp_path / 'none.py'
    none.write_text(text)
    with pytest.raises(C.ConfigError, match='get_config'):
      C.load_config(str(none))


def test_config_files_define_get_config():
  for f in sorted((ROOT / 'configs').glob('yolact_*.py')):
    text = f.read_text()
    assert 'def get_config() -> YolactConfig:' in text and 'get = ' not in text, f.name
    assert f"load_config('configs/{f.name}')" in text, f.name
    assert 'yolact_jax.config.get_config(' not in text, f.name  # the values live in the file
    if f.stem == 'yolact_base':  # the parent: every value stated
      assert 'return YolactConfig(' in text and 'from yolact_jax.configs' not in text
    else:  # a derived preset: its parent's get_config(), fields replaced
      assert 'from yolact_jax.configs import' in text and '.get_config()' in text, f.name


# ------------------------------------------------------------------ ranges and finite numbers

# Every field with a legal range: (field, values admitted, values refused, the range as the error
# states it). The upper limits keep padded arrays bounded (max_size=100000 was a 14 GiB
# MemoryError).
RANGED = [
    ('max_size', ['32', '4096'], ['31', '4097', '100000'], '[32, 4096]'),
    ('detect.nms_top_k', ['1', '100000'], ['0', '-5'], '>= 1'),
    ('detect.nms_conf_thresh', ['0.0', '1.0'], ['-0.01', '1.5'], '[0, 1]'),
    ('detect.nms_thresh', ['0.0', '1.0'], ['-1.0', '1.01'], '[0, 1]'),
    ('detect.max_num_detections', ['1', '1000'], ['0', '1001', '100000000'], '[1, 1000]'),
    ('detect.candidates_per_level', ['0', '100000'], ['-1'], '>= 0'),
    ('detect.clamp_log_size', ['0.0', '10.0'], ['-1.0'], '>= 0'),
    ('detect.iou_union_floor', ['0.0', '1.0'], ['-1e-06'], '>= 0'),
    ('loss.positive_iou_threshold', ['0.0', '1.0'], ['-0.5', '2.0'], '[0, 1]'),
    ('loss.negative_iou_threshold', ['0.0', '1.0'], ['-0.5', '2.0'], '[0, 1]'),
    ('loss.crowd_iou_threshold', ['0.0', '1.0'], ['-0.5', '2.0'], '[0, 1]'),
    ('loss.masks_to_train', ['1', '100000'], ['0'], '>= 1'),
    ('train.max_instances', ['1', '1000'], ['0', '1001'], '[1, 1000]'),
]


@pytest.mark.parametrize('field,admitted,refused,legal', RANGED, ids=[row[0] for row in RANGED])
def test_ranged_fields_admit_their_range_and_refuse_the_rest(field, admitted, refused, legal):
  for value in admitted:
    cfg = C.get_config('yolact_tiny', [f'{field}={value}'])
    assert C.get_field(cfg, field) == float(value)
  for value in refused:
    with pytest.raises(C.ConfigError) as info:
      C.get_config('yolact_tiny', [f'{field}={value}'])
    message = str(info.value)
    assert message.startswith(f'{field}={value}') and legal in message, message


def test_a_ranged_field_of_another_type_is_refused_by_name():
  cfg = C.get_config('yolact_tiny')
  for bad in ('550', None, True):  # a config file's get_config() is not type-checked
    with pytest.raises(C.ConfigError, match=re.escape(f'max_size={bad!r}: expected a number')):
      C.validate(dataclasses.replace(cfg, max_size=bad))


def test_the_table_covers_the_ranges():
  assert {row[0] for row in RANGED} == {row[0] for row in C._RANGES}


def _float_fields(cls=C.YolactConfig, prefix=''):
  """Every field whose type holds a float (a number, or tuples of numbers), from the schema."""
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(hints[f.name]):
      yield from _float_fields(hints[f.name], f'{prefix}{f.name}.')
    elif 'float' in str(hints[f.name]):
      yield prefix + f.name


def _with_number(value, number):
  """``value`` (a number or nested tuples) with its first number replaced by ``number``."""
  if not isinstance(value, tuple):
    return number
  return (_with_number(value[0], number), *value[1:])


def _replaced(cfg, path, value):
  key, _, rest = path.partition('.')
  inner = _replaced(getattr(cfg, key), rest, value) if rest else value
  return dataclasses.replace(cfg, **{key: inner})


FLOAT_FIELDS = sorted(_float_fields())


def test_the_float_fields_are_found():
  assert {'detect.nms_conf_thresh', 'train.lr', 'model.anchors.pred_scales',
          'augment.discard_box_width'} <= set(FLOAT_FIELDS)
  assert 'max_size' not in FLOAT_FIELDS and 'train.freeze_bn' not in FLOAT_FIELDS


@pytest.mark.parametrize('field', FLOAT_FIELDS)
@pytest.mark.parametrize('number', [math.nan, math.inf, -math.inf], ids=['nan', 'inf', '-inf'])
def test_no_float_field_takes_nan_or_inf(field, number):
  cfg = C.get_config('yolact_plus_tiny')  # a preset whose every float field matters
  bad = _replaced(cfg, field, _with_number(C.get_field(cfg, field), number))
  with pytest.raises(C.ConfigError) as info:
    C.validate(bad)
  message = str(info.value)
  assert message.startswith(f'{field}=') and 'finite' in message, message


def test_an_infinite_override_is_refused_by_name():
  with pytest.raises(C.ConfigError, match=re.escape('detect.nms_thresh=inf')):
    C.get_config('yolact_tiny', ['detect.nms_thresh=1e999'])  # the literal 1e999 is inf


# ------------------------------------------------------------------------------- registries


@pytest.mark.parametrize('field,registry', [
    ('detect.nms', C.NMS_KINDS), ('model.backbone.kind', C.BACKBONE_KINDS),
    ('model.backbone.transform', C.INPUT_TRANSFORMS),
    ('model.fpn.interpolation', C.FPN_INTERPOLATIONS),
    ('train.optimizer', C.OPTIMIZERS)])
def test_validate_reads_the_registry(field, registry):
  with pytest.raises(C.ConfigError) as info:
    C.get_config('yolact_tiny', [f'{field}=nonsense'])
  assert field in str(info.value)
  for name in registry:
    assert repr(name) in str(info.value)


def test_implementations_use_the_registries():
  assert detect_lib.NMS_KINDS is C.NMS_KINDS
  assert tuple(backbone.BACKBONES) == C.BACKBONE_KINDS
  assert augment.TRANSFORM_KINDS is C.INPUT_TRANSFORMS
  assert tuple(fpn.RESIZE) == C.FPN_INTERPOLATIONS
  image = np.full((2, 2, 3), 128, np.uint8)
  assert predict.normalise is augment.normalise is normalise.normalise  # one normalisation
  for kind in C.INPUT_TRANSFORMS:  # it knows every transform, on the host and on the device
    host = augment.backbone_transform(image, kind)  # BGR in, RGB out
    device = jax.jit(normalise.normalise, static_argnums=1)(
        jnp.asarray(image[..., ::-1], jnp.float32), kind)
    np.testing.assert_allclose(host, device, rtol=1e-6)  # XLA's division: within 1 ulp
  with pytest.raises(ValueError, match='resnet'):
    normalise.normalise(image.astype(np.float32), 'vgg')


@pytest.mark.parametrize('command', ['evaluate', 'predict', 'export'])
def test_cli_nms_choices_are_the_registry(command):
  import importlib
  parser = importlib.import_module(f'yolact_jax.cli.{command}').build_parser()
  (action,) = [a for a in parser._actions if '--nms' in a.option_strings]
  assert tuple(action.choices) == C.NMS_KINDS


# -------------------------------------------------------------------- FPN and head options


def _features(seed=0, sizes=(13, 7, 4), channels=(6, 8, 10)):
  keys = jax.random.split(jax.random.key(seed), len(sizes))
  return [jax.random.normal(k, (1, n, n, c)) for k, n, c in zip(keys, sizes, channels)]


def _fpn_outputs(**options):
  module = fpn.FPN(8, 2, True, False, jnp.float32, **options)
  feats = _features()
  variables = module.init(jax.random.key(1), feats)
  return variables, module.apply(variables, feats)


def test_fpn_defaults_are_the_presets():
  fields = {f.name: f.default for f in dataclasses.fields(C.FPNConfig)}
  assert (fpn.FPN.interpolation, fpn.FPN.use_conv_downsample, fpn.FPN.pad) == (
      fields['interpolation'], fields['use_conv_downsample'], fields['pad'])


def test_fpn_nearest_matches_torch():
  torch = pytest.importorskip('torch')
  x = np.random.default_rng(0).normal(size=(1, 7, 4, 3)).astype(np.float32)
  for h, w in [(13, 7), (14, 8), (7, 4), (20, 9)]:
    ours = fpn.resize_nearest(jnp.asarray(x), h, w)
    theirs = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2),
                                             size=(h, w), mode='nearest')
    np.testing.assert_array_equal(ours, theirs.permute(0, 2, 3, 1).numpy())
  (_, bilinear), (_, nearest) = _fpn_outputs(), _fpn_outputs(interpolation='nearest')
  assert not np.allclose(bilinear[0], nearest[0])  # P3 sees the resized levels above
  np.testing.assert_array_equal(bilinear[2], nearest[2])  # P5 does not


def test_fpn_max_pool_downsample_matches_torch():
  torch = pytest.importorskip('torch')
  variables, outs = _fpn_outputs(use_conv_downsample=False)
  assert 'downsample_layers_0' not in variables['params']
  p5 = torch.from_numpy(np.array(outs[2])).permute(0, 3, 1, 2)
  p6 = torch.nn.functional.max_pool2d(p5, 1, stride=2)
  p7 = torch.nn.functional.max_pool2d(p6, 1, stride=2)
  np.testing.assert_array_equal(outs[3], p6.permute(0, 2, 3, 1).numpy())
  np.testing.assert_array_equal(outs[4], p7.permute(0, 2, 3, 1).numpy())
  _, conv_outs = _fpn_outputs()
  assert [o.shape for o in outs] == [o.shape for o in conv_outs]  # both ceil(n / 2)


def test_fpn_without_padding_shrinks_the_prediction_levels():
  _, outs = _fpn_outputs(pad=False)
  assert [o.shape[1] for o in outs] == [11, 5, 2, 1, 1]
  _, padded = _fpn_outputs()
  assert [o.shape[1] for o in padded] == [13, 7, 4, 2, 1]


class _Heads(head.nn.Module):
  share: bool

  @head.nn.compact
  def __call__(self, levels):
    modules = head.prediction_modules(len(levels), self.share, 3, 2, 1, (4,))
    outs = [m(x) for m, x in zip(modules, levels)]
    return jnp.concatenate([o['conf'] for o in outs], axis=1)


def test_heads_shared_or_one_per_level():
  levels = [jax.random.normal(jax.random.key(i), (1, n, n, 5)) for i, n in enumerate((4, 2, 1))]
  shared = _Heads(True).init(jax.random.key(0), levels)['params']
  assert list(shared) == ['prediction_layers_0']
  separate = _Heads(False).init(jax.random.key(0), levels)['params']
  assert list(separate) == ['prediction_layers_0', 'prediction_layers_1', 'prediction_layers_2']
  assert jax.tree.structure(separate['prediction_layers_2']) == jax.tree.structure(
      shared['prediction_layers_0'])
  # Level 1 run through level 0's parameters differs from its own parameters.
  own = _Heads(False).apply({'params': separate}, levels)
  tied = {k: separate['prediction_layers_0'] for k in separate}
  reused = _Heads(False).apply({'params': tied}, levels)
  np.testing.assert_array_equal(own[:, :16], reused[:, :16])
  assert not np.allclose(own[:, 16:], reused[:, 16:])
