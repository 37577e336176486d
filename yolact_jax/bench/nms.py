"""The NMS section: each NMS rule alone on prepared candidate lists, and inside the whole Detect,
on the same realistic inputs."""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from yolact_jax import detect as detect_lib
from yolact_jax.bench.grid import guarded
from yolact_jax.bench.inputs import reference_detect_inputs, synthetic_detect_inputs
from yolact_jax.bench.timing import TimingOptions, measure_stage

# The rule each NMS kind applies to its ranked candidates.
NMS_RULES = {'fast': detect_lib.fast_nms_keep, 'cross_class': detect_lib.fast_nms_keep,
             'standard': detect_lib.greedy_nms_keep}


def nms_candidates(inputs: dict[str, np.ndarray], kind: str, top_k: int, conf_thresh: float,
                   box_scale: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The ranked candidate lists each NMS rule consumes, prepared as Detect prepares them:
  (boxes, valid) with [B, C, K, 4] / [B, C, K] per class, or [B, K, 4] / [B, K] cross-class;
  'standard' gets pixel boxes (x ``box_scale``) and only scores above ``conf_thresh``."""
  boxes = detect_lib.decode(jnp.asarray(inputs['loc']), jnp.asarray(inputs['priors'])[None])
  fg = jnp.asarray(inputs['conf'])[..., 1:]
  candidate = detect_lib.prior_filter(fg, conf_thresh)
  if kind == 'cross_class':
    ranked, index, valid = detect_lib.top_candidates(jnp.max(fg, -1), candidate, top_k)
    return detect_lib.take_rows(boxes, index), valid
  ranked, index, valid = detect_lib.top_candidates(jnp.swapaxes(fg, -1, -2),
                                                   candidate[:, None, :], top_k)
  cand = detect_lib.take_rows(boxes, index)
  if kind == 'standard':
    return cand * box_scale, valid & (ranked > conf_thresh)
  return cand, valid


def nms_variant(inputs: dict[str, np.ndarray], kind: str, settings: dict[str, Any],
                opts: TimingOptions) -> dict[str, Any]:
  """One NMS kind: its rule alone (``nms_only``) and the whole Detect (``detect``)."""
  rule = NMS_RULES[kind]
  boxes, valid = nms_candidates(inputs, kind, settings['top_k'], settings['conf_thresh'],
                                settings['box_scale'])
  keep_fn = jax.jit(lambda b, v: rule(b, v, settings['iou_thresh']))
  alone, keep = measure_stage('nms_only', keep_fn, (boxes, valid), opts)
  detect_fn = jax.jit(lambda loc, conf, mask, priors: detect_lib.detect(
      loc, conf, mask, priors, nms=kind, **settings))
  args = tuple(jnp.asarray(inputs[k]) for k in ('loc', 'conf', 'coefs', 'priors'))
  whole, dets = measure_stage('detect', detect_fn, args, opts)
  return {'nms': kind, 'candidate_shape': list(boxes.shape[:-1]),
          'candidates_valid': int(np.asarray(valid).sum()),
          'kept_by_nms': int(np.asarray(keep).sum()),
          'detections': np.asarray(dets['num_detections']).tolist(),
          'stages': [alone, whole]}


def run_nms(batch: int, top_k: int, num_classes: int | None, reference_dir: pathlib.Path,
            opts: TimingOptions, log: Callable) -> dict[str, Any]:
  """Every NMS kind on ``batch`` images of the original's head outputs from ``reference_dir``
  (synthetic ones when absent), ``top_k`` candidates per class, the first ``num_classes``
  classes (default all)."""
  inputs = reference_detect_inputs(reference_dir, batch)
  if inputs is None:
    inputs = synthetic_detect_inputs(batch)
  if num_classes is not None and num_classes < inputs['conf'].shape[-1] - 1:
    inputs = dict(inputs, conf=inputs['conf'][..., :num_classes + 1])
  num_classes = inputs['conf'].shape[-1] - 1
  settings = dict(top_k=top_k, conf_thresh=0.05, iou_thresh=0.5, max_detections=100,
                  box_scale=550.0)
  log(f'nms: {num_classes} classes x top {top_k}, batch {batch}, {inputs["source"]}')
  variants = [guarded(lambda: nms_variant(inputs, kind, settings, opts), {'nms': kind}, log)
              for kind in NMS_RULES]
  return {'batch': batch, 'num_classes': num_classes, 'top_k': top_k, 'inputs': inputs['source'],
          'settings': settings, 'variants': variants}
