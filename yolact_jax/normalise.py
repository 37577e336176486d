"""The network's input normalisation (the original's ``BackboneTransform``), one function for both
paths: numpy images on the host (the training and evaluation transforms of
:mod:`yolact_jax.data.augment`) and jax arrays on the device (the inference program of
:mod:`yolact_jax.predict`).

The original normalises a BGR image and then reorders the channels to RGB; the operations are
per element, so normalising the RGB image with the constants reversed gives the same float32
values. :func:`normalise` takes RGB (the channel order of the network) and applies exactly the
original's two float32 operations, ``(x - mean) / std`` ('resnet') or ``x / 255`` ('darknet'),
to numpy or jax arrays alike: both paths compute the same formula (compiled by XLA, the division
may round the last bit differently from numpy's: at most 1 ulp).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from yolact_jax.config import INPUT_TRANSFORMS

# The original's ResNet constants (its data/config.py MEANS / STD), BGR-ordered as its cv2 images.
MEANS_BGR = (103.94, 116.78, 123.68)
STD_BGR = (57.38, 57.12, 58.40)


def normalise(rgb: Any, transform: str) -> Any:
  """Float32 RGB images ``[..., H, W, 3]`` in 0..255 (numpy or jax) -> the network input.

  'resnet': ``(x - MEANS) / STD`` per channel (the BGR constants applied to their own
  channels); 'darknet': ``x / 255``. The result has the type of ``rgb`` (numpy in, numpy out;
  jax in, jax out). ``transform`` is one of ``INPUT_TRANSFORMS`` (``backbone.transform``).
  """
  if transform not in INPUT_TRANSFORMS:
    raise ValueError(f'transform must be one of {INPUT_TRANSFORMS}, got {transform!r}')
  if transform == 'darknet':
    return rgb / np.float32(255)
  # Rows viewed as [..., W * 3] with the constants tiled along them: the same float32 ops as
  # broadcasting over the channel axis, with long inner loops (10x faster in numpy).
  width = rgb.shape[-2]
  rows = rgb.reshape(*rgb.shape[:-2], width * 3)
  rows = ((rows - np.tile(np.array(MEANS_BGR[::-1], np.float32), width))
          / np.tile(np.array(STD_BGR[::-1], np.float32), width))
  return rows.reshape(rgb.shape)
