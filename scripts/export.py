"""Export the image-to-masks program once, to run it without the model code.

  # StableHLO (jax.export) for CPU and CUDA in one file, symbolic batch; weights beside it
  python scripts/export.py --config yolact_base --weights yolact_base_54_800000.pth \\
      --format stablehlo --out served/yolact_base.stablehlo
  # ONNX (needs jax2onnx, onnx, onnxruntime), fixed batch 1, canvas 640x640
  python scripts/export.py --config yolact_resnet50 --weights w.pth --format onnx \\
      --out served/yolact_resnet50.onnx --batch 1 --canvas 640 640
  # any config field: --config.detect.nms_conf_thresh=0.1

Writes PATH (the program), PATH.json (metadata: preset, class names, input contract, outputs,
versions, sha256) and, for StableHLO, PATH.weights.npz. Run it with
``yolact_jax.serving.load(PATH)(images, channel_order='rgb')``.
"""

from __future__ import annotations

import argparse
import os
import sys

from yolact_jax.config import COMPUTE_DTYPES, NMS_KINDS


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='preset name or configs/*.py file')
  parser.add_argument('--weights', required=True,
                      help='original .pth, yolact-jax weights directory or train.py run dir')
  parser.add_argument('--format', required=True, choices=('stablehlo', 'onnx'))
  parser.add_argument('--out', required=True, help='the artefact path (sidecars beside it)')
  parser.add_argument('--batch', type=int, default=4,
                      help='images per call (StableHLO: the runtime default, any batch works '
                           'unless --static_batch; ONNX: the fixed batch)')
  parser.add_argument('--static_batch', action='store_true',
                      help='StableHLO: bake --batch into the program instead of a symbolic batch')
  parser.add_argument('--canvas', type=int, nargs=2, default=None, metavar=('H', 'W'),
                      help='the fixed canvas every image must fit (default: max_size rounded '
                           'up to 128, square)')
  parser.add_argument('--nms', choices=NMS_KINDS, default=None,
                      help='NMS variant (default: the config\'s detect.nms)')
  parser.add_argument('--dtype', choices=COMPUTE_DTYPES, default='float32',
                      help='network compute dtype (ONNX: float32 only)')
  parser.add_argument('--platforms', nargs='+', default=['cpu', 'cuda'],
                      help='StableHLO: platforms to lower for (one file)')
  from yolact_jax.config import parse_args_with_overrides
  return parse_args_with_overrides(parser, argv)


def main(argv=None) -> int:
  args, overrides = parse_args(argv)
  from yolact_jax.checkpoint.convert import CheckpointError
  from yolact_jax.config import ConfigError, load_config
  from yolact_jax.serving import export as ex
  try:
    cfg = load_config(args.config, overrides)
    spec = ex.make_spec(cfg, nms=args.nms, dtype=args.dtype,
                        canvas_hw=tuple(args.canvas) if args.canvas else None, batch=args.batch,
                        static_batch=args.static_batch)
    if args.format == 'stablehlo':
      meta = ex.export_stablehlo(spec, args.weights, args.out, tuple(args.platforms))
    else:
      from yolact_jax.serving import onnx_export
      meta = onnx_export.export_onnx(spec, args.weights, args.out)
  except (ConfigError, CheckpointError, ValueError, ImportError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  shape = meta['input']['images']['shape']
  print(f'{meta["kind"]} artefact written to {args.out} (+ .json'
        + (', .weights.npz' if meta['kind'] == 'stablehlo' else '') + f'): {meta["preset"]}, '
        f'images uint8 {shape}, nms {meta["nms"]}, platforms {", ".join(meta["platforms"])}')
  return 0


if __name__ == '__main__':
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  sys.exit(main())
