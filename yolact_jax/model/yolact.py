"""The YOLACT network: backbone -> FPN -> (ProtoNet on P3, shared head on P3..P7, seg conv).

``Yolact(cfg.model, num_classes=cfg.num_classes)`` is the network of the experiment ``cfg``: it
takes the model section (a :class:`~yolact_jax.config.ModelConfig`) and the number of classes
including background, nothing else of the experiment. ``model(images, train=...)`` takes
normalised NHWC images [B, S, S, 3] and returns a dict: ``loc`` [B, P, 4] encoded offsets,
``conf`` [B, P, C] class logits (softmax is Detect's job), ``coefs`` [B, P, k] tanh'd mask
coefficients, ``proto`` [B, Hp, Wp, k] prototypes and, in training (or when ``return_segm``),
``segm`` [B, H3, W3, C-1] semantic logits. Priors: ``yolact_jax.anchors.make_priors(cfg, S)``.

With ``model.use_maskiou`` (YOLACT++) the variables also hold the mask-IoU network
(``params['maskiou_net']``, a :class:`~yolact_jax.model.maskiou.MaskIoUNet`); like the semantic
segmentation conv it is only created here, never run: the loss and the inference program apply it
to assembled masks through :func:`yolact_jax.model.maskiou.predict_mask_iou`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolact_jax.config import ModelConfig
from yolact_jax.model.backbone import make_backbone
from yolact_jax.model.fpn import FPN
from yolact_jax.model.head import prediction_modules
from yolact_jax.model.layers import conv
from yolact_jax.model.maskiou import mask_iou_network
from yolact_jax.model.protonet import ProtoNet


class Yolact(nn.Module):
  """The whole network of the model section ``cfg`` for ``num_classes`` classes (background
  included). ``freeze_bn`` runs every BatchNorm on running stats without gradients;
  ``bn_groups`` > 1 computes training-mode BatchNorm statistics per replica (the batch split into
  that many equal groups, as ``nn.DataParallel`` does); ``dtype`` is the computation dtype."""
  cfg: ModelConfig
  num_classes: int
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  bn_groups: int = 1

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False,
               return_segm: bool | None = None) -> dict[str, jnp.ndarray]:
    m = self.cfg
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'Yolact expects NHWC images [B, H, W, 3], got shape {images.shape}')
    b, f = m.backbone, m.fpn
    x = images.astype(self.dtype)
    stages = make_backbone(kind=b.kind, layers=b.layers, base_width=b.base_width,
                           dcn_layers=b.dcn_layers, dcn_interval=b.dcn_interval,
                           freeze_bn=self.freeze_bn, dtype=self.dtype,
                           bn_groups=self.bn_groups)(x, train)
    pyramid = FPN(num_features=f.num_features, num_downsample=f.num_downsample,
                  relu_pred_layers=f.relu_pred_layers,
                  relu_downsample_layers=f.relu_downsample_layers, dtype=self.dtype,
                  interpolation=f.interpolation, use_conv_downsample=f.use_conv_downsample,
                  pad=f.pad, downsample_from_backbone=f.downsample_from_backbone,
                  name='fpn')([stages[i] for i in b.selected_layers])
    proto = ProtoNet(m.mask.proto_net, m.mask.proto_prototype_activation, self.dtype,
                     name='proto_net')(pyramid[m.mask.proto_src])
    if m.use_maskiou and self.is_initializing():  # parameters only; applied to masks elsewhere
      mask_iou_network(m, self.num_classes, self.dtype,
                       name='maskiou_net')(jnp.zeros(proto.shape[:3], self.dtype))
    heads = prediction_modules(
        len(pyramid), m.head.share_prediction_module, num_classes=self.num_classes,
        mask_dim=m.mask.mask_dim, num_anchors=m.anchors.num_anchors,
        extra_head_net=m.head.extra_head_net, kernel=m.head.head_kernel,
        padding=m.head.head_padding, coeff_activation=m.mask.proto_coeff_activation,
        dtype=self.dtype)
    levels = [head(p) for head, p in zip(heads, pyramid)]
    out = {k: jnp.concatenate([level[k] for level in levels], axis=1).astype(jnp.float32)
           for k in ('loc', 'conf', 'coefs')}
    out['proto'] = proto.astype(jnp.float32)
    if train if return_segm is None else return_segm:
      segm = conv(self.num_classes - 1, 1, name='semantic_seg_conv', dtype=self.dtype)(pyramid[0])
      out['segm'] = segm.astype(jnp.float32)
    elif self.is_initializing():
      conv(self.num_classes - 1, 1, name='semantic_seg_conv', dtype=self.dtype)(pyramid[0])
    return out
