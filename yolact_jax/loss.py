"""The YOLACT multi-task loss (the original's ``MultiBoxLoss``): B + C + M + S (+ I for YOLACT++).

Every term is a small pure function on fixed-shape arrays (jit-compatible, no boolean indexing).
Term functions return the alpha-weighted SUM over the batch, as the original accumulates it;
:func:`yolact_loss` then normalises: B, C and M by N = the batch's total positive count, S by the
batch size B. The total is the plain sum of the terms. Where the original crashes or divides by
zero, :func:`yolact_loss` says what happens here.

Shapes: B images, P priors, C classes incl. background, k prototypes, G GT slots per image,
Hp x Wp prototype size (138 at 550), Hs x Ws semantic size (69 at 550), K = masks_to_train.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from yolact_jax import boxes as box_utils
from yolact_jax.config import YolactConfig
from yolact_jax.matching import MatchTargets, match
from yolact_jax.model.maskiou import predict_mask_iou

BCE_LOG_FLOOR = -100.0  # torch's binary_cross_entropy clamps log(p) and log(1-p) at -100
BCE_GRAD_EPS = 1e-12  # torch's binary_cross_entropy backward: (p - t) / max(p (1 - p), eps)


# --------------------------------------------------------------------------------------------
# Ground-truth mask preparation
# --------------------------------------------------------------------------------------------


def downsample_gt_masks(masks: jnp.ndarray, out_hw: tuple[int, int]) -> jnp.ndarray:
  """Binary masks [..., H, W] -> uint8 [..., h, w], as the original's loss prepares them.

  Bilinear resize with half-pixel centres and no antialiasing (= torch ``F.interpolate(...,
  mode='bilinear', align_corners=False)``), then ``> 0.5``.
  """
  shape = tuple(masks.shape[:-2]) + tuple(out_hw)
  resized = jax.image.resize(masks.astype(jnp.float32), shape, 'bilinear', antialias=False)
  return (resized > 0.5).astype(jnp.uint8)


# --------------------------------------------------------------------------------------------
# B: box regression
# --------------------------------------------------------------------------------------------


def smooth_l1(x: jnp.ndarray) -> jnp.ndarray:
  """Elementwise smooth-L1 with beta 1 (torch ``F.smooth_l1_loss``, reduction none)."""
  ax = jnp.abs(x)
  return jnp.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def box_loss(loc: jnp.ndarray, loc_t: jnp.ndarray, positive: jnp.ndarray,
             alpha: float) -> jnp.ndarray:
  """Smooth-L1 summed over positive priors and all 4 offsets, x alpha.

  loc, loc_t: [B, P, 4]; positive: bool [B, P]. Returns a scalar (unnormalised).
  """
  target = jnp.where(positive[..., None], loc_t, loc)  # non-positives contribute exactly 0
  per_prior = jnp.sum(smooth_l1(loc - target), axis=-1)
  return alpha * jnp.sum(jnp.where(positive, per_prior, 0.0))


# --------------------------------------------------------------------------------------------
# C: classification with online hard negative mining
# --------------------------------------------------------------------------------------------


def background_loss(conf: jnp.ndarray) -> jnp.ndarray:
  """Mining score per prior: logsumexp(logits) - background logit = -log softmax[0].

  conf: [B, P, C] logits -> [B, P]. (The original subtracts one global max of the whole batch
  before the exp; this is the same value computed per row.)
  """
  return jax.nn.logsumexp(conf, axis=-1) - conf[..., 0]


def hard_negatives(conf: jnp.ndarray, conf_t: jnp.ndarray, negpos_ratio: int,
                   keep_all_without_positives: bool = False) -> jnp.ndarray:
  """Per-image OHEM selection: bool [B, P] of the mined background priors.

  Positives and neutrals get score 0; the priors ranked (descending, stable) below
  num_neg = min(ratio * num_pos_image, P - 1) are taken, then positives and neutrals dropped.
  ``keep_all_without_positives`` (mmdetection's OHEM): an image without positives takes every
  negative (the ratio rule alone takes none), and the count is not capped at P - 1.
  conf: [B, P, C] logits; conf_t: int [B, P].
  """
  num_priors = conf.shape[1]
  score = jax.lax.stop_gradient(background_loss(conf))
  score = jnp.where(conf_t != 0, 0.0, score)
  num_pos = jnp.sum(conf_t > 0, axis=1, keepdims=True)  # [B, 1]
  if keep_all_without_positives:
    num_neg = jnp.where(num_pos > 0, negpos_ratio * num_pos, num_priors)
  else:
    num_neg = jnp.minimum(negpos_ratio * num_pos, num_priors - 1)
  order = jnp.argsort(score, axis=1, descending=True, stable=True)  # [B, P] prior per rank
  taken_by_rank = jnp.arange(num_priors)[None, :] < num_neg  # [B, P]
  rows = jnp.arange(conf.shape[0])[:, None]
  taken = jnp.zeros(score.shape, bool).at[rows, order].set(taken_by_rank)
  return taken & (conf_t == 0)


def conf_loss(conf: jnp.ndarray, conf_t: jnp.ndarray, negatives: jnp.ndarray,
              alpha: float) -> jnp.ndarray:
  """Softmax cross-entropy summed over positives and mined negatives, x alpha.

  conf: [B, P, C] logits; conf_t: int [B, P]; negatives: bool [B, P]. Returns a scalar.
  """
  log_probs = jax.nn.log_softmax(conf, axis=-1)
  target = jnp.maximum(conf_t, 0)[..., None]
  ce = -jnp.take_along_axis(log_probs, target, axis=-1)[..., 0]  # [B, P]
  return alpha * jnp.sum(jnp.where((conf_t > 0) | negatives, ce, 0.0))


# --------------------------------------------------------------------------------------------
# M: lincomb mask loss
# --------------------------------------------------------------------------------------------


@jax.custom_vjp
def torch_bce(p: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
  """Elementwise BCE of probabilities p against targets t, as torch ``F.binary_cross_entropy``.

  Forward: -(t max(log p, -100) + (1 - t) max(log(1 - p), -100)); backward: torch's
  (p - t) / max(p (1 - p), 1e-12), finite at p in {0, 1} (cropped pixels, saturated sigmoid).
  """
  return _torch_bce_value(p, t)


def _torch_bce_value(p, t):
  log_p = jnp.maximum(jnp.log(p), BCE_LOG_FLOOR)
  log_not_p = jnp.maximum(jnp.log1p(-p), BCE_LOG_FLOOR)
  return -(t * log_p + (1 - t) * log_not_p)


def _torch_bce_fwd(p, t):
  return _torch_bce_value(p, t), (p, t)


def _torch_bce_bwd(residuals, g):
  p, t = residuals
  return g * (p - t) / jnp.maximum(p * (1 - p), BCE_GRAD_EPS), jnp.zeros_like(t)


torch_bce.defvjp(_torch_bce_fwd, _torch_bce_bwd)


def select_mask_slots(positive: jnp.ndarray, max_masks: int,
                      rng: jax.Array | None) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Picks up to ``max_masks`` positive priors per image for the mask loss.

  With more positives than the cap, a uniformly random subset (top-k of iid uniform keys over
  the positives; the original uses ``torch.randperm``); without ``rng`` the lowest-index ones.
  Args:
    positive: bool [B, P].
  Returns:
    prior index int32 [B, K], slot validity bool [B, K], and the original's old/new scale
    float32 [B] (num_pos / K when subsampled, else 1), with K = min(max_masks, P).
  """
  num_priors = positive.shape[1]
  k = min(max_masks, num_priors)
  if rng is None:
    key = -jnp.arange(num_priors, dtype=jnp.float32)[None, :] / num_priors  # in (-1, 0]
    key = jnp.broadcast_to(key, positive.shape)
  else:
    key = jax.random.uniform(rng, positive.shape)  # [0, 1)
  key = jnp.where(positive, key, -2.0)
  _, prior_idx = jax.lax.top_k(key, k)  # [B, K]
  slot_valid = jnp.take_along_axis(positive, prior_idx, axis=1)
  num_pos = jnp.sum(positive, axis=1).astype(jnp.float32)
  scale = jnp.where(num_pos > k, num_pos / k, 1.0)
  return prior_idx.astype(jnp.int32), slot_valid, scale


def slot_mask_predictions(proto: jnp.ndarray, coef: jnp.ndarray, gt_boxes: jnp.ndarray,
                          crop: bool = True) -> jnp.ndarray:
  """sigmoid(proto @ coef) of each slot, cropped by its GT box (1 proto-pixel padding).

  proto: [B, Hp, Wp, k]; coef: [B, K, k]; gt_boxes: [B, K, 4] relative x1y1x2y2.
  Returns [B, Hp, Wp, K] in [0, 1].
  """
  pred = jax.nn.sigmoid(jnp.einsum('bhwk,bnk->bhwn', proto, coef))  # [B, Hp, Wp, K]
  return box_utils.crop(pred, gt_boxes, padding=1) if crop else pred


def mask_loss_per_slot(pred: jnp.ndarray, gt_masks: jnp.ndarray, gt_boxes: jnp.ndarray,
                       crop: bool = True, normalize_by_box: bool = True) -> jnp.ndarray:
  """Lincomb mask BCE of each slot, before masking, scaling and alpha.

  Args:
    pred: [B, Hp, Wp, K] slot masks from :func:`slot_mask_predictions`;
    gt_masks: [B, K, Hp, Wp] binary GT masks of the slots' matched GT (downsampled);
    gt_boxes: [B, K, 4] relative x1y1x2y2 of the slots' matched GT.
  Returns:
    [B, K]: sum over pixels of BCE(pred, gt); with ``normalize_by_box`` divided by the GT box's
    size in proto pixels and multiplied by Hp * Wp when cropping (emulate_roi_pooling).
  """
  height, width = pred.shape[1], pred.shape[2]
  # torch clamps pred to [0, 1] first; a sigmoid (times a 0/1 crop) is already in that range.
  target = jnp.transpose(gt_masks, (0, 2, 3, 1)).astype(pred.dtype)  # [B, Hp, Wp, K]
  per_slot = jnp.sum(torch_bce(pred, target), axis=(1, 2))  # [B, K]
  if normalize_by_box:
    box_w = (gt_boxes[..., 2] - gt_boxes[..., 0]) * width
    box_h = (gt_boxes[..., 3] - gt_boxes[..., 1]) * height
    weight = height * width if crop else 1
    per_slot = per_slot / box_w / box_h * weight
  return per_slot


class MaskSlots(NamedTuple):
  """The positives whose masks enter the mask loss (K slots per image, fixed shape)."""
  pred: jnp.ndarray  # [B, Hp, Wp, K] cropped sigmoid masks
  gt_masks: jnp.ndarray  # uint8 [B, K, Hp, Wp] their matched GT masks (binarised)
  labels: jnp.ndarray  # int [B, K] their matched GT's class (0-based)
  valid: jnp.ndarray  # bool [B, K] real slots


def mask_loss(proto: jnp.ndarray, coef: jnp.ndarray, masks_proto: jnp.ndarray,
              targets: MatchTargets, cfg: YolactConfig, rng: jax.Array | None,
              labels: jnp.ndarray | None = None
              ) -> tuple[jnp.ndarray, jnp.ndarray, MaskSlots]:
  """Lincomb mask loss summed over the batch, x mask_alpha / (Hp * Wp) (before / N).

  Only up to masks_to_train positives per image are assembled (a fixed [B, K, ...] slot array),
  so nothing of size [B, P, Hp, Wp] is ever built.
  Args:
    proto: [B, Hp, Wp, k]; coef: [B, P, k]; masks_proto: uint8 [B, G, Hp, Wp] binarised GT;
    labels: int [B, G] 0-based GT classes (for the slots' labels; None: zeros).
  Returns:
    (scalar loss, per-image scaled slot sums [B], the slots for the mask-IoU term). With
    ``loss.mask_normalise_by_trained`` a subsampled image's sum is not rescaled.
  """
  height, width = proto.shape[1], proto.shape[2]
  positive = targets.conf_t > 0
  prior_idx, slot_valid, scale = select_mask_slots(positive, cfg.loss.masks_to_train, rng)
  if cfg.loss.mask_normalise_by_trained:
    scale = jnp.ones_like(scale)
  slot_coef = jnp.take_along_axis(coef, prior_idx[..., None], axis=1)  # [B, K, k]
  slot_box = jnp.take_along_axis(targets.gt_box_t, prior_idx[..., None], axis=1)  # [B, K, 4]
  slot_gt = jnp.take_along_axis(targets.idx_t, prior_idx, axis=1)  # [B, K]
  slot_mask = jnp.take_along_axis(masks_proto, slot_gt[:, :, None, None], axis=1)  # [B,K,Hp,Wp]
  # Empty slots get a harmless unit box so no 0/0 reaches the value or the gradient.
  unit_box = jnp.array([0.0, 0.0, 1.0, 1.0], slot_box.dtype)
  slot_box = jnp.where(slot_valid[..., None], slot_box, unit_box)
  pred = slot_mask_predictions(proto, slot_coef, slot_box, cfg.loss.proto_crop)
  per_slot = mask_loss_per_slot(pred, slot_mask, slot_box, cfg.loss.proto_crop,
                                cfg.loss.normalize_emulate_roi_pooling)
  per_image = jnp.sum(jnp.where(slot_valid, per_slot, 0.0), axis=1) * scale  # [B]
  total = jnp.sum(per_image) * cfg.loss.mask_alpha / height / width
  slot_labels = (jnp.zeros_like(slot_gt) if labels is None
                 else jnp.take_along_axis(labels, slot_gt, axis=1))
  return total, per_image, MaskSlots(pred, slot_mask, slot_labels, slot_valid)


# --------------------------------------------------------------------------------------------
# I: mask IoU (YOLACT++)
# --------------------------------------------------------------------------------------------


def mask_iou_targets(pred: jnp.ndarray, gt_masks: jnp.ndarray) -> jnp.ndarray:
  """IoU of each binarised (> 0.5) predicted mask with its GT mask: [B, K].

  pred: [B, Hp, Wp, K]; gt_masks: [B, K, Hp, Wp] in {0, 1}. A pair with an empty union gives 0.
  """
  binary = (jax.lax.stop_gradient(pred) > 0.5).astype(jnp.float32)
  gt = jnp.transpose(gt_masks, (0, 2, 3, 1)).astype(jnp.float32)
  inter = jnp.sum(binary * gt, axis=(1, 2))
  union = jnp.sum(binary, axis=(1, 2)) + jnp.sum(gt, axis=(1, 2)) - inter
  return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 0.0)


def mask_iou_loss(slots: MaskSlots, predict_iou: Callable[[jnp.ndarray], jnp.ndarray],
                  alpha: float, discard_mask_area: float) -> jnp.ndarray:
  """Smooth-L1 between the predicted IoU at the GT class and the real IoU, summed, x alpha
  (before / N).

  The mask-IoU network sees the cropped sigmoid masks themselves (gradients flow back into the
  prototypes and coefficients). Slots whose GT mask has ``discard_mask_area`` pixels or fewer at
  prototype resolution are left out (when that threshold is > 0).
  predict_iou: ``[N, Hp, Wp] -> [N, C - 1]``.
  """
  batch, height, width, num_slots = slots.pred.shape
  keep = slots.valid
  if discard_mask_area > 0:
    area = jnp.sum(slots.gt_masks.astype(jnp.float32), axis=(2, 3))  # [B, K]
    keep = keep & (area > discard_mask_area)
  target = mask_iou_targets(slots.pred, slots.gt_masks)  # [B, K]
  masks = jnp.transpose(slots.pred, (0, 3, 1, 2)).reshape(batch * num_slots, height, width)
  predicted = predict_iou(masks).reshape(batch, num_slots, -1)  # [B, K, C - 1]
  at_class = jnp.take_along_axis(predicted, jnp.maximum(slots.labels, 0)[..., None],
                                 axis=-1)[..., 0]
  return alpha * jnp.sum(jnp.where(keep, smooth_l1(at_class - target), 0.0))


# --------------------------------------------------------------------------------------------
# S: semantic segmentation
# --------------------------------------------------------------------------------------------


def semantic_target(masks_segm: jnp.ndarray, labels: jnp.ndarray, real: jnp.ndarray,
                    num_fg_classes: int, class_offset: int = 0) -> jnp.ndarray:
  """Per-class union of the non-crowd GT masks: float32 [B, Hs, Ws, C-1] in {0, 1}.

  masks_segm: uint8 [B, G, Hs, Ws] binarised; labels: int [B, G] 0-based; real: bool [B, G]
  (valid and not crowd); ``class_offset``: class c goes to channel (c + offset) mod (C - 1).
  """
  channel = (labels + class_offset) % num_fg_classes
  one_hot = jax.nn.one_hot(jnp.where(real, channel, -1), num_fg_classes)  # [B, G, C-1]
  counts = jnp.einsum('bghw,bgc->bhwc', masks_segm.astype(jnp.float32), one_hot,
                      precision=jax.lax.Precision.HIGHEST)
  return (counts > 0.5).astype(jnp.float32)


def bce_with_logits(x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
  """Elementwise torch ``F.binary_cross_entropy_with_logits`` (numerically stable form)."""
  return jnp.maximum(x, 0.0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))


def semantic_loss(segm: jnp.ndarray, target: jnp.ndarray, alpha: float,
                  images: jnp.ndarray | None = None) -> jnp.ndarray:
  """BCE-with-logits summed over all entries / (Hs * Ws) x alpha, summed over images (before
  / B). segm, target: [B, Hs, Ws, C-1]; ``images``: bool [B], the images that count (None:
  all)."""
  height, width = segm.shape[1], segm.shape[2]
  bce = bce_with_logits(segm, target)
  if images is not None:
    bce = jnp.where(images[:, None, None, None], bce, 0.0)
  return jnp.sum(bce) / height / width * alpha


# --------------------------------------------------------------------------------------------
# Total
# --------------------------------------------------------------------------------------------


def yolact_loss(preds: dict, priors: jnp.ndarray, batch: dict, cfg: YolactConfig,
                rng: jax.Array | None = None, params: Any = None
                ) -> tuple[jnp.ndarray, dict]:
  """The original's training loss for one batch (B + C + M + S, and I for YOLACT++).

  Args:
    preds: training-mode network output: ``loc`` [B, P, 4], ``conf`` [B, P, C] logits, ``coefs``
      [B, P, k] tanh'd coefficients, ``proto`` [B, Hp, Wp, k], ``segm`` [B, Hs, Ws, C-1] logits
      (needed only when the semantic term is on).
    priors: [P, 4] (cx, cy, w, h).
    batch: ``boxes`` [B, G, 4], ``labels`` int [B, G], ``is_crowd`` / ``valid`` bool [B, G],
      ``masks_proto`` uint8 [B, G, Hp, Wp], ``masks_segm`` uint8 [B, G, Hs, Ws] (the latter only
      when the semantic term is on).
    cfg: the (static, hashable) experiment config.
    rng: key for the masks_to_train subset; None takes the lowest-index positives.
    params: the model's parameters being trained; the mask-IoU term (``cfg.model.use_maskiou``)
      runs the mask-IoU network with ``params['maskiou_net']`` (``predict_mask_iou``).
  Returns:
    (total, terms): ``B``, ``C``, ``M``, ``S``, ``I`` (normalised as the original; ``I`` is 0 when
    every mask was discarded, where the original leaves the term out), ``num_pos`` (N),
    ``num_neg`` (mined negatives), ``num_neutral``, all scalars.

  The ``loss`` fields after ``discard_mask_area`` give mmdetection's variants (its matcher,
  OHEM, mask normaliser and semantic target channels; :class:`yolact_jax.config.LossConfig`).

  Departures from the original, all in cases where it crashes or divides by zero:
  * N = 0 (no positive in the whole batch): the original's B, C, M are 0/0 = NaN and train.py
    skips the step. Here they are divided by max(N, 1), so they are exactly 0 and S alone remains.
  * An image without valid non-crowd GT (the original resamples it in its data loader): all its
    priors are background (see ``matching``); it adds no positives, no hard negatives (3 x 0),
    no masks, and an all-zero semantic target.
  """
  lc = cfg.loss
  targets = match(priors, batch['boxes'], batch['labels'], batch['is_crowd'], batch['valid'], lc)
  positive = targets.conf_t > 0
  num_pos = jnp.sum(positive)
  if lc.count_one_positive_at_least:
    normaliser = jnp.sum(jnp.maximum(jnp.sum(positive, axis=1), 1)).astype(jnp.float32)
  else:
    normaliser = jnp.maximum(num_pos, 1).astype(jnp.float32)

  negatives = hard_negatives(preds['conf'], targets.conf_t, lc.ohem_negpos_ratio,
                             lc.ohem_keep_negatives_without_positives)
  mask_total, _, slots = mask_loss(preds['proto'], preds['coefs'], batch['masks_proto'],
                                   targets, cfg, rng, batch['labels'])
  mask_normaliser = (jnp.maximum(jnp.sum(slots.valid), 1).astype(jnp.float32)
                     if lc.mask_normalise_by_trained else normaliser)
  terms = {
      'B': box_loss(preds['loc'], targets.loc_t, positive, lc.bbox_alpha) / normaliser,
      'C': conf_loss(preds['conf'], targets.conf_t, negatives, lc.conf_alpha) / normaliser,
      'M': mask_total / mask_normaliser,
  }
  if cfg.model.use_maskiou:
    predict_iou = lambda m: predict_mask_iou(params, m, cfg.model, cfg.num_classes)  # noqa: E731
    terms['I'] = mask_iou_loss(slots, predict_iou, lc.maskiou_alpha,
                               lc.discard_mask_area) / normaliser
  if lc.use_semantic_segmentation_loss:
    real = batch['valid'] & ~batch['is_crowd']
    target = semantic_target(batch['masks_segm'], batch['labels'], real, cfg.num_classes - 1,
                             lc.semantic_class_offset)
    batch_size = preds['segm'].shape[0]
    counted = jnp.any(real, axis=1) if lc.semantic_skips_empty_images else None
    terms['S'] = semantic_loss(preds['segm'], target, lc.semantic_segmentation_alpha,
                               counted) / batch_size
  total = sum(terms.values())
  terms['num_pos'] = num_pos
  terms['num_neg'] = jnp.sum(negatives)
  terms['num_neutral'] = jnp.sum(targets.conf_t < 0)
  return total, terms
