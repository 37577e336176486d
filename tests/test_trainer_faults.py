"""Faults a training run meets in its first week, through the real command line: a run made on
two devices read and resumed on one, a run that diverges, a full disk, a second Ctrl-C during
the save. Each ends in one line and leaves the newest intact checkpoint to resume from."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.cli_run import ROOT, run_cli, subprocess_env
from yolact_jax import trainer
from yolact_jax.data import synthetic

TINY_TRAIN = ['train', '--config', 'yolact_tiny', '--no_eval', '--no_progress', '--from_scratch']


def _errors(stderr: str) -> list[str]:
  """The ``error:`` lines of a command's stderr."""
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def _steps(checkpoints: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


def _leftovers(checkpoints: pathlib.Path) -> list[str]:
  return [p.name for p in checkpoints.iterdir() if 'tmp' in p.name]


@pytest.fixture(scope='module')
def small_data(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  synthetic.generate_synthetic_coco(root, num_train=8, num_val=3, image_hw=(64, 64), seed=6)
  return root


# ------------------------------------------------------------------------ another topology

_READ_ON_ONE_DEVICE = textwrap.dedent('''
    import json, sys
    import jax
    from yolact_jax import cli
    from yolact_jax.checkpoint import io
    from yolact_jax.config import get_config
    run, data, out = sys.argv[1:4]
    statuses = {
        'predict': cli.main(['predict', '--weights', run, f'{data}/val', '--out', f'{out}/pred',
                             '--no_progress']),
        'evaluate': cli.main(['evaluate', '--weights', run, '--data', 'synthetic',
                              '--data_dir', data, '--out', f'{out}/eval']),
        'convert': cli.main(['convert', '--config', 'yolact_tiny', run, f'{out}/run.pth']),
        'export': cli.main(['export', '--weights', run, '--format', 'stablehlo',
                            '--out', f'{out}/served.stablehlo', '--platforms', 'cpu']),
    }
    variables = io.load_weights(run, get_config('yolact_tiny'))
    print('RESULT', json.dumps({'devices': jax.device_count(), 'statuses': statuses,
                                'leaves': len(jax.tree_util.tree_leaves(variables))}))
''')


def test_a_run_made_on_two_devices_is_read_and_resumed_on_one(small_data, tmp_path):
  """Train on 8 GPUs, evaluate on a laptop: every reader of a run directory restores onto the
  devices it has (was: 'Topology mismatch detected'), and the run resumes there."""
  run = tmp_path / 'run'
  common = [*TINY_TRAIN, '--data', 'synthetic', '--data_dir', small_data, '--workdir', run]
  made = run_cli([*common, '--steps', '2'], tmp_path, devices=2)
  assert made.returncode == 0, made.stderr[-3000:]
  assert json.loads((run / 'config.json').read_text())['num_devices'] == 2

  read = subprocess.run([sys.executable, '-c', _READ_ON_ONE_DEVICE, str(run), str(small_data),
                         str(tmp_path / 'out')], cwd=tmp_path, env=subprocess_env(1),
                        capture_output=True, text=True, timeout=900)
  assert read.returncode == 0, read.stderr[-3000:]
  result = json.loads(read.stdout.split('RESULT ')[-1])
  assert result['devices'] == 1 and result['leaves'] > 0, result
  assert result['statuses'] == dict.fromkeys(('predict', 'evaluate', 'convert', 'export'), 0), (
      read.stderr[-3000:])
  assert 'mask_map' in json.loads((tmp_path / 'out' / 'eval' / 'summary.json').read_text())

  resumed = run_cli([*common, '--steps', '3'], tmp_path, devices=1)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resumed from step 2' in resumed.stderr
  assert json.loads((run / 'config.json').read_text())['num_devices'] == 1
  assert _steps(run / 'checkpoints')[-1] == 3


# ------------------------------------------------------------------------------ divergence

def test_the_divergence_guard_counts_both_ways():
  in_a_row = trainer._NonFiniteGuard(in_a_row=3, fraction=0)
  in_a_row.observe(1, [True, False, False, True, False, False])
  assert in_a_row.verdict() is None  # two in a row at most
  in_a_row.observe(5, [False, False, False])  # 5 and 6 again (ignored), then 7: three in a row
  what, first = in_a_row.verdict()
  assert first == 5 and 'steps 5-7' in what and 'max_nonfinite_in_a_row=3' in what
  spread = trainer._NonFiniteGuard(in_a_row=0, fraction=0.05)
  flags = [step % 20 != 0 for step in range(1, 101)]  # 5 non-finite of 100: not more than 5%
  spread.observe(1, flags)
  assert spread.verdict() is None
  spread.observe(101, [False])  # the window slides: steps 2..101, 6 non-finite
  what, first = spread.verdict()
  assert first == 20 and what.startswith('6 of the last 100 steps')
  off = trainer._NonFiniteGuard(in_a_row=0, fraction=0)
  off.observe(1, [False] * 200)
  assert off.verdict() is None


def test_a_diverging_run_stops_with_one_line_naming_the_last_good_checkpoint(tmp_path):
  """Ten of the annotations have 0.5 px boxes (the original's discard rule keeps them): the
  mask loss explodes and the steps turn non-finite. The run stops with an error naming the
  newest checkpoint before the first non-finite step, and saves nothing after it."""
  paths = synthetic.generate_synthetic_coco(tmp_path / 'data', num_train=30, num_val=0,
                                            image_hw=(256, 256), seed=1)
  ann_file, image_dir = paths['train']
  data = json.loads(pathlib.Path(ann_file).read_text())
  for ann in data['annotations'][:10]:
    x, y = ann['bbox'][:2]
    ann.update(bbox=[x, y, 0.5, 0.5], area=0.25,
               segmentation=[[x, y, x + 0.5, y, x + 0.5, y + 0.5, x, y + 0.5]])
  (tmp_path / 'bad.json').write_text(json.dumps(data))
  run = tmp_path / 'run'
  done = run_cli([*TINY_TRAIN, '--data', 'coco', '--ann_file', tmp_path / 'bad.json',
                  '--image_dir', image_dir, '--workdir', run, '--steps', '60', '--log_every', '1',
                  '--save_every', '5'], tmp_path)
  assert done.returncode == 1, done.stderr[-3000:]
  assert 'fix_discard_box_units=True' in done.stderr  # the data check named the option
  [error] = _errors(done.stderr)
  assert error.startswith('error: training diverged at step '), error
  assert 'Traceback' not in done.stderr
  metrics = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
  first_bad = min(m['step'] for m in metrics if m['non_finite_in_interval'])
  kept = _steps(run / 'checkpoints')
  assert kept and kept[-1] < first_bad, (kept, first_bad)
  assert f'step {kept[-1]} in {run / "checkpoints"}, is kept' in error, error


# ------------------------------------------------------------------------------- full disk

def _can_mount_tmpfs() -> bool:
  try:
    probe = subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=1m tmpfs /mnt'],
                           capture_output=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return False
  return probe.returncode == 0


_FULL_DISK = textwrap.dedent('''
    set -u
    mount -t tmpfs -o size=64m tmpfs "$MNT"
    "$@" --steps 2 > "$OUT/first.out" 2> "$OUT/first.err"; echo $? > "$OUT/first.rc"
    used=$(df -k --output=used "$MNT" | tail -1)
    checkpoint=$(du -sk "$MNT/run/checkpoints/2" | cut -f1)
    # room for the logs of two more steps, not for another checkpoint
    mount -o remount,size=$((used + checkpoint / 2))k "$MNT"
    "$@" --steps 4 > "$OUT/second.out" 2> "$OUT/second.err"; echo $? > "$OUT/second.rc"
    cp -a "$MNT/run" "$OUT/run"
''')


@pytest.mark.skipif(not _can_mount_tmpfs(), reason='needs unshare -rm and a tmpfs mount (a small '
                    'full disk in a private mount namespace)')
def test_a_full_disk_is_one_line_and_the_run_resumes_from_the_intact_checkpoint(small_data,
                                                                                 tmp_path):
  mnt, out = tmp_path / 'mnt', tmp_path / 'out'
  mnt.mkdir(), out.mkdir()
  command = [sys.executable, '-m', 'yolact_jax', *TINY_TRAIN, '--data', 'synthetic',
             '--data_dir', str(small_data), '--workdir', str(mnt / 'run'), '--save_every', '2']
  env = dict(subprocess_env(), MNT=str(mnt), OUT=str(out))
  shell = subprocess.run(['unshare', '-rm', 'sh', '-c', _FULL_DISK, 'sh', *command], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=900)
  assert shell.returncode == 0, shell.stderr[-3000:]
  assert (out / 'first.rc').read_text().strip() == '0', (out / 'first.err').read_text()[-3000:]
  stderr = (out / 'second.err').read_text()
  assert (out / 'second.rc').read_text().strip() == '1', stderr[-3000:]
  lines = [line for line in stderr.splitlines() if not line.startswith(('INFO', 'WARNING'))]
  assert lines == [f'error: no space left on device while saving checkpoint 4 in '
                   f'{mnt / "run" / "checkpoints"}; checkpoint 2 is intact'], stderr[-3000:]
  assert _steps(out / 'run' / 'checkpoints') == [2]
  assert _leftovers(out / 'run' / 'checkpoints') == []

  # On a disk with room (a copy of the run), it resumes from step 2; a folder a killed save
  # left behind is cleaned up when the run opens its checkpoints.
  (out / 'run' / 'checkpoints' / '4.orbax-checkpoint-tmp-1').mkdir()
  resumed = run_cli([*TINY_TRAIN, '--data', 'synthetic', '--data_dir', small_data, '--workdir',
                     out / 'run', '--save_every', '2', '--steps', '4'], tmp_path)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resumed from step 2' in resumed.stderr
  assert _steps(out / 'run' / 'checkpoints') == [2, 4]
  assert _leftovers(out / 'run' / 'checkpoints') == []


# ---------------------------------------------------------------------- a second Ctrl-C

# The CLI with its third save (step 6) held up inside orbax for 120 s once written, after
# touching $SAVING: the two Ctrl-C can then be sent during that save.
_SLOW_THIRD_SAVE = textwrap.dedent('''
    import asyncio, os, pathlib, runpy
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler
    original = handler.JsonCheckpointHandler.async_save
    calls = []

    async def slow(self, *args, **kwargs):
      result = await original(self, *args, **kwargs)
      calls.append(1)
      if len(calls) == 3:
        pathlib.Path(os.environ['SAVING']).touch()
        await asyncio.sleep(120)
      return result

    handler.JsonCheckpointHandler.async_save = slow
    runpy.run_module('yolact_jax', run_name='__main__', alter_sys=True)
''')


def _wait_for(condition, proc, stderr_file, timeout=600):
  deadline = time.monotonic() + timeout
  while not condition():
    assert proc.poll() is None and time.monotonic() < deadline, stderr_file.read_text()[-3000:]
    time.sleep(0.1)


def test_a_second_ctrl_c_during_the_save_ends_the_process_quietly(small_data, tmp_path):
  """The first Ctrl-C (during a save) asks for a checkpoint and says what a second one would
  leave; the second ends the process at once, without a word or a traceback. The save it cut
  short leaves a temporary folder, which the resumed run removes."""
  run, saving, stderr_file = tmp_path / 'run', tmp_path / 'saving', tmp_path / 'stderr'
  command = [sys.executable, '-c', _SLOW_THIRD_SAVE, *TINY_TRAIN, '--data', 'synthetic',
             '--data_dir', str(small_data), '--workdir', str(run), '--save_every', '2',
             '--steps', '1000']
  with open(stderr_file, 'w') as err:
    proc = subprocess.Popen(command, cwd=tmp_path, env=subprocess_env(SAVING=str(saving)),
                            stdout=subprocess.DEVNULL, stderr=err)
  try:
    _wait_for(saving.exists, proc, stderr_file)
    proc.send_signal(signal.SIGINT)
    _wait_for(lambda: 'received SIGINT' in stderr_file.read_text(), proc, stderr_file)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  stderr = stderr_file.read_text()
  assert proc.returncode == -signal.SIGINT, stderr[-3000:]  # a shell reports 130
  assert 'Traceback' not in stderr and 'Error' not in stderr, stderr[-3000:]
  [first] = [line for line in stderr.splitlines() if 'received SIGINT' in line]
  assert first.endswith(f'(Ctrl-C again stops at once; the newest checkpoint is step 4 in '
                        f'{run / "checkpoints"})'), first
  assert _steps(run / 'checkpoints') == [2, 4]
  resumed = run_cli([*TINY_TRAIN, '--data', 'synthetic', '--data_dir', small_data, '--workdir',
                     run, '--save_every', '2', '--steps', '6'], tmp_path)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resumed from step 4' in resumed.stderr
  assert _steps(run / 'checkpoints') == [2, 4, 6] and _leftovers(run / 'checkpoints') == []
