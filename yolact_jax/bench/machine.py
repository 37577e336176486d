"""The machine a benchmark runs on: CPU, git commit, what to record about it, its peak FLOP/s.

Nothing here imports JAX at module level, so scripts and the comparison can describe the machine
before JAX starts (or without it).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import re
import subprocess
from typing import Any, Sequence

from yolact_jax import host_memory

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Dense peak TFLOP/s of known accelerators (vendor data sheets; no structured sparsity).
# 'bfloat16': tensor cores; 'float32': CUDA cores (non-tensor); 'tf32': tensor-core TF32.
# Matched against jax's device_kind in order (first substring hit wins).
GPU_PEAK_TFLOPS = (
    ('H200', {'bfloat16': 989.4, 'float32': 66.9, 'tf32': 494.7}),
    ('H100 PCIe', {'bfloat16': 756.5, 'float32': 51.2, 'tf32': 378.0}),
    ('H100', {'bfloat16': 989.4, 'float32': 66.9, 'tf32': 494.7}),  # SXM5 ('H100 80GB HBM3')
    ('A100', {'bfloat16': 312.0, 'float32': 19.5, 'tf32': 156.0}),
)


def cpu_info() -> dict[str, Any]:
  """Model name, vendor, clock (MHz, as /proc/cpuinfo reports it) and ISA flags of CPU 0."""
  info = {'model': platform.processor() or platform.machine(), 'vendor': None, 'mhz': None,
          'flags': []}
  try:
    text = pathlib.Path('/proc/cpuinfo').read_text()
  except OSError:
    return info
  first = text.split('\n\n')[0]
  fields = dict(line.split(':', 1) for line in first.splitlines() if ':' in line)
  fields = {k.strip(): v.strip() for k, v in fields.items()}
  info['model'] = fields.get('model name', info['model'])
  info['vendor'] = fields.get('vendor_id')
  if 'cpu MHz' in fields:
    info['mhz'] = float(fields['cpu MHz'])
  info['flags'] = fields.get('flags', '').split()
  return info


def git_commit(path: str | os.PathLike, short: bool = False) -> str | None:
  """The commit checked out at ``path`` (None outside a git checkout or without git)."""
  command = ['git', 'rev-parse'] + (['--short'] if short else []) + ['HEAD']
  try:
    out = subprocess.run(command, cwd=path, capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


def usable_cores() -> int:
  """CPUs this process may run on (its affinity), which is what XLA's thread pool uses."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def fp32_flops_per_cycle(flags: Sequence[str], vendor: str | None) -> int:
  """Assumed peak fp32 FLOPs per core per cycle from the ISA flags.

  2 FMA pipes x vector lanes x 2 (a fused multiply-add is 2 FLOPs): 256-bit AVX2/FMA -> 32;
  512-bit AVX-512 on Intel server cores (two 512-bit FMA units) -> 64; AMD Zen 4 executes
  AVX-512 on 256-bit units -> 32; without FMA, 2 x 4-lane SSE add + mul -> 16.
  """
  if 'avx512f' in flags and vendor == 'GenuineIntel':
    return 64
  if 'fma' in flags:
    return 32
  return 16


def cpu_peak_gflops(cores: int, mhz: float | None, flops_per_cycle: int) -> float | None:
  """cores x clock x FLOPs/cycle, in GFLOP/s (None when the clock is unknown)."""
  if not mhz:
    return None
  return cores * mhz / 1e3 * flops_per_cycle


def device_peak_tflops(device_kind: str, platform_name: str, dtype: str,
                       cpu: dict[str, Any], cores: int,
                       override: float | None = None) -> tuple[float | None, str]:
  """(peak TFLOP/s, how it was obtained) for computing in ``dtype`` on this device."""
  if override:
    return override, 'given with --peak_tflops'
  if platform_name == 'cpu':
    per_cycle = fp32_flops_per_cycle(cpu.get('flags', []), cpu.get('vendor'))
    gflops = cpu_peak_gflops(cores, cpu.get('mhz'), per_cycle)
    if gflops is None:
      return None, 'unknown CPU clock'
    return gflops / 1e3, (
        f'estimate: {cores} cores x {cpu.get("mhz"):.0f} MHz (/proc/cpuinfo, not the boost clock)'
        f' x {per_cycle} fp32 FLOPs/cycle (2 FMA pipes x lanes x 2); the same figure is '
        'assumed for bfloat16 (no bf16 speed-up on XLA:CPU)')
  for needle, peaks in GPU_PEAK_TFLOPS:
    if needle.lower() in device_kind.lower():
      return peaks.get(dtype), (f'{needle} data sheet, dense {dtype} '
                                f'({"tensor cores" if dtype == "bfloat16" else "CUDA cores"})')
  return None, f'no peak known for {device_kind!r}; pass --peak_tflops'


def thp_mode(path: str = '/sys/kernel/mm/transparent_hugepage/enabled') -> str | None:
  """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``), or None."""
  try:
    text = pathlib.Path(path).read_text()
  except OSError:
    return None
  start, end = text.find('['), text.find(']')
  return text[start + 1:end] if 0 <= start < end else None


def machine_info() -> dict[str, Any]:
  """Everything needed to judge a figure: software, device, CPU, cores, load, date."""
  import flax
  import jax
  import numpy as np
  device = jax.devices()[0]
  cpu = cpu_info()
  return {
      'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'jax': jax.__version__,
      'jaxlib': _jaxlib_version(),
      'flax': flax.__version__,
      'numpy': np.__version__,
      'python': platform.python_version(),
      'platform': device.platform,
      'device_kind': device.device_kind,
      'device_count': jax.device_count(),
      'cpu_model': cpu['model'],
      'cpu_vendor': cpu['vendor'],
      'cpu_mhz': cpu['mhz'],
      'cpu_cores_usable': usable_cores(),
      'cpu_count': os.cpu_count(),
      'load_average_start': list(os.getloadavg()),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),  # e.g. glibc.malloc.hugetlb=1
      'host_memory': host_memory.mode(),  # keep / release / None (glibc's defaults)
      'transparent_huge_pages': thp_mode(),
      'git_commit': git_commit(PROJECT_ROOT, short=True),
  }


def _jaxlib_version() -> str | None:
  try:
    import jaxlib
    return jaxlib.__version__
  except (ImportError, AttributeError):
    return None


def machine_slug(info: dict[str, Any]) -> str:
  """A file-name part naming the machine: ``cpu-amd-epyc-2c`` or ``nvidia-h100-80gb-hbm3``."""
  if info['platform'] == 'cpu':
    name = f'cpu-{info["cpu_model"]}-{info["cpu_cores_usable"]}c'
  else:
    name = info['device_kind']
  return re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


def device_description() -> dict[str, Any]:
  """The first JAX device's platform and kind, the device count and the jax version."""
  import jax
  device = jax.devices()[0]
  return {'platform': device.platform, 'device_kind': device.device_kind,
          'num_devices': jax.device_count(), 'jax_version': jax.__version__}
