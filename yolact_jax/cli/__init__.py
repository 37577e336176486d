"""The ``yolact-jax`` command line (also ``python -m yolact_jax``): one subcommand per task.

  yolact-jax train     --config yolact_cpu --workdir runs/demo
  yolact-jax evaluate  --weights runs/demo --out results/demo
  yolact-jax predict   --weights runs/demo photo.jpg --out predictions/
  yolact-jax convert   --config yolact_base yolact_base_54_800000.pth weights/yolact_base
  yolact-jax export    --weights runs/demo --format stablehlo --out served/demo.stablehlo
  yolact-jax benchmark --only inference
  yolact-jax compare   --yolact_repo ../yolact --random_weights 0

``yolact-jax <command> --help`` describes each. ``train.py``, ``evaluate.py`` and ``scripts/*.py``
are thin wrappers over the same modules (``yolact_jax.cli.<command>``).
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

# command -> (module under yolact_jax.cli, one-line summary); modules are imported on use.
COMMANDS = {
    'train': ('train', 'train or resume a run (checkpoints, metrics, validation)'),
    'evaluate': ('evaluate', 'COCO box and mask mAP, results files, --benchmark timing'),
    'predict': ('predict', 'overlays and COCO results for images, folders, videos, cameras'),
    'convert': ('convert', 'weights between the original .pth and yolact-jax directories'),
    'export': ('export', 'a StableHLO or ONNX artefact to serve without the model code'),
    'benchmark': ('benchmark', 'timing of inference stages, NMS, train step, FLOPs'),
    'compare': ('compare', 'side by side with the original PyTorch YOLACT'),
}


def usage() -> str:
  width = max(len(name) for name in COMMANDS)
  lines = ['usage: yolact-jax <command> [flags]   (yolact-jax <command> --help for its flags)',
           '', 'commands:']
  lines += [f'  {name:<{width}}  {summary}' for name, (_, summary) in COMMANDS.items()]
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs ``yolact-jax <command> ...``; the command's exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ('-h', '--help', 'help'):
    print(usage())
    return 0 if argv else 2
  if argv[0] == '--version':
    from yolact_jax import __version__
    print(f'yolact-jax {__version__}')
    return 0
  command, rest = argv[0], argv[1:]
  if command not in COMMANDS:
    import difflib
    close = difflib.get_close_matches(command, COMMANDS, n=1)
    hint = f' (did you mean {close[0]}?)' if close else ''
    print(f'error: unknown command {command!r}{hint}\n\n{usage()}', file=sys.stderr)
    return 2
  module = importlib.import_module(f'yolact_jax.cli.{COMMANDS[command][0]}')
  status = module.main(rest)
  return status if isinstance(status, int) else 0  # benchmark/compare return their report
