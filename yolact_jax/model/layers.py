"""Building blocks shared by the network modules: a PyTorch-faithful BatchNorm and conv helpers.

Module names are chosen so that a Flax path maps to the original's state_dict key by turning each
``_<digits>`` into ``.<digits>`` (``layers_0_1/conv1`` -> ``layers.0.1.conv1``); see
``yolact_jax.checkpoint.convert``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from yolact_jax.ops.conv import conv_general_dilated

# Initialisers. The original trains non-backbone convs from xavier_uniform with zero bias; backbone
# convs come from ImageNet files, and when training from scratch we use He (fan-out) normal.
xavier_uniform = nn.initializers.xavier_uniform()
he_normal = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True,
         name: str | None = None, kernel_init: Any = xavier_uniform,
         dtype: Any = jnp.float32) -> nn.Conv:
  """A PyTorch-style Conv2d in NHWC: symmetric explicit padding, HWIO kernel."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), use_bias=bias,
                 kernel_init=kernel_init, bias_init=nn.initializers.zeros, dtype=dtype,
                 param_dtype=jnp.float32, name=name,
                 conv_general_dilated=conv_general_dilated)  # picks XLA's or the CPU rewrites


class BatchNorm(nn.Module):
  """``torch.nn.BatchNorm2d`` over NHWC inputs, with three modes.

  * ``train=False``: normalise with the running statistics (eval mode).
  * ``train=True``: normalise with the biased batch statistics over N, H, W; update the running
    mean with the batch mean and the running variance with the UNBIASED batch variance, both
    with ``momentum`` (torch's convention: new = (1 - m) old + m batch); count batches in
    ``num_batches_tracked`` (kept so that checkpoints round-trip bit-exactly).
  * ``frozen=True``: the original's freeze_bn: running statistics and no gradient to the affine
    parameters (the train step also exempts them from weight decay).

  ``groups`` > 1 (training mode): the batch is ``groups`` equal slices, one per data-parallel
  replica, each normalised with its own statistics, as ``nn.DataParallel`` replicas do; the
  running statistics follow the first slice only, as ``nn.DataParallel`` keeps the first
  replica's buffers. ``groups`` = 1 on a sharded batch gives statistics of the global batch.
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  frozen: bool = False
  groups: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    count = self.variable('batch_stats', 'num_batches_tracked', jnp.zeros, (), jnp.int32)
    if self.frozen:
      scale, bias = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(bias)
    if not (train and not self.frozen):
      return self._normalise(x, mean.value, var.value, scale, bias)
    groups = self.groups if x.shape[0] % self.groups == 0 else 1  # init runs on one image
    x32 = x.astype(jnp.float32).reshape((groups, -1) + x.shape[1:])
    axes = tuple(range(1, x32.ndim - 1))
    batch_mean = jnp.mean(x32, axes, keepdims=True)  # [G, 1, 1, 1, C]
    batch_var = jnp.mean(jnp.square(x32 - batch_mean), axes, keepdims=True)
    n = x.size // features // groups
    if not self.is_initializing():
      m = self.momentum
      mean.value = (1 - m) * mean.value + m * batch_mean[0].reshape(features)
      var.value = (1 - m) * var.value + m * batch_var[0].reshape(features) * (n / max(n - 1, 1))
      count.value = count.value + 1
    y = self._normalise(x.reshape(x32.shape), batch_mean, batch_var, scale, bias)
    return y.reshape(x.shape)

  def _normalise(self, x, mean, var, scale, bias):
    inv = jax.lax.rsqrt(var + self.epsilon) * scale
    y = (x - mean.astype(x.dtype)) * inv.astype(x.dtype) + bias.astype(x.dtype)
    return y.astype(self.dtype)
