"""Tests of evaluate.py on the tiny preset with random weights and a tiny synthetic split: the
three JSON files, --results_only, --benchmark, and bad input (exit status 1, message on stderr).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.reference_data import PROJECT_ROOT
from yolact_jax import evaluation as ev
from yolact_jax.data import synthetic

pytestmark = pytest.mark.filterwarnings(
    'ignore:__array__ implementation:DeprecationWarning')  # pycocotools on numpy 2

DETECT_ALL = '--config.detect.nms_conf_thresh=0.0'  # random weights: let every prior through
SYNTHETIC = ('--data', 'synthetic', '--data_dir')  # + the folder
SUMMARY_TYPE_KEYS = set(ev.METRIC_NAMES) | {'per_class_AP', 'num_detections'}


def load_cli():
  spec = importlib.util.spec_from_file_location('evaluate_cli', PROJECT_ROOT / 'evaluate.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


cli = load_cli()


@pytest.fixture(scope='module')
def synthetic_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('synthetic')
  synthetic.generate_synthetic_coco(root, num_train=0, num_val=4, seed=2, side_range=(64, 112))
  return root


@pytest.fixture(scope='module')
def evaluated(weights_dir, synthetic_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp('eval')
  status = cli.main(['--config', 'yolact_tiny', '--weights', str(weights_dir), '--data',
                     'synthetic', '--data_dir', str(synthetic_dir), '--batch_size', '3',
                     '--output_dir', str(out),
                     '--no_progress', DETECT_ALL])
  assert status == 0
  return out


def run_cli(capsys, *argv):
  status = cli.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def test_writes_results_in_the_original_format_and_a_summary(evaluated):
  assert sorted(p.name for p in evaluated.iterdir()) == [
      'bbox_detections.json', 'mask_detections.json', 'summary.json']
  bbox = json.loads((evaluated / 'bbox_detections.json').read_text())
  segm = json.loads((evaluated / 'mask_detections.json').read_text())
  assert len(bbox) == len(segm) > 0
  assert all(set(r) == {'image_id', 'category_id', 'bbox', 'score'} for r in bbox)
  assert all(set(r) == {'image_id', 'category_id', 'segmentation', 'score'} for r in segm)
  assert {r['category_id'] for r in bbox} <= {1, 3, 5, 7}  # the dataset's own category ids
  assert all(isinstance(r['segmentation']['counts'], str) for r in segm)

  summary = json.loads((evaluated / 'summary.json').read_text())
  assert summary['config'] == 'yolact_tiny' and summary['num_images'] == 4
  assert summary['weights'].endswith('tiny') and summary['nms'] == 'fast'
  for iou_type in ('bbox', 'segm'):
    assert set(summary[iou_type]) == SUMMARY_TYPE_KEYS
    assert set(summary[iou_type]['per_class_AP']) == {'circle', 'square', 'triangle', 'star'}
    assert all(-1 <= summary[iou_type][n] <= 1 for n in ev.METRIC_NAMES)
  assert summary['bbox']['num_detections'] == len(bbox)
  assert summary['box_map'] == summary['bbox']['AP']
  assert summary['mask_map'] == summary['segm']['AP']
  assert summary['skipped_images'] == []


def test_results_only_scores_the_written_files_the_same(evaluated, synthetic_dir, tmp_path,
                                                        capsys):
  expected = json.loads((evaluated / 'summary.json').read_text())
  files = f'{evaluated / "bbox_detections.json"},{evaluated / "mask_detections.json"}'
  status, out, _ = run_cli(capsys, '--config', 'yolact_tiny', *SYNTHETIC, synthetic_dir,
                           '--results_only', files, '--output_dir', tmp_path)
  assert status == 0 and 'box mAP' in out and 'circle' in out
  summary = json.loads((tmp_path / 'summary.json').read_text())
  for iou_type in ('bbox', 'segm'):
    assert summary[iou_type] == expected[iou_type]
  assert summary['weights'] is None

  combined = tmp_path / 'predict.json'  # scripts/predict.py's {"bbox", "segm"} file
  combined.write_text(json.dumps({
      'bbox': json.loads((evaluated / 'bbox_detections.json').read_text()),
      'segm': json.loads((evaluated / 'mask_detections.json').read_text())}))
  status, _, _ = run_cli(capsys, '--config', 'yolact_tiny', *SYNTHETIC, synthetic_dir,
                         '--mask_results', combined, '--output_dir', tmp_path / 'mask')
  assert status == 0
  summary = json.loads((tmp_path / 'mask' / 'summary.json').read_text())
  assert 'bbox' not in summary and summary['segm'] == expected['segm']


def test_benchmark_writes_timings(weights_dir, synthetic_dir, tmp_path, capsys):
  status, out, _ = run_cli(capsys, '--config', 'yolact_tiny', '--weights', weights_dir,
                           *SYNTHETIC, synthetic_dir, '--benchmark', '--benchmark_images', 5,
                           '--benchmark_repeats', 2, '--batch_size', 2, '--nms', 'cross_class',
                           '--output_dir', tmp_path, DETECT_ALL)
  assert status == 0 and 'Average:' in out and 'fps' in out
  report = json.loads((tmp_path / 'benchmark.json').read_text())
  assert report['num_devices'] == 1  # the device count is reported
  assert report['batch_size'] == 2 and report['num_images'] == 6 and report['nms'] == 'cross_class'
  for key in ('fps', 'ms_per_image', 'compile_s', 'ms_per_batch', 'canvas_hw', 'device'):
    assert key in report
  assert set(report['stages']) == {'network', 'detect', 'postprocess', 'host_copy'}
  assert all({'median_ms', 'ms_per_image', 'compile_s'} <= set(v)
             for v in report['stages'].values())
  assert not (tmp_path / 'summary.json').exists()  # no mAP in benchmark mode


# ---------------------------------------------------------------------------------------------
# Bad input


def test_unknown_category_id_in_a_results_file(evaluated, synthetic_dir, tmp_path, capsys):
  records = json.loads((evaluated / 'bbox_detections.json').read_text())
  records[0]['category_id'] = 2
  bad = tmp_path / 'bad.json'
  bad.write_text(json.dumps(records))
  status, _, err = run_cli(capsys, '--config', 'yolact_tiny', *SYNTHETIC, synthetic_dir,
                           '--bbox_results', bad)
  assert status == 1
  assert 'unknown category id(s) [2]' in err and '[1, 3, 5, 7]' in err and 'bad.json' in err


def test_empty_results_list_scores_zero_with_a_warning(synthetic_dir, tmp_path, capsys):
  empty = tmp_path / 'empty.json'
  empty.write_text('[]')
  with pytest.warns(UserWarning, match='no bbox detections to evaluate'):
    status, out, _ = run_cli(capsys, '--config', 'yolact_tiny', *SYNTHETIC, synthetic_dir,
                             '--bbox_results', empty, '--output_dir', tmp_path)
  assert status == 0 and 'box mAP 0.00' in out
  assert json.loads((tmp_path / 'summary.json').read_text())['bbox']['AP'] == 0.0


def test_missing_paths_are_named(weights_dir, synthetic_dir, tmp_path, capsys):
  ann_file, image_dir = synthetic.dataset_paths(synthetic_dir, 'val')
  cases = [
      (['--weights', weights_dir, '--ann_file', tmp_path / 'nope.json', '--image_dir', image_dir],
       'annotation file not found'),
      (['--weights', weights_dir, '--ann_file', ann_file, '--image_dir', tmp_path / 'nope'],
       'image folder not found'),
      (['--weights', weights_dir, '--data', 'tfds', '--data_dir', tmp_path / 'nope'],
       'TFDS dataset directory not found'),
      (['--weights', tmp_path / 'nope', *SYNTHETIC, synthetic_dir], 'weights not found'),
      (['--results_only', tmp_path / 'nope.json', *SYNTHETIC, synthetic_dir],
       'results file not found'),
  ]
  for argv, message in cases:
    status, _, err = run_cli(capsys, '--config', 'yolact_tiny', *argv)
    assert status == 1, argv
    assert message in err and 'nope' in err, err


def test_other_usage_errors(weights_dir, synthetic_dir, capsys):
  status, _, err = run_cli(capsys, '--config', 'yolact_base', '--weights', weights_dir,
                           *SYNTHETIC, synthetic_dir)
  assert status == 1 and 'predicts 80 classes but the dataset' in err
  status, _, err = run_cli(capsys, '--config', 'yolact_tiny', '--weights', weights_dir,
                           *SYNTHETIC, synthetic_dir, '--config.detect.nms_thresh_typo=1')
  assert status == 1 and 'nms_thresh' in err
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['--config', 'yolact_tiny'])
  assert exit_info.value.code == 2
  assert '--weights is required' in capsys.readouterr().err


def test_exit_status_of_the_script(tmp_path):
  result = subprocess.run(
      [sys.executable, 'evaluate.py', '--config', 'yolact_tiny', '--weights',
       str(tmp_path / 'missing_weights'), *SYNTHETIC, str(tmp_path / 'data')],
      cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert 'error: weights not found' in result.stderr and 'missing_weights' in result.stderr
