"""Small bad inputs end in one line: through the real command line (a subprocess), each case
prints one ``error: ...`` line naming the problem, exits 1 without a traceback and, for
training, writes nothing. Every case fails before anything compiles."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

from tests.test_cli import TOOL, run_cli

TIMEOUT = 300  # seconds; each case starts Python and imports JAX, nothing compiles


def one_error_line(result) -> str:
  """The single ``error: `` line of a failed command (exit 1, no traceback)."""
  assert result.returncode == 1, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr
  return errors[0]


# ---------------------------------------------------------------------------------------------
# ONNX export without the [onnx] extra

# what exporting imports (pyproject.toml, docs/serving.md)
ONNX_EXPORT_MODULES = ('onnx', 'jax2onnx')


@pytest.mark.skipif(all(importlib.util.find_spec(m) for m in ONNX_EXPORT_MODULES),
                    reason='onnx and jax2onnx are installed: ONNX export works here')
def test_onnx_export_without_the_extra_says_what_to_install(tmp_path):
  (tmp_path / 'weights.pth').write_bytes(b'not read: the missing module is found first')
  result = run_cli(TOOL + ['export', '--config', 'yolact_tiny', '--weights', 'weights.pth',
                           '--format', 'onnx', '--out', 'served/tiny.onnx'], tmp_path, TIMEOUT)
  error = one_error_line(result)
  missing = next(m for m in ONNX_EXPORT_MODULES if not importlib.util.find_spec(m))
  assert f"'{missing}'" in error, error
  assert "pip install 'yolact-jax[onnx]'" in error, error
  assert 'pip install --no-deps jax2onnx==0.17.1' in error, error
  assert not (tmp_path / 'served').exists()  # nothing written


# ---------------------------------------------------------------------------------------------
# A run directory's config.json that is not a config

# (id, command, the text of config.json, words of the error line besides the file's path)
BAD_RUN_CONFIGS = [
    ('a list', 'predict', '[1, 2]', ['expected a mapping of config fields', 'list [1, 2]']),
    ('a list (evaluate)', 'evaluate', '[1, 2]', ['expected a mapping of config fields', 'list']),
    ('a list (export)', 'export', '[1, 2]', ['expected a mapping of config fields', 'list']),
    ('a string', 'predict', '"yolact_tiny"', ['expected a mapping', "str 'yolact_tiny'"]),
    ('a group that is a number', 'predict', '{"detect": 3}',
     ['detect: expected a mapping of config fields', 'int 3']),
    ('an unknown field', 'predict', '{"detect": {"nms_thres": 0.3}}',
     ["'detect.nms_thres'", 'Did you mean nms_thresh']),
    ('a mistyped field', 'predict', '{"max_size": "big"}',
     ['max_size', 'expected an integer', "'big'"]),
    ('an absurd size', 'predict', '{"max_size": 100000}', ['max_size=100000', '[32, 4096]']),
    ('a NaN threshold', 'predict', '{"detect": {"nms_conf_thresh": NaN}}',
     ['detect.nms_conf_thresh=nan', 'finite']),
]
COMMANDS = {
    'evaluate': ['evaluate', '--weights', 'run'],
    'predict': ['predict', '--weights', 'run', 'images'],
    'export': ['export', '--weights', 'run', '--format', 'stablehlo', '--out', 'x.stablehlo'],
}


@pytest.mark.parametrize('command, text, words', [c[1:] for c in BAD_RUN_CONFIGS],
                         ids=[c[0] for c in BAD_RUN_CONFIGS])
def test_a_bad_run_config_is_one_line_naming_the_file(command, text, words, tmp_path):
  (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
  (tmp_path / 'run' / 'config.json').write_text(text)
  (tmp_path / 'images').mkdir()
  error = one_error_line(run_cli(TOOL + COMMANDS[command], tmp_path, TIMEOUT))
  assert error.startswith(f'error: {pathlib.Path("run") / "config.json"}: '), error
  for word in words:
    assert word in error, error


def test_training_in_a_run_directory_with_a_bad_config_leaves_it_alone(tmp_path):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.json').write_text('[1, 2]')
  error = one_error_line(run_cli(TOOL + ['train', '--workdir', 'run', '--no_progress'],
                                 tmp_path, TIMEOUT))
  assert 'config.json' in error and 'list' in error, error
  assert sorted(p.name for p in run.iterdir()) == ['config.json']
  assert (run / 'config.json').read_text() == '[1, 2]'


# ---------------------------------------------------------------------------------------------
# Values no field can honour, from the command line (tests/test_config_fields.py has every
# range and every float field)

# (id, override, words of the error line)
BAD_OVERRIDES = [
    ('huge max_size', '--config.max_size=100000', ['max_size=100000', '[32, 4096]']),
    ('infinite threshold', '--config.detect.nms_thresh=1e999',
     ['detect.nms_thresh=inf', 'finite']),
    ('threshold above 1', '--config.detect.nms_conf_thresh=1.5',
     ['detect.nms_conf_thresh=1.5', '[0, 1]']),
]


@pytest.mark.parametrize('override, words', [c[1:] for c in BAD_OVERRIDES],
                         ids=[c[0] for c in BAD_OVERRIDES])
def test_an_impossible_value_is_one_line_naming_the_field(override, words, tmp_path):
  (tmp_path / 'weights.pth').write_bytes(b'not read: the config is checked first')
  (tmp_path / 'images').mkdir()
  result = run_cli(TOOL + ['predict', '--config', 'yolact_tiny', '--weights', 'weights.pth',
                           'images', override], tmp_path, TIMEOUT)
  error = one_error_line(result)
  for word in words:
    assert word in error, error


# ---------------------------------------------------------------------------------------------
# Training from starting weights that are not a checkpoint


def _write_wrong_keys(path):
  import torch
  torch.save({'fc.weight': torch.zeros(3, 2)}, path)


def _write_random_bytes(path):
  import numpy as np
  path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())


@pytest.mark.parametrize('flag', ['--weights', '--imagenet'])
@pytest.mark.parametrize('write', [_write_random_bytes, _write_wrong_keys],
                         ids=['random bytes', 'a torch file with other keys'])
def test_training_from_bad_weights_writes_nothing(write, flag, tmp_path):
  write(tmp_path / 'bad.pth')
  result = run_cli(TOOL + ['train', '--config', 'yolact_tiny', flag, 'bad.pth',
                           '--workdir', 'W', '--data_dir', 'data', '--synthetic_train', '2',
                           '--synthetic_val', '0', '--no_progress'], tmp_path, TIMEOUT)
  error = one_error_line(result)
  assert 'bad.pth' in error, error
  assert not (tmp_path / 'W').exists()


class _Stopped(Exception):
  """Raised by the stand-in trainer once it has seen what main() hands it."""


def _train_main_until_the_trainer(argv, monkeypatch, tmp_path) -> dict:
  """Runs ``yolact-jax train`` in-process up to ``trainer.train``; returns what it was given
  and how often the starting weights had been read by then."""
  from yolact_jax import trainer
  from yolact_jax.checkpoint import io
  from yolact_jax.cli import train
  seen, reads = {}, []
  load_weights = io.load_weights

  def counted(*args, **kwargs):
    reads.append(args[0])
    return load_weights(*args, **kwargs)

  def stand_in(cfg, workdir, source, options):
    seen.update(workdir=workdir, init=options.init, reads_before=len(reads), reads=reads)
    raise _Stopped

  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(io, 'load_weights', counted)
  monkeypatch.setattr(trainer, 'train', stand_in)
  with pytest.raises(_Stopped):
    train.main(['--config', 'yolact_tiny', '--data_dir', 'data', '--synthetic_train', '2',
                '--synthetic_val', '0', '--no_progress', *argv])
  return seen


def test_a_resumed_run_does_not_read_the_starting_weights(monkeypatch, tmp_path):
  from yolact_jax.checkpoint.convert import CheckpointError
  (tmp_path / 'W' / 'checkpoints' / '7').mkdir(parents=True)  # a checkpoint to resume from
  _write_random_bytes(tmp_path / 'bad.pth')
  seen = _train_main_until_the_trainer(['--weights', 'bad.pth', '--workdir', 'W'], monkeypatch,
                                       tmp_path)
  assert str(seen['workdir']) == 'W' and seen['reads_before'] == 0  # bad.pth was not read
  with pytest.raises(CheckpointError, match='bad.pth'):
    seen['init']()  # read only when the trainer asks (no readable checkpoint after all)


def test_a_new_run_starts_from_the_weights_loaded_before_the_trainer(weights_dir, monkeypatch,
                                                                     tmp_path):
  import jax
  import numpy as np

  from yolact_jax.config import get_config
  from yolact_jax.model.variables import init_variables
  seen = _train_main_until_the_trainer(['--weights', str(weights_dir), '--workdir', 'W'],
                                       monkeypatch, tmp_path)
  assert seen['reads_before'] == 1  # read and checked before the trainer makes the run dir
  expected = init_variables(get_config('yolact_tiny'), seed=0)  # what weights_dir holds
  got = seen['init']()
  assert len(seen['reads']) == 1  # handed over, not read again
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # the stand-in trainer wrote nothing: the run directory holds only train's record of the data,
  # written once everything was checked, just before the trainer is called
  assert [p.name for p in (tmp_path / 'W').iterdir()] == ['data.json']


def test_a_run_config_at_the_limits_is_read_back(tmp_path):
  """The largest admitted max_size and a 0 score threshold are a good config.json."""
  from yolact_jax.cli import common
  from yolact_jax.config import config_to_dict, get_config
  saved = get_config('yolact_tiny', ['max_size=4096', 'detect.nms_conf_thresh=0.0'])
  (tmp_path / 'config.json').write_text(json.dumps(config_to_dict(saved)))
  assert common.resolve_config(None, [], tmp_path) == saved


def test_a_message_of_many_lines_keeps_its_first_problem_and_counts_the_rest():
  from yolact_jax.cli.common import one_line
  many = ValueError('The checkpoint does not fit (3 problems):\n  missing key a\n  missing key b'
                    '\n  missing key c')
  assert one_line(many) == ('The checkpoint does not fit (3 problems): missing key a '
                            '(+2 more; YOLACT_JAX_TRACEBACK=1 shows all)')
  assert one_line(ValueError('heading:\n  the only problem\n')) == 'heading: the only problem'
  assert one_line(ValueError('one line')) == 'one line'
  assert one_line(KeyError('a key')) == 'a key'  # not its repr
  assert one_line(ValueError('')) == 'ValueError'
