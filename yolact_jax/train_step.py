"""The training state, the original's optimiser and schedule, and the one jitted update.

``build_training(cfg)`` assembles model, optimiser, schedule and the jitted step
``step(state, batch) -> (state, metrics)``: forward in training mode, the multi-task loss (passed
in; default the original's), gradients, SGD update. The trainer, the benchmarks and the
comparison with the original all train through it.

Faithful to the original's ``train.py``: SGD with momentum and coupled weight decay
(:func:`make_optimizer`), the per-iteration warmup and step schedule (:func:`learning_rate`),
batch-size autoscaling (:func:`effective_schedule`) and the BatchNorm freeze rule
(:func:`uses_frozen_bn`). A step whose loss is not finite changes nothing and is counted
(``num_skipped``); unlike the original, the BatchNorm running statistics of that forward pass are
discarded as well (the original keeps them, which can carry a NaN into the model).
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
from jax.sharding import Mesh

from yolact_jax import parallel
from yolact_jax.anchors import make_priors
from yolact_jax.config import YolactConfig
from yolact_jax.loss import yolact_loss
from yolact_jax.model.variables import abstract_variables, init_variables
from yolact_jax.model.yolact import Yolact


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


def stretch_schedule(cfg: YolactConfig, iterations: int) -> YolactConfig:
  """``cfg`` trained for ``iterations``: max_iter set to it and the lr steps scaled in
  proportion (warmup unchanged)."""
  t = cfg.train
  steps = tuple(int(s * iterations / t.max_iter) for s in t.lr_steps)
  return dataclasses.replace(cfg, train=dataclasses.replace(t, max_iter=iterations,
                                                            lr_steps=steps))


def learning_rate(schedule: Schedule, iteration: jnp.ndarray) -> jnp.ndarray:
  """The rate the original sets before running ``iteration`` (0-based).

  Linear warmup from ``lr_warmup_init`` up to iteration ``lr_warmup_until``, then
  ``lr * gamma ** k`` with k the number of ``lr_steps`` reached. The iteration counter advances
  on every step, also a skipped one (as the original's loop does), so the rate is computed from
  ``state.step`` and set as the optimiser's injected hyperparameter.
  """
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


def uses_frozen_bn(cfg: YolactConfig, num_replicas: int = 1) -> bool:
  """train.py: freeze every BatchNorm when the batch per replica (the devices the batch is split
  over) is below 6 images, unless ``train.freeze_bn`` forces it either way. Frozen: running
  statistics, no gradient, no weight decay; otherwise BatchNorm trains with batch statistics."""
  if cfg.train.freeze_bn is not None:
    return cfg.train.freeze_bn
  return cfg.train.batch_size // num_replicas < 6


def trainable_mask(params: Any, freeze_bn: bool) -> Any:
  """True for every parameter that the optimiser updates (BN affine excluded when frozen)."""
  def mark(tree):
    is_bn = isinstance(tree, dict) and 'scale' in tree
    return {k: (mark(v) if isinstance(v, dict) else not (freeze_bn and is_bn))
            for k, v in tree.items()}
  return mark(flax.core.unfreeze(params))


def make_optimizer(cfg: YolactConfig, params: Any, freeze_bn: bool
                   ) -> optax.GradientTransformation:
  """Coupled weight decay + SGD with momentum; the learning rate is an injected hyperparameter.

  As the original's ``torch.optim.SGD`` (momentum 0.9, weight decay 5e-4): the decay is added to
  the gradient of every trainable tensor (``optax.add_decayed_weights`` then ``optax.sgd``).
  ``train.optimizer = 'adam'`` swaps in Adam for the CPU demo; no original preset uses it.
  """
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


def set_learning_rate(opt_state: Any, lr: jnp.ndarray) -> Any:
  """``opt_state`` with the injected ``learning_rate`` hyperparameter set to ``lr``
  (``optax.tree_utils.tree_set``: no knowledge of the state's layout needed)."""
  return optax.tree_utils.tree_set(opt_state, learning_rate=jnp.asarray(lr, jnp.float32))


# ``loss_fn(preds, priors, batch, cfg, rng, params) -> (total, {term name: value})``; ``params``
# are the parameters being differentiated (a term may run a part of the network with them, as
# YOLACT++'s mask-IoU term runs ``params['maskiou_net']``).
LossFn = Callable[[dict, jnp.ndarray, dict, YolactConfig, jax.Array, Any],
                  tuple[jnp.ndarray, dict]]


def make_train_step(cfg: YolactConfig, model: nn.Module, tx: optax.GradientTransformation,
                    loss_fn: LossFn = yolact_loss
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """The update function (not yet jitted): ``(state, batch) -> (state, metrics)``.

  ``batch`` holds ``image`` [B, S, S, 3] normalised NHWC plus the ground truth that ``loss_fn``
  reads (for ``yolact_jax.loss.yolact_loss``: boxes, labels, crowd flags, validity and masks).
  Metrics: every loss term, ``loss``, ``lr``, ``finite``.
  """
  priors = jnp.asarray(make_priors(cfg))
  schedule = effective_schedule(cfg)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.wrap_key_data(state.rng)
    rng, loss_rng = jax.random.split(rng)

    def objective(params):
      preds, updates = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                   batch['image'], train=True, mutable=['batch_stats'])
      total, terms = loss_fn(preds, priors, batch, cfg, loss_rng, params)
      return total, (terms, updates['batch_stats'])

    (total, (terms, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
    lr = learning_rate(schedule, state.step)
    opt_state = set_learning_rate(state.opt_state, lr)
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


@dataclasses.dataclass(frozen=True)
class Training:
  """Everything a training run computes with, built once from a config by ``build_training``.

  ``update`` is the pure step ``(state, batch) -> (state, metrics)``; ``step`` is it under
  ``jax.jit`` with the state donated (its buffers are reused for the new state) and, with a
  ``mesh``, the state replicated and the batch sharded along the mesh's ``'data'`` axis.
  """
  cfg: YolactConfig
  model: Yolact
  tx: optax.GradientTransformation
  freeze_bn: bool
  schedule: Schedule
  mesh: Mesh | None
  update: Callable[[TrainState, dict], tuple[TrainState, dict]]
  step: Callable[[TrainState, dict], tuple[TrainState, dict]]

  def init_state(self, variables: dict | None = None, seed: int | None = None) -> TrainState:
    """A step-0 state from ``variables`` (default: a fresh random init of the model), placed
    on the mesh.

    The state owns copies of ``variables``: ``step`` donates the state's buffers, and the
    caller's arrays must survive that.
    """
    if variables is None:
      variables = init_variables(self.cfg)
    else:
      variables = jax.tree_util.tree_map(jnp.array, variables)
    return parallel.replicate(init_train_state(self.cfg, variables, self.tx, seed), self.mesh)

  def abstract_state(self) -> TrainState:
    """The state's tree of ``jax.ShapeDtypeStruct`` with this run's sharding (replicated over
    the mesh, or the default device), for restoring a checkpoint into: whatever topology wrote
    it, it is read onto these devices."""
    shapes = jax.eval_shape(lambda: init_train_state(self.cfg, init_variables(self.cfg), self.tx))
    sharding = (parallel.replicated(self.mesh) if self.mesh is not None
                else jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


# XLA:CPU options of the train step with ``train.cpu_eltwise_fusion`` (docs/performance.md):
# YNNPACK also takes the element-wise fusions (XLA_FLAGS'
# `--xla_cpu_experimental_ynn_fusion_type=+eltwise`; as a per-program option the list is spelled
# out: jaxlib 0.10's defaults, the dots, convolutions and reductions, plus ELTWISE; the compiled
# program is the same). Values change only by float32 reordering; only the train step gets it.
CPU_STEP_COMPILER_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ','.join(
    f'LIBRARY_FUSION_TYPE_{kind}' for kind in ('INDIVIDUAL_DOT', 'INDIVIDUAL_CONVOLUTION',
                                               'REDUCE', 'ELTWISE'))}


def step_compiler_options(cfg: YolactConfig, mesh: Mesh | None) -> dict[str, str] | None:
  """The train step's compiler options: with ``train.cpu_eltwise_fusion``
  :data:`CPU_STEP_COMPILER_OPTIONS` where the step runs on CPU and this XLA knows the option,
  else None (XLA's defaults)."""
  devices = mesh.devices.flat if mesh is not None else jax.devices()[:1]
  if (not cfg.train.cpu_eltwise_fusion or next(iter(devices)).platform != 'cpu'
      or not _cpu_options_known()):
    return None
  return dict(CPU_STEP_COMPILER_OPTIONS)


@functools.lru_cache(maxsize=1)
def _cpu_options_known() -> bool:
  """Whether this jaxlib's XLA accepts :data:`CPU_STEP_COMPILER_OPTIONS` (an unknown option
  fails the compile; the option is experimental and may go in a later XLA)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_STEP_COMPILER_OPTIONS).lower(
        jax.ShapeDtypeStruct((), jnp.float32)).compile()
    return True
  except Exception:  # pylint: disable=broad-except  (XLA's error type differs across versions)
    return False


def build_training(cfg: YolactConfig, *, loss_fn: LossFn = yolact_loss, mesh: Mesh | None = None,
                   dtype: Any = None) -> Training:
  """The one training assembly: model, optimiser, schedule and the jitted step for ``cfg``.

  ``loss_fn`` is the multi-task loss (default the original's). ``mesh``: the devices the batch
  is split over (``yolact_jax.parallel.data_mesh``; None: one device); the BatchNorm freeze rule
  looks at the batch per replica, as the original's ``batch_size // num_gpus < 6``, and training
  BatchNorm statistics are per replica unless ``train.sync_batchnorm``. ``dtype``: the network's
  computation dtype (default ``train.compute_dtype``; parameters, optimiser state, BatchNorm
  statistics and the loss stay float32).
  """
  replicas = parallel.num_replicas(mesh)
  freeze_bn = uses_frozen_bn(cfg, replicas)
  dtype = jnp.dtype(cfg.train.compute_dtype if dtype is None else dtype)
  bn_groups = 1 if cfg.train.sync_batchnorm else replicas
  model = Yolact(cfg.model, num_classes=cfg.num_classes, freeze_bn=freeze_bn, dtype=dtype,
                 bn_groups=bn_groups)
  tx = make_optimizer(cfg, abstract_variables(cfg)['params'], freeze_bn)
  update = make_train_step(cfg, model, tx, loss_fn)
  options = step_compiler_options(cfg, mesh)
  if mesh is None:
    step = jax.jit(update, donate_argnums=(0,), compiler_options=options)
  else:
    state_sharding = parallel.replicated(mesh)
    step = jax.jit(update, in_shardings=(state_sharding, parallel.batch_sharding(mesh)),
                   out_shardings=(state_sharding, state_sharding), donate_argnums=(0,),
                   compiler_options=options)
  return Training(cfg=cfg, model=model, tx=tx, freeze_bn=freeze_bn,
                  schedule=effective_schedule(cfg), mesh=mesh, update=update, step=step)
