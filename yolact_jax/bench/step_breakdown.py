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

import os
import resource
from typing import Any, Callable

import jax
import jax.numpy as jnp
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
  """The compiled programs as zero-argument-like timers ``run(k)`` (each blocks until done) and
  their XLA cost analyses."""
  training = ts.build_training(cfg)
  model, priors = training.model, jnp.asarray(make_priors(cfg))
  variables = init_variables(cfg, seed=seed)
  state = training.init_state(variables)
  step_state = {'state': training.init_state(variables)}  # donated by the step: its own copy
  batch = jax.device_put(synthetic_train_batch(cfg, batch_size, seed=seed))
  rng = jax.random.PRNGKey(seed)

  def forward(params, batch_stats, image):
    preds, _ = model.apply({'params': params, 'batch_stats': batch_stats}, image, train=True,
                           mutable=['batch_stats'])
    return preds

  def loss_of(preds, params, batch):
    return yolact_loss(preds, priors, batch, cfg, rng, params)[0]

  def optimizer(grads, opt_state, params):
    updates, opt_state = training.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  args = (state.params, state.batch_stats)
  preds = jax.jit(forward)(*args, batch['image'])
  targets = jax.jit(lambda b: match(priors, b['boxes'], b['labels'], b['is_crowd'], b['valid'],
                                    cfg.loss))(batch)
  lc = cfg.loss
  jobs: dict[str, tuple[Callable, tuple]] = {
      'forward': (forward, (*args, batch['image'])),
      'optimizer': (optimizer, (state.params, state.opt_state, state.params)),
      'loss_grad': (jax.value_and_grad(loss_of), (preds, state.params, batch)),
      'match': (lambda b: match(priors, b['boxes'], b['labels'], b['is_crowd'], b['valid'], lc),
                (batch,)),
      'ohem': (lambda conf, conf_t: hard_negatives(
          conf, conf_t, lc.ohem_negpos_ratio, lc.ohem_keep_negatives_without_positives),
               (preds['conf'], targets.conf_t)),
      'mask_loss': (lambda p, c, m, t: mask_loss(p, c, m, t, cfg, rng, batch['labels'])[0],
                    (preds['proto'], preds['coefs'], batch['masks_proto'], targets)),
  }
  runs, costs = {}, {}
  for name, (fn, fn_args) in jobs.items():
    compiled = jax.jit(fn).lower(*fn_args).compile()
    costs[name] = cost_of(compiled)
    runs[name] = (lambda c, a: lambda k: jax.block_until_ready(c(*a)))(compiled, fn_args)
  step = training.step.lower(step_state['state'], batch).compile()
  costs['step'] = cost_of(step)

  def run_step(k):
    step_state['state'], metrics = step(step_state['state'], batch)
    jax.block_until_ready(metrics)
  runs['step'] = run_step
  return {name: runs[name] for name in PROGRAMS}, costs


def _counting_faults(run: Callable[[int], Any], totals: dict[str, float]
                     ) -> Callable[[int], Any]:
  """``run`` that adds each call's page faults and system CPU seconds to ``totals``."""
  def counted(k: int) -> Any:
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = run(k)
    after = resource.getrusage(resource.RUSAGE_SELF)
    totals['page_faults'] += after.ru_minflt - before.ru_minflt
    totals['system_s'] += after.ru_stime - before.ru_stime
    totals['calls'] += 1
    return out
  return counted


def breakdown(cfg: YolactConfig, batch_size: int, rounds: int, warmup: int = 1
              ) -> dict[str, Any]:
  """Every program of :data:`PROGRAMS` timed in ``rounds`` interleaved rounds (after ``warmup``
  calls each): per program the time summary, XLA's FLOP count and the page faults and system
  CPU time per call (how the process's memory is backed shows there), and :func:`split_step`."""
  runs, costs = _programs(cfg, batch_size)
  totals = {name: {'page_faults': 0, 'system_s': 0.0, 'calls': 0} for name in PROGRAMS}
  runs = {name: _counting_faults(run, totals[name]) for name, run in runs.items()}
  times = time_interleaved(runs, num_batches=1, warmup=warmup, repeats=rounds)
  programs = {name: {**summarize_times(times[name]),
                     'gflop': (costs[name].get('flops') or 0) / 1e9,
                     'page_faults_per_call': totals[name]['page_faults'] / totals[name]['calls'],
                     'system_s_per_call': totals[name]['system_s'] / totals[name]['calls']}
              for name in PROGRAMS}
  split = split_step({name: p['median_ms'] for name, p in programs.items()})
  return {'batch_size': batch_size, 'rounds': rounds, 'programs': programs, 'split_ms': split,
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES')}


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

