"""The ONNX artefacts the CI tests run (``tests/data/onnx/``), and how to make them again.

Exporting needs jax2onnx, which the test command cannot install (its orbax-checkpoint pin
conflicts with the project's; docs/serving.md), so the tiny preset's artefacts are exported once
and shipped, gzipped (1.1 and 0.9 MB unpacked): the whole program
(batch 3, 128 x 128 canvas, with its metadata file) and the network alone (batch 2). The
CI tests run them in onnxruntime against the live JAX program on the same seeded weights; with
jax2onnx installed, ``tests/test_serving_onnx.py`` also exports afresh. Regenerate after a change
of the program or the tiny preset::

    python -m tests.onnx_fixture          # needs the [onnx] extra and jax2onnx (--no-deps)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pathlib
import shutil

import jax
import numpy as np

DIR = pathlib.Path(__file__).resolve().parent / 'data' / 'onnx'
PROGRAM = 'yolact_tiny_b3_128.onnx'  # shipped as <name>.gz and <name>.json
NETWORK = 'yolact_tiny_network_b2.onnx'  # shipped as <name>.gz
WEIGHTS_DIGEST = DIR / 'weights_digest.json'
OVERRIDES = ('detect.nms_conf_thresh=0.02',)
CANVAS = (128, 128)
SEED = 0


def tiny():
  """(config, variables) the artefacts were exported from."""
  from yolact_jax.config import get_config
  from yolact_jax.model.variables import init_variables
  cfg = get_config('yolact_tiny', list(OVERRIDES))
  return cfg, jax.device_get(init_variables(cfg, seed=SEED))


def weights_digest(variables) -> str:
  """sha256 over every leaf's path, dtype, shape and bytes."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    leaf = np.asarray(leaf)
    h.update(f'{jax.tree_util.keystr(path)} {leaf.dtype} {leaf.shape}'.encode())
    h.update(leaf.tobytes())
  return h.hexdigest()


def unpack(name: str, into: pathlib.Path) -> pathlib.Path:
  """``into/name``: the shipped artefact decompressed (with its metadata file, if any)."""
  into.mkdir(parents=True, exist_ok=True)
  with gzip.open(DIR / f'{name}.gz', 'rb') as src, open(into / name, 'wb') as dst:
    shutil.copyfileobj(src, dst)
  if (DIR / f'{name}.json').is_file():
    shutil.copy(DIR / f'{name}.json', into / f'{name}.json')
  return into / name


def _pack(path: pathlib.Path) -> None:
  with open(path, 'rb') as src, gzip.GzipFile(DIR / f'{path.name}.gz', 'wb', 9, mtime=0) as dst:
    shutil.copyfileobj(src, dst)


def main() -> None:
  import tempfile

  import onnx

  from yolact_jax.serving import export as ex
  from yolact_jax.serving import onnx_export as ox
  cfg, variables = tiny()
  DIR.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    program, network = pathlib.Path(tmp) / PROGRAM, pathlib.Path(tmp) / NETWORK
    ox.export_onnx(ex.make_spec(cfg, canvas_hw=CANVAS, batch=3), variables, program)
    onnx.save_model(ox.network_model(ex.make_spec(cfg, batch=2), variables), str(network))
    _pack(program)
    _pack(network)
    shutil.copy(f'{program}.json', DIR / f'{PROGRAM}.json')
  WEIGHTS_DIGEST.write_text(json.dumps({'preset': cfg.name, 'overrides': list(OVERRIDES),
                                        'seed': SEED, 'sha256': weights_digest(variables)},
                                       indent=1) + '\n')
  for path in sorted(DIR.iterdir()):
    print(f'{path.stat().st_size:>9} {path}')


if __name__ == '__main__':
  main()
