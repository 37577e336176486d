"""Timing both sides the same way: batches cycled, warm-up untimed, loops interleaved."""

from __future__ import annotations

import time
from typing import Any, Callable


def time_batches(run: Callable[[int], Any], num_batches: int, warmup: int, repeats: int
                 ) -> list[float]:
  """Seconds of ``repeats`` calls ``run(batch_index)`` after ``warmup`` untimed ones, cycling
  over the batches (``run`` must finish its work, i.e. synchronise, before returning)."""
  for k in range(warmup):
    run(k % num_batches)
  times = []
  for k in range(repeats):
    t0 = time.perf_counter()
    run((warmup + k) % num_batches)
    times.append(time.perf_counter() - t0)
  return times


def time_interleaved(runs: dict[Any, Callable[[int], Any]], num_batches: int, warmup: int,
                     repeats: int, setup: dict[Any, Callable[[], Any]] | None = None
                     ) -> dict[Any, list[float]]:
  """:func:`time_batches` for several callables at once: the warm-up of each, then ``repeats``
  rounds in which every callable runs once on the same batch (round ``k`` starts at the ``k``-th
  callable), so load that changes over time falls on all of them alike. ``setup[key]``, where
  given, runs untimed before every call of ``runs[key]``. Returns seconds per key."""
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
  """Per side and stage: time summary and images/s; ours-vs-original speed-up per stage."""
  from yolact_jax.benchmarking import summarize_times  # jax is imported only when needed
  out: dict[str, Any] = {'ours': {}, 'original': {}, 'speedup': {}}
  for side, times in (('ours', ours), ('original', theirs)):
    for stage, seconds in times.items():
      s = summarize_times(seconds)
      s['images_per_s'] = batch_size / (s['median_ms'] / 1e3)
      out[side][stage] = s
  for stage in set(ours) & set(theirs):
    out['speedup'][stage] = out['original'][stage]['median_ms'] / out['ours'][stage]['median_ms']
  return out
