"""``yolact-jax predict``: YOLACT on an image, a folder of images, a video or a camera; overlays
and COCO results JSON.

  # one image -> predictions/<name> (or --out some/file.jpg)
  yolact-jax predict --config yolact_base --weights yolact_base_54_800000.pth photo.jpg
  # a folder -> one overlay per readable image, plus COCO results for all detections
  yolact-jax predict --config configs/yolact_base.py --weights weights/yolact_base \\
      images/ --out out/ --coco_json out/results.json --score_threshold 0.15 --top_k 15
  # a video -> an overlaid video (frames batched through the compiled program)
  yolact-jax predict --config yolact_base --weights w.pth clip.mp4 --out clip_out.mp4
  # a training run needs no --config (its config.json is read back); the original's flags work
  yolact-jax predict --trained_model runs/demo --images data/val:out/ --top_k 15
  yolact-jax predict --weights runs/demo --video 0:camera.avi   # camera 0 until Ctrl-C
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
import pathlib
import sys
from collections.abc import Iterator

import cv2
import numpy as np

from yolact_jax.cli import common
from yolact_jax.config import COMPUTE_DTYPES, NMS_KINDS

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg')
VIDEO_CODECS = {'.avi': 'MJPG', '.mp4': 'mp4v', '.m4v': 'mp4v', '.mov': 'mp4v', '.mkv': 'mp4v'}
DEFAULT_OUT = 'predictions'


def build_parser() -> argparse.ArgumentParser:
  parser = common.Parser(prog='yolact-jax predict', description=__doc__)
  parser.add_argument('input', nargs='?', default=None,
                      help='an image file, a folder of images or a video file (or use --image, '
                           '--images, --video)')
  common.add_config_arg(parser)
  parser.add_argument('--weights', default=None,
                      help='original .pth, yolact-jax weights directory or training run dir')
  parser.add_argument('--out', default=None,
                      help=f'output folder (or an image/video file name for a single input; '
                           f'default {DEFAULT_OUT}/)')
  common.add_alias(parser, '--output', 'out')
  originals = parser.add_argument_group("the original eval.py's inputs (instead of INPUT)")
  originals.add_argument('--image', default=None, metavar='IN[:OUT]', help='one image')
  originals.add_argument('--images', default=None, metavar='IN:OUT', help='a folder of images')
  originals.add_argument('--video', default=None, metavar='IN[:OUT]',
                         help='a video file, or a camera index (0, 1, ...)')
  parser.add_argument('--max_images', type=int, default=None,
                      help='a folder: only its first N images')
  parser.add_argument('--coco_json', default=None, help='also write COCO results JSON here')
  parser.add_argument('--score_threshold', type=float, default=0.0,
                      help='overlays: show detections with score > this')
  parser.add_argument('--top_k', type=int, default=5, help='overlays: show at most this many')
  parser.add_argument('--nms', choices=NMS_KINDS, default=None,
                      help='NMS variant (default: the config\'s detect.nms)')
  parser.add_argument('--batch_size', type=int, default=4, help='images/frames per compiled call')
  common.add_alias(parser, '--batch', 'batch_size', type=int)
  parser.add_argument('--canvas', type=int, nargs=2, default=None, metavar=('H', 'W'),
                      help='fixed canvas every input must fit (default: grows as needed)')
  parser.add_argument('--dtype', choices=COMPUTE_DTYPES, default='float32',
                      help='network computation dtype')
  parser.add_argument('--alpha', type=float, default=0.45, help='mask opacity')
  parser.add_argument('--no_masks', action='store_true', help='do not draw masks')
  parser.add_argument('--no_progress', action='store_true', help='no progress bar')
  common.add_original_eval_flags(parser)
  return parser


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
  parser = build_parser()
  args, extra = common.parse_with_overrides(parser, argv)
  given = [f for f in ('input', 'image', 'images', 'video') if getattr(args, f)]
  if len(given) != 1:
    parser.error('give one input: INPUT, --image, --images or --video')
  if not args.weights:
    parser.error('--weights (or --trained_model) is required')
  for name in ('batch_size', 'max_images'):
    value = getattr(args, name)
    if value is not None and value < 1:
      parser.error(f'--{name} must be >= 1, got {value}')
  return args, extra


def resolve_input(args: argparse.Namespace) -> tuple[str, str | int, str]:
  """('images' | 'video', the source (a path, or a camera index), the output location)."""
  spec = args.input or args.image or args.images or args.video
  source, _, out = spec.partition(':') if not args.input else (spec, '', '')
  out = out or args.out or DEFAULT_OUT
  if args.video and source.isdigit() and not pathlib.Path(source).exists():
    return 'video', int(source), out  # a camera
  path = pathlib.Path(source)
  if not path.exists():
    raise common.UsageError(f'{path} does not exist')
  if args.images and not path.is_dir():
    raise common.UsageError(f'--images needs a folder, got {path}')
  is_video = args.video or (path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES)
  return ('video' if is_video else 'images'), source, out
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


def image_paths(args: argparse.Namespace, source: str) -> list[pathlib.Path]:
  """The images to run: the file itself, or a folder's images (its first --max_images)."""
  path = pathlib.Path(source)
  if not path.is_dir():
    return [path]
  paths = list_images(path)[:args.max_images]
  if not paths:
    raise common.UsageError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in {path}')
  return paths


def run_images(args, predictor, render, coco, source: pathlib.Path,
               paths: list[pathlib.Path], out: str) -> int:
  if source.is_dir():
    out_dir, out_file = pathlib.Path(out), None
  else:
    target = pathlib.Path(out)
    out_file = target if target.suffix.lower() in IMAGE_SUFFIXES else None
    out_dir = target.parent if out_file else target
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
  return 0 if written else 1


def video_target(source: str | int, out: str) -> pathlib.Path:
  target = pathlib.Path(out)
  if target.suffix.lower() not in VIDEO_SUFFIXES:
    stem = f'camera{source}' if isinstance(source, int) else pathlib.Path(source).stem
    target = target / (stem + '.avi')
  return target


def run_video(args, predictor, render, coco, source: str | int, out: str) -> int:
  capture = cv2.VideoCapture(source)
  if not capture.isOpened():
    what = f'camera {source}' if isinstance(source, int) else f'video {source}'
    raise common.UsageError(f'cannot open {what}')
  fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
  total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
  target = video_target(source, out)
  target.parent.mkdir(parents=True, exist_ok=True)
  writer = None
  frames = enumerate(read_frames(capture))
  stream = lambda images: predictor.stream(images, channel_order='bgr')  # noqa: E731
  count = 0
  try:
    for (index, frame), detections in progress(with_inputs(frames, stream), total,
                                                not args.no_progress, 'frame'):
      if writer is None:
        codec = VIDEO_CODECS.get(target.suffix.lower(), 'MJPG')
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*codec), fps,
                                 (frame.shape[1], frame.shape[0]))
        if not writer.isOpened():
          raise common.UsageError(f'cannot write {target} with codec {codec}; try an .avi '
                                  'output')
      writer.write(render(frame, detections))
      if coco is not None:
        coco.add(index, detections)
      count += 1
  except KeyboardInterrupt:  # a camera runs until Ctrl-C
    print('stopped', file=sys.stderr)
  finally:
    capture.release()
    if writer is not None:
      writer.release()
  print(f'{count} frames written to {target}')
  return 0 if count else 1


@common.cli_errors
def main(argv=None) -> int:
  common.quiet_tensorflow()
  args, overrides = parse_args(argv)
  cfg = common.config_for_weights(args, overrides)
  kind, source, out = resolve_input(args)
  paths = image_paths(args, source) if kind == 'images' else []
  nms = common.nms_choice(args)

  import jax.numpy as jnp

  from yolact_jax import evaluation as ev
  from yolact_jax.predict import Predictor
  from yolact_jax.visualize import draw_detections
  predictor = Predictor(cfg, args.weights, max_batch=args.batch_size,
                        canvas_hw=tuple(args.canvas) if args.canvas else None, nms=nms,
                        dtype=jnp.dtype(args.dtype))

  def render(image, detections):
    return draw_detections(image, detections, channel_order='bgr',
                           score_threshold=args.score_threshold, top_k=args.top_k,
                           alpha=args.alpha, draw_masks=not args.no_masks)

  # every detection of every image as results records (yolact_jax.evaluation.results)
  coco = (ev.CocoResults(ev.coco_category_ids(cfg.dataset.class_names)) if args.coco_json
          else None)
  if kind == 'video':
    status = run_video(args, predictor, render, coco, source, out)
  else:
    status = run_images(args, predictor, render, coco, pathlib.Path(source), paths, out)
  if coco is not None:
    coco.write_combined(args.coco_json)
    print(f'COCO results ({len(coco.bbox)} detections) written to {args.coco_json}')
  return status
