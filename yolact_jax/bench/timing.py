"""How every speed figure of the project is taken: the benchmark's sections, ``evaluate
--benchmark`` and the side-by-side with the original all time through this module.

A program is lowered and compiled explicitly first (compile time reported apart, never inside a
run time); then ``warmup`` untimed calls, then timed calls, each ending once its work is done
(``jax.block_until_ready`` on the outputs, or the callable's own synchronisation). A time budget
stops timing early, but never below ``MIN_TIMED_RUNS`` calls. Durations are summarised as median,
p10, p90, mean, min and max in milliseconds. Callables compared with each other are interleaved
round-robin, so a shared machine's changing load falls on all of them alike.

Nothing here imports JAX at module level: the comparison pins its threads before JAX starts.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from typing import Any, Callable, Sequence

import numpy as np

MIN_TIMED_RUNS = 3  # timed calls kept even when a time budget runs out


@dataclasses.dataclass
class TimingOptions:
  """``warmup`` untimed calls, then up to ``repeats`` timed ones, stopping after
  ``max_seconds`` (but never below ``MIN_TIMED_RUNS``)."""
  warmup: int
  repeats: int
  max_seconds: float


def summarize_times(seconds: Sequence[float]) -> dict[str, Any]:
  """Durations in seconds -> median, p10, p90, mean, min and max in milliseconds, and runs."""
  ms = np.asarray(seconds, np.float64) * 1e3
  return {'median_ms': float(np.median(ms)), 'p10_ms': float(np.percentile(ms, 10)),
          'p90_ms': float(np.percentile(ms, 90)), 'mean_ms': float(ms.mean()),
          'min_ms': float(ms.min()), 'max_ms': float(ms.max()), 'runs': int(ms.size)}


def block_until_ready(value: Any) -> Any:
  """``jax.block_until_ready`` (JAX imported on first use)."""
  import jax
  return jax.block_until_ready(value)


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1,
               max_seconds: float | None = None,
               wait: Callable[[Any], Any] | None = block_until_ready) -> list[float]:
  """Durations (s) of up to ``repeats`` calls of ``fn()`` after ``warmup`` untimed ones. Each
  call's result is passed to ``wait`` inside the timer (default: blocked on, so the device work
  is timed; None where ``fn`` finishes its work itself). With ``max_seconds``, timing stops once
  that budget is spent, but never before ``MIN_TIMED_RUNS`` calls."""
  finish = wait or (lambda value: value)
  for _ in range(warmup):
    finish(fn())
  durations: list[float] = []
  budget_start = time.perf_counter()
  while len(durations) < repeats:
    start = time.perf_counter()
    finish(fn())
    durations.append(time.perf_counter() - start)
    if (max_seconds is not None and len(durations) >= MIN_TIMED_RUNS
        and time.perf_counter() - budget_start > max_seconds):
      break
  return durations


def time_interleaved(runs: dict[Any, Callable[[int], Any]], num_batches: int, warmup: int,
                     repeats: int, setup: dict[Any, Callable[[], Any]] | None = None
                     ) -> dict[Any, list[float]]:
  """Seconds per key of ``repeats`` timed calls ``runs[key](batch_index)`` after ``warmup``
  untimed ones, cycling over ``num_batches`` batches (each callable must finish its work, i.e.
  synchronise, before returning). First the warm-up of each, then ``repeats`` rounds in which
  every callable runs once on the same batch (round ``k`` on batch ``(warmup + k) %
  num_batches``, starting at the ``k``-th callable). ``setup[key]``, where given, runs untimed
  before every call of ``runs[key]``."""
  keys = list(runs)
  setup = setup or {}
  no_setup = lambda: None  # noqa: E731
  for key in keys:
    for k in range(warmup):
      setup.get(key, no_setup)()
      runs[key](k % num_batches)
  times: dict[Any, list[float]] = {key: [] for key in keys}
  for k in range(repeats):
    for key in keys[k % len(keys):] + keys[:k % len(keys)]:
      setup.get(key, no_setup)()
      t0 = time.perf_counter()
      runs[key]((warmup + k) % num_batches)
      times[key].append(time.perf_counter() - t0)
  return times


def speed_summary(ours: dict[str, list[float]], theirs: dict[str, list[float]],
                  batch_size: int) -> dict[str, Any]:
  """Per side ('ours', 'original') and stage: time summary and images/s; and per stage the
  speed-up of ours over the original (their median / ours)."""
  out: dict[str, Any] = {'ours': {}, 'original': {}, 'speedup': {}}
  for side, times in (('ours', ours), ('original', theirs)):
    for stage, seconds in times.items():
      s = summarize_times(seconds)
      s['images_per_s'] = batch_size / (s['median_ms'] / 1e3)
      out[side][stage] = s
  for stage in set(ours) & set(theirs):
    out['speedup'][stage] = out['original'][stage]['median_ms'] / out['ours'][stage]['median_ms']
  return out


def compile_program(jitted: Any, *args: Any, **static: Any) -> tuple[Any, dict[str, float]]:
  """Explicit lowering + compilation: (compiled, {'lower_s', 'compile_s'}). No persistent
  compilation cache is enabled, so compile times are cold."""
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
  import jax
  stats = jax.devices()[0].memory_stats()
  return int(stats['peak_bytes_in_use']) if stats and 'peak_bytes_in_use' in stats else None


def max_rss_bytes() -> int:
  """This process's peak resident set size so far (Linux reports kB)."""
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


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
