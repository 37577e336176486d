"""Experiment tracking for the training loop: TensorBoard event files, optional Weights & Biases,
``jax.profiler`` traces, and prediction overlays for validation.

On process 0 only, a run directory gets ``tensorboard/`` event files (written with tensorboardX,
which needs no TensorFlow; the tags: :class:`Tracker`), ``profile/`` traces of
``TrainOptions.profile_steps`` (:class:`StepProfiler`) and, with ``TrainOptions.wandb``, a W&B
run that a resumed run continues; ``metrics.jsonl`` stays the plain-text record. wandb is
imported only then; it is not a dependency.

The validation hook's protocol: ``eval_fn(variables, step) -> dict`` of metrics (at least
``mask_map``), which may hold ``'overlays'``: a list of uint8 ``[H, W, 3]`` RGB images
(:func:`prediction_overlays` draws them). Overlays go to TensorBoard / W&B only, never to
``metrics.jsonl``.
"""

from __future__ import annotations

import logging
import os
import pathlib
import struct
import uuid
from typing import Any, Iterator

import jax
import numpy as np

log = logging.getLogger(__name__)

TENSORBOARD_DIR = 'tensorboard'  # sub-directories of a run directory
PROFILE_DIR = 'profile'
WANDB_ID_FILE = 'wandb_run_id'
OVERLAYS = 'overlays'  # the eval_fn result key holding prediction overlays


class TrackingError(RuntimeError):
  """A tracking option that cannot be honoured (e.g. wandb requested but not installed)."""


def import_wandb() -> Any:
  """The ``wandb`` module, or a one-line ``TrackingError`` saying how to install it."""
  try:
    import wandb  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise TrackingError('Weights & Biases logging (--wandb) needs the wandb package, which is '
                        'not installed: pip install wandb (or train without --wandb)') from e
  return wandb


def scalar_leaves(tree: dict, prefix: str = '') -> dict[str, float]:
  """The numeric leaves of a nested metrics dict as ``{'a/b/c': float}`` (others skipped)."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(scalar_leaves(value, f'{name}/'))
    elif isinstance(value, (bool, np.bool_)):
      continue
    elif isinstance(value, (int, float, np.floating, np.integer)):
      out[name] = float(value)
  return out


def _report_text(result: dict) -> str | None:
  """The evaluation table of a COCO summary (None when ``result`` is not one)."""
  if 'bbox' not in result and 'segm' not in result:
    return None
  from yolact_jax.evaluation import report  # pylint: disable=import-outside-toplevel
  try:
    return report.format_report({'num_images': 0, **result})
  except (KeyError, TypeError, ValueError):
    return None


def _check_overlay(image: Any, index: int) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"eval_fn's overlays[{index}]: expected uint8 [H, W, 3] RGB, got "
                     f'{image.dtype} {image.shape}')
  return image


class Tracker:
  """Writes a run's metrics to TensorBoard (and W&B); does nothing on processes other than 0.

  Args:
    workdir: the run directory.
    tensorboard: write event files to ``workdir/tensorboard``.
    wandb: also log to Weights & Biases (``TrackingError`` if wandb is not installed).
    config: the run's config as a dict (W&B's run config).
    name: the run's display name (W&B).

  TensorBoard tags (``tensorboard --logdir runs/``): ``train/<term>`` at every log interval:
  each loss term (``loss``, ``B``, ``C``, ``M``, ``S``, ``I`` ...), ``lr``, ``images_per_s``,
  ``num_skipped``, ``non_finite_in_interval``; ``eval/<metric>`` at every validation:
  ``box_map``, ``mask_map``, the 12 COCO numbers (``eval/bbox/AP50`` ...) and per-class AP
  (``eval/segm/per_class_AP/<class>``; -1: no ground truth for that class); ``eval/report``
  (text): the mAP table as ``evaluate.py`` prints it; ``eval/predictions/<i>`` (images): the
  overlays the validation hook returned. W&B gets the same scalars, text and images in a run
  whose id is kept in ``wandb_run_id`` in the run directory, so a resumed run continues it.
  """

  def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True,
               wandb: bool = False, config: dict | None = None, name: str | None = None):
    self.workdir = pathlib.Path(workdir)
    self.writer = None
    self.wandb = None
    self.wandb_run = None
    if jax.process_index() != 0:
      return
    if wandb:
      self.wandb = import_wandb()  # before anything is written: fail fast
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self.writer = SummaryWriter(str(self.workdir / TENSORBOARD_DIR), flush_secs=30)
    if wandb:
      self.wandb_run = self.wandb.init(dir=str(self.workdir), config=config, name=name,
                                       id=self._wandb_id(), resume='allow')

  def _wandb_id(self) -> str:
    path = self.workdir / WANDB_ID_FILE
    if path.exists():
      return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + '\n')
    return run_id

  def log_train(self, step: int, summary: dict) -> None:
    """One log interval's averages (``trainer._MetricLog.flush_steps``'s summary)."""
    scalars = {f'train/{k}': v for k, v in scalar_leaves(summary).items() if k != 'step'}
    self._scalars(step, scalars)

  def log_eval(self, step: int, result: dict) -> None:
    """One validation: scalars, the mAP table as text, and the overlays if any."""
    metrics = {k: v for k, v in result.items() if k != OVERLAYS}
    self._scalars(step, {f'eval/{k}': v for k, v in scalar_leaves(metrics).items()})
    text = _report_text(metrics)
    overlays = [_check_overlay(image, i) for i, image in enumerate(result.get(OVERLAYS) or ())]
    if self.writer is not None:
      if text is not None:  # indented: TensorBoard renders text as markdown
        self.writer.add_text('eval/report', '    ' + text.replace('\n', '\n    '), step)
      for i, image in enumerate(overlays):
        self.writer.add_image(f'eval/predictions/{i}', image, step, dataformats='HWC')
      self.writer.flush()
    if self.wandb_run is not None:
      logged: dict[str, Any] = {}
      if text is not None:
        logged['eval/report'] = self.wandb.Html(f'<pre>{text}</pre>')
      if overlays:
        logged['eval/predictions'] = [self.wandb.Image(image) for image in overlays]
      if logged:
        self.wandb_run.log(logged, step=step)

  def _scalars(self, step: int, scalars: dict[str, float]) -> None:
    if self.writer is not None:
      for tag, value in scalars.items():
        self.writer.add_scalar(tag, value, step)
    if self.wandb_run is not None:
      self.wandb_run.log(scalars, step=step)

  def close(self) -> None:
    """Flushes and closes the writers; a write that fails now (a full disk) is one warning line,
    so that it cannot hide the error that ended the run."""
    if self.writer is not None:
      writer, self.writer = self.writer, None
      try:
        writer.close()
      except OSError as e:
        log.warning('TensorBoard events not all written to %s (%s)', self.workdir / TENSORBOARD_DIR,
                    e.strerror or e)
    if self.wandb_run is not None:
      self.wandb_run.finish()
      self.wandb_run = None


class StepProfiler:
  """A ``jax.profiler`` trace of steps A..B (1-based, inclusive) into ``workdir/profile``.

  The trainer calls :meth:`before_step` with the number of the step about to run and
  :meth:`after_step` with the number of the step just run (after its results are ready), and
  :meth:`close` at the end (stops a trace still running, e.g. after a signal). A run resumed
  past A traces nothing. Process 0 only. It writes
  ``profile/plugins/profile/<time>/*.xplane.pb`` and ``*.trace.json.gz`` (TensorBoard's profile
  plugin, or Perfetto for the ``.trace.json.gz``).
  """

  def __init__(self, workdir: str | os.PathLike, steps: tuple[int, int] | None):
    if steps is not None:
      first, last = (int(s) for s in steps)
      if not 1 <= first <= last:
        raise ValueError(f'profile_steps must be (A, B) with 1 <= A <= B, got {steps}')
      steps = (first, last)
    self.steps = steps if jax.process_index() == 0 else None
    self.directory = pathlib.Path(workdir) / PROFILE_DIR
    self.active = False

  def before_step(self, step: int) -> None:
    if self.steps is not None and step == self.steps[0] and not self.active:
      jax.profiler.start_trace(str(self.directory))
      self.active = True
      log.info('profiling steps %d to %d into %s', *self.steps, self.directory)

  def after_step(self, step: int, outputs: Any) -> None:
    if self.active and step >= self.steps[1]:
      jax.block_until_ready(outputs)
      self.close()

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False
      log.info('wrote a profiler trace to %s (tensorboard --logdir %s, or the .trace.json.gz '
               'in Perfetto)', self.directory, self.directory)


def prediction_overlays(cfg: Any, variables: Any, source: Any, count: int = 4,
                        top_k: int = 5, score_threshold: float = 0.0) -> list[np.ndarray]:
  """Predictions drawn on the first ``count`` images of a record source (validation), as
  uint8 RGB ``[H, W, 3]`` images: what an ``eval_fn`` returns under ``'overlays'``.

  Unreadable images are skipped. ``top_k`` / ``score_threshold``: the overlay display filters
  (``visualize.display_detections``).
  """
  # pylint: disable=import-outside-toplevel
  from yolact_jax import visualize
  from yolact_jax.data import coco
  from yolact_jax.predict import Predictor
  images = []
  for index in range(min(count, len(source))):
    try:
      images.append(coco.decode_record(source[index]).image)
    except coco.BrokenSampleError as e:
      log.warning('overlay: skipping %s: %s', e.file_name, e.reason)
  if not images:
    return []
  predictor = Predictor(cfg, variables, max_batch=len(images))
  detections = predictor(images, channel_order='bgr')
  return [visualize.draw_detections(image, dets, channel_order='bgr', top_k=top_k,
                                    score_threshold=score_threshold)[..., ::-1].copy()
          for image, dets in zip(images, detections)]


def _records(path: pathlib.Path) -> Iterator[bytes]:
  """The payloads of a TFRecord file (length, crc, data, crc; crcs not checked)."""
  with open(path, 'rb') as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        return
      (length,) = struct.unpack('<Q', header[:8])
      data = f.read(length)
      f.read(4)
      if len(data) < length:
        return
      yield data


def read_events(logdir: str | os.PathLike) -> list[Any]:
  """Every ``Event`` protobuf of the event files under ``logdir`` (file order), read without
  TensorFlow: ``event.step``, ``event.summary.value[i].tag`` / ``.simple_value`` / ``.image``."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  events = []
  for path in sorted(pathlib.Path(logdir).rglob('events.out.tfevents.*')):
    for data in _records(path):
      event = event_pb2.Event()
      event.ParseFromString(data)
      events.append(event)
  return events


def scalar_series(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
  """``{tag: [(step, value), ...]}`` of the scalars under ``logdir``."""
  series: dict[str, list[tuple[int, float]]] = {}
  for event in read_events(logdir):
    for value in event.summary.value:
      if value.WhichOneof('value') == 'simple_value':
        series.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
  return series


def tags(logdir: str | os.PathLike) -> set[str]:
  """Every summary tag written under ``logdir`` (scalars, text, images)."""
  return {value.tag for event in read_events(logdir) for value in event.summary.value}

