"""A short look at the network: build the CPU-sized YOLACT, run it jit-compiled, print shapes.

  python scripts/demo_network.py [--config yolact_cpu] [--batch 2]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--config', default='yolact_cpu')
  parser.add_argument('--batch', type=int, default=2)
  args = parser.parse_args(argv)

  from yolact_jax.anchors import make_priors
  from yolact_jax.config import load_config
  from yolact_jax.model.variables import init_variables
  from yolact_jax.model.yolact import Yolact
  cfg = load_config(args.config)
  model = Yolact(cfg.model, num_classes=cfg.num_classes)
  images = np.random.default_rng(0).normal(size=(args.batch, cfg.max_size, cfg.max_size, 3))
  images = images.astype(np.float32)
  variables = init_variables(cfg, seed=0)
  count = sum(x.size for x in jax.tree_util.tree_leaves(variables['params']))
  forward = jax.jit(lambda v, x: model.apply(v, x))
  start = time.perf_counter()
  out = jax.block_until_ready(forward(variables, images))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  out = jax.block_until_ready(forward(variables, images))
  run_s = time.perf_counter() - start
  print(f'{cfg.name}: {count:,} parameters, input {images.shape}, '
        f'{len(make_priors(cfg))} priors')
  for key, value in out.items():
    print(f'  {key:6s} {tuple(value.shape)}')
  print(f'first call (compile + run) {compile_s:.2f}s, forward {run_s * 1000:.1f} ms '
        f'on {jax.devices()[0].platform}')


if __name__ == '__main__':
  main()
