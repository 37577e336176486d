"""The optimiser, the schedule and the jitted train step on the tiny preset."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolact_jax import train_step as ts
from yolact_jax.config import get_config
from yolact_jax.model.shapes import feature_sizes, proto_size
from yolact_jax.loss import downsample_gt_masks
from yolact_jax.model.variables import init_variables


@pytest.mark.parametrize('iteration,expected', [
    (0, 1e-4), (250, 5.5e-4), (500, 1e-3), (501, 1e-3), (279999, 1e-3), (280000, 1e-4),
    (600000, 1e-5), (700000, 1e-6), (750000, 1e-7), (799999, 1e-7)])
def test_learning_rate_table_batch_8(iteration, expected):
  schedule = ts.effective_schedule(get_config('yolact_base'))
  assert float(ts.learning_rate(schedule, iteration)) == pytest.approx(expected, rel=1e-5)


def test_autoscale_follows_train_py():
  cfg = get_config('yolact_base', ['train.batch_size=4'])
  s = ts.effective_schedule(cfg)
  assert s.lr == pytest.approx(5e-4)
  assert s.max_iter == 1600000 and s.lr_steps == (560000, 1200000, 1400000, 1500000)
  assert s.warmup_init == 1e-4 and s.warmup_until == 500  # not scaled
  off = ts.effective_schedule(get_config('yolact_base', ['train.batch_size=4',
                                                         'train.autoscale=False']))
  assert off.lr == 1e-3 and off.max_iter == 800000


def test_freeze_bn_rule():
  assert ts.uses_frozen_bn(get_config('yolact_base', ['train.batch_size=5']))
  assert not ts.uses_frozen_bn(get_config('yolact_base', ['train.batch_size=6']))
  assert not ts.uses_frozen_bn(get_config('yolact_base', ['train.batch_size=2',
                                                          'train.freeze_bn=False']))


def test_optimizer_equals_torch_sgd_with_coupled_weight_decay():
  """Several steps against torch.optim.SGD(momentum=0.9, weight_decay=5e-4) with a varying lr."""
  torch = pytest.importorskip('torch')
  cfg = get_config('yolact_base')
  rng = np.random.default_rng(0)
  params = {'conv': {'kernel': rng.normal(size=(3, 4)).astype(np.float32),
                     'bias': rng.normal(size=(4,)).astype(np.float32)},
            'bn': {'scale': np.ones(4, np.float32), 'bias': np.zeros(4, np.float32)}}
  tx = ts.make_optimizer(cfg, params, freeze_bn=False)
  state = tx.init(params)
  tparams = [torch.tensor(v, requires_grad=True) for v in jax.tree_util.tree_leaves(params)]
  opt = torch.optim.SGD(tparams, lr=1.0, momentum=0.9, weight_decay=5e-4)
  jparams = params
  for step in range(4):
    lr = 1e-3 * (step + 1)
    grads = jax.tree_util.tree_map(lambda v: rng.normal(size=v.shape).astype(np.float32), params)
    state = ts.set_learning_rate(state, lr)
    updates, state = tx.update(grads, state, jparams)
    jparams = jax.tree_util.tree_map(lambda p, u: p + u, jparams, updates)
    for group in opt.param_groups:
      group['lr'] = lr
    for p, g in zip(tparams, jax.tree_util.tree_leaves(grads)):
      p.grad = torch.tensor(g)
    opt.step()
  for ours, theirs in zip(jax.tree_util.tree_leaves(jparams), tparams):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-6, atol=1e-7)


def synthetic_batch(cfg, batch=2, slots=None):
  """Two images with a bright square / disc each; masks at proto and semantic resolution."""
  slots = slots or cfg.train.max_instances
  size = cfg.max_size
  yy, xx = np.mgrid[:size, :size]
  images = np.zeros((batch, size, size, 3), np.float32)
  masks = np.zeros((batch, slots, size, size), np.uint8)
  boxes = np.zeros((batch, slots, 4), np.float32)
  labels = np.zeros((batch, slots), np.int32)
  valid = np.zeros((batch, slots), bool)
  for b in range(batch):
    square = (xx >= 8 + 10 * b) & (xx < 40 + 10 * b) & (yy >= 12) & (yy < 44)
    disc = (xx - 44) ** 2 + (yy - 46 + 8 * b) ** 2 < 12 ** 2
    for slot, (mask, label) in enumerate([(square, 0), (disc, 1)]):
      ys, xs = np.nonzero(mask)
      masks[b, slot] = mask
      boxes[b, slot] = [xs.min() / size, ys.min() / size, (xs.max() + 1) / size,
                        (ys.max() + 1) / size]
      labels[b, slot] = label
      valid[b, slot] = True
      images[b][mask] = [1.5, -0.5, 0.5] if label == 0 else [-1.0, 1.0, 1.5]
  hp, hs = proto_size(cfg), feature_sizes(cfg)[0]
  return {'image': images, 'boxes': boxes, 'labels': labels, 'valid': valid,
          'is_crowd': np.zeros_like(valid),
          'masks_proto': np.asarray(downsample_gt_masks(jnp.asarray(masks), (hp, hp))),
          'masks_segm': np.asarray(downsample_gt_masks(jnp.asarray(masks), (hs, hs)))}


def _setup(overrides=()):
  cfg = get_config('yolact_tiny', list(overrides))
  training = ts.build_training(cfg)
  state = training.init_state(init_variables(cfg, seed=0))
  return cfg, state, training.step


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_tiny_model_overfits_one_batch(dtype):
  # Batch statistics on (the rule would freeze BN at batch 2; frozen, untrained BN is an
  # identity and a from-scratch model this small then trains much more slowly). bfloat16:
  # mixed precision (convolutions in bfloat16; parameters, optimiser and loss in float32).
  cfg, state, step = _setup(['train.lr=0.003', 'train.lr_warmup_until=20', 'train.max_iter=400',
                             'train.lr_steps=(1000,)', 'train.freeze_bn=False',
                             f'train.compute_dtype={dtype}'])
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(state.params))
  batch = synthetic_batch(cfg)
  losses = []
  for _ in range(200):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses)) and int(state.num_skipped) == 0
  assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])


def test_non_finite_loss_changes_nothing():
  cfg, state, step = _setup()
  batch = synthetic_batch(cfg)
  state, _ = step(state, batch)  # one real step so the momentum is non-zero
  before = jax.device_get(state)
  bad = dict(batch, image=np.full_like(batch['image'], np.nan))
  after, metrics = step(state, bad)
  after = jax.device_get(after)
  assert not bool(metrics['finite'])
  assert int(after.num_skipped) == 1 and int(after.step) == int(before.step) + 1
  for name in ('params', 'batch_stats', 'opt_state'):
    for a, b in zip(jax.tree_util.tree_leaves(getattr(before, name)),
                    jax.tree_util.tree_leaves(getattr(after, name))):
      np.testing.assert_array_equal(a, b)


def test_frozen_batchnorm_is_not_trained():
  cfg, state, step = _setup(['train.freeze_bn=True'])
  before = jax.device_get(state)
  after, _ = step(state, synthetic_batch(cfg))
  after = jax.device_get(after)
  bn_before = before.params['backbone']['bn1']
  bn_after = after.params['backbone']['bn1']
  np.testing.assert_array_equal(bn_before['scale'], bn_after['scale'])  # no grad, no decay
  np.testing.assert_array_equal(bn_before['bias'], bn_after['bias'])
  for a, b in zip(jax.tree_util.tree_leaves(before.batch_stats),
                  jax.tree_util.tree_leaves(after.batch_stats)):
    np.testing.assert_array_equal(a, b)
  conv_before = before.params['fpn']['lat_layers_0']['kernel']
  assert not np.array_equal(conv_before, after.params['fpn']['lat_layers_0']['kernel'])


@pytest.mark.parametrize('batch,replicas,frozen', [(8, 1, False), (8, 2, True), (12, 2, False),
                                                   (6, 1, False), (5, 1, True)])
def test_build_training_freezes_bn_on_the_batch_per_replica(batch, replicas, frozen):
  """The original's rule is batch_size // num_gpus < 6: the devices the batch is split over,
  not how many devices the host has."""
  cfg = get_config('yolact_tiny', [f'train.batch_size={batch}'])
  assert ts.uses_frozen_bn(cfg, replicas) is frozen
  if replicas == 1:
    training = ts.build_training(cfg)
    assert training.freeze_bn is frozen and training.model.freeze_bn is frozen


def test_custom_loss_plugs_into_the_step():
  """The loss is passed in: an extra term appears in the metrics and drives the update."""
  from yolact_jax.loss import yolact_loss
  cfg = get_config('yolact_tiny')

  def with_extra_term(preds, priors, batch, cfg, rng, params):
    total, terms = yolact_loss(preds, priors, batch, cfg, rng, params)
    extra = 0.5 * jnp.mean(preds['proto'] ** 2)
    return total + extra, {**terms, 'X': extra}

  plain = ts.build_training(cfg)
  custom = ts.build_training(cfg, loss_fn=with_extra_term)
  batch = synthetic_batch(cfg)
  variables = init_variables(cfg, seed=0)
  _, m_plain = plain.step(plain.init_state(variables), batch)
  _, m_custom = custom.step(custom.init_state(variables), batch)
  assert 'X' in m_custom and 'X' not in m_plain
  assert float(m_custom['loss']) == pytest.approx(float(m_plain['loss']) + float(m_custom['X']),
                                                  rel=1e-5)


def test_train_step_compiler_options_on_cpu():
  """train.cpu_eltwise_fusion asks for YNNPACK's element-wise fusion on CPU, where this XLA knows
  it (jaxlib 0.10 does); a compile with an option XLA does not know fails, which the probe
  reports as unknown."""
  cfg = get_config('yolact_tiny')
  assert ts.step_compiler_options(cfg, None) is None
  fused = get_config('yolact_tiny', ['train.cpu_eltwise_fusion=True'])
  assert ts._cpu_options_known()
  assert ts.step_compiler_options(fused, None) == ts.CPU_STEP_COMPILER_OPTIONS
  with pytest.raises(Exception):
    jax.jit(lambda x: x, compiler_options={'xla_no_such_option_anywhere': 'x'}).lower(1.).compile()
