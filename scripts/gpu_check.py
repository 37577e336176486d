"""One command for a GPU machine: environment, reference parity on the GPU, benchmarks, train-step
throughput and memory, and the side-by-side with the original; JSON + markdown under results/.

  python scripts/gpu_check.py                       # on the GPU machine (about 5-8 minutes)
  python scripts/gpu_check.py --yolact-repo ~/yolact  # also compare_pytorch.py --device cuda
  python scripts/gpu_check.py --cpu-dry-run         # every step at tiny size on the CPU

Steps (each one bounded in time; a failing step is recorded and the next one runs):
  1. environment: device, driver, jax / jaxlib / CUDA versions, the float32 matmul precision.
  2. parity: the reference-parity tests on the device in float32 with
     JAX_DEFAULT_MATMUL_PRECISION=highest (recent NVIDIA GPUs otherwise run float32 products in
     TF32, which is named in the report wherever it is in force).
  3. benchmark.py: yolact_base and yolact_resnet50 at batch 1 and 8 in float32 and bfloat16
     (network, Detect, end to end, Fast NMS alone), and the train step at batch 8 in float32 and
     bfloat16 (images/s, peak device memory).
  4. the exported StableHLO program (cuda + cpu in one artefact) beside the live one on the
     device, and its detections there against the same artefact on the CPU.
  5. compare_pytorch.py --device cuda (inference and train step) when PyTorch with CUDA and a
     checkout of the original (--yolact-repo) are present.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PARITY_TESTS = ('tests/test_anchors.py', 'tests/test_model_parity.py', 'tests/test_detect.py',
                'tests/test_postprocess.py', 'tests/test_loss.py')


def run_step(name: str, command: list[str], timeout_s: int, env: dict | None = None) -> dict:
  """Runs one command with a time limit; returns its record (never raises)."""
  print(f'[gpu_check] {name}: {" ".join(command)}', flush=True)
  start = time.perf_counter()
  try:
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout_s)
    record = {'returncode': out.returncode, 'stdout_tail': out.stdout[-4000:],
              'stderr_tail': out.stderr[-4000:]}
  except subprocess.TimeoutExpired as e:
    record = {'returncode': None, 'timed_out_after_s': timeout_s,
              'stdout_tail': (e.stdout or b'')[-4000:].decode(errors='replace')
              if isinstance(e.stdout, bytes) else (e.stdout or '')[-4000:]}
  record.update(name=name, command=command, seconds=round(time.perf_counter() - start, 1),
                ok=record.get('returncode') == 0)
  print(f'[gpu_check] {name}: {"ok" if record["ok"] else "FAILED"} in {record["seconds"]} s',
        flush=True)
  return record


def environment(platform: str) -> dict:
  """Device, driver and versions (jax imported here only)."""
  import jax
  import jaxlib
  devices = jax.devices()
  info = {'jax': jax.__version__, 'jaxlib': jaxlib.__version__, 'platform': devices[0].platform,
          'devices': [str(d) for d in devices], 'device_kind': devices[0].device_kind,
          'python': sys.version.split()[0],
          'default_matmul_precision': str(jax.config.jax_default_matmul_precision),
          'float32_products': ('TF32 unless precision=highest (NVIDIA default)'
                               if devices[0].platform == 'gpu' else 'float32')}
  if platform == 'cuda' and shutil.which('nvidia-smi'):
    smi = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version,memory.total',
                          '--format=csv,noheader'], capture_output=True, text=True, timeout=30)
    info['nvidia_smi'] = smi.stdout.strip()
  try:
    from jax.extend import backend
    info['platform_version'] = backend.get_backend().platform_version
  except Exception as e:  # informational only
    info['platform_version'] = f'unknown ({type(e).__name__})'
  try:
    import torch
    info['torch'] = torch.__version__
    info['torch_cuda'] = bool(torch.cuda.is_available())
  except ImportError:
    info['torch'] = None
  return info


def benchmark_command(dry_run: bool, out: pathlib.Path) -> list[str]:
  if dry_run:
    sizes = ['--presets', 'yolact_tiny', '--batch-sizes', '1', '--dtypes', 'float32,bfloat16',
             '--train-presets', 'yolact_tiny', '--train-batch-sizes', '2',
             '--train-dtypes', 'float32,bfloat16', '--repeats', '2', '--warmup', '1',
             '--image-hw', '48,64', '--nms-classes', '8', '--nms-batch', '1',
             '--nms-kinds', 'fast', '--max-seconds', '5']
  else:
    sizes = ['--presets', 'yolact_base,yolact_resnet50', '--batch-sizes', '1,8',
             '--dtypes', 'float32,bfloat16', '--train-presets', 'yolact_base,yolact_resnet50',
             '--train-batch-sizes', '8', '--train-dtypes', 'float32,bfloat16',
             '--repeats', '20', '--max-seconds', '20']
  return [sys.executable, 'scripts/benchmark.py', '--only', 'inference,nms,train', *sizes,
          '--out', str(out)]


def exported_command(dry_run: bool, out: pathlib.Path) -> list[str]:
  """The served (exported) program beside the live one, and its detections on the device
  against the same artefact on the CPU (``benchmark.py --only exported``)."""
  sizes = (['--presets', 'yolact_tiny', '--image-hw', '48,64', '--repeats', '2'] if dry_run
           else ['--presets', 'yolact_resnet50', '--repeats', '20', '--max-seconds', '20'])
  return [sys.executable, 'scripts/benchmark.py', '--only', 'exported', '--batch-sizes', '1',
          '--dtypes', 'float32', '--warmup', '1', *sizes, '--out', str(out)]


def markdown(report: dict) -> str:
  env = report['environment']
  lines = [f'# GPU check ({report["mode"]}, {report["date"]})', '',
           f'- device: {env.get("device_kind")} ({env.get("platform")}), '
           f'{env.get("nvidia_smi", "no nvidia-smi")}',
           f'- jax {env.get("jax")}, jaxlib {env.get("jaxlib")}, '
           f'{env.get("platform_version")}, Python {env.get("python")}',
           f'- float32 products: {env.get("float32_products")}; parity run with '
           'JAX_DEFAULT_MATMUL_PRECISION=highest', '',
           '| step | result | seconds |', '|---|---|---|']
  for step in report['steps']:
    result = 'ok' if step['ok'] else ('skipped: ' + step['skipped'] if 'skipped' in step
                                      else 'FAILED')
    lines.append(f'| {step["name"]} | {result} | {step.get("seconds", "")} |')
  bench_md = report.get('benchmark_markdown')
  if bench_md:
    lines += ['', '## Benchmark', '', bench_md]
  return '\n'.join(lines) + '\n'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--cpu_dry_run', '--cpu-dry-run', action='store_true',
                      help='every step at tiny size on the CPU (what CI runs)')
  parser.add_argument('--yolact_repo', '--yolact-repo', default=None,
                      help='a checkout of dbolya/yolact for the side-by-side step')
  parser.add_argument('--out', default=str(ROOT / 'results'), help='folder for the report')
  args = parser.parse_args(argv)
  platform = 'cpu' if args.cpu_dry_run else 'cuda'
  env = dict(os.environ, JAX_PLATFORMS=platform, PYTHONPATH=str(ROOT))
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  os.environ['JAX_PLATFORMS'] = platform
  info = environment(platform)
  tag = 'cpu_dry_run' if args.cpu_dry_run else info['device_kind'].lower().replace(' ', '-')
  steps = []

  parity_env = dict(env, JAX_DEFAULT_MATMUL_PRECISION='highest')
  tests = ['tests/test_anchors.py'] if args.cpu_dry_run else list(PARITY_TESTS)
  steps.append(run_step('parity tests (float32, highest precision)',
                        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *tests],
                        timeout_s=240, env=parity_env))

  bench_out = out_dir / f'gpu_check_{tag}_benchmark.json'
  steps.append(run_step('benchmark (inference, NMS, train step)',
                        benchmark_command(args.cpu_dry_run, bench_out), timeout_s=360, env=env))

  exported_out = out_dir / f'gpu_check_{tag}_exported.json'
  steps.append(run_step('exported program (StableHLO) on the device vs the CPU',
                        exported_command(args.cpu_dry_run, exported_out), timeout_s=150,
                        env=dict(env, JAX_PLATFORMS=f'{platform},cpu' if platform != 'cpu'
                                 else 'cpu')))

  if args.yolact_repo and info.get('torch_cuda') and not args.cpu_dry_run:
    steps.append(run_step('compare_pytorch --device cuda', [
        sys.executable, 'scripts/compare_pytorch.py', '--yolact-repo', args.yolact_repo,
        '--config', 'yolact_resnet50', '--random-weights', '0', '--device', 'cuda',
        '--train-step', '--out', str(out_dir / f'gpu_check_{tag}_compare')],
        timeout_s=240, env=env))
  else:
    reason = ('dry run' if args.cpu_dry_run else 'no --yolact-repo' if not args.yolact_repo
              else 'PyTorch with CUDA not available')
    steps.append({'name': 'compare_pytorch --device cuda', 'ok': False, 'skipped': reason})

  report = {'mode': 'cpu dry run' if args.cpu_dry_run else 'gpu',
            'date': datetime.datetime.now().isoformat(timespec='seconds'),
            'environment': info, 'steps': steps}
  bench_md = bench_out.with_suffix('.md')
  if bench_md.exists():
    report['benchmark_markdown'] = bench_md.read_text()
  if exported_out.with_suffix('.md').exists():
    report['benchmark_markdown'] = (report.get('benchmark_markdown', '') + '\n'
                                    + exported_out.with_suffix('.md').read_text())
  bench_json = bench_out.with_suffix('.json')
  if bench_json.exists():
    report['benchmark'] = json.loads(bench_json.read_text())
  (out_dir / f'gpu_check_{tag}.json').write_text(json.dumps(report, indent=1, default=str))
  (out_dir / f'gpu_check_{tag}.md').write_text(markdown(report))
  print(f'[gpu_check] wrote {out_dir / f"gpu_check_{tag}.json"} and .md')
  return 0 if all(s['ok'] or 'skipped' in s for s in steps) else 1


if __name__ == '__main__':
  sys.exit(main())
