"""Feature pyramid: lateral 1x1 convs, a top-down resize to the exact lateral size, 3x3 prediction
convs with ReLU (P3-P5), then P6/P7 by stride-2 convs without ReLU (P6 from P5, or from C5 as
mmdetection's).

Index order is the original's: ``lat_layers_0`` / ``pred_layers_0`` belong to C5 / P5. The
options follow the config's ``fpn`` fields (the presets use the first value of each); what each
does is in :class:`FPN`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from yolact_jax.config import FPN_INTERPOLATIONS
from yolact_jax.model.layers import conv


def resize_bilinear(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """NHWC bilinear resize with half-pixel centres (torch ``align_corners=False``), no antialias."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), 'bilinear',
                          antialias=False)


def _upsample_2x_along(x: jnp.ndarray, axis: int) -> jnp.ndarray:
  # x[i - 1] and x[i + 1] by concatenation (an edge-mode jnp.pad gives the same values, but its
  # gradient took 3x as long on CPU)
  n = x.shape[axis]
  before = jnp.concatenate([lax.slice_in_dim(x, 0, 1, axis=axis),
                            lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)  # x[i - 1], clamped
  after = jnp.concatenate([lax.slice_in_dim(x, 1, n, axis=axis),
                           lax.slice_in_dim(x, n - 1, n, axis=axis)], axis)  # x[i + 1], clamped
  even, odd = 0.25 * before + 0.75 * x, 0.75 * x + 0.25 * after
  return jnp.stack([even, odd], axis + 1).reshape(x.shape[:axis] + (2 * n,) + x.shape[axis + 1:])


def resize_bilinear_2x(x: jnp.ndarray) -> jnp.ndarray:
  """:func:`resize_bilinear` to twice the height and width, as its fixed two-tap stencil: output
  2i takes 0.25 x[i - 1] + 0.75 x[i], output 2i + 1 takes 0.75 x[i] + 0.25 x[i + 1], with the
  edge rows and columns repeated (``jax.image.resize``'s and torch's weights; the same values up
  to float32 rounding). Element-wise passes instead of ``jax.image.resize``'s products with
  weight matrices and their transposes: on CPU the ProtoNet's upsample and its gradient take
  2-3x less time."""
  return _upsample_2x_along(_upsample_2x_along(x, 1), 2)


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """torch's 'nearest' source indices [out_size]: min(floor(dst * (in / out)), in - 1), float32."""
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
  return np.minimum(src, in_size - 1)


def resize_nearest(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """NHWC nearest-neighbour resize as torch ``F.interpolate(mode='nearest')``."""
  rows = nearest_indices(x.shape[1], height)
  cols = nearest_indices(x.shape[2], width)
  return x[:, rows][:, :, cols]


# model.fpn.interpolation -> resize [B, H, W, C] -> [B, height, width, C]; keys FPN_INTERPOLATIONS.
RESIZE: dict[str, Callable[[jnp.ndarray, int, int], jnp.ndarray]] = {
    'bilinear': resize_bilinear, 'nearest': resize_nearest}
assert tuple(RESIZE) == FPN_INTERPOLATIONS, (tuple(RESIZE), FPN_INTERPOLATIONS)


class FPN(nn.Module):
  """[C3, C4, C5] -> [P3, P4, P5, P6, P7], each with ``num_features`` channels.

  * ``interpolation`` (``FPN_INTERPOLATIONS``): 'bilinear' with half-pixel centres, or 'nearest'
    as torch's ``F.interpolate(mode='nearest')`` (source index ``floor(dst * in / out)``). The
    original passes ``align_corners=False`` with the mode, which torch refuses for 'nearest', so
    there 'nearest' stops with an error; here it runs the mode without that argument.
  * ``use_conv_downsample``: P6/P7 by 3x3 stride-2 convs (padding 1), or, when False, as the
    original's ``max_pool2d(x, 1, stride=2)``: every second row and column (no parameters). Both
    give ceil(n / 2) pixels.
  * ``pad``: padding 1 in the 3x3 prediction convs, or 0 (each of P3-P5 then loses 2 pixels).
  * ``downsample_from_backbone``: the first extra level is made from the deepest backbone
    feature (C5) instead of P5, the next ones from the level before (mmdetection's
    ``add_extra_convs='on_input'``).
  """
  num_features: int = 256
  num_downsample: int = 2
  relu_pred_layers: bool = True
  relu_downsample_layers: bool = False
  dtype: Any = jnp.float32
  interpolation: str = 'bilinear'
  use_conv_downsample: bool = True
  pad: bool = True
  downsample_from_backbone: bool = False

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray]) -> list[jnp.ndarray]:
    if self.interpolation not in RESIZE:
      raise ValueError(f'FPN interpolation must be one of {FPN_INTERPOLATIONS}, got '
                       f'{self.interpolation!r}')
    resize = RESIZE[self.interpolation]
    n = len(features)
    f = self.num_features
    laterals = [conv(f, 1, name=f'lat_layers_{i}', dtype=self.dtype)(x)
                for i, x in enumerate(reversed(features))]  # index 0 is the deepest level
    tops = [laterals[0]]
    for lateral in laterals[1:]:
      above = resize(tops[-1], lateral.shape[1], lateral.shape[2])
      tops.append(above + lateral)
    outs = []
    padding = 1 if self.pad else 0
    for i, top in enumerate(tops):
      y = conv(f, 3, 1, padding, name=f'pred_layers_{i}', dtype=self.dtype)(top)
      outs.append(nn.relu(y) if self.relu_pred_layers else y)
    outs = outs[::-1]  # P3 .. P5
    for i in range(self.num_downsample):
      source = features[-1] if i == 0 and self.downsample_from_backbone else outs[-1]
      if self.use_conv_downsample:
        y = conv(f, 3, 2, 1, name=f'downsample_layers_{i}', dtype=self.dtype)(source)
      else:
        y = source[:, ::2, ::2]
      outs.append(nn.relu(y) if self.relu_downsample_layers else y)
    assert len(outs) == n + self.num_downsample
    return outs
