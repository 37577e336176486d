"""The main job on a CPU: train YOLACT from scratch on the synthetic shapes and evaluate it.

  python scripts/demo.py                       # outputs/demo: checkpoint, metrics, pictures
  python scripts/demo.py --iterations 12000 --out outputs/demo_long   # the schedule 4x longer

1. Generates the synthetic COCO-format dataset (train + val) in --data_dir unless it is there.
2. Trains the ``yolact_cpu`` preset with a progress bar (resumes, or skips when finished).
3. Evaluates on the held-out split with pycocotools and prints the box and mask mAP table.
4. Writes into --out: ``run/`` (orbax checkpoints; loads with ``checkpoint.io.load_weights``),
   ``metrics.json`` (COCO numbers, per-class AP, training summary), ``loss_curve.png`` (each
   loss term) and ``predictions.png`` (predictions beside the ground truth on val images).
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time

import numpy as np

# Run from a checkout without installing: make the package importable.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default='yolact_cpu', help='preset or configs/<name>.py')
  parser.add_argument('--out', default='outputs/demo', help='output folder')
  parser.add_argument('--data_dir', default='data/synthetic', help='synthetic dataset folder')
  parser.add_argument('--num_train', type=int, default=3000, help='synthetic train images')
  parser.add_argument('--num_val', type=int, default=100, help='synthetic val images')
  parser.add_argument('--image_side', type=int, nargs=2, default=(128, 256),
                      help='range of synthetic image sides (pixels)')
  parser.add_argument('--any_aspect', action='store_true',
                      help='draw the two sides of each image independently (default: square '
                           'images, one side from --image_side)')
  parser.add_argument('--steps', type=int, default=None,
                      help='stop training after this many iterations (the schedule unchanged)')
  parser.add_argument('--iterations', type=int, default=None,
                      help='train for this many iterations with the schedule stretched to fit '
                           '(max_iter and lr_steps scaled, e.g. 12000)')
  parser.add_argument('--workers', type=int, default=1, help='data loader processes')
  parser.add_argument('--grid_images', type=int, default=6, help='val images in the picture')
  parser.add_argument('--no_progress', action='store_true')
  from yolact_jax.config import parse_args_with_overrides
  args, overrides = parse_args_with_overrides(parser, argv)
  return args, overrides


def plot_losses(metrics_file: pathlib.Path, out_png: pathlib.Path) -> None:
  """Each loss term and the total against the iteration (from trainer's metrics.jsonl)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
  rows = [r for r in rows if r.get('kind') == 'train']
  fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
  steps = [r['step'] for r in rows]
  labels = {'loss': 'total', 'B': 'box (B)', 'C': 'class (C)', 'M': 'mask (M)',
            'S': 'semantic (S)'}
  for key, label in labels.items():
    if rows and key in rows[0]:
      ax.plot(steps, [r[key] for r in rows], label=label, lw=2 if key == 'loss' else 1)
  ax.set_xlabel('iteration')
  ax.set_ylabel('loss')
  ax.set_yscale('log')
  ax.grid(alpha=0.3)
  ax.legend()
  ax.set_title('YOLACT training loss (synthetic shapes)')
  fig.tight_layout()
  fig.savefig(out_png)
  plt.close(fig)


def prediction_grid(cfg, variables, val_dataset, count: int, out_png: pathlib.Path,
                    tile: int = 256) -> None:
  """Ground truth beside the predictions (score > 0.3, top 10) for the first val images, each
  image scaled to a ``tile`` px square cell before drawing."""
  import cv2
  from yolact_jax import visualize
  from yolact_jax.predict import Predictor
  predictor = Predictor(cfg, variables, max_batch=min(count, 8))
  samples = [val_dataset[i] for i in range(min(count, len(val_dataset)))]
  detections = predictor([s.image for s in samples], channel_order='bgr')
  names = val_dataset.class_names
  panels, titles = [], []
  for sample, dets in zip(samples, detections):
    rgb = cv2.cvtColor(sample.image, cv2.COLOR_BGR2RGB)
    h, w = sample.orig_hw
    real = sample.labels >= 0
    image, boxes, masks = visualize.fit_to_tile(rgb, sample.boxes[real] * np.array([w, h, w, h]),
                                                sample.masks[real], tile)
    panels.append(visualize.draw_instances(image, boxes, sample.labels[real], masks=masks,
                                           names=[names[c] for c in sample.labels[real]],
                                           box_thickness=2))
    shown = visualize.display_detections(dets, score_threshold=0.3, top_k=10)
    image, boxes, masks = visualize.fit_to_tile(rgb, shown.boxes, shown.masks, tile)
    panels.append(visualize.draw_instances(image, boxes, shown.classes, masks=masks,
                                           scores=shown.scores, names=shown.class_names,
                                           box_thickness=2))
    titles += [f'ground truth #{sample.image_id}', f'prediction #{sample.image_id}']
  grid = visualize.make_grid(panels, columns=4, titles=titles)
  cv2.imwrite(str(out_png), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def main(argv=None) -> int:
  logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
  args, overrides = parse_args(argv)
  import jax
  from yolact_jax import evaluation, train_step, trainer
  from yolact_jax.cli import common
  from yolact_jax.config import config_to_dict, load_config
  from yolact_jax.data import coco, loader, synthetic

  cfg = load_config(args.config, overrides)
  if args.iterations:
    cfg = train_step.stretch_schedule(cfg, args.iterations)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  started = time.perf_counter()

  print(f'[1/4] synthetic dataset in {args.data_dir}')
  paths = synthetic.generate_synthetic_coco(args.data_dir, num_train=args.num_train,
                                            num_val=args.num_val, seed=0,
                                            side_range=tuple(args.image_side),
                                            square=not args.any_aspect)
  train_set = coco.CocoDataset(*paths['train'])
  val_ann, val_dir = paths['val']
  val_set = coco.CocoDataset(val_ann, val_dir, keep='with_annotations')

  # The run directory records its dataset, so `yolact-jax evaluate --weights outputs/demo/run`
  # scores this validation split without dataset flags.
  common.write_data_record(out / 'run', common.DataSelection(
      'synthetic', data_dir=args.data_dir, synthetic_train=args.num_train,
      synthetic_val=args.num_val))
  print(f'[2/4] training {cfg.name} ({cfg.max_size} px) in {out / "run"}')
  options = trainer.TrainOptions(num_steps=args.steps, log_every=25, save_every=250,
                                 workers=args.workers, progress=not args.no_progress)
  train_summary = trainer.train(cfg, out / 'run', loader.InMemoryRecordSource.from_coco(train_set),
                                options)
  variables = jax.device_get(trainer.state_variables(train_summary.pop('state')))
  train_seconds = time.perf_counter() - started

  print(f'[3/4] evaluating on {len(val_set)} validation images')
  summary = evaluation.evaluate_model(cfg, variables, val_set, batch_size=8,
                                      progress=not args.no_progress)
  print(evaluation.format_summary(summary))
  print(evaluation.format_per_class(summary))

  print(f'[4/4] pictures and metrics in {out}')
  plot_losses(out / 'run' / 'metrics.jsonl', out / 'loss_curve.png')
  prediction_grid(cfg, variables, val_set, args.grid_images, out / 'predictions.png')
  report = {
      'config': cfg.name, 'box_map': summary['bbox']['AP'], 'mask_map': summary['segm']['AP'],
      'bbox': summary['bbox'], 'segm': summary['segm'],
      'train': {k: v for k, v in train_summary.items() if k not in ('last_eval',)},
      'seconds': {'until_trained': train_seconds, 'total': time.perf_counter() - started},
      'num_val_images': len(val_set), 'machine': {'devices': str(jax.devices())},
      'config_values': config_to_dict(cfg)}
  (out / 'metrics.json').write_text(json.dumps(report, indent=1, default=float))
  print(f'box mAP {100 * report["box_map"]:.1f}, mask mAP {100 * report["mask_map"]:.1f} '
        f'({report["seconds"]["total"] / 60:.1f} min)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
