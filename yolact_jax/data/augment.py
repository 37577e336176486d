"""The original's input transforms in numpy/OpenCV on the host.

* ``train_transform`` = ``SSDAugmentation``: photometric distortion, expand with the mean fill,
  random sample crop (as it really behaves), mirror, resize to ``max_size``, the small-box filter
  with its unit bug, then the backbone normalisation.
* ``eval_transform`` = ``BaseTransform``: resize then normalise.
* ``backbone_transform`` = ``BackboneTransform`` (the last step of both): the image reordered to
  RGB and normalised by :func:`yolact_jax.normalise.normalise` (the one normalisation, shared
  with the device path).

Randomness comes only from the ``np.random.Generator`` passed in, drawn in the same order as the
original draws from ``numpy.random``, so a seed fixes the result; every ``uniform(a, b)`` is
``a + (b - a) * rng.random()``, as numpy's. Where the original behaves otherwise than it seems
to intend (the crop, the small-box filter), its behaviour is reproduced (:func:`train_transform`).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from yolact_jax.config import INPUT_TRANSFORMS, AugmentConfig
from yolact_jax.normalise import MEANS_BGR, normalise

TRANSFORM_KINDS = INPUT_TRANSFORMS  # the registry of yolact_jax.config

_CROP_TRIALS = 50
_NUM_CROP_MODES = 6  # None, (0.1, None), (0.3, None), (0.7, None), (0.9, None), (None, None)


@dataclasses.dataclass
class TransformedSample:
  """Output of a transform.

  image:      float32 [S, S, 3] normalised, RGB.
  masks:      uint8 [n, S, S] in {0, 1} (train); None from eval_transform.
  boxes:      float32 [n, 4] relative x1, y1, x2, y2.
  labels:     int32 [n]; -1 = crowd (last ``num_crowds`` rows).
  num_crowds: number of crowd rows.
  """
  image: np.ndarray
  masks: np.ndarray | None
  boxes: np.ndarray
  labels: np.ndarray
  num_crowds: int


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
  """numpy's uniform(low, high) (also defined for low > high, as the original relies on)."""
  return low + (high - low) * rng.random()


def _coin(rng: np.random.Generator) -> bool:
  """``numpy.random.randint(2)`` as a bool."""
  return bool(rng.integers(2))


def backbone_transform(image: np.ndarray, kind: str = 'resnet') -> np.ndarray:
  """The original's ``BackboneTransform`` on a BGR image [H, W, 3] with values in [0, 255] (any
  dtype): float32 RGB [H, W, 3], normalised by :func:`yolact_jax.normalise.normalise` with
  ``kind`` ('resnet' or 'darknet'). The channels are reordered before normalising, which gives
  the original's values (the operations are per element) and keeps every array contiguous."""
  return normalise(cv2.cvtColor(np.ascontiguousarray(image, dtype=np.float32), cv2.COLOR_BGR2RGB),
                   kind)


def photometric_distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The original's ``PhotometricDistort`` on a float32 BGR image (returns a new array).

  Brightness (p=1/2, +U(-32, 32)); then with p=1/2 [contrast, HSV, saturation, hue, BGR],
  else [HSV, saturation, hue, BGR, contrast]. Contrast and saturation multiply by U(0.5, 1.5)
  with p=1/2; hue adds U(-18, 18) degrees with p=1/2 and wraps into [0, 360]. No clipping.
  """
  image = image.astype(np.float32, copy=True)

  def contrast(img):
    if _coin(rng):
      img *= _uniform(rng, 0.5, 1.5)
    return img

  def hsv_jitter(img):
    img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    if _coin(rng):
      img[:, :, 1] *= _uniform(rng, 0.5, 1.5)
    if _coin(rng):
      hue = img[:, :, 0]
      hue += _uniform(rng, -18.0, 18.0)
      hue[hue > 360.0] -= 360.0
      hue[hue < 0.0] += 360.0
    return cv2.cvtColor(img, cv2.COLOR_HSV2BGR)

  if _coin(rng):
    image += _uniform(rng, -32.0, 32.0)
  if _coin(rng):
    image = hsv_jitter(contrast(image))
  else:
    image = contrast(hsv_jitter(image))
  return image


@dataclasses.dataclass(frozen=True)
class _Canvas:
  """The (possibly expanded) image as a lazily built canvas: ``height x width`` filled with the
  mean (the original's Expand fills with the BGR means, ~0 after normalising), with the source
  image pasted at (top, left)."""
  height: int
  width: int
  top: int
  left: int


def _draw_expand(height: int, width: int, rng: np.random.Generator) -> _Canvas:
  """The original's ``Expand`` decision and geometry (p=1/2 expand by U(1, 4))."""
  if _coin(rng):
    return _Canvas(height, width, 0, 0)
  ratio = _uniform(rng, 1.0, 4.0)
  left = _uniform(rng, 0.0, width * ratio - width)
  top = _uniform(rng, 0.0, height * ratio - height)
  return _Canvas(int(height * ratio), int(width * ratio), int(top), int(left))


def _draw_crop(height: int, width: int, boxes: np.ndarray, num_crowds: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
  """The original's ``RandomSampleCrop`` decision on a ``height x width`` canvas.

  As it really behaves: its min-IoU test never rejects (``overlap.min() < min_iou and max_iou <
  overlap.max()`` with max_iou = inf), so the five crop modes behave the same and the IoU is not
  even computed here. It draws ``left = random.uniform(width - w)``, i.e. numpy's
  ``uniform(low=width - w, high=1.0)``: the crop's left edge is uniform between 1 and W - w (not
  0 and W - w); reproduced (likewise for ``top``).

  Args:
    boxes: float64 [n, 4] absolute x1y1x2y2 on the canvas.
  Returns:
    None (no crop) or (rect int64 [4] = x1, y1, x2, y2; keep bool [n]).
  """
  is_crowd = np.zeros(len(boxes), bool)
  if num_crowds > 0:
    is_crowd[-num_crowds:] = True
  centers = (boxes[:, :2] + boxes[:, 2:]) / 2.0
  while True:
    if rng.integers(_NUM_CROP_MODES) == 0:  # mode None: keep the whole canvas
      return None
    for _ in range(_CROP_TRIALS):
      w = _uniform(rng, 0.3 * width, width)
      h = _uniform(rng, 0.3 * height, height)
      if h / w < 0.5 or h / w > 2:
        continue
      left = _uniform(rng, width - w, 1.0)  # numpy.random.uniform(width - w)
      top = _uniform(rng, height - h, 1.0)
      rect = np.array([int(left), int(top), int(left + w), int(top + h)])
      # (the min-IoU test here never rejects: omitted)
      keep = ((rect[0] < centers[:, 0]) & (rect[1] < centers[:, 1])
              & (rect[2] > centers[:, 0]) & (rect[3] > centers[:, 1]))
      if not keep.any() or not (keep & ~is_crowd).any():
        continue
      return rect, keep


def _window_bounds(canvas: _Canvas, rect: np.ndarray | None) -> tuple[int, int, int, int]:
  """``rect`` clamped to the canvas as numpy slicing would (x1, y1, x2, y2)."""
  if rect is None:
    return 0, 0, canvas.width, canvas.height
  x1, x2 = (min(max(int(v), 0), canvas.width) for v in (rect[0], rect[2]))
  y1, y2 = (min(max(int(v), 0), canvas.height) for v in (rect[1], rect[3]))
  return x1, y1, max(x2, x1), max(y2, y1)


def _canvas_window(source: np.ndarray, canvas: _Canvas, bounds: tuple[int, int, int, int],
                   fill, mirror: bool) -> np.ndarray:
  """``canvas[y1:y2, x1:x2]`` (optionally with its columns reversed) as a new contiguous array,
  building only that window.

  The canvas is ``canvas.height x canvas.width`` filled with ``fill``, with ``source`` (h x w or
  h x w x c) pasted at (canvas.top, canvas.left). Reversing the columns of the window equals
  reversing the pasted part and swapping the left/right fill widths, which is how it is done.
  Expand followed by a crop thus never builds the whole expanded canvas (up to 16x the image);
  the result is identical.
  """
  x1, y1, x2, y2 = bounds
  h, w = source.shape[:2]
  top_in, bottom_in = max(y1, canvas.top), min(y2, canvas.top + h)
  left_in, right_in = max(x1, canvas.left), min(x2, canvas.left + w)
  if bottom_in <= top_in or right_in <= left_in:  # the window shows only the fill
    window = np.empty((y2 - y1, x2 - x1) + source.shape[2:], source.dtype)
    window[...] = fill
    return window
  part = source[top_in - canvas.top:bottom_in - canvas.top,
                left_in - canvas.left:right_in - canvas.left]
  part = cv2.flip(np.ascontiguousarray(part), 1) if mirror else np.ascontiguousarray(part)
  top, bottom, left, right = top_in - y1, y2 - bottom_in, left_in - x1, x2 - right_in
  if mirror:
    left, right = right, left
  if top == bottom == left == right == 0:
    return part
  if part.ndim == 3:
    fill = tuple(float(v) for v in np.broadcast_to(fill, (part.shape[2],)))
  return cv2.copyMakeBorder(part, top, bottom, left, right, cv2.BORDER_CONSTANT, value=fill)


def _small_box_keep(boxes: np.ndarray, min_w: float, min_h: float) -> np.ndarray:
  """The original's Resize filter: keep boxes with width > min_w and height > min_h."""
  return ((boxes[:, 2] - boxes[:, 0]) > min_w) & ((boxes[:, 3] - boxes[:, 1]) > min_h)


def train_transform(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                    num_crowds: int, rng: np.random.Generator, max_size: int = 550,
                    kind: str = 'resnet', flags: AugmentConfig = AugmentConfig(),
                    ) -> TransformedSample:
  """The original's training transform (``SSDAugmentation``), in order.

  Args:
    image: uint8 [H, W, 3] BGR.
    masks: uint8 [n, H, W].
    boxes: [n, 4] relative x1y1x2y2.
    labels: int [n], -1 for crowds (the last ``num_crowds`` rows).
    num_crowds: number of crowd rows.
    rng: the only source of randomness.
    max_size: output side S.
    kind: normalisation, 'resnet' or 'darknet'.
    flags: which steps run, and the small-box filter (the config's ``augment`` section).
  Returns:
    TransformedSample (image [S, S, 3] float32 RGB normalised, masks [m, S, S], boxes [m, 4]
    relative, labels [m], num_crowds); m may be smaller than n (crop / filter), possibly 0.

  The crop is ``RandomSampleCrop`` as it really behaves (:func:`_draw_crop`). The small-box
  filter compares ``discard_box_width/height`` (4/550) with widths in 550-pixel units, so it only
  drops degenerate boxes; ``flags.fix_discard_box_units=True`` compares in relative units
  instead.
  """
  height, width = image.shape[:2]
  image = image.astype(np.float32)                                     # ConvertFromInts
  boxes = np.asarray(boxes, np.float64) * [width, height, width, height]  # ToAbsoluteCoords
  labels = np.asarray(labels, np.int32)
  masks = np.asarray(masks, np.uint8)
  if flags.photometric_distort:
    image = photometric_distort(image, rng)

  canvas = _Canvas(height, width, 0, 0)
  if flags.expand:
    canvas = _draw_expand(height, width, rng)
    boxes = boxes + [canvas.left, canvas.top, canvas.left, canvas.top]
  rect = None
  if flags.random_sample_crop and len(boxes):
    crop = _draw_crop(canvas.height, canvas.width, boxes, num_crowds, rng)
    if crop is not None:
      rect, keep = crop
      image_masks = masks[keep]
      boxes, labels = boxes[keep], labels[keep]
      if num_crowds > 0:
        num_crowds = int((labels < 0).sum())
      boxes[:, :2] = np.maximum(boxes[:, :2], rect[:2]) - rect[:2]
      boxes[:, 2:] = np.minimum(boxes[:, 2:], rect[2:]) - rect[:2]
      masks = image_masks

  # RandomMirror's coin, then the window of the (expanded) canvas that the crop keeps, built
  # already mirrored, then Resize. Pad is a no-op.
  mirror = flags.random_mirror and _coin(rng)
  bounds = _window_bounds(canvas, rect)
  win_w, win_h = bounds[2] - bounds[0], bounds[3] - bounds[1]
  if mirror:
    boxes = np.stack([win_w - boxes[:, 2], boxes[:, 1], win_w - boxes[:, 0], boxes[:, 3]], 1)
  image = _canvas_window(image, canvas, bounds, MEANS_BGR, mirror)
  image = cv2.resize(image, (max_size, max_size), interpolation=cv2.INTER_LINEAR)
  resized_masks = np.empty((len(masks), max_size, max_size), np.uint8)
  for index, mask in enumerate(masks):  # = the original's multi-channel cv2.resize
    window = _canvas_window(mask, canvas, bounds, 0, mirror)
    resized_masks[index] = cv2.resize(window, (max_size, max_size),
                                      interpolation=cv2.INTER_LINEAR)
  masks = resized_masks
  boxes = boxes * [max_size / win_w, max_size / win_h, max_size / win_w, max_size / win_h]
  if flags.fix_discard_box_units:
    keep = _small_box_keep(boxes / max_size, flags.discard_box_width, flags.discard_box_height)
  else:
    keep = _small_box_keep(boxes, flags.discard_box_width, flags.discard_box_height)
  masks, boxes, labels = masks[keep], boxes[keep], labels[keep]
  num_crowds = int((labels < 0).sum())
  boxes = boxes / max_size

  return TransformedSample(image=backbone_transform(image, kind), masks=masks,
                           boxes=boxes.astype(np.float32), labels=labels.astype(np.int32),
                           num_crowds=num_crowds)


def eval_transform(image: np.ndarray, boxes: np.ndarray | None = None,
                   labels: np.ndarray | None = None, max_size: int = 550, kind: str = 'resnet',
                   discard_box_width: float = 4 / 550, discard_box_height: float = 4 / 550,
                   ) -> TransformedSample:
  """The original's eval transform (``BaseTransform``).

  float32 -> ``cv2.resize`` to S x S (INTER_LINEAR, aspect ratio not kept) -> normalise. The
  Resize step's small-box filter runs on the RELATIVE boxes here, so GT boxes
  narrower or shorter than 4/550 of the image are removed, as the original's own mAP sees them.

  Args:
    image: uint8 [H, W, 3] BGR.
    boxes: optional [n, 4] relative x1y1x2y2; labels: optional int [n] (-1 crowd).
  Returns:
    TransformedSample with masks None; boxes/labels are the filtered ones (empty if not given).
  """
  resized = cv2.resize(image.astype(np.float32), (max_size, max_size),
                       interpolation=cv2.INTER_LINEAR)
  boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
  labels = np.zeros((0,), np.int32) if labels is None else np.asarray(labels, np.int32)
  keep = _small_box_keep(boxes, discard_box_width, discard_box_height)
  boxes, labels = boxes[keep], labels[keep]
  return TransformedSample(image=backbone_transform(resized, kind), masks=None, boxes=boxes,
                           labels=labels, num_crowds=int((labels < 0).sum()))
