"""Tests of the ONNX artefact (tiny preset): raw head outputs and detections as JAX's.

The CI tests run the shipped artefacts of ``tests/onnx_fixture.py`` (exporting needs jax2onnx,
which the test command cannot install) in onnxruntime against the live JAX program on the same
seeded weights. With jax2onnx installed (docs/serving.md), the last test also exports afresh.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

pytest.importorskip('onnxruntime', reason='ONNX tests need onnxruntime (the [test] extra)')

from tests import onnx_fixture as fx  # noqa: E402
from yolact_jax import predict as pr  # noqa: E402
from yolact_jax import serving  # noqa: E402
from yolact_jax.serving import onnx_export as ox  # noqa: E402


@pytest.fixture(scope='module')
def tiny():
  cfg, variables = fx.tiny()
  shipped = json.loads(fx.WEIGHTS_DIGEST.read_text())['sha256']
  assert fx.weights_digest(variables) == shipped, (
      'the seeded tiny weights differ from those the shipped ONNX artefacts hold: regenerate '
      'them with python -m tests.onnx_fixture')
  return cfg, variables


def images():
  """Three images of different sizes and channel counts (BGR, grayscale, BGRA)."""
  return [np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)
          for i, shape in enumerate([(37, 53, 3), (120, 61), (64, 100, 4)])]


def assert_same_detections(got, live):
  for a, b in zip(got, live, strict=True):
    assert len(a) == len(b) > 0 and a.image_size == b.image_size
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert (a.masks != b.masks).mean() < 1e-3


def test_network_head_outputs_match_jax(tiny, tmp_path):
  import onnxruntime as ort
  cfg, variables = tiny
  path = fx.unpack(fx.NETWORK, tmp_path)
  session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
  net_input = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  names = [o.name for o in session.get_outputs()]
  ours = dict(zip(names, session.run(None, {'net_input': net_input})))
  theirs = jax.device_get(pr.InferenceProgram(cfg).network(variables, net_input))
  assert sorted(ours) == sorted(ox.NETWORK_OUTPUTS)
  for key in ox.NETWORK_OUTPUTS:
    np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-4, err_msg=key)


def test_onnx_artefact_gives_the_live_detections(tiny, tmp_path):
  cfg, variables = tiny
  model = serving.load(fx.unpack(fx.PROGRAM, tmp_path))
  live = pr.Predictor(cfg, variables, max_batch=3, canvas_hw=fx.CANVAS)
  assert_same_detections(model(images(), channel_order='bgr'),
                         live(images(), channel_order='bgr'))
  with pytest.raises(serving.InputError, match='images: expected dtype uint8'):
    model.run(np.zeros((3, 128, 128, 3), np.float32), np.ones((3, 2), np.int32))


@pytest.mark.parametrize('nms', ['fast', 'standard'])
def test_fresh_export_gives_the_live_detections(tiny, tmp_path, nms):
  """Also with the standard NMS, whose ONNX ``Loop`` body the graph clean-up must leave whole."""
  pytest.importorskip('jax2onnx', reason='ONNX export needs jax2onnx (docs/serving.md: installed '
                      'with --no-deps, its orbax pin conflicts with the project\'s)')
  import dataclasses
  from yolact_jax.serving import export as ex
  cfg, variables = tiny
  path = tmp_path / 'tiny.onnx'
  meta = ox.export_onnx(ex.make_spec(cfg, nms=nms, canvas_hw=fx.CANVAS, batch=3), variables, path)
  assert meta['kind'] == 'onnx' and meta['input']['images']['shape'] == [3, 128, 128, 3]
  cfg = dataclasses.replace(cfg, detect=dataclasses.replace(cfg.detect, nms=nms))
  live = pr.Predictor(cfg, variables, max_batch=3, canvas_hw=fx.CANVAS)
  assert_same_detections(serving.load(path)(images(), channel_order='bgr'),
                         live(images(), channel_order='bgr'))


def test_session_options_use_every_usable_cpu():
  import os
  from yolact_jax.serving import onnx_runtime
  options = onnx_runtime.session_options()
  assert options.intra_op_num_threads == len(os.sched_getaffinity(0))
  assert onnx_runtime.session_options(threads=1).intra_op_num_threads == 1
  spin = 'session.intra_op.allow_spinning'
  assert options.get_session_config_entry(spin) == '1'  # ONNX Runtime's default, kept
  assert onnx_runtime.session_options(spinning=False).get_session_config_entry(spin) == '0'
