"""Where an ONNX program's time goes in ONNX Runtime: its own profiler, per operator type and
per stage (the network up to its last ``Conv``; Detect, masks and bit packing after it).

:func:`profile_program` converts a preset's whole program (network-input entry, seeded random
weights) and runs it with ``SessionOptions.enable_profiling``; :func:`summarize_profile` reads
the profiler's events (pure, tested on a hand-made trace). ``scripts/onnx_profile.py`` is the
command line.
"""

from __future__ import annotations

import collections
import json
import pathlib
import tempfile
import time
from typing import Any, Sequence

import numpy as np

KERNEL = '_kernel_time'
# Kernels ONNX Runtime adds around its NCHWc convolutions; they belong to the network.
NETWORK_OPS = ('Conv', 'FusedConv', 'ReorderInput', 'ReorderOutput', 'MaxPool')


def summarize_profile(events: Sequence[dict], node_order: dict[str, int], last_network: int,
                      runs: int) -> dict[str, Any]:
  """Milliseconds per run: total, per stage ('network', 'after_network') and per operator type
  within each stage, from the profiler's ``events``. A kernel is placed by its graph node's
  index in ``node_order`` (fused kernels carry the name of a node they replaced, with an
  optional ``_nchwc`` suffix); kernels of :data:`NETWORK_OPS` and unknown names at or before
  ``last_network`` count as network."""
  stages: dict[str, collections.Counter] = {'network': collections.Counter(),
                                            'after_network': collections.Counter()}
  for event in events:
    if event.get('cat') != 'Node' or not event.get('name', '').endswith(KERNEL):
      continue
    name = event['name'][:-len(KERNEL)]
    op = event['args']['op_name']
    index = node_order.get(name.removesuffix('_nchwc').split('/')[0], -1)
    network = op in NETWORK_OPS or 0 <= index <= last_network or index < 0
    stages['network' if network else 'after_network'][op] += event['dur'] / 1e3 / runs
  out = {stage: {'ms': sum(ops.values()),
                 'ops': {op: ms for op, ms in ops.most_common()}}
         for stage, ops in stages.items()}
  out['total_ms'] = sum(stage['ms'] for stage in out.values())
  return out


def profile_program(preset: str, batch: int, canvas_hw: tuple[int, int], runs: int,
                    threads: int | None = None, seed: int = 0) -> dict[str, Any]:
  """The preset's program converted to ONNX and profiled over ``runs`` calls (after 2 warm-up
  calls) on seeded random images of the canvas size; also the wall time per call."""
  import jax
  import onnxruntime as ort

  from yolact_jax.compare.weights import random_variables
  from yolact_jax.config import get_config
  from yolact_jax.predict import preprocess
  from yolact_jax.serving.export import make_spec
  from yolact_jax.serving.onnx_export import program_model
  from yolact_jax.serving.onnx_runtime import session_options

  cfg = get_config(preset)
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, *canvas_hw, 3), dtype=np.uint8)
  sizes = np.tile(np.asarray(canvas_hw, np.int32), (batch, 1))
  backbone = cfg.model.backbone
  net_input = np.asarray(preprocess(images, sizes, cfg.max_size, backbone.transform,
                                    backbone.input_resize), np.float32)
  variables = jax.device_get(random_variables(cfg, seed, net_input))
  spec = make_spec(cfg, canvas_hw=canvas_hw, batch=batch, static_batch=True)
  t0 = time.perf_counter()
  model = program_model(spec, variables, entry='network_input')
  convert_s = time.perf_counter() - t0
  order = {node.name: i for i, node in enumerate(model.graph.node)}
  last_conv = max(i for i, node in enumerate(model.graph.node) if node.op_type == 'Conv')
  with tempfile.TemporaryDirectory() as tmp:
    options = session_options(threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(pathlib.Path(tmp) / 'profile')
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=['CPUExecutionProvider'])
    feeds = dict(zip([i.name for i in session.get_inputs()], (net_input, sizes)))
    for _ in range(2):
      session.run(None, feeds)
    walls = []
    for _ in range(runs):
      t0 = time.perf_counter()
      session.run(None, feeds)
      walls.append((time.perf_counter() - t0) * 1e3)
    events = json.loads(pathlib.Path(session.end_profiling()).read_text())
  summary = summarize_profile(events, order, last_conv, runs + 2)
  return {'preset': preset, 'batch': batch, 'canvas_hw': list(canvas_hw),
          'threads': options.intra_op_num_threads, 'runs': runs, 'convert_s': convert_s,
          'wall_ms_median': float(np.median(walls)), 'wall_ms': walls,
          'onnxruntime': ort.__version__, 'profile': summary}


def markdown(result: dict[str, Any], top: int = 8) -> str:
  """The profile as a table: each stage's total and its largest operator types."""
  profile = result['profile']
  lines = [f"`{result['preset']}`, batch {result['batch']}, canvas "
           f"{result['canvas_hw'][0]}x{result['canvas_hw'][1]}, {result['threads']} threads, "
           f"ONNX Runtime {result['onnxruntime']}: {result['wall_ms_median']:.0f} ms per call "
           f"(median of {result['runs']}); kernel time {profile['total_ms']:.0f} ms.", '',
           '| stage | ms | largest operator types (ms) |', '|---|---|---|']
  for stage in ('network', 'after_network'):
    ops = ', '.join(f'{op} {ms:.1f}' for op, ms in list(profile[stage]['ops'].items())[:top])
    lines.append(f"| {stage.replace('_', ' ')} | {profile[stage]['ms']:.0f} | {ops} |")
  return '\n'.join(lines) + '\n'
