"""Reference parity: our Flax network on the original's weights and input reproduces its outputs.

The full 550 px yolact_resnet50 runs once per module (the only full-size model in the suite).
Tolerances are the ones of ../shared/reference/README.md.
"""

import jax
import numpy as np
import pytest

from yolact_jax.checkpoint import convert
from yolact_jax.config import get_config
from yolact_jax.model.yolact import Yolact
from tests.reference_data import RESNET50_DIR, require_reference


@pytest.fixture(scope='module')
def reference_run():
  require_reference('yolact_resnet50/weights.pth')
  cfg = get_config('yolact_resnet50')
  variables = convert.load_pth_weights(RESNET50_DIR / 'weights.pth', cfg)
  images = np.load(RESNET50_DIR / 'input.npy').transpose(0, 2, 3, 1)  # NCHW -> NHWC
  model = Yolact(cfg.model, num_classes=cfg.num_classes)

  def run(variables, images):
    return model.apply(variables, images, return_segm=True, mutable=['intermediates'],
                       capture_intermediates=lambda mdl, _: mdl.name in ('backbone', 'fpn'))

  out, state = jax.device_get(jax.jit(run)(variables, images))
  return out, state['intermediates']


@pytest.mark.parametrize('ours,theirs', [
    ('loc', 'loc'), ('conf', 'conf_logits'), ('coefs', 'mask'), ('proto', 'proto'),
    ('segm', 'segm')])
def test_head_outputs_match_reference(reference_run, ours, theirs):
  out, _ = reference_run
  expected = np.load(RESNET50_DIR / 'raw.npz')[theirs]
  if theirs == 'segm':
    expected = expected.transpose(0, 2, 3, 1)  # [B, 80, 69, 69] -> NHWC
  assert out[ours].shape == expected.shape
  diff = np.abs(out[ours] - expected)
  assert diff.max() <= 2e-3, f'{ours}: max abs diff {diff.max()}'
  assert diff.mean() <= 5e-5, f'{ours}: mean abs diff {diff.mean()}'


def _assert_fp16_close(ours, reference_fp16, name):
  expected = reference_fp16.astype(np.float32).transpose(0, 2, 3, 1)
  assert ours.shape == expected.shape, name
  # one float16 ulp of the stored value plus float32 accumulation noise
  ulp = np.spacing(np.abs(reference_fp16.transpose(0, 2, 3, 1))).astype(np.float32)
  excess = np.abs(ours - expected) - (ulp + 1e-3)
  assert excess.max() <= 0, f'{name}: worst excess over fp16 tolerance {excess.max()}'


def test_backbone_and_fpn_stages_match_reference(reference_run):
  _, inter = reference_run
  feats = np.load(RESNET50_DIR / 'feats_fp16.npz')
  stages = inter['backbone']['__call__'][0]
  for i in (1, 2, 3):  # C3, C4, C5
    _assert_fp16_close(np.asarray(stages[i]), feats[f'backbone_{i}'], f'backbone_{i}')
  pyramid = inter['fpn']['__call__'][0]
  for i in range(5):  # P3 .. P7
    _assert_fp16_close(np.asarray(pyramid[i]), feats[f'fpn_{i}'], f'fpn_{i}')
