"""Compiling, timing and measuring one jitted program: the same procedure for every stage."""

from __future__ import annotations

import dataclasses
import resource
import time
import traceback
from typing import Any, Callable, Sequence

import jax

from yolact_jax.benchmarking import summarize_times, time_calls


@dataclasses.dataclass
class TimingOptions:
  """``warmup`` untimed calls, then up to ``repeats`` timed ones, stopping after
  ``max_seconds`` (but never below ``yolact_jax.benchmarking.MIN_TIMED_RUNS``)."""
  warmup: int
  repeats: int
  max_seconds: float


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


def guarded(fn: Callable[[], dict], header: dict, log: Callable) -> dict:
  """``fn()``, or ``header`` with the error when it fails (out of memory, ...): one failed case
  must not lose a long run's other results."""
  try:
    return fn()
  except Exception as exc:  # noqa: BLE001 - recorded, reported, and the run goes on
    log(f'  FAILED: {type(exc).__name__}: {exc}')
    return {**header, 'error': f'{type(exc).__name__}: {exc}',
            'traceback': traceback.format_exc(limit=5)}
