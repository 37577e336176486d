"""Side by side with the original PyTorch YOLACT: same weights, same inputs, outputs and speed.

    # seeded random weights (identical on both sides), seeded images, CPU, 2 threads
    python scripts/compare_pytorch.py --yolact-repo ~/src/yolact --config yolact_resnet50 \\
        --random-weights 0 --num-images 8 --batch-size 1 --threads 2
    # an official checkpoint on real images
    python scripts/compare_pytorch.py --yolact-repo ~/src/yolact --config yolact_base \\
        --weights weights/yolact_base_54_800000.pth --images data/coco/images/val2017 \\
        --num-images 50
    # also one training step (losses, parameter update) and the train-step speed, batch 2
    python scripts/compare_pytorch.py --yolact-repo ~/src/yolact --config yolact_resnet50 \\
        --random-weights 0 --threads 2 --train-step --train-batch-size 2

``--yolact-repo`` is the user's checkout of dbolya/yolact. Its code is imported from there at run
time (``yolact.Yolact``, ``data.config.set_cfg`` / ``cfg``, ``layers.output_utils.postprocess``);
nothing of it is copied into this project, and the checkout is not modified.

What is compared
----------------
* Weights: ``--weights`` loads the checkpoint into the original with its own ``load_weights`` and
  into ours through :mod:`yolact_jax.checkpoint.convert`. ``--random-weights SEED`` builds our
  Flax variables from the seed (BatchNorm affine parameters perturbed and running statistics
  calibrated on the first batch, so they are far from 0/1), converts them with
  ``variables_to_state_dict`` and loads that into the original with ``load_state_dict(strict)``.
* Inputs: ``--images`` (files or folders) or ``--num-images`` seeded smooth random images of
  COCO-like sizes. Both sides get the SAME network input tensor: our eval preprocessing
  (:func:`yolact_jax.predict.preprocess`, the original's ``FastBaseTransform`` semantics) is run
  once per batch and fed to both (the original's ``FastBaseTransform`` needs CUDA).
* Raw head outputs (``loc``, ``conf`` as softmax probabilities, ``mask`` coefficients, ``proto``,
  ``priors``): max and mean absolute difference. The original's are recorded where its forward
  hands them to ``Detect``.
* Detections after each side's Detect and postprocess (score threshold 0): matched per image by
  class and box IoU (greedy in our score order; ``--match-iou``), with the score difference and
  the mask IoU of every matched pair at full image resolution. Both sides' Detect settings are
  recorded (``settings.detect_settings``). ``--nms standard`` makes the original compile its
  Cython NMS through ``pyximport`` (needs Cython).
* Speed, timed the same way on both sides: batches of ``--batch-size`` from the network input
  (already in memory / on the device) to per-image numpy results on the host (network, Detect,
  postprocess; the original's ``eval.py --benchmark`` scope), ``--warmup`` untimed batches then
  the median (p10, p90) of ``--repeats`` timed ones; CUDA is synchronised / JAX outputs are
  fetched inside the timer. ``network`` times the network alone (the original's forward with
  Detect bypassed, ours as its own jitted program). Our compile time is reported apart. The four
  timed loops (each side's ``network`` and ``end_to_end``) are interleaved round-robin, the order
  rotating every repeat, so a shared machine's changing load falls on both sides alike.
* Training step (``--train-step``): a batch of ``--train-batch-size`` of the images at the network
  input size with ``--train-objects`` seeded objects each (ellipses and rectangles with their tight
  boxes). From the same weights, one step on each side: the original's train.py iteration
  (``net.train()`` with BatchNorm frozen when the batch is below 6, its ``MultiBoxLoss``, the sum
  of the terms, backward, ``torch.optim.SGD`` with momentum and weight decay) and our jitted
  train step, both at the learning rate of iteration 0. Reported: every loss term on both sides,
  and the parameter update (new - old) of ours against the original's. For scale, the original
  is also run against itself with its input perturbed by 1e-6 (relative): its hard-negative
  mining makes the update sensitive to float32 rounding, so that is the floor for "the same".
  Then ``--train-warmup`` untimed and ``--train-repeats`` timed steps per side, interleaved (ours
  compiled beforehand, compile time reported apart), each from the initial weights and
  optimiser state (restored untimed: repeated steps from random weights can diverge, and a
  step's cost does not depend on the weights).

Same threads, same device
-------------------------
``--threads N`` pins the whole process to N CPUs (``os.sched_setaffinity``, before JAX starts its
thread pool; XLA's CPU client sizes its pool from the affinity, and its thread flags are ignored
by the current CPU runtime) and calls ``torch.set_num_threads(N)``. ``--device cpu`` (default)
runs JAX with ``jax_platforms=cpu`` and the original on the CPU; ``--device cuda`` runs both on the
GPU (the original as its eval.py does: ``.cuda()`` and CUDA default tensors).

Measure on an otherwise idle machine. When other work keeps the CPUs busy, multi-threaded
PyTorch suffers far more than XLA: its OpenMP threads spin-wait at every operator's barrier for
descheduled siblings (measured here: the original 3.3x slower at 2 threads on 2 busy cores than
at 1). The report records the load average before and after timing, the thread-related
environment (``OMP_WAIT_POLICY`` ...) and warns when the load exceeded the machine's CPUs; then
compare with ``--threads 1`` or ``OMP_WAIT_POLICY=PASSIVE`` too.

Runtime shims for modern / CPU-only stacks (spec pitfall 29; see :func:`original_runtime_shims`)
---------------------------------------------------------------------------------------------
Applied only while needed, restored afterwards, no file of the checkout touched:
1. ``torch.cuda.current_device()`` is called when ``yolact.py`` is imported; on CPU-only PyTorch
   it raises. Without CUDA, ``current_device`` returns 0 and ``synchronize`` does nothing.
2. ``torchvision`` may be absent; the original imports it for a class (``Bottleneck``) that no
   shipped preset uses. Likewise ``dcn_v2``, the compiled CUDA extension in the original's
   ``external/DCNv2`` that only the YOLACT++ presets use: revisions of ``backbone.py`` from the
   YOLACT++ development import it unconditionally (later ones guard it with ``try``). When either
   is not installed, an import hook serves a stub package for it and any submodule; its
   attributes are placeholders that raise if used (a YOLACT++ preset fails at model
   construction, the others never touch them).
3. With at most one GPU visible the original makes its FPN a TorchScript ``ScriptModule`` with
   ``script_method``; during the import ``torch.jit.ScriptModule`` is ``torch.nn.Module`` and
   ``torch.jit.script_method`` the identity, so the FPN is a plain module (same math).
4. numpy >= 1.24 removed ``np.float`` / ``np.int`` / ``np.bool`` / ``np.object`` (used by the
   original's dataset code and Cython NMS): aliased to the builtins where missing.
5. Without CUDA, ``torch.load`` defaults to ``map_location='cpu'`` (official checkpoints hold
   CUDA tensors).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import pathlib
import platform
import sys
import time
import types
from typing import Any, Callable, Iterator, Sequence

import numpy as np

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(PROJECT_ROOT))

from yolact_jax.machine import cpu_info, git_commit  # noqa: E402  (standard library only)

# The original's top-level modules and packages (imported from --yolact-repo).
ORIGINAL_MODULES = ('yolact', 'data', 'layers', 'utils', 'backbone')
RAW_KEYS = ('loc', 'conf', 'mask', 'proto', 'priors')
# shared/reference/README.md: parity of the network on the same weights and input (float32).
REFERENCE_TOLERANCE = {'max_abs': 2e-3, 'mean_abs': 5e-5}
SEEDED_IMAGE_SIZES = ((480, 640), (640, 427), (427, 640), (375, 500))
NMS_TO_ORIGINAL_FLAGS = {'fast': (True, False), 'cross_class': (True, True),
                         'standard': (False, False)}  # (use_fast_nms, use_cross_class_nms)
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')
# Shim 2: packages the original imports at module level for things the YOLACT presets never use.
STUBBED_WHEN_MISSING = ('torchvision', 'dcn_v2')


# ---------------------------------------------------------------------------------------------
# Runtime shims (each a context manager that restores what it changed)


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
  is unavailable (otherwise nothing changes)."""
  if torch.cuda.is_available():
    return contextlib.nullcontext()
  return patched_attributes(torch.cuda, {'current_device': lambda: 0,
                                         'synchronize': lambda device=None: None})


class PlaceholderError(RuntimeError):
  """Something of a stub package (shim 2) was used (they only stand in for unused imports)."""


def placeholder(qualified_name: str) -> type:
  """A class standing in for an attribute of a stubbed package; using it raises PlaceholderError."""
  root = qualified_name.split('.')[0]

  def refuse(*args, **kwargs):
    raise PlaceholderError(f'{qualified_name} is a placeholder: {root} is not installed and '
                           'compare_pytorch.py stubbed it because the YOLACT presets do not use '
                           f'it (dcn_v2: only YOLACT++ does). Install {root} to use it.')
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
  """An import hook serving :class:`StubModule` packages for ``root`` and its submodules."""

  def __init__(self, root: str):
    self.root = root

  def find_spec(self, fullname, path=None, target=None):
    if fullname == self.root or fullname.startswith(self.root + '.'):
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = StubModule(spec.name)
    module.__path__ = []
    module.__is_stub__ = True
    return module

  def exec_module(self, module):
    pass


def module_available(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


@contextlib.contextmanager
def stub_missing_module(root: str) -> Iterator[bool]:
  """Shim 2: while active, ``import root`` (and ``root.x.y``) works even if ``root`` is not
  installed. Yields whether the stub is in use; afterwards the stub modules are removed."""
  if module_available(root):
    yield False
    return
  finder = StubFinder(root)
  sys.meta_path.insert(0, finder)
  try:
    yield True
  finally:
    sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n == root or n.startswith(root + '.')]:
      if getattr(sys.modules[name], '__is_stub__', False):
        del sys.modules[name]


def plain_torchscript_classes(torch: Any) -> contextlib.AbstractContextManager:
  """Shim 3: ``torch.jit.ScriptModule`` -> ``torch.nn.Module`` and ``torch.jit.script_method``
  -> identity, so classes defined meanwhile are ordinary modules."""
  return patched_attributes(torch.jit, {'ScriptModule': torch.nn.Module,
                                        'script_method': lambda fn, *args, **kwargs: fn})


NUMPY_LEGACY_ALIASES = {'float': float, 'int': int, 'bool': bool, 'object': object,
                        'complex': complex, 'str': str}


def numpy_legacy_aliases() -> contextlib.AbstractContextManager:
  """Shim 4: the builtin aliases numpy >= 1.24 removed (only those missing are set)."""
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
  Yields which are active. Shim 3 is only for the import (see :func:`import_original`)."""
  with contextlib.ExitStack() as stack:
    stack.enter_context(cuda_calls_for_cpu(torch))
    stubbed = {name: stack.enter_context(stub_missing_module(name))
               for name in STUBBED_WHEN_MISSING}
    stack.enter_context(numpy_legacy_aliases())
    stack.enter_context(torch_load_on_cpu(torch))
    yield {'cuda_calls_for_cpu': not torch.cuda.is_available(),
           **{f'{name}_stub': used for name, used in stubbed.items()},
           'numpy_legacy_aliases': True,
           'torch_load_on_cpu': not torch.cuda.is_available(),
           'plain_torchscript_during_import': True}


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
  """Import the original from a checkout: ``Yolact``, ``set_cfg``, ``cfg``, ``postprocess``.

  Needs :func:`original_runtime_shims` active; applies shim 3 around the imports.
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


# ---------------------------------------------------------------------------------------------
# The original's raw outputs and results


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
  if hasattr(value, 'detach'):
    value = value.detach().cpu()
    if str(value.dtype) in ('torch.bfloat16', 'torch.float16'):
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def original_result(classes: Any, scores: Any, boxes: Any, masks: Any, h: int, w: int
                    ) -> dict[str, np.ndarray]:
  """The original postprocess's four tensors -> numpy (an image without detections gets empty
  arrays of the right shapes; the original returns four empty tensors then)."""
  classes, scores, boxes, masks = (tensor_to_numpy(x) for x in (classes, scores, boxes, masks))
  n = classes.shape[0] if classes.ndim else 0
  return {'classes': classes.reshape(n).astype(np.int64),
          'scores': scores.reshape(n).astype(np.float32),
          'boxes': boxes.reshape(n, 4).astype(np.int64),
          'masks': (masks.reshape(n, h, w) > 0.5).astype(np.uint8)}


def ours_result(det: Any) -> dict[str, np.ndarray]:
  """A :class:`yolact_jax.predict.Detections` -> the same dict layout as :func:`original_result`."""
  return {'classes': np.asarray(det.classes, np.int64), 'scores': np.asarray(det.scores, np.float32),
          'boxes': np.asarray(det.boxes, np.int64), 'masks': np.asarray(det.masks, np.uint8)}


# ---------------------------------------------------------------------------------------------
# Comparison (pure numpy)


def raw_output_diff(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                    keys: Sequence[str] = RAW_KEYS) -> dict[str, dict[str, Any]]:
  """Per key: shape, max and mean absolute difference (or the shape mismatch / absence)."""
  report = {}
  for key in keys:
    if key not in ours or key not in theirs:
      report[key] = {'missing': [side for side, d in (('ours', ours), ('original', theirs))
                                 if key not in d]}
      continue
    a = np.asarray(ours[key], np.float64)
    b = np.asarray(theirs[key], np.float64)
    if a.shape != b.shape:
      report[key] = {'shape_ours': list(a.shape), 'shape_original': list(b.shape),
                     'error': 'shape mismatch'}
      continue
    diff = np.abs(a - b)
    report[key] = {'shape': list(a.shape), 'max_abs': float(diff.max()) if diff.size else 0.0,
                   'mean_abs': float(diff.mean()) if diff.size else 0.0,
                   'max_abs_value': float(np.abs(b).max()) if b.size else 0.0}
    report[key]['within_reference_tolerance'] = bool(
        report[key]['max_abs'] <= REFERENCE_TOLERANCE['max_abs']
        and report[key]['mean_abs'] <= REFERENCE_TOLERANCE['mean_abs'])
  return report


def merge_raw_diffs(diffs: Sequence[dict[str, dict]]) -> dict[str, dict]:
  """Combine per-batch :func:`raw_output_diff` reports (max of maxima, size-weighted means)."""
  merged: dict[str, dict] = {}
  for key in (diffs[0] if diffs else {}):
    parts = [d[key] for d in diffs]
    if any('max_abs' not in p for p in parts):
      merged[key] = next(p for p in parts if 'max_abs' not in p)
      continue
    sizes = [math.prod(p['shape']) for p in parts]
    merged[key] = {
        'shape': parts[0]['shape'], 'batches': len(parts),
        'max_abs': max(p['max_abs'] for p in parts),
        'mean_abs': float(sum(p['mean_abs'] * s for p, s in zip(parts, sizes)) / max(sum(sizes), 1)),
        'max_abs_value': max(p['max_abs_value'] for p in parts),
        'within_reference_tolerance': all(p['within_reference_tolerance'] for p in parts)}
  return merged


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of pixel boxes x1y1x2y2: [n, 4], [m, 4] -> [n, m] (areas (x2-x1)(y2-y1)).

  Where both boxes are empty (zero union), identical boxes count as IoU 1 and others as 0: both
  sides' postprocess truncates boxes to integer pixels, so a narrow detection becomes e.g.
  ``[42, 495, 42, 521]`` on both sides (its cropped mask is not empty), and it must still match.
  """
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)  # noqa: E731
  union = area(a)[:, None] + area(b)[None, :] - inter
  identical = np.all(a[:, None, :] == b[None, :, :], axis=-1)
  return np.where(union > 0, inter / np.where(union > 0, union, 1), identical.astype(np.float64))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two binary masks of the same shape (two empty masks agree: 1.0)."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  union = np.logical_or(a, b).sum()
  return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def match_detections(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                     iou_thresh: float) -> list[tuple[int, int, float]]:
  """Greedy matching in our score order: each of our detections takes the unmatched original
  detection of the same class with the highest box IoU, if that IoU >= ``iou_thresh``.
  Returns (our index, original index, box IoU) triples."""
  iou = box_iou_matrix(ours['boxes'], theirs['boxes'])
  same_class = np.asarray(ours['classes'])[:, None] == np.asarray(theirs['classes'])[None, :]
  iou = np.where(same_class, iou, -1.0)
  taken = np.zeros(iou.shape[1], bool)
  pairs = []
  for i in np.argsort(-np.asarray(ours['scores']), kind='stable'):
    if iou.shape[1] == 0:
      break
    row = np.where(taken, -1.0, iou[i])
    j = int(np.argmax(row))
    if row[j] >= iou_thresh:
      taken[j] = True
      pairs.append((int(i), j, float(row[j])))
  return pairs


def compare_detections(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray],
                       iou_thresh: float) -> dict[str, Any]:
  """Counts, agreement, score differences, box and mask IoU of one image's detections."""
  pairs = match_detections(ours, theirs, iou_thresh)
  n_ours, n_theirs = len(ours['classes']), len(theirs['classes'])
  box_ious = [p[2] for p in pairs]
  score_diffs = [abs(float(ours['scores'][i]) - float(theirs['scores'][j])) for i, j, _ in pairs]
  mask_ious = [mask_iou(ours['masks'][i], theirs['masks'][j]) for i, j, _ in pairs]
  return {'num_ours': n_ours, 'num_original': n_theirs, 'matched': len(pairs),
          'agreement': len(pairs) / max(n_ours, n_theirs) if max(n_ours, n_theirs) else 1.0,
          'box_iou_min': min(box_ious, default=None),
          'box_iou_mean': float(np.mean(box_ious)) if box_ious else None,
          'score_abs_diff_max': max(score_diffs, default=None),
          'mask_iou_min': min(mask_ious, default=None),
          'mask_iou_mean': float(np.mean(mask_ious)) if mask_ious else None,
          'mask_iou_over_0_99': (float(np.mean(np.asarray(mask_ious) > 0.99))
                                 if mask_ious else None)}


def summarize_detection_comparison(images: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Totals over images: detections on each side, matched, overall agreement, mask IoU."""
  n_ours = sum(r['num_ours'] for r in images)
  n_theirs = sum(r['num_original'] for r in images)
  matched = sum(r['matched'] for r in images)
  weighted = [(r['mask_iou_mean'], r['matched']) for r in images if r['mask_iou_mean'] is not None]
  mins = [r['mask_iou_min'] for r in images if r['mask_iou_min'] is not None]
  return {'images': len(images), 'num_ours': n_ours, 'num_original': n_theirs,
          'matched': matched,
          'agreement': matched / max(n_ours, n_theirs) if max(n_ours, n_theirs) else 1.0,
          'mask_iou_mean': (sum(m * n for m, n in weighted) / sum(n for _, n in weighted)
                            if weighted else None),
          'mask_iou_min': min(mins, default=None),
          'score_abs_diff_max': max((r['score_abs_diff_max'] for r in images
                                     if r['score_abs_diff_max'] is not None), default=None)}


def time_batches(run: Callable[[int], Any], num_batches: int, warmup: int, repeats: int
                 ) -> list[float]:
  """Seconds of ``repeats`` calls ``run(batch_index)`` after ``warmup`` untimed ones, cycling
  over the batches (``run`` must finish its work, i.e. synchronise, before returning)."""
  for k in range(warmup):
    run(k % num_batches)
  times = []
  for k in range(repeats):
    t0 = time.perf_counter()
    run((warmup + k) % num_batches)
    times.append(time.perf_counter() - t0)
  return times


def time_interleaved(runs: dict[Any, Callable[[int], Any]], num_batches: int, warmup: int,
                     repeats: int, setup: dict[Any, Callable[[], Any]] | None = None
                     ) -> dict[Any, list[float]]:
  """:func:`time_batches` for several callables at once: the warm-up of each, then ``repeats``
  rounds in which every callable runs once on the same batch (round ``k`` starts at the ``k``-th
  callable), so load that changes over time falls on all of them alike. ``setup[key]``, where
  given, runs untimed before every call of ``runs[key]``. Returns seconds per key."""
  keys = list(runs)
  setup = setup or {}
  no_setup = lambda: None  # noqa: E731
  for key in keys:
    for k in range(warmup):
      setup.get(key, no_setup)()
      runs[key](k % num_batches)
  times: dict[Any, list[float]] = {key: [] for key in keys}
  for k in range(repeats):
    for key in keys[k % len(keys):] + keys[:k % len(keys)]:
      setup.get(key, no_setup)()
      t0 = time.perf_counter()
      runs[key]((warmup + k) % num_batches)
      times[key].append(time.perf_counter() - t0)
  return times


def speed_summary(ours: dict[str, list[float]], theirs: dict[str, list[float]],
                  batch_size: int) -> dict[str, Any]:
  """Per side and stage: time summary and images/s; ours-vs-original speed-up per stage."""
  from yolact_jax.benchmarking import summarize_times  # jax is imported only when needed
  out: dict[str, Any] = {'ours': {}, 'original': {}, 'speedup': {}}
  for side, times in (('ours', ours), ('original', theirs)):
    for stage, seconds in times.items():
      s = summarize_times(seconds)
      s['images_per_s'] = batch_size / (s['median_ms'] / 1e3)
      out[side][stage] = s
  for stage in set(ours) & set(theirs):
    out['speedup'][stage] = out['original'][stage]['median_ms'] / out['ours'][stage]['median_ms']
  return out


def markdown_report(report: dict[str, Any]) -> str:
  """The report's figures as markdown."""
  s = report['settings']
  lines = [f'# yolact-jax vs the original PyTorch YOLACT ({report["date_utc"]})', '',
           f'Preset {s["config"]}, weights: {s["weights"]}, inputs: {s["inputs"]}, batch '
           f'{s["batch_size"]}, device {s["device"]}, threads {s["threads"]}, NMS {s["nms"]}. '
           f'Machine: {report["machine"]["cpu_model"]}, load {report["machine"]["load_average"]}; '
           f'torch {report["machine"]["torch"]}, jax {report["machine"]["jax"]}; original at '
           f'{s["yolact_repo"]} (commit {s.get("original_commit")}).', '',
           '## Raw head outputs (ours - original)', '',
           '| output | shape | max abs diff | mean abs diff | max abs value | within reference '
           'tolerance |', '|---|---|---|---|---|---|']
  for key, d in report['raw_outputs'].items():
    if 'max_abs' not in d:
      lines.append(f'| {key} | {d} | | | | |')
      continue
    lines.append(f'| {key} | {"x".join(map(str, d["shape"]))} | {d["max_abs"]:.3g} | '
                 f'{d["mean_abs"]:.3g} | {d["max_abs_value"]:.3g} | '
                 f'{"yes" if d["within_reference_tolerance"] else "no"} |')
  det = report['detections']['total']
  fmt = lambda v, spec='.4f': '-' if v is None else format(v, spec)  # noqa: E731
  lines += ['', f'Reference tolerance (shared/reference/README.md): max <= '
            f'{REFERENCE_TOLERANCE["max_abs"]}, mean <= {REFERENCE_TOLERANCE["mean_abs"]}; '
            '`conf` is compared as softmax probabilities.', '',
            f'## Detections (class + box IoU >= {s["match_iou"]})', '',
            '| images | ours | original | matched | agreement | mask IoU mean | mask IoU min | '
            'max score diff |', '|---|---|---|---|---|---|---|---|',
            f'| {det["images"]} | {det["num_ours"]} | {det["num_original"]} | {det["matched"]} | '
            f'{det["agreement"]:.2%} | {fmt(det["mask_iou_mean"])} | {fmt(det["mask_iou_min"])} | '
            f'{fmt(det["score_abs_diff_max"], ".3g")} |', '',
            '## Speed (median, p10-p90 ms per batch)', '',
            '| stage | ours | original | ours images/s | original images/s | speed-up |',
            '|---|---|---|---|---|---|']
  speed = report['speed']
  for stage in ('network', 'end_to_end'):
    o, t = speed.get('ours', {}).get(stage), speed.get('original', {}).get(stage)
    if not o or not t:
      continue
    lines.append(f'| {stage} | {o["median_ms"]:.1f} ({o["p10_ms"]:.1f}-{o["p90_ms"]:.1f}) | '
                 f'{t["median_ms"]:.1f} ({t["p10_ms"]:.1f}-{t["p90_ms"]:.1f}) | '
                 f'{o["images_per_s"]:.2f} | {t["images_per_s"]:.2f} | '
                 f'{speed["speedup"][stage]:.2f}x |')
  lines += ['', f'Our compile time (not in the figures above): '
            f'{speed.get("ours_compile_s", float("nan")):.1f} s.']
  if 'train_step' in report:
    lines += [''] + train_markdown(report['train_step'])
  warning = oversubscription_warning(report['machine'])
  if warning and ('ours' in speed or 'speed' in report.get('train_step', {})):
    lines += ['', f'**Warning:** {warning}']
  return '\n'.join(lines)


def train_markdown(train: dict[str, Any]) -> list[str]:
  """The training-step section of the report."""
  u = train['update']
  worst = '-' if u['worst_key_relative'] is None else f'{u["worst_key_relative"]:.3g}'
  lines = [f'## Training step (batch {train["batch_size"]}, {train["objects_per_image"]} objects '
           f'per image, BatchNorm {"frozen" if train["freeze_bn"] else "training"}, lr '
           f'{train["learning_rate"]:g}, momentum {train["momentum"]}, weight decay '
           f'{train["weight_decay"]})', '',
           f'First step from the same weights on the same batch ({train["num_positives"]} '
           'positive priors in the batch):', '',
           '| loss term | ours | original | abs diff | rel diff |', '|---|---|---|---|---|']
  for key, d in train['losses'].items():
    if d.get('ours') is None:
      lines.append(f'| {key} | - | {d["original"]:.6g} | | |')
    else:
      lines.append(f'| {key} | {d["ours"]:.6g} | {d["original"]:.6g} | {d["abs_diff"]:.3g} | '
                   f'{d["rel_diff"]:.3g} |')
  lines += ['', f'Parameter update (new - old), ours vs original, over {u["tensors_changed"]} '
            f'updated tensors ({u["tensors_unchanged"]} unchanged on both sides): max abs '
            f'difference {u["max_abs_update_diff"]:.3g} against a largest update of '
            f'{u["max_abs_update"]:.3g} (relative {u["relative"]:.3g}); worst tensor '
            f'`{u["worst_key"]}` (its difference / its largest update {worst}; per tensor '
            f'median {u["per_tensor_relative_median"] or 0:.3g}, p90 '
            f'{u["per_tensor_relative_p90"] or 0:.3g}).']
  base = train.get('original_self')
  if base:
    b = base['update']
    lines += ['', f'For scale, the original against itself with its input perturbed by '
              f'{base["input_noise_relative"]:g} (relative): max abs update difference '
              f'{b["max_abs_update_diff"]:.3g} (relative {b["relative"]:.3g}; per tensor median '
              f'{b["per_tensor_relative_median"] or 0:.3g}, p90 '
              f'{b["per_tensor_relative_p90"] or 0:.3g}), total loss difference '
              f'{base["losses"]["total"]["abs_diff"]:.3g}.']
  speed = train.get('speed')
  if speed:
    o, t = speed['ours']['train_step'], speed['original']['train_step']
    lines += ['', '| stage | ours ms | original ms | ours images/s | original images/s | '
              'speed-up |', '|---|---|---|---|---|---|',
              f'| train_step | {o["median_ms"]:.1f} ({o["p10_ms"]:.1f}-{o["p90_ms"]:.1f}) | '
              f'{t["median_ms"]:.1f} ({t["p10_ms"]:.1f}-{t["p90_ms"]:.1f}) | '
              f'{o["images_per_s"]:.3g} | {t["images_per_s"]:.3g} | '
              f'{speed["speedup"]["train_step"]:.2f}x |']
  lines += ['', f'Our train-step compile time (not above): {train["ours_compile_s"]:.1f} s.']
  return lines


THREAD_ENV_VARS = ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME',
                   'MKL_NUM_THREADS', 'XLA_FLAGS')


def oversubscription_warning(machine: dict[str, Any]) -> str | None:
  """A sentence when the 1-minute load average (before or after timing) exceeded the machine's
  CPU count: other work competed for the cores and the speed figures are not representative."""
  cpus = machine.get('cpu_count_total')
  loads = [machine.get(k) for k in ('load_average_before_timing', 'load_average')]
  worst = max((load[0] for load in loads if load), default=None)
  if not cpus or worst is None or worst <= cpus + 0.5:
    return None
  return (f'the machine was oversubscribed (1-minute load {worst:.2f} on {cpus} CPUs): other '
          'work competed for the cores, and multi-threaded PyTorch (OpenMP threads spin-waiting '
          'at barriers) is hurt far more than XLA by that. Compare with --threads 1 or '
          'OMP_WAIT_POLICY=PASSIVE, or measure on an idle machine.')


# ---------------------------------------------------------------------------------------------
# Inputs


def list_images(paths: Sequence[str]) -> list[pathlib.Path]:
  """Image files from files and folders (folders: sorted, by suffix)."""
  files = []
  for p in map(pathlib.Path, paths):
    if p.is_dir():
      files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    elif p.is_file():
      files.append(p)
    else:
      raise FileNotFoundError(f'no such image or folder: {p}')
  return files


def read_images_rgb(files: Sequence[pathlib.Path]) -> list[np.ndarray]:
  import cv2
  images = []
  for f in files:
    bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
    if bgr is None:
      raise ValueError(f'cannot decode image {f}')
    images.append(np.ascontiguousarray(bgr[..., ::-1]))
  return images


def seeded_images(count: int, seed: int) -> list[np.ndarray]:
  """Smooth random RGB uint8 images of COCO-like sizes (low-frequency noise, upsampled)."""
  import cv2
  rng = np.random.default_rng(seed)
  images = []
  for i in range(count):
    h, w = SEEDED_IMAGE_SIZES[i % len(SEEDED_IMAGE_SIZES)]
    coarse = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
    images.append(np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255)
                  .astype(np.uint8))
  return images


def make_batches(images: Sequence[np.ndarray], batch_size: int
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], tuple[int, int]]:
  """Batches of (canvas [B,Hc,Wc,3], sizes [B,2], real count) and the canvas (the largest h, w).
  The last batch is filled by cycling from the first images; only the real ones are compared."""
  from yolact_jax import benchmarking
  canvas_hw = (max(i.shape[0] for i in images), max(i.shape[1] for i in images))
  filled = benchmarking.cycle_to(images, -(-len(images) // batch_size) * batch_size)
  batches = benchmarking.make_batches(filled, batch_size, canvas_hw)
  return [(canvas, sizes, min(batch_size, len(images) - k * batch_size))
          for k, (canvas, sizes, _) in enumerate(batches)], canvas_hw


# ---------------------------------------------------------------------------------------------
# Our side


def random_variables(cfg: Any, seed: int, calibration_input: np.ndarray) -> dict:
  """Seeded Flax variables with non-trivial BatchNorm: affine parameters perturbed, then running
  statistics set to the batch statistics of ``calibration_input`` (one training-mode pass)."""
  import jax
  import jax.numpy as jnp
  from yolact_jax.model.layers import BatchNorm
  from yolact_jax.model.yolact import Yolact
  model = Yolact(cfg)
  x = jnp.asarray(calibration_input)
  variables = jax.jit(model.init)(jax.random.key(seed), x[:1])
  rng = np.random.default_rng(seed)

  def perturb(tree):
    if isinstance(tree, dict) and 'scale' in tree:  # a BatchNorm's parameters
      return {**tree, 'scale': rng.uniform(0.5, 1.5, tree['scale'].shape).astype(np.float32),
              'bias': rng.normal(0, 0.1, tree['bias'].shape).astype(np.float32)}
    return {k: perturb(v) if isinstance(v, dict) else v for k, v in tree.items()}

  params = perturb(jax.device_get(variables['params']))
  old = jax.device_get(variables['batch_stats'])
  _, updates = jax.jit(lambda p, s, x: model.apply({'params': p, 'batch_stats': s}, x,
                                                   train=True, mutable=['batch_stats']))(
      params, old, x)
  momentum = BatchNorm.momentum

  def calibrate(new, old):
    out = {}
    for k, v in new.items():
      if isinstance(v, dict):
        out[k] = calibrate(v, old[k])
      elif k in ('mean', 'var'):  # running = (1 - m) old + m batch  =>  batch = ...
        out[k] = ((np.asarray(v) - (1 - momentum) * np.asarray(old[k])) / momentum
                  ).astype(np.float32)
      else:
        out[k] = np.asarray(v)
    return out
  return {'params': params, 'batch_stats': calibrate(jax.device_get(updates['batch_stats']), old)}


def to_torch_state_dict(variables: dict, torch: Any) -> dict:
  from yolact_jax.checkpoint.convert import variables_to_state_dict
  # np.array, not np.ascontiguousarray: the latter turns 0-d num_batches_tracked into [1]
  return {k: torch.from_numpy(np.array(v, order='C'))
          for k, v in variables_to_state_dict(variables).items()}


# ---------------------------------------------------------------------------------------------
# Training step side by side


def synthetic_targets(batch_size: int, size: int, objects: int, num_classes: int, seed: int
                      ) -> dict[str, np.ndarray]:
  """Seeded ground truth at the network input size: ``objects`` ellipses or rectangles per image.

  ``boxes`` [B, n, 4] relative (x1, y1, x2, y2, the tight box of the mask), ``labels`` [B, n]
  0-based foreground classes (the original's target layout; ``num_classes`` includes the
  background), ``masks`` [B, n, size, size] uint8.
  """
  rng = np.random.default_rng(seed)
  boxes = np.zeros((batch_size, objects, 4), np.float32)
  masks = np.zeros((batch_size, objects, size, size), np.uint8)
  yy, xx = np.mgrid[0:size, 0:size] + 0.5
  for b in range(batch_size):
    for g in range(objects):
      w, h = rng.uniform(0.12, 0.35, 2) * size
      x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
      if g % 2:  # rectangle
        m = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
      else:  # ellipse
        m = ((xx - x0 - w / 2) / (w / 2)) ** 2 + ((yy - y0 - h / 2) / (h / 2)) ** 2 <= 1
      ys, xs = np.nonzero(m)
      masks[b, g] = m
      boxes[b, g] = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / size
  labels = rng.integers(0, num_classes - 1, (batch_size, objects)).astype(np.int32)
  return {'boxes': boxes, 'labels': labels, 'masks': masks}


def our_train_batch(images: np.ndarray, targets: dict[str, np.ndarray], cfg: Any
                    ) -> dict[str, np.ndarray]:
  """The targets packed as our data pipeline packs them (:func:`yolact_jax.data.loader.
  pack_example`: ``cfg.train.max_instances`` padded slots with a validity mask, GT masks
  downsampled to the proto and semantic sizes as the original's loss does)."""
  from yolact_jax.data.augment import TransformedSample
  from yolact_jax.data.loader import pack_example
  from yolact_jax.trainer import BATCH_KEYS, pipeline_options
  options = pipeline_options(cfg)
  batch_size, n = targets['labels'].shape
  if n > options.max_instances:  # the pipeline would drop objects the original keeps
    raise ValueError(f'{n} objects per image but train.max_instances is {options.max_instances}')
  examples = [pack_example(
      TransformedSample(image=images[b].astype(np.float32), masks=targets['masks'][b],
                        boxes=targets['boxes'][b], labels=targets['labels'][b], num_crowds=0),
      image_id=b, orig_hw=images.shape[1:3], max_instances=options.max_instances,
      proto_hw=options.proto_hw, segm_hw=options.segm_hw) for b in range(batch_size)]
  return {k: np.stack([e[k] for e in examples]) for k in BATCH_KEYS}


def original_train_targets(targets: dict[str, np.ndarray], torch: Any, device: Any
                           ) -> tuple[list, list, list]:
  """The targets as the original's ``detection_collate`` hands them to ``MultiBoxLoss``: per image
  a [n, 5] tensor (box, label), a [n, H, W] float mask tensor, and the crowd count (0)."""
  gts, masks = [], []
  for b in range(targets['labels'].shape[0]):
    gt = np.concatenate([targets['boxes'][b], targets['labels'][b][:, None].astype(np.float32)],
                        axis=1)
    gts.append(torch.from_numpy(np.ascontiguousarray(gt, np.float32)).to(device))
    masks.append(torch.from_numpy(targets['masks'][b].astype(np.float32)).to(device))
  return gts, masks, [0] * len(gts)


def compare_losses(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, dict]:
  """Per loss term of the original (and ``total``): both values, their absolute and relative
  difference."""
  out = {}
  for key, value in theirs.items():
    if key not in ours:
      out[key] = {'original': float(value), 'ours': None}
      continue
    a, b = float(ours[key]), float(value)
    out[key] = {'ours': a, 'original': b, 'abs_diff': abs(a - b),
                'rel_diff': abs(a - b) / max(abs(b), 1e-12)}
  return out


def compare_updates(before: dict[str, np.ndarray], ours: dict[str, np.ndarray],
                    theirs: dict[str, np.ndarray]) -> dict[str, Any]:
  """One optimiser step from the same state on both sides (state_dict keys and layout): the
  difference of the two updates, against the size of the original's update.

  ``relative`` = max |update_ours - update_original| / max |update_original| over every float
  tensor; per tensor, the same ratio against its own largest update (``per_tensor_relative``:
  median and p90 over the tensors, and the worst one). Tensors neither side changed (frozen
  BatchNorm) are counted in ``unchanged``.
  """
  max_diff, max_update, worst, worst_ratio, changed, unchanged = 0.0, 0.0, None, -1.0, 0, 0
  ratios = []
  for key, old in before.items():
    old = np.asarray(old)
    if not np.issubdtype(old.dtype, np.floating):
      continue
    du = np.asarray(ours[key], np.float64) - old
    dt = np.asarray(theirs[key], np.float64) - old
    diff, size = float(np.max(np.abs(du - dt), initial=0)), float(np.max(np.abs(dt), initial=0))
    if size == 0 and diff == 0:
      unchanged += 1
      continue
    changed += 1
    max_diff, max_update = max(max_diff, diff), max(max_update, size)
    ratio = diff / max(size, 1e-30)
    ratios.append(ratio)
    if ratio > worst_ratio:
      worst, worst_ratio = key, ratio
  return {'max_abs_update_diff': max_diff, 'max_abs_update': max_update,
          'relative': max_diff / max(max_update, 1e-30), 'worst_key': worst,
          'worst_key_relative': worst_ratio if worst else None,
          'per_tensor_relative_median': float(np.median(ratios)) if ratios else None,
          'per_tensor_relative_p90': float(np.percentile(ratios, 90)) if ratios else None,
          'tensors_changed': changed, 'tensors_unchanged': unchanged}


def original_trainer(original: Any, torch: Any, variables: dict, device: Any, lr: float,
                     momentum: float, decay: float, image: Any, gts: list, gt_masks: list,
                     num_crowds: list) -> tuple[Any, Callable[..., dict[str, float]],
                                                 Callable[[], None]]:
  """A fresh original network from ``variables`` in training mode and its train.py iteration on
  one fixed batch: ``(net, step, reset)``; ``step()`` returns the loss terms and ``total``;
  ``reset()`` puts the weights and the optimiser back to where they started."""
  original_cfg = original.config_module.cfg
  net = original.Yolact()
  net.load_state_dict(to_torch_state_dict(variables, torch), strict=True)
  net.train()  # Yolact.train() re-applies freeze_bn when cfg.freeze_bn
  net = net.to(device)
  multibox = importlib.import_module('layers.modules.multibox_loss')
  criterion = loss_criterion_call(multibox.MultiBoxLoss(
      num_classes=original_cfg.num_classes, pos_threshold=original_cfg.positive_iou_threshold,
      neg_threshold=original_cfg.negative_iou_threshold,
      negpos_ratio=original_cfg.ohem_negpos_ratio))
  optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=decay)
  initial = copy.deepcopy((net.state_dict(), optimizer.state_dict()))

  def reset() -> None:
    net.load_state_dict(initial[0])
    optimizer.load_state_dict(initial[1])

  def step(_: int = 0) -> dict[str, float]:
    optimizer.zero_grad()
    losses = criterion(net, net(image), gts, gt_masks, num_crowds)
    loss = sum(v.mean() for v in losses.values())
    loss.backward()
    if torch.isfinite(loss).item():  # train.py skips the step otherwise
      optimizer.step()
    if image.is_cuda:
      torch.cuda.synchronize()
    return {**{k: float(v.detach().mean()) for k, v in losses.items()},
            'total': float(loss.detach())}

  return net, step, reset


def loss_criterion_call(criterion: Any) -> Callable[..., Any]:
  """The original's ``MultiBoxLoss.forward`` took ``(predictions, targets, masks, num_crowds)``
  until it gained a leading ``net`` argument (mid 2019): a caller for either signature."""
  import inspect
  params = list(inspect.signature(criterion.forward).parameters)
  if params and params[0] == 'net':
    return lambda net, *args: criterion(net, *args)
  return lambda net, *args: criterion(*args)


def train_side_by_side(args: argparse.Namespace, cfg: Any, variables: dict, original: Any,
                       torch: Any, device: Any, net_input: np.ndarray) -> dict[str, Any]:
  """One training step from the same weights on the same batch on both sides (loss terms and the
  parameter update compared), then both sides' steps timed, interleaved.

  The original's step is its train.py iteration: ``net.train()`` (BatchNorm frozen as train.py
  decides from the batch size), forward, ``MultiBoxLoss``, the sum of its terms, backward,
  ``torch.optim.SGD(momentum, weight_decay).step()``. Ours is the jitted, donated
  :func:`yolact_jax.train_step.make_train_step`. Both use the learning rate of iteration 0.
  """
  import jax
  import jax.numpy as jnp
  from yolact_jax import train_step as ts
  from yolact_jax.checkpoint.convert import variables_to_state_dict
  from yolact_jax.model.yolact import Yolact

  batch_size = net_input.shape[0]
  cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch_size))
  freeze_bn = ts.uses_frozen_bn(cfg)
  lr = float(ts.learning_rate(ts.effective_schedule(cfg), 0))
  targets = synthetic_targets(batch_size, cfg.max_size, args.train_objects, cfg.num_classes,
                              args.seed)
  batch = jax.device_put(our_train_batch(net_input, targets, cfg))
  before = variables_to_state_dict(variables)

  # ---- the original
  original.config_module.cfg.freeze_bn = freeze_bn  # train.py: batch_size // num_gpus < 6
  gts, gt_masks, num_crowds = original_train_targets(targets, torch, device)
  to_tensor = lambda x: torch.from_numpy(np.array(x.transpose(0, 3, 1, 2), order='C')  # noqa: E731
                                         ).to(device)
  make_original = functools.partial(original_trainer, original, torch, variables, device, lr,
                                    cfg.train.momentum, cfg.train.decay)
  torch.manual_seed(args.seed)  # masks_to_train subsampling, when an image has that many positives
  net, original_step, original_reset = make_original(to_tensor(net_input), gts, gt_masks,
                                                      num_crowds)

  # ---- ours
  model = Yolact(cfg, freeze_bn=freeze_bn)
  tx = ts.make_optimizer(cfg, variables['params'], freeze_bn)
  state = ts.init_train_state(cfg, jax.device_put(variables), tx, seed=args.seed)
  t0 = time.perf_counter()
  step = ts.jit_train_step(ts.make_train_step(cfg, model, tx)).lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  holder = {}

  def ours_reset() -> None:  # a fresh copy: the step donates its input, `state` is kept
    holder['state'] = jax.tree_util.tree_map(jnp.copy, state)

  ours_reset()

  def ours_step(_: int = 0) -> dict:
    holder['state'], metrics = step(holder['state'], batch)
    return jax.block_until_ready(metrics)

  # ---- the first step from the same state: losses and updates
  theirs_losses = original_step()
  theirs_after = {k: tensor_to_numpy(v) for k, v in net.state_dict().items()}
  metrics = jax.device_get(ours_step())
  ours_losses = {k: float(v) for k, v in metrics.items() if k in theirs_losses}
  ours_losses['total'] = float(metrics['loss'])
  ours_after = variables_to_state_dict(jax.device_get(
      {'params': holder['state'].params, 'batch_stats': holder['state'].batch_stats}))
  # The original against itself, its input perturbed by 1e-6 (relative): how far its own update
  # moves under float32-level noise (hard-negative mining flips at the ranking boundary).
  rng = np.random.default_rng(args.seed)
  noisy = (net_input * (1 + rng.uniform(-1e-6, 1e-6, net_input.shape))).astype(np.float32)
  torch.manual_seed(args.seed)
  net_noisy, noisy_step, _ = make_original(to_tensor(noisy), gts, gt_masks, num_crowds)
  noisy_losses = noisy_step()
  noisy_after = {k: tensor_to_numpy(v) for k, v in net_noisy.state_dict().items()}
  del net_noisy, noisy_step
  out: dict[str, Any] = {
      'batch_size': batch_size, 'objects_per_image': args.train_objects, 'freeze_bn': freeze_bn,
      'learning_rate': lr, 'momentum': cfg.train.momentum, 'weight_decay': cfg.train.decay,
      'num_positives': int(metrics['num_pos']), 'masks_to_train': cfg.mask.masks_to_train,
      'losses': compare_losses(ours_losses, theirs_losses),
      'update': compare_updates(before, ours_after, theirs_after),
      'original_self': {'input_noise_relative': 1e-6,
                        'losses': compare_losses(noisy_losses, theirs_losses),
                        'update': compare_updates(before, noisy_after, theirs_after)},
      'ours_compile_s': compile_s}

  if not args.skip_speed:
    # Every timed step starts from the initial weights (a step's cost does not depend on them;
    # repeated steps at the first iteration's learning rate can diverge from random weights).
    times = time_interleaved({'ours': ours_step, 'original': original_step}, 1,
                             args.train_warmup, args.train_repeats,
                             setup={'ours': ours_reset, 'original': original_reset})
    out['speed'] = speed_summary({'train_step': times['ours']},
                                 {'train_step': times['original']}, batch_size)
  return out


# ---------------------------------------------------------------------------------------------
# Command line


def limit_threads(threads: int | None) -> int:
  """Pin this process to ``threads`` of its CPUs (before JAX starts); returns the count used."""
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None
  if threads and cpus and threads < len(cpus):
    os.sched_setaffinity(0, cpus[:threads])
    cpus = cpus[:threads]
  return len(cpus) if cpus else (threads or os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--yolact-repo', required=True, help='a checkout of dbolya/yolact')
  p.add_argument('--config', default='yolact_resnet50',
                 help='preset name, the same on both sides (the original gets <name>_config)')
  weights = p.add_mutually_exclusive_group(required=True)
  weights.add_argument('--weights', help='an original .pth checkpoint')
  weights.add_argument('--random-weights', type=int, metavar='SEED',
                       help='seeded random weights, identical on both sides')
  p.add_argument('--images', nargs='+', help='image files and/or folders')
  p.add_argument('--num-images', type=int, default=4,
                 help='images to use (seeded random images when --images is not given)')
  p.add_argument('--seed', type=int, default=0, help='seed of the random images')
  p.add_argument('--batch-size', type=int, default=1)
  p.add_argument('--nms', choices=tuple(NMS_TO_ORIGINAL_FLAGS), default='fast')
  p.add_argument('--match-iou', type=float, default=0.9, help='box IoU to match detections')
  p.add_argument('--threads', type=int, default=None, help='CPU threads for both sides '
                 '(default: every CPU this process may use)')
  p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu')
  p.add_argument('--warmup', type=int, default=2, help='untimed batches per side (the '
                 'original\'s benchmark skips 2 images)')
  p.add_argument('--repeats', type=int, default=10, help='timed batches per side')
  p.add_argument('--skip-speed', action='store_true', help='compare outputs only')
  train = p.add_argument_group('training step (--train-step)')
  train.add_argument('--train-step', action='store_true',
                     help='also compare one training step (losses, parameter update) and time '
                          'both sides\' steps')
  train.add_argument('--train-batch-size', type=int, default=2,
                     help='images per training batch (the first images, network input size)')
  train.add_argument('--train-objects', type=int, default=3,
                     help='seeded ground-truth objects per training image')
  train.add_argument('--train-warmup', type=int, default=1, help='untimed steps per side')
  train.add_argument('--train-repeats', type=int, default=3, help='timed steps per side')
  p.add_argument('--out', type=pathlib.Path, default=None,
                 help='JSON path (default results/compare_pytorch_<config>_<device>.json); '
                      '.md beside it')
  return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = build_parser().parse_args(argv)
  threads = limit_threads(args.threads)
  import jax
  if args.device == 'cpu':
    jax.config.update('jax_platforms', 'cpu')
  import torch
  torch.set_num_threads(threads)
  if args.device == 'cuda' and not torch.cuda.is_available():
    raise SystemExit('--device cuda: PyTorch sees no CUDA device')

  from yolact_jax.checkpoint.convert import load_original_weights
  from yolact_jax.config import get_config
  from yolact_jax.detect import detect_kwargs
  from yolact_jax.model.yolact import Yolact
  from yolact_jax.predict import InferenceProgram, pack_canvas, preprocess, unpack_detections

  cfg = get_config(args.config, [f'detect.nms={args.nms}'])
  if args.images:
    files = list_images(args.images)[:args.num_images]
    if not files:
      raise SystemExit('no images found')
    images, inputs_desc = read_images_rgb(files), f'{len(files)} images from {args.images}'
  else:
    images = seeded_images(args.num_images, args.seed)
    inputs_desc = f'{args.num_images} seeded random images (seed {args.seed})'
  batches, canvas_hw = make_batches(images, args.batch_size)
  to_input = jax.jit(lambda c, s: preprocess(c, s, cfg.max_size, cfg.backbone.transform))
  net_inputs = [np.asarray(to_input(c, s)) for c, s, _ in batches]

  if args.weights:
    variables = load_original_weights(args.weights, cfg)
    weights_desc = str(args.weights)
  else:
    variables = random_variables(cfg, args.random_weights, net_inputs[0])
    weights_desc = f'random (seed {args.random_weights}, calibrated BatchNorm)'

  with original_runtime_shims(torch) as shims:
    original = import_original(args.yolact_repo, torch)
    original.set_cfg(f'{args.config}_config')
    original_cfg = original.config_module.cfg
    # eval.py's evaluate() sets this unconditionally (the config does not define it, and
    # layers/output_utils.postprocess reads it)
    original_cfg.mask_proto_debug = False
    if args.device == 'cuda':
      torch.set_default_tensor_type('torch.cuda.FloatTensor')  # as eval.py
    net = original.Yolact()
    if args.weights:
      net.load_weights(args.weights)
    else:
      net.load_state_dict(to_torch_state_dict(variables, torch), strict=True)
    net.eval()
    if args.device == 'cuda':
      net = net.cuda()
    capture = install_output_capture(net)
    check_original_nms(capture.detect, args.nms)
    capture.use_fast_nms, capture.use_cross_class_nms = NMS_TO_ORIGINAL_FLAGS[args.nms]
    detect_settings = {'ours': detect_kwargs(cfg),
                       'original': {name: getattr(capture.detect, name, None) for name in (
                           'top_k', 'conf_thresh', 'nms_thresh', 'use_fast_nms',
                           'use_cross_class_nms')}}
    detect_settings['original']['max_num_detections'] = getattr(
        original_cfg, 'max_num_detections', None)
    device = torch.device(args.device)
    torch_inputs = [torch.from_numpy(np.array(x.transpose(0, 3, 1, 2), order='C')).to(device)
                    for x in net_inputs]

    def sync():
      if args.device == 'cuda':
        torch.cuda.synchronize()

    def original_batch(k: int) -> list[dict]:
      _, sizes, _ = batches[k]
      with torch.no_grad():
        out = net(torch_inputs[k])
        results = []
        for i, (h, w) in enumerate(sizes.tolist()):
          t = original.postprocess(out, w, h, batch_idx=i, score_threshold=0)
          results.append(original_result(*t[:4], h, w))
      sync()
      return results

    def original_network(k: int) -> None:
      capture.bypass = True
      try:
        with torch.no_grad():
          net(torch_inputs[k])
        sync()
      finally:
        capture.bypass = False

    # ---- our side
    model = Yolact(cfg)
    device_vars = jax.device_put(variables)
    program = InferenceProgram(cfg)
    device_inputs = [jax.device_put(x) for x in net_inputs]
    t0 = time.perf_counter()
    e2e = program.from_network_input.lower(device_vars, device_inputs[0], batches[0][1],
                                           canvas_hw=canvas_hw).compile()
    network = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        device_vars, device_inputs[0]).compile()
    compile_s = time.perf_counter() - t0

    def ours_batch(k: int) -> list[dict]:
      canvas, sizes, count = batches[k]
      outputs = jax.device_get(e2e(device_vars, device_inputs[k], sizes))
      return [ours_result(d) for d in unpack_detections(outputs, sizes, len(sizes),
                                                        cfg.dataset.class_names)]

    def ours_network(k: int) -> None:
      jax.block_until_ready(network(device_vars, device_inputs[k]))

    # ---- outputs
    raw_diffs, per_image = [], []
    for k, (_, sizes, count) in enumerate(batches):
      capture.record = True
      theirs = original_batch(k)
      capture.record = False
      raw = jax.device_get(network(device_vars, device_inputs[k]))
      ours_raw = {'loc': raw['loc'], 'conf': jax.nn.softmax(raw['conf'], axis=-1),
                  'mask': raw['mask'], 'proto': raw['proto'],
                  'priors': program.priors}
      theirs_raw = {key: tensor_to_numpy(v) for key, v in capture.outputs.items()}
      raw_diffs.append(raw_output_diff(jax.device_get(ours_raw), theirs_raw))
      ours = ours_batch(k)
      for i in range(count):
        entry = compare_detections(ours[i], theirs[i], args.match_iou)
        entry['image'] = k * args.batch_size + i
        entry['image_hw'] = sizes[i].tolist()
        per_image.append(entry)

    # ---- speed
    speed: dict[str, Any] = {}
    load_before_timing = [round(x, 2) for x in os.getloadavg()]
    if not args.skip_speed:
      n = len(batches)
      times = time_interleaved({('ours', 'network'): ours_network,
                                ('ours', 'end_to_end'): ours_batch,
                                ('original', 'network'): original_network,
                                ('original', 'end_to_end'): original_batch},
                               n, args.warmup, args.repeats)
      speed = speed_summary({stage: t for (side, stage), t in times.items() if side == 'ours'},
                            {stage: t for (side, stage), t in times.items()
                             if side == 'original'}, args.batch_size)
    speed['ours_compile_s'] = compile_s
    original_commit = original.commit

    train_report = None
    if args.train_step:
      train_images = [images[k % len(images)] for k in range(args.train_batch_size)]
      canvas, sizes = pack_canvas(train_images, canvas_hw, args.train_batch_size)
      train_report = train_side_by_side(args, cfg, variables, original, torch, device,
                                        np.asarray(to_input(canvas, sizes)))

  report = {
      'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'settings': {'config': args.config, 'weights': weights_desc, 'inputs': inputs_desc,
                   'batch_size': args.batch_size, 'device': args.device, 'threads': threads,
                   'torch_threads': torch.get_num_threads(), 'nms': args.nms,
                   'match_iou': args.match_iou, 'warmup': args.warmup, 'repeats': args.repeats,
                   'canvas_hw': list(canvas_hw), 'yolact_repo': str(original.repo),
                   'original_commit': original_commit, 'shims': shims,
                   'detect_settings': detect_settings},
      'machine': {'cpu_model': cpu_info()['model'], 'cpu_cores_usable': threads,
                  'cpu_count_total': os.cpu_count(),
                  'load_average_before_timing': load_before_timing,
                  'load_average': [round(x, 2) for x in os.getloadavg()],
                  'thread_env': {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ},
                  'torch': torch.__version__, 'jax': jax.__version__,
                  'jax_device': jax.devices()[0].device_kind, 'python': platform.python_version()},
      'raw_outputs': merge_raw_diffs(raw_diffs),
      'detections': {'total': summarize_detection_comparison(per_image), 'per_image': per_image},
      'speed': speed,
  }
  if train_report is not None:
    report['train_step'] = train_report
  out = args.out or PROJECT_ROOT / 'results' / f'compare_pytorch_{args.config}_{args.device}.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=1, default=float) + '\n')
  out.with_suffix('.md').write_text(markdown_report(report) + '\n')
  print(markdown_report(report))
  return report


if __name__ == '__main__':
  main()
