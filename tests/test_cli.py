"""The ``yolact-jax`` command line: the dispatcher, one flag style, a run's config read back, the
original eval.py's flags, the training start checks, and one clear line for every bad input
(through the real command line, in a subprocess; every case fails before anything compiles)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from tests.reference_data import PROJECT_ROOT
from yolact_jax import cli
from yolact_jax.cli import common, predict, train
from yolact_jax.config import (PRESETS, ConfigError, config_from_dict, config_to_dict,
                               get_config)


def run_cli(args, cwd, timeout=300):
  env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), JAX_PLATFORMS='cpu')
  env.pop('YOLACT_JAX_TRACEBACK', None)
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# One line for every bad input

TOOL = ['-m', 'yolact_jax']
TRAIN = TOOL + ['train', '--workdir', 'run', '--no_progress']
EVALUATE = TOOL + ['evaluate']
PREDICT = TOOL + ['predict']
COORDINATOR = ['--coordinator_address', '127.0.0.1:9', '--num_processes', '2', '--process_id',
               '1', '--distributed_timeout', '1']


def _free_port() -> int:
  import socket
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# process 0 of 2 whose partner never starts: JAX would abort with a C++ stack trace
ALONE = ['--coordinator_address', f'127.0.0.1:{_free_port()}', '--num_processes', '2',
         '--process_id', '0', '--distributed_timeout', '2']

# (id, command line run in a folder holding weights.pth (garbage), bad.json (not JSON),
#  empty/ (no images), runlike/ (a weights dir without config.json); words the error names)
ERROR_CASES = [
    ('train unknown preset', TRAIN + ['--config', 'yolact_bse'], ['yolact_bse', 'yolact_base']),
    ('train unknown field', TRAIN + ['--config', 'yolact_tiny', '--config.train.lrr=1'],
     ['lrr', 'Did you mean lr']),
    ('train missing weights', TRAIN + ['--config', 'yolact_tiny', '--weights', 'nope'],
     ['weights not found', 'nope', '--weights']),
    ('train missing weights, older flag', TRAIN + ['--config', 'yolact_tiny', '--init_weights',
                                                   'nope'], ['weights not found', 'nope']),
    ('train missing imagenet file', TRAIN + ['--config', 'yolact_tiny', '--imagenet', 'r.pth'],
     ['weights not found', 'r.pth']),
    ('train no backbone', TRAIN + ['--config', 'yolact_base', '--data', 'coco'],
     ['resnet101_reducedfc.pth', '--imagenet', '--from_scratch']),
    ('train unreadable annotations', TRAIN + ['--config', 'yolact_tiny', '--data', 'coco',
                                              '--ann_file', 'bad.json', '--image_dir', 'empty'],
     ['bad.json', 'invalid JSON']),
    ('train coordinator', TRAIN + ['--config', 'yolact_tiny'] + COORDINATOR,
     ['127.0.0.1:9']),
    ('train missing processes', TRAIN + ['--config', 'yolact_tiny'] + ALONE,
     ['not all 2 processes joined', 'within 2 s', 'process 0']),
    ('evaluate unknown preset', EVALUATE + ['--config', 'nope', '--weights', 'weights.pth'],
     ["Unknown preset 'nope'"]),
    ('evaluate unknown field', EVALUATE + ['--config', 'yolact_tiny', '--weights', 'weights.pth',
                                          '--config.detect.nms_thres=0.3'], ['nms_thres']),
    ('evaluate missing weights', ['evaluate.py', '--config', 'yolact_tiny', '--weights', 'nope'],
     ['weights not found', 'nope']),
    ('evaluate no config', EVALUATE + ['--weights', 'runlike'],
     ['--config is needed', 'config.json']),
    ('evaluate unreadable annotations',
     EVALUATE + ['--config', 'yolact_tiny', '--weights', 'weights.pth', '--ann_file', 'bad.json',
                 '--image_dir', 'empty'], ['bad.json', 'invalid JSON']),
    ('evaluate tfds without its folder',
     EVALUATE + ['--config', 'yolact_tiny', '--weights', 'weights.pth', '--data', 'tfds'],
     ['--data tfds needs --data_dir']),
    ('train coco named by a folder', TRAIN + ['--config', 'yolact_tiny', '--data', 'coco',
                                              '--data_dir', 'empty'],
     ['--data_dir empty', '--ann_file and --image_dir']),
    ('evaluate coordinator',
     EVALUATE + ['--config', 'yolact_tiny', '--weights', 'weights.pth'] + COORDINATOR,
     ['127.0.0.1:9']),
    ('predict no images', PREDICT + ['--config', 'yolact_tiny', '--weights', 'weights.pth',
                                     'empty'], ['no images', 'empty']),
    ('predict missing weights (original flags)',
     ['scripts/predict.py', '--config', 'yolact_tiny', '--trained_model', 'nope', '--images',
      'empty:out'], ['weights not found', 'nope']),
    ('predict unknown preset', PREDICT + ['--config', 'yolact_nano', '--weights', 'weights.pth',
                                          'empty'], ['yolact_nano']),
    ('export unknown field', TOOL + ['export', '--config', 'yolact_tiny', '--weights',
                                     'weights.pth', '--format', 'onnx', '--out', 'x.onnx',
                                     '--config.model.fpn.num_feature=2'], ['num_feature']),
    ('export missing weights', ['scripts/export.py', '--config', 'yolact_tiny', '--weights',
                                'nope', '--format', 'stablehlo', '--out', 'x'],
     ['weights not found']),
    ('convert unreadable weights', TOOL + ['convert', '--config', 'yolact_tiny', 'weights.pth',
                                           'out.pth'], ['weights.pth']),
    ('convert missing weights', ['scripts/convert_weights.py', '--config', 'yolact_tiny', 'nope',
                                 'out'], ['weights not found', 'nope']),
]


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
  root = tmp_path_factory.mktemp('cli_errors')
  (root / 'weights.pth').write_bytes(b'not a checkpoint')
  (root / 'bad.json').write_text('{"images": [')
  (root / 'empty').mkdir()
  (root / 'runlike').mkdir()
  return root


@pytest.mark.parametrize('args, words', [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_bad_input_is_one_line(args, words, workspace):
  args = [str(PROJECT_ROOT / a) if a.endswith('.py') and not a.startswith('-') else a
          for a in args]
  result = run_cli(args, workspace)
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr
  for word in words:
    assert word in errors[0], errors[0]
  assert not (workspace / 'run').exists()  # checked before the run directory is made


def test_dispatcher_lists_the_commands_and_rejects_a_typo(capsys):
  assert cli.main(['--help']) == 0
  out = capsys.readouterr().out
  for name in ('train', 'evaluate', 'predict', 'convert', 'export', 'benchmark', 'compare'):
    assert f'  {name}' in out
  assert cli.main(['evalute']) == 2
  assert 'did you mean evaluate' in capsys.readouterr().err
  assert cli.main([]) == 2


def test_console_script_is_declared():
  import tomllib
  project = tomllib.loads((PROJECT_ROOT / 'pyproject.toml').read_text())['project']
  assert project['scripts']['yolact-jax'] == 'yolact_jax.cli:main'
  extras = project['optional-dependencies']
  assert any('tfds' in e and 'plots' in e for e in extras['test'])
  assert not any(d.startswith(('tensorflow-datasets', 'matplotlib'))
                 for d in project['dependencies'])


# ---------------------------------------------------------------------------------------------
# Flags


def test_dashed_and_older_spellings_are_hidden_aliases():
  parser = predict.build_parser()
  args, _ = parser.parse_known_args(['x.jpg', '--output', 'o', '--batch', '3', '--top-k', '2'])
  assert (args.out, args.batch_size, args.top_k) == ('o', 3, 2)
  text = parser.format_help()
  assert '--out' in text and '--output ' not in text and '--batch ' not in text
  from yolact_jax.cli import benchmark
  args = benchmark.build_parser().parse_args(['--batch-sizes', '1,8', '--image-hw=3,4'])
  assert args.batch_sizes == [1, 8] and args.image_hw == (3, 4)
  args, _ = train.build_parser().parse_known_args(['--init_weights', 'w.pth'])
  assert args.weights == 'w.pth' and '--init_weights' not in train.build_parser().format_help()


def test_one_name_for_the_weights_flag():
  from yolact_jax.cli import compare, convert, evaluate, export
  import re
  for command in (train, evaluate, predict, export, convert, compare):
    # listed as an option of its own (other help texts mention --weights too)
    assert re.search(r'^  --weights [A-Z]', command.build_parser().format_help(), re.M), (
        command.__name__)


@pytest.mark.parametrize('flags, nms', [
    ([], None), (['--fast_nms'], 'fast'), (['--fast_nms', 'false'], 'standard'),
    (['--cross_class_nms', 'True'], 'cross_class'), (['--fast_nms=no', '--cross_class_nms'],
                                                     'standard'), (['--nms', 'standard'],
                                                                   'standard')])
def test_original_nms_flags(flags, nms):
  args, _ = predict.build_parser().parse_known_args(['x.jpg'] + flags)
  assert common.nms_choice(args) == nms


def test_original_input_flags(tmp_path):
  (tmp_path / 'a.jpg').write_bytes(b'')
  parse = lambda *a: predict.build_parser().parse_known_args(list(a))[0]  # noqa: E731
  args = parse('--image', f'{tmp_path}/a.jpg:{tmp_path}/b.png')
  assert predict.resolve_input(args) == ('images', f'{tmp_path}/a.jpg', f'{tmp_path}/b.png')
  args = parse('--images', f'{tmp_path}:{tmp_path}/out')
  assert predict.resolve_input(args) == ('images', str(tmp_path), f'{tmp_path}/out')
  args = parse('--video', '0')
  assert predict.resolve_input(args) == ('video', 0, predict.DEFAULT_OUT)
  assert predict.video_target(0, 'out').name == 'camera0.avi'
  with pytest.raises(common.UsageError, match='needs a folder'):
    predict.resolve_input(parse('--images', f'{tmp_path}/a.jpg:o'))


def test_evaluate_hands_the_original_prediction_modes_to_predict():
  from yolact_jax.cli import evaluate
  args, overrides = evaluate.parse_args(['--trained_model', 'w.pth', '--images', 'in:out',
                                         '--top_k', '7', '--cross_class_nms', '--config.x=1'])
  argv = evaluate.predict_argv(args, overrides)
  parsed, extra = predict.parse_args(argv)
  assert (parsed.weights, parsed.images, parsed.top_k, parsed.nms) == ('w.pth', 'in:out', 7,
                                                                      'cross_class')
  assert extra == ['--config.x=1']
  args, _ = evaluate.parse_args(['--config', 'yolact_tiny', '--weights', 'w', '--output_coco_json'])
  assert args.out == evaluate.ORIGINAL_RESULTS_DIR


# ---------------------------------------------------------------------------------------------
# A run's config read back


def test_config_from_dict_round_trips_every_preset():
  for name in PRESETS:
    cfg = get_config(name, ['train.lr=0.5'] if name == 'yolact_tiny' else [])
    data = json.loads(json.dumps({**config_to_dict(cfg), 'num_devices': 8, 'num_processes': 2}))
    assert config_from_dict(data) == cfg
  with pytest.raises(ConfigError, match='bacbone'):
    config_from_dict({'bacbone': {}})
  with pytest.raises(ConfigError, match='train.lr'):
    config_from_dict({'train': {'lr': 'fast'}})


def test_run_directory_config_is_read_back(tmp_path, capsys):
  saved = get_config('yolact_tiny', ['detect.nms_top_k=7'])
  (tmp_path / 'config.json').write_text(json.dumps({**config_to_dict(saved), 'num_devices': 1,
                                                    'num_processes': 1}))
  assert common.resolve_config(None, [], tmp_path) == saved
  cfg = common.resolve_config(None, ['--config.detect.nms_thresh=0.4'], tmp_path)
  assert (cfg.detect.nms_top_k, cfg.detect.nms_thresh) == (7, 0.4)
  assert common.resolve_config('yolact_cpu', [], tmp_path).name == 'yolact_cpu'  # --config wins
  assert 'replaces the config saved' in capsys.readouterr().err
  with pytest.raises(common.UsageError, match='--config is needed'):
    common.resolve_config(None, [], tmp_path / 'elsewhere')


def test_predict_from_a_run_directory_needs_no_config(weights_dir, tmp_path, capsys):
  import shutil

  import cv2
  import numpy as np
  run = tmp_path / 'run'
  shutil.copytree(weights_dir, run)
  saved = get_config('yolact_tiny', ['detect.nms_conf_thresh=0.0'])
  (run / 'config.json').write_text(json.dumps(config_to_dict(saved)))
  image = tmp_path / 'a.png'
  cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8))
  status = predict.main(['--weights', str(run), '--image', f'{image}:{tmp_path}/o.png',
                         '--coco_json', str(tmp_path / 'r.json'), '--no_progress'])
  assert status == 0, capsys.readouterr().err
  assert (tmp_path / 'o.png').exists()
  assert json.loads((tmp_path / 'r.json').read_text())['bbox']  # every prior let through


# ---------------------------------------------------------------------------------------------
# Training starts from the backbone the preset names


def train_args(**flags):
  defaults = dict(imagenet=None, weights=None, from_scratch=False)
  return argparse.Namespace(**{**defaults, **flags})


def test_backbone_file_is_required_unless_asked_otherwise(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  base, tiny = get_config('yolact_base'), get_config('yolact_tiny')
  for synthetic in ('yolact_tiny', 'yolact_cpu', 'yolact_plus_tiny'):
    assert train.imagenet_file(train_args(), get_config(synthetic), False) is None
  with pytest.raises(common.UsageError, match='resnet101_reducedfc.pth'):
    train.imagenet_file(train_args(), base, False)
  assert train.imagenet_file(train_args(from_scratch=True), base, False) is None
  assert train.imagenet_file(train_args(weights='w'), base, False) is None
  assert train.imagenet_file(train_args(), base, True) is None  # resuming
  (tmp_path / 'weights').mkdir()
  (tmp_path / 'weights' / 'resnet101_reducedfc.pth').write_bytes(b'x')
  assert train.imagenet_file(train_args(), base, False) == 'weights/resnet101_reducedfc.pth'
  assert train.imagenet_file(train_args(imagenet='weights'), base, False) == 'weights'
  with pytest.raises(common.UsageError, match='names no ImageNet file'):
    train.imagenet_file(train_args(imagenet='weights'), tiny, False)


def test_train_flags_reach_the_options():
  import dataclasses

  from yolact_jax import trainer
  args, overrides = train.parse_args(['--batch_size', '6', '--profile_steps', '3:5'])
  assert overrides == ['--config.train.batch_size=6'] and args.profile_steps == (3, 5)
  fields = {f.name for f in dataclasses.fields(trainer.TrainOptions)}
  if 'profile_steps' in fields:
    assert train.train_options(args, None, None).profile_steps == (3, 5)
  else:
    with pytest.raises(common.UsageError, match='profile_steps'):
      train.train_options(args, None, None)
  with pytest.raises(SystemExit):
    train.parse_args(['--profile_steps', '5:3'])
