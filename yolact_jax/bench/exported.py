"""The exported StableHLO program beside the live one (``yolact-jax benchmark --only exported``).

For each float32 inference case: the program exported once for this process's platform and the
CPU (``jax.export``, serialized and read back through :func:`yolact_jax.serving.load`), then on
uint8 images of ``image_hw``: the live :class:`~yolact_jax.predict.Predictor` and the loaded
artefact timed the same way (images in, ``Detections`` out, on the default device), and the
artefact's detections on the default device matched against the same artefact run on the CPU
(class + box IoU >= 0.9; on a CPU-only machine the comparison is with the live program). On a
GPU this is the GPU check's "same detections as on the CPU" and latency of the served program.
"""

from __future__ import annotations

import pathlib
import tempfile
from typing import Any, Callable, Sequence

import jax
import numpy as np

from yolact_jax.bench.grid import Case, guarded
from yolact_jax.bench.inputs import random_uint8_images
from yolact_jax.bench.timing import TimingOptions, summarize_times, time_calls

MATCH_IOU = 0.9


def _as_results(detections) -> list[dict[str, np.ndarray]]:
  from yolact_jax.compare.outputs import ours_result
  return [ours_result(d) for d in detections]


def agreement(ours, reference) -> dict[str, Any]:
  """Detections matched (class + box IoU >= ``MATCH_IOU``) and their mask IoU, over images."""
  from yolact_jax.compare.outputs import compare_detections, summarize_detection_comparison
  return summarize_detection_comparison(
      [compare_detections(a, b, MATCH_IOU) for a, b in zip(_as_results(ours),
                                                           _as_results(reference))])


def exported_case(preset: str, batch: int, image_hw: tuple[int, int], opts: TimingOptions
                  ) -> dict[str, Any]:
  """Live vs exported latency and the exported program's device-vs-CPU agreement, one case."""
  from yolact_jax import serving
  from yolact_jax.config import get_config
  from yolact_jax.model.variables import init_variables
  from yolact_jax.predict import Predictor
  from yolact_jax.serving.export import export_stablehlo, make_spec
  from yolact_jax.serving.stablehlo_runtime import current_platform
  cfg = get_config(preset)
  variables = jax.device_get(init_variables(cfg, seed=0))
  images = list(random_uint8_images(batch, image_hw))
  platform = current_platform()
  platforms = (platform,) if platform == 'cpu' else (platform, 'cpu')
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / f'{preset}.stablehlo'
    export_stablehlo(make_spec(cfg, canvas_hw=image_hw, batch=batch), variables, path,
                     platforms=platforms)
    served = serving.load(path)
    live = Predictor(cfg, variables, max_batch=batch, canvas_hw=image_hw)
    record = {'preset': preset, 'batch': batch, 'dtype': 'float32', 'image_hw': list(image_hw),
              'platform': platform, 'artefact_platforms': list(platforms)}
    for name, model in (('live', live), ('exported', served)):
      times = time_calls(lambda m=model: m(images, channel_order='rgb'), opts.repeats,
                         opts.warmup, opts.max_seconds)
      record[name] = summarize_times(times)
    device_dets = served(images, channel_order='rgb')
    if platform == 'cpu':
      record['reference'] = 'the live program'
      record['agreement'] = agreement(device_dets, live(images, channel_order='rgb'))
    else:
      cpu = jax.devices('cpu')[0]
      with jax.default_device(cpu):
        on_cpu = serving.load(path)(images, channel_order='rgb')
      record['reference'] = 'the same artefact on the CPU'
      record['agreement'] = agreement(device_dets, on_cpu)
  return record


def run_exported(cases: Sequence[Case], image_hw: tuple[int, int], opts: TimingOptions,
                 log: Callable) -> list[dict]:
  """:func:`exported_case` for every float32 case (the artefact is exported in float32 here)."""
  results = []
  for preset, batch, dtype in cases:
    if dtype != 'float32':
      continue
    log(f'exported {preset} batch {batch}')
    results.append(guarded(lambda: exported_case(preset, batch, image_hw, opts),
                           {'preset': preset, 'batch': batch, 'dtype': dtype}, log))
  return results
