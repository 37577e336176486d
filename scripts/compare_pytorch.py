"""Side by side with the original PyTorch YOLACT: same weights, same inputs, outputs and speed.

    # seeded random weights (identical on both sides), seeded images, CPU, 2 threads
    python scripts/compare_pytorch.py --yolact-repo ~/src/yolact --config yolact_resnet50 \\
        --random-weights 0 --num-images 8 --batch-size 1 --threads 2
    # an official checkpoint on real images
    python scripts/compare_pytorch.py --yolact-repo ~/src/yolact --config yolact_base \\
        --weights weights/yolact_base_54_800000.pth --images data/coco/images/val2017 \\
        --num-images 50

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
import datetime
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import time
import types
from typing import Any, Callable, Iterator, Sequence

import numpy as np

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(PROJECT_ROOT))

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


def git_commit(path: pathlib.Path) -> str | None:
  try:
    out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=path, capture_output=True, text=True,
                         timeout=10)
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


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
                     repeats: int) -> dict[Any, list[float]]:
  """:func:`time_batches` for several callables at once: the warm-up of each, then ``repeats``
  rounds in which every callable runs once on the same batch (round ``k`` starts at the ``k``-th
  callable), so load that changes over time falls on all of them alike. Returns seconds per key."""
  keys = list(runs)
  for key in keys:
    for k in range(warmup):
      runs[key](k % num_batches)
  times: dict[Any, list[float]] = {key: [] for key in keys}
  for k in range(repeats):
    for key in keys[k % len(keys):] + keys[:k % len(keys)]:
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
  warning = oversubscription_warning(report['machine'])
  if warning and 'ours' in speed:
    lines += ['', f'**Warning:** {warning}']
  return '\n'.join(lines)


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
  """Batches of (canvas [B,Hc,Wc,3], sizes [B,2], real count); the last batch is filled by
  cycling from the first images (only real images are compared). Canvas = the largest h, w."""
  from yolact_jax.predict import pad_batch
  canvas_hw = (max(i.shape[0] for i in images), max(i.shape[1] for i in images))
  batches = []
  for start in range(0, len(images), batch_size):
    chunk = list(images[start:start + batch_size])
    count = len(chunk)
    chunk += [images[k % len(images)] for k in range(batch_size - count)]
    canvas, sizes = pad_batch(chunk, canvas_hw, batch_size)
    batches.append((canvas, sizes, count))
  return batches, canvas_hw


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
  from yolact_jax.predict import InferenceProgram, preprocess, unpack_detections

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

  report = {
      'date_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'settings': {'config': args.config, 'weights': weights_desc, 'inputs': inputs_desc,
                   'batch_size': args.batch_size, 'device': args.device, 'threads': threads,
                   'torch_threads': torch.get_num_threads(), 'nms': args.nms,
                   'match_iou': args.match_iou, 'warmup': args.warmup, 'repeats': args.repeats,
                   'canvas_hw': list(canvas_hw), 'yolact_repo': str(original.repo),
                   'original_commit': original_commit, 'shims': shims,
                   'detect_settings': detect_settings},
      'machine': {'cpu_model': cpu_model(), 'cpu_cores_usable': threads,
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
  out = args.out or PROJECT_ROOT / 'results' / f'compare_pytorch_{args.config}_{args.device}.json'
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=1, default=float) + '\n')
  out.with_suffix('.md').write_text(markdown_report(report) + '\n')
  print(markdown_report(report))
  return report


def cpu_model() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


if __name__ == '__main__':
  main()
