"""ProtoNet: convs with ReLU, a x2 bilinear upsample, and a final 1x1 conv to
``mask_dim`` prototypes followed by the prototype activation (ReLU). Output is NHWC, i.e. the
original's channels-last ``proto`` [B, Hp, Wp, k].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolact_jax.config import ProtoLayer
from yolact_jax.model.fpn import resize_bilinear_2x
from yolact_jax.model.layers import conv


class ProtoNet(nn.Module):
  """Layers named by their index in the original's nn.Sequential (each entry is [layer, ReLU])."""
  layers: tuple[ProtoLayer, ...]
  prototype_activation: str = 'relu'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    last = len(self.layers) - 1
    for i, (channels, kernel, padding) in enumerate(self.layers):
      if kernel == -2:
        x = resize_bilinear_2x(x)
      else:
        x = conv(channels, kernel, 1, padding, name=str(2 * i), dtype=self.dtype)(x)
      if i != last:
        x = nn.relu(x)
    if self.prototype_activation == 'relu':
      x = nn.relu(x)
    elif self.prototype_activation != 'none':
      raise ValueError(f'Unknown prototype activation {self.prototype_activation!r}')
    return x
