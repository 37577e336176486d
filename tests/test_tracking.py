"""Experiment tracking and resume robustness, around ONE short tiny training run: TensorBoard
event tags, prediction overlays, the profiler trace, the unreadable-newest-checkpoint fallback
(and the none-readable error), and the missing-wandb error."""

import logging
import pathlib
import shutil

import numpy as np
import pytest

from yolact_jax import tracking, trainer
from yolact_jax.checkpoint import runs
from yolact_jax.checkpoint.convert import CheckpointError
from yolact_jax.config import get_config
from yolact_jax.data import coco, loader, synthetic
from yolact_jax.evaluation.coco_eval import METRIC_NAMES

CFG = get_config('yolact_tiny', ['train.freeze_bn=False', 'train.lr=0.003'])
QUIET = dict(progress=False, log_every=2, save_every=2)


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  root = tmp_path_factory.mktemp('synthetic')
  paths = synthetic.generate_synthetic_coco(root, num_train=8, num_val=0, image_hw=(72, 80),
                                            seed=3)
  return loader.InMemoryRecordSource.from_coco(coco.CocoDataset(*paths['train']))


def _fake_summary(step):
  """A COCO summary as evaluate_model returns it (values made up)."""
  summary = {'num_images': 2}
  for iou_type in ('bbox', 'segm'):
    summary[iou_type] = {**{n: 0.01 * step for n in METRIC_NAMES},
                         'per_class_AP': {name: 0.1 for name in CFG.dataset.class_names},
                         'num_detections': 3}
  summary.update(box_map=summary['bbox']['AP'], mask_map=summary['segm']['AP'])
  return summary


@pytest.fixture(scope='module')
def run(source, tmp_path_factory):
  """4 steps, checkpoints at 2 and 4, validation (with real overlays) at 2 and 4, steps 2..3
  profiled."""
  workdir = tmp_path_factory.mktemp('run') / 'run'

  def eval_fn(variables, step):
    overlays = tracking.prediction_overlays(CFG, variables, source, count=2)
    return {**_fake_summary(step), 'overlays': overlays}

  summary = trainer.train(CFG, workdir, source, trainer.TrainOptions(
      num_steps=4, eval_every=2, eval_fn=eval_fn, profile_steps=(2, 3), **QUIET))
  assert summary['step'] == 4 and 'overlays' not in summary['last_eval']
  return workdir


def test_tensorboard_event_file_has_every_metric(run):
  logdir = run / tracking.TENSORBOARD_DIR
  assert list(logdir.glob('events.out.tfevents.*'))
  tags = tracking.tags(logdir)
  for term in ('loss', 'B', 'C', 'M', 'S', 'lr', 'images_per_s', 'num_skipped'):
    assert f'train/{term}' in tags
  for tag in ('eval/box_map', 'eval/mask_map', 'eval/bbox/AP50', 'eval/segm/per_class_AP/star',
              'eval/predictions/0', 'eval/predictions/1'):
    assert tag in tags
  report = [v.tensor.string_val[0].decode() for e in tracking.read_events(logdir)
            for v in e.summary.value if v.tag.startswith('eval/report')]
  assert len(report) == 2 and 'mask AP' in report[-1] and 'star' in report[-1]
  series = tracking.scalar_series(logdir)
  assert [s for s, _ in series['train/loss']] == [2, 4]
  assert [s for s, _ in series['eval/mask_map']] == [2, 4]
  assert series['eval/mask_map'][-1][1] == pytest.approx(0.04)
  images = [v.image for e in tracking.read_events(logdir) for v in e.summary.value
            if v.tag == 'eval/predictions/0']
  assert (images[0].height, images[0].width) == (72, 80)  # the validation image's own size
  # metrics.jsonl keeps its lines, without the overlays
  text = (run / 'metrics.jsonl').read_text()
  assert '"eval"' in text and 'overlays' not in text


def test_prediction_overlays_are_rgb_images_of_the_inputs(run, source):
  del run  # (compiled programs are cached by then)
  from yolact_jax.model.variables import init_variables
  overlays = tracking.prediction_overlays(CFG, init_variables(CFG), source, count=3)
  assert len(overlays) == 3
  for image, index in zip(overlays, range(3)):
    record = source[index]
    assert image.dtype == np.uint8 and image.shape == (record['height'], record['width'], 3)


def test_profile_steps_write_a_trace(run):
  traces = list((run / tracking.PROFILE_DIR).rglob('*.xplane.pb'))
  assert traces, list((run / tracking.PROFILE_DIR).rglob('*'))
  assert list((run / tracking.PROFILE_DIR).rglob('*.trace.json.gz'))


def test_profile_steps_are_checked():
  with pytest.raises(ValueError, match='profile_steps'):
    tracking.StepProfiler('.', (3, 2))


def _truncate_arrays(step_dir: pathlib.Path) -> None:
  """Halves every array data file of a committed checkpoint step (a disk or copy fault)."""
  files = [p for p in (step_dir / 'state').rglob('*') if p.is_file() and p.parent.name == 'd']
  assert files, sorted(str(p) for p in step_dir.rglob('*'))
  for path in files:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_unreadable_newest_checkpoint_falls_back(run, source, tmp_path, caplog):
  workdir = tmp_path / 'run'
  shutil.copytree(run, workdir)
  _truncate_arrays(workdir / runs.CHECKPOINTS / '4')
  with caplog.at_level(logging.WARNING):
    summary = trainer.train(CFG, workdir, source, trainer.TrainOptions(
        num_steps=4, tensorboard=False, **QUIET))
  warnings = [r.getMessage() for r in caplog.records if 'cannot be read' in r.getMessage()]
  assert len(warnings) == 1 and 'step 4' in warnings[0] and 'from step 2' in warnings[0]
  assert '\n' not in warnings[0]
  assert summary['step'] == 4
  checkpoints = workdir / runs.CHECKPOINTS
  assert (checkpoints / f'4{runs.UNREADABLE}').is_dir()  # kept on disk, set aside
  # step 4 was trained again from step 2 and saved anew; it reads
  variables = runs.load_run_variables(workdir, CFG)
  assert set(variables) == {'params', 'batch_stats'}
  # resumed at 2: the train lines of steps 3..4 were appended again
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert sum('"train"' in line and '"step": 4' in line for line in lines) == 2


def test_no_readable_checkpoint_is_one_clear_error(run, source, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(run, workdir)
  for step in ('2', '4'):
    _truncate_arrays(workdir / runs.CHECKPOINTS / step)
  with pytest.raises(CheckpointError, match=r'no checkpoint in .* can be read \(step 4: .*step 2'):
    trainer.train(CFG, workdir, source, trainer.TrainOptions(num_steps=6, **QUIET))
  assert (workdir / runs.CHECKPOINTS / '4').is_dir()  # nothing renamed


def test_wandb_missing_is_a_clear_error(source, tmp_path):
  try:
    import wandb  # noqa: F401
    pytest.skip('wandb is installed')
  except ImportError:
    pass
  with pytest.raises(tracking.TrackingError, match='pip install wandb'):
    trainer.train(CFG, tmp_path / 'run', source, trainer.TrainOptions(
        num_steps=1, wandb=True, **QUIET))
  assert not (tmp_path / 'run' / runs.CHECKPOINTS).exists()


def test_a_failed_final_write_of_the_events_is_one_warning(tmp_path, caplog):
  """On a full disk the TensorBoard writer fails when it is closed; that must not hide the error
  that ended the run (it used to be the last traceback printed)."""
  tracker = tracking.Tracker(tmp_path, tensorboard=True)

  def full_disk():
    raise OSError(28, 'No space left on device')

  tracker.writer.close = full_disk
  with caplog.at_level(logging.WARNING, logger='yolact_jax.tracking'):
    tracker.close()
  assert tracker.writer is None
  assert 'TensorBoard events not all written' in caplog.text
  assert 'No space left on device' in caplog.text
