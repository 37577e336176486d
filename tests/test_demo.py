"""The main-job demo end to end on a tiny dataset and preset: every output exists and is valid."""

import json

import cv2
import jax
import numpy as np

from scripts import demo
from yolact_jax import train_step
from yolact_jax.checkpoint import io
from yolact_jax.config import get_config

OVERRIDES = ['--config.train.freeze_bn=False']


def test_demo_writes_every_output_and_reruns(tmp_path):
  out = tmp_path / 'out'
  args = ['--config', 'yolact_tiny', '--out', str(out), '--data_dir', str(tmp_path / 'data'),
          '--num_train', '6', '--num_val', '3', '--image_side', '64', '96', '--steps', '2',
          '--workers', '0', '--grid_images', '2', '--no_progress'] + OVERRIDES
  assert demo.main(args) == 0
  metrics = json.loads((out / 'metrics.json').read_text())
  for key in ('box_map', 'mask_map', 'bbox', 'segm', 'train', 'seconds', 'num_val_images'):
    assert key in metrics
  for name in ('AP', 'AP50', 'AP75', 'AR100'):
    assert name in metrics['bbox'] and name in metrics['segm']
  assert metrics['train']['step'] == 2 and metrics['num_val_images'] == 3
  curve = cv2.imread(str(out / 'loss_curve.png'))
  grid = cv2.imread(str(out / 'predictions.png'))
  assert curve is not None and curve.shape[2] == 3 and curve.shape[0] > 100
  # two val images: ground truth and prediction each in an equal 256 px cell, 4 px apart
  assert grid is not None and grid.shape[1] == 4 + 4 * (256 + 4) and grid.shape[0] > 256
  cfg = get_config('yolact_tiny', [o[len('--config.'):] for o in OVERRIDES])
  variables = io.load_weights(out / 'run', cfg)  # the checkpoint restores
  assert jax.tree_util.tree_structure(variables['params']) is not None
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(variables['params']))
  record = json.loads((out / 'run' / 'data.json').read_text())  # evaluate's default dataset
  assert record['kind'] == 'synthetic' and record['data_dir'] == str(tmp_path / 'data')
  assert record['synthetic_val'] == 3
  # a second run reuses the dataset and the finished training
  mtime = (tmp_path / 'data' / 'manifest.json').stat().st_mtime
  assert demo.main(args) == 0
  assert (tmp_path / 'data' / 'manifest.json').stat().st_mtime == mtime
  assert json.loads((out / 'metrics.json').read_text())['train']['step'] == 2


def test_stretch_schedule_scales_max_iter_and_steps():
  cfg = train_step.stretch_schedule(get_config('yolact_cpu'), 12000)
  assert cfg.train.max_iter == 12000 and cfg.train.lr_steps == (9200, 11200)
  assert cfg.train.lr == get_config('yolact_cpu').train.lr
