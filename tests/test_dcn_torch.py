"""The pure-PyTorch DCNv2 of the comparison harness (yolact_jax.compare.dcn_torch): against our
JAX modulated_deform_conv (forward and gradients), against the plain per-pixel loop of
tests/test_dcn.py in float64, at the borders by hand, against torch's conv for zero offsets, and
served as ``dcn_v2.DCN`` by the harness's import hook."""

from __future__ import annotations

import sys

import numpy as np
import pytest

torch = pytest.importorskip('torch')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tests.test_dcn import reference_dcn  # noqa: E402
from yolact_jax.compare import dcn_torch, shims  # noqa: E402
from yolact_jax.model.dcn import ModulatedDeformConv, modulated_deform_conv  # noqa: E402


def random_case(seed, n=2, c=5, h=7, w=9, cout=6, stride=1, padding=1, max_offset=3.0):
  """NHWC image, offsets (up to ``max_offset`` px, some exactly on the border, some integer),
  modulation, HWIO kernel and bias, float32."""
  rng = np.random.default_rng(seed)
  ho = (h + 2 * padding - 3) // stride + 1
  wo = (w + 2 * padding - 3) // stride + 1
  x = rng.normal(size=(n, h, w, c)).astype(np.float32)
  offset = rng.uniform(-max_offset, max_offset, (n, ho, wo, 18)).astype(np.float32)
  offset[:, :, :, ::5] = np.round(offset[:, :, :, ::5])  # integer positions: exact corners
  offset[:, 0, :, 0] = -0.5  # tap (0, 0) of the first row: y = -padding - 0.5
  mask = rng.uniform(0, 1, (n, ho, wo, 9)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, c, cout)).astype(np.float32) / np.sqrt(9 * c)
  bias = rng.normal(size=(cout,)).astype(np.float32)
  return x, offset, mask, kernel, bias


def to_torch(x, offset, mask, kernel, bias, dtype=torch.float32):
  """NHWC / HWIO numpy -> the torch layout (NCHW, offsets and modulation channels first, OIHW)."""
  def t(a, perm):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(perm))).to(dtype)
  return (t(x, (0, 3, 1, 2)), t(offset, (0, 3, 1, 2)), t(mask, (0, 3, 1, 2)),
          t(kernel, (3, 2, 0, 1)), torch.from_numpy(bias).to(dtype))


@pytest.mark.parametrize('stride', [1, 2])
def test_forward_matches_our_jax_dcn(stride):
  x, offset, mask, kernel, bias = random_case(stride, stride=stride)
  ours = np.asarray(modulated_deform_conv(x, offset, mask, kernel, bias, stride, 1))
  theirs = dcn_torch.modulated_deform_conv2d(*to_torch(x, offset, mask, kernel, bias),
                                             stride=stride, padding=1)
  np.testing.assert_allclose(theirs.numpy().transpose(0, 2, 3, 1), ours, atol=1e-5, rtol=0)


def test_forward_matches_the_per_pixel_loop_in_float64():
  x, offset, mask, kernel, bias = random_case(3, h=6, w=5, stride=1, max_offset=4.0)
  expected = reference_dcn(x, offset, mask, kernel, bias, 1, 1, 1)
  out = dcn_torch.modulated_deform_conv2d(*to_torch(x, offset, mask, kernel, bias, torch.float64),
                                          stride=1, padding=1)
  np.testing.assert_allclose(out.numpy().transpose(0, 2, 3, 1), expected, atol=1e-10)


def test_border_rule_by_hand():
  """One pixel, one tap: sampling at y = -0.5 reads half of row 0, y = -1 and y = H read 0,
  y = H - 0.5 half of the last row."""
  h, w = 3, 4
  image = torch.arange(1, h * w + 1, dtype=torch.float64).reshape(1, 1, h, w)
  weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
  mask = torch.ones(1, 1, 1, 1, dtype=torch.float64)

  def sample(dy, dx):  # a 1x1 kernel at output (0, 0) with no padding: position (dy, dx)
    offset = torch.tensor([dy, dx], dtype=torch.float64).reshape(1, 2, 1, 1)
    full = torch.zeros(1, 2, h, w, dtype=torch.float64)
    full[:, :, :1, :1] = offset
    out = dcn_torch.modulated_deform_conv2d(image, full, mask.expand(1, 1, h, w), weight, None)
    return float(out[0, 0, 0, 0])

  assert sample(-0.5, 1) == pytest.approx(0.5 * 2)
  assert sample(-1.0, 1) == 0 and sample(h, 1) == 0 and sample(1, -1.0) == 0
  assert sample(h - 0.5, 0) == pytest.approx(0.5 * 9)
  assert sample(1.25, 2.5) == pytest.approx(0.75 * (0.5 * 7 + 0.5 * 8)
                                            + 0.25 * (0.5 * 11 + 0.5 * 12))


def test_zero_offsets_and_unit_modulation_are_a_plain_conv():
  x, offset, mask, kernel, bias = random_case(4, stride=2)
  tx, toff, tmask, tw, tb = to_torch(x, offset, mask, kernel, bias)
  out = dcn_torch.modulated_deform_conv2d(tx, torch.zeros_like(toff), torch.ones_like(tmask), tw,
                                          tb, stride=2, padding=1)
  conv = torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=1)
  torch.testing.assert_close(out, conv, atol=1e-5, rtol=0)


def test_gradients_match_our_jax_dcn():
  x, offset, mask, kernel, bias = random_case(5, n=1, c=3, h=6, w=6, cout=4)
  cot = np.random.default_rng(6).normal(size=(1, 6, 6, 4)).astype(np.float32)
  loss = lambda *a: jnp.sum(modulated_deform_conv(*a, 1, 1) * cot)  # noqa: E731
  ours = jax.grad(loss, argnums=(0, 1, 2, 3, 4))(x, offset, mask, kernel, bias)
  tensors = [t.requires_grad_() for t in to_torch(x, offset, mask, kernel, bias)]
  out = dcn_torch.modulated_deform_conv2d(*tensors, stride=1, padding=1)
  (out * torch.from_numpy(cot.transpose(0, 3, 1, 2))).sum().backward()
  perms = ((0, 2, 3, 1), (0, 2, 3, 1), (0, 2, 3, 1), (2, 3, 1, 0), (0,))
  for name, g_ours, t, perm in zip(('x', 'offset', 'mask', 'kernel', 'bias'), ours, tensors,
                                   perms):
    np.testing.assert_allclose(t.grad.numpy().transpose(perm), np.asarray(g_ours), atol=1e-4,
                               err_msg=name)


def test_dcn_module_has_the_extension_layout_and_matches_our_layer():
  layer = dcn_torch.DCN(5, 6, kernel_size=3, stride=2, padding=1, dilation=1,
                        deformable_groups=1)
  assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {
      'weight': (6, 5, 3, 3), 'bias': (6,), 'conv_offset_mask.weight': (27, 5, 3, 3),
      'conv_offset_mask.bias': (27,)}
  assert not layer.bias.any() and not layer.conv_offset_mask.weight.any()
  rng = np.random.default_rng(7)
  state = {k: torch.from_numpy(rng.normal(0, 0.4, tuple(v.shape)).astype(np.float32))
           for k, v in layer.state_dict().items()}
  layer.load_state_dict(state)
  x = rng.normal(size=(2, 8, 9, 5)).astype(np.float32)
  params = {'kernel': state['weight'].numpy().transpose(2, 3, 1, 0), 'bias': state['bias'].numpy(),
            'conv_offset_mask': {
                'kernel': state['conv_offset_mask.weight'].numpy().transpose(2, 3, 1, 0),
                'bias': state['conv_offset_mask.bias'].numpy()}}
  ours = ModulatedDeformConv(6, stride=2, padding=1).apply({'params': params}, x)
  with torch.no_grad():
    theirs = layer(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
  np.testing.assert_allclose(theirs, np.asarray(ours), atol=1e-5, rtol=0)
  with pytest.raises(NotImplementedError):
    dcn_torch.DCN(4, 4, 3, 1, 1, deformable_groups=2)


def test_the_harness_serves_it_as_dcn_v2():
  if shims.dcn_v2_usable(torch):
    pytest.skip('the compiled dcn_v2 extension is usable here: no stand-in')
  with shims.original_runtime_shims(torch) as active:
    assert active['dcn_v2_torch']
    from dcn_v2 import DCN  # what the original's backbone.py imports
    assert DCN is dcn_torch.DCN
    layer = DCN(8, 8, kernel_size=3, stride=1, padding=1, dilation=1, deformable_groups=1)
    layer.load_state_dict({k: torch.ones_like(v) for k, v in layer.state_dict().items()})
    assert layer(torch.zeros(1, 8, 5, 5)).shape == (1, 8, 5, 5)
  assert 'dcn_v2' not in sys.modules
  with pytest.raises(ImportError):
    import dcn_v2  # noqa: F401
