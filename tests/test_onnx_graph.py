"""The ONNX export's traced forms and graph clean-up (yolact_jax.serving.onnx_export, onnx_graph).

The forms are checked against the live functions they stand for; the clean-up on a small graph
shaped as jax2onnx writes a convolution + frozen BatchNorm + ReLU: the same outputs to the bit
(ONNX Runtime without its own optimisations), and with them the BatchNorm and ReLU folded into
the convolution.
"""

from __future__ import annotations

import flax.linen
import jax
import numpy as np
import pytest

from yolact_jax.model.fpn import resize_bilinear
from yolact_jax.predict import pack_mask_bits
from yolact_jax.serving import onnx_export as ox


@pytest.mark.parametrize('shape', [(2, 3, 5, 64), (1, 7, 13), (3, 9)])
def test_pack_bits_by_product_is_packbits(shape):
  masks = np.random.default_rng(0).random(shape) > 0.5
  packed = np.asarray(jax.jit(ox.pack_bits_by_product)(masks))
  np.testing.assert_array_equal(packed, np.packbits(masks, axis=-1))
  np.testing.assert_array_equal(packed, np.asarray(pack_mask_bits(masks)))


def test_max_pool_on_planes_is_flax_max_pool():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 11, 10, 5))
  args = ((3, 3), (2, 2), ((1, 1), (1, 1)))
  np.testing.assert_array_equal(np.asarray(ox.max_pool_on_planes(x, *args)),
                                np.asarray(flax.linen.max_pool(x, *args)))


@pytest.mark.parametrize('size_in, size_out', [(35, 69), (69, 138), (18, 35), (20, 7)])
def test_resize_bilinear_by_products_is_the_fpn_resize(size_in, size_out):
  """Equal up to float32 noise: the weights are jax.image.resize's, but XLA evaluates their
  formula slightly differently alone and inside the live resize (up to 4e-6 apart)."""
  x = jax.random.normal(jax.random.PRNGKey(1), (2, size_in, size_in + 3, 6))
  ours = jax.jit(ox.resize_bilinear_by_products, static_argnums=(1, 2))(x, size_out, size_out)
  np.testing.assert_allclose(np.asarray(ours), np.asarray(resize_bilinear(x, size_out, size_out)),
                             rtol=0, atol=3e-5)


# ---------------------------------------------------------------------------------------------
# The graph clean-up


def conv_bn_relu_graph(rng: np.random.Generator):
  """x [1, 8, 8, 4] NHWC -> conv 3x3 -> (y - mean) * scale + bias -> max(., 0) -> conv 3x3,
  written as jax2onnx writes it: transposes around each NCHW Conv, the mean and bias as
  full-size constants, the scale reshaped and expanded to the full shape."""
  from onnx import TensorProto, helper, numpy_helper
  full = (1, 8, 8, 6)
  consts = {
      'w': rng.standard_normal((6, 4, 3, 3)).astype(np.float32),
      'mean': np.broadcast_to(rng.standard_normal(6).astype(np.float32), full).copy(),
      'scale': rng.uniform(0.5, 2, 6).astype(np.float32),
      'scale_shape': np.array([1, 1, 1, 6], np.int64),
      'full_shape': np.array(full, np.int64),
      'bias': np.broadcast_to(rng.standard_normal(6).astype(np.float32), full).copy(),
      'zero': np.zeros(full, np.float32),
      'w2': rng.standard_normal((5, 6, 3, 3)).astype(np.float32),
  }
  nodes = [
      helper.make_node('Transpose', ['x'], ['x_nchw'], perm=[0, 3, 1, 2]),
      helper.make_node('Conv', ['x_nchw', 'w'], ['y_nchw'], pads=[1, 1, 1, 1]),
      helper.make_node('Transpose', ['y_nchw'], ['y'], perm=[0, 2, 3, 1]),
      helper.make_node('Sub', ['y', 'mean'], ['centred']),
      helper.make_node('Reshape', ['scale', 'scale_shape'], ['scale_4d']),
      helper.make_node('Expand', ['scale_4d', 'full_shape'], ['scale_full']),
      helper.make_node('Mul', ['centred', 'scale_full'], ['scaled']),
      helper.make_node('Add', ['scaled', 'bias'], ['shifted']),
      helper.make_node('Max', ['shifted', 'zero'], ['relu']),
      # the next convolution, whose input transpose the first one's output transpose cancels
      helper.make_node('Transpose', ['relu'], ['relu_nchw'], perm=[0, 3, 1, 2]),
      helper.make_node('Conv', ['relu_nchw', 'w2'], ['out_nchw'], pads=[1, 1, 1, 1]),
      helper.make_node('Transpose', ['out_nchw'], ['out'], perm=[0, 2, 3, 1]),
  ]
  graph = helper.make_graph(
      nodes, 'conv_bn_relu',
      [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 8, 8, 4])],
      [helper.make_tensor_value_info('out', TensorProto.FLOAT, [1, 8, 8, 5])],
      [numpy_helper.from_array(v, k) for k, v in consts.items()])
  return helper.make_model(graph, opset_imports=[helper.make_opsetid('', ox.OPSET)])


def run(model, x, level: str = 'ORT_DISABLE_ALL', optimized_path=None):
  import onnxruntime as ort
  options = ort.SessionOptions()
  options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
  if optimized_path is not None:
    options.optimized_model_filepath = str(optimized_path)
  session = ort.InferenceSession(model.SerializeToString(), options,
                                 providers=['CPUExecutionProvider'])
  return session.run(None, {'x': x})[0]


def test_simplify_is_exact_and_lets_onnx_runtime_fold_batchnorm(tmp_path):
  onnx = pytest.importorskip('onnx', reason='the graph clean-up needs onnx (the [test] extra)')
  pytest.importorskip('onnxruntime', reason='needs onnxruntime (the [test] extra)')
  from yolact_jax.serving import onnx_graph
  rng = np.random.default_rng(0)
  model = conv_bn_relu_graph(rng)
  x = rng.standard_normal((1, 8, 8, 4)).astype(np.float32)
  before = run(model, x)
  size_before = model.ByteSize()

  counts = onnx_graph.simplify(model)
  assert counts['expands_bypassed'] == 1 and counts['subs_to_adds'] == 1
  assert counts['maxima_to_relus'] == 1 and counts['constants_cut'] == 3  # mean, bias, 0
  onnx.checker.check_model(model)
  constants = {t.name: list(t.dims) for t in model.graph.initializer}
  assert constants['bias'] == [1, 1, 1, 6] and constants['mean_negated'] == [1, 1, 1, 6]
  assert 'zero' not in constants and 'full_shape' not in constants  # nothing reads them
  assert model.ByteSize() < size_before
  np.testing.assert_array_equal(run(model, x), before)  # the same values, to the bit

  # ONNX Runtime's own optimisations now fold the BatchNorm and the ReLU into the Conv.
  optimized = tmp_path / 'optimized.onnx'
  folded = run(model, x, 'ORT_ENABLE_EXTENDED', optimized)
  ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
  assert not {'Add', 'Sub', 'Mul', 'Max', 'Relu', 'Expand'} & set(ops), ops
  assert len(ops) == 4, ops  # transpose in, two convolutions, transpose out
  np.testing.assert_allclose(folded, before, rtol=1e-5, atol=1e-5)


def test_simplify_leaves_graph_outputs_and_non_broadcasting_readers():
  pytest.importorskip('onnx', reason='the graph clean-up needs onnx (the [test] extra)')
  from onnx import TensorProto, helper, numpy_helper
  from yolact_jax.serving import onnx_graph
  ones = np.ones((2, 3), np.float32)
  graph = helper.make_graph(
      [helper.make_node('Expand', ['c', 'shape'], ['expanded']),
       helper.make_node('Mul', ['x', 'ones'], ['product']),
       helper.make_node('Concat', ['product', 'ones'], ['joined'], axis=0)],
      'kept', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [2, 3])],
      [helper.make_tensor_value_info('expanded', TensorProto.FLOAT, [2, 3]),
       helper.make_tensor_value_info('joined', TensorProto.FLOAT, [4, 3])],
      [numpy_helper.from_array(np.ones((1, 3), np.float32), 'c'),
       numpy_helper.from_array(np.array([2, 3], np.int64), 'shape'),
       numpy_helper.from_array(ones, 'ones')])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', ox.OPSET)])
  counts = onnx_graph.simplify(model)
  assert counts['expands_bypassed'] == 0 and counts['constants_cut'] == 0
  assert [n.op_type for n in model.graph.node] == ['Expand', 'Mul', 'Concat']
  assert {t.name: list(t.dims) for t in model.graph.initializer}['ones'] == [2, 3]


def test_simplify_cuts_only_where_another_input_keeps_the_shape():
  """A constant that alone gives an axis its size keeps it (the output shape must not change)."""
  pytest.importorskip('onnx', reason='the graph clean-up needs onnx (the [test] extra)')
  from onnx import TensorProto, helper, numpy_helper
  from yolact_jax.serving import onnx_graph
  graph = helper.make_graph(
      [helper.make_node('Add', ['x', 'c'], ['y'])], 'shape_kept',
      [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3])],
      [helper.make_tensor_value_info('y', TensorProto.FLOAT, [4, 3])],
      [numpy_helper.from_array(np.full((4, 3), 2, np.float32), 'c')])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', ox.OPSET)])
  onnx_graph.simplify(model)
  assert list(model.graph.initializer[0].dims) == [4, 1]
  pytest.importorskip('onnxruntime', reason='needs onnxruntime (the [test] extra)')
  import onnxruntime as ort
  session = ort.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
  np.testing.assert_array_equal(session.run(None, {'x': np.ones((1, 3), np.float32)})[0],
                                np.full((4, 3), 3, np.float32))
