"""Configuration: the schema (frozen, typed dataclasses), validation and overrides.

Each field carries a one-line meaning; names follow the original's where one exists, so a reader
of the original finds each knob here. An experiment (:class:`YolactConfig`) has a ``model``
section, everything the network is built from (:class:`ModelConfig`: backbone, anchors, FPN,
mask prototypes, head, mask-IoU network), and the loss, detect, augment, train and dataset
sections. The defaults are the original's (``yolact_base``); each preset (:func:`get_config`) is
a file of the top-level ``configs/`` folder, the original's ``data/config.py`` value for value.

Every field is read by the code, and :func:`validate` rejects any value the code cannot honour
with an error that names the field. Each enumeration has one registry below (``NMS_KINDS``,
``BACKBONE_KINDS``, ...): validation, the implementations and the command-line ``choices`` all
read it. Override any field with ``--config.train.lr=1e-4`` (:func:`apply_overrides`); an unknown
field is an error that names it and suggests the closest field.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib
import math
import pkgutil
import types
import typing
from dataclasses import dataclass, field, replace
from typing import Any

from yolact_jax import configs as _preset_modules
from yolact_jax.coco_classes import COCO_CLASSES

# --------------------------------------------------------------------------------------------
# Registries: the one list of names of each enumeration
# --------------------------------------------------------------------------------------------

# Detect's NMS variants (dispatched in yolact_jax.detect.detect; CLI --nms choices).
NMS_KINDS = ('fast', 'cross_class', 'standard')
# Backbone networks (built by yolact_jax.model.backbone.BACKBONES).
BACKBONE_KINDS = ('resnet', 'darknet')
# Input normalisations (yolact_jax.normalise.normalise, on the host and on the device).
INPUT_TRANSFORMS = ('resnet', 'darknet')
# Input resizes to max_size x max_size on the device (yolact_jax.resize.RESIZES).
INPUT_RESIZES = ('float', 'uint8')
# Training augmentations (yolact_jax.data.loader.make_train_sample).
AUGMENT_PIPELINES = ('original', 'mmdet')
# Prior <-> ground-truth matchers (yolact_jax.matching.match_image).
MATCHERS = ('original', 'max_iou')
# FPN top-down resize modes (yolact_jax.model.fpn.RESIZE).
FPN_INTERPOLATIONS = ('bilinear', 'nearest')
# Optimisers (built by yolact_jax.train_step.make_optimizer).
OPTIMIZERS = ('sgd', 'adam')
# Computation dtypes of the network (train.compute_dtype; --dtype of evaluate and predict):
# convolutions and matrix products in that dtype; parameters, optimiser state, BatchNorm
# statistics, the loss and its reductions stay float32.
COMPUTE_DTYPES = ('float32', 'bfloat16')

# Class names of the built-in synthetic-shapes dataset (yolact_jax.data.synthetic), the data of
# the small presets (configs/yolact_tiny.py, yolact_cpu.py); COCO's are coco_classes.COCO_CLASSES.
SYNTHETIC_CLASSES = ('circle', 'square', 'triangle', 'star')

# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneConfig:
  """The feature extractor: its network, the stages fed to the FPN and its ImageNet start."""
  kind: str = 'resnet'  # BACKBONE_KINDS: 'resnet' (bottleneck ResNet v1.5), 'darknet' (DarkNet-53).
  layers: tuple[int, ...] = (3, 4, 23, 3)  # blocks per stage (ResNet: 4 stages, DarkNet: 5).
  base_width: int = 64  # ResNet stem / first-stage planes (64 in the original); DarkNet: 32.
  selected_layers: tuple[int, ...] = (1, 2, 3)  # stage outputs fed to the FPN (C3, C4, C5).
  # ImageNet file the preset trains from: the name looked up when --imagenet names a folder.
  pretrained_weights: str = 'resnet101_reducedfc.pth'
  transform: str = 'resnet'  # INPUT_TRANSFORMS: 'resnet' (BGR mean/std, RGB), 'darknet' (x/255).
  # INPUT_RESIZES: 'float' bilinear on the float image (the original's F.interpolate), 'uint8'
  # OpenCV's bilinear on the uint8 image, bit for bit (mmdetection's Resize).
  input_resize: str = 'float'
  # YOLACT++ DCNv2: per stage, the last dcn_layers[s] blocks may use a deformable 3x3 conv2
  # (block 0 iff dcn_layers[s] >= blocks; block i >= 1 iff i + dcn_layers[s] >= blocks and
  # i % dcn_interval == 0). ResNet only; all zeros: no DCN (YOLACT).
  dcn_layers: tuple[int, ...] = (0, 0, 0, 0)
  dcn_interval: int = 1  # YOLACT++: of those blocks, every dcn_interval-th uses DCN.


@dataclass(frozen=True)
class AnchorConfig:
  """The priors of each pyramid level (the original's make_priors); their number per location
  is the number of predictions the head makes there."""
  pred_scales: tuple[tuple[float, ...], ...] = ((24,), (48,), (96,), (192,), (384,))  # per level.
  pred_aspect_ratios: tuple[tuple[float, ...], ...] = ((1, 0.5, 2),) * 5  # per level (one group).
  use_pixel_scales: bool = True  # scales are in pixels of max_size (divided by max_size).
  preapply_sqrt: bool = False  # False: the aspect ratio is square-rooted inside make_priors.
  use_square_anchors: bool = True  # h := w, so the ratios act as extra scales (all v1 presets).

  @property
  def num_anchors(self) -> int:
    """Priors per feature-map location (3 for YOLACT, 9 for YOLACT++)."""
    return len(self.pred_scales[0]) * len(self.pred_aspect_ratios[0])


@dataclass(frozen=True)
class FPNConfig:
  """Feature pyramid on top of the selected backbone layers."""
  num_features: int = 256  # channels of every pyramid level.
  interpolation: str = 'bilinear'  # FPN_INTERPOLATIONS: top-down resize to the lateral's size.
  num_downsample: int = 2  # extra levels (P6, P7) made by stride-2 convs from P5.
  use_conv_downsample: bool = True  # P6/P7 by 3x3 stride-2 convs; False: every 2nd pixel.
  pad: bool = True  # padding 1 in the 3x3 prediction convs; False: padding 0 (levels shrink by 2).
  relu_pred_layers: bool = True  # ReLU after the P3-P5 3x3 convs.
  relu_downsample_layers: bool = False  # ReLU after P6/P7 (off, and buggy in the original).
  # P6 from the last backbone stage (C5), P7 from P6 (mmdetection's add_extra_convs='on_input');
  # False: P6 from P5 (the original).
  downsample_from_backbone: bool = False


# One entry of a ProtoNet: (out_channels, kernel, padding); out_channels None with kernel -2 is a
# bilinear x2 upsample (the original's make_net encoding).
ProtoLayer = tuple[int | None, int, int]


@dataclass(frozen=True)
class MaskConfig:
  """The prototype branch (ProtoNet) and the head's mask coefficients."""
  mask_dim: int = 32  # number of prototypes k (= coefficients per anchor).
  proto_src: int = 0  # FPN level feeding ProtoNet (0 = P3).
  proto_net: tuple[ProtoLayer, ...] = (
      (256, 3, 1), (256, 3, 1), (256, 3, 1), (None, -2, 0), (256, 3, 1), (32, 1, 0))
  proto_prototype_activation: str = 'relu'  # applied after the last proto conv.
  proto_coeff_activation: str = 'tanh'  # applied to the head's mask coefficients.


@dataclass(frozen=True)
class HeadConfig:
  """The prediction head shared by all pyramid levels."""
  extra_head_net: tuple[int, ...] = (256,)  # 3x3 'upfeature' convs (+ReLU) before the branches.
  head_kernel: int = 3  # kernel of the bbox/conf/mask convs.
  head_padding: int = 1  # padding of the bbox/conf/mask convs.
  share_prediction_module: bool = True  # one parameter set at every level; False: one per level.


@dataclass(frozen=True)
class ModelConfig:
  """The network (``yolact_jax.model.yolact.Yolact``): every field its variables and outputs
  depend on, except the number of classes (the dataset's)."""
  backbone: BackboneConfig = field(default_factory=BackboneConfig)
  anchors: AnchorConfig = field(default_factory=AnchorConfig)
  fpn: FPNConfig = field(default_factory=FPNConfig)
  mask: MaskConfig = field(default_factory=MaskConfig)
  head: HeadConfig = field(default_factory=HeadConfig)
  # YOLACT++ fast mask re-scoring: the mask-IoU network (params['maskiou_net']), its loss term I
  # and the mask re-scoring of detect.rescore_mask. Off: none of them exists.
  use_maskiou: bool = False
  # Its convolutions (out_channels, kernel, stride), unpadded, each + ReLU; a 1x1 conv to the
  # C - 1 classes (+ ReLU) and a global max follow. Read only when use_maskiou.
  maskiou_net: tuple[tuple[int, int, int], ...] = ()

  @property
  def num_levels(self) -> int:
    """Pyramid levels (P3..P7: 5), each with its own anchors."""
    return len(self.backbone.selected_layers) + self.fpn.num_downsample


@dataclass(frozen=True)
class LossConfig:
  """Matching thresholds, the mask loss and the weights of the multi-task loss."""
  positive_iou_threshold: float = 0.5  # prior IoU >= this: positive.
  negative_iou_threshold: float = 0.4  # prior IoU < this: background; between: neutral.
  crowd_iou_threshold: float = 0.7  # IoA of a prior inside a crowd box > this: neutral.
  ohem_negpos_ratio: int = 3  # hard negatives per positive (per image).
  bbox_alpha: float = 1.5  # weight of the box smooth-L1 term B.
  conf_alpha: float = 1.0  # weight of the OHEM classification term C.
  mask_alpha: float = 6.125  # weight of the lincomb mask BCE term M.
  masks_to_train: int = 100  # cap on masks per image in the mask loss (random subset).
  proto_crop: bool = True  # crop assembled masks by their GT box (padding 1 proto pixel) in M.
  normalize_emulate_roi_pooling: bool = True  # M of each mask normalised by its GT box area.
  use_semantic_segmentation_loss: bool = True  # add the semantic segmentation term S.
  semantic_segmentation_alpha: float = 1.0  # weight of S.
  maskiou_alpha: float = 25.0  # weight of the mask-IoU term I (YOLACT++, model.use_maskiou).
  # YOLACT++: masks whose GT has <= this many pixels at prototype size are left out of term I
  # (<= 0: none left out).
  discard_mask_area: int = -1
  # mmdetection's training (the original's presets: 'original', False, False, False, 0, False):
  # MATCHERS: 'original' (each GT forced onto its best free prior, greedily), 'max_iou'
  # (mmdetection's MaxIoUAssigner: each GT onto its best prior, a later GT overwriting).
  matcher: str = 'original'
  # C: an image without positives keeps all its negatives; False: none (3 x 0, the original).
  ohem_keep_negatives_without_positives: bool = False
  # B and C over the sum of max(positives, 1) of each image (mmdetection's sampling results);
  # False: over the batch's positives (the original).
  count_one_positive_at_least: bool = False
  # M over the masks trained (at most masks_to_train an image), none rescaled; False: over all
  # positives, an image's subsampled sum rescaled to its positives (the original).
  mask_normalise_by_trained: bool = False
  # S: the target channel of class c is c + this, wrapped (mmdetection 3.3.0: -1, its
  # gt_labels - 1 on 0-based labels, so class 0 trains the last channel).
  semantic_class_offset: int = 0
  # S leaves out an image without objects (mmdetection); False: it trains every channel towards
  # background there (the original never sees one: its loader draws another image).
  semantic_skips_empty_images: bool = False


@dataclass(frozen=True)
class DetectConfig:
  """Inference-time box selection (the original's Detect)."""
  nms: str = 'fast'  # NMS_KINDS: 'fast' (eval.py default), 'cross_class', 'standard'.
  nms_top_k: int = 200  # candidates per class kept before NMS.
  nms_conf_thresh: float = 0.05  # a prior is considered if its best fg score is > this.
  nms_thresh: float = 0.5  # IoU above which a lower-scored box is suppressed.
  max_num_detections: int = 100  # detections kept per image after NMS.
  # YOLACT++ (needs model.use_maskiou): the mask score is class score x predicted mask IoU.
  rescore_mask: bool = False
  rescore_bbox: bool = False  # YOLACT++ (needs model.use_maskiou): the box score is rescored too.
  # mmdetection's Detect and boxes (the original's presets: 0, False, 0, False, 0, False):
  # > 0: the N priors of each level with the best fg score are the candidates, whatever their
  # score (nms_pre); 0: the priors whose best fg score is > nms_conf_thresh.
  candidates_per_level: int = 0
  second_threshold: bool = False  # after NMS keep only scores > nms_conf_thresh (score_thr).
  # > 0: predicted log size ratios clamped to [-this, this] before exp (log(1000 / 16)).
  clamp_log_size: float = 0.0
  clip_boxes: bool = False  # decoded boxes clipped to the network input before NMS.
  iou_union_floor: float = 0.0  # NMS IoU's union at least this many px^2 (1e-6).
  float_boxes: bool = False  # pixel boxes as floats; False: truncated to ints (the original).


@dataclass(frozen=True)
class AugmentConfig:
  """The training transform: the original's (SSDAugmentation) or mmdetection's, and its steps."""
  # AUGMENT_PIPELINES: 'original' (yolact_jax.data.augment), 'mmdet' (mmdetection's order:
  # expand, min-IoU crop, uint8 resize, flip, photometric last; yolact_jax.data.mmdet_augment).
  pipeline: str = 'original'
  photometric_distort: bool = True  # brightness, contrast, saturation, hue (no clipping).
  expand: bool = True  # zoom out on a mean-filled canvas (p=1/2, ratio up to 4).
  random_sample_crop: bool = True  # random crop (its min-IoU test never rejects, as original).
  random_mirror: bool = True  # horizontal flip with p=1/2.
  discard_box_width: float = 4 / 550  # boxes narrower than this are dropped ...
  discard_box_height: float = 4 / 550  # ... (compared in PIXELS in training: original bug).
  fix_discard_box_units: bool = False  # True: compare relative sizes (fixes the unit bug).


@dataclass(frozen=True)
class TrainConfig:
  """Optimiser, schedule and batch (values for batch 8; autoscaled for other sizes)."""
  batch_size: int = 8  # images per step (the original's --batch_size).
  optimizer: str = 'sgd'  # OPTIMIZERS: 'sgd' (the original's momentum SGD), 'adam' (CPU demo).
  lr: float = 1e-3  # base learning rate.
  momentum: float = 0.9  # SGD momentum.
  decay: float = 5e-4  # weight decay added to every parameter's gradient (coupled, as torch).
  gamma: float = 0.1  # lr factor at each step.
  lr_steps: tuple[int, ...] = (280000, 600000, 700000, 750000)  # iterations of the lr steps.
  max_iter: int = 800000  # total iterations.
  lr_warmup_init: float = 1e-4  # lr at iteration 0 of the warmup.
  lr_warmup_until: int = 500  # warmup length in iterations (linear).
  autoscale: bool = True  # scale lr, max_iter and lr_steps by batch_size / 8 as the original.
  freeze_bn: bool | None = None  # None: freeze iff batch_size < 6 (as train.py); or force.
  max_instances: int = 100  # ground-truth slots per image (padded, with a validity mask).
  seed: int = 0  # seed of initialisation, data order and augmentation.
  compute_dtype: str = 'float32'  # COMPUTE_DTYPES: 'bfloat16' = mixed precision (params f32).
  sync_batchnorm: bool = False  # several devices: False = per-replica BN statistics (the
  # original's nn.DataParallel), True = statistics of the global batch.
  cpu_eltwise_fusion: bool = False  # on CPU, compile the train step with YNNPACK's element-wise
  # fusion (train_step.CPU_STEP_COMPILER_OPTIONS): faster for some shapes, slower for others
  # (docs/performance.md; measure yours with scripts/train_step_options.py).
  # Divergence stop (the original skips non-finite steps for ever): the run ends with an error
  # after this many non-finite steps in a row, or when more than this fraction of the last 100
  # steps were non-finite; 0 turns either check off.
  max_nonfinite_in_a_row: int = 5
  max_nonfinite_fraction: float = 0.1


@dataclass(frozen=True)
class DatasetConfig:
  """Where the data lives and what its classes are."""
  name: str = 'COCO 2017'
  train_images: str = './data/coco/images/'  # image folder of the training split.
  train_info: str = './data/coco/annotations/instances_train2017.json'
  valid_images: str = './data/coco/images/'
  valid_info: str = './data/coco/annotations/instances_val2017.json'
  class_names: tuple[str, ...] = COCO_CLASSES  # foreground class names, 0-based order.


@dataclass(frozen=True)
class YolactConfig:
  """A complete experiment: network, loss, inference, augmentation, optimiser and data."""
  name: str = 'yolact_base'
  max_size: int = 550  # network input is max_size x max_size (images are squashed); 32-4096.
  model: ModelConfig = field(default_factory=ModelConfig)
  loss: LossConfig = field(default_factory=LossConfig)
  detect: DetectConfig = field(default_factory=DetectConfig)
  augment: AugmentConfig = field(default_factory=AugmentConfig)
  train: TrainConfig = field(default_factory=TrainConfig)
  dataset: DatasetConfig = field(default_factory=DatasetConfig)

  @property
  def num_classes(self) -> int:
    """Classes including background (index 0)."""
    return len(self.dataset.class_names) + 1


# --------------------------------------------------------------------------------------------
# Presets: the modules of configs/ (yolact_jax.configs), one per preset
# --------------------------------------------------------------------------------------------

# Every preset's name: the module names of yolact_jax.configs (the top-level configs/ folder).
PRESETS: tuple[str, ...] = tuple(sorted(
    m.name for m in pkgutil.iter_modules(_preset_modules.__path__) if not m.name.startswith('_')))


def get_config(name: str, overrides: typing.Sequence[str] = ()) -> YolactConfig:
  """The preset ``name`` (``configs/<name>.py``'s ``get_config()``) with ``overrides``
  (``'train.lr=1e-4'`` strings) applied, validated."""
  if name not in PRESETS:
    close = difflib.get_close_matches(name, PRESETS, n=3)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise KeyError(f'Unknown preset {name!r}.{hint} Presets: {", ".join(PRESETS)}.')
  module = importlib.import_module(f'{_preset_modules.__name__}.{name}')
  return apply_overrides(module.get_config(), overrides)


# --------------------------------------------------------------------------------------------
# The earlier layout
# --------------------------------------------------------------------------------------------

# Fields of the layout before the ``model`` section that moved or went: (old dotted path, new
# path or None when removed, why it was removed), most specific first; a section's path stands
# for every field below it. A run's config.json written in that layout still loads
# (config_from_dict); an override in an old spelling is an error that gives the new one.
MOVED_FIELDS: tuple[tuple[str, str | None, str], ...] = (
    ('backbone.pred_scales', 'model.anchors.pred_scales', ''),
    ('backbone.pred_aspect_ratios', 'model.anchors.pred_aspect_ratios', ''),
    ('backbone.use_pixel_scales', 'model.anchors.use_pixel_scales', ''),
    ('backbone.preapply_sqrt', 'model.anchors.preapply_sqrt', ''),
    ('backbone.use_square_anchors', 'model.anchors.use_square_anchors', ''),
    ('backbone', 'model.backbone', ''),
    ('fpn', 'model.fpn', ''),
    ('mask.masks_to_train', 'loss.masks_to_train', ''),
    ('mask.proto_crop', 'loss.proto_crop', ''),
    ('mask.normalize_emulate_roi_pooling', 'loss.normalize_emulate_roi_pooling', ''),
    ('mask.binarize_downsampled_gt', None,
     'its one legal value was True: the data pipeline ships binarised masks'),
    ('mask', 'model.mask', ''),
    ('head', 'model.head', ''),
    ('use_maskiou', 'model.use_maskiou', ''),
    ('maskiou_net', 'model.maskiou_net', ''),
    ('dataset.has_gt', None, 'nothing read it'),
)


def moved_field(path: str) -> tuple[bool, str | None, str]:
  """``(True, new path or None, why removed)`` for a field path of the earlier layout that
  moved or went (:data:`MOVED_FIELDS`); ``(False, path, '')`` for any other path."""
  for old, new, why in MOVED_FIELDS:
    if path == old or path.startswith(old + '.'):
      return True, None if new is None else new + path[len(old):], why
  return False, path, ''


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------


class ConfigError(ValueError):
  """A bad config: an unknown field, a value of the wrong type, or a value the code cannot
  honour (the message names the field)."""


def _coerce(value: Any, annotation: Any, path: str) -> Any:
  """Converts a literal parsed from the command line to the field's declared type."""
  origin = typing.get_origin(annotation)
  args = typing.get_args(annotation)
  if origin in (typing.Union, types.UnionType):
    if value is None and type(None) in args:
      return None
    errors = []
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _coerce(value, arg, path)
      except ConfigError as e:
        errors.append(str(e))
    raise ConfigError('; '.join(errors))
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f'{path}: expected a tuple, got {value!r}')
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_coerce(v, args[0], path) for v in value)
    if len(args) != len(value):
      raise ConfigError(f'{path}: expected {len(args)} items, got {value!r}')
    return tuple(_coerce(v, a, path) for v, a in zip(value, args))
  if annotation is Any:
    return value
  if annotation is bool:
    if isinstance(value, bool):
      return value
    raise ConfigError(f'{path}: expected True or False, got {value!r}')
  if annotation is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      return float(value)
    raise ConfigError(f'{path}: expected a number, got {value!r}')
  if annotation is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
    raise ConfigError(f'{path}: expected an integer, got {value!r}')
  if annotation is str:
    if isinstance(value, str):
      return value
    raise ConfigError(f'{path}: expected a string, got {value!r}')
  if annotation is type(None):
    if value is None:
      return None
    raise ConfigError(f'{path}: expected None, got {value!r}')
  return value


def _unknown_field(cls: Any, key: str, full: str) -> ConfigError:
  """The error for ``full``, whose last part ``key`` is no field of the dataclass ``cls``."""
  names = [f.name for f in dataclasses.fields(cls)]
  close = difflib.get_close_matches(key, names, n=3)
  hint = f' Did you mean {", ".join(close)}?' if close else ''
  return ConfigError(f'Unknown config field {full!r}: {cls.__name__} has no field {key!r}.'
                     f'{hint} Fields: {", ".join(names)}.')


def _parse_literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string such as a path or a name


def _set_field(cfg: Any, keys: list[str], raw: str, full: str) -> Any:
  if not dataclasses.is_dataclass(cfg):
    raise ConfigError(f'{full}: {".".join(keys)} is below a leaf field')
  names = {f.name: f for f in dataclasses.fields(cfg)}
  key = keys[0]
  if key not in names:
    raise _unknown_field(type(cfg), key, full)
  current = getattr(cfg, key)
  if len(keys) > 1:
    return replace(cfg, **{key: _set_field(current, keys[1:], raw, full)})
  if dataclasses.is_dataclass(current):
    raise ConfigError(f'{full!r} is a group of fields; set one of its fields instead')
  hints = typing.get_type_hints(type(cfg))
  value = _coerce(_parse_literal(raw), hints[key], full)
  return replace(cfg, **{key: value})


def apply_overrides(cfg: YolactConfig, overrides: typing.Sequence[str]) -> YolactConfig:
  """Applies ``'a.b=value'`` overrides (an optional ``--config.`` prefix is accepted).

  Values are Python literals (``1e-4``, ``True``, ``(1, 2)``); anything else is a string.
  Raises ConfigError naming an unknown field or a value of the wrong type.
  """
  for item in overrides:
    text = item[2:] if item.startswith('--') else item
    if text.startswith('config.'):
      text = text[len('config.'):]
    if '=' not in text:
      raise ConfigError(f'Override {item!r} must look like --config.field.sub=value')
    path, raw = text.split('=', 1)
    moved, new, why = moved_field(path)
    if moved and new is None:
      raise ConfigError(f'Unknown config field {path!r}: it was removed ({why})')
    if moved:  # the new spelling's own error (an unknown field, a bad value) comes first
      _set_field(cfg, new.split('.'), raw, new)
      raise ConfigError(f'Unknown config field {path!r}: it is now {new} '
                        f'(--config.{new}={raw})')
    cfg = _set_field(cfg, path.split('.'), raw, path)
  validate(cfg)
  return cfg


# Numeric fields with a legal range: (field, lowest, highest or None, what the range is about).
# validate() rejects a value outside it with an error naming the field, the value and the range.
# Upper limits only where the value sizes an array regardless of the data (an absurd one would
# allocate without bound); scores and overlaps are fractions. max_size: the input, every feature
# map and the priors grow with its square; the presets use 64-700 px, the original 400-700; at
# 4096 yolact_tiny predicts in 2.5 GiB (yolact_base needs a large accelerator), at 100000 the
# priors alone are 9.3 GiB.
_RANGES: tuple[tuple[str, int, int | None, str], ...] = (
    ('max_size', 32, 4096, 'the network input is max_size x max_size px'),
    ('detect.nms_top_k', 1, None, 'candidates per class'),
    ('detect.candidates_per_level', 0, None, 'priors per level, 0 for all above the threshold'),
    ('detect.clamp_log_size', 0, None, 'a log size ratio, 0 for no clamp'),
    ('detect.iou_union_floor', 0, None, 'an area in px^2'),
    ('detect.nms_conf_thresh', 0, 1, 'a class score'),
    ('detect.nms_thresh', 0, 1, 'an IoU'),
    ('detect.max_num_detections', 1, 1000,
     "every image's output is padded to this many masks at the canvas size"),
    ('loss.positive_iou_threshold', 0, 1, 'an IoU'),
    ('loss.negative_iou_threshold', 0, 1, 'an IoU'),
    ('loss.crowd_iou_threshold', 0, 1, "an intersection over the prior's area"),
    ('loss.masks_to_train', 1, None, 'masks per image in the mask loss'),
    ('train.max_instances', 1, 1000,
     'every training image is padded to this many ground-truth slots, each a full-size mask'),
)


def get_field(cfg: Any, path: str) -> Any:
  """The value of a dotted field path (``'fpn.pad'``)."""
  for key in path.split('.'):
    cfg = getattr(cfg, key)
  return cfg


def _check_choice(path: str, value: str, registry: tuple[str, ...]) -> None:
  if value not in registry:
    names = ', '.join(repr(r) for r in registry)
    raise ConfigError(f'{path} must be one of {names}; got {value!r}')


def validate(cfg: YolactConfig) -> None:
  """Rejects a config the code cannot run as asked: a name outside its registry, relations
  between fields that a typo could break, a NaN or infinite number and a value outside its
  :data:`_RANGES` entry. Each ConfigError names the field."""
  m = cfg.model
  b, a = m.backbone, m.anchors
  _check_choice('model.backbone.kind', b.kind, BACKBONE_KINDS)
  _check_choice('model.backbone.transform', b.transform, INPUT_TRANSFORMS)
  _check_choice('model.backbone.input_resize', b.input_resize, INPUT_RESIZES)
  _check_choice('model.fpn.interpolation', m.fpn.interpolation, FPN_INTERPOLATIONS)
  _check_choice('detect.nms', cfg.detect.nms, NMS_KINDS)
  _check_choice('loss.matcher', cfg.loss.matcher, MATCHERS)
  _check_choice('augment.pipeline', cfg.augment.pipeline, AUGMENT_PIPELINES)
  _check_choice('train.optimizer', cfg.train.optimizer, OPTIMIZERS)
  _check_choice('train.compute_dtype', cfg.train.compute_dtype, COMPUTE_DTYPES)
  num_stages = len(b.layers)
  if any(not 0 <= i < num_stages for i in b.selected_layers):
    raise ConfigError(f'model.backbone.selected_layers {b.selected_layers} out of range for '
                      f'{num_stages} stages')
  if len(a.pred_scales) != m.num_levels or len(a.pred_aspect_ratios) != m.num_levels:
    raise ConfigError(f'model.anchors.pred_scales/pred_aspect_ratios need one entry per level '
                      f'({m.num_levels}), got {len(a.pred_scales)}/{len(a.pred_aspect_ratios)}')
  if m.mask.proto_net[-1][0] != m.mask.mask_dim:
    raise ConfigError(f'model.mask.proto_net must end with mask_dim={m.mask.mask_dim} channels')
  _check_finite(cfg)
  for path, lowest, highest, about in _RANGES:
    value = get_field(cfg, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # from a config file
      raise ConfigError(f'{path}={value!r}: expected a number')
    if highest is None and not lowest <= value:
      raise ConfigError(f'{path}={value!r} must be >= {lowest} ({about})')
    if highest is not None and not lowest <= value <= highest:
      raise ConfigError(f'{path}={value!r} is outside [{lowest}, {highest}] ({about})')
  _validate_plus(cfg)


def _floats(value: Any) -> typing.Iterator[float]:
  """The floats of a field's value (a number or nested tuples of numbers)."""
  if isinstance(value, float):
    yield value
  elif isinstance(value, tuple):
    for item in value:
      yield from _floats(item)


def _check_finite(cfg: Any, prefix: str = '') -> None:
  """Every float of every field is finite: no field gives NaN or an infinity a meaning."""
  for f in dataclasses.fields(cfg):
    value = getattr(cfg, f.name)
    if dataclasses.is_dataclass(value):
      _check_finite(value, f'{prefix}{f.name}.')
    elif not all(math.isfinite(x) for x in _floats(value)):
      raise ConfigError(f'{prefix}{f.name}={value!r}: every number must be finite '
                        '(no field takes NaN or inf)')


def _validate_plus(cfg: YolactConfig) -> None:
  """The YOLACT++ fields: DCN placement that fits the backbone, and a mask-IoU network wherever
  something needs one."""
  m = cfg.model
  b = m.backbone
  if any(d < 0 for d in b.dcn_layers):
    raise ConfigError(f'model.backbone.dcn_layers={b.dcn_layers!r}: counts must be >= 0')
  if any(b.dcn_layers):
    if b.kind != 'resnet':
      raise ConfigError(f'model.backbone.dcn_layers={b.dcn_layers!r}: deformable convolutions '
                        f'exist only in the ResNet backbone, not {b.kind!r}')
    if len(b.dcn_layers) != len(b.layers):
      raise ConfigError(f'model.backbone.dcn_layers={b.dcn_layers!r}: needs one entry per stage '
                        f'of model.backbone.layers={b.layers!r}')
  if b.dcn_interval < 1:
    raise ConfigError(f'model.backbone.dcn_interval={b.dcn_interval!r}: must be >= 1')
  if m.use_maskiou and not m.maskiou_net:
    raise ConfigError('model.use_maskiou=True needs model.maskiou_net layers, e.g. '
                      'model.maskiou_net=((8, 3, 2), (16, 3, 2), (32, 3, 2), (64, 3, 2), '
                      '(128, 3, 2))')
  for path in ('detect.rescore_mask', 'detect.rescore_bbox'):
    if get_field(cfg, path) and not m.use_maskiou:
      raise ConfigError(f'{path}=True needs the mask-IoU network: set model.use_maskiou=True')
  if any(len(layer) != 3 or min(layer) < 1 for layer in m.maskiou_net):
    raise ConfigError(f'model.maskiou_net={m.maskiou_net!r}: each layer is (channels, kernel, '
                      'stride), all >= 1')


def config_to_dict(cfg: Any) -> dict[str, Any]:
  """A JSON-friendly nested dict (for logs and checkpoints)."""
  return dataclasses.asdict(cfg)


# Keys the trainer writes into a run's config.json beside the config (not config fields).
RUN_TOPOLOGY_KEYS = ('num_devices', 'num_processes')


def _from_dict(cls: Any, data: Any, path: str) -> Any:
  """The dataclass ``cls`` from its fields' values in ``data`` (``path``: its dotted prefix)."""
  if not isinstance(data, dict):
    where = f'{path[:-1]}: ' if path else ''
    raise ConfigError(f'{where}expected a mapping of config fields, got '
                      f'{type(data).__name__} {data!r}')
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  unknown = [k for k in data if k not in names]
  if unknown:
    raise _unknown_field(cls, str(unknown[0]), path + str(unknown[0]))
  values = {}
  for name, value in data.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      values[name] = _from_dict(hint, value, f'{path}{name}.')
    else:
      values[name] = _coerce(value, hint, path + name)
  return cls(**values)  # fields absent from ``data`` (an older run) keep their defaults


def _leaves(data: dict, prefix: str = '') -> typing.Iterator[tuple[str, Any]]:
  """(dotted path, value) of every field in nested ``data`` (an empty mapping is a value)."""
  for key, value in data.items():
    if isinstance(value, dict) and value:
      yield from _leaves(value, f'{prefix}{key}.')
    else:
      yield f'{prefix}{key}', value


def _upgrade_layout(data: dict) -> dict:
  """``data`` written in the earlier layout (no ``model`` section) in the current one: each
  field of :data:`MOVED_FIELDS` at its new place, the removed ones dropped."""
  out: dict = {}
  for path, value in _leaves(data):
    moved, new, _ = moved_field(path)
    if moved and new is None:
      continue
    *parents, last = new.split('.')
    node = out
    for key in parents:
      node = node.setdefault(key, {})
      if not isinstance(node, dict):  # a section that is no mapping: _from_dict names it
        return data
    node[last] = value
  return out


def config_from_dict(data: Any) -> YolactConfig:
  """The config that :func:`config_to_dict` turned into ``data`` (JSON lists back to tuples),
  validated. A run's ``config.json`` written in the earlier layout, before the ``model``
  section, is read through :data:`MOVED_FIELDS`. The run-topology keys of a run's
  ``config.json`` are ignored; ``data`` that is no mapping, an unknown field or a value of the
  wrong type is a ConfigError naming it."""
  if isinstance(data, dict):
    data = {k: v for k, v in data.items() if k not in RUN_TOPOLOGY_KEYS}
    if 'model' not in data:
      data = _upgrade_layout(data)
  cfg = _from_dict(YolactConfig, data, '')
  validate(cfg)
  return cfg


def load_config(spec: str, overrides: typing.Sequence[str] = ()) -> YolactConfig:
  """A preset name (``yolact_base``) or a config file (``configs/yolact_base.py``, or any file
  defining ``get_config()``), with overrides applied and the result validated."""
  if not spec.endswith('.py'):
    return get_config(spec, overrides)
  import importlib.util
  import os
  if not os.path.isfile(spec):
    raise FileNotFoundError(f'Config file not found: {spec}')
  module_spec = importlib.util.spec_from_file_location('_yolact_config_file', spec)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  make = getattr(module, 'get_config', None)
  if make is None:
    raise ConfigError(f'{spec} must define get_config() returning a YolactConfig')
  cfg = make()
  if not isinstance(cfg, YolactConfig):
    raise ConfigError(f'{spec}: get_config() returned {type(cfg).__name__}, not a YolactConfig')
  return apply_overrides(cfg, overrides)


def parse_args_with_overrides(parser: Any, argv: typing.Sequence[str] | None = None
                              ) -> tuple[Any, list[str]]:
  """``parser.parse_known_args`` where every unknown argument must be a ``--config.x.y=value``
  override; anything else is the parser's usual 'unrecognized arguments' error."""
  args, extra = parser.parse_known_args(argv)
  bad = [a for a in extra if not a.startswith('--config.')]
  if bad:
    parser.error(f'unrecognized arguments: {" ".join(bad)}')
  return args, list(extra)
