"""mmdetection's YOLACT checkpoints: their state_dict keys in the original's layout, and back.

mmdetection names the same tensors otherwise (``backbone.layer1.0.conv1.weight``,
``neck.lateral_convs.0.conv.weight``, ``bbox_head.conv_cls.weight``, ``mask_head.protonet.0``;
the semantic conv is ``segm_head.segm_conv`` in its 2.x files and
``mask_head.segm_branch.segm_conv`` in 3.x), orders the FPN levels the other way (index 0 is C3),
keeps P6/P7 among the FPN convs and puts the background class LAST in each anchor's class
channels, where the original puts it first: those channels are reordered on the way in and
back. Everything else (Flax layout, shape checks) is :mod:`yolact_jax.checkpoint.convert`'s on
the renamed state_dict. Published files are ``{'meta': ..., 'state_dict': ...}``.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Iterable, Mapping

import numpy as np

# The written layouts of a .pth (convert --pth_layout): the original's keys, or mmdetection's.
PTH_LAYOUTS = ('original', 'mmdet3', 'mmdet2')

_SEGM = {'mmdet3': 'mask_head.segm_branch.segm_conv', 'mmdet2': 'segm_head.segm_conv'}
_HEAD = {'conv_reg': 'bbox_layer', 'conv_cls': 'conf_layer', 'conv_coeff': 'mask_layer'}
# mmdetection's module registration order: its state_dict() lists the keys so.
_ORDER = ['backbone', 'conv1', 'bn1', 'layer1', 'layer2', 'layer3', 'layer4', 'conv2', 'bn2',
          'conv3', 'bn3', 'downsample', 'neck', 'lateral_convs', 'fpn_convs', 'bbox_head',
          'head_convs', 'conv_cls', 'conv_reg', 'conv_coeff', 'segm_head', 'mask_head',
          'segm_branch', 'segm_conv', 'protonet', 'conv', 'weight', 'bias', 'running_mean',
          'running_var', 'num_batches_tracked']
_RANK = {name: i for i, name in enumerate(_ORDER)}


class MmdetKeyError(ValueError):
  """A key that an mmdetection YOLACT checkpoint does not have."""


def layout_of(keys: Any) -> str:
  """'mmdet3' or 'mmdet2' for a state_dict of mmdetection's YOLACT (by its keys), else
  'original'."""
  keys = list(keys)
  if not any(k.startswith(('neck.', 'bbox_head.')) for k in keys):
    return 'original'
  return 'mmdet2' if any(k.startswith('segm_head.') for k in keys) else 'mmdet3'


def _class_order(num_anchors: int, num_classes: int, background_last: bool) -> np.ndarray:
  """Output-channel permutation of a class conv: background moved between first and last
  within each anchor's ``num_classes`` channels (``num_classes`` includes background)."""
  within = np.arange(num_classes)
  within = np.roll(within, 1) if not background_last else np.roll(within, -1)
  return (np.arange(num_anchors)[:, None] * num_classes + within[None, :]).reshape(-1)


def to_original(state_dict: Mapping[str, Any], original_keys: Iterable[str], num_classes: int,
                num_fpn_inputs: int = 3) -> 'collections.OrderedDict[str, Any]':
  """mmdetection's keys (2.x or 3.x) -> the original's, class channels reordered.

  ``original_keys`` are the state_dict keys of the preset's model (each is looked for under its
  mmdetection names, :func:`mmdet_key`), ``num_classes`` includes background and
  ``num_fpn_inputs`` is the backbone levels the FPN reads (3: C3-C5). Raises MmdetKeyError
  naming every key that has no place in the model.
  """
  names = {}
  for key in original_keys:
    for layout in _SEGM:
      name = mmdet_key(key, num_fpn_inputs, layout)
      if name is not None:
        names[name] = key
  out, unknown = collections.OrderedDict(), []
  for key, value in state_dict.items():
    if key.startswith('data_preprocessor.'):
      continue  # mean / std buffers: the config's input normalisation
    if key not in names:
      unknown.append(key)
      continue
    if names[key].startswith('prediction_layers.0.conf_layer.'):
      anchors = value.shape[0] // num_classes
      value = value[_class_order(anchors, num_classes, background_last=False)]
    out[names[key]] = value
  if unknown:
    raise MmdetKeyError(f'{len(unknown)} keys of this mmdetection checkpoint have no place in '
                        f"the model: {', '.join(unknown[:8])}")
  return out


def from_original(state_dict: Mapping[str, Any], num_classes: int, layout: str = 'mmdet3',
                  num_fpn_inputs: int = 3) -> 'collections.OrderedDict[str, Any]':
  """The original's keys -> mmdetection's (``layout`` 'mmdet3' or 'mmdet2'), class channels
  reordered, in the order of mmdetection's ``state_dict()``."""
  if layout not in _SEGM:
    raise ValueError(f'layout must be one of {tuple(_SEGM)}, got {layout!r}')
  out = {}
  for key, value in state_dict.items():
    new = mmdet_key(key, num_fpn_inputs, layout)
    if new is None:
      raise MmdetKeyError(f'{key} has no place in an mmdetection YOLACT checkpoint '
                          '(its YOLACT has no DCN, mask-IoU network or per-level heads)')
    if key.startswith('prediction_layers.0.conf_layer.'):
      anchors = value.shape[0] // num_classes
      value = value[_class_order(anchors, num_classes, background_last=True)]
    out[new] = value
  return collections.OrderedDict(sorted(out.items(), key=lambda kv: mmdet_key_order(kv[0])))


def mmdet_key(key: str, levels: int, layout: str) -> str | None:
  """mmdetection's name (``layout`` 'mmdet3' or 'mmdet2') of the original's state_dict ``key``,
  None for a tensor its YOLACT does not have; ``levels``: the FPN's backbone inputs."""
  m = re.fullmatch(r'backbone\.layers\.(\d)\.(.*)', key)
  if m and '.conv2.conv_offset_mask.' not in key:
    return f'backbone.layer{int(m.group(1)) + 1}.{m.group(2)}'
  if re.fullmatch(r'backbone\.(conv1|bn1)\..*', key):
    return key
  m = re.fullmatch(r'fpn\.(lat_layers|pred_layers|downsample_layers)\.(\d+)\.(weight|bias)', key)
  if m:
    kind, i, leaf = m.group(1), int(m.group(2)), m.group(3)
    index = {'lat_layers': levels - 1 - i, 'pred_layers': levels - 1 - i,
             'downsample_layers': levels + i}[kind]
    group = 'lateral_convs' if kind == 'lat_layers' else 'fpn_convs'
    return f'neck.{group}.{index}.conv.{leaf}'
  m = re.fullmatch(r'prediction_layers\.0\.upfeature\.(\d+)\.(weight|bias)', key)
  if m:
    return f'bbox_head.head_convs.{int(m.group(1)) // 2}.conv.{m.group(2)}'
  m = re.fullmatch(r'prediction_layers\.0\.(bbox_layer|conf_layer|mask_layer)\.(weight|bias)',
                   key)
  if m:
    name = {v: k for k, v in _HEAD.items()}[m.group(1)]
    return f'bbox_head.{name}.{m.group(2)}'
  m = re.fullmatch(r'proto_net\.(\d+)\.(weight|bias)', key)
  if m:
    return f'mask_head.protonet.{m.group(1)}.{m.group(2)}'
  m = re.fullmatch(r'semantic_seg_conv\.(weight|bias)', key)
  if m:
    return f'{_SEGM[layout]}.{m.group(1)}'
  return None


def mmdet_key_order(key: str) -> tuple:
  """Sort key reproducing mmdetection's state_dict order (numbers sort numerically)."""
  return tuple((0, int(p)) if p.isdigit() else (1, _RANK.get(p, len(_RANK)), p)
               for p in key.split('.'))
