"""The training loop: data, the jitted update, logging, checkpoints, resume, signals.

``train(cfg, workdir, train_source)`` runs (or resumes) a run in ``workdir``: ``checkpoints/``
(``yolact_jax.checkpoint.runs``: per step the whole ``TrainState`` and the data position; the
newest ``keep`` plus the best by validation mask mAP), ``metrics.jsonl`` (one JSON line per log
interval and per validation), ``tensorboard/`` and ``profile/`` (``yolact_jax.tracking``), all
from process 0 only. Model, optimiser and the jitted step come from
``train_step.build_training(cfg)``; before the first step the dataset's classes are checked
against the config (``yolact_jax.data.categories``).

Resume is automatic: the newest readable checkpoint is restored, data position included, so a
run interrupted at step N and resumed reaches the same parameters as an uninterrupted one, on the
same or another number of devices or processes. SIGINT and SIGTERM finish the current step, save
a checkpoint and return; too many non-finite steps stop the run (:func:`train`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from tqdm import tqdm

from yolact_jax import parallel
from yolact_jax import tracking
from yolact_jax import train_step as ts
from yolact_jax.checkpoint import runs
from yolact_jax.config import YolactConfig, config_to_dict
from yolact_jax.data import categories, loader
from yolact_jax.model.shapes import feature_sizes, proto_size

log = logging.getLogger(__name__)

BATCH_KEYS = ('image', 'boxes', 'labels', 'is_crowd', 'valid', 'masks_proto', 'masks_segm')
NONFINITE_WINDOW = 100  # steps over which train.max_nonfinite_fraction is counted


class TrainingDiverged(RuntimeError):
  """Too many steps had a non-finite loss or gradient (the run is stopped, nothing saved)."""


def pipeline_options(cfg: YolactConfig) -> loader.PipelineOptions:
  """Data-pipeline settings that follow the model config (sizes, transform, augmentation)."""
  hp, hs = proto_size(cfg), feature_sizes(cfg)[0]
  return loader.PipelineOptions(
      max_size=cfg.max_size, transform_kind=cfg.model.backbone.transform,
      flags=cfg.augment,
      max_instances=cfg.train.max_instances, proto_hw=(hp, hp), segm_hw=(hs, hs),
      num_classes=cfg.num_classes - 1)


@dataclasses.dataclass
class TrainOptions:
  """How to run (not what to learn: that is the config)."""
  num_steps: int | None = None  # stop here (default: the schedule's max_iter)
  log_every: int = 10  # steps between metric lines (and host syncs)
  save_every: int = 500  # steps between checkpoints
  keep: int = 3  # newest checkpoints kept (plus the best by validation mask mAP)
  eval_every: int = 0  # steps between validations (0: only at the end, if eval_fn is given)
  workers: int = 0  # grain worker processes
  progress: bool = True  # tqdm progress bar
  init: Callable[[], dict] | None = None  # initial variables for a new run (default: random)
  # (variables, step) -> metrics (with 'mask_map'; may hold 'overlays': uint8 RGB images)
  eval_fn: Callable[[dict, int], dict] | None = None
  on_step: Callable[[int, dict], None] | None = None  # called after each step (tests, hooks)
  devices: Sequence[Any] | None = None  # devices the batch is split over (default: all)
  tensorboard: bool = True  # event files in <workdir>/tensorboard
  wandb: bool = False  # also log to Weights & Biases (needs `pip install wandb`)
  profile_steps: tuple[int, int] | None = None  # (A, B): jax.profiler trace of steps A..B
  # True: the caller already ran categories.check_source(cfg, train_source) and passes its
  # config (the command line does, to build init and eval_fn from it); train() checks otherwise
  classes_checked: bool = False


class _StopSignal:
  """Turns SIGINT/SIGTERM into a flag checked between steps (restored on exit). After the first
  SIGINT a second one ends the process at once, quietly, wherever it is (the default action;
  a save it cuts short leaves a temporary folder that the next run removes): the first one's
  line says what will then be left (``note()``)."""

  def __init__(self, note: Callable[[], str] = lambda: ''):
    self.received: int | None = None
    self._previous: dict[int, Any] = {}
    self._note = note

  def _handle(self, signum, frame):
    del frame
    if self.received is None and signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.SIG_DFL)  # works even inside a blocking save
      log.warning('received SIGINT: saving a checkpoint after this step (Ctrl-C again stops at '
                  'once; %s)', self._note())
    elif self.received is None:
      log.warning('received %s: saving a checkpoint after this step',
                  signal.Signals(signum).name)
    self.received = signum

  def __enter__(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: signals stay as they are
        pass
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _NonFiniteGuard:
  """Counts non-finite steps (``metrics['finite']`` False) and says when the run diverged."""

  def __init__(self, in_a_row: int, fraction: float):
    self.in_a_row, self.fraction = in_a_row, fraction
    self.window: collections.deque[tuple[int, bool]] = collections.deque(maxlen=NONFINITE_WINDOW)
    self.streak: list[int] = []  # steps of the current run of non-finite steps
    self.last_seen = 0

  def observe(self, first_step: int, finite: Sequence[bool]) -> None:
    """Flags of steps ``first_step, first_step + 1, ...`` (steps already seen are ignored)."""
    for step, ok in enumerate(finite, start=first_step):
      if step <= self.last_seen:
        continue
      self.last_seen = step
      self.window.append((step, bool(ok)))
      self.streak = [] if ok else self.streak + [step]

  def verdict(self) -> tuple[str, int] | None:
    """``(what happened, first step of it)`` once a threshold is passed, else None."""
    if self.in_a_row and len(self.streak) >= self.in_a_row:
      return (f'{len(self.streak)} non-finite steps in a row (steps {self.streak[0]}-'
              f'{self.streak[-1]}; train.max_nonfinite_in_a_row={self.in_a_row})', self.streak[0])
    bad = [step for step, ok in self.window if not ok]
    if self.fraction and len(bad) > self.fraction * NONFINITE_WINDOW:
      return (f'{len(bad)} of the last {len(self.window)} steps were non-finite '
              f'(train.max_nonfinite_fraction={self.fraction:g} of {NONFINITE_WINDOW})', bad[0])
    return None


def state_variables(state: ts.TrainState) -> dict:
  return {'params': state.params, 'batch_stats': state.batch_stats}


class _MetricLog:
  """Appends JSON lines (process 0 only); averages per-step device metrics at each log
  interval. Every line records the run's ``num_devices`` and ``num_processes``."""

  def __init__(self, path: pathlib.Path, topology: dict[str, int]):
    self.path = path
    self.topology = topology
    self.pending: list[dict] = []

  def write(self, record: dict) -> None:
    if jax.process_index() == 0:
      with open(self.path, 'a') as f:
        f.write(json.dumps({**record, **self.topology}) + '\n')

  def flush_steps(self, step: int, images_per_s: float, num_skipped: int) -> dict:
    rows = jax.device_get(self.pending)
    self.pending = []
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != 'finite'}
    summary.update(step=step, images_per_s=images_per_s, num_skipped=num_skipped,
                   non_finite_in_interval=int(sum(not bool(r['finite']) for r in rows)))
    self.write({'kind': 'train', **summary})
    return summary


class _Run:
  """One training run's moving parts: state, data iterator, checkpoints, metrics, summary."""

  def __init__(self, cfg: YolactConfig, workdir: pathlib.Path, train_source: Any,
               options: TrainOptions):
    self.options, self.workdir, self.source = options, workdir, train_source
    devices = list(options.devices) if options.devices is not None else jax.devices()
    self.mesh = parallel.data_mesh(devices) if len(devices) > 1 else None
    self.topology = {'num_devices': len(devices), 'num_processes': jax.process_count()}
    log.info('training on %d device(s) (%s) in %d process(es); global batch %d',
             len(devices), devices[0].platform, jax.process_count(), cfg.train.batch_size)
    self.cfg = cfg = _keep_batchnorm_mode(cfg, workdir, parallel.num_replicas(self.mesh))
    self.profiler = tracking.StepProfiler(workdir, options.profile_steps)
    self.tracker = tracking.Tracker(workdir, tensorboard=options.tensorboard,
                                    wandb=options.wandb, config=config_to_dict(cfg),
                                    name=f'{cfg.name} {workdir.name}')
    self.training = ts.build_training(cfg, mesh=self.mesh)
    self.num_steps = options.num_steps or self.training.schedule.max_iter
    self.manager = runs.checkpoint_manager(workdir / runs.CHECKPOINTS, options.keep)
    if jax.process_index() == 0:
      (workdir / 'config.json').write_text(
          json.dumps({**config_to_dict(cfg), **self.topology}, indent=1))
    self.state, self.position = self._restore_or_init(workdir)
    self.start = int(self.state.step)
    self.data_iter = iter(loader.make_train_loader(
        train_source, cfg.train.batch_size, cfg.train.seed, pipeline_options(cfg),
        worker_count=options.workers,
        rows=parallel.local_batch_rows(cfg.train.batch_size, self.mesh),
        start=self.position.position))
    self.metrics_log = _MetricLog(workdir / 'metrics.jsonl', self.topology)
    self.guard = _NonFiniteGuard(cfg.train.max_nonfinite_in_a_row,
                                 cfg.train.max_nonfinite_fraction)
    self.summary: dict[str, Any] = {'step': self.start, 'stopped_by': None,
                                    'last_metrics': None, 'last_eval': None}
    parallel.set_failure_note(self.resume_note)

  def _data_position(self, step: int) -> loader.DataPosition:
    """Where the data stream stands after ``step`` steps from a fresh start."""
    return loader.DataPosition(step * self.cfg.train.batch_size, self.cfg.train.seed,
                               len(self.source))

  def _restore_or_init(self, workdir: pathlib.Path) -> tuple[ts.TrainState, loader.DataPosition]:
    """The newest readable checkpoint's state and data position, else a new state at 0."""
    def restore(step: int) -> dict:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(self.training.abstract_state())))
      return {'state': restored['state'], 'position': self._restore_position(step)}

    step, restored = runs.restore_newest_readable(self.manager, restore,
                                                  rename=jax.process_index() == 0)
    if jax.process_count() > 1:  # every process sees the renamed (unreadable) steps
      multihost_utils.sync_global_devices('yolact_jax restore')
      self.manager.reload()
    if step is None:
      init = self.options.init
      return self.training.init_state(init() if init is not None else None), \
          self._data_position(0)
    log.info('resumed from step %d in %s', int(restored['state'].step), workdir)
    return restored['state'], restored['position']

  def _restore_position(self, step: int) -> loader.DataPosition:
    """The data position saved with ``step``; for a checkpoint without one (written by an
    earlier version), the position ``step`` steps of this batch size reach, with a warning."""
    try:
      with runs.quiet('absl'):
        data = self.manager.restore(step, args=ocp.args.Composite(
            data=ocp.args.JsonRestore()))['data']
      position = loader.DataPosition.from_json(data)
    except (KeyError, TypeError, ValueError, FileNotFoundError) as e:
      log.warning('checkpoint %d has no data position (%s): continuing at record %d', step,
                  runs.first_line(e), step * self.cfg.train.batch_size)
      return self._data_position(step)
    expected = self._data_position(0)
    if (position.seed, position.num_records) != (expected.seed, expected.num_records):
      log.warning('the run drew its data with seed %d from %d records; now seed %d and %d '
                  'records: the data order differs from the uninterrupted run', position.seed,
                  position.num_records, expected.seed, expected.num_records)
    return dataclasses.replace(position, seed=expected.seed, num_records=expected.num_records)

  def resume_note(self) -> str:
    """What a run that stops now leaves to resume from (for one-line failure messages)."""
    latest = self.manager.latest_step()
    where = self.workdir / runs.CHECKPOINTS
    return (f'the newest checkpoint is step {latest} in {where}' if latest is not None
            else f'no checkpoint was saved yet in {where}')

  def check_finite(self, step: int) -> None:
    """Feeds the steps not yet seen to the divergence guard; raises TrainingDiverged."""
    if self.metrics_log.pending:
      flags = jax.device_get([m['finite'] for m in self.metrics_log.pending])
      self.guard.observe(step - len(flags) + 1, flags)
    verdict = self.guard.verdict()
    if verdict is None:
      return
    what, first = verdict
    before = [s for s in self.manager.all_steps() if s < first]
    kept = (f'the newest checkpoint before them, step {max(before)} in '
            f'{self.workdir / runs.CHECKPOINTS}, is kept' if before
            else 'no checkpoint precedes them')
    raise TrainingDiverged(
        f'training diverged at step {step}: {what}; {kept} and nothing is saved after it. '
        'Look for degenerate boxes in the dataset warnings, or lower train.lr (setting that '
        'field to 0 turns this check off)')

  def save(self, step: int, eval_metrics: dict | None = None) -> None:
    self.check_finite(step)
    metrics = {'mask_map': float(eval_metrics['mask_map'])} if eval_metrics else None
    if self.manager.latest_step() == step and metrics is None:
      return
    directory, intact = self.workdir / runs.CHECKPOINTS, self.manager.latest_step()
    try:
      with runs.quiet('absl', 'asyncio'):  # the error below says it in one line
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(self.state),
            data=ocp.args.JsonSave(self.position.to_json())), metrics=metrics, force=True)
        self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (orbax/TensorStore errors vary)
      runs.silence_orphaned_writes(directory)
      if jax.process_index() == 0:
        runs.remove_partial_saves(directory, step)
      raise runs.save_error(e, directory, step, intact) from e

  def validate(self, step: int) -> dict | None:
    """Runs ``eval_fn`` on every process: evaluation is collective (each process runs its share
    of the images and the results are gathered, see ``evaluation.predict_coco_results``), so
    every process gets the same summary and saves with the same best-checkpoint metric."""
    if self.options.eval_fn is None:
      return None
    result = self.options.eval_fn(jax.device_get(state_variables(self.state)), step)
    self.metrics_log.write({'kind': 'eval', 'step': step, **tracking.scalar_leaves(result)})
    self.tracker.log_eval(step, result)  # process 0 only
    result = {k: v for k, v in result.items() if k != tracking.OVERLAYS}
    self.summary['last_eval'] = result
    return result

  def log_interval(self, step: int, steps: int, elapsed: float, bar: tqdm) -> None:
    rate = steps * self.cfg.train.batch_size / max(elapsed, 1e-9)
    skipped = int(self.state.num_skipped)
    last = self.metrics_log.flush_steps(step, rate, skipped)
    self.summary['last_metrics'] = last
    self.tracker.log_train(step, last)
    bar.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{last['lr']:.1e}", img_s=f'{rate:.1f}',
                    skipped=skipped)

  def loop(self, stop: '_StopSignal', bar: tqdm) -> int:
    """Steps until ``num_steps`` or a stop signal; logs, validates and saves on the way."""
    options, step = self.options, self.start
    interval_start, interval_steps = time.perf_counter(), 0
    while step < self.num_steps and stop.received is None:
      next_batch = next(self.data_iter)
      batch = parallel.shard_batch({k: next_batch[k] for k in BATCH_KEYS}, self.mesh)
      self.profiler.before_step(step + 1)
      self.state, metrics = self.training.step(self.state, batch)
      self.position = dataclasses.replace(
          self.position, position=self.position.position + self.cfg.train.batch_size)
      step += 1
      self.profiler.after_step(step, metrics)
      interval_steps += 1
      self.metrics_log.pending.append(metrics)
      bar.update(1)
      if options.on_step is not None:
        options.on_step(step, metrics)
      if step % options.log_every == 0 or step == self.num_steps:
        jax.block_until_ready(metrics)  # time the device work, not the dispatch
        self.check_finite(step)
        self.log_interval(step, interval_steps, time.perf_counter() - interval_start, bar)
        interval_start, interval_steps = time.perf_counter(), 0
      if options.eval_every and step % options.eval_every == 0 and step < self.num_steps:
        self.save(step, self.validate(step))
      elif step % options.save_every == 0 and step < self.num_steps:
        self.save(step)  # (the last step is saved by finish, with its validation)
    return step

  def finish(self, step: int, stop: '_StopSignal') -> None:
    """Flushes metrics; on a signal saves, otherwise validates (if anything ran) and saves."""
    self.profiler.close()
    if self.metrics_log.pending:
      self.summary['last_metrics'] = self.metrics_log.flush_steps(
          step, 0.0, int(self.state.num_skipped))
      self.tracker.log_train(step, self.summary['last_metrics'])
    if stop.received is not None:
      self.summary['stopped_by'] = signal.Signals(stop.received).name
      self.save(step)
    else:
      ran = step > self.start or self.summary['last_eval'] is None
      self.save(step, self.validate(step) if ran else None)


def train(cfg: YolactConfig, workdir: str | os.PathLike, train_source: Any,
          options: TrainOptions | None = None) -> dict:
  """Trains (or resumes) in ``workdir`` and returns a summary dict.

  ``train_source``: a record source of ``yolact_jax.data.loader`` (in-memory COCO or TFDS).
  The summary has ``step``, ``stopped_by`` (None, 'SIGINT', 'SIGTERM'), ``num_skipped``,
  ``last_metrics``, ``last_eval`` and the final ``state``. A ``metrics.jsonl`` line holds each
  loss term, lr, images/s and the skipped steps.

  Divergence: more non-finite steps than ``train.max_nonfinite_in_a_row`` in a row, or than
  ``train.max_nonfinite_fraction`` of the last ``NONFINITE_WINDOW`` steps, stop the run with
  :class:`TrainingDiverged` naming the newest checkpoint saved before them (nothing is saved
  after them). A save that fails (a full disk) is one ``CheckpointError`` line.
  """
  options = options or TrainOptions()
  workdir = pathlib.Path(workdir)
  if not options.classes_checked:  # before anything is built or written
    cfg = categories.check_source(cfg, train_source)
  workdir.mkdir(parents=True, exist_ok=True)
  run = _Run(cfg, workdir, train_source, options)
  bar = tqdm(total=run.num_steps, initial=run.start, unit='step', dynamic_ncols=True,
             desc=cfg.name, disable=not options.progress or jax.process_index() != 0)
  try:
    with _StopSignal(run.resume_note) as stop, contextlib.closing(bar):
      step = run.loop(stop, bar)
      run.finish(step, stop)
  except Exception as e:  # a lost process: one line and exit (nothing below may block on it)
    parallel.exit_if_collective_failed(e)
    raise
  finally:
    run.profiler.close()
    run.tracker.close()
    run.manager.close()
    parallel.set_failure_note(None)
  run.summary.update(step=step, num_skipped=int(run.state.num_skipped), state=run.state)
  return run.summary


def _keep_batchnorm_mode(cfg: YolactConfig, workdir: pathlib.Path, replicas: int
                         ) -> YolactConfig:
  """``cfg`` with ``train.freeze_bn`` decided: the value of the run's ``config.json`` when the run
  exists and ``cfg`` leaves it to the original's per-device rule (so a run resumed on another
  number of devices keeps its BatchNorm mode and its optimiser state's shape), else the rule's
  answer for this topology. The run's ``config.json`` records it."""
  decided = ts.uses_frozen_bn(cfg, replicas)
  saved = workdir / 'config.json'
  if cfg.train.freeze_bn is None and saved.is_file() and (workdir / runs.CHECKPOINTS).is_dir():
    try:
      previous = json.loads(saved.read_text())['train']['freeze_bn']
    except (OSError, ValueError, KeyError, TypeError):
      previous = None
    if isinstance(previous, bool) and previous != decided:
      log.warning('BatchNorm stays %s as when the run started (the per-device rule would '
                  'choose otherwise on %d device(s); --config.train.freeze_bn=%s forces that)',
                  'frozen' if previous else 'trained', replicas, decided)
      decided = previous
  return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, freeze_bn=decided))
