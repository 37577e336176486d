"""Shared pytest set-up: the host memory mode every command uses (set before JAX starts its
threads, so the whole session runs under it), and a persistent XLA compilation cache so repeated
runs compile less."""

import os

from yolact_jax import host_memory

host_memory.apply(host_memory.DEFAULT)

import jax  # noqa: E402
import pytest  # noqa: E402

_CACHE = os.environ.get('YOLACT_JAX_TEST_CACHE',
                        os.path.join(os.path.dirname(__file__), '..', '.jax_cache'))
jax.config.update('jax_compilation_cache_dir', os.path.abspath(_CACHE))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


@pytest.fixture(scope='session')
def weights_dir(tmp_path_factory):
  """A random-init ``yolact_tiny`` saved as a Flax weights directory (for the CLI tests)."""
  from yolact_jax.checkpoint.io import save_weights
  from yolact_jax.config import get_config
  from yolact_jax.model.variables import init_variables
  cfg = get_config('yolact_tiny')
  variables = init_variables(cfg, seed=0)
  path = tmp_path_factory.mktemp('weights') / 'tiny'
  save_weights(path, variables, cfg)
  return path
