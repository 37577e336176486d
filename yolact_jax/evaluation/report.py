"""Printing evaluation summaries: the 12 COCO numbers of each type, per-class AP, the mAP line and
the detection counts (values x100, as the original prints mAP)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yolact_jax.evaluation.coco_eval import IOU_TYPES, METRIC_NAMES


def format_summary(summary: dict[str, Any]) -> str:
  """The 12 numbers of each type as a table (x100, as the original prints mAP)."""
  header = f'{"":6}|' + ''.join(f'{n:>7}' for n in METRIC_NAMES)
  lines = [header, '-' * len(header)]
  for iou_type, label in (('bbox', 'box'), ('segm', 'mask')):
    if iou_type in summary:
      values = summary[iou_type]
      lines.append(f'{label:6}|' + ''.join(f'{_pct(values[n]):>7}' for n in METRIC_NAMES))
  return '\n'.join(lines)


def format_per_class(summary: dict[str, Any]) -> str:
  """Per-class AP (x100) of box and mask, one class a line; '-' where the class has no GT."""
  types = [t for t in IOU_TYPES if t in summary]
  if not types:
    return ''
  names = list(summary[types[0]]['per_class_AP'])
  width = max([len(n) for n in names] + [5])
  lines = [f'{"class":{width}}' + ''.join(f'{("box" if t == "bbox" else "mask") + " AP":>10}'
                                          for t in types)]
  for name in names:
    lines.append(f'{name:{width}}' + ''.join(f'{_pct(summary[t]["per_class_AP"][name]):>10}'
                                             for t in types))
  return '\n'.join(lines)


def _pct(value: float) -> str:
  return '-' if value is None or value < 0 else f'{100 * value:.2f}'


def format_report(summary: dict[str, Any], per_class: bool = True) -> str:
  """:func:`format_summary`, :func:`format_per_class` (optional) and the mAP line, blank lines
  between: what ``evaluate.py`` prints."""
  parts = [format_summary(summary)]
  if per_class:
    parts += ['', format_per_class(summary)]
  maps = ', '.join(f'{name} {100 * summary[key]:.2f}' for name, key in
                   (('box mAP', 'box_map'), ('mask mAP', 'mask_map')) if summary.get(key) is not None)
  parts += ['', f'{maps} ({summary["num_images"]} images)']
  return '\n'.join(parts)


def format_detection_counts(records: Sequence[dict], num_images: int, score_threshold: float,
                            top_k: int) -> str:
  """How many detections there are (all are used for mAP) and how many the display settings
  (score > ``score_threshold``, at most ``top_k`` per image) would show."""
  per_image: dict = {}
  for record in records:
    if record['score'] > score_threshold:
      per_image[record['image_id']] = per_image.get(record['image_id'], 0) + 1
  shown = sum(min(n, top_k) for n in per_image.values())
  return (f'{len(records)} detections on {num_images} images (all used for mAP); shown with '
          f'score > {score_threshold} and top_k {top_k}: {shown}')
