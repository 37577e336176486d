"""yolact_jax.ops.conv and ops.cpu_conv: the CPU convolution paths against
jax.lax.conv_general_dilated."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from yolact_jax.ops import conv as fast
from yolact_jax.ops import cpu_conv

NHWC = ('NHWC', 'HWIO', 'NHWC')

# (name, input size, Cin, Cout, kernel, stride, padding)
CASES = [
    ('1x1', 9, 4, 5, 1, 1, ((0, 0), (0, 0))),
    ('1x1 stride 2, odd size', 9, 4, 5, 1, 2, ((0, 0), (0, 0))),
    ('1x1 stride 2, even size', 10, 4, 5, 1, 2, ((0, 0), (0, 0))),
    ('3x3 pad 1', 9, 6, 4, 3, 1, ((1, 1), (1, 1))),
    ('3x3 stride 2 pad 1', 10, 6, 4, 3, 2, ((1, 1), (1, 1))),
    ('3x3 asymmetric pad', 8, 6, 4, 3, 1, ((0, 1), (1, 0))),
    ('7x7 stride 2 pad 3 (the stem)', 13, 3, 8, 7, 2, ((3, 3), (3, 3))),
    ('1x1 with padding', 7, 4, 5, 1, 1, ((1, 1), (1, 1))),
]


def make_case(size, cin, cout, kernel, stride, padding, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(2, size, size, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, cin, cout)), jnp.float32)
  out = lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=NHWC)
  g = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
  return x, w, g


def value_and_grads(conv_fn, x, w, g, stride, padding):
  def loss(x, w):
    y = conv_fn(x, w, (stride, stride), padding, dimension_numbers=NHWC)
    return jnp.sum(y * g), y
  (_, y), (dx, dw) = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(x, w)
  return y, dx, dw


@pytest.mark.parametrize('name,size,cin,cout,kernel,stride,padding', CASES,
                         ids=[c[0] for c in CASES])
def test_forward_and_gradients_match_lax(name, size, cin, cout, kernel, stride, padding):
  x, w, g = make_case(size, cin, cout, kernel, stride, padding)
  ours = value_and_grads(fast.conv_general_dilated, x, w, g, stride, padding)
  theirs = value_and_grads(lax.conv_general_dilated, x, w, g, stride, padding)
  for label, a, b in zip(('y', 'dx', 'dw'), ours, theirs):
    assert a.shape == b.shape and a.dtype == b.dtype, label
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4, err_msg=f'{name}: {label}')


PER_TAP = cpu_conv.WeightGradRule(0, 0, per_row=False, stacked_max_channels=0)
PER_ROW = cpu_conv.WeightGradRule(0, 0, per_row=True, stacked_max_channels=4)


@pytest.mark.parametrize('rule', [PER_TAP, PER_ROW], ids=['per tap', 'per row, stacked stem'])
@pytest.mark.parametrize('name,size,cin,cout,kernel,stride,padding', CASES,
                         ids=[c[0] for c in CASES])
def test_weight_grad_by_matmul_matches_xla(name, size, cin, cout, kernel, stride, padding,
                                           rule):
  """Every form of the products (per tap; per kernel row with the gradient transposed;
  channels-first, all taps at once, for the stem's 3 channels) gives XLA's weight gradient."""
  x, w, g = make_case(size, cin, cout, kernel, stride, padding, seed=1)
  _, vjp = jax.vjp(lambda w: lax.conv_general_dilated(x, w, (stride, stride), padding,
                                                       dimension_numbers=NHWC), w)
  got = jax.jit(lambda x, g: cpu_conv.weight_grad_by_matmul(
      x, g, (kernel, kernel), (stride, stride), padding, rule))(x, g)
  np.testing.assert_allclose(got, vjp(g)[0], rtol=1e-5, atol=1e-4, err_msg=name)


def test_weight_grad_forms_group_the_taps_as_the_rule_says():
  """Per tap: 9 products of a 3x3; per row: 3, each over the row's 3 windows side by side
  ([M, 3 x Cin]); the stem's few channels: 1 over all 49 taps of a 7x7 ([147, M])."""
  def dots(kernel, cin, rule):
    x, dy = jnp.ones((1, 10, 10, cin)), jnp.ones((1, 10, 10, 8))
    pad = ((kernel // 2,) * 2,) * 2
    text = jax.jit(lambda x, dy: cpu_conv.weight_grad_by_matmul(
        x, dy, (kernel, kernel), (1, 1), pad, rule)).lower(x, dy).as_text()
    return [line for line in text.splitlines() if 'stablehlo.dot_general' in line]

  assert len(dots(3, 16, PER_TAP)) == 9
  per_row = dots(3, 16, PER_ROW)
  assert len(per_row) == 3 and all('tensor<100x48xf32>' in line for line in per_row)
  assert all('contracting_dims = [1] x [0]' in line for line in per_row)  # plain [M,K]x[K,N]
  stem = dots(7, 3, PER_ROW)
  assert len(stem) == 1 and 'tensor<147x100xf32>' in stem[0]
  assert len(dots(7, 3, PER_TAP)) == 49


AMD = cpu_conv.WEIGHT_GRAD_RULES['AuthenticAMD']
INTEL = cpu_conv.WEIGHT_GRAD_RULES['GenuineIntel']


@pytest.mark.parametrize('w_shape,out_shape,on_amd,on_intel', [
    ((1, 1, 64, 256), (2, 138, 138, 256), True, True),  # every 1x1
    ((1, 1, 512, 2048), (2, 18, 18, 2048), True, True),
    ((3, 3, 256, 256), (2, 138, 138, 256), True, True),  # the ProtoNet's big one
    ((3, 3, 256, 256), (2, 69, 69, 256), False, True),  # FPN / head / ProtoNet at 69, batch 2
    ((3, 3, 256, 256), (8, 69, 69, 256), True, True),  # ... at batch 8
    ((3, 3, 256, 256), (2, 35, 35, 256), False, True),  # ResNet layer3
    ((3, 3, 256, 96), (8, 69, 69, 96), False, True),  # the mask coefficients' head
    ((3, 3, 256, 12), (8, 69, 69, 12), False, False),  # the box head: too few outputs
    ((3, 3, 64, 64), (8, 138, 138, 64), False, True),  # ResNet layer1
    ((7, 7, 3, 64), (2, 275, 275, 64), True, True),  # the stem: 3 input channels
    ((7, 7, 8, 64), (2, 16, 16, 64), False, False),
])
def test_matmul_weight_grad_pays_table(w_shape, out_shape, on_amd, on_intel):
  assert cpu_conv.matmul_weight_grad_pays(w_shape, out_shape, AMD) is on_amd
  assert cpu_conv.matmul_weight_grad_pays(w_shape, out_shape, INTEL) is on_intel


def test_weight_grad_rule_by_vendor():
  assert cpu_conv.weight_grad_rule('AuthenticAMD') is AMD
  assert cpu_conv.weight_grad_rule('GenuineIntel') is INTEL
  assert cpu_conv.weight_grad_rule('SomeOtherVendor') is cpu_conv.WEIGHT_GRAD_RULES[
      cpu_conv.DEFAULT_VENDOR]
  assert cpu_conv.weight_grad_rule() is cpu_conv.weight_grad_rule(cpu_conv.cpu_vendor())
  # AMD keeps one product per tap everywhere; Intel one per kernel row and the stem stacked
  assert (AMD.per_row, AMD.stacked_max_channels) == (False, 0)
  assert (INTEL.per_row, INTEL.stacked_max_channels) == (True, 4)


@pytest.mark.parametrize('rule', [AMD, INTEL], ids=['amd rule', 'intel rule'])
def test_3x3_through_the_vjp_under_either_rule(rule, monkeypatch):
  """The network's convolution gives XLA's value and gradients whichever rule picks the path:
  a 64-channel 3x3 takes XLA's weight gradient under the AMD rule and the per-row products
  under the Intel one; a 256-channel one past 16384 positions takes the products under both."""
  monkeypatch.setattr(cpu_conv, 'weight_grad_rule', lambda vendor=None: rule)
  rng = np.random.default_rng(3)
  for cin, size, batch in ((64, 32, 1), (256, 64, 4)):
    x = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, cin, cin)) * 0.05, jnp.float32)
    g = jnp.asarray(rng.normal(size=(batch, size, size, cin)), jnp.float32)
    ours = value_and_grads(fast.conv_general_dilated, x, w, g, 1, ((1, 1), (1, 1)))
    theirs = value_and_grads(lax.conv_general_dilated, x, w, g, 1, ((1, 1), (1, 1)))
    for a, b in zip(ours, theirs):  # sums of up to 147 456 terms: float32 reordering only
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-5 * float(jnp.abs(b).max()))


def test_weight_grad_products_are_plain_matrix_products():
  """Every product of the weight gradient has the plain [M, K] x [K, N] form: the transposed
  operand (the one with fewer channels) is transposed on its own inside a conditional, which
  survives XLA's compilation (that is what keeps the transpose out of the producer's fusion)."""
  for cin, cout in ((4, 16), (16, 4)):
    x = jnp.ones((2, 6, 6, cin))
    dy = jnp.ones((2, 6, 6, cout))
    lowered = jax.jit(lambda x, dy: cpu_conv.weight_grad_by_matmul(
        x, dy, (3, 3), (1, 1), ((1, 1), (1, 1)), PER_TAP)).lower(x, dy)
    text = lowered.as_text()
    dots = [line for line in text.splitlines() if 'stablehlo.dot_general' in line]
    assert len(dots) == 9
    assert all('contracting_dims = [1] x [0]' in line for line in dots), dots[0]
    # the input windows transposed (9 conditionals) where Cin < Cout, else the gradient once
    transposes = 9 if cin < cout else 1
    assert text.count('stablehlo.case') == transposes
    assert lowered.compile().as_text().count(' conditional(') == transposes


def test_transposes_do_not_recompute_their_operands():
  """The behaviour _transposed exists for: with a ReLU(x * s) input, no compiled fusion both
  transposes and multiplies or takes the maximum (the operand is computed once, in its own
  order, and the transpose reads it). The same program with an optimisation barrier instead
  of the conditional fuses them (XLA:CPU drops the barrier before fusing)."""
  def fused_transposes(transposed):
    x, s, dy = jnp.ones((2, 16, 16, 4)), jnp.ones((4,)), jnp.ones((2, 16, 16, 32))
    def wgrad(x, s, dy):  # Cin < Cout: the input windows are the transposed operand
      return cpu_conv.weight_grad_by_matmul(jnp.maximum(x * s, 0), dy, (3, 3), (1, 1),
                                            ((1, 1), (1, 1)), PER_TAP)
    with pytest.MonkeyPatch.context() as patch:
      patch.setattr(cpu_conv, '_transposed', transposed)
      text = jax.jit(wgrad).lower(x, s, dy).compile().as_text()
    bodies = re.findall(r'\n%?[\w.\-]+ [^\n]*\{\n(.*?)\n\}', text, re.S)
    return [b for b in bodies if ' transpose(' in b and (' multiply(' in b or ' maximum(' in b)]

  assert fused_transposes(cpu_conv._transposed) == []
  assert fused_transposes(lambda a, axes=None: lax.optimization_barrier(jnp.transpose(a, axes)))


def test_transposed_gives_the_transpose():
  """_transposed is the plain transpose whatever the operand holds (a NaN first element takes
  the other branch, which is the same)."""
  a = jnp.arange(24.0).reshape(2, 3, 4)
  for first in (0.0, jnp.nan):
    b = a.at[0, 0, 0].set(first)
    got = jax.jit(lambda b: cpu_conv._transposed(b, (2, 0, 1)))(b)
    np.testing.assert_array_equal(got, jnp.transpose(b, (2, 0, 1)))


@pytest.mark.parametrize('kwargs', [
    {'padding': 'SAME'},
    {'rhs_dilation': (2, 2)},
    {'feature_group_count': 2},
    {'padding': ((-1, 0), (0, 0))},
], ids=['string padding', 'dilation', 'groups', 'negative padding'])
def test_other_cases_fall_through_to_lax(kwargs):
  rng = np.random.default_rng(4)
  cin = 4
  x = jnp.asarray(rng.normal(size=(1, 9, 9, cin)), jnp.float32)
  groups = kwargs.get('feature_group_count', 1)
  w = jnp.asarray(rng.normal(size=(3, 3, cin // groups, 6)), jnp.float32)
  args = {'padding': ((1, 1), (1, 1)), **kwargs}
  a = fast.conv_general_dilated(x, w, (1, 1), dimension_numbers=NHWC, **args)
  b = lax.conv_general_dilated(x, w, (1, 1), dimension_numbers=NHWC, **args)
  np.testing.assert_array_equal(a, b)


def test_bfloat16_keeps_its_dtype():
  x, w, g = make_case(9, 4, 5, 1, 2, ((0, 0), (0, 0)))
  x, w, g = (a.astype(jnp.bfloat16) for a in (x, w, g))
  y, dx, dw = value_and_grads(fast.conv_general_dilated, x, w, g, 2, ((0, 0), (0, 0)))
  assert y.dtype == dx.dtype == dw.dtype == jnp.bfloat16
  y_ref, dx_ref, dw_ref = value_and_grads(lax.conv_general_dilated, x, w, g, 2, ((0, 0), (0, 0)))
  for a, b in ((y, y_ref), (dx, dx_ref), (dw, dw_ref)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=0.05, atol=0.25)


def test_flax_conv_helper_uses_it():
  from yolact_jax.model.layers import conv
  layer = conv(8, 1)
  assert layer.conv_general_dilated is fast.conv_general_dilated
  x = jnp.ones((1, 4, 4, 3))
  variables = layer.init(jax.random.key(0), x)
  expected = lax.conv_general_dilated(x, variables['params']['kernel'], (1, 1),
                                      ((0, 0), (0, 0)), dimension_numbers=NHWC)
  np.testing.assert_allclose(layer.apply(variables, x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('kernel', [1, 3])
def test_other_platforms_keep_xla_convolutions(kernel, monkeypatch):
  """Lowered for CUDA (possible without a GPU) the forward and both gradients are XLA's
  convolutions only; lowered for CPU the products appear."""
  x = jnp.ones((1, 8, 8, 4))
  w = jnp.ones((kernel, kernel, 4, 6))
  pad = ((kernel // 2,) * 2,) * 2

  def loss(x, w):
    return jnp.sum(fast.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=NHWC) ** 2)

  # the 3x3 weight gradient takes the products too (on CPU)
  monkeypatch.setattr(cpu_conv, 'weight_grad_rule',
                      lambda vendor=None: cpu_conv.WeightGradRule(1, 1, False, 0))
  traced = jax.jit(jax.grad(loss, (0, 1))).trace(x, w)
  cuda = traced.lower(lowering_platforms=('cuda',)).as_text()
  cpu = traced.lower(lowering_platforms=('cpu',)).as_text()
  assert cuda.count('stablehlo.convolution') == 3 and 'stablehlo.dot_general' not in cuda
  assert 'stablehlo.dot_general' in cpu
  if kernel == 1:
    assert 'stablehlo.convolution' not in cpu
