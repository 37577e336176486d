"""Run in a subprocess with several host devices (XLA_FLAGS must be set before jax starts):
train steps of the tiny preset on a mesh vs on one device, printing one JSON line of results.

  python -m tests.parallel_worker same_params OVERRIDES...
"""

import dataclasses
import json
import sys

import jax
import numpy as np


def _train(cfg, batch, mesh, steps):
  from yolact_jax import parallel, train_step as ts
  from yolact_jax.model.variables import init_variables
  training = ts.build_training(cfg, mesh=mesh)
  state = training.init_state(init_variables(cfg, seed=0))
  for _ in range(steps):
    state, metrics = training.step(state, parallel.shard_batch(batch, mesh))
  return jax.device_get(state), jax.device_get(metrics), training


def same_params(overrides):
  """Max |difference| of every parameter and BN statistic after 3 steps, 2 devices vs 1."""
  from tests.test_train_step import synthetic_batch
  from yolact_jax import parallel
  from yolact_jax.config import get_config
  cfg = get_config('yolact_tiny', overrides)
  batch = synthetic_batch(cfg, batch=cfg.train.batch_size)
  one, m1, t1 = _train(cfg, batch, None, 3)
  two, m2, t2 = _train(cfg, batch, parallel.data_mesh(jax.devices()[:2]), 3)
  diffs = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
           for a, b in zip(jax.tree_util.tree_leaves((one.params, one.batch_stats)),
                           jax.tree_util.tree_leaves((two.params, two.batch_stats)))]
  scale = max(float(np.max(np.abs(x))) for x in jax.tree_util.tree_leaves(one.params))
  return {'devices': jax.device_count(), 'max_diff': max(diffs), 'param_scale': scale,
          'loss_1': float(m1['loss']), 'loss_2': float(m2['loss']),
          'freeze_bn_1': t1.freeze_bn, 'freeze_bn_2': t2.freeze_bn,
          'bn_changed': bool(np.any(np.asarray(one.batch_stats['backbone']['bn1']['mean'])))}


def per_replica(overrides):
  """2 devices with per-replica BatchNorm statistics vs one device computing the same two
  half-batch statistics (``bn_groups=2``): max |difference| after 3 steps."""
  from tests.test_train_step import synthetic_batch
  from yolact_jax import parallel, train_step as ts
  from yolact_jax.config import get_config
  from yolact_jax.model.variables import init_variables
  from yolact_jax.model.yolact import Yolact
  cfg = get_config('yolact_tiny', overrides)
  batch = synthetic_batch(cfg, batch=cfg.train.batch_size)
  two, _, training = _train(cfg, batch, parallel.data_mesh(jax.devices()[:2]), 3)
  model = Yolact(cfg.model, num_classes=cfg.num_classes, freeze_bn=training.freeze_bn, bn_groups=2)
  step = jax.jit(ts.make_train_step(cfg, model, training.tx))
  state = ts.init_train_state(cfg, init_variables(cfg, seed=0), training.tx)
  for _ in range(3):
    state, _ = step(state, batch)
  one = jax.device_get(state)
  diffs = [float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
           for a, b in zip(jax.tree_util.tree_leaves((one.params, one.batch_stats)),
                           jax.tree_util.tree_leaves((two.params, two.batch_stats)))]
  synced = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, sync_batchnorm=True))
  sync, _, _ = _train(synced, batch, parallel.data_mesh(jax.devices()[:2]), 3)
  sync_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                  for a, b in zip(jax.tree_util.tree_leaves(sync.batch_stats),
                                  jax.tree_util.tree_leaves(two.batch_stats)))
  return {'max_diff': max(diffs), 'model_bn_groups': training.model.bn_groups,
          'sync_vs_per_replica_bn_stats': sync_diff}


def lower_for_cuda(overrides):
  """Exports the train step for CUDA (jax.export, no GPU needed) in float32 and bfloat16 on 1
  and 2 devices."""
  import jax.numpy as jnp
  from tests.test_train_step import synthetic_batch
  from yolact_jax import parallel, train_step as ts
  from yolact_jax.config import get_config
  cfg = get_config('yolact_tiny', overrides)
  batch = synthetic_batch(cfg)
  cases = []
  for devices in (1, 2):
    mesh = parallel.data_mesh(jax.devices()[:devices]) if devices > 1 else None
    for dtype in (jnp.float32, jnp.bfloat16):
      training = ts.build_training(cfg, mesh=mesh, dtype=dtype)
      sharding = parallel.batch_sharding(mesh) if mesh is not None else None
      spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding)
              for k, v in batch.items()}
      exported = jax.export.export(training.step, platforms=['cuda'])(
          training.abstract_state(), spec)
      text = exported.mlir_module()
      cases.append({'devices': devices, 'dtype': jnp.dtype(dtype).name,
                    'platforms': list(exported.platforms), 'nr_devices': exported.nr_devices,
                    'has_bf16': 'bf16' in text, 'has_convolution': 'convolution' in text})
  return {'cases': cases}


def predictor_devices(overrides):
  """The Predictor on 2 devices (one program, the batch split) vs on 1: same detections; and
  the inference program exported for CUDA in float32 / bfloat16 on 1 and 2 devices."""
  import jax.numpy as jnp
  from yolact_jax import parallel
  from yolact_jax.config import get_config
  from yolact_jax.model.variables import init_variables
  from yolact_jax.predict import Predictor
  cfg = get_config('yolact_tiny', overrides)
  variables = jax.device_get(init_variables(cfg, seed=0))
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((40, 60), (64, 30),
                                                                        (50, 50))]
  one = Predictor(cfg, variables, max_batch=2, devices=jax.devices()[:1])
  two = Predictor(cfg, variables, max_batch=2, devices=jax.devices()[:2])
  a, b = one(images, channel_order='rgb'), two(images, channel_order='rgb')
  same = all(np.array_equal(x.boxes, y.boxes) and np.array_equal(x.classes, y.classes)
             and np.allclose(x.scores, y.scores, rtol=1e-5, atol=1e-6)
             and np.array_equal(x.masks, y.masks) for x, y in zip(a, b))
  lowered = []
  for devices in (1, 2):
    for dtype in (jnp.float32, jnp.bfloat16):
      predictor = Predictor(cfg, variables, max_batch=2, devices=jax.devices()[:devices],
                            dtype=dtype)
      mesh = predictor.mesh
      sharding = parallel.batch_sharding(mesh) if mesh is not None else None
      canvas = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.uint8, sharding=sharding)
      sizes = jax.ShapeDtypeStruct((2, 2), jnp.int32, sharding=sharding)
      exported = jax.export.export(predictor.program.from_images, platforms=['cuda'])(
          predictor.variables, canvas, sizes)
      lowered.append({'devices': devices, 'dtype': jnp.dtype(dtype).name,
                      'nr_devices': exported.nr_devices,
                      'platforms': list(exported.platforms)})
  return {'same_detections': bool(same), 'num_devices': [one.num_devices, two.num_devices],
          'counts': [len(x) for x in b], 'lowered': lowered}


def resume_across_devices(argv):
  """A run on 2 of 4 devices, uninterrupted to step 4, against the same run stopped at step 2
  and resumed on 1 and on 4 devices: max |difference| of the parameters and BN statistics.
  Global batch 8: the per-device BatchNorm rule freezes on 2 and 4 devices (4 and 2 images per
  device) but not on 1, so the resumed run must keep the mode it started with."""
  import pathlib
  import shutil
  from yolact_jax import trainer
  from yolact_jax.config import get_config
  from yolact_jax.data import coco, loader, synthetic
  root = pathlib.Path(argv[0])
  paths = synthetic.generate_synthetic_coco(root / 'data', num_train=12, num_val=0,
                                            image_hw=(64, 64), seed=2)
  source = loader.InMemoryRecordSource.from_coco(coco.CocoDataset(*paths['train']))
  cfg = get_config('yolact_tiny', ['train.batch_size=8', 'train.lr=0.003'])
  devices = jax.devices()

  def run(workdir, steps, count):
    summary = trainer.train(cfg, root / workdir, source, trainer.TrainOptions(
        num_steps=steps, progress=False, log_every=1, save_every=2, devices=devices[:count]))
    return jax.device_get((summary['state'].params, summary['state'].batch_stats))

  whole = run('whole', 4, 2)
  halfway = run('split', 2, 2)
  shutil.copytree(root / 'split', root / 'split4')
  result = {'devices': len(devices)}
  for name, count in (('split', 1), ('split4', 4)):
    resumed = run(name, 4, count)
    result[f'max_diff_{count}'] = max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(resumed)))
    saved = json.loads((root / name / 'config.json').read_text())
    result[f'freeze_bn_{count}'] = saved['train']['freeze_bn']
    result[f'num_devices_{count}'] = saved['num_devices']
  result['moved'] = max(  # what steps 3 and 4 changed: the scale a wrong batch would show at
      float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
      for a, b in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(halfway)))
  return result


if __name__ == '__main__':
  result = {'same_params': same_params, 'per_replica': per_replica,
            'resume_across_devices': resume_across_devices,
            'lower_for_cuda': lower_for_cuda,
            'predictor_devices': predictor_devices}[sys.argv[1]](sys.argv[2:])
  print('RESULT ' + json.dumps(result))
