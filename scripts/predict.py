"""Run YOLACT on an image, a folder of images or a video; write overlays and COCO results JSON.

  # one image -> predictions/<name> (or --output some/file.jpg)
  python scripts/predict.py --config yolact_base --weights yolact_base_54_800000.pth photo.jpg
  # a folder -> one overlay per readable image, plus COCO results for all detections
  python scripts/predict.py --config configs/yolact_base.py --weights weights/yolact_base \\
      images/ --output out/ --coco_json out/results.json --score_threshold 0.15 --top_k 15
  # a video -> an overlaid video (frames batched through the compiled program)
  python scripts/predict.py --config yolact_base --weights w.pth clip.mp4 --output clip_out.mp4
  # any config field: --config.detect.nms_conf_thresh=0.1, --config.detect.max_num_detections=50

Overlays follow the original's display mode and flags: ``--top_k`` (default 5) best detections
with score ``> --score_threshold`` (default 0), ranked and labelled with one score per detection,
the rescored one (YOLACT++: class score x predicted mask IoU; YOLACT: the class score; see
``yolact_jax.visualize.display_detections``). The COCO JSON holds every detection (up to
max_num_detections, as eval): ``{"bbox": [...], "segm": [...]}`` with the original eval.py's
records (bbox xywh from the integer boxes rounded to 0.1, RLE masks with ASCII counts, COCO
category ids for the COCO classes, else class index + 1); bbox records carry the class score,
segm records the mask score (the same for YOLACT). Evaluate one part with
``COCO(gt).loadRes(json.load(f)['segm'])``. Image ids: the number after the last '_' of a file
name when it is all digits (COCO names), else the running index; the frame index for videos.

An unreadable or corrupt image in a folder is reported by name and skipped.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
from collections.abc import Iterator

import cv2
import numpy as np

from yolact_jax.config import COMPUTE_DTYPES, NMS_KINDS

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')
VIDEO_CODECS = {'.avi': 'MJPG', '.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.mkv': 'mp4v'}


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('input', help='an image file, a folder of images or a video file')
  parser.add_argument('--config', required=True, help='preset name or configs/*.py file')
  parser.add_argument('--weights', required=True,
                      help='original .pth, yolact-jax weights directory or train.py run dir')
  parser.add_argument('--output', default='predictions',
                      help='output folder (or an image/video file name for a single input)')
  parser.add_argument('--coco_json', default=None, help='also write COCO results JSON here')
  parser.add_argument('--score_threshold', type=float, default=0.0,
                      help='overlays: show detections with score > this')
  parser.add_argument('--top_k', type=int, default=5, help='overlays: show at most this many')
  parser.add_argument('--nms', choices=NMS_KINDS, default=None,
                      help='NMS variant (default: the config\'s detect.nms)')
  parser.add_argument('--batch', type=int, default=4, help='images/frames per compiled call')
  parser.add_argument('--canvas', type=int, nargs=2, default=None, metavar=('H', 'W'),
                      help='fixed canvas every input must fit (default: grows as needed)')
  parser.add_argument('--dtype', choices=COMPUTE_DTYPES, default='float32',
                      help='network computation dtype')
  parser.add_argument('--alpha', type=float, default=0.45, help='mask opacity')
  parser.add_argument('--no_masks', action='store_true', help='do not draw masks')
  parser.add_argument('--no_progress', action='store_true', help='no progress bar')
  from yolact_jax.config import parse_args_with_overrides
  args, extra = parse_args_with_overrides(parser, argv)
  return args, extra


def coco_image_id(path: pathlib.Path, index: int) -> int:
  """The number after the last '_' of the file stem when it is all digits, else ``index``."""
  tail = path.stem.rsplit('_', 1)[-1]
  return int(tail) if tail.isdigit() else index


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_images(paths: list[pathlib.Path], skipped: list[str]) -> Iterator[tuple[str, np.ndarray]]:
  """(name, BGR uint8 image) for each readable file; unreadable ones are reported and skipped."""
  for path in paths:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
      print(f'warning: skipping {path.name}: not a readable image', file=sys.stderr)
      skipped.append(path.name)
      continue
    yield path.name, image


def read_frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
  while True:
    ok, frame = capture.read()
    if not ok:
      return
    yield frame


def with_inputs(items, predictor_stream):
  """Pairs each result of a stream with the item it came from (the stream consumes in order)."""
  queue = collections.deque()

  def feed():
    for item in items:
      queue.append(item)
      yield item[1]

  for detections in predictor_stream(feed()):
    yield queue.popleft(), detections


def progress(iterable, total, enabled, unit):
  if not enabled:
    return iterable
  from tqdm import tqdm
  return tqdm(iterable, total=total, unit=unit)


def run_images(args, predictor, render, coco, source: pathlib.Path) -> int:
  if source.is_dir():
    paths = list_images(source)
    out_dir = pathlib.Path(args.output)
    out_file = None
  else:
    paths = [source]
    out = pathlib.Path(args.output)
    out_file = out if out.suffix.lower() in IMAGE_SUFFIXES else None
    out_dir = out.parent if out_file else out
  out_dir.mkdir(parents=True, exist_ok=True)
  skipped: list[str] = []
  stream = lambda images: predictor.stream(images, channel_order='bgr')  # noqa: E731
  index = {p.name: i for i, p in enumerate(paths)}
  written = 0
  pairs = with_inputs(read_images(paths, skipped), stream)
  for (name, image), detections in progress(pairs, len(paths), not args.no_progress, 'img'):
    target = out_file or out_dir / name
    if not cv2.imwrite(str(target), render(image, detections)):
      print(f'warning: could not write {target}', file=sys.stderr)
    if coco is not None:
      coco.add(coco_image_id(pathlib.Path(name), index[name]), detections)
    written += 1
  print(f'{written} overlays written to {out_file or out_dir}'
        + (f'; skipped {len(skipped)} unreadable: {", ".join(skipped)}' if skipped else ''))
  if not paths:
    print(f'warning: no images ({", ".join(IMAGE_SUFFIXES)}) in {source}', file=sys.stderr)
  return 0 if written or not paths else 1


def run_video(args, predictor, render, coco, source: pathlib.Path) -> int:
  capture = cv2.VideoCapture(str(source))
  if not capture.isOpened():
    print(f'error: cannot open video {source}', file=sys.stderr)
    return 1
  fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
  total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
  out = pathlib.Path(args.output)
  if out.suffix.lower() not in VIDEO_SUFFIXES:
    out = out / (source.stem + '.avi')
  out.parent.mkdir(parents=True, exist_ok=True)
  writer = None
  frames = enumerate(read_frames(capture))
  stream = lambda images: predictor.stream(images, channel_order='bgr')  # noqa: E731
  count = 0
  try:
    for (index, frame), detections in progress(with_inputs(frames, stream), total,
                                                not args.no_progress, 'frame'):
      if writer is None:
        codec = VIDEO_CODECS.get(out.suffix.lower(), 'MJPG')
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*codec), fps,
                                 (frame.shape[1], frame.shape[0]))
        if not writer.isOpened():
          print(f'error: cannot write {out} with codec {codec}; try an .avi output',
                file=sys.stderr)
          return 1
      writer.write(render(frame, detections))
      if coco is not None:
        coco.add(index, detections)
      count += 1
  finally:
    capture.release()
    if writer is not None:
      writer.release()
  print(f'{count} frames written to {out}')
  return 0 if count else 1


def main(argv=None) -> int:
  args, overrides = parse_args(argv)
  source = pathlib.Path(args.input)
  if not source.exists():
    print(f'error: {source} does not exist', file=sys.stderr)
    return 1
  is_video = source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES

  import jax.numpy as jnp

  from yolact_jax import evaluation as ev
  from yolact_jax.checkpoint.convert import CheckpointError
  from yolact_jax.config import ConfigError, load_config
  from yolact_jax.predict import Predictor
  from yolact_jax.visualize import draw_detections
  try:
    cfg = load_config(args.config, overrides)
    predictor = Predictor(cfg, args.weights, max_batch=args.batch,
                          canvas_hw=tuple(args.canvas) if args.canvas else None, nms=args.nms,
                          dtype=jnp.dtype(args.dtype))
  except (ConfigError, CheckpointError, KeyError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1

  def render(image, detections):
    return draw_detections(image, detections, channel_order='bgr',
                           score_threshold=args.score_threshold, top_k=args.top_k,
                           alpha=args.alpha, draw_masks=not args.no_masks)

  # every detection of every image as results records (yolact_jax.evaluation.results)
  coco = (ev.CocoResults(ev.coco_category_ids(cfg.dataset.class_names)) if args.coco_json
          else None)
  run = run_video if is_video else run_images
  status = run(args, predictor, render, coco, source)
  if coco is not None:
    coco.write_combined(args.coco_json)
    print(f'COCO results ({len(coco.bbox)} detections) written to {args.coco_json}')
  return status


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  sys.exit(main())
