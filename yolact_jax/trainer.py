"""The training loop: data, the jitted update, logging, checkpoints, resume, signals.

``train(cfg, workdir, train_source)`` runs (or resumes) a run in ``workdir``:

* ``checkpoints/``: an orbax CheckpointManager (``yolact_jax.checkpoint.runs``); each step
  directory holds the whole ``TrainState`` (params, batch stats, optimiser state, step, RNG,
  skipped-step count) and the data iterator state (grain). The last ``keep`` checkpoints are
  kept, plus the one with the best validation mask mAP.
* ``metrics.jsonl``: one JSON line per log interval (each loss term, lr, images/s, skipped steps)
  and per validation.
* Model, optimiser and the jitted step come from ``train_step.build_training(cfg)``.
* Resume is automatic: the newest checkpoint is restored, data position included, so a run
  interrupted at step N and resumed reaches the same parameters as an uninterrupted one.
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
from typing import Any, Callable

import grain.python as grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from yolact_jax import train_step as ts
from yolact_jax.checkpoint import runs
from yolact_jax.config import YolactConfig, config_to_dict
from yolact_jax.data import augment, loader
from yolact_jax.model.shapes import feature_sizes, proto_size

log = logging.getLogger(__name__)

BATCH_KEYS = ('image', 'boxes', 'labels', 'is_crowd', 'valid', 'masks_proto', 'masks_segm')


def pipeline_options(cfg: YolactConfig) -> loader.PipelineOptions:
  """Data-pipeline settings that follow the model config (sizes, transform, augmentation)."""
  hp, hs = proto_size(cfg), feature_sizes(cfg)[0]
  return loader.PipelineOptions(
      max_size=cfg.max_size, transform_kind=cfg.backbone.transform,
      flags=augment.AugmentFlags(**dataclasses.asdict(cfg.augment)),
      max_instances=cfg.train.max_instances, proto_hw=(hp, hp), segm_hw=(hs, hs))


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
  eval_fn: Callable[[dict, int], dict] | None = None  # (variables, step) -> metrics
  on_step: Callable[[int, dict], None] | None = None  # called after each step (tests, hooks)


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
  """Appends JSON lines; averages per-step device metrics at each log interval."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    self.pending: list[dict] = []

  def write(self, record: dict) -> None:
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def flush_steps(self, step: int, images_per_s: float, num_skipped: int) -> dict:
    rows = jax.device_get(self.pending)
    self.pending = []
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != 'finite'}
    summary.update(step=step, images_per_s=images_per_s, num_skipped=num_skipped,
                   non_finite_in_interval=int(sum(not bool(r['finite']) for r in rows)))
    self.write({'kind': 'train', **summary})
    return summary


def train(cfg: YolactConfig, workdir: str | os.PathLike, train_source: Any,
          options: TrainOptions | None = None) -> dict:
  """Trains (or resumes) in ``workdir`` and returns a summary dict.

  ``train_source``: a record source of ``yolact_jax.data.loader`` (in-memory COCO or TFDS).
  The summary has ``step``, ``stopped_by`` (None, 'SIGINT', 'SIGTERM'), ``num_skipped``,
  ``last_metrics`` and ``last_eval``.
  """
  options = options or TrainOptions()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  training = ts.build_training(cfg)
  num_steps = options.num_steps or training.schedule.max_iter

  data_loader = loader.make_train_loader(
      train_source, cfg.train.batch_size, cfg.train.seed, pipeline_options(cfg),
      worker_count=options.workers, shard_index=jax.process_index(),
      shard_count=jax.process_count())
  data_iter = iter(data_loader)
  manager = runs.checkpoint_manager(workdir / runs.CHECKPOINTS, options.keep)
  (workdir / 'config.json').write_text(json.dumps(config_to_dict(cfg), indent=1))

  latest = manager.latest_step()
  if latest is not None:
    restored = manager.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(training.abstract_state()),
        data=grain.PyGrainCheckpointRestore(data_iter)))
    state = restored['state']
    log.info('resumed from step %d in %s', int(state.step), workdir)
  else:
    state = training.init_state(options.init() if options.init is not None else None)
  start = int(state.step)

  metrics_log = _MetricLog(workdir / 'metrics.jsonl')
  summary: dict[str, Any] = {'step': start, 'stopped_by': None, 'last_metrics': None,
                             'last_eval': None}

  def save(step: int, eval_metrics: dict | None = None) -> None:
    metrics = {'mask_map': float(eval_metrics['mask_map'])} if eval_metrics else None
    if manager.latest_step() == step and metrics is None:
      return
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.PyGrainCheckpointSave(data_iter)),
        metrics=metrics, force=True)
    manager.wait_until_finished()

  def validate(step: int) -> dict | None:
    if options.eval_fn is None:
      return None
    result = options.eval_fn(jax.device_get(state_variables(state)), step)
    metrics_log.write({'kind': 'eval', 'step': step, **_scalars(result)})
    summary['last_eval'] = result
    return result

  bar = tqdm(total=num_steps, initial=start, disable=not options.progress, unit='step',
             dynamic_ncols=True, desc=cfg.name)
  interval_start, interval_steps = time.perf_counter(), 0
  step = start
  with _StopSignal() as stop, contextlib.closing(bar):
    while step < num_steps and stop.received is None:
      batch = next(data_iter)
      state, metrics = training.step(state, {k: batch[k] for k in BATCH_KEYS})
      step += 1
      interval_steps += 1
      metrics_log.pending.append(metrics)
      bar.update(1)
      if options.on_step is not None:
        options.on_step(step, metrics)
      if step % options.log_every == 0 or step == num_steps:
        jax.block_until_ready(metrics)  # time the device work, not the dispatch
        elapsed = time.perf_counter() - interval_start
        rate = interval_steps * cfg.train.batch_size / max(elapsed, 1e-9)
        last = metrics_log.flush_steps(step, rate, int(state.num_skipped))
        summary['last_metrics'] = last
        bar.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{last['lr']:.1e}",
                        img_s=f'{rate:.1f}', skipped=int(state.num_skipped))
        interval_start, interval_steps = time.perf_counter(), 0
      if options.eval_every and step % options.eval_every == 0 and step < num_steps:
        save(step, validate(step))
      elif step % options.save_every == 0:
        save(step)
    if metrics_log.pending:
      summary['last_metrics'] = metrics_log.flush_steps(step, 0.0, int(state.num_skipped))
    if stop.received is not None:
      summary['stopped_by'] = signal.Signals(stop.received).name
      save(step)
    else:
      final_eval = validate(step) if step > start or summary['last_eval'] is None else None
      save(step, final_eval)
  manager.close()
  summary.update(step=step, num_skipped=int(state.num_skipped))
  summary['state'] = state
  return summary


def _scalars(tree: dict) -> dict:
  """The JSON-friendly scalar leaves of a (nested) metrics dict."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update({f'{key}/{k}': v for k, v in _scalars(value).items()})
    elif isinstance(value, (int, float, np.floating, np.integer)):
      out[key] = float(value)
  return out
