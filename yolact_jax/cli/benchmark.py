"""``yolact-jax benchmark``: inference stages, NMS variants, the train step and FLOPs.

    yolact-jax benchmark                                 # CPU-sized default subset
    yolact-jax benchmark --grid full                     # every preset x batch x dtype (GPU)
    yolact-jax benchmark --only nms --repeats 50
    yolact-jax benchmark --presets yolact_base --batch_sizes 1,8 --dtypes float32,bfloat16
    yolact-jax benchmark --only convgrad                 # the convolutions' gradients
    yolact-jax benchmark --only convnet                  # every convolution of a train step
    # YOLACT++ R50 next to R50, network only, and the DCN layers' share (network, train step)
    yolact-jax benchmark --only inference,dcn --batch_sizes 1 \
        --presets yolact_resnet50,yolact_plus_resnet50 --inference_stages network

Writes ``--out`` (JSON, default ``results/benchmark_<machine>.json``) and a markdown table beside
it (same name, ``.md``). How things are timed and what each section measures:
:mod:`yolact_jax.bench` (this module only parses the command line).
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any, Sequence

from yolact_jax.bench.grid import DCN_PRESETS, DEFAULT_SECTIONS, SECTIONS, csv_list
from yolact_jax.bench.inference import INFERENCE_STAGES
from yolact_jax.bench.run import run_benchmark
from yolact_jax.bench.timing import MIN_TIMED_RUNS
from yolact_jax.cli import common
from yolact_jax.config import NMS_KINDS


def _ints(text: str) -> list[int]:
  return [int(x) for x in csv_list(text)]


def build_parser() -> argparse.ArgumentParser:
  p = common.Parser(prog='yolact-jax benchmark', description=__doc__.split('\n\n')[0])
  p.add_argument('--only', default=','.join(DEFAULT_SECTIONS),
                 help=f'comma-separated sections to run, of {",".join(SECTIONS)} (default: all '
                      'but convgrad, convnet, dcn and exported)')
  p.add_argument('--convgrad_batch', type=int, default=2,
                 help='batch of the convgrad and convnet sections (the CPU train-step batch)')
  p.add_argument('--convnet_preset', default='yolact_resnet50',
                 help='preset whose every convolution the convnet section times')
  p.add_argument('--grid', choices=('auto', 'cpu', 'full'), default='auto',
                 help="default cases: 'cpu' (a few-core CPU subset), 'full' (every preset x "
                      "batch 1,8 x float32,bfloat16); 'auto' = cpu on a CPU backend, else full")
  p.add_argument('--presets', type=csv_list, help='inference presets (replaces the grid\'s cases)')
  p.add_argument('--batch_sizes', type=_ints,
                 help='inference batch sizes (with --presets; default 1,8)')
  p.add_argument('--dtypes', type=csv_list, help='compute dtypes, of float32,bfloat16 (with '
                 '--presets; default float32 on cpu, both on full)')
  p.add_argument('--inference_stages', type=csv_list, default=list(INFERENCE_STAGES),
                 help=f'inference stages to time, of {",".join(INFERENCE_STAGES)} (the network '
                      'always; detect also for postprocess)')
  p.add_argument('--dcn_presets', type=csv_list, default=list(DCN_PRESETS),
                 help='presets of the dcn section (YOLACT++ presets: they have DCN layers)')
  p.add_argument('--dcn_batch', type=int, default=1, help='network batch of the dcn section')
  p.add_argument('--dcn_train_batch', type=int, default=2,
                 help='train-step batch of the dcn section (0: no train step)')
  p.add_argument('--dcn_dtype', default='float32', help='compute dtype of the dcn section')
  p.add_argument('--nms_kinds', type=csv_list, default=list(NMS_KINDS),
                 help='NMS variants timed inside the inference section')
  p.add_argument('--image_hw', type=lambda s: tuple(_ints(s)), default=(480, 640),
                 help='original image size h,w for postprocess and end to end (COCO-typical)')
  p.add_argument('--train_presets', type=csv_list, help='train-step presets (replaces the grid)')
  p.add_argument('--train_batch_sizes', type=_ints,
                 help='train batch sizes (with --train_presets; default 2 on cpu, 8 on full)')
  p.add_argument('--train_dtypes', type=csv_list, help='train compute dtypes (default float32)')
  p.add_argument('--nms_batch', type=int, default=1, help='images in the NMS section')
  p.add_argument('--nms_top_k', type=int, default=200, help='candidates per class (NMS section)')
  p.add_argument('--nms_classes', type=int, default=None,
                 help='use only the first N classes in the NMS section (default: all 80)')
  p.add_argument('--reference_dir', type=pathlib.Path, default=None,
                 help='folder with yolact_resnet50/raw.npz (default ../shared/reference or '
                      '$YOLACT_REFERENCE_DIR)')
  p.add_argument('--repeats', type=int, default=None, help='timed runs per stage (default 10 on '
                 'cpu, 50 on full)')
  p.add_argument('--warmup', type=int, default=2, help='untimed runs after compiling')
  p.add_argument('--max_seconds', type=float, default=None,
                 help=f'stop timing a stage after this long (at least {MIN_TIMED_RUNS} runs; '
                      'default 60 on cpu, 30 on full)')
  p.add_argument('--peak_tflops', type=float, default=None,
                 help='the device\'s peak TFLOP/s for the fraction of peak (overrides the table)')
  p.add_argument('--matmul_probe_size', type=int, default=None,
                 help='side of the probe matmul (0 = skip; default 2048 on cpu, 8192 on gpu)')
  p.add_argument('--out', type=pathlib.Path, default=None,
                 help='JSON path (default results/benchmark_<machine>.json); .md beside it')
  p.add_argument('--quiet', action='store_true')
  return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return run_benchmark(build_parser().parse_args(argv), argv)


if __name__ == '__main__':
  main()
