"""Host-side helpers of inference, numpy only: image checks, the canvas, :class:`Detections`.

These are the parts of :mod:`yolact_jax.predict` that run on the host before and after the
compiled program. They import neither jax nor flax, so that a served artefact
(:mod:`yolact_jax.serving`) can be run without the model code; ``yolact_jax.predict`` re-exports
every public name here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

CHANNEL_ORDERS = ('rgb', 'bgr')
CANVAS_STEP = 128  # an automatic canvas is rounded up to a multiple of this (fewer recompiles)


# ---------------------------------------------------------------------------------------------
# Results


@dataclasses.dataclass(frozen=True)
class Detections:
  """The detections of one image in Detect's order, best class score first (n detections,
  original size h x w).

  boxes [n, 4] int64 pixels x1 y1 x2 y2 (the original's rule: scaled, ordered, clamped to the
  image, truncated; float32, not truncated, with ``cfg.detect.float_boxes``); classes [n] int64
  0-based; class_names: n names; scores [n] float32, the box scores (class scores; with
  ``cfg.detect.rescore_bbox`` the rescored score); mask_scores [n] float32, the mask scores
  (YOLACT++ with ``cfg.detect.rescore_mask``: class score x predicted mask IoU, not sorted and
  not capped at 1; otherwise equal to ``scores``; a keyword, defaulting to ``scores``); masks
  [n, h, w] uint8 in {0, 1}; image_size (h, w).

  Box results rank by ``scores``, mask results by ``mask_scores``; overlays show ``mask_scores``
  (:func:`yolact_jax.visualize.display_detections`).
  """
  boxes: np.ndarray
  classes: np.ndarray
  class_names: tuple[str, ...]
  scores: np.ndarray
  mask_scores: np.ndarray | None = dataclasses.field(default=None, kw_only=True)
  masks: np.ndarray
  image_size: tuple[int, int]

  def __post_init__(self):
    if self.mask_scores is None:
      object.__setattr__(self, 'mask_scores', self.scores)

  def __len__(self) -> int:
    return len(self.scores)

  def select(self, score_threshold: float = 0.0, top_k: int | None = None) -> 'Detections':
    """The detections with score > ``score_threshold`` (0: all), at most the first ``top_k``
    (the original's postprocess filter: on ``scores``, order kept)."""
    keep = np.arange(len(self))
    if score_threshold > 0:
      keep = keep[self.scores > score_threshold]
    return self.take(keep[:top_k])

  def take(self, index: np.ndarray) -> 'Detections':
    """The detections at ``index`` (int array), in that order."""
    index = np.asarray(index, np.int64)
    return Detections(self.boxes[index], self.classes[index],
                      tuple(self.class_names[i] for i in index), self.scores[index],
                      self.masks[index], self.image_size, mask_scores=self.mask_scores[index])


# ---------------------------------------------------------------------------------------------
# Host side: image checks, the canvas, unpacking


def as_rgb_uint8(image: Any, channel_order: str, name: str = 'image') -> np.ndarray:
  """A view of ``image`` as RGB uint8 [h, w, 3].

  Accepted: uint8 arrays of any size, ``[H, W, 3]`` in ``channel_order``, grayscale ``[H, W]``
  or ``[H, W, 1]`` (replicated to three channels, as ``cv2.imread`` in colour mode does), or
  ``[H, W, 4]`` RGBA / BGRA (the alpha channel is dropped, not composited, as ``cv2.imread`` in
  colour mode does). Anything else (another dtype, rank or channel count, an empty image) is a
  ``TypeError`` / ``ValueError`` naming the image (``name``).
  """
  if channel_order not in CHANNEL_ORDERS:
    raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(f'{name}: expected a uint8 image (0..255), got dtype {image.dtype}; '
                    'convert it first, e.g. np.clip(x * 255, 0, 255).astype(np.uint8)')
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f'{name}: expected [H, W, 3] (or grayscale [H, W] / [H, W, 1], or '
                     f'[H, W, 4] with alpha), got shape {image.shape}')
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f'{name}: empty image of shape {image.shape}')
  if image.shape[-1] == 1:
    return np.broadcast_to(image, image.shape[:2] + (3,))
  rgb = image[..., :3]
  return rgb[..., ::-1] if channel_order == 'bgr' else rgb


def round_up(value: int, step: int) -> int:
  return -(-value // step) * step


def fit_canvas(image_sizes: Iterable[Sequence[int]], at_least: tuple[int, int] | None = None,
               step: int = CANVAS_STEP) -> tuple[int, int]:
  """The canvas rule: the largest (h, w) of ``image_sizes`` rounded up to a multiple of ``step``,
  and never smaller than ``at_least`` (a canvas in use only grows).

  The one canvas helper: :class:`Predictor` (growing canvas), the evaluation set's fixed canvas,
  the benchmark, and the comparison with the original (``step=1``: exactly the largest height and
  width). ``image_sizes``: (h, w) pairs, e.g. an int array [N, 2] or ``[im.shape[:2], ...]``.
  """
  sizes = np.asarray([tuple(s)[:2] for s in image_sizes], np.int64).reshape(-1, 2)
  if not len(sizes):
    raise ValueError('no image size to fit a canvas to')
  current = at_least or (0, 0)
  return (max(int(current[0]), round_up(int(sizes[:, 0].max()), step)),
          max(int(current[1]), round_up(int(sizes[:, 1].max()), step)))


def pack_canvas(images: Sequence[np.ndarray], canvas_hw: tuple[int, int], batch_size: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """RGB uint8 images -> canvas [batch_size, Hc, Wc, 3] uint8 and sizes [batch_size, 2] int32.

  Image i sits in the top-left corner of slot i; the rest of the canvas is 0. Empty slots (past
  ``len(images)``) get size (1, 1) so that they compute harmless values.
  """
  if len(images) > batch_size:
    raise ValueError(f'{len(images)} images for a batch of {batch_size}')
  canvas = np.zeros((batch_size,) + tuple(canvas_hw) + (3,), np.uint8)
  sizes = np.ones((batch_size, 2), np.int32)
  for i, image in enumerate(images):
    h, w = image.shape[:2]
    if h > canvas_hw[0] or w > canvas_hw[1]:
      raise ValueError(f'image of size {h}x{w} does not fit the canvas {canvas_hw[0]}x'
                       f'{canvas_hw[1]}; pass a larger canvas_hw (or None to grow it)')
    canvas[i, :h, :w] = image
    sizes[i] = h, w
  return canvas, sizes


def unpack_detections(outputs: dict[str, np.ndarray], image_sizes: np.ndarray, count: int,
                      class_names: Sequence[str], score_threshold: float = 0.0,
                      top_k: int | None = None) -> list[Detections]:
  """Per-image :class:`Detections` from the program's padded outputs (host side).

  Args:
    outputs: numpy ``boxes [B,D,4]`` int (or float) pixels, ``classes [B,D]``, ``scores [B,D]``,
      ``mask_scores [B,D]``, ``valid [B,D]`` (a prefix), ``masks_packed [B,D,Hc,ceil(Wc/8)]``
      uint8 bits (the inference program's outputs).
    image_sizes: [B, 2] (h, w).
    count: the first ``count`` slots are real images.
    score_threshold: keep score > this (0 keeps all, as eval); top_k: keep at most this many.
  """
  results = []
  for b in range(count):
    keep = outputs['valid'][b]
    if score_threshold > 0:
      keep = keep & (outputs['scores'][b] > score_threshold)
    index = np.flatnonzero(keep)[:top_k]
    h, w = int(image_sizes[b, 0]), int(image_sizes[b, 1])
    masks = np.unpackbits(outputs['masks_packed'][b, index, :h], axis=-1, count=w)
    classes = outputs['classes'][b, index].astype(np.int64)
    results.append(Detections(
        boxes=_host_boxes(outputs['boxes'][b, index]),
        classes=classes,
        class_names=tuple(class_names[c] for c in classes),
        scores=outputs['scores'][b, index].astype(np.float32),
        mask_scores=outputs['mask_scores'][b, index].astype(np.float32),
        masks=masks,
        image_size=(h, w)))
  return results


def _host_boxes(boxes: np.ndarray) -> np.ndarray:
  """Pixel boxes as Detections holds them: int64, or float32 for float boxes."""
  return boxes.astype(np.float32 if np.issubdtype(boxes.dtype, np.floating) else np.int64)


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
  """Consecutive lists of ``size`` items (the last one may be shorter)."""
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk
