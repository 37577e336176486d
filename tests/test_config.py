"""Config presets and command-line overrides."""

import dataclasses
import json
import pathlib
import re
import shutil

import pytest

from yolact_jax import config as C
from yolact_jax.model import shapes


@pytest.mark.parametrize('name,max_size,layers,selected,scales,masks_to_train', [
    ('yolact_base', 550, (3, 4, 23, 3), (1, 2, 3), ((24,), (48,), (96,), (192,), (384,)), 100),
    ('yolact_im400', 400, (3, 4, 23, 3), (1, 2, 3), ((17,), (34,), (69,), (139,), (279,)), 100),
    ('yolact_im700', 700, (3, 4, 23, 3), (1, 2, 3), ((30,), (61,), (122,), (244,), (488,)), 300),
    ('yolact_resnet50', 550, (3, 4, 6, 3), (1, 2, 3), ((24,), (48,), (96,), (192,), (384,)), 100),
    ('yolact_darknet53', 550, (1, 2, 8, 8, 4), (2, 3, 4), ((24,), (48,), (96,), (192,), (384,)),
     100),
])
def test_presets_match_the_original(name, max_size, layers, selected, scales, masks_to_train):
  cfg = C.get_config(name)
  assert cfg.name == name and cfg.max_size == max_size
  b, a = cfg.model.backbone, cfg.model.anchors
  assert b.layers == layers and b.selected_layers == selected
  assert a.pred_scales == scales
  assert a.pred_aspect_ratios == ((1, 0.5, 2),) * 5
  assert a.use_square_anchors and a.use_pixel_scales
  assert not a.preapply_sqrt
  assert cfg.loss.masks_to_train == masks_to_train
  assert cfg.num_classes == 81 and a.num_anchors == 3
  assert (cfg.loss.bbox_alpha, cfg.loss.conf_alpha, cfg.loss.mask_alpha) == (1.5, 1.0, 6.125)
  d = cfg.detect
  assert (d.nms, d.nms_top_k, d.nms_conf_thresh, d.nms_thresh, d.max_num_detections) == (
      'fast', 200, 0.05, 0.5, 100)
  t = cfg.train
  assert (t.lr, t.momentum, t.decay, t.lr_steps, t.max_iter) == (
      1e-3, 0.9, 5e-4, (280000, 600000, 700000, 750000), 800000)
  assert b.transform == ('darknet' if 'darknet' in name else 'resnet')


# The original's YOLACT++ scales: per level i, [i, i * 2^(1/3), i * 2^(2/3)].
_PLUS_SCALES = tuple(tuple(i * 2 ** (j / 3.0) for j in range(3)) for i in (24, 48, 96, 192, 384))


@pytest.mark.parametrize('name,parent,layers,dcn_layers,dcn_interval', [
    ('yolact_plus_base', 'yolact_base', (3, 4, 23, 3), (0, 4, 23, 3), 3),
    ('yolact_plus_resnet50', 'yolact_resnet50', (3, 4, 6, 3), (0, 4, 6, 3), 1),
])
def test_plus_presets_match_the_original(name, parent, layers, dcn_layers, dcn_interval):
  cfg, v1 = C.get_config(name), C.get_config(parent)
  m = cfg.model
  b, a = m.backbone, m.anchors
  assert cfg.name == name and b.layers == layers
  assert (b.dcn_layers, b.dcn_interval) == (dcn_layers, dcn_interval)
  assert a.pred_scales == _PLUS_SCALES and a.pred_scales[0][1] == pytest.approx(30.2381, abs=1e-4)
  assert a.pred_aspect_ratios == ((1, 0.5, 2),) * 5 and a.num_anchors == 9
  assert (a.use_pixel_scales, a.preapply_sqrt, a.use_square_anchors) == (True, False, False)
  assert m.use_maskiou and m.maskiou_net == (
      (8, 3, 2), (16, 3, 2), (32, 3, 2), (64, 3, 2), (128, 3, 2))
  assert (cfg.loss.maskiou_alpha, cfg.loss.discard_mask_area) == (25.0, 25)
  assert (cfg.detect.rescore_mask, cfg.detect.rescore_bbox) == (True, False)
  # Everything else is the v1 parent's.
  plain = dataclasses.replace(
      cfg, name=v1.name, loss=v1.loss, detect=v1.detect,
      model=dataclasses.replace(m, use_maskiou=False, maskiou_net=(), backbone=v1.model.backbone,
                                anchors=v1.model.anchors))
  assert plain == v1


@pytest.mark.parametrize('name,sizes,proto,priors', [
    ('yolact_base', [69, 35, 18, 9, 5], 138, 19248),
    ('yolact_im400', [50, 25, 13, 7, 4], 100, 10077),
    ('yolact_im700', [88, 44, 22, 11, 6], 176, 30963),
    ('yolact_darknet53', [69, 35, 18, 9, 5], 138, 19248),
    ('yolact_resnet50', [69, 35, 18, 9, 5], 138, 19248),
    ('yolact_tiny', [8, 4, 2, 1, 1], 16, 258),
    ('yolact_cpu', [16, 8, 4, 2, 1], 32, 1023),
    ('yolact_plus_base', [69, 35, 18, 9, 5], 138, 57744),
    ('yolact_plus_resnet50', [69, 35, 18, 9, 5], 138, 57744),
    ('yolact_plus_tiny', [8, 4, 2, 1, 1], 16, 774),
    ('yolact_mmdet_r50', [69, 35, 18, 9, 5], 138, 19248),
    ('yolact_mmdet_r101', [69, 35, 18, 9, 5], 138, 19248),
    ('yolact_mmdet_tiny', [12, 6, 3, 2, 1], 24, 582),
])
def test_shape_facts(name, sizes, proto, priors):
  """The sizes read off the network (jax.eval_shape) equal the known ones, for every preset."""
  cfg = C.get_config(name)
  assert shapes.feature_sizes(cfg) == sizes
  assert shapes.proto_size(cfg) == proto
  assert shapes.num_priors(cfg) == priors


def test_every_preset_has_known_shapes():
  tested = {'yolact_base', 'yolact_im400', 'yolact_im700', 'yolact_darknet53', 'yolact_resnet50',
            'yolact_tiny', 'yolact_cpu', 'yolact_plus_base', 'yolact_plus_resnet50',
            'yolact_plus_tiny', 'yolact_mmdet_r50', 'yolact_mmdet_r101', 'yolact_mmdet_tiny'}
  assert set(C.PRESETS) == tested


def test_mmdet_presets_are_the_originals_but_for_the_named_fields():
  """yolact_mmdet_r50 / r101 are yolact_resnet50 / yolact_base but for mmdetection's input
  resize, FPN, anchor shapes, Detect, float boxes, loss, augmentation, ImageNet file, BatchNorm
  always trained and 55-epoch schedule (its
  yolact_r50_1xb8-55e_coco config: 14659 iterations an epoch, lr steps at epochs 20, 42, 49,
  52, test_cfg nms_pre 1000, score_thr 0.05, iou_thr 0.5, top_k 200, max_per_img 100)."""
  for name, parent in (('yolact_mmdet_r50', 'yolact_resnet50'),
                       ('yolact_mmdet_r101', 'yolact_base')):
    cfg, v1 = C.get_config(name), C.get_config(parent)
    m, d = cfg.model, cfg.detect
    assert m.backbone.input_resize == 'uint8' and m.anchors.use_square_anchors is False
    assert m.anchors.pred_aspect_ratios == ((2, 1, 0.5),) * 5  # mmdetection's h/w 0.5, 1, 2
    assert (m.fpn.relu_pred_layers, m.fpn.downsample_from_backbone) == (False, True)
    assert (d.nms_top_k, d.nms_conf_thresh, d.nms_thresh, d.max_num_detections) == (
        200, 0.05, 0.5, 100)
    assert (d.candidates_per_level, d.second_threshold, d.clip_boxes, d.iou_union_floor,
            d.float_boxes) == (1000, True, True, 1e-6, True)
    assert d.clamp_log_size == pytest.approx(4.135166556742356)
    assert cfg.train.lr_steps == (293180, 615678, 718291, 762268)
    assert cfg.train.max_iter == 806245 and cfg.train.freeze_bn is False
    lc = cfg.loss
    assert (lc.matcher, lc.crowd_iou_threshold, lc.ohem_keep_negatives_without_positives,
            lc.count_one_positive_at_least, lc.mask_normalise_by_trained,
            lc.semantic_class_offset, lc.semantic_skips_empty_images) == (
                'max_iou', 1.0, True, True, True, -1, True)
    assert cfg.augment == dataclasses.replace(v1.augment, pipeline='mmdet')
    plain = dataclasses.replace(
        cfg, name=v1.name, detect=v1.detect, train=v1.train, loss=v1.loss, augment=v1.augment,
        model=dataclasses.replace(m, backbone=v1.model.backbone, anchors=v1.model.anchors,
                                  fpn=v1.model.fpn))
    assert plain == v1


def test_shapes_follow_the_input_size():
  cfg = C.get_config('yolact_base')
  assert shapes.feature_sizes(cfg, 400) == [50, 25, 13, 7, 4]
  assert shapes.proto_size(cfg, 700) == 176


def test_configs_are_frozen():
  cfg = C.get_config('yolact_base')
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.max_size = 3  # type: ignore[misc]


def test_overrides_are_typed():
  cfg = C.get_config('yolact_base', ['--config.train.lr=1e-4', 'train.lr_steps=[10, 20]',
                                     'detect.nms=standard', 'train.freeze_bn=True',
                                     'dataset.train_images=/data/imgs', 'max_size=600.0'])
  assert cfg.train.lr == 1e-4 and cfg.train.lr_steps == (10, 20)
  assert cfg.detect.nms == 'standard' and cfg.train.freeze_bn is True
  assert cfg.dataset.train_images == '/data/imgs' and cfg.max_size == 600
  assert isinstance(cfg.max_size, int)


@pytest.mark.parametrize('override,message', [
    ('train.lrr=1', "no field 'lrr'. Did you mean lr?"),
    ('trian.lr=1', "no field 'trian'. Did you mean train?"),
    ('train.lr=fast', 'expected a number'),
    ('train.freeze_bn=3', 'expected'),
    ('train=3', 'group of fields'),
    ('detect.nms=fastest', "detect.nms must be"),
    ('train.lr', 'must look like'),
])
def test_bad_overrides_name_the_problem(override, message):
  with pytest.raises(C.ConfigError) as info:
    C.get_config('yolact_base', [override])
  assert message in str(info.value)


def test_unknown_preset_suggests():
  with pytest.raises(KeyError, match='yolact_base'):
    C.get_config('yolact_bas')


def test_config_files_select_their_preset():
  import pathlib
  root = pathlib.Path(__file__).resolve().parents[1]
  files = sorted((root / 'configs').glob('yolact_*.py'))
  assert {f.name for f in (root / 'configs').glob('*.py')} - {f.name for f in files} == {
      '__init__.py'}
  assert {f.stem for f in files} == set(C.PRESETS)
  for f in files:
    cfg = C.load_config(str(f), ['train.seed=3'])
    assert cfg.name == f.stem and cfg.train.seed == 3
    assert 'yolact-jax train --config configs/' in f.read_text()
  with pytest.raises(FileNotFoundError, match='nope.py'):
    C.load_config('configs/nope.py')


def test_parse_args_keeps_overrides_and_rejects_other_unknowns():
  import argparse
  parser = argparse.ArgumentParser()
  parser.add_argument('--steps', type=int)
  args, overrides = C.parse_args_with_overrides(
      parser, ['--steps', '3', '--config.train.lr=0.1', '--config.max_size=96'])
  assert args.steps == 3 and overrides == ['--config.train.lr=0.1', '--config.max_size=96']
  with pytest.raises(SystemExit):
    C.parse_args_with_overrides(parser, ['--stpes', '3'])


# ------------------------------------------------------------------------- the earlier layout

# A run directory's config.json as the code before the model section wrote it: yolact_plus_tiny
# with --config.backbone.pred_scales=..., mask.masks_to_train=7, mask.proto_crop=False,
# fpn.num_features=8, maskiou_net=((4, 3, 2), (8, 3, 2)), backbone.use_square_anchors=True,
# train.lr=0.5 (and mask.mask_dim=8, head.head_padding=1: the preset's own values).
EARLIER_RUN_CONFIG = pathlib.Path(__file__).parent / 'data' / 'config_before_model_section.json'


def test_a_run_config_of_the_earlier_layout_still_loads(tmp_path):
  data = json.loads(EARLIER_RUN_CONFIG.read_text())
  assert 'model' not in data and data['mask']['binarize_downsampled_gt'] is True
  assert data['dataset']['has_gt'] is True
  expected = C.get_config('yolact_plus_tiny', [
      'model.anchors.pred_scales=((10, 12, 14), (20, 24, 28), (40, 48, 56), (80, 96, 112), '
      '(160, 192, 224))', 'loss.masks_to_train=7', 'loss.proto_crop=False',
      'model.fpn.num_features=8', 'model.maskiou_net=((4, 3, 2), (8, 3, 2))',
      'model.anchors.use_square_anchors=True', 'train.lr=0.5'])
  assert C.config_from_dict(data) == expected
  from yolact_jax.cli import common
  shutil.copy(EARLIER_RUN_CONFIG, tmp_path / common.RUN_CONFIG)
  assert common.resolve_config(None, ['--config.train.seed=4'], tmp_path) == (
      dataclasses.replace(expected, train=dataclasses.replace(expected.train, seed=4)))


def test_an_unknown_field_of_the_earlier_layout_is_still_named():
  data = json.loads(EARLIER_RUN_CONFIG.read_text())
  data['backbone']['layerz'] = [1, 1, 1, 1]
  with pytest.raises(C.ConfigError, match="model.backbone.layerz"):
    C.config_from_dict(data)


@pytest.mark.parametrize('override,message', [
    ('backbone.pred_scales=((24,), (48,), (96,), (192,), (384,))',
     'it is now model.anchors.pred_scales'),
    ('backbone.layers=(3, 4, 6, 3)', 'it is now model.backbone.layers'),
    ('mask.masks_to_train=3', 'it is now loss.masks_to_train'),
    ('mask.mask_dim=16', 'it is now model.mask.mask_dim'),
    ('use_maskiou=True', 'it is now model.use_maskiou'),
    ('fpn.num_feature=2', "FPNConfig has no field 'num_feature'. Did you mean num_features?"),
])
def test_an_override_in_the_earlier_spelling_gives_the_new_one(override, message):
  with pytest.raises(C.ConfigError, match=re.escape(message)):
    C.get_config('yolact_base', [override])


def test_the_presets_ship_inside_the_package():
  """yolact_jax/configs is the top-level configs/ (a link), so the presets import as
  yolact_jax.configs.<name> from a checkout, and a wheel (setuptools finds the package through
  the link) ships the same files; a wheel built with `pip wheel --no-deps .` lists them."""
  import importlib
  root = pathlib.Path(__file__).resolve().parents[1]
  assert (root / 'yolact_jax' / 'configs').resolve() == (root / 'configs').resolve()
  for name in C.PRESETS:
    module = importlib.import_module(f'yolact_jax.configs.{name}')
    assert pathlib.Path(module.__file__).resolve() == (root / 'configs' / f'{name}.py').resolve()
  setuptools = pytest.importorskip('setuptools')
  assert 'yolact_jax.configs' in setuptools.find_packages(str(root), include=['yolact_jax*'])
