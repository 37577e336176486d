"""Where the ONNX program's time goes in ONNX Runtime (its profiler, per stage and operator type).

  python scripts/onnx_profile.py --config yolact_resnet50 --batch_size 1 --canvas 480 640 \
      --out results/onnx_profile_yolact_resnet50.json

Needs the [onnx] extra and jax2onnx (docs/serving.md). Writes the JSON and a markdown table
beside it (``.md``) with the machine.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', default='yolact_resnet50')
  parser.add_argument('--batch_size', type=int, default=1)
  parser.add_argument('--canvas', type=int, nargs=2, default=(480, 640), metavar=('H', 'W'))
  parser.add_argument('--runs', type=int, default=5)
  parser.add_argument('--threads', type=int, default=None, help='default: the usable CPUs')
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)

  from yolact_jax.bench.machine import machine_info
  from yolact_jax.bench.onnx_profile import markdown, profile_program
  from yolact_jax.bench.report import fmt_load, write_results
  result = profile_program(args.config, args.batch_size, tuple(args.canvas), args.runs,
                           args.threads)
  result['machine'] = machine_info()
  table = markdown(result)
  write_results(args.out, result, (
      f"# ONNX Runtime profile\n\n{table}\nMachine: {result['machine'].get('cpu_model', '?')}, "
      f"load average {fmt_load(result['machine'].get('load_average_start'))}.\n"))
  sys.stdout.write(table)


if __name__ == '__main__':
  main()
