"""Priors <-> ground truth matching (the original's ``layers/box_utils.py::match``), batched.

Ground truth arrives padded to a fixed number of slots G per image with a validity mask, crowd
annotations flagged (and placed after the non-crowd ones, so a slot index equals the original's
index into its crowd-free ``truths``). Everything is fixed-shape and jit/vmap friendly; the steps
per image, as the original's, are those of :func:`match_image`; the result is
:class:`MatchTargets`.

Padded slots and crowd slots never enter the IoU matching (their overlap rows are -1, below any
real IoU), so they can never be forced or matched. Images without any valid non-crowd GT (the
original would crash on an empty ``truths``; its data loader resamples such images instead):
every prior is background (0) unless the crowd rule makes it neutral, ``idx_t`` is 0, and
``loc_t`` / ``gt_box_t`` are zeros (finite, never used since there are no positives).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from yolact_jax import boxes as box_utils
from yolact_jax.config import LossConfig

RETIRED = -1.0  # overlap value of retired / padded / crowd rows and taken columns
FORCED = 2.0  # overlap given to a force-assigned prior, so it is never thresholded away


class MatchTargets(NamedTuple):
  """Per-prior training targets for a batch (a pytree).

  conf_t: int32 [B, P]: -1 neutral, 0 background, 1..C-1 class (0-based label + 1).
  idx_t: int32 [B, P]: slot of each prior's matched GT in the image's padded GT arrays.
  loc_t: float32 [B, P, 4]: encoded offsets of the matched GT box against the prior.
  gt_box_t: float32 [B, P, 4]: the matched GT box (relative x1y1x2y2).
  """
  conf_t: jnp.ndarray
  idx_t: jnp.ndarray
  loc_t: jnp.ndarray
  gt_box_t: jnp.ndarray


def force_best_priors(overlaps: jnp.ndarray, best_overlap: jnp.ndarray,
                      best_idx: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The original's greedy forced assignment on one image.

  Each trip takes the remaining (GT j, prior i) pair of largest overlap (first GT, then first
  prior on ties, as ``torch.max``), retires row j and column i, and sets prior i to
  (``FORCED``, j). A GT is taken after at most G - 1 columns have been retired, so its pick is
  always among its G best priors: the loop runs on those candidates ([G, G], from ``top_k``,
  which puts the lower prior index first on ties) instead of the whole [G, P] matrix.

  Args:
    overlaps: [G, P] IoU of each GT with each prior; rows that must not take part (padding,
      crowds) hold ``RETIRED`` (-1).
    best_overlap: [P] best IoU per prior.
    best_idx: int32 [P] best GT slot per prior.
  Returns:
    (best_overlap [P], best_idx [P]) after forcing; one trip per taking-part GT.
  """
  num_gt, num_priors = overlaps.shape
  cand_overlap, cand_prior = jax.lax.top_k(overlaps, min(num_gt, num_priors))  # [G, K] each

  def has_remaining_gt(state):
    step, cand_overlap, _, _ = state
    return (step < num_gt) & jnp.any(cand_overlap > RETIRED)

  def assign_one(state):
    step, cand_overlap, best_overlap, best_idx = state
    row_best = jnp.max(cand_overlap, axis=1)  # [G]
    row_argbest = jnp.argmax(cand_overlap, axis=1)  # [G] candidate position
    j = jnp.argmax(row_best)
    i = cand_prior[j, row_argbest[j]]
    cand_overlap = jnp.where(cand_prior == i, RETIRED, cand_overlap)  # column i
    cand_overlap = cand_overlap.at[j].set(RETIRED)  # row j
    best_overlap = best_overlap.at[i].set(FORCED)
    best_idx = best_idx.at[i].set(j.astype(best_idx.dtype))
    return step + 1, cand_overlap, best_overlap, best_idx

  _, _, best_overlap, best_idx = jax.lax.while_loop(
      has_remaining_gt, assign_one, (jnp.int32(0), cand_overlap, best_overlap, best_idx))
  return best_overlap, best_idx


def each_gt_best_prior(overlaps: jnp.ndarray, real: jnp.ndarray, best_overlap: jnp.ndarray,
                       best_idx: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """mmdetection's MaxIoUAssigner low-quality rule (min_pos_iou 0, gt_max_assign_all False):
  each real GT j takes its best prior (the first on ties), whatever that IoU; where two GTs pick
  the same prior the later one keeps it. Arguments and result as :func:`force_best_priors`'s,
  ``real`` bool [G] the GTs taking part."""
  num_gt, num_priors = overlaps.shape
  best_prior = jnp.argmax(overlaps, axis=1)  # [G]
  picks = real[:, None] & (best_prior[:, None] == jnp.arange(num_priors)[None, :])  # [G, P]
  last_gt = jnp.max(jnp.where(picks, jnp.arange(num_gt)[:, None], -1), axis=0)  # [P]
  forced = last_gt >= 0
  return (jnp.where(forced, FORCED, best_overlap),
          jnp.where(forced, last_gt, best_idx).astype(best_idx.dtype))


def match_image(priors: jnp.ndarray, gt_boxes: jnp.ndarray, gt_labels: jnp.ndarray,
                gt_is_crowd: jnp.ndarray, gt_valid: jnp.ndarray,
                cfg: LossConfig) -> MatchTargets:
  """Matches one image's priors [P, 4] (cx, cy, w, h) to its GT slots.

  Args:
    gt_boxes: [G, 4] relative x1y1x2y2; gt_labels: int [G] 0-based (crowd: any);
    gt_is_crowd, gt_valid: bool [G].
  Returns:
    MatchTargets with shapes [P], [P], [P, 4], [P, 4].

  The steps, as the original's:
  1. IoU [G, P] of every non-crowd GT with every point-form prior.
  2. Best GT per prior (first index on ties, as ``torch.max(dim)`` on CPU: priors with zero IoU
     to every GT all resolve to slot 0, as the original's ``idx_t`` does).
  3. Greedy forced assignment, highest remaining overlap first (:func:`force_best_priors`): the
     forced prior gets overlap 2 (always positive) and its GT; or, with ``cfg.matcher``
     'max_iou', mmdetection's rule (:func:`each_gt_best_prior`).
  4. Labels: IoU >= 0.5 positive (class + 1), [0.4, 0.5) neutral (-1), < 0.4 background (0).
  5. Crowds: a non-positive prior whose intersection-over-its-own-area with any crowd box exceeds
     ``crowd_iou_threshold`` becomes neutral.
  6. Regression targets: ``encode`` of each prior's matched GT box.
  """
  priors = priors.astype(jnp.float32)
  gt_boxes = gt_boxes.astype(jnp.float32)
  prior_boxes = box_utils.point_form(priors)  # [P, 4]
  real = gt_valid & ~gt_is_crowd  # [G]
  crowd = gt_valid & gt_is_crowd  # [G]

  inter = box_utils.intersection(gt_boxes, prior_boxes)  # [G, P]
  gt_area = box_utils.area(gt_boxes)[:, None]  # [G, 1]
  prior_area = box_utils.area(prior_boxes)[None, :]  # [1, P]
  iou = inter / (gt_area + prior_area - inter)  # as boxes.jaccard(gt, priors)
  overlaps = jnp.where(real[:, None], iou, RETIRED)

  best_overlap = jnp.max(overlaps, axis=0)  # [P]
  best_idx = jnp.argmax(overlaps, axis=0).astype(jnp.int32)  # [P], first max as torch
  if cfg.matcher == 'max_iou':
    best_overlap, best_idx = each_gt_best_prior(overlaps, real, best_overlap, best_idx)
  else:
    best_overlap, best_idx = force_best_priors(overlaps, best_overlap, best_idx)

  labels = gt_labels.astype(jnp.int32)[best_idx] + 1
  conf = jnp.where(best_overlap < cfg.positive_iou_threshold, -1, labels)
  conf = jnp.where(best_overlap < cfg.negative_iou_threshold, 0, conf)

  if cfg.crowd_iou_threshold < 1:
    prior_in_crowd = jnp.where(crowd[:, None], inter / prior_area, RETIRED)  # [G, P] IoA
    best_crowd = jnp.max(prior_in_crowd, axis=0)  # [P]
    conf = jnp.where((conf <= 0) & (best_crowd > cfg.crowd_iou_threshold), -1, conf)

  has_gt = jnp.any(real)
  matched = gt_boxes[best_idx]  # [P, 4]
  loc = jnp.where(has_gt, box_utils.encode(matched, priors), 0.0)
  matched = jnp.where(has_gt, matched, 0.0)
  return MatchTargets(conf_t=conf.astype(jnp.int32), idx_t=best_idx, loc_t=loc,
                      gt_box_t=matched)


def match(priors: jnp.ndarray, gt_boxes: jnp.ndarray, gt_labels: jnp.ndarray,
          gt_is_crowd: jnp.ndarray, gt_valid: jnp.ndarray, cfg: LossConfig) -> MatchTargets:
  """Batched matching: priors [P, 4]; GT arrays [B, G, ...] -> MatchTargets [B, P, ...].

  ``cfg`` is the (static) LossConfig holding the three thresholds. No gradient flows through.
  """
  def one(boxes, labels, is_crowd, valid):
    return match_image(priors, boxes, labels, is_crowd, valid, cfg)

  targets = jax.vmap(one)(gt_boxes, gt_labels, gt_is_crowd, gt_valid)
  return jax.tree.map(jax.lax.stop_gradient, targets)
