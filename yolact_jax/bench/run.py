"""A whole benchmark run from ``scripts/benchmark.py``'s parsed command line: the sections in
order, then the JSON and the markdown report written."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any, Callable, Sequence

from yolact_jax.config import NMS_KINDS
from yolact_jax.bench import convgrad, convnet, dcn, exported, flops, inference, nms, train
from yolact_jax.bench.grid import SECTIONS, Case, csv_list, resolve_cases
from yolact_jax.bench.inputs import default_reference_dir
from yolact_jax.bench.machine import PROJECT_ROOT, machine_info, machine_slug
from yolact_jax.bench.report import fmt_load, markdown_report, to_jsonable
from yolact_jax.bench.timing import MIN_TIMED_RUNS, TimingOptions, max_rss_bytes


def checked_sections(args: argparse.Namespace) -> list[str]:
  """The sections asked for; an unknown section or NMS kind ends the program."""
  sections = csv_list(args.only)
  unknown = [s for s in sections if s not in SECTIONS]
  if unknown:
    raise SystemExit(f'unknown section(s) {unknown}; choose from {", ".join(SECTIONS)}')
  for kind in args.nms_kinds:
    if kind not in NMS_KINDS:
      raise SystemExit(f'unknown NMS kind {kind!r}; use {", ".join(NMS_KINDS)}')
  bad_stages = [s for s in args.inference_stages if s not in inference.INFERENCE_STAGES]
  if bad_stages:
    raise SystemExit(f'unknown inference stage(s) {bad_stages}; choose from '
                     f'{", ".join(inference.INFERENCE_STAGES)}')
  return sections


def run_sections(args: argparse.Namespace, sections: Sequence[str], machine: dict[str, Any],
                 grid: str, opts: TimingOptions, cases: tuple[list[Case], list[Case]],
                 log: Callable) -> dict[str, Any]:
  """The results of every section in ``sections`` on the (inference, train) ``cases`` (the
  run's settings included)."""
  inference_cases, train_cases = cases
  probe = args.matmul_probe_size if args.matmul_probe_size is not None \
      else (2048 if machine['platform'] == 'cpu' else 8192)
  results: dict[str, Any] = {
      'machine': machine,
      'settings': {'sections': list(sections), 'grid': grid, 'warmup': opts.warmup,
                   'repeats': opts.repeats, 'max_seconds': opts.max_seconds,
                   'min_timed_runs': MIN_TIMED_RUNS, 'image_hw': list(args.image_hw),
                   'inference_cases': inference_cases, 'train_cases': train_cases,
                   'inference_stages': list(args.inference_stages)},
  }
  if 'inference' in sections:
    results['inference'] = inference.run_inference(inference_cases, args.image_hw,
                                                   args.nms_kinds, opts, log,
                                                   args.inference_stages)
  if 'nms' in sections:
    results['nms'] = nms.run_nms(args.nms_batch, args.nms_top_k, args.nms_classes,
                                 args.reference_dir or default_reference_dir(), opts, log)
  if 'train' in sections:
    results['train'] = train.run_train(train_cases, opts, log)
  if 'convgrad' in sections:
    results['convgrad'] = convgrad.run_convgrad(args.convgrad_batch, 'float32', opts, log)
  if 'convnet' in sections:
    results['convnet'] = convnet.run_convnet(args.convnet_preset, args.convgrad_batch, opts, log)
  if 'dcn' in sections:
    results['dcn'] = dcn.run_dcn(args.dcn_presets, args.dcn_dtype, args.dcn_batch,
                                 args.dcn_train_batch, opts, log, results)
  if 'exported' in sections:
    results['exported'] = exported.run_exported(inference_cases, args.image_hw, opts, log)
  if 'flops' in sections:
    results['flops'] = flops.run_flops(results, machine, inference_cases, args.peak_tflops,
                                       probe, opts, log)
  return results


def write_results(results: dict[str, Any], out: pathlib.Path) -> None:
  """``out`` (JSON) and the markdown report beside it (same name, ``.md``)."""
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1) + '\n')
  out.with_suffix('.md').write_text(markdown_report(results) + '\n')


def run_benchmark(args: argparse.Namespace, argv: Sequence[str] | None = None
                  ) -> dict[str, Any]:
  """Run the sections ``args`` asks for, write ``args.out`` (default
  ``results/benchmark_<machine>.json``) and its ``.md``, and return the results. ``argv`` is
  recorded in the settings (default ``sys.argv[1:]``)."""
  sections = checked_sections(args)
  log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))  # noqa: E731
  machine = machine_info()
  grid = args.grid if args.grid != 'auto' else ('cpu' if machine['platform'] == 'cpu' else 'full')
  opts = TimingOptions(warmup=args.warmup,
                       repeats=args.repeats or (10 if grid == 'cpu' else 50),
                       max_seconds=args.max_seconds or (60.0 if grid == 'cpu' else 30.0))
  cases = resolve_cases(args, grid)
  out = args.out or PROJECT_ROOT / 'results' / f'benchmark_{machine_slug(machine)}.json'
  log(f'machine: {machine["device_kind"]} / {machine["cpu_model"]}, '
      f'{machine["cpu_cores_usable"]} cores, load {fmt_load(machine["load_average_start"])}')
  results = run_sections(args, sections, machine, grid, opts, cases, log)
  results['settings']['argv'] = list(argv) if argv is not None else sys.argv[1:]
  machine['load_average_end'] = list(os.getloadavg())
  machine['max_rss_bytes_end'] = max_rss_bytes()
  results = to_jsonable(results)
  write_results(results, out)
  log(f'wrote {out} and {out.with_suffix(".md")}')
  return results
