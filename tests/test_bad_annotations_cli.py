"""Bad annotations through the real command line (``python -m yolact_jax train``, a subprocess
with a time and a memory limit, so that a regression fails instead of eating the machine):
corrupt polygons are dropped with a warning naming the annotation, sub-pixel boxes are kept
with a warning naming the option that drops them, duplicate ids are one error line."""

from __future__ import annotations

import pytest

from tests.cli_run import run_cli
from tests.test_data_common import noise_image, rect_polygon, write_coco
from yolact_jax.config import SYNTHETIC_CLASSES

MEMORY_LIMIT = 4 << 30  # bytes of address space; NaN / 1e9 polygons used to need ~17 GB
CATEGORIES = [{'id': i + 1, 'name': name} for i, name in enumerate(SYNTHETIC_CLASSES)]


# ``python -m yolact_jax ARGS`` under an address-space limit, set by the child itself: a
# preexec_fn would fork this (multithreaded, JAX-importing) test process.
_LIMITED_CLI = ('import resource, runpy, sys; '
                'limit = int(sys.argv.pop(1)); '
                'resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); '
                "runpy.run_module('yolact_jax', run_name='__main__', alter_sys=True)")


def _train(ann_file, image_dir, cwd, timeout=600):
  """``yolact_jax train`` on the yolact_tiny preset (64 px, the synthetic class names) for two
  steps; returns the CompletedProcess."""
  return run_cli(['train', '--config', 'yolact_tiny', '--data', 'coco', '--ann_file', ann_file,
                  '--image_dir', image_dir, '--workdir', cwd / 'run', '--steps', '2',
                  '--no_eval', '--no_progress', '--from_scratch'], cwd, timeout=timeout,
                 prefix=('-c', _LIMITED_CLI, str(MEMORY_LIMIT)))


def _image(image_id, file_name):
  return {'id': image_id, 'file_name': file_name, 'height': 64, 'width': 64,
          'pixels': noise_image(64, 64, image_id)}


def _ann(ann_id, image_id, box, segmentation=None):
  x, y, w, h = box
  return {'id': ann_id, 'image_id': image_id, 'category_id': 1 + ann_id % 4, 'iscrowd': 0,
          'bbox': list(box),
          'segmentation': segmentation or [rect_polygon(x, y, x + max(w, 1), y + max(h, 1))]}


def _clean_images_and_annotations():
  images = [_image(i, f'{i}.png') for i in (1, 2, 3, 4)]
  return images, [_ann(10 * i, i, (8, 8, 30, 30)) for i in (1, 2, 3, 4)]


def test_corrupt_polygons_are_dropped_and_sub_pixel_boxes_kept_with_warnings(tmp_path):
  images, anns = _clean_images_and_annotations()
  anns += [
      _ann(101, 1, (40, 40, 10, 10), [[40, 40, float('nan'), 40, 50, 50]]),
      _ann(102, 2, (40, 40, 10, 10), [[40, 40, 1e9, 40, 50, 50]]),
      _ann(103, 3, (40, 40, 0.5, 0.4)),
  ]
  ann_file, image_dir = write_coco(tmp_path / 'data', images, anns, CATEGORIES)
  result = _train(ann_file, image_dir, tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()

  def warning_about(ann_id):
    [line] = [line for line in lines if f', annotation {ann_id}: ' in line]
    assert line.startswith('WARNING ') and f'{ann_file}, image ' in line
    return line

  assert warning_about(101).endswith(
      'corrupt segmentation: polygon part 0 point 1: x = nan is not finite: annotation dropped')
  assert 'x = 1e+09 is outside [-64, 128]' in warning_about(102)
  assert warning_about(102).endswith(': annotation dropped')
  assert warning_about(103).endswith(
      'image 3, annotation 103: box 0.5x0.4 px is under one pixel: kept, as the original\'s '
      'discard rule keeps it (augment.discard_box_width/height is compared in pixels); such '
      'boxes can make the mask loss explode: --config.augment.fix_discard_box_units=True drops '
      'boxes under augment.discard_box_width/height (4/550) of the training image')
  summary = (f'{ann_file}: 2 annotations dropped (2 corrupt segmentations), 1 box under one '
             'pixel kept')
  assert [line for line in lines if line.endswith(summary)] == [
      f'WARNING yolact_jax.data.coco: {summary}']
  assert '"step": 2' in result.stdout


@pytest.mark.parametrize('duplicate,message', [
    ('image', "image id 2 is used twice (file names '2.png' and 'again.png'): image ids must be "
              'unique'),
    ('annotation', 'annotation id 30 is used twice (on images 3 and 4): annotation ids must be '
                   'unique'),
])
def test_duplicate_ids_are_one_error_line(tmp_path, duplicate, message):
  images, anns = _clean_images_and_annotations()
  if duplicate == 'image':
    images.append(_image(2, 'again.png'))
  else:
    anns.append(_ann(30, 4, (1, 1, 20, 20)))
  ann_file, image_dir = write_coco(tmp_path / 'data', images, anns, CATEGORIES)
  result = _train(ann_file, image_dir, tmp_path, timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  assert errors == [f'error: {ann_file}: {message}']
