"""scripts/gpu_check.py --cpu-dry-run: every step at tiny size on the CPU, JSON and markdown out."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cpu_dry_run_writes_its_report(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, 'scripts/gpu_check.py', '--cpu_dry_run', '--out',
                        str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  report = json.loads((tmp_path / 'gpu_check_cpu_dry_run.json').read_text())
  assert report['mode'] == 'cpu dry run' and report['environment']['platform'] == 'cpu'
  steps = {s['name']: s for s in report['steps']}
  assert steps['parity tests (float32, highest precision)']['ok']
  assert steps['benchmark (inference, NMS, train step)']['ok']
  assert steps['exported program (StableHLO) on the device vs the CPU']['ok']
  assert steps['compare_pytorch --device cuda']['skipped'] == 'dry run'
  exported = json.loads((tmp_path / 'gpu_check_cpu_dry_run_exported.json').read_text())
  (case,) = exported['exported']
  assert case['agreement']['matched'] == case['agreement']['num_original'] > 0
  assert '## Exported program (StableHLO)' in (tmp_path / 'gpu_check_cpu_dry_run.md').read_text()
  bench = report['benchmark']
  assert bench['inference'] and bench['nms'], sorted(bench)
  assert {row['dtype'] for row in bench['train']} == {'float32', 'bfloat16'}
  assert all(row['loss_finite'] for row in bench['train'])
  assert '| benchmark (inference, NMS, train step) | ok |' in (
      tmp_path / 'gpu_check_cpu_dry_run.md').read_text()
