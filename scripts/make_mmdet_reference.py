"""Makes tests/data/mmdet_reference: mmdetection's own outputs for the yolact_mmdet_tiny preset, so
the test suite checks parity with mmdetection without it installed (tests/test_mmdet.py).

    python scripts/make_mmdet_reference.py [--out tests/data/mmdet_reference]

Needs mmdetection 3.x (pip install --no-deps mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0,
plus addict yapf termcolor rich terminaltables shapely scipy). Writes:
* weights.pth: seeded random weights (ours, BatchNorm statistics from one training-mode pass)
  loaded into mmdetection's model and saved from its state_dict() as its checkpoints are
  ({'meta', 'state_dict'}, mmdetection's keys and class order);
* reference.npz: two seeded uint8 images (RGB); the network input mmdetection's own test
  pipeline makes of them (its Resize on the BGR uint8 image, PackDetInputs, its data
  preprocessor: BGR -> RGB, mean / std); its head outputs in our layout from the float32 model
  and from a float64 copy (the true function on these weights); its detections end to end
  (model.predict at each image's size: boxes, labels, scores, packed masks); and a training
  batch (that network input with seeded ground truth, yolact_jax.compare.train's
  synthetic_targets) with mmdetection's assignment of every prior (its MaxIoUAssigner) and its
  loss terms (model.loss in training mode); and a second batch, crowded (8 objects, two GTs
  wanting one prior) and empty (no object: its OHEM keeps every negative);
* augment.npz / augment.json: mmdetection's training transforms (FilterAnnotations, Expand,
  MinIoURandomCrop, Resize, RandomFlip, PhotoMetricDistortion of its YOLACT config, at 64 px)
  on one small sample for 12 seeds, each fed the random draws our
  yolact_jax.data.mmdet_augment made for that seed (replayed in place of numpy.random): the
  draws, and mmdetection's image (normalised as ours), masks, boxes and labels.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESET = 'yolact_mmdet_tiny'
IMAGE_SIZES = ((120, 90), (70, 130))  # (h, w): taller and wider than the 96 px input


def mmdet_inputs(images_rgb, size, model, torch):
  """mmdetection's test pipeline on uint8 RGB images: (network input NCHW, data samples)."""
  from mmdet.datasets.transforms import PackDetInputs, Resize
  resize = Resize(scale=(size, size), keep_ratio=False)
  pack = PackDetInputs(meta_keys=('img_id', 'ori_shape', 'img_shape', 'scale_factor'))
  packed = []
  for i, rgb in enumerate(images_rgb):
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # as LoadImageFromFile reads it
    results = {'img': bgr, 'img_shape': bgr.shape[:2], 'ori_shape': bgr.shape[:2], 'img_id': i}
    packed.append(pack(resize(results)))
  data = model.data_preprocessor({'inputs': [p['inputs'] for p in packed],
                                  'data_samples': [p['data_samples'] for p in packed]}, False)
  return data['inputs'], data['data_samples']


def mmdet_training(model, inputs, targets, size, torch):
  """mmdetection's assignment of every prior ([B, P]: 0 background, -1 ignored, j + 1 GT j) and
  its loss terms (lists summed over the images) on one batch, the model in training mode."""
  from yolact_jax.compare.mmdet import loss_terms, train_samples
  samples = train_samples(targets, size, torch)
  head = model.bbox_head
  model.train()
  with torch.no_grad():
    feats = model.extract_feat(inputs)
    sizes = [f.shape[-2:] for f in head.forward(feats)[0]]
  anchors = torch.cat(head.prior_generator.grid_priors(sizes, device=inputs.device))
  from mmengine.structures import InstanceData
  assigned = np.stack([head.assigner.assign(InstanceData(priors=anchors),
                                            s.gt_instances).gt_inds.numpy() for s in samples])
  terms = {k: float(v.detach()) for k, v in loss_terms(model.loss(inputs, samples)).items()}
  model.eval()
  return assigned, terms


AUGMENT_SIZE = 64
AUGMENT_SEEDS = 12


def augment_sample():
  """A small BGR image with three objects and one box under 4 px (the filter drops it)."""
  rng = np.random.default_rng(7)
  image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
  boxes = np.array([[5, 5, 40, 30], [30, 20, 75, 55], [2, 40, 20, 58], [60, 2, 63, 8]], np.float64)
  masks = np.zeros((4, 60, 80), np.uint8)
  for mask, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
    mask[y1:y2, x1:x2] = 1
  return image, masks, boxes, np.array([0, 1, 2, 3], np.int32)


class Replay:
  """Stands in for numpy.random: answers each call with the next recorded draw."""

  def __init__(self, values):
    self.values = list(values)

  def _next(self, *args, **kwargs):
    return self.values.pop(0)

  uniform = randint = choice = _next

  def permutation(self, *args, **kwargs):
    return np.asarray(self._next())


def mmdet_augmentations():
  """Per seed: our draws and mmdetection's transforms' outputs on :func:`augment_sample`."""
  from unittest import mock

  import mmdet.datasets.transforms.transforms as T
  from mmdet.datasets.transforms import (Expand, FilterAnnotations, MinIoURandomCrop,
                                         PhotoMetricDistortion, RandomFlip, Resize)
  from mmdet.structures.bbox import HorizontalBoxes
  from mmdet.structures.mask import BitmapMasks

  from yolact_jax.data import augment, mmdet_augment
  image, masks, boxes, labels = augment_sample()
  h, w = image.shape[:2]
  steps = [FilterAnnotations(min_gt_bbox_wh=(4.0, 4.0)),
           Expand(mean=[123.68, 116.78, 103.94], to_rgb=True, ratio_range=(1, 4)),
           MinIoURandomCrop(min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size=0.3),
           Resize(scale=(AUGMENT_SIZE, AUGMENT_SIZE), keep_ratio=False), RandomFlip(prob=0.5),
           PhotoMetricDistortion(brightness_delta=32, contrast_range=(0.5, 1.5),
                                 saturation_range=(0.5, 1.5), hue_delta=18)]
  draws, arrays = [], {}
  for seed in range(AUGMENT_SEEDS):
    ours = mmdet_augment.Draws(np.random.default_rng(seed))
    mmdet_augment.train_transform(image, masks, boxes / [w, h, w, h], labels, 0, ours,
                                  max_size=AUGMENT_SIZE)
    values = [v.tolist() if isinstance(v, np.ndarray) else v for v in ours.values]
    draws.append(values)
    replay = Replay(values)
    results = {'img': image.copy(), 'img_shape': (h, w), 'ori_shape': (h, w),
               'gt_bboxes': HorizontalBoxes(boxes.astype(np.float32)),
               'gt_bboxes_labels': labels.astype(np.int64),
               'gt_ignore_flags': np.zeros(len(labels), bool),
               'gt_masks': BitmapMasks(masks.copy(), h, w)}
    with mock.patch.object(T, 'random', replay), mock.patch('numpy.random.choice', replay.choice):
      for step in steps:
        results = step(results)
    assert not replay.values, f'seed {seed}: {len(replay.values)} draws left over'
    arrays[f'image_{seed}'] = augment.backbone_transform(results['img'])
    arrays[f'masks_{seed}'] = results['gt_masks'].masks.astype(np.uint8)
    arrays[f'boxes_{seed}'] = results['gt_bboxes'].numpy() / AUGMENT_SIZE
    arrays[f'labels_{seed}'] = results['gt_bboxes_labels']
  return draws, arrays


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--out', type=pathlib.Path, default=ROOT / 'tests/data/mmdet_reference')
  args = parser.parse_args(argv)
  import jax
  import torch

  from yolact_jax.compare import mmdet as harness
  from yolact_jax.compare.weights import random_variables
  from yolact_jax.config import get_config
  from yolact_jax.predict import pack_canvas, preprocess
  cfg = get_config(PRESET)
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in IMAGE_SIZES]
  canvas, sizes = pack_canvas(images, (max(h for h, _ in IMAGE_SIZES),
                                       max(w for _, w in IMAGE_SIZES)), len(images))
  b = cfg.model.backbone
  calibration = np.asarray(preprocess(canvas, sizes, cfg.max_size, b.transform, b.input_resize))
  variables = jax.device_get(random_variables(cfg, 0, calibration))
  args.out.mkdir(parents=True, exist_ok=True)
  with harness.mmdet_runtime() as mmdet:
    model = harness.build_model(cfg, variables, torch, mmdet)
    torch.save({'meta': {'mmdet_version': mmdet.__version__, 'config': PRESET,
                         'dataset_meta': {'classes': list(cfg.dataset.class_names)}},
                'state_dict': model.state_dict()}, args.out / 'weights.pth')
    inputs, samples = mmdet_inputs(images, cfg.max_size, model, torch)
    with torch.no_grad():
      predicted = model.predict(inputs, samples)
    model64 = harness.copy.deepcopy(model).double()
    raw32 = harness.raw_outputs(model, inputs, torch, cfg.max_size)
    raw64 = harness.raw_outputs(model64, inputs.double(), torch, cfg.max_size)
    arrays = {f'image_{i}': image for i, image in enumerate(images)}
    arrays['net_input'] = inputs.permute(0, 2, 3, 1).numpy()
    arrays.update({f'raw32_{k}': v for k, v in raw32.items()})
    arrays.update({f'raw64_{k}': v for k, v in raw64.items() if k != 'priors'})
    for i, sample in enumerate(predicted):
      h, w = IMAGE_SIZES[i]
      result = harness.mmdet_result(sample.pred_instances, h, w)
      arrays.update({f'dets{i}_{k}': result[k] for k in ('classes', 'scores', 'boxes')})
      arrays[f'dets{i}_masks'] = np.packbits(result['masks'].astype(bool), axis=-1)
    from yolact_jax.compare.train import synthetic_targets
    targets = synthetic_targets(len(images), cfg.max_size, 3, cfg.num_classes, seed=0)
    assigned, losses = mmdet_training(model, inputs, targets, cfg.max_size, torch)
    arrays.update({f'train_{k}': v for k, v in targets.items()})
    arrays['train_assigned'] = assigned
    crowded = synthetic_targets(1, cfg.max_size, 8, cfg.num_classes, seed=1)
    second = {k: [v[0], v[0][:0]] for k, v in crowded.items()}  # image 1: no object
    assigned2, losses2 = mmdet_training(model, inputs, second, cfg.max_size, torch)
    arrays.update({f'train2_{k}': v for k, v in crowded.items()})
    arrays['train2_assigned'] = assigned2
    np.savez_compressed(args.out / 'reference.npz', **arrays)
    draws, augmented = mmdet_augmentations()
    np.savez_compressed(args.out / 'augment.npz', **augmented)
    (args.out / 'augment.json').write_text(json.dumps({'draws': draws}) + '\n')
    about = {'preset': PRESET, 'image_sizes': IMAGE_SIZES, 'mmdet': mmdet.__version__,
             'torch': torch.__version__, 'test_cfg': dict(model.test_cfg),
             'scale_factors': [list(s.scale_factor) for s in samples],
             'train_losses': losses, 'train2_losses': losses2,
             'command': 'python scripts/make_mmdet_reference.py'}
    (args.out / 'about.json').write_text(json.dumps(about, indent=1) + '\n')
  print(f'wrote {args.out}: {len(predicted)} images, '
        f'{[len(s.pred_instances) for s in predicted]} detections')


if __name__ == '__main__':
  main()
