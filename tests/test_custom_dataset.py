"""Custom COCO-format datasets: the classes are checked against the config before the first
step, and a label outside the config's classes never reaches the loss."""

import json
import logging

import numpy as np
import pytest

from yolact_jax import trainer
from yolact_jax.coco_classes import COCO_CLASSES
from yolact_jax.config import SYNTHETIC_CLASSES, get_config
from yolact_jax.data import categories, coco, loader, synthetic

CFG = get_config('yolact_tiny', ['train.freeze_bn=False'])


@pytest.fixture(scope='module')
def hexagon_files(tmp_path_factory):
  """The synthetic set with a fifth category, 'hexagon', on a third of the annotations."""
  root = tmp_path_factory.mktemp('hexagon')
  ann_file, image_dir = synthetic.generate_synthetic_coco(
      root, num_train=8, num_val=0, image_hw=(72, 80), seed=3)['train']
  data = json.loads(open(ann_file).read())
  data['categories'].append({'id': 9, 'name': 'hexagon', 'supercategory': 'shape'})
  for ann in data['annotations'][::3]:
    ann['category_id'] = 9
  hexagon_ann = root / 'instances_hexagon.json'
  hexagon_ann.write_text(json.dumps(data))
  return str(hexagon_ann), image_dir


def test_a_fifth_category_is_an_error_before_the_first_step(hexagon_files, tmp_path):
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(*hexagon_files))
  steps = []
  with pytest.raises(categories.ClassMismatchError) as error:
    trainer.train(CFG, tmp_path / 'run', source, trainer.TrainOptions(
        num_steps=2, progress=False, on_step=lambda step, m: steps.append(step)))
  message = str(error.value)
  assert steps == [] and not (tmp_path / 'run').exists()
  assert 'instances_hexagon.json' in message and 'has 5 classes' in message
  assert "not in the config: hexagon" in message and "'yolact_tiny' has 4" in message
  assert ('--config.dataset.class_names="(\'circle\', \'square\', \'triangle\', \'star\', '
          '\'hexagon\')"') in message
  assert '\n' not in message
  # the override it suggests is accepted and makes the check pass
  override = message.split('pass --config.')[1].split(' (a new run')[0]
  fixed = get_config('yolact_tiny', [override.replace('"', '')])
  assert categories.check_source(fixed, source) is fixed


def test_the_loader_rejects_a_label_outside_the_config(hexagon_files):
  dataset = coco.CocoDataset(*hexagon_files)
  source = loader.InMemoryRecordSource(dataset.records)  # classes unknown: no early check
  index = next(i for i, r in enumerate(dataset.records) if (r['category_index'] == 4).any())
  options = trainer.pipeline_options(CFG)
  with pytest.raises(loader.LabelError, match=r'\.jpg \(image \d+\): class index 4 but the '
                                              r'config has 4 classes'):
    loader.make_train_example(source, index, np.random.default_rng(0), options)


def test_matching_classes_pass_unchanged():
  assert categories.resolve_class_names(CFG, SYNTHETIC_CLASSES) is CFG
  assert categories.resolve_class_names(CFG, ('Circle ', 'square', 'triangle', 'star')) is CFG
  assert categories.resolve_class_names(CFG, None) is CFG  # unknown: not checked here


def test_the_coco_default_takes_the_dataset_classes_with_a_notice(caplog):
  base = get_config('yolact_base')
  assert base.dataset.class_names == tuple(COCO_CLASSES)
  assert categories.resolve_class_names(base, COCO_CLASSES) is base  # COCO itself
  with caplog.at_level(logging.WARNING):
    cfg = categories.resolve_class_names(base, ('cat', 'dog'), 'the training set x.json')
  assert cfg.dataset.class_names == ('cat', 'dog') and cfg.num_classes == 3
  assert 'x.json is not COCO' in caplog.text and "('cat', 'dog')" in caplog.text


def test_the_same_classes_in_another_order_are_an_error():
  with pytest.raises(categories.ClassMismatchError, match='another order'):
    categories.resolve_class_names(CFG, ('square', 'circle', 'triangle', 'star'))


def test_train_cli_stops_on_the_mismatch(hexagon_files, tmp_path, capsys):
  """Through the command line: one error line naming the extra class, exit status 1, nothing
  trained and no run directory."""
  import train as train_cli
  ann_file, image_dir = hexagon_files
  status = train_cli.main(['--config', 'yolact_tiny', '--workdir', str(tmp_path / 'run'),
                           '--data', 'coco', '--ann_file', ann_file, '--image_dir', image_dir,
                           '--steps', '2', '--no_eval', '--no_progress'])
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 1
  assert err[-1].startswith('error: ') and 'hexagon' in err[-1], err
  assert 'Traceback' not in '\n'.join(err)
  assert not (tmp_path / 'run').exists()


def test_a_run_without_class_names_trains_on_the_dataset_classes(tmp_path):
  root = tmp_path / 'data'
  paths = synthetic.generate_synthetic_coco(root, num_train=4, num_val=0, image_hw=(72, 80))
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(*paths['train']))
  unnamed = get_config('yolact_tiny', ['train.freeze_bn=False',
                                       f'dataset.class_names={tuple(COCO_CLASSES)!r}'])
  summary = trainer.train(unnamed, tmp_path / 'run', source, trainer.TrainOptions(
      num_steps=1, progress=False, tensorboard=False))
  assert summary['step'] == 1
  saved = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert tuple(saved['dataset']['class_names']) == SYNTHETIC_CLASSES
