"""The inference section: network, Detect per NMS variant, postprocess and end to end, per
(preset, batch, dtype)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolact_jax import detect as detect_lib
from yolact_jax.anchors import make_priors
from yolact_jax.bench.grid import DTYPES, Case, guarded
from yolact_jax.bench.inputs import random_network_input, random_uint8_images
from yolact_jax.bench.timing import TimingOptions, device_peak_bytes, max_rss_bytes, measure_stage
from yolact_jax.config import YolactConfig, get_config
from yolact_jax.model.variables import init_variables
from yolact_jax.model.yolact import Yolact
from yolact_jax.postprocess import postprocess
from yolact_jax.predict import InferenceProgram


def _detect_stages(cfg: YolactConfig, raw: dict, nms_kinds: Sequence[str], opts: TimingOptions
                   ) -> tuple[list[dict], dict]:
  """Detect timed once per NMS kind on the network's outputs ``raw``: (records, the detections
  of the preset's own NMS, or of the first kind when that is not among them)."""
  priors = jnp.asarray(make_priors(cfg))
  stages, dets = [], None
  for kind in nms_kinds:
    kwargs = dict(detect_lib.detect_kwargs(cfg), nms=kind)
    fn = jax.jit(lambda loc, conf, mask, kw=kwargs: detect_lib.detect_from_logits(
        loc, conf, mask, priors, **kw))
    record, out = measure_stage(f'detect_{kind}', fn, (raw['loc'], raw['conf'], raw['coefs']),
                                opts)
    record['num_detections'] = np.asarray(out['num_detections']).tolist()
    stages.append(record)
    if kind == cfg.detect.nms or dets is None:
      dets = out
  return stages, dets


# network: backbone, FPN, ProtoNet, head (eval mode); detect: Detect per NMS kind (softmax,
# decode, per-class top-k, NMS, global top-D); postprocess: mask assembly, crop, bilinear resize
# inside the canvas, pixel boxes; end_to_end: network input -> all of these + bit-packed masks,
# copied to the host (the original's eval.py --benchmark scope); end_to_end_uint8: the same from
# uint8 images (the on-device resize and normalisation included).
INFERENCE_STAGES = ('network', 'detect', 'postprocess', 'end_to_end', 'end_to_end_uint8')


def inference_case(preset: str, batch: int, dtype: str, image_hw: tuple[int, int],
                   nms_kinds: Sequence[str], opts: TimingOptions,
                   stages: Sequence[str] = INFERENCE_STAGES) -> dict[str, Any]:
  """The inference ``stages`` (``INFERENCE_STAGES``; the network always, Detect also when the
  postprocess is asked for: it is the postprocess's input) of one (preset, batch, dtype) on
  ``image_hw`` images."""
  cfg = get_config(preset)
  model = Yolact(cfg.model, num_classes=cfg.num_classes, dtype=DTYPES[dtype])
  variables = init_variables(cfg, seed=0)
  net_input = jnp.asarray(random_network_input(cfg, batch))
  image_sizes = jnp.asarray(np.tile(np.asarray(image_hw, np.int32), (batch, 1)))

  network = jax.jit(lambda v, x: model.apply(v, x, train=False))
  record, raw = measure_stage('network', network, (variables, net_input), opts)
  records = [record]
  if 'detect' in stages or 'postprocess' in stages:
    detect_stages, dets = _detect_stages(cfg, raw, nms_kinds, opts)
    records += detect_stages
  if 'postprocess' in stages:
    post = jax.jit(lambda d, proto, sizes: postprocess(d, proto, sizes, tuple(image_hw)))
    record, _ = measure_stage('postprocess', post, (dets, raw['proto'], image_sizes), opts)
    records.append(record)
  if {'end_to_end', 'end_to_end_uint8'} & set(stages):
    program = InferenceProgram(cfg, DTYPES[dtype])
  if 'end_to_end' in stages:
    record, _ = measure_stage('end_to_end', program.from_network_input,
                              (variables, net_input, image_sizes), opts,
                              static={'canvas_hw': tuple(image_hw)}, after=jax.device_get)
    records.append(record)
  if 'end_to_end_uint8' in stages:
    images = jnp.asarray(random_uint8_images(batch, image_hw))
    record, _ = measure_stage('end_to_end_uint8', program.from_images,
                              (variables, images, image_sizes), opts, after=jax.device_get)
    records.append(record)
  return {'preset': preset, 'input_size': cfg.max_size, 'batch': batch, 'dtype': dtype,
          'image_hw': list(image_hw), 'detect_nms': cfg.detect.nms, 'stages': records,
          'max_rss_bytes': max_rss_bytes(), 'device_peak_bytes': device_peak_bytes()}


def run_inference(cases: Sequence[Case], image_hw: tuple[int, int], nms_kinds: Sequence[str],
                  opts: TimingOptions, log: Callable,
                  stages: Sequence[str] = INFERENCE_STAGES) -> list[dict]:
  """:func:`inference_case` for every case; a failed case is recorded with its error."""
  results = []
  for preset, batch, dtype in cases:
    log(f'inference {preset} batch {batch} {dtype}')
    results.append(guarded(lambda: inference_case(preset, batch, dtype, image_hw, nms_kinds,
                                                  opts, stages),
                           {'preset': preset, 'batch': batch, 'dtype': dtype}, log))
  return results
