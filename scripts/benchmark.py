"""Benchmarks of yolact-jax: inference stages, NMS variants, the train step and FLOPs.

    .venv/bin/python scripts/benchmark.py                       # CPU-sized default subset
    python scripts/benchmark.py --grid full                     # every preset x batch x dtype (GPU)
    python scripts/benchmark.py --only nms --repeats 50
    python scripts/benchmark.py --presets yolact_base --batch-sizes 1,8 --dtypes float32,bfloat16

Writes ``--out`` (JSON, default ``results/benchmark_<machine>.json``) and a markdown table beside
it (same name, ``.md``).

How things are timed (the same everywhere)
------------------------------------------
* Each stage is its own ``jax.jit`` program. It is lowered and compiled explicitly first, so the
  compile time (``lower_s`` + ``compile_s``) is reported apart from the run time and never enters
  it. No persistent compilation cache is enabled here, so compile times are cold.
* Then ``--warmup`` untimed calls, then up to ``--repeats`` timed calls (fewer if a stage has run
  for ``--max-seconds`` already, but at least ``MIN_TIMED_RUNS``). Each timed call ends with
  ``jax.block_until_ready`` on its outputs, so the device work is inside the timer. Reported:
  median, p10, p90, mean, min (ms) and the number of runs.
* Weights are random (seeded). Every program has fixed shapes, so its cost does not depend on the
  values; Detect's input is the random network's own output (inference section) or realistic
  score maps (NMS section).

Sections (``--only``)
---------------------
``inference``  per (preset, batch, dtype): ``network`` (backbone, FPN, ProtoNet, head; eval mode),
               ``detect_<nms>`` for each NMS variant (softmax, decode, per-class top-k, NMS,
               global top-D), ``postprocess`` (mask assembly, crop, bilinear resize to the image
               size inside the canvas, pixel boxes), ``end_to_end`` (network input ->
               network + Detect + postprocess + bit-packed masks, outputs copied to the host: the
               scope of the original's ``eval.py --benchmark``, which excludes data loading and
               the input transform) and ``end_to_end_uint8`` (the same from uint8 images,
               including the on-device resize and normalisation). Images are ``--image-hw``.
``nms``        Fast NMS vs cross-class Fast NMS vs standard (greedy) NMS on C classes x top K
               (80 x 200): the NMS rule alone on prepared ranked candidate lists
               (``nms_only``) and the whole Detect (``detect``). Inputs: the original's raw head
               outputs ``raw.npz`` from the reference folder when present (``--reference-dir``),
               otherwise synthetic clustered boxes with peaked scores.
``train``      the jitted, donated train step (forward, loss, backward, SGD) on a synthetic
               batch: images/s, compile time and memory. Memory: on GPU the device's
               ``peak_bytes_in_use`` after the runs (a process-wide high-water mark); on every
               backend the compiled executable's ``memory_analysis()`` (argument + output + temp
               - alias bytes: what the program needs resident) and the process max RSS.
``convgrad``   (opt-in) forward, input-gradient and weight-gradient time of the network's
               typical convolutions, each alone, with XLA's convolution and with the network's
               (``yolact_jax.model.conv``): where a train step's time goes.
``flops``      XLA's cost analysis (``compiled.cost_analysis()['flops']``) of each timed
               program, achieved FLOP/s = flops / median time, and the fraction of the device's
               peak. Convention: one multiply-add = 2 FLOPs (XLA counts it so; a 64x64 @ 64x64
               matmul reports 2 * 64**3). Peak: ``--peak-tflops``, else a table of known GPUs
               (dense tensor-core bf16, non-tensor FP32), else for a CPU
               cores x clock x FLOPs/cycle (see :func:`cpu_peak_gflops`). A large matmul is also
               timed (``matmul_probe``) as a practical ceiling of this machine.

The JSON also records the machine (jax version, device kind, CPU model, cores, load average at
start and end, date). On a shared machine timings are noisy: compare runs by their load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import re
import resource
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Sequence

import numpy as np

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(PROJECT_ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from yolact_jax import detect as detect_lib  # noqa: E402
from yolact_jax import train_step as ts  # noqa: E402
from yolact_jax.anchors import make_priors  # noqa: E402
from yolact_jax.benchmarking import MIN_TIMED_RUNS, summarize_times, time_calls  # noqa: E402,F401
from yolact_jax.config import YolactConfig, get_config  # noqa: E402
from yolact_jax.model.shapes import feature_sizes, proto_size  # noqa: E402
from yolact_jax.machine import cpu_info, git_commit  # noqa: E402
from yolact_jax.model.yolact import Yolact  # noqa: E402
from yolact_jax.postprocess import postprocess  # noqa: E402
from yolact_jax.predict import InferenceProgram  # noqa: E402

SECTIONS = ('inference', 'nms', 'train', 'flops', 'convgrad')
DEFAULT_SECTIONS = ('inference', 'nms', 'train', 'flops')

# Representative convolutions of yolact_resnet50 / yolact_base at 550 px (per image):
# (name, input h=w, in channels, out channels, kernel, stride).
CONVGRAD_CASES = (
    ('stem 7x7/2 3->64', 550, 3, 64, 7, 2),
    ('layer1 3x3 64->64', 138, 64, 64, 3, 1),
    ('layer2 downsample 1x1/2 256->512', 138, 256, 512, 1, 2),
    ('FPN/ProtoNet 3x3 256->256 @P3', 69, 256, 256, 3, 1),
    ('ProtoNet 3x3 256->256 after x2 upsample', 138, 256, 256, 3, 1),
)
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# (preset, batch, dtype) grids. 'cpu' is sized for a few-core CPU; 'full' is the grid.
CPU_INFERENCE_CASES = (('yolact_resnet50', 1, 'float32'), ('yolact_cpu', 1, 'float32'),
                       ('yolact_cpu', 8, 'float32'), ('yolact_tiny', 1, 'float32'),
                       ('yolact_tiny', 8, 'float32'))
FULL_INFERENCE_PRESETS = ('yolact_base', 'yolact_resnet50', 'yolact_darknet53', 'yolact_im400',
                          'yolact_im700')
CPU_TRAIN_CASES = (('yolact_tiny', 2, 'float32'), ('yolact_cpu', 8, 'float32'),
                   ('yolact_resnet50', 2, 'float32'))
FULL_TRAIN_CASES = (('yolact_tiny', 8, 'float32'), ('yolact_resnet50', 8, 'float32'),
                    ('yolact_base', 8, 'float32'), ('yolact_darknet53', 8, 'float32'),
                    ('yolact_resnet50', 8, 'bfloat16'), ('yolact_base', 8, 'bfloat16'))

# Dense peak TFLOP/s of known accelerators (vendor data sheets; no structured sparsity).
# 'bfloat16': tensor cores; 'float32': CUDA cores (non-tensor); 'tf32': tensor-core TF32.
# Matched against jax's device_kind in order (first substring hit wins).
GPU_PEAK_TFLOPS = (
    ('H200', {'bfloat16': 989.4, 'float32': 66.9, 'tf32': 494.7}),
    ('H100 PCIe', {'bfloat16': 756.5, 'float32': 51.2, 'tf32': 378.0}),
    ('H100', {'bfloat16': 989.4, 'float32': 66.9, 'tf32': 494.7}),  # SXM5 ('H100 80GB HBM3')
    ('A100', {'bfloat16': 312.0, 'float32': 19.5, 'tf32': 156.0}),
)


# ---------------------------------------------------------------------------------------------
# Machine


def usable_cores() -> int:
  """CPUs this process may run on (its affinity), which is what XLA's thread pool uses."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def fp32_flops_per_cycle(flags: Sequence[str], vendor: str | None) -> int:
  """Assumed peak fp32 FLOPs per core per cycle from the ISA flags.

  2 FMA pipes x vector lanes x 2 (a fused multiply-add is 2 FLOPs): 256-bit AVX2/FMA -> 32;
  512-bit AVX-512 on Intel server cores (two 512-bit FMA units) -> 64; AMD Zen 4 executes
  AVX-512 on 256-bit units -> 32; without FMA, 2 x 4-lane SSE add + mul -> 16.
  """
  if 'avx512f' in flags and vendor == 'GenuineIntel':
    return 64
  if 'fma' in flags:
    return 32
  return 16


def cpu_peak_gflops(cores: int, mhz: float | None, flops_per_cycle: int) -> float | None:
  """cores x clock x FLOPs/cycle, in GFLOP/s (None when the clock is unknown)."""
  if not mhz:
    return None
  return cores * mhz / 1e3 * flops_per_cycle


def device_peak_tflops(device_kind: str, platform_name: str, dtype: str,
                       cpu: dict[str, Any], cores: int,
                       override: float | None = None) -> tuple[float | None, str]:
  """(peak TFLOP/s, how it was obtained) for computing in ``dtype`` on this device."""
  if override:
    return override, 'given with --peak-tflops'
  if platform_name == 'cpu':
    per_cycle = fp32_flops_per_cycle(cpu.get('flags', []), cpu.get('vendor'))
    gflops = cpu_peak_gflops(cores, cpu.get('mhz'), per_cycle)
    if gflops is None:
      return None, 'unknown CPU clock'
    return gflops / 1e3, (
        f'estimate: {cores} cores x {cpu.get("mhz"):.0f} MHz (/proc/cpuinfo, not the boost clock)'
        f' x {per_cycle} fp32 FLOPs/cycle (2 FMA pipes x lanes x 2); the same figure is '
        'assumed for bfloat16 (no bf16 speed-up on XLA:CPU)')
  for needle, peaks in GPU_PEAK_TFLOPS:
    if needle.lower() in device_kind.lower():
      return peaks.get(dtype), (f'{needle} data sheet, dense {dtype} '
                                f'({"tensor cores" if dtype == "bfloat16" else "CUDA cores"})')
  return None, f'no peak known for {device_kind!r}; pass --peak-tflops'


def machine_info() -> dict[str, Any]:
  """Everything needed to judge a figure: software, device, CPU, cores, load, date."""
  import flax
  device = jax.devices()[0]
  cpu = cpu_info()
  return {
      'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'jax': jax.__version__,
      'jaxlib': _jaxlib_version(),
      'flax': flax.__version__,
      'numpy': np.__version__,
      'python': platform.python_version(),
      'platform': device.platform,
      'device_kind': device.device_kind,
      'device_count': jax.device_count(),
      'cpu_model': cpu['model'],
      'cpu_vendor': cpu['vendor'],
      'cpu_mhz': cpu['mhz'],
      'cpu_cores_usable': usable_cores(),
      'cpu_count': os.cpu_count(),
      'load_average_start': list(os.getloadavg()),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'git_commit': git_commit(PROJECT_ROOT, short=True),
  }


def _jaxlib_version() -> str | None:
  try:
    import jaxlib
    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None


def machine_slug(info: dict[str, Any]) -> str:
  """A file-name part naming the machine: ``cpu-amd-epyc-2c`` or ``nvidia-h100-80gb-hbm3``."""
  if info['platform'] == 'cpu':
    name = f'cpu-{info["cpu_model"]}-{info["cpu_cores_usable"]}c'
  else:
    name = info['device_kind']
  return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


# ---------------------------------------------------------------------------------------------
# Timing helpers


def compile_program(jitted: Any, *args: Any, **static: Any) -> tuple[Any, dict[str, float]]:
  """Explicit lowering + compilation: (compiled, {'lower_s', 'compile_s'})."""
  t0 = time.perf_counter()
  lowered = jitted.lower(*args, **static)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  return compiled, {'lower_s': t1 - t0, 'compile_s': t2 - t1}


def cost_of(compiled: Any) -> dict[str, float | None]:
  """FLOPs, transcendentals and bytes accessed from XLA's cost analysis (a dict in jax 0.10;
  older versions return a list with one dict per computation)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it
    cost = None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  cost = cost or {}
  pick = lambda key: float(cost[key]) if key in cost else None  # noqa: E731
  return {'flops': pick('flops'), 'transcendentals': pick('transcendentals'),
          'bytes_accessed': pick('bytes accessed')}


def memory_of(compiled: Any) -> dict[str, int | None]:
  """The compiled program's memory needs (bytes): arguments, outputs, temporaries, aliased."""
  try:
    m = compiled.memory_analysis()
  except Exception:
    m = None
  if m is None:
    return {'argument_bytes': None, 'output_bytes': None, 'temp_bytes': None,
            'alias_bytes': None, 'program_total_bytes': None}
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes \
      - m.alias_size_in_bytes
  return {'argument_bytes': int(m.argument_size_in_bytes),
          'output_bytes': int(m.output_size_in_bytes),
          'temp_bytes': int(m.temp_size_in_bytes), 'alias_bytes': int(m.alias_size_in_bytes),
          'program_total_bytes': int(total)}


def device_peak_bytes() -> int | None:
  """The device's peak bytes in use so far (GPU/TPU); None where not reported (CPU)."""
  stats = jax.devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def max_rss_bytes() -> int:
  """This process's peak resident set size so far (Linux reports kB)."""
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclasses.dataclass
class TimingOptions:
  warmup: int
  repeats: int
  max_seconds: float


def measure_stage(name: str, jitted: Any, args: Sequence[Any], opts: TimingOptions,
                  static: dict[str, Any] | None = None,
                  after: Callable[[Any], Any] | None = None) -> tuple[dict[str, Any], Any]:
  """Compile ``jitted`` for ``args``, time it, and return (record, one output).

  ``after`` post-processes each output inside the timer (e.g. ``jax.device_get``).
  """
  compiled, compile_times = compile_program(jitted, *args, **(static or {}))
  run = (lambda: after(compiled(*args))) if after else (lambda: compiled(*args))  # noqa: E731
  times = time_calls(run, opts.repeats, opts.warmup, opts.max_seconds)
  record = {'stage': name, **compile_times, **summarize_times(times), **cost_of(compiled),
            'memory': memory_of(compiled)}
  return record, compiled(*args)


# ---------------------------------------------------------------------------------------------
# Inputs


def random_network_input(cfg: YolactConfig, batch: int, seed: int = 0) -> np.ndarray:
  """A normalised NHWC network input [B, S, S, 3] (values ~ N(0, 1))."""
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch, cfg.max_size, cfg.max_size, 3)).astype(np.float32)


def random_uint8_images(batch: int, image_hw: tuple[int, int], seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (batch,) + tuple(image_hw) + (3,), dtype=np.uint8)


def init_variables(model: Yolact, cfg: YolactConfig, seed: int = 0) -> dict:
  x = jnp.zeros((1, cfg.max_size, cfg.max_size, 3), jnp.float32)
  return jax.jit(model.init)(jax.random.key(seed), x)


def object_masks(boxes: np.ndarray, shapes: np.ndarray, size: int) -> np.ndarray:
  """Binary masks [G, size, size] uint8 of rectangles (shape 0) or ellipses (shape 1) inscribed
  in relative x1y1x2y2 ``boxes`` [G, 4], sampled at pixel centres."""
  centres = (np.arange(size) + 0.5) / size
  x, y = centres[None, None, :], centres[None, :, None]
  x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
  rect = (x >= x1) & (x < x2) & (y >= y1) & (y < y2)
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  rx, ry = np.maximum((x2 - x1) / 2, 1e-6), np.maximum((y2 - y1) / 2, 1e-6)
  ellipse = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
  return np.where(shapes[:, None, None] == 1, ellipse, rect).astype(np.uint8)


def synthetic_train_batch(cfg: YolactConfig, batch: int, objects: int = 4, seed: int = 0
                          ) -> dict[str, np.ndarray]:
  """A training batch in the loader's layout with ``objects`` random shapes per image.

  ``image`` [B, S, S, 3] float32, ``boxes`` [B, G, 4] relative, ``labels`` [B, G] int32,
  ``valid`` / ``is_crowd`` [B, G] bool, ``masks_proto`` [B, G, Hp, Hp] and ``masks_segm``
  [B, G, Hs, Hs] uint8 (drawn directly at those resolutions), G = ``cfg.train.max_instances``.
  """
  rng = np.random.default_rng(seed)
  slots = cfg.train.max_instances
  objects = min(objects, slots)
  size, hp, hs = cfg.max_size, proto_size(cfg), feature_sizes(cfg)[0]
  num_fg = cfg.num_classes - 1
  boxes = np.zeros((batch, slots, 4), np.float32)
  labels = np.zeros((batch, slots), np.int32)
  valid = np.zeros((batch, slots), bool)
  shapes = np.zeros((batch, slots), np.int32)
  for b in range(batch):
    wh = rng.uniform(0.15, 0.5, (objects, 2))
    xy = rng.uniform(0.0, 1.0 - wh)
    boxes[b, :objects] = np.concatenate([xy, xy + wh], axis=1)
    labels[b, :objects] = rng.integers(0, num_fg, objects)
    shapes[b, :objects] = rng.integers(0, 2, objects)
    valid[b, :objects] = True
  images = rng.standard_normal((batch, size, size, 3)).astype(np.float32) * 0.5
  full = [object_masks(boxes[b, :objects], shapes[b, :objects], size) for b in range(batch)]
  for b in range(batch):
    for g in range(objects):
      images[b][full[b][g].astype(bool)] += rng.uniform(-1.5, 1.5, 3).astype(np.float32)
  masks_at = lambda n: np.stack([object_masks(boxes[b], shapes[b], n) * valid[b, :, None, None]  # noqa: E731
                                 for b in range(batch)]).astype(np.uint8)
  return {'image': images, 'boxes': boxes, 'labels': labels, 'valid': valid,
          'is_crowd': np.zeros_like(valid), 'masks_proto': masks_at(hp),
          'masks_segm': masks_at(hs)}


def default_reference_dir() -> pathlib.Path:
  """The original's reference outputs (as tests/reference_data.py locates them)."""
  return pathlib.Path(os.environ.get('YOLACT_REFERENCE_DIR',
                                     PROJECT_ROOT.parent / 'shared' / 'reference'))


def softmax_np(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def reference_detect_inputs(reference_dir: pathlib.Path, batch: int
                            ) -> dict[str, np.ndarray] | None:
  """The original's head outputs (``yolact_resnet50/raw.npz``: loc, softmax conf, mask
  coefficients, priors) tiled to ``batch`` images; None when the file is absent."""
  path = reference_dir / 'yolact_resnet50' / 'raw.npz'
  if not path.exists():
    return None
  with np.load(path) as raw:
    tile = lambda x: np.concatenate([x] * math.ceil(batch / x.shape[0]))[:batch]  # noqa: E731
    return {'loc': tile(raw['loc']), 'conf': tile(softmax_np(raw['conf_logits'])),
            'mask': tile(raw['mask']), 'priors': raw['priors'],
            'source': str(path)}


def synthetic_detect_inputs(batch: int, num_priors: int = 19248, num_classes: int = 80,
                            mask_dim: int = 32, objects: int = 20, seed: int = 0
                            ) -> dict[str, np.ndarray]:
  """Realistic-looking Detect inputs: priors clustered around ``objects`` objects per image (as
  a trained model's confident priors are), scores peaked on the object's class near its centre
  and background elsewhere. ``loc`` is zero, so the decoded boxes are the priors themselves;
  each image uses the priors of image 0 with its own jitter baked into ``loc``.
  """
  rng = np.random.default_rng(seed)
  centres = rng.uniform(0.1, 0.9, (objects, 2))
  sizes = rng.uniform(0.05, 0.4, (objects, 2))
  near = rng.random(num_priors) < 0.1  # a tenth of the priors lie on an object
  owner = np.where(near, rng.integers(0, objects, num_priors), -1)
  jitter = rng.normal(0, 0.03, (num_priors, 4))
  cxcy = np.where(near[:, None], centres[owner] + jitter[:, :2], rng.uniform(0, 1, (num_priors, 2)))
  wh = np.where(near[:, None], sizes[owner] * np.exp(jitter[:, 2:]),
                rng.uniform(0.02, 0.5, (num_priors, 2)))
  priors = np.concatenate([cxcy, wh], axis=1).astype(np.float32)
  classes = rng.integers(1, num_classes + 1, objects)
  logits = rng.normal(0, 1, (batch, num_priors, num_classes + 1))
  logits[..., 0] += 6.0  # background dominates ...
  closeness = np.exp(-np.sum(jitter[:, :2] ** 2, axis=1) / (2 * 0.03 ** 2))
  boost = np.where(near, 9.0 * closeness, 0.0)  # ... except near an object's centre
  logits[:, np.flatnonzero(near), classes[owner[near]]] += boost[near]
  return {'loc': rng.normal(0, 0.05, (batch, num_priors, 4)).astype(np.float32),
          'conf': softmax_np(logits).astype(np.float32),
          'mask': np.tanh(rng.normal(0, 1, (batch, num_priors, mask_dim))).astype(np.float32),
          'priors': priors, 'source': 'synthetic clustered boxes, peaked scores'}


# ---------------------------------------------------------------------------------------------
# Sections


def parse_cases(presets: Sequence[str], batches: Sequence[int], dtypes: Sequence[str]
                ) -> list[tuple[str, int, str]]:
  return [(p, b, d) for p in presets for b in batches for d in dtypes]


def inference_case(preset: str, batch: int, dtype: str, image_hw: tuple[int, int],
                   nms_kinds: Sequence[str], opts: TimingOptions) -> dict[str, Any]:
  """Every inference stage of one (preset, batch, dtype)."""
  cfg = get_config(preset)
  model = Yolact(cfg, dtype=DTYPES[dtype])
  variables = init_variables(model, cfg)
  net_input = jnp.asarray(random_network_input(cfg, batch))
  image_sizes = jnp.asarray(np.tile(np.asarray(image_hw, np.int32), (batch, 1)))
  priors = jnp.asarray(make_priors(cfg))
  stages = []

  network = jax.jit(lambda v, x: model.apply(v, x, train=False))
  record, raw = measure_stage('network', network, (variables, net_input), opts)
  stages.append(record)

  dets = None
  for kind in nms_kinds:
    kwargs = dict(detect_lib.detect_kwargs(cfg), nms=kind)
    fn = jax.jit(lambda loc, conf, mask, kw=kwargs: detect_lib.detect_from_logits(
        loc, conf, mask, priors, **kw))
    record, out = measure_stage(f'detect_{kind}', fn, (raw['loc'], raw['conf'], raw['mask']),
                                opts)
    record['num_detections'] = np.asarray(out['num_detections']).tolist()
    stages.append(record)
    if kind == cfg.detect.nms or dets is None:
      dets = out

  post = jax.jit(lambda d, proto, sizes: postprocess(d, proto, sizes, tuple(image_hw)))
  record, _ = measure_stage('postprocess', post, (dets, raw['proto'], image_sizes), opts)
  stages.append(record)

  program = InferenceProgram(cfg, DTYPES[dtype])
  record, _ = measure_stage('end_to_end', program.from_network_input,
                            (variables, net_input, image_sizes), opts,
                            static={'canvas_hw': tuple(image_hw)}, after=jax.device_get)
  stages.append(record)
  images = jnp.asarray(random_uint8_images(batch, image_hw))
  record, _ = measure_stage('end_to_end_uint8', program.from_images,
                            (variables, images, image_sizes), opts, after=jax.device_get)
  stages.append(record)
  return {'preset': preset, 'input_size': cfg.max_size, 'batch': batch, 'dtype': dtype,
          'image_hw': list(image_hw), 'detect_nms': cfg.detect.nms, 'stages': stages,
          'max_rss_bytes': max_rss_bytes(), 'device_peak_bytes': device_peak_bytes()}


def run_inference(cases: Sequence[tuple[str, int, str]], image_hw: tuple[int, int],
                  nms_kinds: Sequence[str], opts: TimingOptions, log: Callable) -> list[dict]:
  results = []
  for preset, batch, dtype in cases:
    log(f'inference {preset} batch {batch} {dtype}')
    results.append(guarded(lambda: inference_case(preset, batch, dtype, image_hw, nms_kinds,
                                                  opts),
                           {'preset': preset, 'batch': batch, 'dtype': dtype}, log))
  return results


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


def run_nms(batch: int, top_k: int, num_classes: int | None, reference_dir: pathlib.Path,
            opts: TimingOptions, log: Callable) -> dict[str, Any]:
  """Each NMS rule alone and inside the whole Detect, on the same realistic inputs."""
  inputs = reference_detect_inputs(reference_dir, batch)
  if inputs is None:
    inputs = synthetic_detect_inputs(batch)
  if num_classes is not None and num_classes < inputs['conf'].shape[-1] - 1:
    inputs = dict(inputs, conf=inputs['conf'][..., :num_classes + 1])
  num_classes = inputs['conf'].shape[-1] - 1
  settings = dict(top_k=top_k, conf_thresh=0.05, iou_thresh=0.5, max_detections=100,
                  box_scale=550.0)
  log(f'nms: {num_classes} classes x top {top_k}, batch {batch}, {inputs["source"]}')
  rules = {'fast': detect_lib.fast_nms_keep, 'cross_class': detect_lib.fast_nms_keep,
           'standard': detect_lib.greedy_nms_keep}
  variants = []
  for kind, rule in rules.items():
    def one():
      boxes, valid = nms_candidates(inputs, kind, top_k, settings['conf_thresh'],
                                    settings['box_scale'])
      keep_fn = jax.jit(lambda b, v, rule=rule: rule(b, v, settings['iou_thresh']))
      alone, keep = measure_stage('nms_only', keep_fn, (boxes, valid), opts)
      detect_fn = jax.jit(lambda loc, conf, mask, priors, kind=kind: detect_lib.detect(
          loc, conf, mask, priors, nms=kind, **settings))
      args = tuple(jnp.asarray(inputs[k]) for k in ('loc', 'conf', 'mask', 'priors'))
      whole, dets = measure_stage('detect', detect_fn, args, opts)
      return {'nms': kind, 'candidate_shape': list(boxes.shape[:-1]),
              'candidates_valid': int(np.asarray(valid).sum()),
              'kept_by_nms': int(np.asarray(keep).sum()),
              'detections': np.asarray(dets['num_detections']).tolist(),
              'stages': [alone, whole]}
    variants.append(guarded(one, {'nms': kind}, log))
  return {'batch': batch, 'num_classes': num_classes, 'top_k': top_k, 'inputs': inputs['source'],
          'settings': settings, 'variants': variants}


def train_case(preset: str, batch: int, dtype: str, opts: TimingOptions) -> dict[str, Any]:
  """The jitted train step of one (preset, batch, dtype) on a synthetic batch."""
  cfg = get_config(preset, [f'train.batch_size={batch}'])
  freeze_bn = ts.uses_frozen_bn(cfg)
  model = Yolact(cfg, freeze_bn=freeze_bn, dtype=DTYPES[dtype])
  variables = init_variables(model, cfg)
  tx = ts.make_optimizer(cfg, variables['params'], freeze_bn)
  state = ts.init_train_state(cfg, variables, tx)
  del variables
  step = ts.jit_train_step(ts.make_train_step(cfg, model, tx))
  batch_arrays = jax.device_put(synthetic_train_batch(cfg, batch))
  compiled, compile_times = compile_program(step, state, batch_arrays)

  holder = {'state': state}

  def one_step():
    holder['state'], metrics = compiled(holder['state'], batch_arrays)
    return holder['state'], metrics

  times = time_calls(one_step, opts.repeats, opts.warmup, opts.max_seconds)
  summary = summarize_times(times)
  _, metrics = one_step()
  return {'preset': preset, 'input_size': cfg.max_size, 'batch': batch, 'dtype': dtype,
          'freeze_bn': freeze_bn, 'stages': [{
              'stage': 'train_step', **compile_times, **summary, **cost_of(compiled),
              'memory': memory_of(compiled),
              'images_per_s': batch / (summary['median_ms'] / 1e3)}],
          'loss_finite': bool(np.isfinite(float(metrics['loss']))),
          'max_rss_bytes': max_rss_bytes(), 'device_peak_bytes': device_peak_bytes()}


def run_train(cases: Sequence[tuple[str, int, str]], opts: TimingOptions, log: Callable
              ) -> list[dict]:
  results = []
  for preset, batch, dtype in cases:
    log(f'train {preset} batch {batch} {dtype}')
    results.append(guarded(lambda: train_case(preset, batch, dtype, opts),
                           {'preset': preset, 'batch': batch, 'dtype': dtype}, log))
  return results


def matmul_probe(size: int, dtype: str, opts: TimingOptions) -> dict[str, Any]:
  """FLOP/s of one large square matmul: a practical ceiling for this machine and dtype."""
  x = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), DTYPES[dtype])
  record, _ = measure_stage('matmul', jax.jit(lambda a: a @ a), (x,), opts)
  flops = 2.0 * size ** 3
  return {'size': size, 'dtype': dtype, 'median_ms': record['median_ms'],
          'xla_flops': record['flops'], 'convention_flops': flops,
          'achieved_tflops': flops / (record['median_ms'] / 1e3) / 1e12}


def flops_rows(section: str, cases: Iterable[dict]) -> list[dict]:
  """One row per timed program that has a FLOP count."""
  rows = []
  for case in cases:
    for stage in case.get('stages', []):
      if stage.get('flops') is None or not stage.get('median_ms'):
        continue
      rows.append({'section': section, 'preset': case.get('preset'), 'batch': case.get('batch'),
                   'dtype': case.get('dtype', 'float32'), 'stage': stage['stage'],
                   'gflops': stage['flops'] / 1e9,
                   'gflops_per_image': stage['flops'] / 1e9 / max(case.get('batch') or 1, 1),
                   'median_ms': stage['median_ms'],
                   'achieved_tflops': stage['flops'] / (stage['median_ms'] / 1e3) / 1e12})
  return rows


def run_flops(results: dict[str, Any], machine: dict[str, Any], cases: Sequence[tuple],
              peak_override: float | None, probe_size: int, opts: TimingOptions,
              log: Callable) -> dict[str, Any]:
  """FLOPs per program, achieved FLOP/s and the fraction of the device's peak."""
  rows = flops_rows('inference', results.get('inference', []))
  rows += flops_rows('train', results.get('train', []))
  if not rows:  # flops alone: compile the networks without timing them
    for preset, batch, dtype in cases:
      cfg = get_config(preset)
      model = Yolact(cfg, dtype=DTYPES[dtype])
      x = jax.ShapeDtypeStruct((batch, cfg.max_size, cfg.max_size, 3), jnp.float32)
      variables = jax.eval_shape(lambda: init_variables(model, cfg))
      compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
          variables, x).compile()
      flops = cost_of(compiled)['flops']
      rows.append({'section': 'compile_only', 'preset': preset, 'batch': batch, 'dtype': dtype,
                   'stage': 'network', 'gflops': None if flops is None else flops / 1e9,
                   'gflops_per_image': None if flops is None else flops / 1e9 / batch,
                   'median_ms': None, 'achieved_tflops': None})
  cpu = cpu_info()
  peaks = {}
  for dtype in sorted({r['dtype'] for r in rows} | {'float32'}):
    peak, source = device_peak_tflops(machine['device_kind'], machine['platform'], dtype, cpu,
                                      machine['cpu_cores_usable'], peak_override)
    peaks[dtype] = {'tflops': peak, 'source': source}
  for row in rows:
    peak = peaks[row['dtype']]['tflops']
    row['fraction_of_peak'] = (row['achieved_tflops'] / peak
                               if peak and row['achieved_tflops'] is not None else None)
  probes = []
  if probe_size:
    for dtype in sorted({r['dtype'] for r in rows} | {'float32'}):
      log(f'flops: matmul probe {probe_size} {dtype}')
      probes.append(guarded(lambda: matmul_probe(probe_size, dtype, opts), {'dtype': dtype}, log))
  return {'convention': 'one multiply-add = 2 FLOPs (XLA cost analysis counts it so)',
          'peak': peaks, 'rows': rows, 'matmul_probe': probes}


CONV_IMPLS = ('xla', 'yolact_jax')  # jax.lax's convolution; the network's (model/conv.py)


def conv_gradient_case(name: str, size: int, cin: int, cout: int, kernel: int, stride: int,
                       batch: int, dtype: str, opts: TimingOptions, impl: str = 'xla'
                       ) -> dict[str, Any]:
  """One convolution's forward, input gradient (dx) and weight gradient (dw), each jitted, with
  ``impl`` 'xla' (``jax.lax.conv_general_dilated``) or 'yolact_jax' (the network's convolution,
  :func:`yolact_jax.model.conv.conv_general_dilated`: products where XLA:CPU's are slow)."""
  from yolact_jax.model.conv import conv_general_dilated
  conv_fn = {'xla': jax.lax.conv_general_dilated, 'yolact_jax': conv_general_dilated}[impl]
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, cin)), DTYPES[dtype])
  w = jnp.asarray(rng.standard_normal((kernel, kernel, cin, cout)) * 0.02, DTYPES[dtype])
  pad = ((kernel // 2, kernel // 2),) * 2

  def conv(x, w):
    return conv_fn(x, w, (stride, stride), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  dy = jnp.ones(jax.eval_shape(conv, x, w).shape, DTYPES[dtype])
  programs = {'forward': (jax.jit(conv), (x, w)),
              'input_gradient': (jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
                                 (x, w, dy)),
              'weight_gradient': (jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0]),
                                  (x, w, dy))}
  stages = [measure_stage(stage, fn, args, opts)[0] for stage, (fn, args) in programs.items()]
  return {'conv': name, 'impl': impl, 'input_size': size, 'in_channels': cin,
          'out_channels': cout, 'kernel': kernel, 'stride': stride, 'batch': batch,
          'dtype': dtype, 'stages': stages}


def run_convgrad(batch: int, dtype: str, opts: TimingOptions, log: Callable) -> list[dict]:
  """Forward vs gradient cost of the network's typical convolutions: on XLA:CPU some weight
  gradients run far below the forward's FLOP rate, which dominates the train step."""
  results = []
  for case in CONVGRAD_CASES:
    for impl in CONV_IMPLS:
      log(f'convgrad {case[0]} batch {batch} {dtype} {impl}')
      results.append(guarded(lambda: conv_gradient_case(*case, batch, dtype, opts, impl),
                             {'conv': case[0], 'impl': impl}, log))
  return results


def guarded(fn: Callable[[], dict], header: dict, log: Callable) -> dict:
  """``fn()``, or ``header`` with the error when it fails (out of memory, ...): one failed case
  must not lose a long run's other results."""
  try:
    return fn()
  except Exception as exc:  # noqa: BLE001 - recorded, reported, and the run goes on
    log(f'  FAILED: {type(exc).__name__}: {exc}')
    return {**header, 'error': f'{type(exc).__name__}: {exc}',
            'traceback': traceback.format_exc(limit=5)}


# ---------------------------------------------------------------------------------------------
# Report


def _ms(stage: dict | None) -> str:
  if not stage or stage.get('median_ms') is None:
    return '-'
  return f'{stage["median_ms"]:.2f} ({stage["p10_ms"]:.2f}-{stage["p90_ms"]:.2f})'


def _failed_row(*cells: Any, error: str) -> str:
  """A table row for a case that failed: its identifying cells, then the error's start."""
  return '| ' + ' | '.join(map(str, cells)) + f' | failed: {error[:80]} |'


def _stage(case: dict, name: str) -> dict | None:
  return next((s for s in case.get('stages', []) if s['stage'] == name), None)


def markdown_report(results: dict[str, Any]) -> str:
  """The JSON's headline figures as markdown tables."""
  m = results['machine']
  lines = [f'# yolact-jax benchmark ({m["date_utc"]})', '',
           f'Machine: {m["device_kind"]} ({m["platform"]}), CPU {m["cpu_model"]}, '
           f'{m["cpu_cores_usable"]} usable cores; jax {m["jax"]}; load average (1/5/15 min) '
           f'at start {fmt_load(m["load_average_start"])}, at end '
           f'{fmt_load(m.get("load_average_end"))}; commit {m.get("git_commit")}.', '',
           'Times: median (p10-p90) ms over the timed runs after warm-up, outputs blocked on. '
           'Compile times are separate and cold.', '']
  if results.get('inference'):
    lines += ['## Inference', '',
              '`end_to_end`: network input -> network + Detect + postprocess, results copied to '
              'the host (the scope of the original\'s `eval.py --benchmark`); `e2e uint8` adds '
              'the on-device resize and normalisation. fps = images / end_to_end median.', '',
              '| preset | size | batch | dtype | network | detect fast | detect cross-class | '
              'detect standard | postprocess | end_to_end | fps | e2e uint8 | e2e compile s |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for case in results['inference']:
      if 'error' in case:
        lines.append(_failed_row(case['preset'], '', case['batch'], case['dtype'],
                                 error=case['error']))
        continue
      e2e = _stage(case, 'end_to_end')
      fps = case['batch'] / (e2e['median_ms'] / 1e3) if e2e else None
      compile_s = e2e['lower_s'] + e2e['compile_s'] if e2e else None
      lines.append(
          f'| {case["preset"]} | {case["input_size"]} | {case["batch"]} | {case["dtype"]} | '
          f'{_ms(_stage(case, "network"))} | {_ms(_stage(case, "detect_fast"))} | '
          f'{_ms(_stage(case, "detect_cross_class"))} | {_ms(_stage(case, "detect_standard"))} | '
          f'{_ms(_stage(case, "postprocess"))} | {_ms(e2e)} | '
          f'{"-" if fps is None else f"{fps:.2f}"} | {_ms(_stage(case, "end_to_end_uint8"))} | '
          f'{"-" if compile_s is None else f"{compile_s:.1f}"} |')
    lines.append('')
  if results.get('nms'):
    n = results['nms']
    lines += ['## NMS', '',
              f'{n["num_classes"]} classes x top {n["top_k"]}, batch {n["batch"]}; inputs: '
              f'{n["inputs"]}. `nms_only`: the rule on prepared ranked candidates; `detect`: '
              'decode + top-k + NMS + global top-100.', '',
              '| nms | candidates (valid) | kept | nms_only ms | detect ms | detections |',
              '|---|---|---|---|---|---|']
    for v in n['variants']:
      if 'error' in v:
        lines.append(_failed_row(v['nms'], error=v['error']))
        continue
      lines.append(f'| {v["nms"]} | {"x".join(map(str, v["candidate_shape"]))} '
                   f'({v["candidates_valid"]}) | {v["kept_by_nms"]} | '
                   f'{_ms(_stage(v, "nms_only"))} | {_ms(_stage(v, "detect"))} | '
                   f'{v["detections"]} |')
    lines.append('')
  if results.get('train'):
    lines += ['## Train step', '',
              'Memory: the compiled step\'s argument + output + temp - alias bytes (XLA memory '
              'analysis); device peak where reported (GPU); process max RSS.', '',
              '| preset | size | batch | dtype | BN | step ms | images/s | compile s | '
              'program MiB | device peak MiB | max RSS MiB |',
              '|---|---|---|---|---|---|---|---|---|---|---|']
    for case in results['train']:
      if 'error' in case:
        lines.append(_failed_row(case['preset'], '', case['batch'], case['dtype'],
                                 error=case['error']))
        continue
      s = case['stages'][0]
      lines.append(
          f'| {case["preset"]} | {case["input_size"]} | {case["batch"]} | {case["dtype"]} | '
          f'{"frozen" if case["freeze_bn"] else "batch stats"} | {_ms(s)} | '
          f'{s["images_per_s"]:.2f} | {s["lower_s"] + s["compile_s"]:.1f} | '
          f'{mib(s["memory"]["program_total_bytes"])} | {mib(case["device_peak_bytes"])} | '
          f'{mib(case["max_rss_bytes"])} |')
    lines.append('')
  if results.get('convgrad'):
    lines += ['## Convolution gradients', '',
              'Each convolution alone (jitted): forward, input gradient, weight gradient; '
              'GFLOP/s from XLA\'s cost analysis. `xla`: `jax.lax.conv_general_dilated`; '
              '`yolact_jax`: the network\'s convolution (`yolact_jax/model/conv.py`: 1x1 '
              'convolutions and some weight gradients as matrix products on CPU).', '',
              '| convolution | impl | input | batch | dtype | forward ms | dx ms | dw ms | '
              'dw / forward | forward GFLOP/s | dw GFLOP/s |',
              '|---|---|---|---|---|---|---|---|---|---|---|']
    for c in results['convgrad']:
      if 'error' in c:
        lines.append(_failed_row(c['conv'], c['impl'], error=c['error']))
        continue
      f, dx, dw = (_stage(c, n) for n in ('forward', 'input_gradient', 'weight_gradient'))
      rate = lambda s: '-' if not s['flops'] else f'{s["flops"] / s["median_ms"] / 1e6:.0f}'  # noqa: E731
      lines.append(f'| {c["conv"]} | {c["impl"]} | {c["input_size"]} | {c["batch"]} | '
                   f'{c["dtype"]} | '
                   f'{_ms(f)} | {_ms(dx)} | {_ms(dw)} | '
                   f'{dw["median_ms"] / f["median_ms"]:.1f} | {rate(f)} | {rate(dw)} |')
    lines.append('')
  if results.get('flops'):
    f = results['flops']
    lines += ['## FLOPs', '', f'Convention: {f["convention"]}.', '']
    for dtype, peak in f['peak'].items():
      value = '-' if peak['tflops'] is None else f'{peak["tflops"] * 1e3:.1f} GFLOP/s'
      lines.append(f'* peak {dtype}: {value} ({peak["source"]})')
    for p in f['matmul_probe']:
      if 'error' not in p:
        lines.append(f'* matmul probe {p["size"]}x{p["size"]} {p["dtype"]}: '
                     f'{p["achieved_tflops"] * 1e3:.1f} GFLOP/s')
    lines += ['', '| section | preset | batch | dtype | program | GFLOPs/image | achieved GFLOP/s '
              '| fraction of peak |', '|---|---|---|---|---|---|---|---|']
    for r in f['rows']:
      if r['stage'] not in ('network', 'end_to_end', 'train_step'):
        continue
      achieved = '-' if r['achieved_tflops'] is None else f'{r["achieved_tflops"] * 1e3:.1f}'
      frac = '-' if r.get('fraction_of_peak') is None else f'{r["fraction_of_peak"]:.1%}'
      per_image = '-' if r['gflops_per_image'] is None else f'{r["gflops_per_image"]:.2f}'
      lines.append(f'| {r["section"]} | {r["preset"]} | {r["batch"]} | {r["dtype"]} | '
                   f'{r["stage"]} | {per_image} | {achieved} | {frac} |')
    lines.append('')
  return '\n'.join(lines)


def fmt_load(load: Sequence[float] | None) -> str:
  return '-' if not load else '/'.join(f'{x:.2f}' for x in load)


def mib(value: int | None) -> str:
  return '-' if value is None else f'{value / 2**20:.0f}'


def to_jsonable(value: Any) -> Any:
  """numpy scalars/arrays and tuples -> plain JSON types; non-finite floats -> None."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_jsonable(value.tolist())
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


# ---------------------------------------------------------------------------------------------
# Command line


def _csv(text: str) -> list[str]:
  return [t.strip() for t in text.split(',') if t.strip()]


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--only', default=','.join(DEFAULT_SECTIONS),
                 help=f'comma-separated sections to run, of {",".join(SECTIONS)} (default: all '
                      'but convgrad)')
  p.add_argument('--convgrad-batch', type=int, default=2,
                 help='batch of the convgrad section (the CPU train-step batch)')
  p.add_argument('--grid', choices=('auto', 'cpu', 'full'), default='auto',
                 help="default cases: 'cpu' (a few-core CPU subset), 'full' (every preset x "
                      "batch 1,8 x float32,bfloat16); 'auto' = cpu on a CPU backend, else full")
  p.add_argument('--presets', type=_csv, help='inference presets (replaces the grid\'s cases)')
  p.add_argument('--batch-sizes', type=lambda s: [int(x) for x in _csv(s)],
                 help='inference batch sizes (with --presets; default 1,8)')
  p.add_argument('--dtypes', type=_csv, help='compute dtypes, of float32,bfloat16 (with '
                 '--presets; default float32 on cpu, both on full)')
  p.add_argument('--nms-kinds', type=_csv, default=list(detect_lib.NMS_KINDS),
                 help='NMS variants timed inside the inference section')
  p.add_argument('--image-hw', type=lambda s: tuple(int(x) for x in _csv(s)), default=(480, 640),
                 help='original image size h,w for postprocess and end to end (COCO-typical)')
  p.add_argument('--train-presets', type=_csv, help='train-step presets (replaces the grid)')
  p.add_argument('--train-batch-sizes', type=lambda s: [int(x) for x in _csv(s)],
                 help='train batch sizes (with --train-presets; default 2 on cpu, 8 on full)')
  p.add_argument('--train-dtypes', type=_csv, help='train compute dtypes (default float32)')
  p.add_argument('--nms-batch', type=int, default=1, help='images in the NMS section')
  p.add_argument('--nms-top-k', type=int, default=200, help='candidates per class (NMS section)')
  p.add_argument('--nms-classes', type=int, default=None,
                 help='use only the first N classes in the NMS section (default: all 80)')
  p.add_argument('--reference-dir', type=pathlib.Path, default=None,
                 help='folder with yolact_resnet50/raw.npz (default ../shared/reference or '
                      '$YOLACT_REFERENCE_DIR)')
  p.add_argument('--repeats', type=int, default=None, help='timed runs per stage (default 10 on '
                 'cpu, 50 on full)')
  p.add_argument('--warmup', type=int, default=2, help='untimed runs after compiling')
  p.add_argument('--max-seconds', type=float, default=None,
                 help=f'stop timing a stage after this long (at least {MIN_TIMED_RUNS} runs; '
                      'default 60 on cpu, 30 on full)')
  p.add_argument('--peak-tflops', type=float, default=None,
                 help='the device\'s peak TFLOP/s for the fraction of peak (overrides the table)')
  p.add_argument('--matmul-probe-size', type=int, default=None,
                 help='side of the probe matmul (0 = skip; default 2048 on cpu, 8192 on gpu)')
  p.add_argument('--out', type=pathlib.Path, default=None,
                 help='JSON path (default results/benchmark_<machine>.json); .md beside it')
  p.add_argument('--quiet', action='store_true')
  return p


def resolve_cases(args: argparse.Namespace, grid: str) -> tuple[list, list]:
  """(inference cases, train cases) from the grid and the explicit flags."""
  default_dtypes = ['float32'] if grid == 'cpu' else ['float32', 'bfloat16']
  if args.presets:
    inference = parse_cases(args.presets, args.batch_sizes or [1, 8],
                            args.dtypes or default_dtypes)
  elif args.batch_sizes or args.dtypes:
    presets = sorted({c[0] for c in CPU_INFERENCE_CASES}) if grid == 'cpu' \
        else list(FULL_INFERENCE_PRESETS)
    inference = parse_cases(presets, args.batch_sizes or [1, 8], args.dtypes or default_dtypes)
  elif grid == 'cpu':
    inference = list(CPU_INFERENCE_CASES)
  else:
    inference = parse_cases(FULL_INFERENCE_PRESETS, [1, 8], default_dtypes)
  if args.train_presets:
    train = parse_cases(args.train_presets,
                        args.train_batch_sizes or ([2] if grid == 'cpu' else [8]),
                        args.train_dtypes or ['float32'])
  else:
    train = list(CPU_TRAIN_CASES if grid == 'cpu' else FULL_TRAIN_CASES)
    if args.train_batch_sizes or args.train_dtypes:
      presets = list(dict.fromkeys(c[0] for c in train))
      train = parse_cases(presets, args.train_batch_sizes or ([2] if grid == 'cpu' else [8]),
                          args.train_dtypes or ['float32'])
  for _, _, dtype in inference + train:
    if dtype not in DTYPES:
      raise SystemExit(f'unknown dtype {dtype!r}; use one of {", ".join(DTYPES)}')
  return inference, train


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = build_parser().parse_args(argv)
  sections = _csv(args.only)
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown:
    raise SystemExit(f'unknown section(s) {unknown}; choose from {", ".join(SECTIONS)}')
  for kind in args.nms_kinds:
    if kind not in detect_lib.NMS_KINDS:
      raise SystemExit(f'unknown NMS kind {kind!r}; use {", ".join(detect_lib.NMS_KINDS)}')
  log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))  # noqa: E731

  machine = machine_info()
  on_cpu = machine['platform'] == 'cpu'
  grid = args.grid if args.grid != 'auto' else ('cpu' if on_cpu else 'full')
  opts = TimingOptions(warmup=args.warmup,
                       repeats=args.repeats or (10 if grid == 'cpu' else 50),
                       max_seconds=args.max_seconds or (60.0 if grid == 'cpu' else 30.0))
  inference_cases, train_cases = resolve_cases(args, grid)
  probe = args.matmul_probe_size if args.matmul_probe_size is not None \
      else (2048 if on_cpu else 8192)
  out = args.out or PROJECT_ROOT / 'results' / f'benchmark_{machine_slug(machine)}.json'
  log(f'machine: {machine["device_kind"]} / {machine["cpu_model"]}, '
      f'{machine["cpu_cores_usable"]} cores, load {fmt_load(machine["load_average_start"])}')

  results: dict[str, Any] = {
      'machine': machine,
      'settings': {'sections': sections, 'grid': grid, 'warmup': opts.warmup,
                   'repeats': opts.repeats, 'max_seconds': opts.max_seconds,
                   'min_timed_runs': MIN_TIMED_RUNS, 'image_hw': list(args.image_hw),
                   'inference_cases': inference_cases, 'train_cases': train_cases,
                   'argv': list(argv) if argv is not None else sys.argv[1:]},
  }
  if 'inference' in sections:
    results['inference'] = run_inference(inference_cases, args.image_hw, args.nms_kinds, opts,
                                         log)
  if 'nms' in sections:
    results['nms'] = run_nms(args.nms_batch, args.nms_top_k, args.nms_classes,
                             args.reference_dir or default_reference_dir(), opts, log)
  if 'train' in sections:
    results['train'] = run_train(train_cases, opts, log)
  if 'convgrad' in sections:
    results['convgrad'] = run_convgrad(args.convgrad_batch, 'float32', opts, log)
  if 'flops' in sections:
    results['flops'] = run_flops(results, machine, inference_cases, args.peak_tflops, probe,
                                 opts, log)
  machine['load_average_end'] = list(os.getloadavg())
  machine['max_rss_bytes_end'] = max_rss_bytes()

  results = to_jsonable(results)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1) + '\n')
  out.with_suffix('.md').write_text(markdown_report(results) + '\n')
  log(f'wrote {out} and {out.with_suffix(".md")}')
  return results


if __name__ == '__main__':
  main()
