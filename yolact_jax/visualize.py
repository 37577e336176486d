"""Drawing detections on images and arranging images in a grid (numpy + OpenCV, host side).

:func:`draw_instances` paints instances given as arrays (predictions or ground truth):
translucent masks in a per-class colour, boxes, and a "name score" label per instance.
:func:`draw_detections` does the same for a :class:`yolact_jax.predict.Detections`, showing the
detections and the score the original's display mode shows (:func:`display_detections`: for
YOLACT++ the rescored mask score).
:func:`make_grid` lays several such panels out with optional titles (e.g. predictions beside
ground truth).

Images are uint8 [H, W, 3]; ``channel_order`` says whether they are RGB or BGR so the colours
come out right either way (colours are defined in RGB).
"""

from __future__ import annotations

import colorsys
import dataclasses
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
GOLDEN_RATIO_CONJUGATE = 0.6180339887498949


def class_colour(class_index: int) -> tuple[int, int, int]:
  """A distinct, deterministic RGB colour per class (hues spaced by the golden ratio)."""
  hue = (0.07 + class_index * GOLDEN_RATIO_CONJUGATE) % 1.0
  r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
  return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def _in_order(colour_rgb: tuple[int, int, int], channel_order: str) -> tuple[int, int, int]:
  if channel_order not in ('rgb', 'bgr'):
    raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
  return colour_rgb if channel_order == 'rgb' else colour_rgb[::-1]


def blend_mask(image: np.ndarray, mask: np.ndarray, colour: Sequence[int],
               alpha: float) -> np.ndarray:
  """``image`` with the pixels of ``mask`` replaced by round((1 - alpha) * pixel + alpha * colour).

  image [H, W, 3] uint8, mask [H, W] (nonzero = inside), colour in the image's channel order.
  Pixels outside the mask are unchanged. Returns a new array.
  """
  out = image.copy()
  inside = np.asarray(mask).astype(bool)
  pixels = out[inside].astype(np.float32)
  blended = (1.0 - alpha) * pixels + alpha * np.asarray(colour, np.float32)
  out[inside] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
  return out


def draw_box(image: np.ndarray, box: Sequence[int], colour: Sequence[int],
             thickness: int = 1) -> None:
  """Draws the outline of box (x1, y1, x2, y2) in integer pixels, in place."""
  x1, y1, x2, y2 = (int(v) for v in box)
  cv2.rectangle(image, (x1, y1), (x2, y2), tuple(int(c) for c in colour), thickness)


def draw_label(image: np.ndarray, text: str, x: int, y: int, colour: Sequence[int],
               font_scale: float = 0.45) -> None:
  """Draws ``text`` in white on a filled ``colour`` strip whose bottom-left is (x, y), in place.

  The strip is moved down/left as needed to stay inside the image.
  """
  (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, 1)
  strip_h = text_h + baseline + 2
  height, width = image.shape[:2]
  x = int(min(max(x, 0), max(width - text_w - 2, 0)))
  y = int(min(max(y, strip_h), height))
  cv2.rectangle(image, (x, y - strip_h), (x + text_w + 2, y), tuple(int(c) for c in colour), -1)
  cv2.putText(image, text, (x + 1, y - baseline - 1), FONT, font_scale, (255, 255, 255), 1,
              cv2.LINE_AA)


def label_text(name: str, score: float | None) -> str:
  return name if score is None else f'{name} {score:.2f}'


def draw_instances(image: np.ndarray, boxes: Any, classes: Any, *, masks: Any = None,
                   scores: Any = None, names: Sequence[str] | None = None,
                   channel_order: str = 'rgb', alpha: float = 0.45, draw_masks: bool = True,
                   draw_boxes: bool = True, draw_labels: bool = True, box_thickness: int = 1,
                   font_scale: float = 0.45) -> np.ndarray:
  """A copy of ``image`` with the instances drawn on it.

  Args:
    image: [H, W, 3] uint8 in ``channel_order``.
    boxes: [n, 4] x1 y1 x2 y2 pixels (cast to int).
    classes: [n] 0-based class indices (colour and name).
    masks: optional [n, H, W] (nonzero = inside).
    scores: optional [n]; labels read "name score" with them, "name" without.
    names: optional [n] label names per instance (default: the class index as text).
    alpha: mask opacity in the blend round((1 - alpha) * pixel + alpha * colour).

  Masks are painted from the last instance to the first, so the first (best) one is on top;
  then boxes, then labels.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f'expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}')
  boxes = np.asarray(boxes).reshape(-1, 4)
  classes = np.asarray(classes).reshape(-1).astype(int)
  colours = [_in_order(class_colour(c), channel_order) for c in classes]
  out = image.copy()
  if draw_masks and masks is not None:
    masks = np.asarray(masks)
    if masks.shape != (len(classes),) + image.shape[:2]:
      raise ValueError(f'masks of shape {masks.shape} for {len(classes)} instances on an image '
                       f'of size {image.shape[:2]}')
    for i in reversed(range(len(classes))):
      out = blend_mask(out, masks[i], colours[i], alpha)
  if draw_boxes:
    for box, colour in zip(boxes, colours):
      draw_box(out, box, colour, box_thickness)
  if draw_labels:
    for i, (box, c) in enumerate(zip(boxes, classes)):
      name = names[i] if names is not None else str(c)
      score = None if scores is None else float(np.asarray(scores)[i])
      draw_label(out, label_text(name, score), int(box[0]), int(box[1]), colours[i], font_scale)
  return out


def display_detections(detections: Any, score_threshold: float = 0.0,
                       top_k: int | None = None) -> Any:
  """The detections an overlay shows, picked as the original's display mode picks them.

  Display mode uses one score per detection, the rescored one (YOLACT++: class score x
  predicted mask IoU, ``Detections.mask_scores``; YOLACT: the class score): keep class score
  > ``score_threshold`` (0: all), order by the display score (descending, stable), keep the
  first ``top_k``, and stop at the first whose display score is below ``score_threshold``.
  For YOLACT this is ``detections.select(score_threshold, top_k)``.

  Returns a ``Detections`` in display order whose ``scores`` and ``mask_scores`` are both the
  display score.
  """
  dets = detections.select(score_threshold)
  order = np.argsort(-np.asarray(dets.mask_scores), kind='stable')[:top_k]
  below = np.flatnonzero(np.asarray(dets.mask_scores)[order] < score_threshold)
  if len(below):
    order = order[:below[0]]
  shown = dets.take(order)
  return dataclasses.replace(shown, scores=shown.mask_scores)


def draw_detections(image: np.ndarray, detections: Any, *, channel_order: str = 'rgb',
                    score_threshold: float = 0.0, top_k: int | None = None,
                    **kwargs) -> np.ndarray:
  """:func:`draw_instances` for a ``Detections``: the detections and scores of
  :func:`display_detections` (display filters ``score_threshold``, ``top_k``)."""
  dets = display_detections(detections, score_threshold, top_k)
  return draw_instances(image, dets.boxes, dets.classes, masks=dets.masks, scores=dets.scores,
                        names=dets.class_names, channel_order=channel_order, **kwargs)


def fit_to_tile(image: np.ndarray, boxes: Any, masks: Any, tile: int, background: int = 255
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``image`` scaled so its longer side is ``tile`` and centred on a ``tile`` x ``tile`` canvas
  of ``background``, with its instances moved along: boxes [n, 4] (x1 y1 x2 y2 pixels) scaled
  and shifted, masks [n, H, W] resized by nearest neighbour. Drawing after this keeps labels
  and lines sharp at any image size. Returns (image, boxes, masks)."""
  image = np.asarray(image)
  height, width = image.shape[:2]
  scale = tile / max(height, width)
  new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
  top, left = (tile - new_h) // 2, (tile - new_w) // 2
  canvas = np.full((tile, tile) + image.shape[2:], background, image.dtype)
  canvas[top:top + new_h, left:left + new_w] = cv2.resize(image, (new_w, new_h),
                                                          interpolation=cv2.INTER_LINEAR)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * scale + [left, top, left, top]
  masks = np.asarray(masks).reshape((-1, height, width))
  tiled = np.zeros((len(masks), tile, tile), masks.dtype)
  for i, mask in enumerate(masks):
    tiled[i, top:top + new_h, left:left + new_w] = cv2.resize(
        mask, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
  return canvas, np.rint(boxes).astype(np.int64), tiled


def make_grid(panels: Sequence[np.ndarray], columns: int | None = None,
              titles: Sequence[str] | None = None, pad: int = 4, background: int = 255,
              font_scale: float = 0.5) -> np.ndarray:
  """Panels (uint8 [h_i, w_i, 3], any sizes) in a grid of equal cells, row by row.

  Each cell is as large as the largest panel; a panel sits in its cell's top-left corner below
  its title strip (when ``titles`` are given). ``pad`` pixels of ``background`` separate cells
  and surround the grid. Returns uint8 [H, W, 3].
  """
  if not panels:
    raise ValueError('make_grid needs at least one panel')
  for i, panel in enumerate(panels):
    if panel.dtype != np.uint8 or panel.ndim != 3 or panel.shape[-1] != 3:
      raise ValueError(f'panel {i}: expected uint8 [h, w, 3], got {panel.dtype} {panel.shape}')
  if titles is not None and len(titles) != len(panels):
    raise ValueError(f'{len(titles)} titles for {len(panels)} panels')
  columns = columns or len(panels)
  rows = -(-len(panels) // columns)
  cell_h = max(p.shape[0] for p in panels)
  cell_w = max(p.shape[1] for p in panels)
  title_h = 0
  if titles is not None:
    (_, text_h), baseline = cv2.getTextSize('Ag', FONT, font_scale, 1)
    title_h = text_h + baseline + 6
  step_y, step_x = title_h + cell_h + pad, cell_w + pad
  grid = np.full((pad + rows * step_y, pad + columns * step_x, 3), background, np.uint8)
  for i, panel in enumerate(panels):
    top = pad + (i // columns) * step_y
    left = pad + (i % columns) * step_x
    if titles is not None:
      cv2.putText(grid, str(titles[i]), (left, top + title_h - baseline - 3), FONT, font_scale,
                  (0, 0, 0), 1, cv2.LINE_AA)
    grid[top + title_h:top + title_h + panel.shape[0], left:left + panel.shape[1]] = panel
  return grid
