"""The weights both sides start from: a checkpoint of the original, or seeded random Flax
variables with non-trivial BatchNorm, handed to the original as a state_dict."""

from __future__ import annotations

from typing import Any

import numpy as np


def random_variables(cfg: Any, seed: int, calibration_input: np.ndarray) -> dict:
  """Seeded Flax variables with non-trivial BatchNorm: affine parameters perturbed (and YOLACT++
  DCNs given random offsets, :func:`deformed`), then running statistics set to the batch
  statistics of ``calibration_input`` [B, S, S, 3] (one training-mode pass)."""
  import jax
  import jax.numpy as jnp
  from yolact_jax.model.layers import BatchNorm
  from yolact_jax.model.variables import init_variables
  from yolact_jax.model.yolact import Yolact
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  x = jnp.asarray(calibration_input)
  variables = init_variables(cfg, seed)
  rng = np.random.default_rng(seed)

  def perturb(tree):
    if isinstance(tree, dict) and 'scale' in tree:  # a BatchNorm's parameters
      return {**tree, 'scale': rng.uniform(0.5, 1.5, tree['scale'].shape).astype(np.float32),
              'bias': rng.normal(0, 0.1, tree['bias'].shape).astype(np.float32)}
    if isinstance(tree, dict) and 'conv_offset_mask' in tree:  # a YOLACT++ DCN
      return deformed(tree, rng)
    return {k: perturb(v) if isinstance(v, dict) else v for k, v in tree.items()}

  params = perturb(jax.device_get(variables['params']))
  old = jax.device_get(variables['batch_stats'])
  _, updates = jax.jit(lambda p, s, x: model.apply({'params': p, 'batch_stats': s}, x,
                                                   train=True, mutable=['batch_stats']))(
      params, old, x)
  return {'params': params,
          'batch_stats': _batch_statistics(jax.device_get(updates['batch_stats']), old,
                                           BatchNorm.momentum)}


# Random YOLACT++ DCN offsets/modulation logits: their conv's output standard deviation over its
# input's root mean square (post-BatchNorm ReLU activations have an RMS near 0.7). Offsets of about
# 0.25 px and modulation logits of about unit spread, as the shared reference's ++ weights: with
# offsets of a pixel or more, a stack of random DCNs is chaotic (the original then differs from
# itself by 0.4 between memory layouts) and no comparison means anything.
DCN_OFFSET_GAIN = 0.35
DCN_MODULATION_GAIN = 1.4


def deformed(dcn: dict, rng: np.random.Generator) -> dict:
  """A DCN's parameters with random offset/modulation conv and bias: the initial ones are zero
  (offsets 0, modulation 0.5, the layer half a plain conv), which would leave the deformable
  sampling untested. Output channels: 2K offsets ((dy, dx) per tap), then K modulation logits."""
  offset_conv = dcn['conv_offset_mask']
  kernel = np.asarray(offset_conv['kernel'])
  fan_in, channels = int(np.prod(kernel.shape[:-1])), kernel.shape[-1]
  taps = channels // 3
  gain = np.where(np.arange(channels) < 2 * taps, DCN_OFFSET_GAIN, DCN_MODULATION_GAIN)
  bias_std = np.where(np.arange(channels) < 2 * taps, 0.1, 0.5)
  return {**dcn, 'bias': rng.normal(0, 0.1, np.shape(dcn['bias'])).astype(np.float32),
          'conv_offset_mask': {
              **offset_conv,
              'kernel': (rng.normal(0, 1, kernel.shape) * gain / np.sqrt(fan_in)
                         ).astype(np.float32),
              'bias': (rng.normal(0, 1, channels) * bias_std).astype(np.float32)}}


def _batch_statistics(new: dict, old: dict, momentum: float) -> dict:
  """The batch statistics behind one running-statistics update: running = (1 - m) old + m batch,
  so batch = (running - (1 - m) old) / m, per ``mean`` / ``var`` leaf (others kept)."""
  out = {}
  for k, v in new.items():
    if isinstance(v, dict):
      out[k] = _batch_statistics(v, old[k], momentum)
    elif k in ('mean', 'var'):
      out[k] = ((np.asarray(v) - (1 - momentum) * np.asarray(old[k])) / momentum
                ).astype(np.float32)
    else:
      out[k] = np.asarray(v)
  return out


def to_torch_state_dict(variables: dict, torch: Any) -> dict:
  """Flax variables -> the original's state_dict of torch tensors."""
  from yolact_jax.checkpoint.convert import variables_to_state_dict
  # np.array, not np.ascontiguousarray: the latter turns 0-d num_batches_tracked into [1]
  return {k: torch.from_numpy(np.array(v, order='C'))
          for k, v in variables_to_state_dict(variables).items()}


def our_variables(cfg: Any, weights: str | None, random_seed: int | None,
                  calibration_input: np.ndarray) -> tuple[dict, str]:
  """(Flax variables, a description): the original's checkpoint ``weights`` converted, else
  :func:`random_variables` from ``random_seed``."""
  if weights:
    from yolact_jax.checkpoint.convert import load_pth_weights
    return load_pth_weights(weights, cfg), str(weights)
  return (random_variables(cfg, random_seed, calibration_input),
          f'random (seed {random_seed}, calibrated BatchNorm)')
