"""Feature pyramid (spec section 4): lateral 1x1 convs, top-down bilinear resize to the exact
lateral size, 3x3 prediction convs with ReLU (P3-P5), then P6/P7 by stride-2 convs without ReLU.

Index order is the original's: ``lat_layers_0`` / ``pred_layers_0`` belong to C5 / P5.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from yolact_jax.model.layers import conv


def resize_bilinear(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """NHWC bilinear resize with half-pixel centres (torch ``align_corners=False``), no antialias."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), 'bilinear',
                          antialias=False)


class FPN(nn.Module):
  """[C3, C4, C5] -> [P3, P4, P5, P6, P7], each with ``num_features`` channels."""
  num_features: int = 256
  num_downsample: int = 2
  relu_pred_layers: bool = True
  relu_downsample_layers: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> list[jnp.ndarray]:
    n = len(features)
    f = self.num_features
    laterals = [conv(f, 1, name=f'lat_layers_{i}', dtype=self.dtype)(x)
                for i, x in enumerate(reversed(features))]  # index 0 is the deepest level
    tops = [laterals[0]]
    for lateral in laterals[1:]:
      above = resize_bilinear(tops[-1], lateral.shape[1], lateral.shape[2])
      tops.append(above + lateral)
    outs = []
    for i, top in enumerate(tops):
      y = conv(f, 3, 1, 1, name=f'pred_layers_{i}', dtype=self.dtype)(top)
      outs.append(nn.relu(y) if self.relu_pred_layers else y)
    outs = outs[::-1]  # P3 .. P5
    for i in range(self.num_downsample):
      y = conv(f, 3, 2, 1, name=f'downsample_layers_{i}', dtype=self.dtype)(outs[-1])
      outs.append(nn.relu(y) if self.relu_downsample_layers else y)
    assert len(outs) == n + self.num_downsample
    return outs
