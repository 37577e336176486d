"""Data parallelism: several devices and several processes compute what one device computes.

Multi-device runs need XLA_FLAGS set before jax starts, so they run in subprocesses
(``tests/parallel_worker.py``, ``tests/distributed_worker.py``); two processes meet over
127.0.0.1 with gloo collectives.
"""

import json
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.cli_run import subprocess_env
from yolact_jax import parallel
from yolact_jax.data import synthetic

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _env(devices: int) -> dict:
  return subprocess_env(devices)


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


def test_a_run_resumes_on_one_and_on_four_devices(tmp_path):
  """Stopped at step 2 on 2 devices and resumed on 1 and on 4: the parameters of the
  uninterrupted 2-device run (float reordering apart), the data position and BatchNorm mode
  kept, and each run directory says where it last ran."""
  r = _worker(['resume_across_devices', str(tmp_path)], devices=4)
  assert r['devices'] == 4
  for count in (1, 4):
    assert r[f'max_diff_{count}'] <= 1e-6 < 1e-3 * r['moved'], r
    assert r[f'freeze_bn_{count}'] is True and r[f'num_devices_{count}'] == count, r


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


def _single(data_dir, workdir, steps, out, devices):
  """The distributed worker's run as one process on ``devices`` devices."""
  done = subprocess.run(
      [sys.executable, '-m', 'tests.distributed_worker', str(data_dir), str(workdir), str(steps),
       str(out)], cwd=ROOT, env=_env(devices), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]


def _kill_after_checkpoint(procs, checkpoints, after: int, victim: int):
  """SIGKILL of process ``victim`` once a checkpoint newer than ``after`` is complete; the
  survivor's exit status and stderr (it must end by itself, within a bounded wait)."""
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline:
    done = [int(m.parent.name) for m in checkpoints.glob('*/_CHECKPOINT_METADATA')
            if m.parent.name.isdigit()]
    if any(step > after for step in done):
      break
    assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
    time.sleep(0.2)
  procs[victim].send_signal(signal.SIGKILL)
  procs[victim].wait()
  survivor = _finish(procs[1 - victim])
  return (*survivor, max(done))


def _assert_one_line_naming(status, err, lost: int, checkpoints):
  assert status == parallel.PEER_LOST_EXIT, err[-3000:]
  for noise in ('Traceback', 'Check failure', '*** '):
    assert noise not in err, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith(f'error: lost process {lost} of 2 (its connection closed'), last
  assert 'the newest checkpoint is step ' in last and str(checkpoints) in last, last


def test_two_processes_match_one_and_resume_on_any_topology_after_losing_one(four_images,
                                                                             tmp_path):
  """Each process loads its half of every global batch, so a two-process run resumed as one
  process on one device continues as the two processes do; after either process is killed (the
  survivor ends within seconds, one line) the restarted processes continue exactly.

  The gradient all-reduce over processes (gloo) sums in another order than within one process,
  so the two topologies agree to float rounding.
  """
  _wait(_start_processes(four_images, tmp_path / 'two', 8, tmp_path / 'eight.npz'))
  eight = _params(tmp_path / 'eight.npz')
  # The data position is one number, the global records drawn: the same on every topology.
  data = json.loads((tmp_path / 'two' / 'checkpoints' / '4' / 'data' / 'metadata').read_text())
  assert data['position'] == 16

  # Stopped at step 4 by two processes, resumed to step 8 as one process on one device.
  shutil.copytree(tmp_path / 'two', tmp_path / 'as_one')
  for later in (6, 8):
    shutil.rmtree(tmp_path / 'as_one' / 'checkpoints' / str(later))
  _single(four_images, tmp_path / 'as_one', 8, tmp_path / 'as_one.npz', devices=1)
  as_one = _params(tmp_path / 'as_one.npz')
  assert as_one.keys() == eight.keys()
  for key in eight:  # a wrong split of the batches would differ by a whole update
    np.testing.assert_allclose(as_one[key], eight[key], rtol=1e-3, atol=1e-4, err_msg=key)

  # Process 1 killed: process 0 ends by itself; then process 0 killed: process 1 ends.
  checkpoints = tmp_path / 'killed' / 'checkpoints'
  procs = _start_processes(four_images, tmp_path / 'killed', 200, tmp_path / 'unused.npz')
  status, err, newest = _kill_after_checkpoint(procs, checkpoints, after=0, victim=1)
  _assert_one_line_naming(status, err, 1, checkpoints)
  procs = _start_processes(four_images, tmp_path / 'killed', 200, tmp_path / 'unused.npz')
  status, err, newest = _kill_after_checkpoint(procs, checkpoints, after=newest, victim=0)
  _assert_one_line_naming(status, err, 0, checkpoints)
  assert newest < 8, 'the run went past step 8 before the kill: nothing left to compare'
  _wait(_start_processes(four_images, tmp_path / 'killed', 8, tmp_path / 'resumed.npz'))
  resumed = _params(tmp_path / 'resumed.npz')
  for key in eight:
    np.testing.assert_array_equal(resumed[key], eight[key], err_msg=key)


def test_evaluation_over_two_processes_gathers_every_image(tmp_path):
  """Process 0 scores the results (COCOeval) and then lingers 10 s while process 1 is done: more
  than JAX's shutdown barrier allows here (5 s), so both must meet first and exit cleanly."""
  synthetic.generate_synthetic_coco(tmp_path / 'data', num_train=0, num_val=5, image_hw=(64, 80),
                                    seed=4)
  command = [sys.executable, '-m', 'tests.distributed_worker', 'evaluate', str(tmp_path / 'data')]
  single = subprocess.run([*command, str(tmp_path / 'one.json')], cwd=ROOT, env=_env(1),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  address = f'127.0.0.1:{_free_port()}'
  _wait([subprocess.Popen([*command, str(tmp_path / 'two.json'), address, '2', str(i), '10'],
                          cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) for i in range(2)])
  one = json.loads((tmp_path / 'one.json').read_text())
  two = json.loads((tmp_path / 'two.json').read_text())
  assert len(one['image_ids']) == 5 and two['image_ids'] == one['image_ids']
  assert two['num_segm'] == one['num_segm'] > 0
  for key, value in one['summary'].items():
    assert two['summary'][key] == pytest.approx(value, abs=1e-6), key


def _watchers(modes, timeout_s):
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'tests.peer_watch_worker', str(port), str(len(modes)), str(i),
       str(timeout_s), mode], cwd=ROOT, env=_env(1), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i, mode in enumerate(modes)]
  for p in procs:
    assert p.stdout.readline().strip() == 'READY', p.stderr.read()[-3000:]
  return procs


def _finish(p, timeout=120):
  """The exit status and stderr of ``p`` (killed if it has not ended in ``timeout`` s)."""
  try:
    _, err = p.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    p.kill()
    _, err = p.communicate()
    return None, err
  return p.returncode, err


def test_a_silent_process_stops_the_others_with_one_line():
  """Process 2 of 3 stops answering (SIGSTOP, as a hung host): after the watch's timeout
  process 0 and, told by it, process 1 end with one line naming process 2, exit status 1.
  Process 0's last line takes 2 s to make: process 1 has ended by then, and its end of file
  must not become process 0's reported cause."""
  procs = _watchers(['wait:2', 'wait', 'wait'], timeout_s=3)
  try:
    procs[2].send_signal(signal.SIGSTOP)
    for p in procs[:2]:
      status, err = _finish(p)
      assert status == parallel.PEER_LOST_EXIT, err
      lines = err.strip().splitlines()
      assert len(lines) == 1 and lines[0].startswith(
          'error: lost process 2 of 3 (no sign of life for 3 s)'), err
      assert lines[0].endswith('nothing to resume in this test'), err
  finally:
    procs[2].kill()
    procs[2].wait()


def test_the_final_barrier_waits_for_a_late_process_and_is_bounded():
  procs = _watchers(['barrier:0', 'barrier:4'], timeout_s=2)  # 4 s late, within 3 x 2 s
  for p in procs:
    status, err = _finish(p)
    assert status == 0 and err == '', err
  procs = _watchers(['barrier:0', 'wait'], timeout_s=2)  # process 1 never comes
  try:
    status, err = _finish(procs[0])
    assert status == parallel.PEER_LOST_EXIT, err
    assert err.strip().startswith('error: processes [1] did not reach the end of the run '
                                  'within 6 s of process 0'), err
  finally:
    procs[1].kill()
    procs[1].wait()


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
