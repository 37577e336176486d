"""Run directories are read by the checkpoint package alone: a Predictor loads a train.py run
without importing the training loop, grain or the data loader."""

import logging
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from yolact_jax import trainer
from yolact_jax.checkpoint import convert, io, runs
from yolact_jax.config import get_config
from yolact_jax.data import coco, loader, synthetic

CFG = get_config('yolact_tiny', ['train.freeze_bn=False'])
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('run')
  paths = synthetic.generate_synthetic_coco(root / 'data', num_train=4, num_val=0,
                                            image_hw=(72, 80), seed=5)
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(*paths['train']))
  summary = trainer.train(CFG, root / 'run', source,
                          trainer.TrainOptions(num_steps=2, progress=False, save_every=2))
  return root / 'run', jax.device_get(trainer.state_variables(summary['state']))


def test_run_variables_are_the_trained_state(run_dir):
  path, trained = run_dir
  loaded = io.load_weights(path, CFG)  # dispatches to runs.load_run_variables
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(trained)
  for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(trained)):
    np.testing.assert_array_equal(a, b)


def test_run_of_another_shape_is_a_clear_error(run_dir):
  path, _ = run_dir
  other = get_config('yolact_tiny', ['model.fpn.num_features=8'])
  with pytest.raises(convert.CheckpointError, match='does not fit preset'):
    runs.load_run_variables(path, other)


def test_predictor_from_a_run_imports_no_training_code(run_dir):
  path, _ = run_dir
  script = textwrap.dedent(f'''
      import sys
      import numpy as np
      from yolact_jax.config import get_config
      from yolact_jax.predict import Predictor
      cfg = get_config('yolact_tiny', ['train.freeze_bn=False'])
      predictor = Predictor(cfg, {str(path)!r}, max_batch=1)
      image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
      (dets,) = predictor([image], channel_order='rgb')
      assert dets.masks.shape[1:] == (50, 70), dets.masks.shape
      loaded = sorted(m for m in sys.modules
                      if m == 'grain' or m.startswith(('grain.', 'yolact_jax.data',
                                                       'yolact_jax.trainer',
                                                       'yolact_jax.train_step')))
      print('LOADED', loaded)
  ''')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', script], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'LOADED []' in out.stdout, out.stdout


def test_only_orphaned_writes_under_the_failed_directory_are_silenced(tmp_path):
  """After a failed save, asyncio's records of the unretrieved write tasks under that checkpoint
  directory are dropped; its other records, and those about another directory, still pass."""
  failed, other = tmp_path / 'run' / 'checkpoints', tmp_path / 'other' / 'checkpoints'
  logger = logging.getLogger('asyncio')
  before = list(logger.filters)
  seen = []

  class Keep(logging.Handler):
    def emit(self, record):
      seen.append(record.getMessage())

  handler = Keep()
  logger.addHandler(handler)
  try:
    runs.silence_orphaned_writes(failed)
    runs.silence_orphaned_writes(failed)  # installed once
    assert len(logger.filters) == len(before) + 1
    orphan = ('Task exception was never retrieved\nfuture: <Task finished coro=<write_fragment()>'
              " exception=RESOURCE_EXHAUSTED('No space left on device: {}/4.orbax-checkpoint-tmp"
              "/state/d/0')>")
    logger.error(orphan.format(failed))
    # the futures orbax gathers the writes in fail the same way, under their own class names
    gathered = ('_GatheringFuture exception was never retrieved\nfuture: <_GatheringFuture '
                "finished exception=ValueError('RESOURCE_EXHAUSTED: Error writing \"bn1.var/0\" "
                "in OCDBT database at local file \"{}/4.orbax-checkpoint-tmp/state/\"')>")
    logger.error(gathered.format(failed))
    logger.error(gathered.replace('_GatheringFuture', 'Future', 1).format(failed))
    logger.error(orphan.format(other))
    logger.error('Unclosed client session under %s', failed)
    assert seen == [orphan.format(other), f'Unclosed client session under {failed}']
  finally:
    logger.removeHandler(handler)
    logger.filters[:] = before
