"""Mask assembly and postprocess: Detect output -> pixel boxes and masks at each image's own size.

Per detection, as the original's ``layers/output_utils.py::postprocess``: soft mask =
sigmoid(proto @ coefficients) at prototype resolution (Hp x Wp, 138 x 138); crop with the
unsanitised relative box, padding 1 proto pixel (``boxes.crop``); bilinear upsampling
(align_corners=False, no antialias) to the ORIGINAL image size; binarise with ``> 0.5``; boxes
scaled, ordered, clamped and truncated (:func:`pixel_boxes`). YOLACT++ adds :func:`rescore`.

Outputs have a fixed canvas shape ``(Hc, Wc)`` (static) and each image's own ``(h, w) <= (Hc,
Wc)`` is traced: the upsampling reads two taps per output position built from it
(:func:`bilinear_taps`), so one compiled program serves any mix of sizes, equal to
``F.interpolate`` up to float rounding and 0 outside (h, w). A canvas much larger than the images
wastes memory and time ([B, D, Hc, Wc]) but changes no value. The mask product runs with
``Precision.HIGHEST``: the 0.5 threshold is sensitive to TPUs'/GPUs' bfloat16/TF32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from collections.abc import Callable

from yolact_jax.boxes import crop, sanitize_coordinates

HIGHEST = lax.Precision.HIGHEST


def assemble_masks(proto: jnp.ndarray, coefs: jnp.ndarray) -> jnp.ndarray:
  """Soft masks sigmoid(proto @ coefs^T): proto [B, Hp, Wp, k], coefs [B, D, k] -> [B, Hp, Wp, D]."""
  return jax.nn.sigmoid(jnp.einsum('bhwk,bdk->bhwd', proto, coefs, precision=HIGHEST))


def proto_masks(proto: jnp.ndarray, coefs: jnp.ndarray, boxes: jnp.ndarray,
                valid: jnp.ndarray) -> jnp.ndarray:
  """Cropped soft masks at prototype resolution, detection-major: -> [B, D, Hp, Wp].

  Args: proto [B, Hp, Wp, k], coefs [B, D, k], boxes [B, D, 4] relative x1y1x2y2 (unsanitised),
  valid [B, D] (invalid slots come out all zero).
  """
  masks = crop(assemble_masks(proto, coefs), boxes, padding=1)  # [B, Hp, Wp, D]
  masks = masks * valid[:, None, None, :].astype(masks.dtype)
  return jnp.transpose(masks, (0, 3, 1, 2))


def bilinear_taps(in_size: int | jnp.ndarray, out_size: int | jnp.ndarray, positions: int
                  ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """1-D bilinear resizing (align_corners=False, no antialias) from ``in_size`` to ``out_size``
  samples, for output positions ``0 .. positions - 1``; either size may be a traced int.

  Output sample r reads source ``lo[r]`` with weight ``1 - t[r]`` and ``hi[r]`` with weight
  ``t[r]``, PyTorch's rule: source coordinate ``max((r + 0.5) * in / out - 0.5, 0)``, lo its
  floor, hi = lo + 1, both clamped to ``in_size - 1`` (so nothing beyond the input, e.g. canvas
  padding, is ever read). Positions r >= ``out_size`` get clamped taps; callers mask them.
  Returns lo, hi int32 [positions] and t float32 [positions].
  """
  scale = jnp.asarray(in_size, jnp.float32) / jnp.asarray(out_size, jnp.float32)
  src = jnp.maximum(scale * (jnp.arange(positions, dtype=jnp.float32) + 0.5) - 0.5, 0.0)
  lo = jnp.floor(src).astype(jnp.int32)
  t = jnp.clip(src - lo.astype(jnp.float32), 0.0, 1.0)
  last = jnp.asarray(in_size, jnp.int32) - 1
  return jnp.minimum(lo, last), jnp.minimum(lo + 1, last), t


def resize_to_canvas(masks: jnp.ndarray, image_sizes: jnp.ndarray,
                     canvas_hw: tuple[int, int]) -> jnp.ndarray:
  """Bilinear upsampling of each image's masks to its own size inside a fixed canvas.

  Two gathers of two taps each (width pass, then height pass: the order of PyTorch's kernel),
  with taps built from the traced sizes; 3-4x cheaper than the equivalent dense matrix products
  on CPU and identical in value.

  Args:
    masks: [B, D, Hp, Wp].
    image_sizes: [B, 2] int (h, w) per image, each <= ``canvas_hw``.
    canvas_hw: static (Hc, Wc).

  Returns:
    [B, D, Hc, Wc]; the top-left (h, w) of image b is its resized mask, the rest is 0.
  """
  height, width = masks.shape[-2:]

  def one_image(m, size):  # m [D, Hp, Wp]
    r_lo, r_hi, r_t = bilinear_taps(height, size[0], canvas_hw[0])
    c_lo, c_hi, c_t = bilinear_taps(width, size[1], canvas_hw[1])
    wide = m[:, :, c_lo] * (1 - c_t) + m[:, :, c_hi] * c_t  # [D, Hp, Wc]
    tall = wide[:, r_lo, :] * (1 - r_t)[:, None] + wide[:, r_hi, :] * r_t[:, None]
    inside = ((jnp.arange(canvas_hw[0]) < size[0])[:, None]
              & (jnp.arange(canvas_hw[1]) < size[1])[None, :])
    return jnp.where(inside, tall, 0.0)  # [D, Hc, Wc]

  return jax.vmap(one_image)(masks, jnp.asarray(image_sizes, jnp.int32))


def interpolation_matrix(in_size: int, out_size: jnp.ndarray, positions: int) -> jnp.ndarray:
  """:func:`bilinear_taps` as a matrix [positions, in_size]: row r holds weight ``1 - t[r]`` at
  ``lo[r]`` and ``t[r]`` at ``hi[r]`` (their sum where they coincide); rows r >= ``out_size``
  are 0."""
  lo, hi, t = bilinear_taps(in_size, out_size, positions)
  source = jnp.arange(in_size)[None, :]
  weights = (jnp.where(source == lo[:, None], (1 - t)[:, None], 0.0)
             + jnp.where(source == hi[:, None], t[:, None], 0.0))
  return jnp.where((jnp.arange(positions) < out_size)[:, None], weights, 0.0)


def resize_to_canvas_by_products(masks: jnp.ndarray, image_sizes: jnp.ndarray,
                                 canvas_hw: tuple[int, int]) -> jnp.ndarray:
  """:func:`resize_to_canvas` as two batched matrix products with :func:`interpolation_matrix`
  (width pass, then height pass): the form for runtimes whose gathers are slow and whose matrix
  products are fast (ONNX Runtime, :mod:`yolact_jax.serving.onnx_export`). The zero rows of the
  matrices put 0 outside each image, so no separate mask pass exists. Equal to
  :func:`resize_to_canvas` up to float rounding (a product accumulates the two taps with a
  fused multiply-add)."""
  batch, slots, height, width = masks.shape
  sizes = jnp.asarray(image_sizes, jnp.int32)
  rows = jax.vmap(lambda s: interpolation_matrix(height, s[0], canvas_hw[0]))(sizes)
  cols = jax.vmap(lambda s: interpolation_matrix(width, s[1], canvas_hw[1]))(sizes)
  wide = jnp.matmul(masks.reshape(batch, slots * height, width), jnp.swapaxes(cols, 1, 2),
                    precision=HIGHEST)
  wide = wide.reshape(batch, slots, height, canvas_hw[1])  # [B, D, Hp, Wc]
  rows = jnp.broadcast_to(rows[:, None], (batch, slots) + rows.shape[1:])  # [B, D, Hc, Hp]
  return jnp.matmul(rows, wide, precision=HIGHEST)


def pixel_boxes(boxes: jnp.ndarray, image_sizes: jnp.ndarray, truncate: bool = True
                ) -> jnp.ndarray:
  """Relative x1y1x2y2 [B, D, 4] -> int32 pixel boxes [B, D, 4] as the original.

  Scale by (w, h), min/max swap, clamp x1 >= 0 and x2 <= w (y likewise), then truncate toward
  zero (a box entirely left of / above the image keeps a negative x2 / y2, as the original).
  ``truncate=False``: float32 pixels, no truncation (mmdetection's boxes).
  """
  h = image_sizes[:, 0, None].astype(boxes.dtype)  # [B, 1]
  w = image_sizes[:, 1, None].astype(boxes.dtype)
  x1, x2 = sanitize_coordinates(boxes[..., 0], boxes[..., 2], w)
  y1, y2 = sanitize_coordinates(boxes[..., 1], boxes[..., 3], h)
  stacked = jnp.stack([x1, y1, x2, y2], axis=-1)
  return stacked.astype(jnp.int32) if truncate else stacked.astype(jnp.float32)


def postprocess(detections: dict[str, jnp.ndarray], proto: jnp.ndarray,
                image_sizes: jnp.ndarray, canvas_hw: tuple[int, int],
                mask_threshold: float = 0.5, float_boxes: bool = False
                ) -> dict[str, jnp.ndarray]:
  """Masks and pixel boxes at each image's original size (jit with ``canvas_hw`` static).

  Args:
    detections: :func:`yolact_jax.detect.detect` output (``boxes``, ``coefs``, ``valid``, ...).
    proto: [B, Hp, Wp, k] prototypes, channels-last.
    image_sizes: [B, 2] int (h, w) original sizes, each within ``canvas_hw``.
    canvas_hw: static (Hc, Wc) output canvas.
    mask_threshold: binarisation threshold (strict ``>``).
    float_boxes: ``boxes_px`` as float32 pixels (:func:`pixel_boxes` without truncation).

  Returns:
    The detection dict (``classes``, ``scores``, ``valid``, ``num_detections``, ...) plus
    ``boxes_px [B,D,4]`` int32 (or float32) pixels, ``masks [B,D,Hc,Wc]`` bool (False outside
    (h, w) and in invalid slots) and ``proto_masks [B,D,Hp,Wp]`` cropped soft masks.
  """
  image_sizes = jnp.asarray(image_sizes, jnp.int32)
  soft = proto_masks(proto, detections['coefs'], detections['boxes'], detections['valid'])
  masks = resize_to_canvas(soft, image_sizes, canvas_hw) > mask_threshold
  masks = masks & detections['valid'][:, :, None, None]
  boxes_px = jnp.where(detections['valid'][..., None],
                       pixel_boxes(detections['boxes'], image_sizes, not float_boxes), 0)
  return dict(detections, boxes_px=boxes_px, masks=masks, proto_masks=soft)



def rescore(results: dict[str, jnp.ndarray],
            predict_iou: Callable[[jnp.ndarray], jnp.ndarray] | None,
            rescore_bbox: bool = False) -> dict[str, jnp.ndarray]:
  """Adds ``mask_scores [B, D]`` to :func:`postprocess`' results (YOLACT++ mask re-scoring).

  With ``predict_iou`` (the mask-IoU network: soft masks [N, Hp, Wp] -> predicted IoU per
  foreground class [N, C - 1]) the cropped soft masks ``proto_masks [B, D, Hp, Wp]`` are scored
  in one call of N = B * D masks, the IoU at each detection's class is gathered, and
  ``mask_scores = scores * iou`` (0 in invalid slots). With ``rescore_bbox`` the box ``scores``
  become that same rescored score (one score per detection, as the original then has). Without
  ``predict_iou`` (YOLACT, or no mask re-scoring) ``mask_scores`` equals ``scores``.
  The detections keep their order (Detect's class-score order).
  """
  scores = results['scores']
  if predict_iou is None:
    return dict(results, mask_scores=scores)
  soft = results['proto_masks']
  batch, slots = soft.shape[:2]
  iou = predict_iou(soft.reshape((batch * slots,) + soft.shape[2:]))  # [B*D, C-1]
  iou = iou.reshape(batch, slots, -1).astype(scores.dtype)
  classes = jnp.asarray(results['classes'], jnp.int32)[..., None]
  at_class = jnp.take_along_axis(iou, classes, axis=-1)[..., 0]  # [B, D]
  mask_scores = jnp.where(results['valid'], scores * at_class, 0.0).astype(scores.dtype)
  out = dict(results, mask_scores=mask_scores)
  if rescore_bbox:
    out['scores'] = mask_scores
  return out
