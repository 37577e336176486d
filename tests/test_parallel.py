"""Data parallelism: several devices and several processes compute what one device computes.

Multi-device runs need XLA_FLAGS set before jax starts, so they run in subprocesses
(``tests/parallel_worker.py``, ``tests/distributed_worker.py``); two processes meet over
127.0.0.1 with gloo collectives.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from yolact_jax import parallel
from yolact_jax.data import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env(devices: int) -> dict:
  cache = os.environ.get('YOLACT_JAX_TEST_CACHE', str(ROOT / '.jax_cache'))
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT),
              XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              JAX_COMPILATION_CACHE_DIR=os.path.abspath(cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='1')


def _worker(args, devices=2, timeout=600) -> dict:
  out = subprocess.run([sys.executable, '-m', 'tests.parallel_worker', *args], cwd=ROOT,
                       env=_env(devices), capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  line = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


@pytest.mark.parametrize('overrides,frozen', [
    (['train.batch_size=4', 'train.freeze_bn=False', 'train.sync_batchnorm=True'], False),
    (['train.batch_size=4', 'train.freeze_bn=True'], True),
])
def test_two_devices_reach_the_parameters_of_one(overrides, frozen):
  r = _worker(['same_params', *overrides])
  assert r['devices'] == 2 and r['freeze_bn_1'] is frozen and r['freeze_bn_2'] is frozen
  assert r['bn_changed'] is (not frozen)
  assert r['max_diff'] <= 1e-5 * max(r['param_scale'], 1.0), r
  assert r['loss_1'] == pytest.approx(r['loss_2'], rel=1e-5)


def test_per_replica_batchnorm_is_two_half_batch_computations():
  r = _worker(['per_replica', 'train.batch_size=4', 'train.freeze_bn=False'])
  assert r['model_bn_groups'] == 2
  assert r['max_diff'] <= 1e-5, r
  assert r['sync_vs_per_replica_bn_stats'] > 1e-4, r  # the two modes really differ


def test_batchnorm_groups_normalise_each_slice_and_keep_the_first_slices_statistics():
  import jax
  from yolact_jax.model.layers import BatchNorm
  x = np.random.default_rng(0).normal(size=(4, 3, 5, 6)).astype(np.float32) * [1, 2, 3, 4, 5, 6]
  variables = BatchNorm().init(jax.random.key(0), x[:2])
  grouped, stats = BatchNorm(groups=2).apply(variables, x, train=True, mutable=['batch_stats'])
  first, first_stats = BatchNorm().apply(variables, x[:2], train=True, mutable=['batch_stats'])
  second, _ = BatchNorm().apply(variables, x[2:], train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(grouped, np.concatenate([first, second]), rtol=1e-5, atol=1e-6)
  for key in ('mean', 'var'):
    np.testing.assert_allclose(stats['batch_stats'][key], first_stats['batch_stats'][key],
                               rtol=1e-6)


def test_predictor_splits_a_batch_over_two_devices_and_lowers_for_cuda():
  r = _worker(['predictor_devices', 'detect.nms_conf_thresh=0.02'])
  assert r['num_devices'] == [1, 2] and r['same_detections'] and min(r['counts']) > 0, r
  assert [(c['devices'], c['dtype']) for c in r['lowered']] == [
      (1, 'float32'), (1, 'bfloat16'), (2, 'float32'), (2, 'bfloat16')]
  assert all(c['platforms'] == ['cuda'] and c['nr_devices'] == c['devices']
             for c in r['lowered'])


def test_train_step_lowers_for_cuda_on_one_and_two_devices():
  r = _worker(['lower_for_cuda'])
  for case in r['cases']:
    assert case['platforms'] == ['cuda'] and case['has_convolution'], case
    assert case['nr_devices'] == case['devices']
    assert case['has_bf16'] is (case['dtype'] == 'bfloat16'), case


# ------------------------------------------------------------------------ several processes


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_processes(data_dir, workdir, steps, out, num=2):
  address = f'127.0.0.1:{_free_port()}'
  return [subprocess.Popen(
      [sys.executable, '-m', 'tests.distributed_worker', str(data_dir), str(workdir), str(steps),
       str(out), address, str(num), str(i)], cwd=ROOT, env=_env(1), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(num)]


def _wait(procs, timeout=600):
  deadline = time.monotonic() + timeout
  try:
    for p in procs:
      _, err = p.communicate(timeout=max(deadline - time.monotonic(), 1))
      assert p.returncode == 0, err[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _params(path) -> dict:
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope='module')
def four_images(tmp_path_factory):
  root = tmp_path_factory.mktemp('four')
  synthetic.generate_synthetic_coco(root, num_train=4, num_val=0, image_hw=(64, 64), seed=11)
  return root


def test_two_processes_match_two_devices_and_resume_after_kill(four_images, tmp_path):
  """Each process loads its own half of the global batch (grain shards by process); with four
  images and a batch of four, every step sees the same four images however they are split.

  The gradient all-reduce over processes (gloo) sums in another order than within one process,
  so the two topologies agree to float rounding after a step; rounding differences then grow
  (the hard-negative ranking can turn one into a different choice), so they are compared after
  the first step.
  """
  single = subprocess.run(
      [sys.executable, '-m', 'tests.distributed_worker', str(four_images), str(tmp_path / 'one'),
       '1', str(tmp_path / 'one.npz')], cwd=ROOT, env=_env(2), capture_output=True, text=True,
      timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  _wait(_start_processes(four_images, tmp_path / 'two', 1, tmp_path / 'two.npz'))
  one, two = _params(tmp_path / 'one.npz'), _params(tmp_path / 'two.npz')
  assert one.keys() == two.keys()
  for key in one:  # the step moved parameters by ~1e-3; a wrong split would show at that size
    np.testing.assert_allclose(two[key], one[key], rtol=1e-4, atol=1e-5, err_msg=key)

  # Each process's data position is saved with the checkpoint.
  data_item = tmp_path / 'two' / 'checkpoints' / '1' / 'data'
  assert sorted(p.name for p in data_item.iterdir() if p.name.startswith('process_')) == [
      'process_0-of-2.json', 'process_1-of-2.json']

  # The same run resumed to step 4, and another killed (kill -9, both processes) after its
  # first checkpoint and restarted to step 4: the same parameters.
  _wait(_start_processes(four_images, tmp_path / 'two', 4, tmp_path / 'four.npz'))
  procs = _start_processes(four_images, tmp_path / 'killed', 20, tmp_path / 'unused.npz')
  checkpoint = tmp_path / 'killed' / 'checkpoints' / '2'
  deadline = time.monotonic() + 300
  while not (checkpoint / '_CHECKPOINT_METADATA').exists() and time.monotonic() < deadline:
    assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
    time.sleep(0.2)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  _wait(_start_processes(four_images, tmp_path / 'killed', 4, tmp_path / 'resumed.npz'))
  four, resumed = _params(tmp_path / 'four.npz'), _params(tmp_path / 'resumed.npz')
  for key in four:
    np.testing.assert_array_equal(resumed[key], four[key], err_msg=key)


def test_evaluation_over_two_processes_gathers_every_image(tmp_path):
  synthetic.generate_synthetic_coco(tmp_path / 'data', num_train=0, num_val=5, image_hw=(64, 80),
                                    seed=4)
  command = [sys.executable, '-m', 'tests.distributed_worker', 'evaluate', str(tmp_path / 'data')]
  single = subprocess.run([*command, str(tmp_path / 'one.json')], cwd=ROOT, env=_env(1),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  address = f'127.0.0.1:{_free_port()}'
  _wait([subprocess.Popen([*command, str(tmp_path / 'two.json'), address, '2', str(i)], cwd=ROOT,
                          env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
         for i in range(2)])
  one = json.loads((tmp_path / 'one.json').read_text())
  two = json.loads((tmp_path / 'two.json').read_text())
  assert len(one['image_ids']) == 5 and two['image_ids'] == one['image_ids']
  assert two['num_segm'] == one['num_segm'] > 0
  for key, value in one['summary'].items():
    assert two['summary'][key] == pytest.approx(value, abs=1e-6), key


def test_unreachable_coordinator_is_a_clear_error():
  start = time.monotonic()
  with pytest.raises(parallel.DistributedError, match='unreachable for 2 s'):
    parallel.initialize(f'127.0.0.1:{_free_port()}', 2, 1, timeout_s=2)
  assert time.monotonic() - start < 30


@pytest.mark.parametrize('args,match', [
    (('127.0.0.1:1', None, 0), 'go together'),
    (('127.0.0.1:1', 2, 2), 'outside 0..1'),
    (('nohostport', 2, 1), 'HOST:PORT'),
])
def test_bad_distributed_flags(args, match):
  with pytest.raises(parallel.DistributedError, match=match):
    parallel.initialize(*args, timeout_s=1)
