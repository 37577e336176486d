"""The FLOPs section: XLA's FLOP count of each timed program, the FLOP/s achieved and the
fraction of the device's peak; a large matmul as this machine's practical ceiling."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from yolact_jax.bench.grid import DTYPES, Case, guarded
from yolact_jax.bench.machine import cpu_info, device_peak_tflops
from yolact_jax.bench.timing import TimingOptions, cost_of, measure_stage
from yolact_jax.config import get_config
from yolact_jax.model.variables import abstract_variables
from yolact_jax.model.yolact import Yolact

CONVENTION = 'one multiply-add = 2 FLOPs (XLA cost analysis counts it so)'


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


def compile_only_rows(cases: Sequence[Case]) -> list[dict]:
  """The networks' FLOPs of ``cases`` compiled on abstract inputs, without timing them (for a
  run of the flops section alone)."""
  rows = []
  for preset, batch, dtype in cases:
    cfg = get_config(preset)
    model = Yolact(cfg.model, num_classes=cfg.num_classes, dtype=DTYPES[dtype])
    x = jax.ShapeDtypeStruct((batch, cfg.max_size, cfg.max_size, 3), jnp.float32)
    variables = abstract_variables(cfg)
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        variables, x).compile()
    flops = cost_of(compiled)['flops']
    rows.append({'section': 'compile_only', 'preset': preset, 'batch': batch, 'dtype': dtype,
                 'stage': 'network', 'gflops': None if flops is None else flops / 1e9,
                 'gflops_per_image': None if flops is None else flops / 1e9 / batch,
                 'median_ms': None, 'achieved_tflops': None})
  return rows


def peaks_by_dtype(machine: dict[str, Any], dtypes: Iterable[str],
                   peak_override: float | None) -> dict[str, dict[str, Any]]:
  """{dtype: {'tflops': peak or None, 'source': how it was obtained}}."""
  cpu = cpu_info()
  peaks = {}
  for dtype in dtypes:
    peak, source = device_peak_tflops(machine['device_kind'], machine['platform'], dtype, cpu,
                                      machine['cpu_cores_usable'], peak_override)
    peaks[dtype] = {'tflops': peak, 'source': source}
  return peaks


def run_flops(results: dict[str, Any], machine: dict[str, Any], cases: Sequence[Case],
              peak_override: float | None, probe_size: int, opts: TimingOptions,
              log: Callable) -> dict[str, Any]:
  """FLOPs per program of the sections already in ``results`` (else of the inference
  ``cases`` compiled only), achieved FLOP/s and the fraction of the device's peak; a matmul
  probe of side ``probe_size`` (0: none) per dtype."""
  rows = flops_rows('inference', results.get('inference', []))
  rows += flops_rows('train', results.get('train', []))
  if not rows:
    rows = compile_only_rows(cases)
  dtypes = sorted({r['dtype'] for r in rows} | {'float32'})
  peaks = peaks_by_dtype(machine, dtypes, peak_override)
  for row in rows:
    peak = peaks[row['dtype']]['tflops']
    row['fraction_of_peak'] = (row['achieved_tflops'] / peak
                               if peak and row['achieved_tflops'] is not None else None)
  probes = []
  if probe_size:
    for dtype in dtypes:
      log(f'flops: matmul probe {probe_size} {dtype}')
      probes.append(guarded(lambda: matmul_probe(probe_size, dtype, opts), {'dtype': dtype}, log))
  return {'convention': CONVENTION, 'peak': peaks, 'rows': rows, 'matmul_probe': probes}
