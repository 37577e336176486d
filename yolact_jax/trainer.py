"""The training loop: data, the jitted update, logging, checkpoints, resume, signals.

``train(cfg, workdir, train_source)`` runs (or resumes) a run in ``workdir``:

* ``checkpoints/``: an orbax CheckpointManager; each step directory holds the whole
  ``TrainState`` (params, batch stats, optimiser state, step, RNG, skipped-step count), the data
  iterator state (grain) and a small JSON. The last ``keep`` checkpoints are kept, plus the one
  with the best validation mask mAP.
* ``metrics.jsonl``: one JSON line per log interval (each loss term, lr, images/s, skipped steps)
  and per validation.
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
from orbax.checkpoint import checkpoint_managers
from tqdm import tqdm

from yolact_jax import train_step as ts
from yolact_jax.config import YolactConfig, config_to_dict
from yolact_jax.data import augment, loader
from yolact_jax.model.shapes import feature_sizes, proto_size
from yolact_jax.model.yolact import Yolact

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


def checkpoint_manager(directory: pathlib.Path, keep: int) -> ocp.CheckpointManager:
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(keep),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m['mask_map'], n=1,
                                keep_checkpoints_without_metrics=False)])
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory.absolute(), options=options)


def _new_state(cfg: YolactConfig, model: Yolact, tx, init: Callable[[], dict] | None):
  if init is not None:
    variables = init()
  else:
    x = np.zeros((1, cfg.max_size, cfg.max_size, 3), np.float32)
    variables = jax.jit(model.init)(jax.random.key(cfg.train.seed), x)
  return ts.init_train_state(cfg, variables, tx)


def _abstract_state(cfg: YolactConfig, model: Yolact, tx) -> Any:
  return jax.eval_shape(lambda: _new_state(cfg, model, tx, None))


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
  schedule = ts.effective_schedule(cfg)
  num_steps = options.num_steps or schedule.max_iter
  freeze_bn = ts.uses_frozen_bn(cfg, jax.device_count())
  model = Yolact(cfg, freeze_bn=freeze_bn)
  tx = ts.make_optimizer(cfg, _abstract_params(cfg), freeze_bn)
  abstract = _abstract_state(cfg, model, tx)
  step_fn = ts.jit_train_step(ts.make_train_step(cfg, model, tx))

  data_loader = loader.make_train_loader(
      train_source, cfg.train.batch_size, cfg.train.seed, pipeline_options(cfg),
      worker_count=options.workers, shard_index=jax.process_index(),
      shard_count=jax.process_count())
  data_iter = iter(data_loader)
  manager = checkpoint_manager(workdir / 'checkpoints', options.keep)
  (workdir / 'config.json').write_text(json.dumps(config_to_dict(cfg), indent=1))

  latest = manager.latest_step()
  if latest is not None:
    restored = manager.restore(latest, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=grain.PyGrainCheckpointRestore(data_iter)))
    state = restored['state']
    log.info('resumed from step %d in %s', int(state.step), workdir)
  else:
    state = _new_state(cfg, model, tx, options.init)
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
      state, metrics = step_fn(state, {k: batch[k] for k in BATCH_KEYS})
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


def _abstract_params(cfg: YolactConfig) -> Any:
  model = Yolact(cfg)
  x = jax.ShapeDtypeStruct((1, cfg.max_size, cfg.max_size, 3), np.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)['params']


def _scalars(tree: dict) -> dict:
  """The JSON-friendly scalar leaves of a (nested) metrics dict."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update({f'{key}/{k}': v for k, v in _scalars(value).items()})
    elif isinstance(value, (int, float, np.floating, np.integer)):
      out[key] = float(value)
  return out


def load_variables_from_run(workdir: str | os.PathLike, cfg: YolactConfig,
                            step: int | None = None) -> dict:
  """Params and batch stats of a run's newest (or given) checkpoint.

  The state is restored from its own stored metadata, so this works whatever optimiser the run
  used; only the variables are checked against ``cfg``'s model.
  """
  from yolact_jax.checkpoint import convert
  directory = pathlib.Path(workdir) / 'checkpoints'
  manager = ocp.CheckpointManager(directory.absolute(),
                                  options=ocp.CheckpointManagerOptions(read_only=True))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {directory}')
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  manager.close()
  state = restored['state']
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  expected = convert.abstract_variables(cfg)
  got = jax.tree_util.tree_map(lambda x: tuple(x.shape), variables)
  want = jax.tree_util.tree_map(lambda x: tuple(x.shape),
                                {'params': expected['params'],
                                 'batch_stats': expected['batch_stats']})
  if got != want:
    raise convert.CheckpointError(
        f'the checkpoint in {directory} (step {step}) does not fit preset {cfg.name!r}: '
        f'different variable shapes (was it trained with other --config overrides?)')
  return jax.tree_util.tree_map(np.asarray, variables)
