"""One way to name the data in every command: the dataset flags of ``yolact-jax train`` and
``evaluate`` (cli/common.add_data_args), their older spellings, the run directory's record of
what a run trained on (data.json), and a tiny run evaluated through the real command line with
the training flags and with none."""

from __future__ import annotations

import json
import sys

import pytest

from tests.cli_run import run_cli
from yolact_jax.cli import common, evaluate, train
from yolact_jax.config import get_config

TINY, BASE = get_config('yolact_tiny'), get_config('yolact_base')
DATA_FLAGS = ('--data', '--data_dir', '--ann_file', '--image_dir', '--synthetic_train',
              '--synthetic_val')
TIMEOUT = 600  # seconds per command: a tiny train or evaluate compiles in about 20-40 s


def for_train(*argv, cfg=TINY, record=None) -> common.DataSelection:
  args, _ = train.parse_args(list(argv))
  return common.resolve_data(args, cfg, 'train', record)


def for_evaluate(*argv, cfg=TINY, record=None) -> common.DataSelection:
  args, _ = evaluate.parse_args(['--weights', 'w', *argv])
  return common.resolve_data(args, cfg, common.chosen_split(args), record)


# ---------------------------------------------------------------------------------------------
# The flags


def test_train_and_evaluate_have_the_same_dataset_flags():
  for command in (train, evaluate):
    text = command.build_parser().format_help()
    for flag in DATA_FLAGS:
      assert f'  {flag} ' in text, (command.__name__, flag)
  same = ('--data', 'synthetic', '--data_dir', 'D', '--synthetic_train', '6', '--synthetic_val',
          '3')
  assert for_train(*same) == for_evaluate(*same) == common.DataSelection(
      'synthetic', 'D', synthetic_train=6, synthetic_val=3)


def test_what_each_kind_names():
  tfds = common.DataSelection('tfds', 'T')
  assert for_train('--data', 'tfds', '--data_dir', 'T') == tfds
  assert for_evaluate('--data', 'tfds', '--data_dir', 'T') == tfds
  coco = for_evaluate('--ann_file', 'a.json', '--image_dir', 'imgs', cfg=BASE)  # implies coco
  assert coco.kind == 'coco' and coco.files('val') == ('a.json', 'imgs')
  assert coco.files('train') == (BASE.dataset.train_info, BASE.dataset.train_images)
  coco = for_train('--data', 'coco', '--ann_file', 'a.json', '--image_dir', 'imgs', cfg=BASE)
  assert coco.files('train') == ('a.json', 'imgs')
  assert coco.files('val') == (BASE.dataset.valid_info, BASE.dataset.valid_images)
  # the defaults: the synthetic set for the synthetic-class presets, else the config's paths
  assert for_train() == for_evaluate() == common.DataSelection('synthetic', 'data/synthetic')
  assert for_evaluate(cfg=BASE).files('val') == (BASE.dataset.valid_info,
                                                 BASE.dataset.valid_images)
  synthetic = for_train('--data_dir', 'D', '--synthetic_val', '0')
  assert synthetic.files('train')[0].endswith('instances_train.json')
  assert synthetic.files('val') is None


def test_older_spellings_are_hidden_aliases_that_say_the_new_one(capsys):
  assert for_evaluate('--synthetic', 'D', '--synthetic_num_val', '5') == common.DataSelection(
      'synthetic', 'D', synthetic_val=5)
  args, _ = evaluate.parse_args(['--weights', 'w', '--tfds_dir', 'T', '--tfds_split', 'test'])
  assert (common.resolve_data(args, TINY, common.chosen_split(args)),
          common.chosen_split(args)) == (common.DataSelection('tfds', 'T'), 'test')
  assert for_train('--data', 'tfds:T') == for_evaluate('--data', 'tfds:T') == (
      common.DataSelection('tfds', 'T'))
  err = capsys.readouterr().err
  for old, new in (('--synthetic', '--data synthetic --data_dir DIR'),
                   ('--synthetic_num_val', '--synthetic_val'), ('--tfds_split', '--split'),
                   ('--tfds_dir', '--data tfds --data_dir DIR'),
                   ('--data tfds:DIR', '--data tfds --data_dir DIR')):
    assert f'note: {old} is spelled {new} now' in err, (old, err)
  text = evaluate.build_parser().format_help()
  assert not any(f'{old} ' in text for old in ('--synthetic', '--tfds_dir', '--tfds_split',
                                                '--synthetic_num_val'))


@pytest.mark.parametrize('argv, words', [
    (['--data', 'coco', '--data_dir', 'x'], ['--data_dir x', '--ann_file']),
    (['--data', 'tfds'], ['--data tfds needs --data_dir']),
    (['--data', 'synthetic', '--ann_file', 'a.json'], ['COCO-format', '--data synthetic']),
    (['--ann_file', 'a.json'], ['--image_dir is needed with --ann_file a.json']),
    (['--data', 'tfds:A', '--data_dir', 'B'], ['tfds:A', 'B', 'two datasets']),
    (['--split', 'test'], ['--split test', 'train and val']),
])
def test_a_combination_that_names_no_one_dataset_is_a_usage_error(argv, words):
  with pytest.raises(common.UsageError) as error:
    for_evaluate(*argv)
  for word in words:
    assert word in str(error.value), str(error.value)


def test_a_bad_kind_is_an_argument_error(capsys):
  with pytest.raises(SystemExit) as exit_info:
    train.parse_args(['--data', 'imagenet'])
  assert exit_info.value.code == 2 and "'imagenet'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The run directory's record


def test_the_record_round_trips_with_absolute_paths(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  coco = for_train('--data', 'coco', '--ann_file', 'a.json', '--image_dir', 'imgs', cfg=BASE)
  common.write_data_record(tmp_path / 'run', coco)
  read = common.read_data_record(tmp_path / 'run')
  assert read.kind == 'coco' and read.files('train') == (str(tmp_path / 'a.json'),
                                                         str(tmp_path / 'imgs'))
  synthetic = for_train('--data_dir', 'D', '--synthetic_train', '6', '--synthetic_val', '3')
  common.write_data_record(tmp_path / 'run', synthetic)
  assert json.loads((tmp_path / 'run' / common.DATA_RECORD).read_text())['data_dir'] == str(
      tmp_path / 'D')
  assert common.read_data_record(tmp_path / 'run') == common.DataSelection(
      'synthetic', str(tmp_path / 'D'), synthetic_train=6, synthetic_val=3)
  assert common.read_data_record(tmp_path / 'elsewhere') is None
  assert common.read_data_record(None) is None


def test_the_record_is_the_default_and_any_data_flag_replaces_it():
  record = common.DataSelection('synthetic', '/runs/D', synthetic_train=6, synthetic_val=3)
  assert for_evaluate(record=record) == for_train(record=record) == record
  assert for_evaluate('--synthetic_val', '9', record=record).synthetic_val == 9  # a size applies
  assert for_evaluate('--data_dir', 'E', record=record) == common.DataSelection('synthetic', 'E')
  assert for_evaluate('--data', 'tfds', '--data_dir', 'T', record=record).kind == 'tfds'


@pytest.mark.parametrize('text, words', [
    ('{"kind": "synth', ['cannot read']),
    ('{"kind": "imagenet"}', ['not a dataset record', 'imagenet']),
    ('{"kind": "coco", "val": ["only one"]}', ['not a dataset record']),
])
def test_a_bad_record_is_a_usage_error_naming_the_file(text, words, tmp_path):
  (tmp_path / common.DATA_RECORD).write_text(text)
  with pytest.raises(common.UsageError) as error:
    common.read_data_record(tmp_path)
  assert common.DATA_RECORD in str(error.value)
  for word in words:
    assert word in str(error.value), str(error.value)


# ---------------------------------------------------------------------------------------------
# What train hands the trainer


class _Stopped(Exception):
  pass


def _train_until_the_trainer(argv, monkeypatch, tmp_path) -> dict:
  """``yolact-jax train`` in-process up to ``trainer.train`` (not run): what it was handed and
  how often the classes were checked."""
  from yolact_jax import trainer
  from yolact_jax.data import categories
  seen, checks = {}, []
  check_source = categories.check_source

  def counted(cfg, source):
    checks.append(source)
    return check_source(cfg, source)

  def stand_in(cfg, workdir, source, options):
    seen.update(cfg=cfg, source=source, options=options, checks=len(checks))
    raise _Stopped

  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(categories, 'check_source', counted)
  monkeypatch.setattr(trainer, 'train', stand_in)
  with pytest.raises(_Stopped):
    train.main(['--config', 'yolact_tiny', '--workdir', 'W', '--no_progress', *argv])
  return seen


def test_train_checks_the_classes_once_and_records_the_data(monkeypatch, tmp_path):
  seen = _train_until_the_trainer(['--data_dir', 'D', '--synthetic_train', '3',
                                   '--synthetic_val', '2'], monkeypatch, tmp_path)
  assert seen['checks'] == 1 and seen['options'].classes_checked  # the trainer does not re-check
  assert len(seen['source']) == 3 and seen['options'].eval_fn is not None
  assert common.read_data_record(tmp_path / 'W') == common.DataSelection(
      'synthetic', str(tmp_path / 'D'), synthetic_train=3, synthetic_val=2)
  resumed = _train_until_the_trainer([], monkeypatch, tmp_path)  # no data flag: the record
  assert len(resumed['source']) == 3
  assert not (tmp_path / 'data').exists()  # not the default data/synthetic


def test_validation_that_cannot_be_imported_is_an_error_naming_the_module(monkeypatch):
  import yolact_jax
  monkeypatch.delattr(yolact_jax, 'tracking', raising=False)
  monkeypatch.setitem(sys.modules, 'yolact_jax.tracking', None)  # as if it failed to import
  with pytest.raises(common.UsageError) as error:
    train.make_eval_fn(TINY, object(), None)
  assert "'yolact_jax.tracking'" in str(error.value) and '--no_eval' in str(error.value)
  assert train.make_eval_fn(TINY, None, None) is None  # no validation set: nothing to import


# ---------------------------------------------------------------------------------------------
# Through the real command line


def test_a_run_is_evaluated_with_the_training_flags_and_with_none(tmp_path):
  data = ['--data', 'synthetic', '--data_dir', tmp_path / 'D', '--synthetic_train', '6',
          '--synthetic_val', '3']
  made = run_cli(['train', '--config', 'yolact_tiny', '--workdir', tmp_path / 'run', *data,
                  '--steps', '2', '--no_eval', '--no_progress'], tmp_path, timeout=TIMEOUT)
  assert made.returncode == 0, made.stderr[-3000:]
  record = json.loads((tmp_path / 'run' / common.DATA_RECORD).read_text())
  assert (record['kind'], record['data_dir'], record['synthetic_val']) == (
      'synthetic', str(tmp_path / 'D'), 3)
  val_ann = str(tmp_path / 'D' / 'annotations' / 'instances_val.json')
  for name, flags in (('flags', data), ('record', [])):
    done = run_cli(['evaluate', '--weights', tmp_path / 'run', *flags, '--out', tmp_path / name,
                    '--no_progress', '--no_per_class'], tmp_path / 'run', timeout=TIMEOUT)
    assert done.returncode == 0, (name, done.stderr[-3000:])
    summary = json.loads((tmp_path / name / 'summary.json').read_text())
    assert (summary['dataset'], summary['num_images']) == (val_ann, 3), name
  assert 'trained on' in done.stdout  # says where the dataset came from
  assert not (tmp_path / 'run' / 'data').exists()  # not the default data/synthetic
