"""Access to the original implementation's reference outputs (``../shared/reference/``).

Tests that need them call :func:`require_reference`, which skips with a clear reason when the
folder is absent (a user's clone has no ``../shared``). ``YOLACT_REFERENCE_DIR`` overrides the
location.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get('YOLACT_REFERENCE_DIR',
                                    PROJECT_ROOT.parent / 'shared' / 'reference'))
RESNET50_DIR = REFERENCE_DIR / 'yolact_resnet50'
PLUS_RESNET50_DIR = REFERENCE_DIR / 'yolact_plus_resnet50'


def require_reference(*relative: str) -> Path:
  """Path of ``REFERENCE_DIR / relative``; skips the calling test when it does not exist."""
  path = REFERENCE_DIR.joinpath(*relative)
  if not path.exists():
    pytest.skip(f'reference data not found at {path} (needs ../shared/reference from the '
                'project root, present in CI; set YOLACT_REFERENCE_DIR to override)')
  return path


@functools.lru_cache(maxsize=8)
def _load_npz(path: Path) -> dict[str, np.ndarray]:
  with np.load(path) as data:
    return {key: data[key] for key in data.files}


def load_npz(*relative: str) -> dict[str, np.ndarray]:
  """All arrays of a reference ``.npz`` (cached per process); skips when absent."""
  return _load_npz(require_reference(*relative))
