"""Box utilities shared by inference and training: small pure functions on the last axis.

Boxes are relative to the network input. "Point form" is (x1, y1, x2, y2); "center form" is
(cx, cy, w, h), the layout of the priors. The arithmetic follows the original's
``layers/box_utils.py`` operation by operation, so float32 results agree to the last bit.
"""

from __future__ import annotations

import jax.numpy as jnp

VARIANCES = (0.1, 0.2)  # the SSD variances for centre and size offsets


def point_form(boxes: jnp.ndarray) -> jnp.ndarray:
  """(cx, cy, w, h) [..., 4] -> (x1, y1, x2, y2) [..., 4]."""
  return jnp.concatenate([boxes[..., :2] - boxes[..., 2:] / 2,
                          boxes[..., :2] + boxes[..., 2:] / 2], axis=-1)


def center_size(boxes: jnp.ndarray) -> jnp.ndarray:
  """(x1, y1, x2, y2) [..., 4] -> (cx, cy, w, h) [..., 4]."""
  return jnp.concatenate([(boxes[..., 2:] + boxes[..., :2]) / 2,
                          boxes[..., 2:] - boxes[..., :2]], axis=-1)


def encode(matched: jnp.ndarray, priors: jnp.ndarray) -> jnp.ndarray:
  """Regression targets of point-form boxes ``matched`` [..., 4] against priors [..., 4]."""
  g_cxcy = (matched[..., :2] + matched[..., 2:]) / 2 - priors[..., :2]
  g_cxcy = g_cxcy / (VARIANCES[0] * priors[..., 2:])
  g_wh = (matched[..., 2:] - matched[..., :2]) / priors[..., 2:]
  g_wh = jnp.log(g_wh) / VARIANCES[1]
  return jnp.concatenate([g_cxcy, g_wh], axis=-1)


def decode(loc: jnp.ndarray, priors: jnp.ndarray, clamp_log_size: float = 0.0) -> jnp.ndarray:
  """Predicted offsets ``loc`` [..., 4] + priors [..., 4] -> point-form boxes [..., 4].

  As the original: x2 = x1 + w (not cx + w/2), which can differ in the last bit.
  ``clamp_log_size`` > 0 clamps the log size ratios (``loc[..., 2:] * 0.2``) to that magnitude
  before exp, as mmdetection's box coder (log(1000 / 16)).
  """
  cxcy = priors[..., :2] + loc[..., :2] * VARIANCES[0] * priors[..., 2:]
  log_wh = loc[..., 2:] * VARIANCES[1]
  if clamp_log_size > 0:
    log_wh = jnp.clip(log_wh, -clamp_log_size, clamp_log_size)
  wh = priors[..., 2:] * jnp.exp(log_wh)
  x1y1 = cxcy - wh / 2
  return jnp.concatenate([x1y1, wh + x1y1], axis=-1)


def intersection(box_a: jnp.ndarray, box_b: jnp.ndarray) -> jnp.ndarray:
  """Pairwise intersection areas: [..., A, 4] x [..., B, 4] -> [..., A, B].

  One coordinate at a time (the original stacks x and y in a last axis of 2; the values are
  the same to the bit), so no [..., A, B, 2] intermediates exist: converted to ONNX, those are
  strided slices and broadcasts that cost Fast NMS (80 x 200 x 200 pairs) tens of ms."""
  def overlap(lo: int, hi: int) -> jnp.ndarray:
    far = jnp.minimum(box_a[..., :, None, hi], box_b[..., None, :, hi])
    near = jnp.maximum(box_a[..., :, None, lo], box_b[..., None, :, lo])
    return jnp.maximum(far - near, 0)
  return overlap(0, 2) * overlap(1, 3)


def area(boxes: jnp.ndarray) -> jnp.ndarray:
  """[..., 4] point form -> [...]."""
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def jaccard(box_a: jnp.ndarray, box_b: jnp.ndarray, iscrowd: bool = False,
            union_floor: float = 0.0) -> jnp.ndarray:
  """Pairwise IoU [..., A, B] of point-form boxes (no +1 pixel convention).

  With ``iscrowd`` returns intersection / area(box_a) (IoA of each A box), as the original.
  ``union_floor`` > 0: the union is at least that (mmdetection's eps: two empty boxes have IoU
  0 instead of NaN).
  """
  inter = intersection(box_a, box_b)
  area_a = area(box_a)[..., :, None]
  if iscrowd:
    return inter / area_a
  area_b = area(box_b)[..., None, :]
  union = area_a + area_b - inter
  if union_floor > 0:
    union = jnp.maximum(union, union_floor)
  return inter / union


def sanitize_coordinates(x1: jnp.ndarray, x2: jnp.ndarray, size: int | jnp.ndarray,
                         padding: float = 0) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Relative coordinates -> ordered pixel coordinates, padded and clamped to [0, size].

  The original's ``sanitize_coordinates(..., cast=False)``: scale, min/max swap, subtract/add
  ``padding``, clamp. Floats are kept (no truncation).
  """
  x1 = x1 * size
  x2 = x2 * size
  lo = jnp.minimum(x1, x2)
  hi = jnp.maximum(x1, x2)
  return jnp.maximum(lo - padding, 0), jnp.minimum(hi + padding, size)


def crop_window(boxes: jnp.ndarray, height: int, width: int, padding: float = 1) -> jnp.ndarray:
  """Indicator [..., H, W, N] of the pixels kept by cropping with relative boxes [..., N, 4].

  A pixel at integer column c and row r survives iff x1 <= c < x2 and y1 <= r < y2, where the
  bounds come from :func:`sanitize_coordinates` with ``padding`` (1 proto pixel in YOLACT).
  """
  x1, x2 = sanitize_coordinates(boxes[..., 0], boxes[..., 2], width, padding)
  y1, y2 = sanitize_coordinates(boxes[..., 1], boxes[..., 3], height, padding)
  cols = jnp.arange(width, dtype=boxes.dtype)[:, None]  # [W, 1]
  rows = jnp.arange(height, dtype=boxes.dtype)[:, None]  # [H, 1]
  in_x = (cols >= x1[..., None, :]) & (cols < x2[..., None, :])  # [..., W, N]
  in_y = (rows >= y1[..., None, :]) & (rows < y2[..., None, :])  # [..., H, N]
  return in_y[..., :, None, :] & in_x[..., None, :, :]


def crop(masks: jnp.ndarray, boxes: jnp.ndarray, padding: float = 1) -> jnp.ndarray:
  """Zeroes mask pixels outside each box: masks [..., H, W, N], boxes [..., N, 4] relative."""
  height, width = masks.shape[-3], masks.shape[-2]
  keep = crop_window(boxes, height, width, padding)
  return masks * keep.astype(masks.dtype)
