"""``yolact-jax export``: the image-to-masks program, exported once to run without the model code.

  # StableHLO (jax.export) for CPU and CUDA in one file, symbolic batch; weights beside it
  yolact-jax export --config yolact_base --weights yolact_base_54_800000.pth \\
      --format stablehlo --out served/yolact_base.stablehlo
  # ONNX (needs the [onnx] extra and jax2onnx: docs/serving.md), fixed batch 1, canvas 640x640
  yolact-jax export --config yolact_resnet50 --weights w.pth --format onnx \\
      --out served/yolact_resnet50.onnx --batch_size 1 --canvas 640 640
  # a training run needs no --config (its config.json is read back)
  yolact-jax export --weights runs/demo --format stablehlo --out served/demo.stablehlo
  # any config field: --config.detect.nms_conf_thresh=0.1

Writes PATH (the program), PATH.json (metadata: preset, class names, input contract, outputs,
versions, sha256) and, for StableHLO, PATH.weights.npz. Run it with
``yolact_jax.serving.load(PATH)(images, channel_order='rgb')``.
"""

from __future__ import annotations

from yolact_jax.cli import common
from yolact_jax.config import COMPUTE_DTYPES, NMS_KINDS


def build_parser():
  parser = common.Parser(prog='yolact-jax export', description=__doc__)
  common.add_config_arg(parser)
  parser.add_argument('--weights', required=True,
                      help='original .pth, yolact-jax weights directory or training run dir')
  parser.add_argument('--format', required=True, choices=('stablehlo', 'onnx'))
  parser.add_argument('--out', required=True, help='the artefact path (sidecars beside it)')
  parser.add_argument('--batch_size', type=int, default=4,
                      help='images per call (StableHLO: the runtime default, any batch works '
                           'unless --static_batch; ONNX: the fixed batch)')
  common.add_alias(parser, '--batch', 'batch_size', type=int)
  parser.add_argument('--static_batch', action='store_true',
                      help='StableHLO: bake --batch_size into the program instead of a symbolic '
                           'batch')
  parser.add_argument('--canvas', type=int, nargs=2, default=None, metavar=('H', 'W'),
                      help='the fixed canvas every image must fit (default: max_size rounded '
                           'up to 128, square)')
  parser.add_argument('--nms', choices=NMS_KINDS, default=None,
                      help='NMS variant (default: the config\'s detect.nms)')
  parser.add_argument('--dtype', choices=COMPUTE_DTYPES, default='float32',
                      help='network compute dtype (ONNX: float32 only)')
  parser.add_argument('--platforms', nargs='+', default=['cpu', 'cuda'],
                      help='StableHLO: platforms to lower for (one file)')
  return parser


def parse_args(argv=None):
  return common.parse_with_overrides(build_parser(), argv)


@common.cli_errors
def main(argv=None) -> int:
  common.quiet_tensorflow()
  args, overrides = parse_args(argv)
  cfg = common.config_for_weights(args, overrides)
  from yolact_jax.serving import export as ex
  spec = ex.make_spec(cfg, nms=args.nms, dtype=args.dtype,
                      canvas_hw=tuple(args.canvas) if args.canvas else None,
                      batch=args.batch_size, static_batch=args.static_batch)
  if args.format == 'stablehlo':
    meta = ex.export_stablehlo(spec, args.weights, args.out, tuple(args.platforms))
  else:
    from yolact_jax.serving import onnx_export
    meta = onnx_export.export_onnx(spec, args.weights, args.out)
  shape = meta['input']['images']['shape']
  print(f'{meta["kind"]} artefact written to {args.out} (+ .json'
        + (', .weights.npz' if meta['kind'] == 'stablehlo' else '') + f'): {meta["preset"]}, '
        f'images uint8 {shape}, nms {meta["nms"]}, platforms {", ".join(meta["platforms"])}')
  return 0
