"""The environment of the tests' subprocesses (CPU, the project on the path, the tests'
persistent compilation cache, optionally N forced host devices) and ``python -m yolact_jax``
run in one."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]


def subprocess_env(devices: int | None = None, **extra: str) -> dict[str, str]:
  cache = os.environ.get('YOLACT_JAX_TEST_CACHE', str(ROOT / '.jax_cache'))
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT),
             JAX_COMPILATION_CACHE_DIR=os.path.abspath(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='1', **extra)
  env.pop('YOLACT_JAX_TRACEBACK', None)  # the one-line errors are what is tested
  if devices is not None:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def run_cli(args: Sequence[str], cwd: str | os.PathLike, devices: int | None = None,
            timeout: float = 600, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess:
  """``python [prefix...] -m yolact_jax ARGS`` (``prefix``: e.g. ``-c WRAPPER`` code that
  runs the module itself) with a bounded wait; stdout and stderr captured as text."""
  command = [sys.executable, *(prefix or ('-m', 'yolact_jax')), *map(str, args)]
  return subprocess.run(command, cwd=cwd, env=subprocess_env(devices), capture_output=True,
                        text=True, timeout=timeout)
