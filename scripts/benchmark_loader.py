"""Loader throughput with the full training augmentation on the synthetic dataset.

  python scripts/benchmark_loader.py --num_images 200 --workers 0 1 2 \
      --out results/loader_benchmark.json

For each worker count: images/s of the grain training loader (batches of --batch_size at
--max_size px, every augmentation on, GT masks downsampled to proto/segm size), measured after
the first batch (process start-up excluded), and images/s per worker process (in-process counts
as one). An in-process breakdown says where the time goes (decode, each augmentation stage,
mask downsampling), per image.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
import time

import numpy as np


def _loader_rate(source, options, workers: int, batch_size: int, num_images: int) -> dict:
  from yolact_jax.bench.timing import time_calls
  from yolact_jax.data import loader
  start = time.perf_counter()
  iterator = iter(loader.make_train_loader(source, batch_size=batch_size, seed=0,
                                           options=options, worker_count=workers))
  next(iterator)
  first = time.perf_counter() - start
  num_batches = max(num_images // batch_size, 1)
  elapsed = sum(time_calls(functools.partial(next, iterator), num_batches, warmup=0, wait=None))
  del iterator
  images_per_s = num_batches * batch_size / elapsed
  return {'workers': workers, 'images': num_batches * batch_size, 'seconds': elapsed,
          'images_per_s': images_per_s, 'images_per_s_per_process': images_per_s / max(workers, 1),
          'first_batch_s': first}


_STAGES = (  # (label, profiled function name)
    ('read + decode image and masks', 'decode_record'),
    ('photometric distort', 'photometric_distort'),
    ('expand / crop window (image + masks)', '_canvas_window'),
    ('cv2.resize to max_size (image + masks)', 'resize'),
    ('normalise', 'backbone_transform'),
    ('mask downsample to proto + segm', 'downsample_binarize_masks'),
)


def _breakdown(source, options, num_images: int) -> dict:
  """Where the time goes: cumulative ms per image of each stage, profiling the loader's own
  per-image function in this process."""
  import cProfile
  import pstats
  import cv2
  from yolact_jax.data import loader
  cv2.setNumThreads(options.cv2_threads or 0)
  profile = cProfile.Profile()
  count = min(num_images, len(source))
  start = time.perf_counter()
  profile.enable()
  for index in range(count):
    loader.make_train_example(source, index, np.random.default_rng(index), options)
  profile.disable()
  total = time.perf_counter() - start
  stats = pstats.Stats(profile).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
  result = {'total (profiled)': 1000 * total / count}
  for label, name in _STAGES:
    cumulative = sum(v[3] for k, v in stats.items() if k[2] in (name, f'<{name}>'))
    result[label] = 1000 * cumulative / count
  return result


def main(argv=None) -> int:
  from yolact_jax.cli.common import Parser  # dashed spellings stay accepted
  parser = Parser(description=__doc__)
  parser.add_argument('--num_images', type=int, default=200, help='images timed per setting')
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--max_size', type=int, default=550)
  parser.add_argument('--data_dir', default='data_cache/synthetic_benchmark',
                      help='synthetic dataset folder (generated if missing)')
  parser.add_argument('--image_hw', type=int, nargs=2, metavar=('H', 'W'),
                      help='fixed synthetic image size (default: sides 256-550 px); e.g. '
                           '480 640 with --max_objects 12 is closer to COCO')
  parser.add_argument('--max_objects', type=int, default=6, help='synthetic objects per image')
  parser.add_argument('--out', default='results/loader_benchmark.json')
  args = parser.parse_args(argv)
  load_before = os.getloadavg()

  from yolact_jax.data import coco, loader, synthetic
  from yolact_jax.bench.machine import cpu_info
  paths = synthetic.generate_synthetic_coco(args.data_dir, num_train=args.num_images,
                                            num_val=0, seed=0, image_hw=args.image_hw,
                                            max_objects=args.max_objects)
  dataset = coco.CocoDataset(*paths['train'])
  source = loader.InMemoryRecordSource.from_coco(dataset)
  segm = -(-args.max_size // 8)  # P3 size: 69 at 550
  proto = 2 * segm               # prototypes: 138 at 550
  options = loader.PipelineOptions(max_size=args.max_size, proto_hw=(proto, proto),
                                   segm_hw=(segm, segm))
  results = [_loader_rate(source, options, w, args.batch_size, args.num_images)
             for w in args.workers]
  for r in results:
    print(f"workers={r['workers']}: {r['images_per_s']:.1f} images/s "
          f"({r['images_per_s_per_process']:.1f} per process; first batch "
          f"{r['first_batch_s']:.1f} s)")
  breakdown = _breakdown(source, options, min(args.num_images, 100))
  for key, ms in breakdown.items():
    print(f'  {key}: {ms:.2f} ms/image')
  report = {
      'machine': {'cpu': cpu_info()['model'], 'cpu_count': os.cpu_count(),
                  'platform': platform.platform(), 'python': platform.python_version(),
                  'load_average_1min_before_after': [load_before[0], os.getloadavg()[0]]},
      'settings': {'num_images': args.num_images, 'batch_size': args.batch_size,
                   'max_size': args.max_size, 'proto_hw': options.proto_hw,
                   'segm_hw': options.segm_hw, 'max_instances': options.max_instances,
                   'augmentation': 'photometric, expand, random sample crop, mirror, resize',
                   'dataset': f'synthetic, {len(dataset)} images, ' + (
                       f'{args.image_hw[0]}x{args.image_hw[1]} px' if args.image_hw
                       else 'sides 256-550 px'),
                   'mean_instances_per_image': float(np.mean(
                       [len(r['is_crowd']) for r in dataset.records]))},
      'results': results,
      'breakdown_ms_per_image_in_process': breakdown,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=2)
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
