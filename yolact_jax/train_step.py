"""The training state, the original's optimiser and schedule, and the one jitted update.

``make_train_step(cfg, model)`` returns ``train_step(state, batch) -> (state, metrics)``: forward
in training mode, the multi-task loss, gradients, SGD update. Jit it with the state donated.

Faithful to the original's ``train.py``:
* SGD, momentum 0.9, weight decay 5e-4 added to the gradient of every trainable tensor (coupled,
  as ``torch.optim.SGD``): ``optax.add_decayed_weights`` then ``optax.sgd``. (``train.optimizer
  = 'adam'`` swaps in Adam for the CPU demo; no original preset uses it.)
* Learning rate per iteration: linear warmup from ``lr_warmup_init`` up to iteration
  ``lr_warmup_until``, then ``lr * gamma ** k`` with k the number of ``lr_steps`` reached. The
  iteration counter advances on every step, also a skipped one (as the original's loop does), so
  the rate is computed from ``state.step`` and injected into the optimiser.
* Batch-size autoscaling of lr, max_iter and lr_steps by batch_size / 8.
* BatchNorm trains with batch statistics when the batch is >= 6 images, otherwise it is frozen
  (running statistics, no gradient, no weight decay); ``train.freeze_bn`` overrides.
* A step whose loss is not finite changes nothing and is counted (``num_skipped``). Unlike the
  original, the BatchNorm running statistics of that forward pass are discarded as well (the
  original keeps them, which can carry a NaN into the model).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from yolact_jax.anchors import make_priors
from yolact_jax.config import YolactConfig
from yolact_jax.loss import yolact_loss


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Effective optimisation settings after the original's batch-size autoscaling."""
  lr: float
  max_iter: int
  lr_steps: tuple[int, ...]
  warmup_init: float
  warmup_until: int
  gamma: float


def effective_schedule(cfg: YolactConfig) -> Schedule:
  """lr x (bs/8), max_iter // (bs/8), each step // (bs/8) when autoscale and bs != 8."""
  t = cfg.train
  lr, max_iter, steps = t.lr, t.max_iter, t.lr_steps
  if t.autoscale and t.batch_size != 8:
    factor = t.batch_size / 8
    lr = lr * factor
    max_iter = int(max_iter // factor)
    steps = tuple(int(s // factor) for s in steps)
  return Schedule(lr, max_iter, steps, t.lr_warmup_init, t.lr_warmup_until, t.gamma)


def learning_rate(schedule: Schedule, iteration: jnp.ndarray) -> jnp.ndarray:
  """The rate the original sets before running ``iteration`` (0-based)."""
  it = jnp.asarray(iteration, jnp.float32)
  steps = jnp.asarray(schedule.lr_steps or (2**31 - 1,), jnp.float32)
  reached = jnp.sum(steps <= it)
  new_step_now = jnp.any(steps == it)
  stepped = schedule.lr * jnp.power(schedule.gamma, reached.astype(jnp.float32))
  warm = ((schedule.lr - schedule.warmup_init) * it / max(schedule.warmup_until, 1)
          + schedule.warmup_init)
  in_warmup = (it <= schedule.warmup_until) & (schedule.warmup_until > 0)
  # During warmup the warmup rate wins unless an lr step fires at this very iteration.
  return jnp.where(in_warmup & ~new_step_now, warm, stepped)


def uses_frozen_bn(cfg: YolactConfig, num_devices: int = 1) -> bool:
  """train.py: freeze every BatchNorm when the per-device batch is below 6 (unless forced)."""
  if cfg.train.freeze_bn is not None:
    return cfg.train.freeze_bn
  return cfg.train.batch_size // num_devices < 6


def trainable_mask(params: Any, freeze_bn: bool) -> Any:
  """True for every parameter that the optimiser updates (BN affine excluded when frozen)."""
  def mark(tree):
    is_bn = isinstance(tree, dict) and 'scale' in tree
    return {k: (mark(v) if isinstance(v, dict) else not (freeze_bn and is_bn))
            for k, v in tree.items()}
  return mark(flax.core.unfreeze(params))


def make_optimizer(cfg: YolactConfig, params: Any, freeze_bn: bool
                   ) -> optax.GradientTransformation:
  """Coupled weight decay + SGD with momentum; the learning rate is an injected hyperparameter."""
  mask = trainable_mask(params, freeze_bn)

  def chain(learning_rate):
    if cfg.train.optimizer == 'adam':  # not the original's: a faster start from scratch on CPU
      update = optax.adam(learning_rate)
    else:
      update = optax.sgd(learning_rate, momentum=cfg.train.momentum)
    return optax.chain(optax.add_decayed_weights(cfg.train.decay), update)

  inner = optax.inject_hyperparams(chain)(learning_rate=cfg.train.lr)
  frozen = jax.tree_util.tree_map(lambda m: 'train' if m else 'freeze', mask)
  return optax.multi_transform({'train': inner, 'freeze': optax.set_to_zero()}, frozen)


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (a pytree; checkpointed as a whole)."""
  step: jnp.ndarray  # iteration counter (int32), advances on skipped steps too
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array  # key for the mask-loss subsampling
  num_skipped: jnp.ndarray  # steps skipped because the loss was not finite


def init_train_state(cfg: YolactConfig, variables: dict, tx: optax.GradientTransformation,
                     seed: int | None = None) -> TrainState:
  seed = cfg.train.seed if seed is None else seed
  params = variables['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get('batch_stats', {}),
                    opt_state=tx.init(params), rng=jax.random.key_data(jax.random.key(seed + 1)),
                    num_skipped=jnp.zeros((), jnp.int32))


def _set_learning_rate(opt_state: Any, lr: jnp.ndarray) -> Any:
  """Writes ``lr`` into the injected hyperparameters inside the multi_transform state."""
  inner = opt_state.inner_states['train']
  hyper = dict(inner.inner_state.hyperparams)
  hyper['learning_rate'] = jnp.asarray(lr, hyper['learning_rate'].dtype)
  new_inner = inner._replace(inner_state=inner.inner_state._replace(hyperparams=hyper))
  return opt_state._replace(inner_states={**opt_state.inner_states, 'train': new_inner})


def make_train_step(cfg: YolactConfig, model: nn.Module, tx: optax.GradientTransformation
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The update function (not yet jitted): ``(state, batch) -> (state, metrics)``.

  ``batch`` holds ``image`` [B, S, S, 3] normalised NHWC plus the ground truth of
  ``yolact_jax.loss.yolact_loss``. Metrics: the loss terms, ``loss``, ``lr``, ``finite``.
  """
  priors = jnp.asarray(make_priors(cfg))
  schedule = effective_schedule(cfg)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.wrap_key_data(state.rng)
    rng, loss_rng = jax.random.split(rng)

    def loss_fn(params):
      preds, updates = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                   batch['image'], train=True, mutable=['batch_stats'])
      total, terms = yolact_loss(preds, priors, batch, cfg, loss_rng)
      return total, (terms, updates['batch_stats'])

    (total, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    lr = learning_rate(schedule, state.step)
    opt_state = _set_learning_rate(state.opt_state, lr)
    updates, new_opt_state = tx.update(grads, opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(total) & jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)]))
    keep = functools.partial(jax.tree_util.tree_map, lambda new, old: jnp.where(finite, new, old))
    new_state = state.replace(
        step=state.step + 1,
        params=keep(new_params, state.params),
        batch_stats=keep(batch_stats, state.batch_stats),
        opt_state=keep(new_opt_state, state.opt_state),
        rng=jax.random.key_data(rng),
        num_skipped=state.num_skipped + (~finite).astype(jnp.int32))
    metrics = {**terms, 'loss': total, 'lr': lr, 'finite': finite}
    return new_state, metrics

  return train_step


def jit_train_step(step_fn: Callable) -> Callable:
  """``jax.jit`` with the state donated (its buffers are reused for the new state)."""
  return jax.jit(step_fn, donate_argnums=(0,))
