"""Tests of the ONNX artefact (tiny preset): raw head outputs and detections as JAX's.

Needs jax2onnx, onnx and onnxruntime (README, Serving); skipped without them.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

pytest.importorskip('onnxruntime', reason='ONNX tests need onnxruntime (the [onnx] extra)')
pytest.importorskip('onnx', reason='ONNX tests need onnx (the [onnx] extra)')
pytest.importorskip('jax2onnx', reason='ONNX export needs jax2onnx (README, Serving: installed '
                    'with --no-deps, its orbax pin conflicts with the project\'s)')

from yolact_jax import predict as pr  # noqa: E402
from yolact_jax import serving  # noqa: E402
from yolact_jax.config import get_config  # noqa: E402
from yolact_jax.model.variables import init_variables  # noqa: E402
from yolact_jax.serving import export as ex  # noqa: E402
from yolact_jax.serving import onnx_export as ox  # noqa: E402

CANVAS = (128, 128)


@pytest.fixture(scope='module')
def tiny():
  cfg = get_config('yolact_tiny', ['detect.nms_conf_thresh=0.02'])
  return cfg, init_variables(cfg, seed=0)


def test_network_head_outputs_match_jax(tiny):
  cfg, variables = tiny
  spec = ex.make_spec(cfg, batch=2)
  net_input = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
  ours = ox.numpy_outputs(ox.network_model(spec, variables), {'net_input': net_input})
  theirs = jax.device_get(pr.InferenceProgram(cfg).network(variables, net_input))
  for key in ox.NETWORK_OUTPUTS:
    np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-4, err_msg=key)


def test_onnx_artefact_gives_the_live_detections(tiny, tmp_path):
  cfg, variables = tiny
  path = tmp_path / 'tiny.onnx'
  meta = ox.export_onnx(ex.make_spec(cfg, canvas_hw=CANVAS, batch=3), variables, path)
  assert meta['kind'] == 'onnx' and meta['input']['images']['shape'] == [3, 128, 128, 3]
  images = [np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)
            for i, shape in enumerate([(37, 53, 3), (120, 61), (64, 100, 4)])]
  model = serving.load(path)
  got = model(images, channel_order='bgr')
  live = pr.Predictor(cfg, variables, max_batch=3, canvas_hw=CANVAS)(images, channel_order='bgr')
  for a, b in zip(got, live):
    assert len(a) == len(b) > 0 and a.image_size == b.image_size
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert (a.masks != b.masks).mean() < 1e-3
  with pytest.raises(serving.InputError, match='images: expected dtype uint8'):
    model.run(np.zeros((3, 128, 128, 3), np.float32), np.ones((3, 2), np.int32))
