"""Detect: head outputs -> at most ``max_detections`` scored boxes per image, as the original's
``layers/functions/detection.py``, batched and fixed-shape (jit-compatible, no host round trip).

Per image: decode the boxes against the priors (unclipped); keep the priors whose best
foreground softmax score is ``> conf_thresh`` (:func:`prior_filter`); rank the ``top_k`` best per
class, or per image for 'cross_class' (:func:`top_candidates`); NMS, one of ``NMS_KINDS``; keep
the best ``max_detections`` (:func:`select_top`). mmdetection's Detect is the same with its
options (the config's ``detect`` fields): the best priors of each level as candidates
(:func:`level_filter`), a second score threshold after NMS, clamped log sizes, boxes clipped to
the input and a floor under the IoU's union. Where the original's lists are shorter, padded
entries carry ``valid=False`` and never keep or suppress anything; the differences that fixed
shapes force are given in :func:`per_class_detect` and :func:`cross_class_detect`.

Output (D = ``max_detections``): ``boxes [B,D,4]`` relative x1y1x2y2, ``classes [B,D]`` int32
0-based, ``scores [B,D]``, ``coefs [B,D,k]``, ``valid [B,D]`` bool (a prefix: valid slots come
first), ``num_detections [B]`` int32; invalid slots hold zeros. An image without any candidate
prior gives ``num_detections = 0`` (the original returns ``None``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from yolact_jax.boxes import decode, jaccard
from yolact_jax.anchors import level_prior_counts
from yolact_jax.config import NMS_KINDS, YolactConfig


# ---------------------------------------------------------------------------------------------
# Small helpers


def take_rows(values: jnp.ndarray, index: jnp.ndarray) -> jnp.ndarray:
  """Per-image gather along the prior axis: values [B, P, ...], index [B, *S] -> [B, *S, ...]."""
  return jax.vmap(lambda v, i: v[i])(values, index)


def prior_filter(fg_scores: jnp.ndarray, conf_thresh: float) -> jnp.ndarray:
  """Priors whose best foreground score is strictly above the threshold: [B, P, C] -> [B, P].

  The scores are the softmax's with the background column dropped (not renormalised). Every
  class row of a candidate prior is ranked, sub-threshold scores included, as in the original.
  """
  return jnp.max(fg_scores, axis=-1) > conf_thresh


def level_filter(fg_scores: jnp.ndarray, level_sizes: tuple[int, ...], per_level: int
                 ) -> jnp.ndarray:
  """The ``per_level`` priors of each level with the best foreground score, whatever it is
  (mmdetection's ``nms_pre``): [B, P, C] -> [B, P] bool. ``level_sizes`` are the levels' prior
  counts, in order (sum P); a level with fewer priors keeps all of them."""
  best = jnp.max(fg_scores, axis=-1)  # [B, P]
  masks, start = [], 0
  for size in level_sizes:
    level = best[:, start:start + size]
    if per_level >= size:
      masks.append(jnp.ones(level.shape, bool))
    else:
      _, index = lax.top_k(level, per_level)  # [B, per_level]
      rows = jnp.arange(level.shape[0])[:, None]
      masks.append(jnp.zeros(level.shape, bool).at[rows, index].set(True))
    start += size
  if start != best.shape[1]:
    raise ValueError(f'level sizes {level_sizes} sum to {start}, not the {best.shape[1]} priors')
  return jnp.concatenate(masks, axis=1)


def top_candidates(scores: jnp.ndarray, candidate: jnp.ndarray, top_k: int
                   ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """The ``top_k`` best candidate priors of every row, ranked by score (ties: lower prior first).

  Args:
    scores: [..., P] scores (probabilities, finite).
    candidate: [..., P] bool, False for priors removed by the prior filter.
    top_k: list length K (static); must be <= P.

  Returns:
    scores [..., K] (0 where invalid), prior indices [..., K] int32, valid [..., K] bool. Valid
    entries form a prefix of each row.

  Where fewer than ``top_k`` priors pass the filter, the original works with K' = the number
  passing; here the list keeps its fixed length and the padded entries carry ``valid=False``.
  """
  ranked, index = lax.top_k(jnp.where(candidate, scores, -jnp.inf), top_k)
  # top_k's indices are in bounds: a plain gather (the default 'fill' mode adds a bounds mask
  # and a select on booleans, which ONNX Runtime has no kernel for)
  valid = jnp.take_along_axis(candidate, index, axis=-1, mode='promise_in_bounds')
  return jnp.where(valid, ranked, 0), index, valid


def upper_triangle(k: int) -> np.ndarray:
  """[K, K] bool, True strictly above the diagonal (row i ranked before column j)."""
  return np.triu(np.ones((k, k), bool), k=1)


# ---------------------------------------------------------------------------------------------
# NMS rules on ranked candidate lists (a leading batch of lists, any number of axes)


def fast_nms_keep(boxes: jnp.ndarray, valid: jnp.ndarray, iou_thresh: float,
                  union_floor: float = 0.0) -> jnp.ndarray:
  """Fast NMS on ranked lists (the original's rule): [..., K, 4], [..., K] -> keep [..., K].

  Candidate j is dropped iff some valid candidate ranked before it (suppressed or not) overlaps
  it with IoU > ``iou_thresh``. Invalid (padding) candidates are never kept and never suppress.
  ``union_floor``: :func:`yolact_jax.boxes.jaccard`'s, in the boxes' units.
  """
  k = boxes.shape[-2]
  iou = jaccard(boxes, boxes, union_floor=union_floor)  # [..., K, K]: row i suppresses col j
  suppressor = upper_triangle(k) & valid[..., :, None]
  iou_max = jnp.max(jnp.where(suppressor, iou, 0), axis=-2)  # [..., K]
  return valid & (iou_max <= iou_thresh)


def pixel_iou(boxes: jnp.ndarray) -> jnp.ndarray:
  """Pairwise IoU with the +1-pixel convention of the original's Cython NMS: [..., K, 4] -> [..., K, K].

  Width = x2 - x1 + 1 (same for heights and intersections, intersections clamped at 0).
  """
  x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
  areas = (x2 - x1 + 1) * (y2 - y1 + 1)  # [..., K]
  iw = jnp.maximum(0.0, jnp.minimum(x2[..., :, None], x2[..., None, :])
                   - jnp.maximum(x1[..., :, None], x1[..., None, :]) + 1)
  ih = jnp.maximum(0.0, jnp.minimum(y2[..., :, None], y2[..., None, :])
                   - jnp.maximum(y1[..., :, None], y1[..., None, :]) + 1)
  inter = iw * ih
  return inter / (areas[..., :, None] + areas[..., None, :] - inter)


def greedy_nms_keep(pixel_boxes: jnp.ndarray, valid: jnp.ndarray,
                    iou_thresh: float) -> jnp.ndarray:
  """Greedy NMS on ranked lists (the original's Cython rule): [..., K, 4] pixels -> keep [..., K].

  Walk the list in rank order; a valid candidate not yet suppressed is kept and suppresses every
  later candidate with :func:`pixel_iou` >= ``iou_thresh``. A ``lax.fori_loop`` over the K ranks,
  each step vectorised over all lists.
  """
  k = pixel_boxes.shape[-2]
  iou = pixel_iou(pixel_boxes)  # [..., K, K]
  rank = jnp.arange(k)

  def visit(i, suppressed):
    alive = valid[..., i] & ~suppressed[..., i]  # [...]
    row = lax.dynamic_index_in_dim(iou, i, axis=iou.ndim - 2, keepdims=False)  # [..., K]
    hits = (row >= iou_thresh) & (rank > i)
    return suppressed | (alive[..., None] & hits)

  suppressed = lax.fori_loop(0, k, visit, jnp.zeros(valid.shape, bool))
  return valid & ~suppressed


# ---------------------------------------------------------------------------------------------
# Final selection


def select_top(scores: jnp.ndarray, keep: jnp.ndarray, max_detections: int
               ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """The best ``max_detections`` kept entries of each row: [B, N] -> (scores, index, valid) [B, D].

  Ties go to the lower index. If N < D the result is padded with invalid slots.
  """
  n = scores.shape[-1]
  d = min(max_detections, n)
  best, index = lax.top_k(jnp.where(keep, scores, -jnp.inf), d)
  valid = jnp.take_along_axis(keep, index, axis=-1, mode='promise_in_bounds')  # (top_candidates)
  if d < max_detections:
    pad = [(0, 0), (0, max_detections - d)]
    best, index, valid = (jnp.pad(best, pad), jnp.pad(index, pad), jnp.pad(valid, pad))
  return jnp.where(valid, best, 0), index, valid


def pack_detections(boxes: jnp.ndarray, classes: jnp.ndarray, scores: jnp.ndarray,
                    coefs: jnp.ndarray, valid: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Zero the invalid slots and add ``num_detections``: all inputs [B, D, ...]."""
  return {
      'boxes': jnp.where(valid[..., None], boxes, 0),
      'classes': jnp.where(valid, classes, 0).astype(jnp.int32),
      'scores': jnp.where(valid, scores, 0),
      'coefs': jnp.where(valid[..., None], coefs, 0),
      'valid': valid,
      'num_detections': jnp.sum(valid, axis=-1, dtype=jnp.int32),
  }


# ---------------------------------------------------------------------------------------------
# The three Detect variants


def per_class_detect(boxes: jnp.ndarray, fg_scores: jnp.ndarray, candidate: jnp.ndarray,
                     coefs: jnp.ndarray, *, nms: str, top_k: int, conf_thresh: float,
                     iou_thresh: float, max_detections: int, box_scale: float,
                     second_threshold: bool = False, union_floor: float = 0.0
                     ) -> dict[str, jnp.ndarray]:
  """Per-class NMS ('fast' or 'standard') then global top-D.

  Args: boxes [B, P, 4] decoded, fg_scores [B, P, C], candidate [B, P] bool, coefs [B, P, k];
  ``second_threshold``: after NMS keep only scores > ``conf_thresh``; ``union_floor``: of the
  Fast NMS IoU, relative units.

  'standard' is the original's Cython rule: boxes x ``box_scale`` (550), and only scores
  ``> conf_thresh`` of the class take part. It runs over the class's ``top_k`` best candidates,
  where the original runs over ALL priors of the class above ``conf_thresh``; results differ
  only for a class with more than ``top_k`` such priors, and then only in low-scored boxes that
  the top-``top_k`` list never sees. Ties in the global top-D go to the lower position in the
  class-major, then rank, flattening: the order of a stable descending sort over the original's
  flattened list.
  """
  num_classes = fg_scores.shape[-1]
  class_scores = jnp.swapaxes(fg_scores, -1, -2)  # [B, C, P]
  ranked, prior_index, valid = top_candidates(class_scores, candidate[:, None, :], top_k)
  cand_boxes = take_rows(boxes, prior_index)  # [B, C, K, 4]
  if nms == 'fast':
    keep = fast_nms_keep(cand_boxes, valid, iou_thresh, union_floor)
  else:  # 'standard': the original scales boxes to pixels and back
    cand_boxes = cand_boxes * box_scale
    keep = greedy_nms_keep(cand_boxes, valid & (ranked > conf_thresh), iou_thresh)
    cand_boxes = cand_boxes / box_scale
  if second_threshold:
    keep = keep & (ranked > conf_thresh)

  batch, _, k = keep.shape
  flat = lambda x: x.reshape((batch, num_classes * k) + x.shape[3:])  # class-major, then rank
  scores, order, out_valid = select_top(flat(ranked), flat(keep), max_detections)
  out_boxes = take_rows(flat(cand_boxes), order)
  out_classes = order // k
  out_coefs = take_rows(coefs, take_rows(flat(prior_index), order))
  return pack_detections(out_boxes, out_classes, scores, out_coefs, out_valid)


def cross_class_detect(boxes: jnp.ndarray, fg_scores: jnp.ndarray, candidate: jnp.ndarray,
                       coefs: jnp.ndarray, *, top_k: int, iou_thresh: float,
                       max_detections: int, conf_thresh: float = 0.0,
                       second_threshold: bool = False, union_floor: float = 0.0
                       ) -> dict[str, jnp.ndarray]:
  """Cross-class Fast NMS: best class per prior, one ranked list, one IoU matrix per image.

  Args: boxes [B, P, 4] decoded, fg_scores [B, P, C], candidate [B, P] bool, coefs [B, P, k];
  the last three as :func:`per_class_detect`'s.

  The original returns every kept candidate (up to ``top_k``); here the best ``max_detections``
  of them (pass ``max_detections=top_k`` to keep all).
  """
  best_scores = jnp.max(fg_scores, axis=-1)  # [B, P]
  best_classes = jnp.argmax(fg_scores, axis=-1).astype(jnp.int32)  # [B, P]
  ranked, prior_index, valid = top_candidates(best_scores, candidate, top_k)  # [B, K]
  cand_boxes = take_rows(boxes, prior_index)  # [B, K, 4]
  keep = fast_nms_keep(cand_boxes, valid, iou_thresh, union_floor)
  if second_threshold:
    keep = keep & (ranked > conf_thresh)
  scores, order, out_valid = select_top(ranked, keep, max_detections)
  out_priors = jnp.take_along_axis(prior_index, order, axis=-1)
  return pack_detections(take_rows(boxes, out_priors),
                         jnp.take_along_axis(best_classes, out_priors, axis=-1), scores,
                         take_rows(coefs, out_priors), out_valid)


def detect(loc: jnp.ndarray, conf: jnp.ndarray, coefs: jnp.ndarray, priors: jnp.ndarray, *,
           nms: str = 'fast', top_k: int = 200, conf_thresh: float = 0.05,
           iou_thresh: float = 0.5, max_detections: int = 100, box_scale: float = 550.0,
           candidates_per_level: int = 0, level_sizes: tuple[int, ...] = (),
           second_threshold: bool = False, clamp_log_size: float = 0.0,
           clip_boxes: bool = False, iou_union_floor: float = 0.0) -> dict[str, jnp.ndarray]:
  """Detect on a batch of head outputs (keyword arguments are static under jit).

  Args:
    loc: [B, P, 4] encoded box offsets.
    conf: [B, P, C + 1] class probabilities (softmax), background in column 0.
    coefs: [B, P, k] mask coefficients.
    priors: [P, 4] (cx, cy, w, h) relative.
    nms: one of ``NMS_KINDS``.
    top_k: ranked candidates per class (or per image for 'cross_class'), capped at P.
    conf_thresh: prior filter (and, for 'standard', the per-class score filter).
    iou_thresh: NMS overlap threshold.
    max_detections: D, detections kept per image.
    box_scale: the network input's side in pixels (the config's max_size): the pixel scale of
      'standard' (the Cython NMS) and of ``iou_union_floor``.
    candidates_per_level: > 0: the candidates are that many best priors of each level
      (:func:`level_filter` over ``level_sizes``, the levels' prior counts) instead of the
      priors above ``conf_thresh``.
    second_threshold: after NMS keep only scores > ``conf_thresh``.
    clamp_log_size, clip_boxes: decoding: log size ratios clamped (> 0), boxes clipped to the
      input.
    iou_union_floor: the NMS IoU's union is at least this many square pixels.

  Returns:
    dict of ``boxes [B,D,4]``, ``classes [B,D]``, ``scores [B,D]``, ``coefs [B,D,k]``,
    ``valid [B,D]``, ``num_detections [B]`` (see the module docstring).
  """
  if nms not in NMS_KINDS:
    raise ValueError(f'nms must be one of {NMS_KINDS}, got {nms!r}')
  boxes = decode(loc, jnp.asarray(priors)[None], clamp_log_size)  # [B, P, 4]
  if clip_boxes:
    boxes = jnp.clip(boxes, 0.0, 1.0)
  fg_scores = conf[..., 1:]  # [B, P, C]
  if candidates_per_level > 0:
    candidate = level_filter(fg_scores, level_sizes, candidates_per_level)
  else:
    candidate = prior_filter(fg_scores, conf_thresh)  # [B, P]
  top_k = min(top_k, fg_scores.shape[1])
  options = dict(second_threshold=second_threshold,
                 union_floor=iou_union_floor / box_scale ** 2)
  if nms == 'cross_class':
    return cross_class_detect(boxes, fg_scores, candidate, coefs, top_k=top_k,
                              iou_thresh=iou_thresh, max_detections=max_detections,
                              conf_thresh=conf_thresh, **options)
  return per_class_detect(boxes, fg_scores, candidate, coefs, nms=nms, top_k=top_k,
                          conf_thresh=conf_thresh, iou_thresh=iou_thresh,
                          max_detections=max_detections, box_scale=box_scale, **options)


def detect_from_logits(loc: jnp.ndarray, conf_logits: jnp.ndarray, coefs: jnp.ndarray,
                       priors: jnp.ndarray, **kwargs) -> dict[str, jnp.ndarray]:
  """:func:`detect` on pre-softmax class logits [B, P, C + 1] (softmax over the last axis)."""
  return detect(loc, jax.nn.softmax(conf_logits, axis=-1), coefs, priors, **kwargs)


def detect_kwargs(cfg: YolactConfig) -> dict:
  """The static keyword arguments of :func:`detect` for a model config."""
  d = cfg.detect
  kwargs = dict(nms=d.nms, top_k=d.nms_top_k, conf_thresh=d.nms_conf_thresh,
                iou_thresh=d.nms_thresh, max_detections=d.max_num_detections,
                box_scale=float(cfg.max_size))
  if d.candidates_per_level:
    kwargs.update(candidates_per_level=d.candidates_per_level,
                  level_sizes=level_prior_counts(cfg))
  extra = dict(second_threshold=d.second_threshold, clamp_log_size=d.clamp_log_size,
               clip_boxes=d.clip_boxes, iou_union_floor=d.iou_union_floor)
  kwargs.update({k: v for k, v in extra.items() if v})  # the original's presets: none
  return kwargs
