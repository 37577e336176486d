"""The train-step section: the jitted, donated update on a synthetic batch per
(preset, batch, dtype): speed, compile time and memory."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from yolact_jax import train_step as ts
from yolact_jax.bench.grid import DTYPES, Case, guarded
from yolact_jax.bench.inputs import synthetic_train_batch
from yolact_jax.bench.timing import (TimingOptions, compile_program, cost_of, device_peak_bytes,
                                     max_rss_bytes, memory_of, summarize_times, time_calls)
from yolact_jax.config import get_config
from yolact_jax.model.variables import init_variables


def train_case(preset: str, batch: int, dtype: str, opts: TimingOptions,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
  """The jitted train step of one (preset, batch, dtype) on a synthetic batch (the preset with
  config ``overrides``, e.g. ``model.backbone.dcn_layers=(0, 0, 0, 0)``).

  Memory: the compiled step's ``memory_analysis()`` (argument + output + temp - alias bytes,
  what the program needs resident) on every backend, the device's ``peak_bytes_in_use`` after
  the runs where reported (GPU; a process-wide high-water mark) and the process's max RSS."""
  cfg = get_config(preset, [f'train.batch_size={batch}', *overrides])
  training = ts.build_training(cfg, dtype=DTYPES[dtype])
  state = training.init_state(init_variables(cfg, seed=0))
  batch_arrays = jax.device_put(synthetic_train_batch(cfg, batch))
  compiled, compile_times = compile_program(training.step, state, batch_arrays)

  holder = {'state': state}

  def one_step():
    holder['state'], metrics = compiled(holder['state'], batch_arrays)
    return holder['state'], metrics

  times = time_calls(one_step, opts.repeats, opts.warmup, opts.max_seconds)
  summary = summarize_times(times)
  _, metrics = one_step()
  return {'preset': preset, 'input_size': cfg.max_size, 'batch': batch, 'dtype': dtype,
          'freeze_bn': training.freeze_bn, 'stages': [{
              'stage': 'train_step', **compile_times, **summary, **cost_of(compiled),
              'memory': memory_of(compiled),
              'images_per_s': batch / (summary['median_ms'] / 1e3)}],
          'loss_finite': bool(np.isfinite(float(metrics['loss']))),
          'max_rss_bytes': max_rss_bytes(), 'device_peak_bytes': device_peak_bytes()}


def run_train(cases: Sequence[Case], opts: TimingOptions, log: Callable) -> list[dict]:
  """:func:`train_case` for every case; a failed case is recorded with its error."""
  results = []
  for preset, batch, dtype in cases:
    log(f'train {preset} batch {batch} {dtype}')
    results.append(guarded(lambda: train_case(preset, batch, dtype, opts),
                           {'preset': preset, 'batch': batch, 'dtype': dtype}, log))
  return results
