"""The training loop: exact resume, signals, checkpoints, metrics (tiny preset, tiny data)."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from yolact_jax import trainer
from yolact_jax.checkpoint import runs
from yolact_jax.config import get_config
from yolact_jax.data import coco, loader, synthetic


@pytest.fixture(scope='module')
def tiny_source(tmp_path_factory):
  root = tmp_path_factory.mktemp('synthetic')
  paths = synthetic.generate_synthetic_coco(root, num_train=8, num_val=0, image_hw=(72, 80),
                                            seed=3)
  ann_file, image_dir = paths['train']
  return loader.InMemoryRecordSource.from_coco(coco.CocoDataset(ann_file, image_dir))


CFG = get_config('yolact_tiny', ['train.freeze_bn=False', 'train.lr=0.003'])
QUIET = dict(progress=False, log_every=1, save_every=3)


def _params(summary):
  return jax.tree_util.tree_leaves(jax.device_get(summary['state'].params))


def test_resume_is_bit_exact(tiny_source, tmp_path):
  whole = trainer.train(CFG, tmp_path / 'whole', tiny_source,
                        trainer.TrainOptions(num_steps=6, **QUIET))
  first = trainer.train(CFG, tmp_path / 'split', tiny_source,
                        trainer.TrainOptions(num_steps=3, **QUIET))
  assert first['step'] == 3
  resumed = trainer.train(CFG, tmp_path / 'split', tiny_source,
                          trainer.TrainOptions(num_steps=6, **QUIET))
  assert resumed['step'] == 6
  for a, b in zip(_params(whole), _params(resumed)):
    np.testing.assert_array_equal(a, b)
  lines = [json.loads(l) for l in (tmp_path / 'split' / 'metrics.jsonl').read_text().splitlines()]
  assert [l['step'] for l in lines if l['kind'] == 'train'] == [1, 2, 3, 4, 5, 6]
  for key in ('loss', 'B', 'C', 'M', 'S', 'lr', 'images_per_s', 'num_skipped'):
    assert key in lines[-1]
  # and a restarted, finished run does nothing more
  again = trainer.train(CFG, tmp_path / 'split', tiny_source,
                        trainer.TrainOptions(num_steps=6, **QUIET))
  assert again['step'] == 6


def test_sigterm_saves_and_stops(tiny_source, tmp_path):
  def send_sigterm(step, metrics):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  summary = trainer.train(CFG, tmp_path / 'run', tiny_source,
                          trainer.TrainOptions(num_steps=10, on_step=send_sigterm, **QUIET))
  assert summary['stopped_by'] == 'SIGTERM' and summary['step'] == 2
  variables = runs.load_run_variables(tmp_path / 'run', CFG)
  for a, b in zip(jax.tree_util.tree_leaves(variables['params']), _params(summary)):
    np.testing.assert_array_equal(a, b)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_validation_keeps_best_and_latest(tiny_source, tmp_path):
  scores = iter([0.5, 0.1, 0.2, 0.3])

  def fake_eval(variables, step):
    assert 'params' in variables and 'batch_stats' in variables
    return {'mask_map': next(scores), 'box_map': 0.0}

  trainer.train(CFG, tmp_path / 'run', tiny_source, trainer.TrainOptions(
      num_steps=8, eval_every=2, eval_fn=fake_eval, keep=1, progress=False, save_every=100))
  steps = sorted(int(p.name) for p in (tmp_path / 'run' / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [2, 8]  # best (0.5 at step 2) and the latest
  evals = [json.loads(l) for l in (tmp_path / 'run' / 'metrics.jsonl').read_text().splitlines()
           if '"eval"' in l]
  assert [e['step'] for e in evals] == [2, 4, 6, 8]


def test_train_cli_runs_exports_and_resumes(tmp_path):
  import train as train_cli
  from yolact_jax.checkpoint import convert, io
  args = ['--config', 'yolact_tiny', '--workdir', str(tmp_path / 'run'), '--data_dir',
          str(tmp_path / 'data'), '--synthetic_train', '6', '--synthetic_val', '0', '--steps', '2',
          '--no_eval', '--no_progress', '--export_pth', str(tmp_path / 'final.pth'),
          '--config.train.freeze_bn=False']
  assert train_cli.main(args) == 0
  cfg = get_config('yolact_tiny', ['train.freeze_bn=False'])
  from_pth = convert.load_pth_weights(tmp_path / 'final.pth', cfg)
  from_run = io.load_weights(tmp_path / 'run', cfg)  # a run directory loads like weights
  for a, b in zip(jax.tree_util.tree_leaves(from_pth), jax.tree_util.tree_leaves(from_run)):
    np.testing.assert_array_equal(a, b)
  args[args.index('--steps') + 1] = '3'
  assert train_cli.main(args) == 0  # resumes from step 2
  steps = [json.loads(l)['step'] for l in (tmp_path / 'run' / 'metrics.jsonl').read_text()
           .splitlines()]
  assert steps[-1] == 3


def test_train_cli_rejects_a_config_typo(tmp_path, capsys):
  import train as train_cli
  assert train_cli.main(['--config', 'yolact_tiny', '--workdir', str(tmp_path), '--data_dir',
                         str(tmp_path / 'd'), '--config.train.lrr=1']) == 1
  assert 'lrr' in capsys.readouterr().err
