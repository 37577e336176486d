"""The benchmark's cases: (preset, batch, dtype) grids, their selection from the command line,
and running one without losing the others when it fails."""

from __future__ import annotations

import argparse
import traceback
from typing import Callable, Sequence

import jax.numpy as jnp

SECTIONS = ('inference', 'nms', 'train', 'flops', 'convgrad', 'convnet', 'dcn', 'exported')
DEFAULT_SECTIONS = ('inference', 'nms', 'train', 'flops')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# (preset, batch, dtype) grids. 'cpu' is sized for a few-core CPU; 'full' covers every preset.
CPU_INFERENCE_CASES = (('yolact_resnet50', 1, 'float32'), ('yolact_cpu', 1, 'float32'),
                       ('yolact_cpu', 8, 'float32'), ('yolact_tiny', 1, 'float32'),
                       ('yolact_tiny', 8, 'float32'))
FULL_INFERENCE_PRESETS = ('yolact_base', 'yolact_resnet50', 'yolact_darknet53', 'yolact_im400',
                          'yolact_im700', 'yolact_plus_base', 'yolact_plus_resnet50')
CPU_TRAIN_CASES = (('yolact_tiny', 2, 'float32'), ('yolact_cpu', 8, 'float32'),
                   ('yolact_resnet50', 2, 'float32'))
FULL_TRAIN_CASES = (('yolact_tiny', 8, 'float32'), ('yolact_resnet50', 8, 'float32'),
                    ('yolact_base', 8, 'float32'), ('yolact_darknet53', 8, 'float32'),
                    ('yolact_plus_resnet50', 8, 'float32'), ('yolact_plus_base', 8, 'float32'),
                    ('yolact_resnet50', 8, 'bfloat16'), ('yolact_base', 8, 'bfloat16'))
# The dcn section's presets (YOLACT++: the ones with DCN layers).
DCN_PRESETS = ('yolact_plus_resnet50',)

Case = tuple[str, int, str]  # (preset, batch, dtype name)


def csv_list(text: str) -> list[str]:
  """'a, b,,c' -> ['a', 'b', 'c']."""
  return [t.strip() for t in text.split(',') if t.strip()]


def parse_cases(presets: Sequence[str], batches: Sequence[int], dtypes: Sequence[str]
                ) -> list[Case]:
  """Every combination, presets outermost."""
  return [(p, b, d) for p in presets for b in batches for d in dtypes]


def _inference_cases(args: argparse.Namespace, grid: str, default_dtypes: list[str]
                     ) -> list[Case]:
  if args.presets:
    return parse_cases(args.presets, args.batch_sizes or [1, 8], args.dtypes or default_dtypes)
  if args.batch_sizes or args.dtypes:
    presets = sorted({c[0] for c in CPU_INFERENCE_CASES}) if grid == 'cpu' \
        else list(FULL_INFERENCE_PRESETS)
    return parse_cases(presets, args.batch_sizes or [1, 8], args.dtypes or default_dtypes)
  if grid == 'cpu':
    return list(CPU_INFERENCE_CASES)
  return parse_cases(FULL_INFERENCE_PRESETS, [1, 8], default_dtypes)


def _train_cases(args: argparse.Namespace, grid: str) -> list[Case]:
  default_batches = [2] if grid == 'cpu' else [8]
  if args.train_presets:
    return parse_cases(args.train_presets, args.train_batch_sizes or default_batches,
                       args.train_dtypes or ['float32'])
  train = list(CPU_TRAIN_CASES if grid == 'cpu' else FULL_TRAIN_CASES)
  if args.train_batch_sizes or args.train_dtypes:
    presets = list(dict.fromkeys(c[0] for c in train))
    train = parse_cases(presets, args.train_batch_sizes or default_batches,
                        args.train_dtypes or ['float32'])
  return train


def resolve_cases(args: argparse.Namespace, grid: str) -> tuple[list[Case], list[Case]]:
  """(inference cases, train cases) from the grid ('cpu' or 'full') and the explicit flags of
  ``scripts/benchmark.py`` (``presets``, ``batch_sizes``, ``dtypes`` and their ``train_``
  counterparts, None when not given). An unknown dtype ends the program."""
  default_dtypes = ['float32'] if grid == 'cpu' else ['float32', 'bfloat16']
  inference = _inference_cases(args, grid, default_dtypes)
  train = _train_cases(args, grid)
  for _, _, dtype in inference + train:
    if dtype not in DTYPES:
      raise SystemExit(f'unknown dtype {dtype!r}; use one of {", ".join(DTYPES)}')
  return inference, train


def guarded(fn: Callable[[], dict], header: dict, log: Callable) -> dict:
  """``fn()``, or ``header`` with the error when it fails (out of memory, ...): one failed case
  must not lose a long run's other results."""
  try:
    return fn()
  except Exception as exc:  # noqa: BLE001 - recorded, reported, and the run goes on
    log(f'  FAILED: {type(exc).__name__}: {exc}')
    return {**header, 'error': f'{type(exc).__name__}: {exc}',
            'traceback': traceback.format_exc(limit=5)}
