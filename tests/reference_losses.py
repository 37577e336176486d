"""Helpers for the matching / loss parity tests: the original's ground truth as a padded batch."""

from __future__ import annotations

import functools
import json

import numpy as np

from tests.reference_data import load_npz, require_reference

NUM_SLOTS = 8  # GT slots per image in the parity batch (3 real objects each, the rest padding)


@functools.lru_cache(maxsize=2)
def reference_batch(num_slots: int = NUM_SLOTS, preset: str = 'yolact_resnet50'
                    ) -> dict[str, np.ndarray]:
  """``gt.npz`` of ``preset``'s reference set as the data pipeline's padded batch (crowds after
  non-crowd, padding last).

  Padding slots hold a deliberately attractive box (a copy of the image's first GT) and label,
  with ``valid`` False, so a matcher that looked at padding would be caught. The GT masks are
  downsampled to proto (138) and semantic (69) size with :func:`downsample_gt_masks`.
  """
  from yolact_jax.loss import downsample_gt_masks

  gt = load_npz(preset, 'gt.npz')
  batch_size = sum(1 for key in gt if key.startswith('labels_'))
  boxes = np.zeros((batch_size, num_slots, 4), np.float32)
  labels = np.zeros((batch_size, num_slots), np.int32)
  is_crowd = np.zeros((batch_size, num_slots), bool)
  valid = np.zeros((batch_size, num_slots), bool)
  masks_proto = np.zeros((batch_size, num_slots, 138, 138), np.uint8)
  masks_segm = np.zeros((batch_size, num_slots, 69, 69), np.uint8)
  for b in range(batch_size):
    n = len(gt[f'labels_{b}'])
    num_crowds = int(gt[f'num_crowds_{b}'])
    boxes[b, :n] = gt[f'boxes_{b}']
    boxes[b, n:] = gt[f'boxes_{b}'][0]  # bait for a matcher that ignores `valid`
    labels[b, :n] = gt[f'labels_{b}']
    labels[b, n:] = 7
    valid[b, :n] = True
    is_crowd[b, n - num_crowds:n] = True
    masks = gt[f'masks_{b}']
    masks_proto[b, :n] = np.asarray(downsample_gt_masks(masks, (138, 138)))
    masks_segm[b, :n] = np.asarray(downsample_gt_masks(masks, (69, 69)))
  return dict(boxes=boxes, labels=labels, is_crowd=is_crowd, valid=valid,
              masks_proto=masks_proto, masks_segm=masks_segm)


def reference_losses(preset: str = 'yolact_resnet50') -> dict:
  """``loss.json`` of the original (B, C, M, S, for YOLACT++ also I, total, counts per image)."""
  with open(require_reference(preset, 'loss.json')) as f:
    return json.load(f)


def reference_predictions(preset: str = 'yolact_resnet50') -> dict[str, np.ndarray]:
  """The original's head outputs from ``raw.npz`` in the Flax model's training-output layout."""
  raw = load_npz(preset, 'raw.npz')
  return dict(loc=raw['loc'], conf=raw['conf_logits'], coefs=raw['mask'], proto=raw['proto'],
              segm=np.transpose(raw['segm'], (0, 2, 3, 1)))
