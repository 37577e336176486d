"""Runtime shims that let the original run on a modern, possibly CPU-only stack: each applied
only while needed and restored afterwards; no file of the user's checkout is touched.

1. :func:`cuda_calls_for_cpu`: ``torch.cuda`` calls the original makes without needing CUDA.
2. A missing ``torchvision`` is stubbed (:mod:`yolact_jax.compare.import_stubs`); an unusable
   ``dcn_v2`` extension is stood in for by :class:`yolact_jax.compare.dcn_torch.DCN`
   (:func:`dcn_v2_stand_in`).
3. :func:`plain_torchscript_classes`: the original's TorchScript FPN as a plain module.
4. :func:`numpy_legacy_aliases`: the ``np.float`` / ``np.int`` / ... numpy >= 1.24 removed.
5. :func:`torch_load_on_cpu`: official checkpoints (CUDA tensors) load without CUDA.
"""

from __future__ import annotations

import contextlib
import importlib
import types
from typing import Any, Iterator

import numpy as np

from yolact_jax.compare.import_stubs import stub_missing_module

# Shim 2: packages the original imports at module level for things the YOLACT presets never use
# (dcn_v2: see dcn_v2_stand_in, which serves a working DCN).
STUBBED_WHEN_MISSING = ('torchvision',)
NUMPY_LEGACY_ALIASES = {'float': float, 'int': int, 'bool': bool, 'object': object,
                        'complex': complex, 'str': str}


@contextlib.contextmanager
def patched_attributes(target: Any, values: dict[str, Any]) -> Iterator[None]:
  """Set attributes on ``target`` for the duration; restore (or delete) them afterwards."""
  missing = object()
  saved = {name: target.__dict__.get(name, missing) if isinstance(target, types.ModuleType)
           else getattr(target, name, missing) for name in values}
  try:
    for name, value in values.items():
      setattr(target, name, value)
    yield
  finally:
    for name, old in saved.items():
      if old is missing:
        with contextlib.suppress(AttributeError):
          delattr(target, name)
      else:
        setattr(target, name, old)


def cuda_calls_for_cpu(torch: Any) -> contextlib.AbstractContextManager:
  """Shim 1: ``torch.cuda.current_device()`` -> 0 and ``synchronize()`` a no-op, only when CUDA
  is unavailable (otherwise nothing changes): the original's ``yolact.py`` calls
  ``current_device()`` when imported, which raises on CPU-only PyTorch."""
  if torch.cuda.is_available():
    return contextlib.nullcontext()
  return patched_attributes(torch.cuda, {'current_device': lambda: 0,
                                         'synchronize': lambda device=None: None})


def dcn_v2_usable(torch: Any) -> bool:
  """Whether the original's compiled ``dcn_v2`` extension can run here: CUDA is available and
  ``import dcn_v2`` succeeds (it fails when the extension was not built, or built for another
  torch)."""
  if not torch.cuda.is_available():
    return False
  try:
    importlib.import_module('dcn_v2')
  except Exception:  # noqa: BLE001 - an unbuilt or mismatched extension fails in several ways
    return False
  return True


@contextlib.contextmanager
def dcn_v2_stand_in(torch: Any) -> Iterator[bool]:
  """Shim 2 for ``dcn_v2``: unless :func:`dcn_v2_usable`, ``from dcn_v2 import DCN`` yields
  the pure-PyTorch :class:`yolact_jax.compare.dcn_torch.DCN` while active. Yields whether it
  does. (``dcn_v2`` is the compiled extension in the original's ``external/DCNv2``, the
  deformable 3x3 conv its YOLACT++ backbones import; it builds only against CUDA.)"""
  if dcn_v2_usable(torch):
    yield False
    return
  from yolact_jax.compare.dcn_torch import DCN
  with stub_missing_module('dcn_v2', attributes={'DCN': DCN}, replace=True) as used:
    yield used


def plain_torchscript_classes(torch: Any) -> contextlib.AbstractContextManager:
  """Shim 3: ``torch.jit.ScriptModule`` -> ``torch.nn.Module`` and ``torch.jit.script_method``
  -> identity, so classes defined meanwhile are ordinary modules (with at most one GPU visible
  the original makes its FPN a ``ScriptModule``; the math is the same)."""
  return patched_attributes(torch.jit, {'ScriptModule': torch.nn.Module,
                                        'script_method': lambda fn, *args, **kwargs: fn})


def numpy_legacy_aliases() -> contextlib.AbstractContextManager:
  """Shim 4: the builtin aliases numpy >= 1.24 removed (only those missing are set), which the
  original's dataset code and Cython NMS use."""
  missing = {name: value for name, value in NUMPY_LEGACY_ALIASES.items()
             if name not in np.__dict__}
  return patched_attributes(np, missing)


def torch_load_on_cpu(torch: Any) -> contextlib.AbstractContextManager:
  """Shim 5: without CUDA, ``torch.load`` maps storages to the CPU unless told otherwise."""
  if torch.cuda.is_available():
    return contextlib.nullcontext()
  original_load = torch.load

  def load(*args, **kwargs):
    kwargs.setdefault('map_location', 'cpu')
    return original_load(*args, **kwargs)
  return patched_attributes(torch, {'load': load})


@contextlib.contextmanager
def original_runtime_shims(torch: Any) -> Iterator[dict[str, bool]]:
  """Shims 1, 2, 4 and 5 for the whole session (the original calls into them at run time too).
  Yields which are active. Shim 3 is only for the import
  (:func:`yolact_jax.compare.original.import_original`)."""
  with contextlib.ExitStack() as stack:
    stack.enter_context(cuda_calls_for_cpu(torch))
    stubbed = {name: stack.enter_context(stub_missing_module(name))
               for name in STUBBED_WHEN_MISSING}
    dcn_torch = stack.enter_context(dcn_v2_stand_in(torch))
    stack.enter_context(numpy_legacy_aliases())
    stack.enter_context(torch_load_on_cpu(torch))
    yield {'cuda_calls_for_cpu': not torch.cuda.is_available(),
           **{f'{name}_stub': used for name, used in stubbed.items()},
           'dcn_v2_torch': dcn_torch,
           'numpy_legacy_aliases': True,
           'torch_load_on_cpu': not torch.cuda.is_available(),
           'plain_torchscript_during_import': True}
