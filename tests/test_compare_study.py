"""The training studies of ``yolact-jax compare`` (``--train_steps``, ``--train_run``): the
batches in both layouts, the drift measure, the verdicts and the reports; and, where a checkout
of the original is named by ``YOLACT_REPO``, both commands at tiny size against it."""

from __future__ import annotations

import json
import os
import pathlib

import cv2
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from yolact_jax.compare import study, study_report  # noqa: E402
from yolact_jax.config import get_config  # noqa: E402
from yolact_jax.data import augment, coco, loader, synthetic  # noqa: E402
from yolact_jax.trainer import BATCH_KEYS, pipeline_options  # noqa: E402


def test_samples_become_the_originals_collated_targets():
  masks = np.zeros((3, 8, 8), np.uint8)
  masks[0, 1:3, 1:4] = masks[1, 4:, 4:] = masks[2, :, :] = 1
  sample = augment.TransformedSample(
      image=np.zeros((8, 8, 3), np.float32), masks=masks,
      boxes=np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.9], [0, 0, 1, 1]], np.float32),
      labels=np.array([2, 0, -1], np.int32), num_crowds=1)
  gts, gt_masks, crowds = study.original_targets([sample, sample], torch, torch.device('cpu'))
  assert len(gts) == len(gt_masks) == 2 and crowds == [1, 1]
  expected = np.float32([[0.1, 0.2, 0.3, 0.4, 2], [0.5, 0.5, 0.9, 0.9, 0], [0, 0, 1, 1, -1]])
  np.testing.assert_array_equal(gts[0].numpy(), expected)
  assert gts[0].dtype == torch.float32 and gt_masks[0].dtype == torch.float32
  np.testing.assert_array_equal(gt_masks[1].numpy(), masks)


def test_study_batches_are_the_trainers_batches(tmp_path):
  """Both sides get exactly what the trainer would train on (the same loader stream), our side
  packed, the original's side with the full-size masks those packed masks come from."""
  paths = synthetic.generate_synthetic_coco(tmp_path, num_train=6, num_val=0, image_hw=(72, 80),
                                            seed=2)
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(*paths['train']))
  cfg = get_config('yolact_tiny')
  trainer_stream = iter(loader.make_train_loader(source, cfg.train.batch_size, 5,
                                                 pipeline_options(cfg)))
  batches = study.study_batches(cfg, source, seed=5)
  for _ in range(4):  # past an epoch of 6 images at batch 2
    expected, got = next(trainer_stream), next(batches)
    for key in BATCH_KEYS:
      np.testing.assert_array_equal(got.ours[key], expected[key], err_msg=key)
    np.testing.assert_array_equal(got.images, expected['image'])
    for row, sample in enumerate(got.samples):
      n = len(sample.labels)
      assert got.ours['valid'][row].sum() == n
      np.testing.assert_array_equal(got.ours['labels'][row, :n], sample.labels)
      assert sample.masks.shape == (n, cfg.max_size, cfg.max_size)


def test_drift_is_the_group_distance_over_how_far_the_reference_moved():
  start = {'backbone.a.weight': np.zeros(2), 'backbone.b.weight': np.zeros(1),
           'fpn.c.bias': np.ones(1), 'backbone.bn1.running_mean': np.zeros(2),
           'backbone.bn1.num_batches_tracked': np.zeros((), np.int64)}
  reference = {'backbone.a.weight': np.array([3.0, 0.0]), 'backbone.b.weight': np.array([4.0]),
               'fpn.c.bias': np.ones(1), 'backbone.bn1.running_mean': np.array([0.0, 2.0]),
               'backbone.bn1.num_batches_tracked': np.ones((), np.int64)}
  ours = {'backbone.a.weight': np.array([3.0, 0.5]), 'backbone.b.weight': np.array([4.0]),
          'fpn.c.bias': np.ones(1), 'backbone.bn1.running_mean': np.array([0.0, 1.0]),
          'backbone.bn1.num_batches_tracked': np.ones((), np.int64)}
  drift = study.relative_drift(ours, reference, start)
  assert drift == {'backbone': pytest.approx(0.5 / 5.0), 'fpn': None,  # fpn did not move
                   'bn_stats': pytest.approx(1.0 / 2.0)}
  assert study.group_of('prediction_layers.0.bbox_layer.weight') == 'prediction_layers'


def _steps_study(ours_drift: float, own_drift: float) -> dict:
  row = lambda step: {  # noqa: E731
      'step': step, 'num_positives': 4,
      **{side: {'B': 1.0, 'C': 2.0, 'total': 3.0, 'lr': 1e-3, 'finite': True}
         for side in ('ours', 'original', 'original_perturbed')},
      'drift': {'ours': {'backbone': ours_drift * step, 'fpn': None},
                'original_perturbed': {'backbone': own_drift * step, 'fpn': None}}}
  return {'freeze_bn': False, 'batch_size': 8, 'steps': [row(s) for s in range(1, 11)]}


def test_the_steps_verdict_compares_with_the_originals_own_drift():
  within = study_report.steps_verdict(_steps_study(0.03, 0.02))
  assert within['step'] == 10 and within['within'] and within['worst_group'] == 'backbone'
  assert within['worst_ratio'] == pytest.approx(1.5) and within['ratios']['fpn'] is None
  beyond = study_report.steps_verdict(_steps_study(0.1, 0.02))
  assert not beyond['within'] and beyond['worst_ratio'] == pytest.approx(5.0)
  floor = study_report.steps_verdict(_steps_study(1e-7, 1e-8))  # float32 rounding on both
  assert floor['within'] and floor['worst_ratio'] == 1.0


def test_the_run_verdict_puts_our_mean_in_the_originals_seed_spread():
  runs = [{'side': 'ours', 'box_map': 0.49, 'mask_map': 0.45, 'mask_ap50': 0.8},
          {'side': 'ours', 'box_map': 0.53, 'mask_map': 0.47, 'mask_ap50': 0.8},
          {'side': 'original', 'box_map': 0.48, 'mask_map': 0.40, 'mask_ap50': 0.79},
          {'side': 'original', 'box_map': 0.52, 'mask_map': 0.44, 'mask_ap50': 0.82}]
  verdict = study.whole_run_verdict(runs)
  box = verdict['box_map']
  assert box.pop('inside') is True and box.pop('consistent') is True  # 0.51 within 0.48..0.52
  # Welch: variances 0.0008 on both sides, two runs each: SE sqrt(0.0008), t = 0.01 / SE.
  assert box == pytest.approx({'ours_mean': 0.51, 'ours_min': 0.49, 'ours_max': 0.53,
                               'original_mean': 0.50, 'original_min': 0.48,
                               'original_max': 0.52, 'original_spread': 0.04,
                               't': 0.01 / np.sqrt(0.0008)})
  mask = verdict['mask_map']  # 0.46 against 0.40..0.44: above the range, yet t = 1.8
  assert not mask['inside'] and mask['t'] == pytest.approx(0.04 / np.sqrt(0.0005))
  assert mask['consistent'] is True and verdict['mask_ap50']['inside']
  assert verdict['mask_ap50']['t'] == pytest.approx(-0.005 / 0.015)  # ours' variance 0


def test_reports_and_pictures_are_written(tmp_path):
  settings = {'config': 'yolact_tiny', 'optimizer': 'sgd', 'data_seed': 0, 'weights_seed': 0,
              'threads': 2, 'num_val': 3, 'original_config': 'its own', 'command': 'yolact-jax'}
  steps = {'settings': settings, 'study': _steps_study(0.03, 0.02)}
  steps['verdict'] = study_report.steps_verdict(steps['study'])
  files = study_report.write(steps, tmp_path / 'steps.json', study_report.steps_markdown(steps),
                             study_report.steps_figure)
  text = files[1].read_text()
  assert '| 10 | 0.3 / 0.2 | - / - |' in text and 'within the 2x bar' in text
  losses = [{'step': s, 'total': 10.0 / s} for s in range(1, 6)]
  runs = [{'side': side, 'data_seed': seed, 'losses': losses, 'box_map': 0.5, 'mask_map': 0.4,
           'mask_ap50': 0.7} for side, seed in (('ours', 0), ('original', 0), ('ours', 1),
                                                ('original', 1))]
  run = {'settings': settings, 'study': {'iterations': 5, 'freeze_bn': True, 'batch_size': 2,
                                         'runs': runs, 'verdict': study.whole_run_verdict(runs)}}
  files += study_report.write(run, tmp_path / 'run.json', study_report.run_markdown(run),
                              study_report.run_figure)
  assert '| original | 1 | 50.0 | 40.0 | 70.0 |' in files[4].read_text()
  for path in (files[2], files[5]):
    picture = cv2.imread(str(path))
    assert picture is not None and picture.shape[0] > 300 and picture.shape[1] > 600
  assert json.loads(files[3].read_text())['study']['iterations'] == 5


# ------------------------------------------------------------------------ with the original

ORIGINAL = os.environ.get('YOLACT_REPO')
needs_original = pytest.mark.skipif(
    not ORIGINAL or not (pathlib.Path(ORIGINAL) / 'yolact.py').is_file(),
    reason='needs a checkout of dbolya/yolact named by YOLACT_REPO (it is not part of the project)')


@needs_original
def test_tiny_studies_against_the_original(tmp_path):
  from yolact_jax.cli import compare
  common = ['--yolact_repo', ORIGINAL, '--config', 'yolact_tiny', '--threads', '2',
            '--data_dir', str(tmp_path / 'data'), '--num_train', '8', '--num_val', '3']
  report = compare.main([*common, '--train_steps', '3', '--out', str(tmp_path / 's.json')])
  first = report['study']['steps'][0]
  for term in ('B', 'C', 'M', 'S', 'total'):
    assert first['ours'][term] == pytest.approx(first['original'][term], rel=1e-4), term
  assert report['verdict']['within'], report['verdict']
  report = compare.main([*common, '--train_run', '3', '--out', str(tmp_path / 'r.json')])
  sides = [(r['side'], r['data_seed']) for r in report['study']['runs']]
  assert sides == [(side, seed) for seed in (0, 1, 2) for side in ('ours', 'original')]
  assert (tmp_path / 'r.png').is_file() and (tmp_path / 's.md').is_file()
