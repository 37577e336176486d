"""Where one train step's time goes: forward, loss, backward and optimiser, and the loss's
matching, hard negative mining and mask term (yolact_jax.bench.step_breakdown).

  python scripts/train_step_breakdown.py --config yolact_resnet50 --batch_size 2 --rounds 3 \
      --out results/train_step_breakdown_yolact_resnet50_b2.json

Writes the JSON (every program's times, FLOPs and page faults, the split, the machine) and a
markdown table beside it (``.md``), and prints the table. The page faults show how the step's
buffers are backed: ``--host_memory release`` for glibc's defaults (a fresh mapping per call),
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` with it for huge pages (docs/performance.md#host-memory).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
  from yolact_jax.bench.report import fmt_load, train_step_parser, write_results
  args = train_step_parser(__doc__.splitlines()[0], rounds=3).parse_args(argv)

  from yolact_jax.bench.machine import machine_info
  from yolact_jax.bench.step_breakdown import breakdown, markdown
  from yolact_jax.config import get_config
  start = machine_info()
  cfg = get_config(args.config, [f'train.batch_size={args.batch_size}'])
  result = {'config': args.config, **breakdown(cfg, args.batch_size, args.rounds),
            'machine': start, 'load_average_end': list(os.getloadavg())}
  table = markdown(result)
  write_results(args.out, result, (
      f"# Train step breakdown\n\n`{args.config}`, batch {args.batch_size}, {args.rounds} "
      f"interleaved rounds after 1 warm-up call each; host memory {start['host_memory']}, "
      f"GLIBC_TUNABLES {start['glibc_tunables'] or 'unset'}.\n\n{table}\nMachine: "
      f"{start.get('cpu_model', '?')}, load average {fmt_load(start.get('load_average_start'))} "
      f"before, {fmt_load(result['load_average_end'])} after.\n"))
  sys.stdout.write(table)


if __name__ == '__main__':
  main()
