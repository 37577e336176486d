"""The network on tiny configurations: shapes, layouts, BatchNorm modes, presets' input sizes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolact_jax.config import get_config
from yolact_jax.model.layers import BatchNorm
from yolact_jax.model.shapes import feature_sizes, num_priors, proto_size
from yolact_jax.model.yolact import Yolact


def network(cfg, **kwargs):
  """The network of the experiment ``cfg``: its model section and number of classes."""
  return Yolact(cfg.model, num_classes=cfg.num_classes, **kwargs)


def _init(cfg, batch=2, seed=0):
  x = jax.random.normal(jax.random.key(seed), (batch, cfg.max_size, cfg.max_size, 3))
  variables = jax.jit(network(cfg).init)(jax.random.key(1), x)
  return x, variables


@pytest.mark.parametrize('preset,overrides', [
    ('yolact_tiny', []),
    ('yolact_tiny', ['model.backbone.kind=darknet', 'model.backbone.layers=(1, 1, 1, 1, 1)',
                     'model.backbone.selected_layers=(2, 3, 4)', 'model.backbone.base_width=4']),
    ('yolact_tiny', ['max_size=96']),
])
def test_output_shapes(preset, overrides):
  cfg = get_config(preset, overrides)
  x, variables = _init(cfg)
  out = jax.jit(lambda v, x: network(cfg).apply(v, x, train=True, mutable=['batch_stats']))(
      variables, x)[0]
  p, k, hp = num_priors(cfg), cfg.model.mask.mask_dim, proto_size(cfg)
  h3 = feature_sizes(cfg)[0]
  assert out['loc'].shape == (2, p, 4)
  assert out['conf'].shape == (2, p, cfg.num_classes)
  assert out['coefs'].shape == (2, p, k)
  assert out['proto'].shape == (2, hp, hp, k)
  assert out['segm'].shape == (2, h3, h3, cfg.num_classes - 1)
  assert np.all(np.abs(out['coefs']) <= 1)  # tanh'd coefficients
  assert np.all(out['proto'] >= 0)  # ReLU prototypes


def test_head_is_shared_and_anchor_fastest():
  """Prior (y, x, a) of a level reads conv channel a*n + j at pixel (y, x): compare with a
  manual evaluation of the shared head on one pyramid level."""
  cfg = get_config('yolact_tiny')
  x, variables = _init(cfg, batch=1)
  model = network(cfg)
  out, state = model.apply(variables, x, mutable=['intermediates'],
                           capture_intermediates=lambda mdl, _: mdl.name == 'fpn')
  p4 = state['intermediates']['fpn']['__call__'][0][1]  # second level
  head = variables['params']['prediction_layers_0']
  h = jax.nn.relu(jax.lax.conv_general_dilated(
      p4, head['upfeature_0']['kernel'], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + head['upfeature_0']['bias'])
  conf = jax.lax.conv_general_dilated(h, head['conf_layer']['kernel'], (1, 1), ((1, 1), (1, 1)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  conf = conf + head['conf_layer']['bias']
  sizes = feature_sizes(cfg)
  offset = sizes[0] ** 2 * 3
  n, a, y, xx = cfg.num_classes, 3, 2, 1
  prior = offset + (y * sizes[1] + xx) * 3 + 2
  np.testing.assert_allclose(out['conf'][0, prior], conf[0, y, xx, 2 * n:3 * n], rtol=1e-5,
                             atol=1e-5)



def test_eval_mode_is_batch_independent_and_deterministic():
  cfg = get_config('yolact_tiny')
  x, variables = _init(cfg, batch=3)
  f = jax.jit(lambda v, x: network(cfg).apply(v, x))
  full = f(variables, x)
  single = f(variables, x[1:2])
  np.testing.assert_allclose(full['loc'][1:2], single['loc'], rtol=1e-5, atol=1e-5)


def test_batchnorm_modes_follow_torch():
  """Train mode: biased batch stats to normalise, unbiased variance into the running stats with
  momentum 0.1, batch counter; eval/frozen: running stats; frozen: no gradient to scale/bias."""
  x = jax.random.normal(jax.random.key(0), (4, 3, 5, 2)) * 3 + 1
  bn = BatchNorm()
  variables = bn.init(jax.random.key(1), x)
  y, new = bn.apply(variables, x, train=True, mutable=['batch_stats'])
  flat = np.asarray(x).reshape(-1, 2)
  mean, var = flat.mean(0), flat.var(0)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
  stats = new['batch_stats']
  np.testing.assert_allclose(stats['mean'], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
  assert int(stats['num_batches_tracked']) == 1
  y_eval = bn.apply(variables, x, train=False)
  np.testing.assert_allclose(y_eval, x / np.sqrt(1 + 1e-5), rtol=1e-5)
  frozen = BatchNorm(frozen=True)
  y_frozen, unchanged = frozen.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(y_frozen, y_eval)
  assert int(unchanged['batch_stats']['num_batches_tracked']) == 0
  grads = jax.grad(lambda p: frozen.apply({**variables, 'params': p}, x).sum())(
      variables['params'])
  assert not np.any(grads['scale']) and not np.any(grads['bias'])


def test_freeze_bn_model_keeps_running_stats():
  cfg = get_config('yolact_tiny')
  x, variables = _init(cfg)
  _, new = network(cfg, freeze_bn=True).apply(variables, x, train=True, mutable=['batch_stats'])
  leaves_old = jax.tree_util.tree_leaves(variables['batch_stats'])
  leaves_new = jax.tree_util.tree_leaves(new['batch_stats'])
  assert all(np.array_equal(a, b) for a, b in zip(leaves_old, leaves_new))
  _, trained = network(cfg).apply(variables, x, train=True, mutable=['batch_stats'])
  assert not all(np.array_equal(a, b) for a, b in
                 zip(leaves_old, jax.tree_util.tree_leaves(trained['batch_stats'])))


def test_bfloat16_compute_stays_close():
  cfg = get_config('yolact_tiny')
  x, variables = _init(cfg)
  f32 = network(cfg).apply(variables, x)
  bf16 = network(cfg, dtype=jnp.bfloat16).apply(variables, x)
  assert bf16['loc'].dtype == jnp.float32
  assert np.abs(np.asarray(bf16['proto']) - np.asarray(f32['proto'])).max() < 0.1 * (
      np.abs(np.asarray(f32['proto'])).max() + 1e-3)


@pytest.mark.parametrize('preset', ['yolact_base', 'yolact_im400', 'yolact_im700',
                                    'yolact_darknet53', 'yolact_resnet50', 'yolact_cpu'])
def test_every_preset_traces_at_its_input_size(preset):
  cfg = get_config(preset)
  x = jax.ShapeDtypeStruct((1, cfg.max_size, cfg.max_size, 3), jnp.float32)
  model = network(cfg)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  out = jax.eval_shape(model.apply, variables, x)
  assert out['loc'].shape == (1, num_priors(cfg), 4)
  assert out['proto'].shape[1] == proto_size(cfg)


def test_bad_input_shape_is_a_clear_error():
  cfg = get_config('yolact_tiny')
  _, variables = _init(cfg)
  with pytest.raises(ValueError, match='NHWC'):
    network(cfg).apply(variables, jnp.zeros((1, 3, 64, 64)))


def test_config_is_hashable_for_jit_static_args():
  cfg = get_config('yolact_tiny')
  assert hash(cfg) == hash(dataclasses.replace(cfg))


def test_resize_bilinear_2x_is_the_bilinear_resize():
  """The ProtoNet's x2 upsample (a two-tap stencil) against the general bilinear resize
  (jax.image.resize, half-pixel centres) and a hand-computed row: [0, 4] -> [0, 1, 3, 4]
  (output 2i = 0.25 x[i-1] + 0.75 x[i], 2i+1 = 0.75 x[i] + 0.25 x[i+1], edges repeated)."""
  from yolact_jax.model.fpn import resize_bilinear, resize_bilinear_2x
  row = jnp.asarray([0.0, 4.0]).reshape(1, 1, 2, 1)
  np.testing.assert_array_equal(resize_bilinear_2x(row)[0, 0, :, 0], [0, 1, 3, 4])
  np.testing.assert_array_equal(resize_bilinear_2x(row)[0, :, :, 0], [[0, 1, 3, 4]] * 2)
  x = jax.random.normal(jax.random.key(0), (2, 7, 10, 3))
  np.testing.assert_allclose(resize_bilinear_2x(x), resize_bilinear(x, 14, 20),
                             rtol=1e-6, atol=1e-6)
  g = jax.random.normal(jax.random.key(1), (2, 14, 20, 3))
  grad = lambda f: jax.vjp(f, x)[1](g)[0]  # noqa: E731
  np.testing.assert_allclose(grad(resize_bilinear_2x), grad(lambda x: resize_bilinear(x, 14, 20)),
                             rtol=1e-5, atol=1e-5)
