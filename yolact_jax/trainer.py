"""The training loop: data, the jitted update, logging, checkpoints, resume, signals.

``train(cfg, workdir, train_source)`` runs (or resumes) a run in ``workdir``:

* ``checkpoints/``: an orbax CheckpointManager (``yolact_jax.checkpoint.runs``); each step
  directory holds the whole ``TrainState`` (params, batch stats, optimiser state, step, RNG,
  skipped-step count) and the data iterator state (grain). The last ``keep`` checkpoints are
  kept, plus the one with the best validation mask mAP.
* ``metrics.jsonl``: one JSON line per log interval (each loss term, lr, images/s, skipped steps)
  and per validation.
* ``tensorboard/``: the same as TensorBoard event files, plus the validation mAP table and
  prediction overlays; optionally Weights & Biases; ``profile/``: a ``jax.profiler`` trace of
  ``profile_steps`` (``yolact_jax.tracking``). All of it from process 0 only.
* Before the first step the dataset's classes are checked against the config
  (``yolact_jax.data.categories``): a mismatch is an error, a non-COCO dataset trained with the
  COCO default class names trains on the dataset's names (with a notice).
* Model, optimiser and the jitted step come from ``train_step.build_training(cfg)``.
* Resume is automatic: the newest checkpoint is restored, data position included, so a run
  interrupted at step N and resumed reaches the same parameters as an uninterrupted one. An
  unreadable newest checkpoint is set aside as ``<step>.unreadable`` and the newest readable
  one is used, with a warning (``checkpoint.runs.restore_newest_readable``).
* SIGINT and SIGTERM finish the current step, save a checkpoint and return.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pathlib
import signal
import time
from typing import Any, Callable, Sequence

import grain.python as grain
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
from yolact_jax.data import augment, categories, loader
from yolact_jax.model.shapes import feature_sizes, proto_size

log = logging.getLogger(__name__)

BATCH_KEYS = ('image', 'boxes', 'labels', 'is_crowd', 'valid', 'masks_proto', 'masks_segm')


def pipeline_options(cfg: YolactConfig) -> loader.PipelineOptions:
  """Data-pipeline settings that follow the model config (sizes, transform, augmentation)."""
  hp, hs = proto_size(cfg), feature_sizes(cfg)[0]
  return loader.PipelineOptions(
      max_size=cfg.max_size, transform_kind=cfg.backbone.transform,
      flags=augment.AugmentFlags(**dataclasses.asdict(cfg.augment)),
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


class _StopSignal:
  """Turns SIGINT/SIGTERM into a flag checked between steps (restored on exit)."""

  def __init__(self):
    self.received: int | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):
    del frame
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C stops at once
    self.received = signum
    log.warning('received %s: saving a checkpoint after this step', signal.Signals(signum).name)

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
    self.cfg, self.options = cfg, options
    devices = list(options.devices) if options.devices is not None else jax.devices()
    self.mesh = parallel.data_mesh(devices) if len(devices) > 1 else None
    self.topology = {'num_devices': len(devices), 'num_processes': jax.process_count()}
    log.info('training on %d device(s) (%s) in %d process(es); global batch %d',
             len(devices), devices[0].platform, jax.process_count(), cfg.train.batch_size)
    self.profiler = tracking.StepProfiler(workdir, options.profile_steps)
    self.tracker = tracking.Tracker(workdir, tensorboard=options.tensorboard,
                                    wandb=options.wandb, config=config_to_dict(cfg),
                                    name=f'{cfg.name} {workdir.name}')
    self.training = ts.build_training(cfg, mesh=self.mesh)
    self.num_steps = options.num_steps or self.training.schedule.max_iter
    self.data_iter = iter(loader.make_train_loader(
        train_source, parallel.local_batch_size(cfg.train.batch_size, self.mesh),
        cfg.train.seed, pipeline_options(cfg), worker_count=options.workers,
        shard_index=jax.process_index(), shard_count=jax.process_count()))
    self.manager = runs.checkpoint_manager(workdir / runs.CHECKPOINTS, options.keep)
    if jax.process_index() == 0:
      (workdir / 'config.json').write_text(
          json.dumps({**config_to_dict(cfg), **self.topology}, indent=1))
    self.state = self._restore_or_init(workdir)
    self.start = int(self.state.step)
    self.metrics_log = _MetricLog(workdir / 'metrics.jsonl', self.topology)
    self.summary: dict[str, Any] = {'step': self.start, 'stopped_by': None,
                                    'last_metrics': None, 'last_eval': None}

  def _restore_or_init(self, workdir: pathlib.Path) -> ts.TrainState:
    """The newest readable checkpoint's state (data position restored too), else a new one."""
    def restore(step: int) -> dict:
      return self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(self.training.abstract_state()),
          data=grain.PyGrainCheckpointRestore(self.data_iter)))

    step, restored = runs.restore_newest_readable(self.manager, restore,
                                                  rename=jax.process_index() == 0)
    if jax.process_count() > 1:  # every process sees the renamed (unreadable) steps
      multihost_utils.sync_global_devices('yolact_jax restore')
      self.manager.reload()
    if step is None:
      init = self.options.init
      return self.training.init_state(init() if init is not None else None)
    log.info('resumed from step %d in %s', int(restored['state'].step), workdir)
    return restored['state']

  def save(self, step: int, eval_metrics: dict | None = None) -> None:
    metrics = {'mask_map': float(eval_metrics['mask_map'])} if eval_metrics else None
    if self.manager.latest_step() == step and metrics is None:
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(self.state),
        data=grain.PyGrainCheckpointSave(self.data_iter)), metrics=metrics, force=True)
    self.manager.wait_until_finished()

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
      step += 1
      self.profiler.after_step(step, metrics)
      interval_steps += 1
      self.metrics_log.pending.append(metrics)
      bar.update(1)
      if options.on_step is not None:
        options.on_step(step, metrics)
      if step % options.log_every == 0 or step == self.num_steps:
        jax.block_until_ready(metrics)  # time the device work, not the dispatch
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
  ``last_metrics``, ``last_eval`` and the final ``state``.
  """
  options = options or TrainOptions()
  workdir = pathlib.Path(workdir)
  cfg = categories.check_source(cfg, train_source)  # before anything is built or written
  workdir.mkdir(parents=True, exist_ok=True)
  run = _Run(cfg, workdir, train_source, options)
  bar = tqdm(total=run.num_steps, initial=run.start, unit='step', dynamic_ncols=True,
             desc=cfg.name, disable=not options.progress or jax.process_index() != 0)
  try:
    with _StopSignal() as stop, contextlib.closing(bar):
      step = run.loop(stop, bar)
      run.finish(step, stop)
  finally:
    run.profiler.close()
    run.tracker.close()
    run.manager.close()
  run.summary.update(step=step, num_skipped=int(run.state.num_skipped), state=run.state)
  return run.summary

