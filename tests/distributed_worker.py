"""One training process of the multi-process tests (run as ``python -m tests.distributed_worker``;
the parent sets XLA_FLAGS for the device count and JAX_PLATFORMS=cpu).

  python -m tests.distributed_worker DATA_DIR WORKDIR STEPS OUT.npz [COORDINATOR NUM_PROCESSES ID]
  python -m tests.distributed_worker evaluate DATA_DIR OUT.json [COORDINATOR NUM_PROCESSES ID
      [LINGER_S]]

Trains ``yolact_tiny`` (batch 4, no augmentation, synced BatchNorm statistics) on the synthetic
train split in DATA_DIR for STEPS steps in WORKDIR (resuming if it holds checkpoints), saving every
2 steps, and writes the final parameters to OUT.npz (process 0).
"""

import sys

import numpy as np


def main(argv):
  data_dir, workdir, steps, out = argv[:4]
  from yolact_jax import parallel
  if len(argv) > 4:
    parallel.initialize(argv[4], int(argv[5]), int(argv[6]), timeout_s=60)
  import jax
  from yolact_jax import trainer
  from yolact_jax.config import get_config
  from yolact_jax.data import coco, loader, synthetic
  cfg = get_config('yolact_tiny', [
      'train.batch_size=4', 'train.freeze_bn=False', 'train.sync_batchnorm=True',
      'augment.photometric_distort=False',
      'augment.expand=False', 'augment.random_sample_crop=False', 'augment.random_mirror=False'])
  ann_file, image_dir = synthetic.dataset_paths(data_dir, 'train')
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(ann_file, image_dir))
  summary = trainer.train(cfg, workdir, source, trainer.TrainOptions(
      num_steps=int(steps), progress=False, log_every=1, save_every=2))
  params = jax.device_get(summary['state'].params)
  if jax.process_index() == 0:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    np.savez(out, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
  print('DONE', jax.process_index(), summary['step'], flush=True)


def evaluate(argv):
  """COCO evaluation of a seeded random yolact_tiny on the synthetic val split of DATA_DIR;
  process 0 writes the summary's scalars (and the evaluated image ids) to OUT.json, then works
  on for LINGER_S more seconds (as COCOeval does on a large set) while the others are done:
  JAX's shutdown barrier is bounded by 5 s here, so the processes must meet before it."""
  import json
  import time
  data_dir, out = argv[:2]
  from yolact_jax import parallel
  if len(argv) > 2:
    parallel.initialize(argv[2], int(argv[3]), int(argv[4]), timeout_s=60,
                        shutdown_timeout_s=5)
  import jax
  from yolact_jax import evaluation
  from yolact_jax.config import get_config
  from yolact_jax.data import synthetic
  from yolact_jax.model.variables import init_variables
  cfg = get_config('yolact_tiny', ['detect.nms_conf_thresh=0.02'])
  run = evaluation.evaluate(cfg, jax.device_get(init_variables(cfg, seed=3)),
                            evaluation.coco_eval_set(*synthetic.dataset_paths(data_dir, 'val')),
                            batch_size=2, progress=False)
  if jax.process_index() == 0:
    scalars = {k: v for k, v in run.summary.items() if isinstance(v, float)}
    with open(out, 'w') as f:
      json.dump({'summary': scalars, 'image_ids': sorted(run.results.image_ids),
                 'num_segm': len(run.results.segm)}, f)
    time.sleep(float(argv[5]) if len(argv) > 5 else 0)
  print('DONE', jax.process_index(), flush=True)


if __name__ == '__main__':
  if sys.argv[1] == 'evaluate':
    evaluate(sys.argv[2:])
  else:
    main(sys.argv[1:])
