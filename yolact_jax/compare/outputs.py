"""Comparing outputs (pure numpy): raw head outputs by absolute difference, detections by
matching them across the two sides."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

RAW_KEYS = ('loc', 'conf', 'mask', 'proto', 'priors')
# Parity of the network on the same weights and input (float32), as the reference outputs of the
# original (shared/reference/README.md) are checked.
REFERENCE_TOLERANCE = {'max_abs': 2e-3, 'mean_abs': 5e-5}


def raw_output_diff(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                    keys: Sequence[str] = RAW_KEYS) -> dict[str, dict[str, Any]]:
  """Per key: shape, max and mean absolute difference (or the shape mismatch / absence)."""
  report = {}
  for key in keys:
    if key not in ours or key not in theirs:
      report[key] = {'missing': [side for side, d in (('ours', ours), ('original', theirs))
                                 if key not in d]}
      continue
    a = np.asarray(ours[key], np.float64)
    b = np.asarray(theirs[key], np.float64)
    if a.shape != b.shape:
      report[key] = {'shape_ours': list(a.shape), 'shape_original': list(b.shape),
                     'error': 'shape mismatch'}
      continue
    diff = np.abs(a - b)
    report[key] = {'shape': list(a.shape), 'max_abs': float(diff.max()) if diff.size else 0.0,
                   'mean_abs': float(diff.mean()) if diff.size else 0.0,
                   'max_abs_value': float(np.abs(b).max()) if b.size else 0.0}
    report[key]['within_reference_tolerance'] = bool(
        report[key]['max_abs'] <= REFERENCE_TOLERANCE['max_abs']
        and report[key]['mean_abs'] <= REFERENCE_TOLERANCE['mean_abs'])
  return report


# The parity rule of shared/reference/README.md: against the original run in float64 (the true
# function on these weights), our float32 error may be at most about this many times the
# original's own float32 error (max and mean).
YARDSTICK_FACTOR = 1.5
YARDSTICK_KEYS = ('loc', 'conf', 'mask', 'proto')


def yardstick_diff(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                   truth: dict[str, np.ndarray], keys: Sequence[str] = YARDSTICK_KEYS
                   ) -> dict[str, dict[str, Any]]:
  """Per key: our float32 error and the original's own float32 error against ``truth`` (the
  original in float64), max and mean absolute, and their ratios."""
  report = {}
  for key in keys:
    t = np.asarray(truth[key], np.float64)
    ours_err = np.abs(np.asarray(ours[key], np.float64) - t)
    theirs_err = np.abs(np.asarray(theirs[key], np.float64) - t)
    report[key] = _judged({'shape': list(t.shape),
                           'ours_max': float(ours_err.max()), 'ours_mean': float(ours_err.mean()),
                           'original_max': float(theirs_err.max()),
                           'original_mean': float(theirs_err.mean())})
  return report


def _judged(entry: dict[str, Any]) -> dict[str, Any]:
  """``entry`` with ours / original ratios of the max and mean errors and the verdict."""
  for stat in ('max', 'mean'):
    o, r = entry[f'ours_{stat}'], entry[f'original_{stat}']
    entry[f'ratio_{stat}'] = o / r if r > 0 else (0.0 if o == 0 else math.inf)
  entry['within_factor'] = bool(entry['ratio_max'] <= YARDSTICK_FACTOR
                                and entry['ratio_mean'] <= YARDSTICK_FACTOR)
  return entry


def merge_yardstick(parts: Sequence[dict[str, dict]]) -> dict[str, dict]:
  """Per-batch :func:`yardstick_diff` reports combined (max of maxima, size-weighted means)."""
  merged: dict[str, dict] = {}
  for key in (parts[0] if parts else {}):
    entries = [p[key] for p in parts]
    sizes = [math.prod(e['shape']) for e in entries]
    out = {'shape': entries[0]['shape'], 'batches': len(entries)}
    for side in ('ours', 'original'):
      out[f'{side}_max'] = max(e[f'{side}_max'] for e in entries)
      out[f'{side}_mean'] = float(sum(e[f'{side}_mean'] * n for e, n in zip(entries, sizes))
                                  / max(sum(sizes), 1))
    merged[key] = _judged(out)
  return merged


def merge_raw_diffs(diffs: Sequence[dict[str, dict]]) -> dict[str, dict]:
  """Combine per-batch :func:`raw_output_diff` reports (max of maxima, size-weighted means)."""
  merged: dict[str, dict] = {}
  for key in (diffs[0] if diffs else {}):
    parts = [d[key] for d in diffs]
    if any('max_abs' not in p for p in parts):
      merged[key] = next(p for p in parts if 'max_abs' not in p)
      continue
    sizes = [math.prod(p['shape']) for p in parts]
    merged[key] = {
        'shape': parts[0]['shape'], 'batches': len(parts),
        'max_abs': max(p['max_abs'] for p in parts),
        'mean_abs': float(sum(p['mean_abs'] * s for p, s in zip(parts, sizes)) / max(sum(sizes), 1)),
        'max_abs_value': max(p['max_abs_value'] for p in parts),
        'within_reference_tolerance': all(p['within_reference_tolerance'] for p in parts)}
  return merged


def ours_result(det: Any) -> dict[str, np.ndarray]:
  """A :class:`yolact_jax.predict.Detections` -> the layout of
  :func:`yolact_jax.compare.original.original_result` (``mask_scores``: the re-scored mask
  scores of YOLACT++ where the detections carry them, else the scores)."""
  scores = np.asarray(det.scores, np.float32)
  return {'classes': np.asarray(det.classes, np.int64), 'scores': scores,
          'mask_scores': np.asarray(getattr(det, 'mask_scores', scores), np.float32),
          'boxes': np.asarray(det.boxes), 'masks': np.asarray(det.masks, np.uint8)}


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of pixel boxes x1y1x2y2: [n, 4], [m, 4] -> [n, m] (areas (x2-x1)(y2-y1)).

  Where both boxes are empty (zero union), identical boxes count as IoU 1 and others as 0: both
  sides' postprocess truncates boxes to integer pixels, so a narrow detection becomes e.g.
  ``[42, 495, 42, 521]`` on both sides (its cropped mask is not empty), and it must still match.
  """
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
  union = area(a)[:, None] + area(b)[None, :] - inter
  identical = np.all(a[:, None, :] == b[None, :, :], axis=-1)
  return np.where(union > 0, inter / np.where(union > 0, union, 1), identical.astype(np.float64))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two binary masks of the same shape (two empty masks agree: 1.0)."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  union = np.logical_or(a, b).sum()
  return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def match_detections(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                     iou_thresh: float) -> list[tuple[int, int, float]]:
  """Greedy matching in our score order: each of our detections takes the unmatched original
  detection of the same class with the highest box IoU, if that IoU >= ``iou_thresh``.
  Returns (our index, original index, box IoU) triples."""
  iou = box_iou_matrix(ours['boxes'], theirs['boxes'])
  same_class = np.asarray(ours['classes'])[:, None] == np.asarray(theirs['classes'])[None, :]
  iou = np.where(same_class, iou, -1.0)
  taken = np.zeros(iou.shape[1], bool)
  pairs = []
  for i in np.argsort(-np.asarray(ours['scores']), kind='stable'):
    if iou.shape[1] == 0:
      break
    row = np.where(taken, -1.0, iou[i])
    j = int(np.argmax(row))
    if row[j] >= iou_thresh:
      taken[j] = True
      pairs.append((int(i), j, float(row[j])))
  return pairs


def _score_diffs(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], key: str,
                 pairs: Sequence[tuple[int, int, float]]) -> list[float]:
  """|ours - original| of ``key`` over the matched pairs (empty when a side lacks ``key``)."""
  if key not in ours or key not in theirs:
    return []
  return [abs(float(ours[key][i]) - float(theirs[key][j])) for i, j, _ in pairs]


def compare_detections(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                       iou_thresh: float) -> dict[str, Any]:
  """Counts, agreement, score and mask-score differences, box and mask IoU of one image's
  detections."""
  pairs = match_detections(ours, theirs, iou_thresh)
  n_ours, n_theirs = len(ours['classes']), len(theirs['classes'])
  box_ious = [p[2] for p in pairs]
  score_diffs = _score_diffs(ours, theirs, 'scores', pairs)
  mask_score_diffs = _score_diffs(ours, theirs, 'mask_scores', pairs)
  mask_ious = [mask_iou(ours['masks'][i], theirs['masks'][j]) for i, j, _ in pairs]
  return {'num_ours': n_ours, 'num_original': n_theirs, 'matched': len(pairs),
          'agreement': len(pairs) / max(n_ours, n_theirs) if max(n_ours, n_theirs) else 1.0,
          'box_iou_min': min(box_ious, default=None),
          'box_iou_mean': float(np.mean(box_ious)) if box_ious else None,
          'score_abs_diff_max': max(score_diffs, default=None),
          'mask_score_abs_diff_max': max(mask_score_diffs, default=None),
          'mask_iou_min': min(mask_ious, default=None),
          'mask_iou_mean': float(np.mean(mask_ious)) if mask_ious else None,
          'mask_iou_over_0_99': (float(np.mean(np.asarray(mask_ious) > 0.99))
                                 if mask_ious else None)}


def _max_of(images: Sequence[dict[str, Any]], key: str) -> float | None:
  return max((r[key] for r in images if r.get(key) is not None), default=None)


def summarize_detection_comparison(images: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Totals over images: detections on each side, matched, overall agreement, mask IoU, the
  largest score and mask-score differences."""
  n_ours = sum(r['num_ours'] for r in images)
  n_theirs = sum(r['num_original'] for r in images)
  matched = sum(r['matched'] for r in images)
  weighted = [(r['mask_iou_mean'], r['matched']) for r in images if r['mask_iou_mean'] is not None]
  mins = [r['mask_iou_min'] for r in images if r['mask_iou_min'] is not None]
  return {'images': len(images), 'num_ours': n_ours, 'num_original': n_theirs,
          'matched': matched,
          'agreement': matched / max(n_ours, n_theirs) if max(n_ours, n_theirs) else 1.0,
          'mask_iou_mean': (sum(m * n for m, n in weighted) / sum(n for _, n in weighted)
                            if weighted else None),
          'mask_iou_min': min(mins, default=None),
          'score_abs_diff_max': _max_of(images, 'score_abs_diff_max'),
          'mask_score_abs_diff_max': _max_of(images, 'mask_score_abs_diff_max')}
