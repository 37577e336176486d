"""Where the original's reference numbers live, and a skip helper for a clone without them.

Tests read ``../shared/reference/`` from the project root (CI has it; a user's clone may not).
Set ``YOLACT_REFERENCE_DIR`` to point elsewhere.
"""

import os
import pathlib

import pytest

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_DIR = pathlib.Path(os.environ.get('YOLACT_REFERENCE_DIR',
                                            PROJECT_ROOT.parent / 'shared' / 'reference'))
RESNET50_DIR = REFERENCE_DIR / 'yolact_resnet50'


def require_reference(*names: str) -> pathlib.Path:
  """Skips the calling test (with the reason) unless the reference folder and files exist."""
  if not REFERENCE_DIR.is_dir():
    pytest.skip(f'reference data not found at {REFERENCE_DIR} (it ships beside the project in '
                f'CI as ../shared/reference; set YOLACT_REFERENCE_DIR to use another copy)')
  for name in names:
    if not (REFERENCE_DIR / name).exists():
      pytest.skip(f'reference file {REFERENCE_DIR / name} not found')
  return REFERENCE_DIR
