"""The YOLACT network: backbone -> FPN -> (ProtoNet on P3, shared head on P3..P7, seg conv).

``Yolact(cfg)(images, train=...)`` takes normalised NHWC images [B, S, S, 3] and returns a dict:
``loc`` [B, P, 4] encoded offsets, ``conf`` [B, P, C] class logits (softmax is Detect's job),
``coefs`` [B, P, k] tanh'd mask coefficients, ``proto`` [B, Hp, Wp, k] prototypes and, in training
(or when ``return_segm``), ``segm`` [B, H3, W3, C-1] semantic logits. Priors come from
``yolact_jax.anchors.make_priors(cfg, S)``.

With ``cfg.use_maskiou`` (YOLACT++) the variables also hold the mask-IoU network
(``params['maskiou_net']``, a :class:`~yolact_jax.model.maskiou.MaskIoUNet`); like the semantic
segmentation conv it is only created here, never run: the loss and the inference program apply it
to assembled masks.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolact_jax.config import YolactConfig
from yolact_jax.model.backbone import make_backbone
from yolact_jax.model.fpn import FPN
from yolact_jax.model.head import prediction_modules
from yolact_jax.model.layers import conv
from yolact_jax.model.maskiou import MaskIoUNet
from yolact_jax.model.protonet import ProtoNet


class Yolact(nn.Module):
  """The whole network. ``freeze_bn`` runs every BatchNorm on running stats without gradients;
  ``bn_groups`` > 1 computes training-mode BatchNorm statistics per replica (the batch split into
  that many equal groups, as ``nn.DataParallel`` does); ``dtype`` is the computation dtype."""
  cfg: YolactConfig
  freeze_bn: bool = False
  dtype: Any = jnp.float32
  bn_groups: int = 1

  @nn.compact
  def __call__(self, images: jnp.ndarray, train: bool = False,
               return_segm: bool | None = None) -> dict[str, jnp.ndarray]:
    cfg = self.cfg
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'Yolact expects NHWC images [B, H, W, 3], got shape {images.shape}')
    m = cfg.model
    b = m.backbone
    x = images.astype(self.dtype)
    stages = make_backbone(b.kind, b.layers, b.base_width, self.freeze_bn, self.dtype,
                           dcn_layers=b.dcn_layers, dcn_interval=b.dcn_interval,
                           bn_groups=self.bn_groups)(x, train)
    f = m.fpn
    pyramid = FPN(f.num_features, f.num_downsample, f.relu_pred_layers, f.relu_downsample_layers,
                  self.dtype, interpolation=f.interpolation,
                  use_conv_downsample=f.use_conv_downsample, pad=f.pad,
                  name='fpn')([stages[i] for i in b.selected_layers])
    proto = ProtoNet(m.mask.proto_net, m.mask.proto_prototype_activation, self.dtype,
                     name='proto_net')(pyramid[m.mask.proto_src])
    if m.use_maskiou and self.is_initializing():  # parameters only; applied to masks elsewhere
      MaskIoUNet(m.maskiou_net, cfg.num_classes - 1, self.dtype,
                 name='maskiou_net')(jnp.zeros(proto.shape[:3], self.dtype))
    heads = prediction_modules(len(pyramid), m.head.share_prediction_module, cfg.num_classes,
                               m.mask.mask_dim, m.anchors.num_anchors, m.head.extra_head_net,
                               m.head.head_kernel, m.head.head_padding,
                               m.mask.proto_coeff_activation, self.dtype)
    levels = [head(p) for head, p in zip(heads, pyramid)]
    out = {k: jnp.concatenate([level[k] for level in levels], axis=1).astype(jnp.float32)
           for k in ('loc', 'conf', 'coefs')}
    out['proto'] = proto.astype(jnp.float32)
    if train if return_segm is None else return_segm:
      segm = conv(cfg.num_classes - 1, 1, name='semantic_seg_conv', dtype=self.dtype)(pyramid[0])
      out['segm'] = segm.astype(jnp.float32)
    elif self.is_initializing():
      conv(cfg.num_classes - 1, 1, name='semantic_seg_conv', dtype=self.dtype)(pyramid[0])
    return out
