"""mmdetection's YOLACT training transform (the train_pipeline of its yolact_r50_1xb8-55e_coco
config), in numpy / OpenCV on the host, with its order and its choices:

FilterAnnotations (boxes wider and taller than 4 px) -> Expand (p 1/2: a canvas 1-4x the image
filled with the mean cast to uint8, the image at a random place) -> MinIoURandomCrop (a mode of
keep / IoU >= 0.1, 0.3, 0.5, 0.7, 0.9 / any; up to 50 patches of 0.3-1x each side and aspect
0.5-2 per mode; a patch is taken when its IoU with EVERY box reaches the mode's and it holds a
box centre; boxes with their centre inside are kept, shifted, clipped) -> Resize (OpenCV's
bilinear of the uint8 image to S x S; masks nearest; boxes scaled and clipped) -> RandomFlip
(p 1/2) -> PhotoMetricDistortion (float32: brightness +-32; contrast 0.5-1.5 before or after the
HSV steps; saturation 0.5-1.5, clipped at 1 when raised; hue +-18 degrees; a random channel
order) -> the backbone normalisation.

Randomness comes only from the :class:`Draws` given, in mmdetection's order and with its calls
(its crop's ``random.uniform(w - new_w)`` is numpy's uniform(low=w - new_w, high=1), as the
original's): a seed gives mmdetection's distribution, not its stream. Switching a step off
(the config's ``augment`` flags) skips it and its draws.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from yolact_jax.config import AugmentConfig
from yolact_jax.data.augment import TransformedSample, backbone_transform

MIN_BOX_PX = 4.0  # FilterAnnotations(min_gt_bbox_wh=(4.0, 4.0)): kept boxes are wider and taller
EXPAND_FILL_BGR = (103, 116, 123)  # its mean (123.68, 116.78, 103.94) RGB -> BGR, cast to uint8
CROP_MODES = (1, 0.1, 0.3, 0.5, 0.7, 0.9, 0)  # 1: no crop; else the least IoU with every box
CROP_TRIALS = 50
MIN_CROP = 0.3


class Draws:
  """mmdetection's calls on ``numpy.random``, answered from a Generator (``values`` records
  every answer in order)."""

  def __init__(self, rng: np.random.Generator):
    self.rng, self.values = rng, []

  def _note(self, value: Any) -> Any:
    self.values.append(value)
    return value

  def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
    return self._note(low + (high - low) * self.rng.random())

  def randint(self, n: int) -> int:
    return self._note(int(self.rng.integers(n)))

  def choice(self, options: Sequence[Any]) -> Any:
    return self._note(options[int(self.rng.integers(len(options)))])

  def permutation(self, n: int) -> np.ndarray:
    return self._note(self.rng.permutation(n))


def box_iou(patch: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """IoU of one x1y1x2y2 patch with each box [n, 4] (mmdetection's bbox_overlaps, eps 1e-6)."""
  lt = np.maximum(patch[:2], boxes[:, :2])
  rb = np.minimum(patch[2:], boxes[:, 2:])
  wh = np.clip(rb - lt, 0, None)
  inter = wh[:, 0] * wh[:, 1]
  area_p = (patch[2] - patch[0]) * (patch[3] - patch[1])
  area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return inter / np.maximum(area_p + area_b - inter, 1e-6)


def _expand(image, masks, boxes, draws: Draws):
  if draws.uniform(0, 1) > 0.5:
    return image, masks, boxes
  h, w = image.shape[:2]
  ratio = draws.uniform(1, 4)
  left = int(draws.uniform(0, w * ratio - w))
  top = int(draws.uniform(0, h * ratio - h))
  canvas = np.empty((int(h * ratio), int(w * ratio), 3), np.uint8)
  canvas[...] = EXPAND_FILL_BGR
  canvas[top:top + h, left:left + w] = image
  grown = np.zeros((len(masks),) + canvas.shape[:2], np.uint8)
  grown[:, top:top + h, left:left + w] = masks
  return canvas, grown, boxes + [left, top, left, top]


def _crop(image, masks, boxes, labels, draws: Draws):
  h, w = image.shape[:2]
  while True:
    mode = draws.choice(CROP_MODES)
    if mode == 1:
      return image, masks, boxes, labels
    for _ in range(CROP_TRIALS):
      new_w = draws.uniform(MIN_CROP * w, w)
      new_h = draws.uniform(MIN_CROP * h, h)
      if new_h / new_w < 0.5 or new_h / new_w > 2:
        continue
      left = draws.uniform(w - new_w)  # numpy's uniform(low=w - new_w, high=1.0)
      top = draws.uniform(h - new_h)
      patch = np.array((int(left), int(top), int(left + new_w), int(top + new_h)))
      if patch[2] == patch[0] or patch[3] == patch[1]:
        continue
      if len(boxes):
        if box_iou(patch.astype(np.float32), boxes.astype(np.float32)).min() < mode:
          continue
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = ((centres[:, 0] > patch[0]) & (centres[:, 1] > patch[1])
                  & (centres[:, 0] < patch[2]) & (centres[:, 1] < patch[3]))
        if not inside.any():
          continue
        boxes = boxes[inside] - [patch[0], patch[1], patch[0], patch[1]]
        boxes = np.clip(boxes, 0, [patch[2] - patch[0], patch[3] - patch[1]] * 2)
        masks, labels = masks[inside], labels[inside]
      x1, y1 = min(patch[0], masks.shape[2]), min(patch[1], masks.shape[1])
      masks = masks[:, y1:max(patch[3], y1), x1:max(patch[2], x1)]
      return image[patch[1]:patch[3], patch[0]:patch[2]], masks, boxes, labels


def photometric_distort(image: np.ndarray, draws: Draws) -> np.ndarray:
  """mmdetection's PhotoMetricDistortion on a BGR image: float32 BGR (a new array)."""
  mode, brightness, contrast, saturation, hue, swap = (draws.randint(2) for _ in range(6))
  delta, alpha = draws.uniform(-32, 32), draws.uniform(0.5, 1.5)
  saturation_value, hue_value = draws.uniform(0.5, 1.5), draws.uniform(-18, 18)
  order = draws.permutation(3)
  image = image.astype(np.float32)
  if brightness:
    image += delta
  if mode == 1 and contrast:
    image *= alpha
  image = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
  if saturation:
    image[..., 1] *= saturation_value
    if saturation_value > 1:
      image[..., 1] = image[..., 1].clip(0, 1)
  if hue:
    image[..., 0] += hue_value
    image[..., 0][image[..., 0] > 360] -= 360
    image[..., 0][image[..., 0] < 0] += 360
  image = cv2.cvtColor(image, cv2.COLOR_HSV2BGR)
  if mode == 0 and contrast:
    image *= alpha
  return np.ascontiguousarray(image[..., order]) if swap else image


def train_transform(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    num_crowds: int, draws: Draws, max_size: int = 550, kind: str = 'resnet',
                    flags: AugmentConfig = AugmentConfig()) -> TransformedSample | None:
  """mmdetection's training transform (the module docstring); arguments and result as
  :func:`yolact_jax.data.augment.train_transform`'s (crowds, label -1, go through every step as
  mmdetection's ignored boxes do). None where the 4 px filter leaves no box (mmdetection draws
  another image then)."""
  height, width = image.shape[:2]
  boxes = np.asarray(boxes, np.float64) * [width, height, width, height]
  labels = np.asarray(labels, np.int32)
  masks = np.asarray(masks, np.uint8)
  keep = ((boxes[:, 2] - boxes[:, 0]) > MIN_BOX_PX) & ((boxes[:, 3] - boxes[:, 1]) > MIN_BOX_PX)
  if len(boxes) and not keep.any():
    return None
  image, masks, boxes, labels = np.asarray(image, np.uint8), masks[keep], boxes[keep], labels[keep]
  if flags.expand:
    image, masks, boxes = _expand(image, masks, boxes, draws)
  if flags.random_sample_crop:
    image, masks, boxes, labels = _crop(image, masks, boxes, labels, draws)
  h, w = image.shape[:2]
  image = cv2.resize(image, (max_size, max_size), interpolation=cv2.INTER_LINEAR)
  masks = np.stack([cv2.resize(m, (max_size, max_size), interpolation=cv2.INTER_NEAREST)
                    for m in masks]) if len(masks) else np.zeros((0, max_size, max_size), np.uint8)
  boxes = np.clip(boxes * ([max_size / w, max_size / h] * 2), 0, max_size)
  if flags.random_mirror and draws.choice(('horizontal', None)) == 'horizontal':
    image, masks = image[:, ::-1], masks[:, :, ::-1]
    boxes = np.stack([max_size - boxes[:, 2], boxes[:, 1], max_size - boxes[:, 0], boxes[:, 3]],
                     axis=1)
  image = (photometric_distort(image, draws) if flags.photometric_distort
           else image.astype(np.float32))
  return TransformedSample(image=backbone_transform(image, kind),
                           masks=np.ascontiguousarray(masks),
                           boxes=(boxes / max_size).astype(np.float32), labels=labels,
                           num_crowds=int((labels < 0).sum()))
