"""The original YOLACT from a user's checkout: importing it, recording its head outputs, and its
results as numpy.

Nothing of the original is copied into this project: :func:`import_original` puts the checkout
on ``sys.path`` and imports ``data.config``, ``yolact`` and ``layers.output_utils`` from it
(with :func:`yolact_jax.compare.shims.original_runtime_shims` active).
"""

from __future__ import annotations

import importlib
import os
import pathlib
import sys
import types
from typing import Any

import numpy as np

from yolact_jax.bench.machine import git_commit
from yolact_jax.compare.shims import plain_torchscript_classes

# The original's top-level modules and packages (imported from the checkout).
ORIGINAL_MODULES = ('yolact', 'data', 'layers', 'utils', 'backbone')
NMS_TO_ORIGINAL_FLAGS = {'fast': (True, False), 'cross_class': (True, True),
                         'standard': (False, False)}  # (use_fast_nms, use_cross_class_nms)


def conflicting_modules(repo: pathlib.Path) -> list[str]:
  """Already-imported modules named like the original's that do not come from ``repo``."""
  repo = repo.resolve()
  out = []
  for name in ORIGINAL_MODULES:
    module = sys.modules.get(name)
    origin = getattr(module, '__file__', None) if module else None
    if module is not None and (origin is None or repo not in pathlib.Path(origin).resolve().parents):
      out.append(f'{name} ({origin})')
  return out


def import_original(repo: str | os.PathLike, torch: Any) -> types.SimpleNamespace:
  """Import the original from a checkout: ``Yolact``, ``set_cfg``, ``config_module`` (its
  ``cfg``), ``postprocess``, and the checkout's ``repo`` path and ``commit``.

  Needs :func:`yolact_jax.compare.shims.original_runtime_shims` active; applies the TorchScript
  shim around the imports.
  """
  repo = pathlib.Path(repo).expanduser().resolve()
  if not (repo / 'yolact.py').is_file() or not (repo / 'data' / 'config.py').is_file():
    raise FileNotFoundError(f'{repo} does not look like a dbolya/yolact checkout '
                            '(yolact.py and data/config.py expected)')
  clashes = conflicting_modules(repo)
  if clashes:
    raise ImportError('modules named like the original\'s are already imported from elsewhere: '
                      + ', '.join(clashes))
  if str(repo) not in sys.path:
    sys.path.insert(0, str(repo))
  with plain_torchscript_classes(torch):
    config = importlib.import_module('data.config')
    yolact = importlib.import_module('yolact')
    output_utils = importlib.import_module('layers.output_utils')
  return types.SimpleNamespace(Yolact=yolact.Yolact, set_cfg=config.set_cfg,
                               config_module=config, postprocess=output_utils.postprocess,
                               repo=repo, commit=git_commit(repo))


class OutputCapture:
  """Stands in for the original's ``net.detect``: records the head outputs it is handed (when
  ``record``), then runs the real Detect, or returns them untouched when ``bypass`` (the network
  alone)."""

  def __init__(self, detect: Any):
    self.detect = detect
    self.record = False
    self.bypass = False
    self.outputs: dict[str, Any] | None = None

  def __call__(self, predictions: dict, *args: Any, **kwargs: Any) -> Any:
    if self.record:
      self.outputs = {k: v.detach().clone() for k, v in predictions.items()
                      if hasattr(v, 'detach')}
    if self.bypass:
      return predictions
    return self.detect(predictions, *args, **kwargs)

  def __getattr__(self, name: str) -> Any:  # Detect's settings (use_fast_nms, ...)
    return getattr(self.__dict__['detect'], name)

  def __setattr__(self, name: str, value: Any) -> None:
    if name in ('detect', 'record', 'bypass', 'outputs'):
      object.__setattr__(self, name, value)
    else:
      setattr(self.detect, name, value)


def check_original_nms(detect: Any, nms: str) -> None:
  """Refuse an NMS variant the checkout's Detect lacks (it would ignore the flag silently):
  cross-class Fast NMS (``cc_fast_nms``) arrived in the original on 2019-11-06."""
  if nms == 'cross_class' and not hasattr(detect, 'cc_fast_nms'):
    raise SystemExit('--nms cross_class: this checkout\'s Detect has no cc_fast_nms (older than '
                     'the original\'s cross-class Fast NMS); use --nms fast or standard')


def install_output_capture(net: Any) -> OutputCapture:
  """Wrap ``net.detect`` (a plain object in the original; a module is handled too)."""
  capture = OutputCapture(net.detect)
  modules = net.__dict__.get('_modules', {})
  if 'detect' in modules:
    del modules['detect']
  object.__setattr__(net, 'detect', capture)
  return capture


def tensor_to_numpy(value: Any) -> np.ndarray:
  """A torch tensor (any device; half precision widened to float32) or array -> numpy."""
  if hasattr(value, 'detach'):
    value = value.detach().cpu()
    if str(value.dtype) in ('torch.bfloat16', 'torch.float16'):
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def nchw_tensor(images: np.ndarray, torch: Any, device: Any) -> Any:
  """NHWC numpy images [B, H, W, C] -> a contiguous NCHW torch tensor on ``device``."""
  return torch.from_numpy(np.array(images.transpose(0, 3, 1, 2), order='C')).to(device)


def original_result(classes: Any, scores: Any, boxes: Any, masks: Any, h: int, w: int
                    ) -> dict[str, np.ndarray]:
  """The original postprocess's four results -> numpy (an image without detections gets empty
  arrays of the right shapes; the original returns four empty tensors then).

  With mask re-scoring (YOLACT++: ``rescore_mask`` without ``rescore_bbox``) the original returns
  ``scores`` as the pair [box scores, mask scores] (box AP reads the first, mask AP the second):
  ``scores`` is then the first, ``mask_scores`` the second; otherwise both are the one score.
  """
  if isinstance(scores, (list, tuple)):
    scores, mask_scores = scores
  else:
    mask_scores = scores
  classes, scores, mask_scores, boxes, masks = (
      tensor_to_numpy(x) for x in (classes, scores, mask_scores, boxes, masks))
  n = classes.shape[0] if classes.ndim else 0
  return {'classes': classes.reshape(n).astype(np.int64),
          'scores': scores.reshape(n).astype(np.float32),
          'mask_scores': mask_scores.reshape(n).astype(np.float32),
          'boxes': boxes.reshape(n, 4).astype(np.int64),
          'masks': (masks.reshape(n, h, w) > 0.5).astype(np.uint8)}
