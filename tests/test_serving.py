"""Tests of yolact_jax.serving (StableHLO): export once, reload without flax, same detections;
every bad artefact and bad input a clear error; the reference run through an exported program.

The tiny preset (random weights) throughout, except the one slow 550 px reference test.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from tests.reference_data import RESNET50_DIR, load_npz, require_reference
from yolact_jax import predict as pr
from yolact_jax import serving
from yolact_jax.config import get_config
from yolact_jax.model.variables import init_variables
from yolact_jax.serving import artefact as af
from yolact_jax.serving import export as ex

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
CANVAS = (128, 128)


def random_image(seed, h, w, channels=3):
  shape = (h, w) if channels is None else (h, w, channels)
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def three_images():
  """Three sizes, one grayscale and one RGBA."""
  return [random_image(0, 37, 53), random_image(1, 120, 61, channels=None),
          random_image(2, 64, 100, channels=4)]


@pytest.fixture(scope='module')
def tiny():
  cfg = get_config('yolact_tiny', ['detect.nms_conf_thresh=0.02'])
  return cfg, init_variables(cfg, seed=0)


@pytest.fixture(scope='module')
def artefact(tiny, tmp_path_factory):
  cfg, variables = tiny
  path = tmp_path_factory.mktemp('serving') / 'tiny.stablehlo'
  ex.export_stablehlo(ex.make_spec(cfg, canvas_hw=CANVAS, batch=3), variables, path)
  return path


def assert_same_detections(a, b):
  assert len(a) == len(b) and a.image_size == b.image_size
  assert a.class_names == b.class_names
  np.testing.assert_array_equal(a.classes, b.classes)
  np.testing.assert_array_equal(a.scores, b.scores)
  np.testing.assert_array_equal(a.boxes, b.boxes)
  np.testing.assert_array_equal(a.masks, b.masks)


def test_metadata_describes_the_artefact(artefact, tiny):
  cfg, _ = tiny
  meta = json.loads(af.sidecar(artefact, 'json').read_text())
  assert meta['kind'] == 'stablehlo' and meta['preset'] == 'yolact_tiny'
  assert meta['class_names'] == list(cfg.dataset.class_names)
  assert meta['input']['images'] == {'dtype': 'uint8', 'shape': ['B', 128, 128, 3]}
  assert meta['input']['batch'] is None and meta['input']['suggested_batch'] == 3
  assert meta['outputs'] == list(pr.OUTPUT_KEYS)
  assert meta['platforms'] == ['cpu', 'cuda']
  assert meta['sha256'] == af.sha256(artefact)
  assert set(meta['versions']) >= {'jax', 'jaxlib', 'yolact_jax', 'serialization'}
  exported = jax.export.deserialize(bytearray(artefact.read_bytes()))
  assert jax.export.is_symbolic_dim(exported.in_avals[-2].shape[0])  # batch is symbolic


NO_FLAX_SCRIPT = textwrap.dedent('''
    import sys

    class Forbid:  # before anything else: importing flax or the model code fails
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('flax', 'optax', 'orbax') or name.startswith(
            ('yolact_jax.model', 'yolact_jax.predict', 'yolact_jax.config')):
          raise ImportError(f'{name} is forbidden in this test')
        return None

    sys.meta_path.insert(0, Forbid())
    import numpy as np
    from yolact_jax.serving import load
    inputs = np.load(sys.argv[2])
    images = [inputs[f'image_{i}'] for i in range(len(inputs.files))]
    model = load(sys.argv[1])
    out = {}
    for i, d in enumerate(model(images, channel_order='bgr')):
      out.update({f'{k}_{i}': getattr(d, k) for k in ('boxes', 'classes', 'scores', 'masks')})
      out[f'names_{i}'] = np.array(d.class_names, dtype=str)
    np.savez(sys.argv[3], **out)
    assert not any(m.split('.')[0] == 'flax' for m in sys.modules)
''')


def test_reload_without_flax_gives_the_live_detections(artefact, tiny, tmp_path):
  cfg, variables = tiny
  images = three_images()
  np.savez(tmp_path / 'images.npz', **{f'image_{i}': im for i, im in enumerate(images)})
  script = tmp_path / 'serve.py'
  script.write_text(NO_FLAX_SCRIPT)
  subprocess.run([sys.executable, str(script), str(artefact), str(tmp_path / 'images.npz'),
                  str(tmp_path / 'out.npz')], check=True, cwd=PROJECT_ROOT, timeout=600,
                 env=dict(__import__('os').environ, PYTHONPATH=str(PROJECT_ROOT)))
  live = pr.Predictor(cfg, variables, max_batch=3, canvas_hw=CANVAS)(images, channel_order='bgr')
  served = np.load(tmp_path / 'out.npz')
  for i, expected in enumerate(live):
    assert len(expected) > 0
    got = pr.Detections(served[f'boxes_{i}'], served[f'classes_{i}'],
                        tuple(str(n) for n in served[f'names_{i}']), served[f'scores_{i}'],
                        served[f'masks_{i}'], images[i].shape[:2])
    assert_same_detections(got, expected)


# ---------------------------------------------------------------------------------------------
# Bad artefacts and bad inputs: each a clear error


def copy_artefact(path: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  target.mkdir(parents=True, exist_ok=True)
  for what in ('', '.json', '.weights.npz'):
    shutil.copy(f'{path}{what}', target / f'{path.name}{what}')
  return target / path.name


def edit_metadata(path, edit):
  meta_path = af.sidecar(path, 'json')
  meta = json.loads(meta_path.read_text())
  edit(meta)
  meta_path.write_text(json.dumps(meta))


def set_in(keys, value):
  def edit(meta):
    node = meta
    for key in keys[:-1]:
      node = node[key]
    node[keys[-1]] = value
  return edit


def flip_last_byte(data: bytes) -> bytes:
  return data[:-1] + bytes([data[-1] ^ 1])


def replace_artefact_bytes(path, data):
  path.write_bytes(data)
  edit_metadata(path, set_in(['sha256'], af.sha256(path)))


def cuda_only_artefact(path, tiny):
  cfg, variables = tiny
  ex.export_stablehlo(ex.make_spec(cfg, canvas_hw=CANVAS), variables, path, platforms=('cuda',))


BAD_ARTEFACTS = {
    'no artefact': (lambda p, t: p.unlink(), serving.ArtefactError, 'no artefact'),
    'no metadata': (lambda p, t: af.sidecar(p, 'json').unlink(), serving.ArtefactError,
                    'metadata .* missing'),
    'not our metadata': (lambda p, t: edit_metadata(p, set_in(['format'], 'x')),
                         serving.ArtefactError, 'not yolact-jax-serving metadata'),
    'changed artefact': (lambda p, t: p.write_bytes(flip_last_byte(p.read_bytes())),
                         serving.ArtefactError, 'sha256 differs'),
    'foreign file': (lambda p, t: replace_artefact_bytes(p, b'not a program'),
                     serving.ArtefactError, 'not a jax.export artefact'),
    'no weights': (lambda p, t: af.sidecar(p, 'weights.npz').unlink(), serving.ArtefactError,
                   'weights file is missing'),
    'newer serialization': (
        lambda p, t: edit_metadata(p, set_in(['versions', 'serialization'], 99)),
        serving.SerializationVersionError, 'calling convention version 99'),
    'newer metadata format': (lambda p, t: edit_metadata(p, set_in(['format_version'], 7)),
                              serving.SerializationVersionError, 'format version 7'),
    'wrong platform': (cuda_only_artefact, serving.PlatformError, 'exported for cuda'),
    'other contract': (
        lambda p, t: edit_metadata(p, set_in(['input', 'contract'], 'float-nchw/1')),
        serving.ContractError, "contract 'float-nchw/1'"),
    'other canvas': (
        lambda p, t: edit_metadata(p, set_in(['input', 'images', 'shape'], ['B', 64, 64, 3])),
        serving.ContractError, 'different exports'),
}


@pytest.mark.parametrize('case', list(BAD_ARTEFACTS))
def test_bad_artefacts_are_clear_errors(case, artefact, tiny, tmp_path):
  damage, error, message = BAD_ARTEFACTS[case]
  path = copy_artefact(artefact, tmp_path)
  if damage is cuda_only_artefact:
    damage(path, tiny)
  else:
    damage(path, tmp_path)
  with pytest.raises(error, match=message) as info:
    serving.load(path)
  assert '\n' not in str(info.value)  # one line


@pytest.fixture(scope='module')
def model(artefact):
  return serving.load(artefact)


BAD_INPUTS = {
    'float canvas': (lambda m: m.run(np.zeros((3, 128, 128, 3), np.float32),
                                     np.ones((3, 2), np.int32)),
                     serving.InputError, 'images: expected dtype uint8, got float32'),
    'canvas shape': (lambda m: m.run(np.zeros((3, 64, 128, 3), np.uint8),
                                     np.ones((3, 2), np.int32)),
                     serving.InputError, r'images: expected shape \[3, 128, 128, 3\]'),
    'sizes dtype': (lambda m: m.run(np.zeros((3, 128, 128, 3), np.uint8),
                                    np.ones((3, 2), np.int64)),
                    serving.InputError, 'image_sizes: expected dtype int32'),
    'not an array': (lambda m: m.run([[0]], np.ones((3, 2), np.int32)),
                     serving.InputError, 'expected a numpy array'),
    'image too large': (lambda m: m([random_image(0, 129, 10)], channel_order='rgb'),
                        serving.InputError, "image 0 of size 129x10 does not fit"),
    'float image': (lambda m: m([random_image(0, 9, 9).astype(np.float32)], channel_order='rgb'),
                    TypeError, 'image 0: expected a uint8 image'),
    'two channels': (lambda m: m([random_image(0, 9, 9, channels=2)], channel_order='rgb'),
                     ValueError, r'image 0: expected \[H, W, 3\]'),
    'one array': (lambda m: m(random_image(0, 9, 9), channel_order='rgb'), TypeError,
                  'single image'),
    'channel order': (lambda m: m([random_image(0, 9, 9)], channel_order='hsv'), ValueError,
                      "'rgb' or 'bgr'"),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_inputs_are_clear_errors(case, model):
  call, error, message = BAD_INPUTS[case]
  with pytest.raises(error, match=message):
    call(model)


def test_static_batch_is_fixed(tiny, tmp_path):
  cfg, variables = tiny
  path = tmp_path / 'static.stablehlo'
  meta = ex.export_stablehlo(ex.make_spec(cfg, canvas_hw=(64, 64), batch=2, static_batch=True),
                             variables, path, platforms=('cpu',))
  assert meta['input']['images']['shape'] == [2, 64, 64, 3] and meta['input']['batch'] == 2
  assert serving.load(path).max_batch == 2
  with pytest.raises(serving.ContractError, match='fixed batch of 2'):
    serving.load(path, max_batch=3)


# ---------------------------------------------------------------------------------------------
# The reference weights through an exported program


@pytest.mark.slow
def test_exported_program_reproduces_the_reference(tmp_path):
  from tests import test_predict
  require_reference('yolact_resnet50', 'weights.pth')
  ref = load_npz('yolact_resnet50', 'dets.npz')
  sizes = np.stack([ref['orig_hw_0'], ref['orig_hw_1']]).astype(np.int32)
  net_input = np.load(RESNET50_DIR / 'input.npy').transpose(0, 2, 3, 1)  # NCHW -> NHWC
  cfg = get_config('yolact_resnet50')
  spec = ex.make_spec(cfg, canvas_hw=tuple(int(v) for v in sizes.max(0)), batch=2)
  from yolact_jax.checkpoint.io import load_weights
  exported, leaves = ex.export_program(spec, load_weights(RESNET50_DIR / 'weights.pth', cfg),
                                       entry='network_input')
  path = tmp_path / 'resnet50.network_input.stablehlo'
  path.write_bytes(exported.serialize())  # through the bytes, as served
  reloaded = jax.export.deserialize(bytearray(path.read_bytes()))
  outputs = jax.device_get(reloaded.call(leaves, net_input.astype(np.float32), sizes))
  results = pr.unpack_detections(outputs, sizes, 2, cfg.dataset.class_names)
  test_predict.test_end_to_end_reference_parity((results, ref))  # the live test's checks


# ---------------------------------------------------------------------------------------------
# scripts/export.py


def test_export_cli(weights_dir, tmp_path, capsys):
  from scripts import export as cli
  out = tmp_path / 'cli' / 'tiny.stablehlo'
  assert cli.main(['--config', 'yolact_tiny', '--weights', str(weights_dir), '--format',
                   'stablehlo', '--out', str(out), '--batch', '2', '--canvas', '64', '96',
                   '--nms', 'cross_class', '--platforms', 'cpu',
                   '--config.detect.nms_conf_thresh=0.3']) == 0
  assert 'stablehlo artefact written' in capsys.readouterr().out
  model = serving.load(out)
  assert model.max_batch == 2 and model.canvas_hw == (64, 96)
  assert model.metadata['nms'] == 'cross_class' and model.metadata['platforms'] == ['cpu']
  results = model([random_image(0, 50, 90)], channel_order='rgb')
  assert results[0].masks.shape[1:] == (50, 90) and np.all(results[0].scores > 0.3)
  assert cli.main(['--config', 'yolact_tiny', '--weights', str(weights_dir), '--format',
                   'stablehlo', '--out', str(out), '--batch', '0']) == 1
  assert 'batch must be >= 1' in capsys.readouterr().err
