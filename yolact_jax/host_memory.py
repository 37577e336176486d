"""How the process hands freed host memory back: kept for reuse (``keep``) or returned (``release``).

XLA:CPU allocates every buffer of a compiled program afresh on each call (the train step's
temporaries are one block of 2 GB at batch 2 and 9.6 GB at batch 8 for ``yolact_resnet50``) and
frees it afterwards. glibc's malloc serves blocks over 32 MiB, and every block of a thread's own
arena over 64 MiB, with a fresh ``mmap`` and returns them with ``munmap``, so each call faults in
and zeroes every page again: 0.5 million page faults and 1 s of system time per batch-2 step,
4 million and 10-16 s per batch-8 step on a 2-core machine.

``keep`` sets glibc's malloc to serve every thread from the main arena, never ``mmap`` a block
and never trim the heap (``mallopt``: ``M_ARENA_MAX`` 1, ``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD``
unlimited): freed blocks stay in the process and the next call reuses them without a fault. The
process keeps its high-water mark of host memory until it exits. Measured on the batch-8 step:
22.4 s instead of 27.0 s (docs/performance.md#host-memory).

The setting is process-wide and binds threads when they first allocate, so :func:`apply` it
before the first JAX computation (the command line does, from ``--host_memory``); it changes no
value that any program computes. Outside glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

MODES = ('keep', 'release')
DEFAULT = 'keep'

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_UNLIMITED = -1  # read by mallopt as SIZE_MAX for M_TRIM_THRESHOLD

_applied: str | None = None


def available() -> bool:
  """Whether the C library is glibc (elsewhere :func:`apply` does nothing)."""
  return platform.system() == 'Linux' and platform.libc_ver()[0] == 'glibc'


def _glibc() -> ctypes.CDLL | None:
  if not available():
    return None
  try:
    return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
  except OSError:
    return None


def apply(mode: str = DEFAULT) -> str | None:
  """Sets how freed host memory is handled (``keep`` or ``release``, see the module doc);
  returns the mode now in force, or None where the C library is not glibc. ``release`` leaves
  glibc's defaults (it cannot undo an earlier ``keep``: the arenas are already bound)."""
  global _applied
  if mode not in MODES:
    raise ValueError(f'host memory mode must be one of {", ".join(MODES)}, not {mode!r}')
  libc = _glibc()
  if libc is None:
    return None
  if mode == 'keep':
    for parameter, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                             (_M_TRIM_THRESHOLD, _UNLIMITED)):
      if libc.mallopt(parameter, value) != 1:
        raise OSError(f'glibc mallopt({parameter}, {value}) failed')
  if _applied != 'keep':
    _applied = mode
  return _applied


def mode() -> str | None:
  """The mode :func:`apply` set in this process (None: never applied, glibc's defaults)."""
  return _applied
