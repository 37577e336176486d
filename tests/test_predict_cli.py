"""Tests of scripts/predict.py on the tiny preset with random weights: a folder with a corrupt
file, a video, a single image, COCO results JSON that pycocotools accepts, argument errors."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from scripts import predict as cli
from tests.reference_data import PROJECT_ROOT
from yolact_jax.config import get_config

# a random model scores every class near 1/5: let every prior through
DETECT_ALL = '--config.detect.nms_conf_thresh=0.0'


def random_bgr(seed, h, w):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def tiny_gt(images):
  """A minimal COCO ground truth for (id, h, w) images with the synthetic classes (ids 1..4)."""
  gt = COCO()
  gt.dataset = {
      'images': [{'id': i, 'height': h, 'width': w, 'file_name': f'{i}.png'}
                 for i, h, w in images],
      'categories': [{'id': c + 1, 'name': n} for c, n in enumerate(
          get_config('yolact_tiny').dataset.class_names)],
      'annotations': [{'id': k + 1, 'image_id': i, 'category_id': 1, 'iscrowd': 0,
                       'bbox': [2, 3, 10, 12], 'area': 120,
                       'segmentation': [[2, 3, 12, 3, 12, 15, 2, 15]]}
                      for k, (i, _, _) in enumerate(images)],
  }
  gt.createIndex()
  return gt


def check_coco_json(path, images):
  data = json.loads(path.read_text())
  assert set(data) == {'bbox', 'segm'} and len(data['bbox']) == len(data['segm']) > 0
  for record in data['bbox']:
    assert set(record) == {'image_id', 'category_id', 'bbox', 'score'}
    assert record['category_id'] in (1, 2, 3, 4) and len(record['bbox']) == 4
    assert record['bbox'][2] * record['bbox'][3] > 0
  for record in data['segm']:
    assert isinstance(record['segmentation']['counts'], str)
  gt = tiny_gt(images)
  assert {r['image_id'] for r in data['bbox']} == {i for i, _, _ in images}
  for kind, records in (('bbox', data['bbox']), ('segm', data['segm'])):
    evaluator = COCOeval(gt, gt.loadRes(records), kind)
    evaluator.evaluate()
    evaluator.accumulate()
  return data


def test_folder_with_a_corrupt_file(weights_dir, tmp_path, capsys):
  src = tmp_path / 'images'
  src.mkdir()
  cv2.imwrite(str(src / '000000000007.png'), random_bgr(0, 40, 50))
  cv2.imwrite(str(src / 'COCO_val2014_000000000009.jpg'), random_bgr(1, 70, 33))
  (src / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 definitely not a jpeg')
  (src / 'notes.txt').write_text('not an image, ignored')
  out = tmp_path / 'out'
  status = cli.main([str(src), '--config', 'yolact_tiny', '--weights', str(weights_dir),
                     '--output', str(out), '--coco_json', str(out / 'results.json'),
                     '--batch', '2', '--top_k', '3', '--no_progress', DETECT_ALL])
  captured = capsys.readouterr()
  assert status == 0
  assert 'broken.jpg' in captured.err and 'skipping' in captured.err
  assert sorted(p.name for p in out.iterdir()) == [
      '000000000007.png', 'COCO_val2014_000000000009.jpg', 'results.json']
  for name, (h, w) in (('000000000007.png', (40, 50)),
                       ('COCO_val2014_000000000009.jpg', (70, 33))):
    overlay = cv2.imread(str(out / name))
    assert overlay is not None and overlay.shape == (h, w, 3)
  rendered = cv2.imread(str(out / '000000000007.png'))
  assert np.any(rendered != random_bgr(0, 40, 50))  # something was drawn
  data = check_coco_json(out / 'results.json', [(7, 40, 50), (9, 70, 33)])
  per_image = [sum(r['image_id'] == i for r in data['segm']) for i in (7, 9)]
  assert all(0 < n <= get_config('yolact_tiny').detect.max_num_detections for n in per_image)


def test_video_in_batches(weights_dir, tmp_path, capsys):
  src = tmp_path / 'clip.avi'
  writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*'MJPG'), 10, (64, 48))
  for i in range(5):
    writer.write(random_bgr(i, 48, 64))
  writer.release()
  out = tmp_path / 'result.avi'
  status = cli.main([str(src), '--config', 'yolact_tiny', '--weights', str(weights_dir),
                     '--output', str(out), '--coco_json', str(tmp_path / 'video.json'),
                     '--batch', '2', '--nms', 'cross_class', '--no_progress', DETECT_ALL])
  assert status == 0 and '5 frames' in capsys.readouterr().out
  capture = cv2.VideoCapture(str(out))
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(frame)
  capture.release()
  assert len(frames) == 5 and all(f.shape == (48, 64, 3) for f in frames)
  check_coco_json(tmp_path / 'video.json', [(i, 48, 64) for i in range(5)])


def test_single_image_to_a_named_file(weights_dir, tmp_path):
  src = tmp_path / 'photo.png'
  gray = np.random.default_rng(3).integers(0, 256, (30, 20), dtype=np.uint8)
  cv2.imwrite(str(src), gray)  # a grayscale file is read as 3-channel BGR
  out = tmp_path / 'deep' / 'overlay.png'
  status = cli.main([str(src), '--config', 'configs/yolact_tiny.py', '--weights',
                     str(weights_dir), '--output', str(out), '--no_progress', DETECT_ALL,
                     '--score_threshold', '0.99'])
  assert status == 0
  overlay = cv2.imread(str(out))
  # nothing scores > 0.99 on a random model: the overlay is the image itself
  np.testing.assert_array_equal(overlay, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))


def test_argument_errors(weights_dir, tmp_path, capsys):
  assert cli.main([str(tmp_path / 'missing.png'), '--config', 'yolact_tiny', '--weights',
                   str(weights_dir)]) == 1
  assert 'does not exist' in capsys.readouterr().err
  assert cli.main([str(tmp_path), '--config', 'yolact_tiny', '--weights', str(weights_dir),
                   '--config.detect.nms_thresh_typo=0.3']) == 1
  assert 'nms_thresh_typo' in capsys.readouterr().err
  assert cli.main([str(tmp_path), '--config', 'yolact_tiny', '--weights',
                   str(tmp_path / 'nowhere')]) == 1
  assert 'not found' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main([str(tmp_path), '--config', 'yolact_tiny', '--weights', 'w', '--bogus'])


def test_coco_image_ids():
  assert cli.coco_image_id(cli.pathlib.Path('000000397133.jpg'), 4) == 397133
  assert cli.coco_image_id(cli.pathlib.Path('COCO_val2014_000000000042.jpg'), 4) == 42
  assert cli.coco_image_id(cli.pathlib.Path('holiday photo.jpg'), 4) == 4


def test_runs_as_a_script():
  result = subprocess.run([sys.executable, 'scripts/predict.py', '--help'], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and '--coco_json' in result.stdout
