"""Where one train step's time goes: the step and its parts, each jitted on its own and timed
interleaved in one process (XLA fuses across the parts inside the step, so the parts are
measured as programs of their own and the network's backward is what the step leaves).

Programs, all on the same synthetic batch and weights:
  ``step``            the whole update (``build_training``'s jitted step, state donated);
  ``forward``         the network in training mode (BatchNorm statistics updated);
  ``loss_grad``       the loss and its gradient with respect to fixed network outputs;
  ``optimizer``       the optimiser's update and its application, on given gradients;
  ``match``, ``ohem``, ``mask_loss``: the loss's matching (priors to ground truth), hard negative
                      mining and mask term, each alone (forward).

:func:`split_step` turns their medians into the step's shares; ``scripts/train_step_breakdown.py``
is the command line.
"""

from __future__ import annotations

import resource
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from yolact_jax import train_step as ts
from yolact_jax.anchors import make_priors
from yolact_jax.bench.inputs import synthetic_train_batch
from yolact_jax.bench.timing import cost_of, summarize_times, time_interleaved
from yolact_jax.config import YolactConfig
from yolact_jax.loss import hard_negatives, mask_loss, yolact_loss
from yolact_jax.matching import match
from yolact_jax.model.variables import init_variables

PROGRAMS = ('step', 'forward', 'loss_grad', 'optimizer', 'match', 'ohem', 'mask_loss')


def split_step(median_ms: dict[str, float]) -> dict[str, float]:
  """The step's parts in ms from the programs' medians: ``network_forward`` (the forward),
  ``loss`` (its value and gradient, loss_grad), ``optimizer`` and ``network_backward``, the rest
  of the step (the parameter gradients through the network)."""
  m = median_ms
  return {'network_forward': m['forward'],
          'loss': m['loss_grad'],
          'network_backward': m['step'] - m['forward'] - m['loss_grad'] - m['optimizer'],
          'optimizer': m['optimizer'],
          'step': m['step']}


def _programs(cfg: YolactConfig, batch_size: int, seed: int = 0
              ) -> tuple[dict[str, Callable[[int], Any]], dict[str, Any]]:
  """The compiled programs as timers ``run(k)`` (each blocks until done; ``k`` unused) and their
  XLA cost analyses. The loss's parts run on the forward's and the matching's outputs."""
  training = ts.build_training(cfg)
  model, priors = training.model, jnp.asarray(make_priors(cfg))
  variables = init_variables(cfg, seed=seed)
  state = training.init_state(variables)
  step_state = {'state': training.init_state(variables)}  # donated by the step: its own copy
  batch = jax.device_put(synthetic_train_batch(cfg, batch_size, seed=seed))
  rng, lc = jax.random.PRNGKey(seed), cfg.loss

  def forward(params, batch_stats, image):
    preds, _ = model.apply({'params': params, 'batch_stats': batch_stats}, image, train=True,
                           mutable=['batch_stats'])
    return preds

  def loss_of(preds, params, batch):
    return yolact_loss(preds, priors, batch, cfg, rng, params)[0]

  def optimizer(grads, opt_state, params):
    updates, opt_state = training.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  def match_batch(b):
    return match(priors, b['boxes'], b['labels'], b['is_crowd'], b['valid'], lc)

  def ohem(conf, conf_t):
    return hard_negatives(conf, conf_t, lc.ohem_negpos_ratio,
                          lc.ohem_keep_negatives_without_positives)

  def mask_term(proto, coefs, masks_proto, targets):
    return mask_loss(proto, coefs, masks_proto, targets, cfg, rng, batch['labels'])[0]

  runs, costs = {}, {}

  def add(name: str, fn: Callable, *fn_args: Any) -> Any:
    """Compiles ``fn`` for ``fn_args`` as the timer ``runs[name]``; returns its output."""
    compiled = jax.jit(fn).lower(*fn_args).compile()
    costs[name] = cost_of(compiled)
    runs[name] = lambda k: jax.block_until_ready(compiled(*fn_args))
    return compiled(*fn_args)

  preds = add('forward', forward, state.params, state.batch_stats, batch['image'])
  targets = add('match', match_batch, batch)
  add('loss_grad', jax.value_and_grad(loss_of), preds, state.params, batch)
  add('optimizer', optimizer, state.params, state.opt_state, state.params)
  add('ohem', ohem, preds['conf'], targets.conf_t)
  add('mask_loss', mask_term, preds['proto'], preds['coefs'], batch['masks_proto'], targets)
  step = training.step.lower(step_state['state'], batch).compile()
  costs['step'] = cost_of(step)

  def run_step(k):
    step_state['state'], metrics = step(step_state['state'], batch)
    jax.block_until_ready(metrics)
  runs['step'] = run_step
  return {name: runs[name] for name in PROGRAMS}, costs


def _counting_faults(run: Callable[[int], Any], calls: list[tuple[int, float]]
                     ) -> Callable[[int], Any]:
  """``run`` that appends each call's (page faults, system CPU seconds) to ``calls``."""
  def counted(k: int) -> Any:
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = run(k)
    after = resource.getrusage(resource.RUSAGE_SELF)
    calls.append((after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime))
    return out
  return counted


def breakdown(cfg: YolactConfig, batch_size: int, rounds: int, warmup: int = 1
              ) -> dict[str, Any]:
  """Every program of :data:`PROGRAMS` timed in ``rounds`` interleaved rounds (after ``warmup``
  calls each): per program the time summary, XLA's FLOP count and, per timed call, the page
  faults and system CPU seconds (how the process's memory is backed shows there), and
  :func:`split_step`."""
  runs, costs = _programs(cfg, batch_size)
  calls: dict[str, list[tuple[int, float]]] = {name: [] for name in PROGRAMS}
  runs = {name: _counting_faults(run, calls[name]) for name, run in runs.items()}
  times = time_interleaved(runs, num_batches=1, warmup=warmup, repeats=rounds)
  programs = {}
  for name in PROGRAMS:
    faults, system_s = zip(*calls[name][warmup:])  # the timed calls
    programs[name] = {**summarize_times(times[name]),
                      'gflop': (costs[name].get('flops') or 0) / 1e9,
                      'page_faults': list(faults), 'system_s': list(system_s),
                      'page_faults_per_call': float(np.mean(faults)),
                      'system_s_per_call': float(np.mean(system_s))}
  split = split_step({name: p['median_ms'] for name, p in programs.items()})
  return {'batch_size': batch_size, 'rounds': rounds, 'programs': programs, 'split_ms': split}


def markdown(result: dict[str, Any]) -> str:
  """The split and the programs as two markdown tables."""
  split, programs = result['split_ms'], result['programs']
  step = split['step']
  lines = ['| part of the step | ms | share |', '|---|---|---|']
  for name, ms in split.items():
    if name != 'step':
      lines.append(f'| {name.replace("_", " ")} | {ms:.0f} | {100 * ms / step:.0f}% |')
  lines.append(f'| **step** | **{step:.0f}** | 100% |')
  lines += ['', '| program | median ms (p10-p90) | GFLOP (XLA cost analysis) | page faults per '
            'call |', '|---|---|---|---|']
  for name, p in programs.items():
    lines.append(f"| `{name}` | {p['median_ms']:.0f} ({p['p10_ms']:.0f}-{p['p90_ms']:.0f}) | "
                 f"{p['gflop']:.1f} | {p['page_faults_per_call']:.0f} |")
  return '\n'.join(lines) + '\n'

