"""What a benchmark record says about the machine and the code: CPU and git commit.

Standard library only, so scripts can describe the machine before (or without) importing JAX.
"""

from __future__ import annotations

import os
import pathlib
import platform
import subprocess
from typing import Any


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
