"""DCNv2 (yolact_jax.model.dcn) against a plain loop over output pixels, taps and bilinear corners
that follows the CUDA kernel's rule, against hand-computed samples at the borders, against XLA's
convolution for zero offsets, and against finite differences."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from yolact_jax.model.dcn import (ModulatedDeformConv, column_bytes, modulated_deform_conv,
                                  output_size)

NHWC = ('NHWC', 'HWIO', 'NHWC')


def reference_dcn(x, offset, mask, kernel, bias, stride, padding, dilation):
  """The CUDA im2col rule, one output pixel, tap and corner at a time (float64 NumPy)."""
  x, offset, mask, kernel = (np.asarray(a, np.float64) for a in (x, offset, mask, kernel))
  n, h, w, _ = x.shape
  kh, kw, _, cout = kernel.shape
  ho, wo = offset.shape[1:3]
  out = np.zeros((n, ho, wo, cout))
  for b in range(n):
    for oy in range(ho):
      for ox in range(wo):
        for i in range(kh):
          for j in range(kw):
            k = i * kw + j
            y = oy * stride - padding + i * dilation + offset[b, oy, ox, 2 * k]
            xx = ox * stride - padding + j * dilation + offset[b, oy, ox, 2 * k + 1]
            val = np.zeros(x.shape[-1])
            if -1 < y < h and -1 < xx < w:
              y0, x0 = math.floor(y), math.floor(xx)
              ly, lx = y - y0, xx - x0
              for cy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
                for cx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
                  if 0 <= cy < h and 0 <= cx < w:
                    val += wy * wx * x[b, cy, cx]
            out[b, oy, ox] += (val * mask[b, oy, ox, k]) @ kernel[i, j]
  if bias is not None:
    out += np.asarray(bias, np.float64)
  return out


def random_case(seed, n=2, h=7, w=6, cin=3, cout=4, k=3, stride=1, padding=1, dilation=1,
                offset_scale=1.5):
  rng = np.random.default_rng(seed)
  ho, wo = (output_size(s, k, stride, padding, dilation) for s in (h, w))
  x = rng.normal(size=(n, h, w, cin)).astype(np.float32)
  offset = rng.uniform(-offset_scale, offset_scale, (n, ho, wo, 2 * k * k)).astype(np.float32)
  mask = rng.uniform(0, 1, (n, ho, wo, k * k)).astype(np.float32)
  kernel = rng.normal(size=(k, k, cin, cout)).astype(np.float32)
  bias = rng.normal(size=(cout,)).astype(np.float32)
  return x, offset, mask, kernel, bias


def random_params(layer, x, seed, scale=0.5):
  """The layer's parameter tree filled with N(0, scale^2) (no init to compile)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(layer.init, jax.random.key(0), x)['params']
  return jax.tree.map(lambda a: (scale * rng.normal(size=a.shape)).astype(np.float32), shapes)


def base_positions(ho, wo, k, stride, padding, dilation):
  """Undeformed sampling positions [Ho, Wo, K] (y) and (x) of every tap."""
  i, j = np.divmod(np.arange(k * k), k)
  y = np.arange(ho)[:, None, None] * stride - padding + i * dilation
  x = np.arange(wo)[None, :, None] * stride - padding + j * dilation
  return np.broadcast_to(y, (ho, wo, k * k)), np.broadcast_to(x, (ho, wo, k * k))


def interleave(dy, dx):
  return np.stack([dy, dx], -1).reshape(*dy.shape[:-1], -1)


@pytest.mark.parametrize('stride,padding,dilation', [
    (1, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 2), (2, 2, 2), (2, 0, 1)])
def test_fractional_offsets_match_the_loop(stride, padding, dilation):
  x, offset, mask, kernel, bias = random_case(stride + padding + dilation, stride=stride,
                                              padding=padding, dilation=dilation)
  got = modulated_deform_conv(x, offset, mask, kernel, bias, stride, padding, dilation)
  want = reference_dcn(x, offset, mask, kernel, bias, stride, padding, dilation)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_integer_offsets_match_the_loop_without_bias():
  x, offset, mask, kernel, _ = random_case(1, n=3)
  offset = np.round(offset * 2)  # whole pixels, some of them out of the image
  got = modulated_deform_conv(x, offset, mask, kernel, None, 1, 1, 1)
  np.testing.assert_allclose(got, reference_dcn(x, offset, mask, kernel, None, 1, 1, 1),
                             rtol=1e-5, atol=1e-4)


def test_points_straddling_every_border_and_far_outside():
  """Sampling points on and around the four borders (exact binary fractions, so float32 and the
  float64 loop see the same points), and far outside."""
  h, w, k = 5, 6, 3
  targets_y = np.array([-100, -1.5, -1, -0.75, -0.5, -0.25, 0, 1.5, h - 1, h - 0.75, h - 0.5,
                        h - 0.25, h, h + 0.5, 100])
  targets_x = np.array([-100, -1.5, -1, -0.875, -0.5, -0.125, 0, 2.25, w - 1, w - 0.875,
                        w - 0.5, w - 0.125, w, w + 0.25, 100])
  rng = np.random.default_rng(3)
  x, _, mask, kernel, bias = random_case(3, n=2, h=h, w=w)
  by, bx = base_positions(h, w, k, 1, 1, 1)
  ty = rng.choice(targets_y, (2,) + by.shape)
  tx = rng.choice(targets_x, (2,) + bx.shape)
  offset = interleave(ty - by, tx - bx).astype(np.float32)
  got = modulated_deform_conv(x, offset, mask, kernel, bias, 1, 1, 1)
  np.testing.assert_allclose(got, reference_dcn(x, offset, mask, kernel, bias, 1, 1, 1),
                             rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('y,x,expected', [
    (-1.0, 2.0, 0.0),                      # on the open bound -1: nothing
    (-0.5, 2.0, 0.5 * 12),                 # above the top row: half of row 0
    (-0.25, -0.5, 0.75 * 0.5 * 10),        # top-left corner: only pixel (0, 0) survives
    (3.5, 2.0, 0.5 * 42),                  # below the bottom row (H = 4): half of row 3
    (4.0, 2.0, 0.0),                       # on the bound H: nothing
    (1.0, 4.25, 0.75 * 24),                # right of the last column (W = 5): 3/4 of column 4
    (1.0, 5.0, 0.0),                       # on the bound W: nothing
    (1.0, -0.75, 0.25 * 20),               # left of column 0: 1/4 of column 0
    (1.5, 1.5, (21 + 22 + 31 + 32) / 4),   # inside: the mean of four pixels
    (-30.0, 40.0, 0.0),                    # far outside
])
def test_single_tap_hand_computed(y, x, expected):
  """A 1x1 kernel of weight 1 on image[r, c] = 10 (r + 1) + c: the output is the sample itself."""
  image = (10 * (np.arange(4)[:, None] + 1) + np.arange(5)[None, :]).astype(np.float32)
  offset = np.zeros((1, 4, 5, 2), np.float32)
  offset[0, 0, 0] = y, x  # output pixel (0, 0) samples at (0 + y, 0 + x)
  got = modulated_deform_conv(image[None, :, :, None], offset, np.ones((1, 4, 5, 1), np.float32),
                              np.ones((1, 1, 1, 1), np.float32))
  np.testing.assert_allclose(got[0, 0, 0, 0], expected, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(got[0, :, :, 0].ravel()[1:], image.ravel()[1:])


@pytest.mark.parametrize('stride,padding,dilation', [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 0, 1)])
def test_zero_offsets_are_a_conv_with_taps_scaled_by_the_modulation(stride, padding, dilation):
  x, _, _, kernel, bias = random_case(7, n=2, h=9, w=8, stride=stride, padding=padding,
                                      dilation=dilation)
  logits = np.random.default_rng(8).normal(size=9).astype(np.float32)
  ho, wo = (output_size(s, 3, stride, padding, dilation) for s in (9, 8))
  mask = np.broadcast_to(jax.nn.sigmoid(logits), (2, ho, wo, 9))
  got = modulated_deform_conv(x, np.zeros((2, ho, wo, 18), np.float32), mask, kernel, bias,
                              stride, padding, dilation)
  scaled = kernel * np.asarray(jax.nn.sigmoid(logits)).reshape(3, 3, 1, 1)
  want = jax.lax.conv_general_dilated(x, scaled, (stride,) * 2, ((padding,) * 2,) * 2,
                                      rhs_dilation=(dilation,) * 2, dimension_numbers=NHWC,
                                      precision='highest') + bias
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_module_params_init_and_names():
  """Zero-initialised offset conv and bias -> 0.5 x the plain conv; float32 HWIO params."""
  x = jax.random.normal(jax.random.key(0), (2, 10, 10, 8))
  layer = ModulatedDeformConv(16, stride=2)
  params = jax.jit(layer.init)(jax.random.key(1), x)['params']
  assert param_shapes(params) == {
      'kernel': (3, 3, 8, 16), 'bias': (16,),
      'conv_offset_mask/kernel': (3, 3, 8, 27), 'conv_offset_mask/bias': (27,)}
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(params))
  assert not np.any(params['conv_offset_mask']['kernel']) and not np.any(params['bias'])
  assert not np.any(params['conv_offset_mask']['bias']) and np.any(params['kernel'])
  plain = jax.lax.conv_general_dilated(x, params['kernel'], (2, 2), ((1, 1), (1, 1)),
                                       dimension_numbers=NHWC, precision='highest')
  np.testing.assert_allclose(jax.jit(layer.apply)({'params': params}, x), 0.5 * plain, atol=1e-5)


def param_shapes(params):
  return {'/'.join(p.key for p in path): v.shape
          for path, v in jax.tree_util.tree_leaves_with_path(params)}


def test_param_names_map_onto_the_originals_keys():
  """Through the converter's rule, a DCN named conv2 in layers_1_0 gives exactly the manifest's
  four conv2 keys of yolact_plus_resnet50, with the shapes (OIHW) listed there."""
  from tests.reference_data import require_reference
  from yolact_jax.checkpoint.convert import _to_torch_layout, flax_path_to_torch_key
  manifest = require_reference('state_dict_keys', 'keys_yolact_plus_resnet50.tsv')
  want = {}
  for line in manifest.read_text().splitlines()[1:]:
    key, shape, _ = line.split('\t')
    if key.startswith('backbone.layers.1.0.conv2.'):
      want[key] = tuple(int(s) for s in shape.split('x'))
  shapes = jax.eval_shape(ModulatedDeformConv(128, stride=2).init, jax.random.key(0),
                          jnp.zeros((1, 16, 16, 128)))['params']
  got = {flax_path_to_torch_key('params', ('backbone', 'layers_1_0', 'conv2', *p.split('/'))):
         _to_torch_layout(np.zeros(s)).shape for p, s in param_shapes(shapes).items()}
  assert got == want and len(want) == 4


def test_module_matches_the_loop_with_a_trained_offset_conv():
  """Offset channels [0, 2K) are (dy, dx) per tap; [2K, 3K) go through the sigmoid."""
  x = np.random.default_rng(11).normal(size=(2, 6, 7, 3)).astype(np.float32)
  layer = ModulatedDeformConv(5, stride=1, padding=1)
  params = random_params(layer, x, 12)
  offset_mask = jax.lax.conv_general_dilated(
      x, params['conv_offset_mask']['kernel'], (1, 1), ((1, 1), (1, 1)), dimension_numbers=NHWC,
      precision='highest') + params['conv_offset_mask']['bias']
  offset_mask = np.asarray(offset_mask)
  want = reference_dcn(x, offset_mask[..., :18], 1 / (1 + np.exp(-offset_mask[..., 18:])),
                       params['kernel'], params['bias'], 1, 1, 1)
  np.testing.assert_allclose(jax.jit(layer.apply)({'params': params}, x), want, rtol=1e-4,
                             atol=1e-4)


@pytest.mark.parametrize('chunk_rows', [1, 3, 4])
def test_chunked_rows_equal_the_single_block(chunk_rows):
  """Forward and all gradients (7 output rows: 3 and 4 leave a partial last block)."""
  x, offset, mask, kernel, bias = random_case(5, h=13, w=6, stride=2)

  def loss(chunk):
    def f(*args):
      out = modulated_deform_conv(*args, stride=2, padding=1, chunk_rows=chunk)
      return jnp.sum(jnp.sin(out)), out
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4), has_aux=True))

  (_, out1), grads1 = loss(None)(x, offset, mask, kernel, bias)
  (_, out2), grads2 = loss(chunk_rows)(x, offset, mask, kernel, bias)
  assert out2.shape == (2, 7, 3, 4)
  np.testing.assert_allclose(out2, out1, rtol=1e-6, atol=1e-5)
  for g1, g2 in zip(grads1, grads2):
    np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('chunk_rows', [None, 2])
def test_gradients_match_finite_differences(chunk_rows):
  """float64; offsets keep every sampling point away from integer coordinates (the kinks)."""
  x, offset, mask, kernel, bias = random_case(9, n=1, h=5, w=4, cin=2, cout=2, stride=1)
  rng = np.random.default_rng(10)
  offset = np.floor(offset) + rng.uniform(0.2, 0.8, offset.shape)
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(a, jnp.float64) for a in (x, offset, mask, kernel, bias))
    f = lambda *a: modulated_deform_conv(*a, stride=1, padding=1,  # noqa: E731
                                         chunk_rows=chunk_rows)
    assert f(*args).dtype == jnp.float64
    check_grads(f, args, order=1, modes=('rev',), eps=1e-6, atol=1e-6, rtol=1e-6)


def test_module_under_jit_and_grad():
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  layer = ModulatedDeformConv(6, stride=2, chunk_rows=2)
  params = random_params(layer, x, 1, scale=0.3)

  def loss(params, x):
    return jnp.sum(layer.apply({'params': params}, x) ** 2)

  value, (grads, dx) = jax.jit(jax.value_and_grad(loss, (0, 1)))(params, x)
  np.testing.assert_allclose(value, jax.jit(loss)(params, x), rtol=1e-5)
  assert dx.shape == x.shape and np.all(np.isfinite(dx))
  for name in ('kernel', 'bias'):
    assert np.any(grads[name]) and np.any(grads['conv_offset_mask'][name])


def test_bfloat16_compute_keeps_float32_params():
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 8))
  layer32 = ModulatedDeformConv(8)
  params = random_params(layer32, x, 1, scale=0.2)
  out16 = jax.jit(ModulatedDeformConv(8, dtype=jnp.bfloat16).apply)({'params': params}, x)
  assert out16.dtype == jnp.bfloat16
  out32 = jax.jit(layer32.apply)({'params': params}, x)
  np.testing.assert_allclose(out16.astype(np.float32), out32, atol=0.1 * np.abs(out32).max())


def test_lowers_for_cuda_forward_and_gradient():
  """No CPU-only op: the forward and its gradient (chunked and not) lower for CUDA without a GPU."""
  x, offset, mask, kernel, bias = random_case(12, h=9, w=9)
  for chunk in (None, 4):
    def loss(*args):
      return jnp.sum(modulated_deform_conv(*args, stride=1, padding=1, chunk_rows=chunk) ** 2)
    traced = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4))).trace(x, offset, mask, kernel, bias)
    text = traced.lower(lowering_platforms=('cuda',)).as_text()
    assert 'stablehlo.gather' in text and 'stablehlo.dot_general' in text


def test_column_memory_figures():
  """The docstring's numbers: YOLACT++ ResNet-50, 550 px, batch 8, float32."""
  assert [output_size(s, 3, 2, 1, 1) for s in (138, 69, 35)] == [69, 35, 18]
  assert column_bytes(8, 69, 69, 128) == 175_509_504
  assert column_bytes(8, 35, 35, 256) == 90_316_800
  assert column_bytes(8, 18, 18, 512) == 47_775_744
  assert column_bytes(8, 69, 69, 128, chunk_rows=8) == 20_348_928


def torch_dcn(x, offset, mask, kernel, bias, stride, padding, dilation):
  """An independent DCNv2 from torch's own ops: ``grid_sample`` (bilinear, zeros outside,
  align_corners=True) samples every tap; it reads 0 for each corner outside the image, which with
  all corners out is the kernel's (-1, H) x (-1, W) rule."""
  import torch
  n, c, h, w = x.shape
  kh, kw, _, _ = kernel.shape
  ho, wo = offset.shape[1:3]
  by, bx = (torch.as_tensor(np.ascontiguousarray(a), dtype=x.dtype)
            for a in base_positions(ho, wo, kh, stride, padding, dilation))
  y = by + offset[..., 0::2]  # [N, Ho, Wo, K]
  xx = bx + offset[..., 1::2]
  grid = torch.stack([2 * xx / (w - 1) - 1, 2 * y / (h - 1) - 1], -1).reshape(n, ho, -1, 2)
  samples = torch.nn.functional.grid_sample(x, grid, mode='bilinear', padding_mode='zeros',
                                            align_corners=True).reshape(n, c, ho, wo, kh * kw)
  cols = samples * mask[:, None]
  return torch.einsum('ncyxk,kco->nyxo', cols, kernel.reshape(kh * kw, c, -1)) + bias


@pytest.mark.parametrize('stride,padding,dilation', [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_forward_and_gradients_match_torch_grid_sample(stride, padding, dilation):
  """float32, a larger case (batch 2, 12x11, 16 -> 8 channels, offsets up to +-4 px)."""
  torch = pytest.importorskip('torch')
  x, offset, mask, kernel, bias = random_case(20 + stride, h=12, w=11, cin=16, cout=8,
                                              stride=stride, padding=padding, dilation=dilation,
                                              offset_scale=4.0)
  cotangent = np.random.default_rng(4).normal(size=(2,) + offset.shape[1:3] + (8,))
  f = lambda *a: modulated_deform_conv(*a, stride, padding, dilation)  # noqa: E731
  out, vjp = jax.vjp(f, x, offset, mask, kernel, bias)
  grads = vjp(jnp.asarray(cotangent, jnp.float32))
  t_args = [torch.tensor(a, requires_grad=True) for a in (x, offset, mask, kernel, bias)]
  t_out = torch_dcn(t_args[0].permute(0, 3, 1, 2), *t_args[1:], stride, padding, dilation)
  t_out.backward(torch.tensor(cotangent, dtype=torch.float32))
  np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-4, atol=1e-4)
  for got, want in zip(grads, t_args):
    np.testing.assert_allclose(got, want.grad.numpy(), rtol=1e-4, atol=2e-4)
