"""YOLACT++'s fast mask re-scoring network: predicts, per class, the IoU of a mask with its object.

Input: masks at prototype resolution ``[N, Hp, Wp]`` (the cropped sigmoid masks, not binarised).
Layers (``model.maskiou_net``, each ``(channels, kernel, stride)``): convolutions without padding,
each followed by a ReLU, then a 1x1 convolution to the ``C - 1`` foreground classes, also with a
ReLU, then a max over the remaining spatial extent. Output ``[N, C - 1]``, >= 0 (not capped at
1: with random weights a predicted IoU can exceed 1, as in the original).

The network of a model config is :func:`mask_iou_network`; ``Yolact.init`` creates its
parameters (``params['maskiou_net']``) and :func:`predict_mask_iou` applies it, for the loss's
term I and for the inference program's mask re-scoring alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolact_jax.config import ModelConfig
from yolact_jax.model.layers import conv

# One layer of the mask-IoU network: (out_channels, kernel, stride); no padding.
MaskIoULayer = tuple[int, int, int]


class MaskIoUNet(nn.Module):
  """``[N, Hp, Wp]`` masks -> ``[N, num_classes]`` predicted IoU per foreground class.

  For the original's ``yolact_plus`` layers ``5 x (3x3, stride 2)`` with 8, 16, 32, 64, 128
  channels, a 138 x 138 input shrinks to 68, 33, 16, 7, 3, then 3 after the 1x1 convolution.
  Convolutions are named ``maskiou_net_<i>`` with i the index in the original's ``nn.Sequential``
  (conv, ReLU, conv, ReLU, ...), so the state_dict keys are ``maskiou_net.maskiou_net.<i>.*``.
  """
  layers: tuple[MaskIoULayer, ...]
  num_classes: int  # foreground classes (C - 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, masks: jnp.ndarray) -> jnp.ndarray:
    x = masks[..., None].astype(self.dtype)  # one input channel
    specs = tuple(self.layers) + ((self.num_classes, 1, 1),)
    size = min(masks.shape[1:3])
    for _, kernel, stride in specs:
      size = (size - kernel) // stride + 1 if size >= kernel else 0
    if size < 1:
      raise ValueError(f'maskiou_net={tuple(self.layers)} shrinks {masks.shape[1]}x'
                       f'{masks.shape[2]} masks to nothing: use fewer or smaller layers')
    for i, (channels, kernel, stride) in enumerate(specs):
      x = nn.relu(conv(channels, kernel, stride, 0, name=f'maskiou_net_{2 * i}',
                       dtype=self.dtype)(x))
    return jnp.max(x, axis=(1, 2)).astype(jnp.float32)


def mask_iou_network(cfg: ModelConfig, num_classes: int, dtype: Any = jnp.float32,
                     name: str | None = None) -> MaskIoUNet:
  """The mask-IoU network of the model section ``cfg`` (its ``maskiou_net`` layers) for
  ``num_classes`` classes including background."""
  return MaskIoUNet(tuple(cfg.maskiou_net), num_classes - 1, dtype, name=name)


def predict_mask_iou(params: Mapping[str, Any] | None, masks: jnp.ndarray, cfg: ModelConfig,
                     num_classes: int, dtype: Any = jnp.float32) -> jnp.ndarray:
  """Soft masks ``[N, Hp, Wp]`` at prototype resolution -> predicted IoU ``[N, C - 1]`` per
  foreground class, by the mask-IoU network of the YOLACT++ model ``cfg``.

  ``params`` are the network's parameters (``variables['params']``); the mask-IoU network's are
  ``params['maskiou_net']``, which ``Yolact.init`` creates when ``cfg.use_maskiou``. Raises
  ValueError when they are missing.
  """
  if not params or 'maskiou_net' not in params:
    raise ValueError("the mask-IoU network (model.use_maskiou) needs its parameters at "
                     "variables['params']['maskiou_net'] (Yolact.init creates them when "
                     "model.use_maskiou)")
  net = mask_iou_network(cfg, num_classes, dtype)
  return net.apply({'params': params['maskiou_net']}, masks)
