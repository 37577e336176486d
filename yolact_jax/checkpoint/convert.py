"""Checkpoint conversion between the original's PyTorch state_dict and Flax variables.

The mapping is table-free: a Flax path maps to a state_dict key by turning ``_<digits>`` into
``.<digits>`` (``backbone/layers_0_1/conv1/kernel`` -> ``backbone.layers.0.1.conv1.weight``), with
leaf names renamed (kernel/scale -> weight, mean/var -> running_mean/running_var) and conv kernels
transposed between HWIO (Flax) and OIHW (PyTorch). Every key is accounted for: a missing,
unexpected or misshapen key is an error naming it and both shapes.

``.pth`` files are read with ``torch.load(weights_only=True)``, so an untrusted pickle cannot run
code; PyTorch is needed only here (``pip install 'yolact-jax[torch]'``).
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any, Mapping

import jax
import numpy as np

from yolact_jax.checkpoint import mmdet
from yolact_jax.config import YolactConfig
from yolact_jax.model.variables import abstract_variables

_LEAF_TO_TORCH = {
    ('params', 'kernel'): 'weight',
    ('params', 'bias'): 'bias',
    ('params', 'scale'): 'weight',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
    ('batch_stats', 'num_batches_tracked'): 'num_batches_tracked',
}

# Registration order of the original's modules and parameters, used to order the keys of a
# written state_dict exactly as the original's ``state_dict()`` (numbers sort numerically).
_NAME_ORDER = [
    'backbone', 'layers', 'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample', '_preconv',
    'proto_net', 'maskiou_net', 'fpn', 'lat_layers', 'pred_layers', 'downsample_layers',
    'prediction_layers', 'upfeature', 'bbox_layer', 'conf_layer', 'mask_layer', 'semantic_seg_conv',
    'weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked', 'conv_offset_mask',
]
_NAME_RANK = {name: i for i, name in enumerate(_NAME_ORDER)}


class CheckpointError(ValueError):
  """A checkpoint that cannot be read or does not fit the model."""


def torch_key_order(key: str) -> tuple:
  """Sort key reproducing the original's state_dict order for a key."""
  parts = []
  for part in key.split('.'):
    if part.isdigit():
      parts.append((0, int(part)))
    else:
      parts.append((1, _NAME_RANK.get(part, len(_NAME_RANK)), part))
  return tuple(parts)


def _module_name_to_torch(name: str) -> str:
  if name == 'preconv':
    return '_preconv'
  return re.sub(r'_(\d+)', r'.\1', name)


def flax_path_to_torch_key(collection: str, path: tuple[str, ...]) -> str:
  """('params', ('backbone', 'layers_0_0', 'conv1', 'kernel')) -> 'backbone.layers.0.0.conv1.weight'."""
  *modules, leaf = path
  try:
    torch_leaf = _LEAF_TO_TORCH[(collection, leaf)]
  except KeyError:
    raise CheckpointError(f'No state_dict name for Flax leaf {collection}/{"/".join(path)}')
  return '.'.join([_module_name_to_torch(m) for m in modules] + [torch_leaf])


def _to_torch_layout(value: np.ndarray) -> np.ndarray:
  return np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value


def _to_flax_layout(value: np.ndarray) -> np.ndarray:
  return np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value


def _flat_leaves(variables: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...], Any]]:
  out = []
  for collection in ('params', 'batch_stats'):
    tree = variables.get(collection, {})
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      out.append((collection, tuple(p.key for p in path), leaf))
  return out


def expected_state_dict_shapes(cfg: YolactConfig) -> 'collections.OrderedDict[str, tuple]':
  """The state_dict keys (in original order) and PyTorch-layout shapes of a preset's model."""
  shapes = {}
  for collection, path, leaf in _flat_leaves(abstract_variables(cfg)):
    shape = tuple(leaf.shape)
    if len(shape) == 4:
      shape = (shape[3], shape[2], shape[0], shape[1])
    shapes[flax_path_to_torch_key(collection, path)] = shape
  return collections.OrderedDict(sorted(shapes.items(), key=lambda kv: torch_key_order(kv[0])))


def _drop_legacy_keys(state_dict: Mapping[str, np.ndarray], cfg: YolactConfig) -> dict:
  """As the original's load_weights: legacy ``backbone.layer*`` keys and FPN downsample layers
  beyond ``num_downsample`` are ignored."""
  out = {}
  for key, value in state_dict.items():
    if key.startswith('backbone.layer') and not key.startswith('backbone.layers.'):
      continue
    m = re.match(r'fpn\.downsample_layers\.(\d+)\.', key)
    if m and int(m.group(1)) >= cfg.model.fpn.num_downsample:
      continue
    out[key] = value
  return out


def state_dict_to_variables(state_dict: Mapping[str, Any], cfg: YolactConfig
                            ) -> dict[str, Any]:
  """The original's state_dict (numpy or torch tensors, any float dtype) -> Flax variables.

  Floats are cast to float32. Raises CheckpointError listing every missing, unexpected or
  misshapen key (with both shapes); ``num_batches_tracked`` may be absent (taken as 0).
  """
  source = {k: _as_numpy(v) for k, v in _drop_legacy_keys(state_dict, cfg).items()}
  abstract = abstract_variables(cfg)
  problems, used = [], set()
  result: dict[str, dict] = {'params': {}, 'batch_stats': {}}
  for collection, path, leaf in _flat_leaves(abstract):
    key = flax_path_to_torch_key(collection, path)
    flax_shape = tuple(leaf.shape)
    torch_shape = (flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1]) \
        if len(flax_shape) == 4 else flax_shape
    if key not in source:
      if key.endswith('num_batches_tracked'):
        value = np.zeros(flax_shape, leaf.dtype)
      else:
        problems.append(f'missing key {key} (model expects shape {torch_shape})')
        continue
    else:
      used.add(key)
      value = source[key]
      if tuple(value.shape) != torch_shape:
        problems.append(f'shape mismatch for {key}: checkpoint has {tuple(value.shape)}, '
                        f'model expects {torch_shape}')
        continue
      value = _to_flax_layout(value).astype(leaf.dtype)
    node = result[collection]
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = value
  unexpected = [k for k in source if k not in used]
  problems += [f'unexpected key {k} (shape {tuple(source[k].shape)})' for k in unexpected]
  if problems:
    raise CheckpointError(
        f'The checkpoint does not fit preset {cfg.name!r} ({len(problems)} problems):\n  '
        + '\n  '.join(problems))
  return result


def variables_to_state_dict(variables: Mapping[str, Any], dtype: Any = None
                            ) -> 'collections.OrderedDict[str, np.ndarray]':
  """Flax variables -> the original's state_dict (numpy, OIHW, original key order).

  ``dtype`` (e.g. ``np.float16``) casts floating tensors; ``num_batches_tracked`` is int64.
  """
  entries = []
  for collection, path, leaf in _flat_leaves(variables):
    key = flax_path_to_torch_key(collection, path)
    value = np.asarray(leaf)
    if key.endswith('num_batches_tracked'):
      value = value.astype(np.int64)
    else:
      value = _to_torch_layout(value)
      if dtype is not None:
        value = value.astype(dtype)
    entries.append((key, np.array(value, order='C')))
  entries.sort(key=lambda kv: torch_key_order(kv[0]))
  return collections.OrderedDict(entries)


# --------------------------------------------------------------------------------------------
# .pth files
# --------------------------------------------------------------------------------------------


def _torch():
  try:
    import torch
  except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("Reading/writing .pth files needs PyTorch: pip install torch==2.13.0 "
                      "(or the 'torch' extra of yolact-jax)") from e
  return torch


def _as_numpy(value: Any) -> np.ndarray:
  if isinstance(value, np.ndarray):
    return value
  if hasattr(value, 'detach'):
    return value.detach().cpu().numpy()
  return np.asarray(value)


_WRAPPER_KEYS = ('state_dict', 'model', 'model_state_dict', 'net', 'params')


def load_pth(path: str | os.PathLike) -> 'collections.OrderedDict[str, np.ndarray]':
  """Reads a ``.pth`` state_dict (plain, or wrapped in a dict under 'state_dict'/'model'/...)
  with ``weights_only=True``. Raises CheckpointError for a missing, truncated or non-checkpoint
  file."""
  torch = _torch()
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise CheckpointError(f'Checkpoint file not found: {path}')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises several types for corrupt / unsafe files
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if 'weights_only' in str(e) or 'Unsupported global' in str(e):
      raise CheckpointError(f'{path} is not a plain weights checkpoint (it contains Python '
                            f'objects that weights_only loading refuses): {text}') from e
    raise CheckpointError(f'Cannot read checkpoint {path} (truncated or not a PyTorch file): '
                          f'{type(e).__name__}: {text}') from e
  if isinstance(obj, Mapping):
    for key in _WRAPPER_KEYS:
      if key in obj and isinstance(obj[key], Mapping):
        obj = obj[key]
        break
  if not isinstance(obj, Mapping) or not obj:
    raise CheckpointError(f'{path} does not hold a state_dict (got {type(obj).__name__})')
  out = collections.OrderedDict()
  for key, value in obj.items():
    if not isinstance(key, str) or not hasattr(value, 'shape'):
      raise CheckpointError(f'{path} does not hold a state_dict: entry {key!r} is a '
                            f'{type(value).__name__}, not a tensor')
    out[key.removeprefix('module.')] = _as_numpy(value)
  return out


def save_pth(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
  """Writes a state_dict as the original's ``torch.save(model.state_dict())``."""
  torch = _torch()
  tensors = collections.OrderedDict(
      (k, torch.from_numpy(np.array(v, order='C'))) for k, v in state_dict.items())
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  torch.save(tensors, path)


def load_pth_weights(path: str | os.PathLike, cfg: YolactConfig) -> dict[str, Any]:
  """A ``.pth`` of the original YOLACT, or of mmdetection's (2.x or 3.x, told by its keys:
  :mod:`yolact_jax.checkpoint.mmdet`) -> Flax variables for ``cfg``."""
  state = load_pth(path)
  layout = mmdet.layout_of(state)
  if layout == 'original':
    return state_dict_to_variables(state, cfg)
  levels = len(cfg.model.backbone.selected_layers)
  try:
    renamed = mmdet.to_original(state, expected_state_dict_shapes(cfg), cfg.num_classes, levels)
    return state_dict_to_variables(renamed, cfg)
  except (CheckpointError, mmdet.MmdetKeyError) as e:
    raise CheckpointError(f'{path} (an mmdetection {layout[-1]}.x checkpoint; its presets are '
                          f'yolact_mmdet_r50 and yolact_mmdet_r101): {e}') from e


def save_pth_weights(variables: Mapping[str, Any], path: str | os.PathLike, cfg: YolactConfig,
                     dtype: Any = np.float32, layout: str = 'original') -> None:
  """Flax variables -> a ``.pth``: the original's ``torch.save(state_dict())`` that its
  ``Yolact.load_weights`` accepts, or (``layout`` 'mmdet3' / 'mmdet2') an mmdetection checkpoint
  ``{'meta', 'state_dict'}`` for its ``load_checkpoint``."""
  state = variables_to_state_dict(variables, dtype)
  if layout == 'original':
    save_pth(state, path)
    return
  if layout not in mmdet.PTH_LAYOUTS:
    raise ValueError(f'layout must be one of {mmdet.PTH_LAYOUTS}, got {layout!r}')
  state = mmdet.from_original(state, cfg.num_classes, layout,
                              len(cfg.model.backbone.selected_layers))
  torch = _torch()
  classes = list(cfg.dataset.class_names)
  meta = ({'dataset_meta': {'classes': classes}} if layout == 'mmdet3' else {'CLASSES': classes})
  tensors = collections.OrderedDict(
      (k, torch.from_numpy(np.array(v, order='C'))) for k, v in state.items())
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  torch.save({'meta': {**meta, 'written_by': 'yolact-jax', 'config': cfg.name},
              'state_dict': tensors}, path)


# --------------------------------------------------------------------------------------------
# ImageNet backbone initialisation
# --------------------------------------------------------------------------------------------


def imagenet_backbone_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The original's ``init_backbone`` renaming: torchvision ``layerN.`` -> ``layers.{N-1}.``,
  everything prefixed with ``backbone.``; DarkNet files are already in ``layers.``/``_preconv.``
  layout. ``fc.*`` is dropped."""
  out = {}
  for key, value in state_dict.items():
    if key.startswith('fc.'):
      continue
    m = re.match(r'layer(\d+)\.(.*)', key)
    if m:
      key = f'layers.{int(m.group(1)) - 1}.{m.group(2)}'
    out['backbone.' + key] = _as_numpy(value)
  return out


# Tensors of a YOLACT++ DCN conv2 that an ImageNet file cannot hold (it has only conv2.weight):
# the original zeroes them when it builds the block, so each DCN starts as 0.5 x the plain conv.
_DCN_ZERO_INIT = re.compile(
    r'backbone\.layers\.\d+\.\d+\.conv2\.(bias|conv_offset_mask\.(weight|bias))$')


def load_imagenet_backbone(path: str | os.PathLike, cfg: YolactConfig,
                           variables: Mapping[str, Any]) -> dict[str, Any]:
  """Returns ``variables`` with the backbone replaced by an ImageNet file
  (``resnet101_reducedfc.pth``, ``resnet50-19c8e357.pth`` in torchvision layout, or
  ``darknet53.pth``). Every backbone tensor must be present with the right shape, except those a
  plain ResNet lacks for a DCN block (YOLACT++): ``conv2.weight`` loads into the DCN's weight and
  its bias and offset/modulation conv are zeroed, as the original, so that at iteration 0 every
  DCN computes 0.5 x the ImageNet 3x3 conv (zero offsets, modulation sigmoid(0)).

  ``path`` is the file, or a folder holding the file named by
  ``cfg.model.backbone.pretrained_weights``.
  """
  if os.path.isdir(path):
    if not cfg.model.backbone.pretrained_weights:
      raise CheckpointError(f'{path} is a folder and {cfg.name} names no ImageNet file '
                            '(model.backbone.pretrained_weights is empty): pass the file itself')
    path = os.path.join(path, cfg.model.backbone.pretrained_weights)
  renamed = imagenet_backbone_state_dict(load_pth(path))
  current = variables_to_state_dict(variables)
  merged = {k: v for k, v in current.items() if not k.startswith('backbone.')}
  merged.update({k: np.zeros_like(v) for k, v in current.items()
                 if _DCN_ZERO_INIT.match(k) and k not in renamed})
  merged.update(renamed)
  backbone_keys = {k for k in current if k.startswith('backbone.')}
  extra = sorted(k for k in renamed if k not in backbone_keys)
  if extra:
    raise CheckpointError(f'{path}: {len(extra)} tensors do not belong to the {cfg.name} '
                          f'backbone, e.g. {extra[:5]}')
  return state_dict_to_variables(merged, cfg)
