"""Frames per second of the inference program on given images (``yolact-jax evaluate
--benchmark``): what the original's ``eval.py --benchmark`` times, plus a per-stage breakdown.

    report = benchmark_inference(cfg, variables, images_rgb, batch_size=1, num_images=100)
    report['fps'], report['ms_per_image'], report['stages']['network']['median_ms']

End to end: batches already on the device as uint8 canvases (decoding and the transfer are data
loading, which the original excludes too) through the compiled program of
:mod:`yolact_jax.predict`, outputs copied to the host and unpacked. Each of ``STAGES`` is also
timed as its own jitted program; they cannot fuse across their boundaries, so their sum is
usually a little above the end-to-end time. Wall-clock numbers depend on the machine's load.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from yolact_jax.bench.inputs import cycle_to, make_batches
from yolact_jax.bench.machine import device_description
from yolact_jax.bench.timing import compile_program, summarize_times, time_calls
from yolact_jax.config import YolactConfig

STAGES = ('network', 'detect', 'postprocess', 'host_copy')


# ---------------------------------------------------------------------------------------------
# The inference program split into stages


class InferenceStages:
  """The stages of :class:`yolact_jax.predict.InferenceProgram` (its own stage methods), each
  jitted on its own:

  network(variables, images [B,Hc,Wc,3] uint8, sizes [B,2]) -> {loc, conf, coefs, proto}
    (preprocessing included)
  detect(network_out) -> Detect dict (boxes [B,D,4], classes, scores, coefs, valid, ...)
  postprocess(variables, detections, proto, sizes) -> the program's outputs
    (:func:`yolact_jax.predict.program_outputs`; YOLACT++ mask re-scoring included, which
    reads the mask-IoU network's variables)
  """

  def __init__(self, program: Any, canvas_hw: tuple[int, int]):
    def network(variables, images, sizes):
      return program.network(variables, program.network_input(images, sizes))

    def finish(variables, detections, proto, sizes):
      return program.outputs(detections, proto, sizes, canvas_hw, variables)

    self.network = jax.jit(network)
    self.detect = jax.jit(program.detect)
    self.postprocess = jax.jit(finish)


def _timed_stage(jitted: Any, args: Sequence[Any], repeats: int) -> tuple[dict[str, float], Any]:
  """(``{compile_s: lowering + compile, median_ms, ...}``, one output) of one stage's program."""
  compiled, seconds = compile_program(jitted, *args)
  out = jax.block_until_ready(compiled(*args))
  times = time_calls(lambda: compiled(*args), repeats)
  return {'compile_s': seconds['lower_s'] + seconds['compile_s'], **summarize_times(times)}, out


def time_stages(program: Any, variables: Any, batch: tuple[np.ndarray, np.ndarray, int],
                canvas_hw: tuple[int, int], repeats: int, top_k: int | None
                ) -> dict[str, dict[str, float]]:
  """Per-stage timing on one device-resident batch: {stage: compile_s, median_ms, ...}."""
  from yolact_jax.predict import fetch_detections
  canvas, sizes, count = batch
  stages = InferenceStages(program, canvas_hw)
  images, sizes_dev = jax.device_put(canvas), jax.device_put(sizes)
  report = {}
  report['network'], out = _timed_stage(stages.network, (variables, images, sizes_dev), repeats)
  report['detect'], detections = _timed_stage(stages.detect, (out,), repeats)
  report['postprocess'], outputs = _timed_stage(
      stages.postprocess, (variables, detections, out['proto'], sizes_dev), repeats)
  names = program.cfg.dataset.class_names
  report['host_copy'] = {'compile_s': 0.0, **summarize_times(
      time_calls(lambda: fetch_detections(outputs, sizes, count, names, top_k=top_k),
                 repeats))}
  return report


# ---------------------------------------------------------------------------------------------
# End to end


def benchmark_inference(cfg: YolactConfig, variables: Any, images_rgb: Sequence[np.ndarray],
                        batch_size: int = 1, num_images: int = 100, *, repeats: int = 10,
                        warmup: int = 2, top_k: int | None = 5, dtype: Any = jnp.float32,
                        canvas_hw: tuple[int, int] | None = None, stages: bool = True
                        ) -> dict[str, Any]:
  """Times inference over ``num_images`` images (the list repeated as needed, rounded up to whole
  batches).

  Timed per batch: the program (eval preprocessing, network, Detect/NMS, mask assembly, crop,
  upsampling to the original size, pixel boxes, bit-packing) and the copy of its outputs to the
  host, unpacked into the best ``top_k`` detections per image (the original copies its top_k to
  the CPU; here every detection's packed masks are copied, a superset). ``compile_s`` is the
  program's lowering + compilation; the ``warmup`` batches after it are not counted (the
  original skips its first 2 images). fps = images / total time; the per-batch median is given.

  Args:
    cfg: model config (its detect settings are the NMS used).
    variables: Flax variables or a weights path.
    images_rgb: RGB uint8 [h, w, 3] images (any sizes; one canvas fits them all).
    batch_size: images per compiled call (rounded up to a multiple of the local devices, over
      which every batch is split).
    num_images: images timed (after ``warmup`` untimed batches).
    repeats: calls per stage for the per-stage medians.
    top_k: detections per image unpacked on the host (the original's --top_k, 5).
    dtype: network compute dtype.
    canvas_hw: fixed canvas (default: the images' largest size rounded up).
    stages: also time the stages separately.
  Returns:
    A JSON-friendly dict: fps, ms_per_image, ms_per_batch (median/mean/min/max), compile_s,
    batch_size, num_images, num_batches, canvas_hw, top_k, dtype, config, device,
    num_devices, stages.
  """
  from yolact_jax.predict import Predictor, fetch_detections, fit_canvas
  if batch_size < 1 or num_images < 1:
    raise ValueError(f'batch_size and num_images must be >= 1, got {batch_size}, {num_images}')
  canvas_hw = (tuple(canvas_hw) if canvas_hw is not None
               else fit_canvas([image.shape[:2] for image in images_rgb]))
  predictor = Predictor(cfg, variables, max_batch=batch_size, canvas_hw=canvas_hw, dtype=dtype)
  program, variables, batch_size = predictor.program, predictor.variables, predictor.max_batch
  num_batches = math.ceil(num_images / batch_size)
  batches = make_batches(cycle_to(images_rgb, min(num_batches * batch_size,
                                                  math.ceil(len(images_rgb) / batch_size)
                                                  * batch_size)), batch_size, canvas_hw)
  on_device = [(*predictor.place_batch(c, s), s, n) for c, s, n in batches]
  jax.block_until_ready([(c, s) for c, s, _, _ in on_device])

  compiled, compile_times = compile_program(program.from_images, variables, *on_device[0][:2])
  compile_s = compile_times['lower_s'] + compile_times['compile_s']
  names = cfg.dataset.class_names

  def run(index: int) -> list[Any]:
    canvas, sizes, sizes_host, count = on_device[index % len(on_device)]
    return fetch_detections(compiled(variables, canvas, sizes), sizes_host, count, names,
                            top_k=top_k)

  # warm-up on the first batches, then the timed calls from the first batch again
  order = itertools.chain(range(warmup), range(num_batches))
  durations = time_calls(lambda: run(next(order)), num_batches, warmup, wait=None)
  timed_images = num_batches * batch_size
  total = sum(durations)
  report = {
      'config': cfg.name,
      'batch_size': batch_size,
      'num_images': timed_images,
      'num_batches': num_batches,
      'distinct_images': len(images_rgb),
      'canvas_hw': list(canvas_hw),
      'top_k': top_k,
      'dtype': jnp.dtype(dtype).name,
      'nms': cfg.detect.nms,
      'compile_s': compile_s,
      'warmup_batches': warmup,
      'total_s': total,
      'fps': timed_images / total,
      'ms_per_image': 1000.0 * total / timed_images,
      'ms_per_batch': summarize_times(durations),
      'device': device_description(),
      'num_devices': predictor.num_devices,
  }
  if stages:
    stage_report = time_stages(program, variables, batches[0], canvas_hw, repeats, top_k)
    for values in stage_report.values():
      values['ms_per_image'] = values['median_ms'] / batch_size
    report['stages'] = stage_report
    report['stages_sum_ms_per_image'] = sum(v['ms_per_image'] for v in stage_report.values())
  return report


def format_benchmark(report: dict[str, Any]) -> str:
  """A few lines: the original's 'Average: X fps, Y ms' and the stage table."""
  lines = [f'Average: {report["fps"]:.2f} fps, {report["ms_per_image"]:.2f} ms per image '
           f'({report["num_images"]} images, batch {report["batch_size"]}, canvas '
           f'{report["canvas_hw"][0]}x{report["canvas_hw"][1]}, {report["num_devices"]} x '
           f'{report["device"]["device_kind"]})',
           f'compile: {report["compile_s"]:.2f} s (not included)']
  if 'stages' in report:
    lines.append(f'{"stage":12}{"ms/batch":>10}{"ms/image":>10}{"compile s":>11}')
    for name, values in report['stages'].items():
      lines.append(f'{name:12}{values["median_ms"]:>10.2f}{values["ms_per_image"]:>10.2f}'
                   f'{values["compile_s"]:>11.2f}')
  return '\n'.join(lines)
