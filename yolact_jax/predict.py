"""Inference API: uint8 images in, one :class:`Detections` per image out (numpy): boxes, classes,
class names, box and mask scores, and masks at each image's own size.

    predictor = Predictor(load_config('yolact_base'), 'yolact_base_54_800000.pth')
    results = predictor(images, channel_order='rgb')       # results[0].boxes, .masks, ...

``channel_order`` ('rgb' or 'bgr') is a REQUIRED keyword, never guessed: arrays from
PIL/matplotlib/imageio are RGB, from ``cv2.imread`` / ``cv2.VideoCapture`` BGR (what else is
accepted: :func:`as_rgb_uint8`). The host packs a batch into the top-left corners of a fixed
canvas [B, Hc, Wc, 3] with the sizes [B, 2]; ONE jit-compiled program (:class:`InferenceProgram`,
cached per config and dtype) runs preprocessing, network, Detect, postprocess, YOLACT++ re-scoring
and bit packing without a host round trip. Resizes read each image through taps built from its
traced size, so one program serves any mix of sizes up to the canvas (:func:`fit_canvas`; a
growing canvas compiles once per growth, and the masks' cost grows with its area).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yolact_jax import parallel
from yolact_jax.anchors import make_priors
from yolact_jax.config import YolactConfig, validate
from yolact_jax.detect import detect_from_logits, detect_kwargs
from yolact_jax.host import (  # noqa: F401  (re-exported: the public host-side names)
    CANVAS_STEP, CHANNEL_ORDERS, Detections, as_rgb_uint8, chunks as _chunks, fit_canvas,
    pack_canvas, round_up, unpack_detections)
from yolact_jax.model.maskiou import predict_mask_iou
from yolact_jax.model.yolact import Yolact
from yolact_jax.normalise import normalise
from yolact_jax.postprocess import postprocess, rescore
from yolact_jax.resize import resize_batch

DEFAULT_MAX_BATCH = 4


def fetch_detections(outputs: dict[str, Any], image_sizes: np.ndarray, count: int,
                     class_names: Sequence[str], score_threshold: float = 0.0,
                     top_k: int | None = None) -> list[Detections]:
  """The program's device outputs copied to the host and unpacked (:func:`unpack_detections`).
  """
  return unpack_detections(jax.device_get(outputs), image_sizes, count, class_names,
                           score_threshold, top_k)


# ---------------------------------------------------------------------------------------------
# Device side: preprocessing (pure functions of traced sizes)


def preprocess(images: jnp.ndarray, image_sizes: jnp.ndarray, max_size: int,
               transform: str, resize: str = 'float') -> jnp.ndarray:
  """The eval transform on a canvas batch: uint8 RGB [B, Hc, Wc, 3], sizes [B, 2] (h, w) ->
  float32 network input [B, max_size, max_size, 3] (RGB, normalised).

  Each image is resized from its own (h, w) to ``max_size x max_size`` (aspect ratio not kept) by
  ``resize`` (:mod:`yolact_jax.resize`: 'float' as the original's ``FastBaseTransform``, 'uint8'
  as mmdetection's), then normalised by :func:`yolact_jax.normalise.normalise`, the training
  transform's normalisation too."""
  return normalise(resize_batch(images, image_sizes, (max_size, max_size), resize), transform)


# ---------------------------------------------------------------------------------------------
# The compiled program


# The keys of the inference program's output dict (:func:`program_outputs`).
OUTPUT_KEYS = ('boxes', 'classes', 'scores', 'mask_scores', 'valid', 'num_detections',
               'masks_packed')


def program_outputs(results: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
  """The inference program's output dict from :func:`yolact_jax.postprocess.postprocess`'s
  (after :func:`yolact_jax.postprocess.rescore`): ``boxes [B,D,4]`` int32 pixels (float32 with
  ``detect.float_boxes``),
  ``classes [B,D]``, ``scores [B,D]`` box scores, ``mask_scores [B,D]`` mask scores (the
  results' own, else equal to ``scores``), ``valid [B,D]``, ``num_detections [B]``,
  ``masks_packed [B,D,Hc,ceil(Wc/8)]`` uint8 (the binary masks' bits along the width: 8x less
  to copy to the host)."""
  return {
      'boxes': results['boxes_px'],
      'classes': results['classes'],
      'scores': results['scores'],
      'mask_scores': results.get('mask_scores', results['scores']),
      'valid': results['valid'],
      'num_detections': results['num_detections'],
      'masks_packed': pack_mask_bits(results['masks']),
  }


def pack_mask_bits(masks: jnp.ndarray) -> jnp.ndarray:
  """Binary masks [..., W] -> uint8 [..., ceil(W / 8)], the bits along the width, most
  significant first (``np.packbits(axis=-1)``)."""
  return jnp.packbits(masks, axis=-1)


class InferenceProgram:
  """The jit-compiled inference of one (config, dtype); ``trace_count`` counts compilations.

  ``from_images(variables, images [B,Hc,Wc,3] uint8 RGB, image_sizes [B,2])`` and
  ``from_network_input(variables, net_input [B,S,S,3] float, image_sizes [B,2], canvas_hw)``
  (the same program after preprocessing) both return :func:`program_outputs`' dict of device
  arrays. The stages (``network_input``, ``network``, ``detect``, ``outputs``) are plain methods,
  which ``yolact_jax.bench.fps`` also jits one by one.

  ``rescores`` is True for a YOLACT++ config with mask re-scoring (``cfg.model.use_maskiou`` and
  ``cfg.detect.rescore_mask``): ``outputs`` then needs the variables (the mask-IoU network's
  parameters are ``variables['params']['maskiou_net']``).
  """

  def __init__(self, cfg: YolactConfig, dtype: Any = jnp.float32):
    self.cfg = cfg
    self.dtype = dtype
    self.model = Yolact(cfg.model, num_classes=cfg.num_classes, dtype=dtype)
    self.rescores = bool(cfg.model.use_maskiou and cfg.detect.rescore_mask)
    self.priors = make_priors(cfg)
    self.detect_kwargs = detect_kwargs(cfg)
    self.trace_count = 0
    self.from_images = jax.jit(self._from_images)
    self.from_network_input = jax.jit(self._from_network_input, static_argnames='canvas_hw')

  def network_input(self, images: jnp.ndarray, image_sizes: jnp.ndarray) -> jnp.ndarray:
    """uint8 RGB canvas [B, Hc, Wc, 3] -> normalised [B, S, S, 3] (:func:`preprocess`)."""
    backbone = self.cfg.model.backbone
    return preprocess(images, image_sizes, self.cfg.max_size, backbone.transform,
                      backbone.input_resize)

  def network(self, variables: Any, net_input: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """The network in eval mode: {loc, conf, coefs, proto}."""
    out = self.model.apply(variables, net_input, train=False)
    return {k: out[k] for k in ('loc', 'conf', 'coefs', 'proto')}

  def detect(self, out: dict[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """Detect on the network's outputs (boxes, classes, scores, coefs, valid, ...)."""
    return detect_from_logits(out['loc'], out['conf'], out['coefs'], self.priors,
                              **self.detect_kwargs)

  def mask_iou(self, variables: Any, masks: jnp.ndarray) -> jnp.ndarray:
    """The mask-IoU network: soft masks [N, Hp, Wp] -> predicted IoU [N, C - 1] (YOLACT++)."""
    return predict_mask_iou(variables.get('params'), masks, self.cfg.model, self.cfg.num_classes,
                            self.dtype)

  def outputs(self, detections: dict[str, jnp.ndarray], proto: jnp.ndarray,
              image_sizes: jnp.ndarray, canvas_hw: tuple[int, int],
              variables: Any = None) -> dict[str, jnp.ndarray]:
    """Postprocess on the canvas, then mask re-scoring -> :func:`program_outputs`.

    ``variables`` are needed only when ``rescores`` (YOLACT++); else they may be None.
    """
    results = postprocess(detections, proto, image_sizes, canvas_hw,
                          float_boxes=self.cfg.detect.float_boxes)
    predict_iou = None
    if self.rescores:
      if variables is None:
        raise ValueError('this config rescores masks (cfg.model.use_maskiou and '
                         'cfg.detect.rescore_mask): pass the variables to outputs()')
      predict_iou = functools.partial(self.mask_iou, variables)
    return program_outputs(rescore(results, predict_iou, self.cfg.detect.rescore_bbox))

  def _detections(self, variables, net_input, image_sizes, canvas_hw):
    out = self.network(variables, net_input)
    return self.outputs(self.detect(out), out['proto'], image_sizes, canvas_hw, variables)

  def _from_images(self, variables, images, image_sizes):
    self.trace_count += 1  # runs only while tracing
    net_input = self.network_input(images, image_sizes)
    return self._detections(variables, net_input, image_sizes, images.shape[1:3])

  def _from_network_input(self, variables, net_input, image_sizes, canvas_hw):
    self.trace_count += 1
    return self._detections(variables, net_input, jnp.asarray(image_sizes, jnp.int32),
                            tuple(canvas_hw))


@functools.lru_cache(maxsize=16)
def _cached_program(cfg: YolactConfig, dtype_name: str) -> InferenceProgram:
  return InferenceProgram(cfg, jnp.dtype(dtype_name))


def inference_program(cfg: YolactConfig, dtype: Any = jnp.float32) -> InferenceProgram:
  """The process-wide :class:`InferenceProgram` of ``cfg`` and ``dtype``."""
  return _cached_program(cfg, jnp.dtype(dtype).name)


# ---------------------------------------------------------------------------------------------
# Public API


def resolve_variables(variables: Any, cfg: YolactConfig) -> Any:
  """Flax variables from variables themselves or a path (``.pth``, weights/run directory)."""
  if isinstance(variables, (str, os.PathLike)):
    from yolact_jax.checkpoint.io import load_weights
    return load_weights(variables, cfg)
  if not isinstance(variables, dict) or 'params' not in variables:
    raise TypeError('variables must be Flax variables ({"params", "batch_stats"}) or a path to a '
                    f'.pth file or weights directory, got {type(variables).__name__}')
  return variables


class Predictor:
  """YOLACT inference with fixed compiled shapes: ``predictor(images, channel_order=...)``.

  Args:
    cfg: the model config (``load_config('yolact_base')``).
    variables: Flax variables, or a path to an original ``.pth`` / a weights directory.
    max_batch: images per compiled call; every call is padded to this batch size.
    canvas_hw: fixed (Hc, Wc) that every image must fit, or None to grow it as needed.
    nms: override ``cfg.detect.nms`` ('fast', 'cross_class', 'standard').
    dtype: network compute dtype (float32 default; bfloat16 on accelerators).
    devices: the devices a batch is split over (default: every local device); the variables
      are replicated on them and ``max_batch`` is rounded up to a multiple of their number, so
      one call is one program over all of them.
  """

  def __init__(self, cfg: YolactConfig, variables: Any, *, max_batch: int = DEFAULT_MAX_BATCH,
               canvas_hw: tuple[int, int] | None = None, nms: str | None = None,
               dtype: Any = jnp.float32, devices: Sequence[Any] | None = None):
    if nms is not None:
      cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, nms=nms))
      validate(cfg)
    if max_batch < 1:
      raise ValueError(f'max_batch must be >= 1, got {max_batch}')
    devices = list(jax.local_devices() if devices is None else devices)
    self.mesh = parallel.data_mesh(devices) if len(devices) > 1 else None
    self.cfg = cfg
    self.max_batch = -(-int(max_batch) // len(devices)) * len(devices)
    self.fixed_canvas = canvas_hw is not None
    self.canvas_hw = tuple(int(v) for v in canvas_hw) if canvas_hw is not None else None
    self.program = inference_program(cfg, dtype)
    variables = resolve_variables(variables, cfg)
    self.variables = (jax.device_put(variables, devices[0]) if self.mesh is None
                      else jax.device_put(variables, parallel.replicated(self.mesh)))

  @property
  def num_devices(self) -> int:
    return 1 if self.mesh is None else parallel.num_replicas(self.mesh)

  def place_batch(self, canvas: np.ndarray, sizes: np.ndarray) -> tuple[Any, Any]:
    """The batch on the devices: split along the batch over the mesh (one device: as is)."""
    if self.mesh is None:
      return canvas, sizes
    sharding = parallel.batch_sharding(self.mesh)
    return jax.device_put(canvas, sharding), jax.device_put(sizes, sharding)

  @property
  def class_names(self) -> tuple[str, ...]:
    return self.cfg.dataset.class_names

  def _fit_canvas(self, images: Sequence[np.ndarray]) -> tuple[int, int]:
    if not self.fixed_canvas:  # (a fixed canvas: pack_canvas reports an image that does not fit)
      self.canvas_hw = fit_canvas([image.shape[:2] for image in images], self.canvas_hw)
    return self.canvas_hw

  def stream(self, images: Iterable[Any], *, channel_order: str, score_threshold: float = 0.0,
             top_k: int | None = None) -> Iterator[Detections]:
    """Detections for each image of an iterable (e.g. video frames), in order.

    Batches of ``max_batch`` are dispatched one ahead of the host-side unpacking, so the device
    works on batch k + 1 while the host converts batch k.
    """
    pending = None
    index = 0
    for chunk in _chunks(images, self.max_batch):
      rgb = [as_rgb_uint8(image, channel_order, f'image {index + i}')
             for i, image in enumerate(chunk)]
      index += len(chunk)
      canvas, sizes = pack_canvas(rgb, self._fit_canvas(rgb), self.max_batch)
      outputs = self.program.from_images(self.variables, *self.place_batch(canvas, sizes))
      if pending is not None:
        yield from self._unpack(*pending, score_threshold, top_k)
      pending = (outputs, sizes, len(chunk))
    if pending is not None:
      yield from self._unpack(*pending, score_threshold, top_k)

  def _unpack(self, outputs, sizes, count, score_threshold, top_k) -> list[Detections]:
    return fetch_detections(outputs, sizes, count, self.class_names, score_threshold, top_k)

  def __call__(self, images: Sequence[Any], *, channel_order: str, score_threshold: float = 0.0,
               top_k: int | None = None) -> list[Detections]:
    """Detections for a list of images (accepted arrays: :func:`as_rgb_uint8`).

    ``channel_order`` is required: 'rgb' or 'bgr'. ``score_threshold`` (keep ``scores`` > it;
    0 keeps all) and ``top_k`` (the first ones, in Detect's order) are filters as
    :meth:`Detections.select`; the defaults return every detection, as eval does. (Overlays
    pick by the display score: :func:`yolact_jax.visualize.display_detections`.)
    A 4-D uint8 array [B, H, W, C] is taken as a list of B images.
    """
    if isinstance(images, np.ndarray) and images.ndim < 4:
      raise TypeError(f'expected a list of images, got one array of shape {images.shape}; '
                      'for a single image pass [image]')
    return list(self.stream(images, channel_order=channel_order,
                            score_threshold=score_threshold, top_k=top_k))

  def predict_network_input(self, net_input: Any, image_sizes: Any,
                            canvas_hw: tuple[int, int] | None = None, *,
                            score_threshold: float = 0.0,
                            top_k: int | None = None) -> list[Detections]:
    """The program after preprocessing: already normalised input [B, S, S, 3] (NHWC, RGB) with
    the original sizes [B, 2] (h, w) of the images it came from; masks come out at those sizes.
    ``canvas_hw`` defaults to the largest size (each new canvas compiles once)."""
    sizes = np.asarray(image_sizes, np.int32).reshape(-1, 2)
    if canvas_hw is None:
      canvas_hw = (int(sizes[:, 0].max()), int(sizes[:, 1].max()))
    outputs = self.program.from_network_input(self.variables, jnp.asarray(net_input), sizes,
                                              canvas_hw=tuple(canvas_hw))
    return self._unpack(outputs, sizes, len(sizes), score_threshold, top_k)


def predict(images: Sequence[Any], cfg: YolactConfig, variables: Any, *, channel_order: str,
            max_batch: int | None = None, canvas_hw: tuple[int, int] | None = None,
            nms: str | None = None, dtype: Any = jnp.float32, score_threshold: float = 0.0,
            top_k: int | None = None) -> list[Detections]:
  """One-shot inference: ``Predictor(cfg, variables, ...)(images, channel_order=...)``.

  ``max_batch`` defaults to min(len(images), 8). For repeated calls build a :class:`Predictor`
  once (weights given as a path are loaded on every call here).
  """
  if max_batch is None:
    max_batch = max(1, min(len(images), 8))
  predictor = Predictor(cfg, variables, max_batch=max_batch, canvas_hw=canvas_hw, nms=nms,
                        dtype=dtype)
  return predictor(images, channel_order=channel_order, score_threshold=score_threshold,
                   top_k=top_k)
