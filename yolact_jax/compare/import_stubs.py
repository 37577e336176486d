"""An import hook that stands in for a package that is not installed.

The original imports a few packages at module level for things the YOLACT presets never use:
``torchvision`` (for one class) and ``dcn_v2`` (the compiled CUDA extension only YOLACT++ uses).
While :func:`stub_missing_module` is active and such a package is missing, ``import root`` and
``import root.x.y`` succeed: a finder at the front of ``sys.meta_path`` serves a
:class:`StubModule` for ``root`` and every submodule. A stub's CamelCase attributes are
placeholder classes that raise :class:`PlaceholderError` when instantiated or called; its other
attributes are further stub submodules. The root may be given real attributes instead
(``attributes``: ``dcn_v2`` gets a working ``DCN``, :mod:`yolact_jax.compare.dcn_torch`), and a
module that is installed but unusable may be stood in for too (``replace``). On exit the finder
and every stub module are removed again (set-aside real modules put back), so nothing outlives
the comparison.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any, Iterator


class PlaceholderError(RuntimeError):
  """Something of a stub package was used (stubs only stand in for unused imports)."""


def placeholder(qualified_name: str) -> type:
  """A class standing in for an attribute of a stubbed package; using it raises PlaceholderError."""
  root = qualified_name.split('.')[0]

  def refuse(*args, **kwargs):
    raise PlaceholderError(f'{qualified_name} is a placeholder: {root} is not installed and '
                           'compare_pytorch.py stubbed it because the YOLACT presets do not use '
                           'it. Install {root} to use it.')
  return type(qualified_name.rsplit('.', 1)[-1], (), {'__init__': refuse, '__call__': refuse,
                                                      '__module__': qualified_name.rsplit('.', 1)[0]})


class StubModule(types.ModuleType):
  """A package whose unknown attributes are placeholders (CamelCase) or stub submodules."""

  def __getattr__(self, name: str) -> Any:
    if name.startswith('__'):
      raise AttributeError(name)
    if name[:1].isupper():
      value = placeholder(f'{self.__name__}.{name}')
    else:
      value = importlib.import_module(f'{self.__name__}.{name}')
    setattr(self, name, value)
    return value


class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """The import hook: serves :class:`StubModule` packages for ``root`` and its submodules."""

  def __init__(self, root: str, attributes: dict[str, Any] | None = None):
    self.root = root
    self.attributes = dict(attributes or {})

  def find_spec(self, fullname, path=None, target=None):
    if fullname == self.root or fullname.startswith(self.root + '.'):
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = StubModule(spec.name)
    module.__path__ = []
    module.__is_stub__ = True
    if spec.name == self.root:
      for name, value in self.attributes.items():
        setattr(module, name, value)
    return module

  def exec_module(self, module):
    pass


def module_available(name: str) -> bool:
  """Whether ``name`` can be imported (without importing it)."""
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


def _is_root_or_below(name: str, root: str) -> bool:
  return name == root or name.startswith(root + '.')


@contextlib.contextmanager
def stub_missing_module(root: str, attributes: dict[str, Any] | None = None,
                        replace: bool = False) -> Iterator[bool]:
  """While active, ``import root`` (and ``root.x.y``) works even if ``root`` is not installed;
  the stub root module carries ``attributes``. With ``replace`` the stub is served even when
  ``root`` is installed (already imported ``root`` modules are set aside meanwhile).
  Yields whether the stub is in use; afterwards the stub modules are removed."""
  if not replace and module_available(root):
    yield False
    return
  set_aside = {n: sys.modules.pop(n) for n in list(sys.modules) if _is_root_or_below(n, root)}
  finder = StubFinder(root, attributes)
  sys.meta_path.insert(0, finder)
  try:
    yield True
  finally:
    sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if _is_root_or_below(n, root)]:
      if getattr(sys.modules[name], '__is_stub__', False):
        del sys.modules[name]
    sys.modules.update(set_aside)
