"""The train step with and without its CPU compiler options, timed interleaved in one process.

  python scripts/train_step_options.py --config yolact_resnet50 --batch_size 2 --rounds 5 \
      --out results/train_step_options_yolact_resnet50_b2.json

Both programs are ``build_training``'s update on the same synthetic batch and weights, jitted
with XLA's defaults and with ``train_step.CPU_STEP_COMPILER_OPTIONS``; each round times one
step of each. Writes the JSON (every time, the medians, the machine) and prints the medians.
"""

from __future__ import annotations

import time


def main(argv: list[str] | None = None) -> None:
  from yolact_jax.bench.report import train_step_parser, write_results
  args = train_step_parser(__doc__.splitlines()[0], rounds=5).parse_args(argv)

  import jax
  import numpy as np

  from yolact_jax import train_step as ts
  from yolact_jax.bench.inputs import synthetic_train_batch
  from yolact_jax.bench.machine import machine_info
  from yolact_jax.config import get_config
  from yolact_jax.model.variables import init_variables

  cfg = get_config(args.config, [f'train.batch_size={args.batch_size}'])
  training = ts.build_training(cfg)
  variables = init_variables(cfg, seed=0)
  batch = jax.device_put(synthetic_train_batch(cfg, args.batch_size))
  variants = {'xla_defaults': None, 'step_options': ts.CPU_STEP_COMPILER_OPTIONS}
  programs, states, result = {}, {}, {'config': args.config, 'batch': args.batch_size,
                                      'options': ts.CPU_STEP_COMPILER_OPTIONS, 'variants': {}}
  for name, options in variants.items():
    states[name] = training.init_state(variables)
    start = time.perf_counter()
    programs[name] = jax.jit(training.update, donate_argnums=(0,),
                             compiler_options=options).lower(states[name], batch).compile()
    result['variants'][name] = {'compile_s': time.perf_counter() - start, 'times_ms': []}
    states[name], metrics = programs[name](states[name], batch)  # warm-up
    jax.block_until_ready(metrics)
  for _ in range(args.rounds):
    for name, program in programs.items():
      start = time.perf_counter()
      states[name], metrics = program(states[name], batch)
      jax.block_until_ready(metrics)
      result['variants'][name]['times_ms'].append((time.perf_counter() - start) * 1e3)
  for name, entry in result['variants'].items():
    entry['median_ms'] = float(np.median(entry['times_ms']))
    print(f"{name}: median {entry['median_ms']:.0f} ms over {args.rounds} steps")
  result['speedup'] = (result['variants']['xla_defaults']['median_ms']
                       / result['variants']['step_options']['median_ms'])
  print(f"step options: {result['speedup']:.3f}x")
  result['machine'] = machine_info()
  write_results(args.out, result)


if __name__ == '__main__':
  main()
