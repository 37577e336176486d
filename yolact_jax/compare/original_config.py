"""The original's config built from ours, for any preset (also those it lacks, e.g. yolact_cpu):
its own nearest config (``<name>_config``, else yolact_resnet50's or yolact_plus_resnet50's) with
every field that shapes the network, the loss and the schedule set from ours.

The original's ResNet has a fixed stem width of 64; a narrower preset gets
:func:`scaled_resnet_type`, a subclass whose only difference is that width, built with the
original's own ``_make_layer``. Whether the translation is right shows at once: the original's
network must accept our variables as a strict state_dict, and the first step's losses must match.
"""

from __future__ import annotations

from typing import Any

ACTIVATIONS = ('tanh', 'sigmoid', 'softmax', 'relu', 'none')


def scaled_resnet_type(backbone_module: Any, torch: Any) -> type:
  """The original's ``ResNetBackbone`` with stem width ``base_width`` (stages ``base_width *
  2**i`` planes, as ours), every other attribute set as its ``__init__`` sets it."""
  nn = torch.nn
  parent = backbone_module.ResNetBackbone

  class ScaledResNetBackbone(parent):  # pylint: disable=missing-class-docstring

    def __init__(self, layers, dcn_layers=(0, 0, 0, 0), dcn_interval=1, base_width=64,
                 atrous_layers=(), block=backbone_module.Bottleneck,
                 norm_layer=nn.BatchNorm2d):
      nn.Module.__init__(self)
      self.num_base_layers = len(layers)
      self.layers = nn.ModuleList()
      self.channels = []
      self.norm_layer = norm_layer
      self.dilation = 1
      self.atrous_layers = list(atrous_layers)
      self.inplanes = base_width
      self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
      self.bn1 = norm_layer(base_width)
      self.relu = nn.ReLU(inplace=True)
      self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
      for stage, blocks in enumerate(layers):
        self._make_layer(block, base_width * 2 ** stage, blocks, stride=1 if stage == 0 else 2,
                         dcn_layers=dcn_layers[stage], dcn_interval=dcn_interval)
      self.backbone_modules = [m for m in self.modules() if isinstance(m, nn.Conv2d)]

  return ScaledResNetBackbone


def _proto_net(layers: Any) -> list:
  """Our ProtoNet encoding -> the original's ``mask_proto_net`` (kwargs dicts)."""
  return [(c, k, {'padding': p} if p else {}) for c, k, p in layers]


def _nearest(config_module: Any, cfg: Any) -> Any:
  name = f'{cfg.name}_config'
  if hasattr(config_module, name):
    return getattr(config_module, name)
  plus = any(cfg.model.backbone.dcn_layers) or cfg.model.use_maskiou
  return getattr(config_module, 'yolact_plus_resnet50_config' if plus
                 else 'yolact_resnet50_config')


def describe(config_module: Any, cfg: Any) -> str:
  """Where the original's config of a study comes from, for its report."""
  if hasattr(config_module, f'{cfg.name}_config'):
    return (f"The original runs its own {cfg.name}_config, with our schedule and BatchNorm "
            'decision set on it.')
  width = cfg.model.backbone.base_width
  return (f'The original has no {cfg.name}: its config is built from ours in the harness '
          f'(from its {_nearest(config_module, cfg).name}_config, every network, loss and '
          'schedule field set from ours' + (f'; its ResNet with stem width {width} instead of 64'
                                            if width != 64 else '') + ').')


def original_config(config_module: Any, backbone_module: Any, torch: Any, cfg: Any,
                    schedule: Any, freeze_bn: bool) -> Any:
  """The original's ``Config`` for our ``cfg``; ``schedule``: the effective one
  (``train_step.effective_schedule``: autoscaled as the original's train.py does);
  ``freeze_bn``: train.py's decision for the batch per device."""
  m = cfg.model
  b, a = m.backbone, m.anchors
  if b.kind != 'resnet':
    raise ValueError(f'{cfg.name}: only ResNet backbones are translated for the original '
                     f'(backbone {b.kind!r})')
  for name in (m.mask.proto_prototype_activation, m.mask.proto_coeff_activation):
    if name not in ACTIVATIONS:
      raise ValueError(f'activation {name!r} has no counterpart in the original')
  act = config_module.activation_func
  base = _nearest(config_module, cfg)
  kind = (backbone_module.ResNetBackbone if b.base_width == 64
          else scaled_resnet_type(backbone_module, torch))
  args = (list(b.layers), list(b.dcn_layers), b.dcn_interval)
  backbone = base.backbone.copy({
      'type': kind, 'args': args if b.base_width == 64 else args + (b.base_width,),
      'selected_layers': list(b.selected_layers),
      'pred_scales': [list(s) for s in a.pred_scales],
      'pred_aspect_ratios': [[list(r)] for r in a.pred_aspect_ratios],
      'use_pixel_scales': a.use_pixel_scales, 'preapply_sqrt': a.preapply_sqrt,
      'use_square_anchors': a.use_square_anchors})
  fpn = base.fpn.copy({
      'num_features': m.fpn.num_features, 'interpolation_mode': m.fpn.interpolation,
      'num_downsample': m.fpn.num_downsample, 'use_conv_downsample': m.fpn.use_conv_downsample,
      'pad': m.fpn.pad, 'relu_downsample_layers': m.fpn.relu_downsample_layers,
      'relu_pred_layers': m.fpn.relu_pred_layers})
  loss, t = cfg.loss, cfg.train
  values = {
      'name': cfg.name, 'max_size': cfg.max_size, 'num_classes': cfg.num_classes,
      'backbone': backbone, 'fpn': fpn,
      'mask_proto_src': m.mask.proto_src, 'mask_proto_net': _proto_net(m.mask.proto_net),
      'mask_proto_prototype_activation': getattr(act, m.mask.proto_prototype_activation),
      'mask_proto_coeff_activation': getattr(act, m.mask.proto_coeff_activation),
      'extra_head_net': [(c, 3, {'padding': 1}) for c in m.head.extra_head_net],
      'head_layer_params': {'kernel_size': m.head.head_kernel, 'padding': m.head.head_padding},
      'share_prediction_module': m.head.share_prediction_module,
      'use_maskiou': m.use_maskiou,
      'positive_iou_threshold': loss.positive_iou_threshold,
      'negative_iou_threshold': loss.negative_iou_threshold,
      'crowd_iou_threshold': loss.crowd_iou_threshold,
      'ohem_negpos_ratio': loss.ohem_negpos_ratio, 'bbox_alpha': loss.bbox_alpha,
      'conf_alpha': loss.conf_alpha, 'mask_alpha': loss.mask_alpha,
      'use_semantic_segmentation_loss': loss.use_semantic_segmentation_loss,
      'semantic_segmentation_alpha': loss.semantic_segmentation_alpha,
      'masks_to_train': loss.masks_to_train, 'mask_proto_crop': loss.proto_crop,
      'mask_proto_normalize_emulate_roi_pooling': loss.normalize_emulate_roi_pooling,
      'maskiou_alpha': loss.maskiou_alpha, 'discard_mask_area': loss.discard_mask_area,
      'lr': schedule.lr, 'momentum': t.momentum, 'decay': t.decay, 'gamma': schedule.gamma,
      'lr_steps': tuple(schedule.lr_steps), 'max_iter': schedule.max_iter,
      'lr_warmup_init': schedule.warmup_init, 'lr_warmup_until': schedule.warmup_until,
      'freeze_bn': freeze_bn,
  }
  if m.use_maskiou:
    values['maskiou_net'] = [(c, k, {'stride': s}) for c, k, s in m.maskiou_net]
  return base.copy(values)
