"""Prediction head: one parameter set shared across pyramid levels (the original's
``share_prediction_module``), or one per level (:func:`prediction_modules`).

For each level: ReLU(3x3 'upfeature' conv), then three 3x3 convs for box offsets, class logits
and mask coefficients (tanh). Outputs are reshaped anchor-fastest: prior index within a level is
``(y * W + x) * A + a`` and conv channel ``a * n + j`` is component j of anchor a.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolact_jax.model.layers import conv


class PredictionModule(nn.Module):
  """One pyramid level -> loc [B, H*W*A, 4], conf [B, H*W*A, C] logits, coefs [B, H*W*A, k]."""
  num_classes: int
  mask_dim: int
  num_anchors: int
  extra_head_net: tuple[int, ...] = (256,)
  kernel: int = 3
  padding: int = 1
  coeff_activation: str = 'tanh'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
    for i, channels in enumerate(self.extra_head_net):
      x = nn.relu(conv(channels, 3, 1, 1, name=f'upfeature_{i}', dtype=self.dtype)(x))
    a = self.num_anchors
    batch = x.shape[0]

    def branch(name: str, n: int) -> jnp.ndarray:
      y = conv(a * n, self.kernel, 1, self.padding, name=name, dtype=self.dtype)(x)
      return y.reshape(batch, -1, n)

    loc = branch('bbox_layer', 4)
    conf = branch('conf_layer', self.num_classes)
    coefs = branch('mask_layer', self.mask_dim)
    if self.coeff_activation == 'tanh':
      coefs = jnp.tanh(coefs)
    elif self.coeff_activation != 'none':
      raise ValueError(f'Unknown coefficient activation {self.coeff_activation!r}')
    return {'loc': loc, 'conf': conf, 'coefs': coefs}


def prediction_modules(num_levels: int, share: bool, *args: Any, **kwargs: Any
                       ) -> list[PredictionModule]:
  """The head of each pyramid level; call inside the network's compact ``__call__``.

  ``share`` (``model.head.share_prediction_module``): one module, ``prediction_layers_0``, used at
  every level. Otherwise one module per level, ``prediction_layers_{i}``, each with its own
  parameters (the original's state_dict keys ``prediction_layers.{i}.*``). ``args``/``kwargs``
  are :class:`PredictionModule`'s fields.
  """
  if share:
    return [PredictionModule(*args, name='prediction_layers_0', **kwargs)] * num_levels
  return [PredictionModule(*args, name=f'prediction_layers_{i}', **kwargs)
          for i in range(num_levels)]
