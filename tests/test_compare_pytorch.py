"""scripts/compare_pytorch.py (over yolact_jax.compare) without the original: its shims, matching
and reporting logic on synthetic inputs, and one whole run against a FAKE checkout.

The fake checkout (written to a temporary folder below) has the original's module layout and its
import-time hazards (``torch.cuda.current_device()``, ``import torchvision``, a TorchScript FPN,
``np.float``), but computes yolact-jax's own outputs plus small noise: it tests the glue, not the
original. It contains no code of the original.
"""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from scripts import compare_pytorch as cli  # noqa: E402
from yolact_jax.bench import timing  # noqa: E402
from yolact_jax.compare import import_stubs, inputs, original, outputs, shims  # noqa: E402
from yolact_jax.compare import report as report_lib  # noqa: E402
from yolact_jax.compare import train as train_lib  # noqa: E402
from yolact_jax.compare import weights as weights_lib  # noqa: E402
from yolact_jax.checkpoint.convert import expected_state_dict_shapes  # noqa: E402
from yolact_jax.config import get_config  # noqa: E402

NUMPY_ALIASES_MISSING = [n for n in shims.NUMPY_LEGACY_ALIASES if n not in np.__dict__]

# ---------------------------------------------------------------------------------------------
# Shims


def test_cuda_shim_makes_current_device_harmless_and_restores():
  if torch.cuda.is_available():
    pytest.skip('CUDA present: the shim is a no-op')
  with pytest.raises((AssertionError, RuntimeError)):
    torch.cuda.current_device()
  before = torch.cuda.current_device
  with shims.cuda_calls_for_cpu(torch):
    assert torch.cuda.current_device() == 0
    torch.cuda.synchronize()  # a no-op
  assert torch.cuda.current_device is before
  with pytest.raises((AssertionError, RuntimeError)):
    torch.cuda.current_device()


def test_torchvision_stub_serves_imports_and_is_removed():
  if import_stubs.module_available('torchvision'):
    pytest.skip('torchvision installed: no stub needed')
  with import_stubs.stub_missing_module('torchvision') as stubbed:
    assert stubbed
    import torchvision  # noqa: F401
    from torchvision.models.resnet import Bottleneck
    from torchvision import transforms, ops  # noqa: F401
    assert torchvision.models.resnet.Bottleneck is Bottleneck
    with pytest.raises(import_stubs.PlaceholderError, match='placeholder'):
      Bottleneck(64, 16)
  assert not any(n == 'torchvision' or n.startswith('torchvision.') for n in sys.modules)
  with pytest.raises(ImportError):
    import torchvision  # noqa: F401,F811


def test_stub_with_attributes_and_replacing_an_installed_module():
  class Thing:
    pass

  with import_stubs.stub_missing_module('no_such_pkg_xyz', attributes={'Thing': Thing}) as used:
    assert used
    from no_such_pkg_xyz import Thing as served, Other
    assert served is Thing
    with pytest.raises(import_stubs.PlaceholderError):
      Other()
  assert 'no_such_pkg_xyz' not in sys.modules
  import json
  with import_stubs.stub_missing_module('json', attributes={'Thing': Thing}, replace=True) as used:
    assert used
    import json as stub
    assert stub.Thing is Thing and stub is not json
  assert sys.modules['json'] is json  # the real module is back


def test_dcn_v2_is_served_with_the_torch_dcn():
  if shims.dcn_v2_usable(torch):
    pytest.skip('the compiled dcn_v2 extension is usable: no stand-in')
  from yolact_jax.compare.dcn_torch import DCN as TorchDCN
  with shims.dcn_v2_stand_in(torch) as used:
    assert used
    from dcn_v2 import DCN  # what the original's backbone.py does at import
    assert DCN is TorchDCN
  assert 'dcn_v2' not in sys.modules


def test_stub_is_not_used_for_an_installed_module():
  with import_stubs.stub_missing_module('json') as stubbed:
    assert not stubbed
    assert not getattr(sys.modules['json'], '__is_stub__', False)


def test_torchscript_shim_gives_plain_modules_and_restores():
  script_module, script_method = torch.jit.ScriptModule, torch.jit.script_method
  with shims.plain_torchscript_classes(torch):
    class Block(torch.jit.ScriptModule):
      @torch.jit.script_method
      def forward(self, x):
        return x * 2 + float(np.sum([1]))  # not scriptable: fine on a plain module

  assert not issubclass(Block, script_module) and issubclass(Block, torch.nn.Module)
  assert float(Block()(torch.ones(1))) == 3.0
  assert torch.jit.ScriptModule is script_module and torch.jit.script_method is script_method


def test_numpy_aliases_only_where_missing_and_restored():
  missing = [n for n in shims.NUMPY_LEGACY_ALIASES if n not in np.__dict__]
  with shims.numpy_legacy_aliases():
    assert np.float is float and np.int is int
    assert np.zeros(2, np.float).dtype == np.float64
  for name in missing:
    assert name not in np.__dict__


def test_torch_load_defaults_to_cpu_and_restores(tmp_path):
  if torch.cuda.is_available():
    pytest.skip('CUDA present: the shim is a no-op')
  path = tmp_path / 'w.pth'
  torch.save({'a': torch.ones(2)}, path)
  original = torch.load
  seen = []
  with shims.patched_attributes(torch, {'load': lambda *a, **k: seen.append(k)}):
    with shims.torch_load_on_cpu(torch):
      torch.load(path)
      torch.load(path, map_location='meta')  # an explicit map_location is kept
  assert seen == [{'map_location': 'cpu'}, {'map_location': 'meta'}]
  with shims.torch_load_on_cpu(torch):
    assert float(torch.load(path)['a'].sum()) == 2.0
  assert torch.load is original


def test_patched_attributes_deletes_what_did_not_exist():
  import types
  module = types.ModuleType('m')
  with shims.patched_attributes(module, {'x': 1}):
    assert module.x == 1
  assert not hasattr(module, 'x')


def test_conflicting_modules_are_reported(tmp_path, monkeypatch):
  import types
  fake = types.ModuleType('utils')
  fake.__file__ = '/somewhere/else/utils/__init__.py'
  monkeypatch.setitem(sys.modules, 'utils', fake)
  assert original.conflicting_modules(tmp_path) == ['utils (/somewhere/else/utils/__init__.py)']


def test_import_original_rejects_a_folder_that_is_not_a_checkout(tmp_path):
  with pytest.raises(FileNotFoundError, match='dbolya/yolact checkout'):
    original.import_original(tmp_path, torch)


# ---------------------------------------------------------------------------------------------
# Output capture and result conversion


class FakeDetect:
  def __init__(self):
    self.use_fast_nms = False
    self.calls = 0

  def __call__(self, predictions, net=None):
    self.calls += 1
    return ['detections']


def test_output_capture_records_bypasses_and_forwards_settings():
  net = torch.nn.Module()
  net.detect = FakeDetect()
  inner = net.detect
  capture = original.install_output_capture(net)
  assert net.detect is capture
  preds = {'loc': torch.ones(1, 3, 4), 'note': 'not a tensor'}
  assert net.detect(preds, net) == ['detections'] and capture.outputs is None
  capture.record = True
  net.detect(preds, net)
  preds['loc'] += 1  # the record is a copy
  assert float(capture.outputs['loc'].sum()) == 12.0 and 'note' not in capture.outputs
  capture.bypass = True
  assert net.detect(preds) is preds and inner.calls == 2
  capture.use_fast_nms = True  # forwarded to the real Detect
  assert inner.use_fast_nms and capture.use_fast_nms


def test_cross_class_nms_needs_a_detect_that_has_it():
  old_detect = FakeDetect()  # like the original before 2019-11-06: no cc_fast_nms
  with pytest.raises(SystemExit, match='cc_fast_nms'):
    original.check_original_nms(old_detect, 'cross_class')
  for nms in ('fast', 'standard'):
    original.check_original_nms(old_detect, nms)
  old_detect.cc_fast_nms = lambda *args: None
  original.check_original_nms(old_detect, 'cross_class')


def test_output_capture_replaces_a_detect_module():
  net = torch.nn.Module()
  net.detect = torch.nn.Identity()
  capture = original.install_output_capture(net)
  assert net.detect is capture and 'detect' not in net._modules


def test_original_result_handles_detections_and_empty_images():
  res = original.original_result(torch.tensor([3, 1]), torch.tensor([0.9, 0.5]),
                            torch.tensor([[0, 0, 4, 4], [1, 1, 2, 3]]),
                            torch.zeros(2, 5, 6).index_fill_(1, torch.tensor([2]), 1.0), 5, 6)
  assert res['classes'].tolist() == [3, 1] and res['boxes'].shape == (2, 4)
  assert res['masks'].dtype == np.uint8 and res['masks'].sum() == 12
  empty = original.original_result(*[torch.Tensor()] * 4, 5, 6)
  assert empty['masks'].shape == (0, 5, 6) and empty['boxes'].shape == (0, 4)


def test_original_result_splits_the_yolact_plus_score_pair():
  """YOLACT++ (rescore_mask, not rescore_bbox): the original returns [box scores, mask scores]."""
  box, mask = torch.tensor([0.9, 0.5]), torch.tensor([0.6, 0.1])
  args = (torch.tensor([3, 1]), [box, mask], torch.tensor([[0, 0, 4, 4], [1, 1, 2, 3]]),
          torch.zeros(2, 5, 6))
  res = original.original_result(*args, 5, 6)
  np.testing.assert_allclose(res['scores'], [0.9, 0.5])
  np.testing.assert_allclose(res['mask_scores'], [0.6, 0.1])
  single = original.original_result(*args[:1], box, *args[2:], 5, 6)
  np.testing.assert_array_equal(single['mask_scores'], single['scores'])


def test_ours_result_takes_mask_scores_where_present():
  import types
  det = types.SimpleNamespace(classes=[1], scores=[0.8], boxes=[[0, 0, 2, 2]],
                              masks=np.zeros((1, 3, 3)))
  assert outputs.ours_result(det)['mask_scores'].tolist() == pytest.approx([0.8])
  det.mask_scores = [0.4]
  assert outputs.ours_result(det)['mask_scores'].tolist() == pytest.approx([0.4])


# ---------------------------------------------------------------------------------------------
# Comparison logic


def detections(boxes, classes, scores, h=20, w=20):
  masks = np.zeros((len(boxes), h, w), np.uint8)
  for k, (x1, y1, x2, y2) in enumerate(boxes):
    masks[k, y1:y2, x1:x2] = 1
  return {'boxes': np.asarray(boxes, np.int64).reshape(-1, 4), 'classes': np.asarray(classes),
          'scores': np.asarray(scores, np.float32), 'masks': masks}


def test_box_iou_matrix():
  iou = outputs.box_iou_matrix([[0, 0, 10, 10], [0, 0, 0, 0]], [[0, 0, 10, 10], [5, 0, 15, 10],
                                                            [20, 20, 30, 30]])
  np.testing.assert_allclose(iou, [[1, 50 / 150, 0], [0, 0, 0]])
  assert outputs.box_iou_matrix(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
  # zero-width boxes (integer truncation of a narrow detection): identical ones agree
  degenerate = outputs.box_iou_matrix([[42, 495, 42, 521], [0, 0, 0, 0]],
                                  [[42, 495, 42, 521], [43, 495, 43, 521], [40, 490, 50, 530]])
  np.testing.assert_allclose(degenerate, [[1, 0, 0], [0, 0, 0]])


def test_mask_iou():
  a = np.zeros((4, 4), bool)
  a[:2] = True
  b = np.zeros((4, 4), bool)
  b[1:3] = True
  assert outputs.mask_iou(a, b) == pytest.approx(4 / 12)
  assert outputs.mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_matching_needs_the_same_class_and_enough_iou():
  ours = detections([[0, 0, 10, 10], [10, 10, 20, 20], [0, 0, 5, 5]], [1, 2, 3], [0.9, 0.8, 0.7])
  theirs = detections([[10, 10, 20, 19], [0, 0, 10, 10], [0, 0, 5, 5]], [2, 1, 4],
                      [0.8, 0.9, 0.7])
  pairs = outputs.match_detections(ours, theirs, iou_thresh=0.85)
  assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0)]  # (2, 2) differ in class
  assert pairs[1][2] == pytest.approx(0.9)
  assert outputs.match_detections(ours, theirs, iou_thresh=0.95) == [(0, 1, 1.0)]


def test_matching_pairs_identical_zero_width_boxes():
  ours = detections([[42, 495, 42, 521], [0, 0, 10, 10]], [3, 1], [0.99, 0.98])
  theirs = detections([[0, 0, 10, 10], [42, 495, 42, 521]], [1, 3], [0.98, 0.99])
  pairs = outputs.match_detections(ours, theirs, iou_thresh=0.9)
  assert sorted((i, j) for i, j, _ in pairs) == [(0, 1), (1, 0)]


def test_matching_is_one_to_one_in_score_order():
  ours = detections([[0, 0, 10, 10], [0, 0, 10, 9]], [1, 1], [0.5, 0.9])
  theirs = detections([[0, 0, 10, 10]], [1], [0.9])
  pairs = outputs.match_detections(ours, theirs, iou_thresh=0.5)
  assert [(i, j) for i, j, _ in pairs] == [(1, 0)]  # the higher-scored one takes it


def test_compare_detections_counts_agreement_and_mask_iou():
  ours = detections([[0, 0, 10, 10], [10, 10, 20, 20]], [1, 2], [0.9, 0.8])
  theirs = detections([[0, 0, 10, 10], [10, 10, 20, 20], [0, 10, 5, 20]], [1, 2, 0],
                      [0.91, 0.8, 0.1])
  theirs['masks'][1, 10, 10:20] = 0  # one row of the second mask differs
  r = outputs.compare_detections(ours, theirs, 0.9)
  assert (r['num_ours'], r['num_original'], r['matched']) == (2, 3, 2)
  assert r['agreement'] == pytest.approx(2 / 3)
  assert r['score_abs_diff_max'] == pytest.approx(0.01, abs=1e-6)
  assert r['mask_iou_min'] == pytest.approx(0.9) and r['mask_iou_mean'] == pytest.approx(0.95)
  assert r['mask_iou_over_0_99'] == 0.5
  assert r['mask_score_abs_diff_max'] is None  # no mask scores on either side
  ours['mask_scores'] = ours['scores'] * 0.5
  theirs['mask_scores'] = theirs['scores'] * 0.5
  theirs['mask_scores'][1] -= 0.1
  rescored = outputs.compare_detections(ours, theirs, 0.9)
  assert rescored['mask_score_abs_diff_max'] == pytest.approx(0.1, abs=1e-6)
  assert outputs.summarize_detection_comparison([rescored])['mask_score_abs_diff_max'] == \
      pytest.approx(0.1, abs=1e-6)
  none = outputs.compare_detections(detections([], [], []), detections([], [], []), 0.9)
  assert none['agreement'] == 1.0 and none['mask_iou_mean'] is None
  total = outputs.summarize_detection_comparison([r, none])
  assert (total['images'], total['num_ours'], total['num_original'], total['matched']) == \
      (2, 2, 3, 2)
  assert total['mask_iou_mean'] == pytest.approx(0.95) and total['mask_iou_min'] == 0.9


def test_raw_output_diff_from_our_outputs_plus_noise():
  rng = np.random.default_rng(0)
  ours = {k: rng.normal(size=(2, 30, 4)).astype(np.float32) for k in ('loc', 'mask')}
  theirs = {k: v + rng.uniform(-1e-4, 1e-4, v.shape) for k, v in ours.items()}
  theirs['mask'][1, 7, 2] += 0.01
  report = outputs.raw_output_diff(ours, theirs, keys=('loc', 'mask', 'proto'))
  assert report['loc']['max_abs'] <= 1e-4 and report['loc']['within_reference_tolerance']
  assert report['mask']['max_abs'] == pytest.approx(0.01, rel=0.02)
  assert not report['mask']['within_reference_tolerance']
  assert report['proto'] == {'missing': ['ours', 'original']}
  bad = outputs.raw_output_diff({'loc': np.zeros((1, 2))}, {'loc': np.zeros((2, 1))}, keys=('loc',))
  assert bad['loc']['error'] == 'shape mismatch'
  merged = outputs.merge_raw_diffs([report, outputs.raw_output_diff(ours, ours,
                                                                    ('loc', 'mask', 'proto'))])
  assert merged['mask']['max_abs'] == report['mask']['max_abs']
  assert merged['loc']['mean_abs'] == pytest.approx(report['loc']['mean_abs'] / 2)
  assert merged['loc']['batches'] == 2 and not merged['mask']['within_reference_tolerance']


def test_time_interleaved_cycles_the_batches_and_speed_summary():
  seen = []
  times = timing.time_interleaved({'a': seen.append}, num_batches=3, warmup=2, repeats=4)['a']
  assert seen == [0, 1, 2, 0, 1, 2] and len(times) == 4 and all(t >= 0 for t in times)
  s = timing.speed_summary({'end_to_end': [0.1, 0.1, 0.1]}, {'end_to_end': [0.3, 0.3, 0.3]}, 2)
  assert s['speedup']['end_to_end'] == pytest.approx(3.0)
  assert s['ours']['end_to_end']['images_per_s'] == pytest.approx(20.0)


def test_time_interleaved_rotates_rounds_over_the_same_batch():
  seen = []
  runs = {name: (lambda k, name=name: seen.append((name, k))) for name in 'abc'}
  times = timing.time_interleaved(runs, num_batches=2, warmup=1, repeats=3)
  assert seen[:3] == [('a', 0), ('b', 0), ('c', 0)]  # warm-up
  assert seen[3:] == [('a', 1), ('b', 1), ('c', 1), ('b', 0), ('c', 0), ('a', 0),
                      ('c', 1), ('a', 1), ('b', 1)]
  assert set(times) == set('abc') and all(len(t) == 3 and min(t) >= 0 for t in times.values())


def test_time_interleaved_runs_setup_before_every_call_untimed():
  seen = []
  runs = {'a': lambda k: seen.append('a'), 'b': lambda k: seen.append('b')}
  timing.time_interleaved(runs, 1, warmup=1, repeats=2, setup={'a': lambda: seen.append('reset')})
  assert seen == ['reset', 'a', 'b', 'reset', 'a', 'b', 'b', 'reset', 'a']


def test_seeded_images_and_batches():
  images = inputs.seeded_images(3, seed=1)
  assert [i.shape[:2] for i in images] == list(inputs.SEEDED_IMAGE_SIZES[:3])
  np.testing.assert_array_equal(images[0], inputs.seeded_images(1, seed=1)[0])
  batches, canvas = inputs.make_batches(images, batch_size=2)
  assert canvas == (640, 640) and [b[2] for b in batches] == [2, 1]
  assert batches[1][1].tolist() == [[427, 640], [480, 640]]  # filled by cycling


def test_list_images(tmp_path):
  (tmp_path / 'b.jpg').write_bytes(b'')
  (tmp_path / 'a.png').write_bytes(b'')
  (tmp_path / 'notes.txt').write_text('')
  assert [p.name for p in inputs.list_images([str(tmp_path)])] == ['a.png', 'b.jpg']
  with pytest.raises(FileNotFoundError):
    inputs.list_images([str(tmp_path / 'missing.jpg')])


def test_random_variables_have_nontrivial_batchnorm_and_convert():
  cfg = get_config('yolact_tiny')
  x = np.random.default_rng(0).normal(size=(2, cfg.max_size, cfg.max_size, 3)).astype(np.float32)
  variables = weights_lib.random_variables(cfg, 3, x)
  bn = variables['batch_stats']['backbone']['bn1']
  assert np.abs(bn['mean']).max() > 1e-3 and np.abs(bn['var'] - 1).max() > 1e-2
  assert (np.asarray(bn['var']) > 0).all()
  scale = variables['params']['backbone']['bn1']['scale']
  assert np.abs(scale - 1).max() > 1e-2
  state = weights_lib.to_torch_state_dict(variables, torch)
  expected = expected_state_dict_shapes(cfg)
  assert list(state) == list(expected)
  assert all(tuple(state[k].shape) == shape for k, shape in expected.items())
  again = weights_lib.random_variables(cfg, 3, x)
  np.testing.assert_array_equal(again['batch_stats']['backbone']['bn1']['var'], bn['var'])


def test_deformed_randomises_a_dcn_offset_conv():
  dcn = {'kernel': np.ones((3, 3, 16, 8), np.float32), 'bias': np.zeros(8, np.float32),
         'conv_offset_mask': {'kernel': np.zeros((3, 3, 16, 27), np.float32),
                              'bias': np.zeros(27, np.float32)}}
  out = weights_lib.deformed(dcn, np.random.default_rng(0))
  kernel = out['conv_offset_mask']['kernel']
  assert kernel.shape == (3, 3, 16, 27) and kernel.dtype == np.float32
  # fan-in 144: std gain / 12; the first 18 channels are offsets, the last 9 modulation logits
  assert kernel[..., :18].std() == pytest.approx(weights_lib.DCN_OFFSET_GAIN / 12, rel=0.1)
  assert kernel[..., 18:].std() == pytest.approx(weights_lib.DCN_MODULATION_GAIN / 12, rel=0.1)
  assert out['bias'].any() and out['conv_offset_mask']['bias'].any()
  assert out['kernel'] is dcn['kernel'] and not dcn['conv_offset_mask']['kernel'].any()


def test_markdown_report_has_every_table():
  report = {
      'date_utc': 'now', 'machine': {'cpu_model': 'cpu', 'load_average': [1, 1, 1],
                                     'torch': 't', 'jax': 'j'},
      'settings': {'config': 'yolact_tiny', 'weights': 'w', 'inputs': 'i', 'batch_size': 1,
                   'device': 'cpu', 'threads': 2, 'nms': 'fast', 'match_iou': 0.9,
                   'yolact_repo': '/r', 'original_commit': None},
      'raw_outputs': {'loc': {'shape': [1, 2, 4], 'max_abs': 1e-6, 'mean_abs': 1e-7,
                              'max_abs_value': 3.0, 'within_reference_tolerance': True}},
      'detections': {'total': {'images': 1, 'num_ours': 3, 'num_original': 3, 'matched': 3,
                               'agreement': 1.0, 'mask_iou_mean': 0.999, 'mask_iou_min': 0.99,
                               'score_abs_diff_max': 1e-6}},
      'speed': timing.speed_summary({'network': [0.1], 'end_to_end': [0.2]},
                                 {'network': [0.2], 'end_to_end': [0.3]}, 1)
      | {'ours_compile_s': 3.0}}
  text = report_lib.markdown_report(report)
  for part in ('## Raw head outputs', '| loc | 1x2x4 | 1e-06', '## Detections', '100.00%',
               '## Speed', '| end_to_end | 200.0', '1.50x', 'compile time'):
    assert part in text, part
  assert 'Warning' not in text  # no CPU count recorded: no judgement
  report['machine'] |= {'cpu_count_total': 2, 'load_average_before_timing': [4.2, 4.0, 3.9]}
  assert 'oversubscribed (1-minute load 4.20 on 2 CPUs)' in report_lib.markdown_report(report)
  report['machine'] |= {'load_average_before_timing': [2.1, 2, 2], 'load_average': [2.3, 2, 2]}
  assert 'Warning' not in report_lib.markdown_report(report)
  assert 'YOLACT++: DCN' not in text and 'max mask score diff' in text
  report['settings'] |= {'shims': {'dcn_v2_torch': True}, 'yolact_plus': {
      'dcn_layers': [0, 4, 6, 3], 'dcn_interval': 1, 'num_anchors': 9, 'use_maskiou': True,
      'rescore_mask': True, 'rescore_bbox': False}}
  text = report_lib.markdown_report(report)
  assert 'YOLACT++: DCN layers per stage [0, 4, 6, 3]' in text and 'dcn_torch' in text
  assert 'mask re-scoring on, box re-scoring off' in text
  assert 'float64' not in text
  report['float64_yardstick'] = {
      'raw_outputs': outputs.merge_yardstick([outputs.yardstick_diff(
          {'loc': np.ones(2)}, {'loc': np.ones(2) + 1e-3}, {'loc': np.ones(2) + 2e-3},
          keys=('loc',))]),
      'detections': {'ours': report['detections']['total'],
                     'original': {**report['detections']['total'], 'matched': 2,
                                  'agreement': 2 / 3}}}
  text = report_lib.markdown_report(report)
  assert '## Against the original in float64' in text and '| loc | 0.002 | 0.001 | 2.00 |' in text
  assert '| ours | 3 of 3 | 100.00% |' in text and '| original | 2 of 3 | 66.67% |' in text


def test_float64_yardstick_ratios_and_verdict():
  truth = {'loc': np.array([1.0, 2.0, 3.0, 4.0])}
  theirs = {'loc': truth['loc'] + [1e-3, 0, -1e-3, 0]}  # max 1e-3, mean 5e-4
  ours = {'loc': truth['loc'] + [0, 1.2e-3, 0, 0]}  # max 1.2e-3, mean 3e-4
  d = outputs.yardstick_diff(ours, theirs, truth, keys=('loc',))['loc']
  assert d['ratio_max'] == pytest.approx(1.2) and d['ratio_mean'] == pytest.approx(0.6)
  assert d['within_factor']
  worse = outputs.yardstick_diff({'loc': truth['loc'] + [0, 2e-3, 0, 0]}, theirs, truth,
                                     keys=('loc',))['loc']
  assert worse['ratio_max'] == pytest.approx(2.0) and not worse['within_factor']
  merged = outputs.merge_yardstick([{'loc': d}, {'loc': worse}])['loc']
  assert merged['ours_max'] == pytest.approx(2e-3) and merged['ours_mean'] == pytest.approx(4e-4)
  assert merged['ratio_mean'] == pytest.approx(0.8) and not merged['within_factor']
  exact = outputs.yardstick_diff(truth, truth, truth, keys=('loc',))['loc']
  assert exact['ratio_max'] == 0.0 and exact['within_factor']  # both exact: no division by 0


# ---------------------------------------------------------------------------------------------
# Training step


def test_synthetic_targets_are_tight_boxes_of_their_masks():
  t = train_lib.synthetic_targets(2, 64, 3, num_classes=81, seed=4)
  assert t['boxes'].shape == (2, 3, 4) and t['masks'].shape == (2, 3, 64, 64)
  assert t['labels'].dtype == np.int32 and t['labels'].min() >= 0 and t['labels'].max() < 80
  for b in range(2):
    for g in range(3):
      ys, xs = np.nonzero(t['masks'][b, g])
      np.testing.assert_allclose(t['boxes'][b, g] * 64,
                                 [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1e-4)
  again = train_lib.synthetic_targets(2, 64, 3, num_classes=81, seed=4)
  assert all(np.array_equal(t[k], again[k]) for k in t)


def test_our_train_batch_pads_slots_and_downsamples_masks():
  from yolact_jax.loss import downsample_gt_masks
  cfg = get_config('yolact_tiny')  # max_instances 8, proto 16, semantic 8 at 64 px
  t = train_lib.synthetic_targets(2, cfg.max_size, 3, cfg.num_classes, seed=1)
  images = np.random.default_rng(2).normal(size=(2, cfg.max_size, cfg.max_size, 3))
  batch = train_lib.our_train_batch(images, t, cfg)
  slots = cfg.train.max_instances
  from yolact_jax.trainer import BATCH_KEYS
  assert set(batch) == set(BATCH_KEYS)
  np.testing.assert_array_equal(batch['image'], images.astype(np.float32))
  np.testing.assert_array_equal(batch['boxes'][:, :3], t['boxes'])
  assert batch['boxes'].shape == (2, slots, 4) and batch['valid'].sum(axis=1).tolist() == [3, 3]
  assert not batch['is_crowd'].any() and not batch['boxes'][:, 3:].any()
  np.testing.assert_array_equal(batch['labels'][:, :3], t['labels'])
  hp = batch['masks_proto'].shape[-1]
  np.testing.assert_array_equal(batch['masks_proto'][:, :3],
                                np.asarray(downsample_gt_masks(t['masks'], (hp, hp))))
  assert not batch['masks_segm'][:, 3:].any()
  with pytest.raises(ValueError, match='max_instances'):
    train_lib.our_train_batch(images, train_lib.synthetic_targets(2, 64, slots + 1, 81, 0), cfg)


def test_original_train_targets_layout():
  t = train_lib.synthetic_targets(2, 32, 2, num_classes=5, seed=0)
  gts, masks, crowds = train_lib.original_train_targets(t, torch, 'cpu')
  assert crowds == [0, 0] and len(gts) == len(masks) == 2
  assert gts[0].shape == (2, 5) and gts[0].dtype == torch.float32
  np.testing.assert_array_equal(gts[1][:, 4].numpy(), t['labels'][1])
  np.testing.assert_array_equal(gts[1][:, :4].numpy(), t['boxes'][1])
  assert masks[0].dtype == torch.float32 and masks[0].shape == (2, 32, 32)


def test_compare_losses_table():
  out = train_lib.compare_losses({'B': 2.0, 'C': 1.0, 'total': 3.0}, {'B': 2.5, 'C': 1.0, 'I': 0.5,
                                                                'total': 4.0})
  assert out['B'] == {'ours': 2.0, 'original': 2.5, 'abs_diff': 0.5, 'rel_diff': 0.2}
  assert out['C']['abs_diff'] == 0 and out['I'] == {'original': 0.5, 'ours': None}
  assert out['total']['rel_diff'] == 0.25


def test_compare_updates_against_the_originals_update():
  before = {'a': np.zeros(3, np.float32), 'frozen': np.ones(2, np.float32),
            'count': np.array(7)}
  theirs = {'a': np.array([1.0, -2.0, 0.5]), 'frozen': np.ones(2), 'count': np.array(8)}
  ours = {'a': np.array([1.0, -2.1, 0.5]), 'frozen': np.ones(2), 'count': np.array(8)}
  u = train_lib.compare_updates(before, ours, theirs)
  assert u['tensors_changed'] == 1 and u['tensors_unchanged'] == 1  # ints are skipped
  assert u['max_abs_update'] == 2.0 and u['max_abs_update_diff'] == pytest.approx(0.1)
  assert u['relative'] == pytest.approx(0.05) and u['worst_key'] == 'a'
  assert u['per_tensor_relative_median'] == pytest.approx(0.05)
  exact = train_lib.compare_updates(before, theirs, theirs)
  assert exact['relative'] == 0 and exact['max_abs_update_diff'] == 0


def test_loss_criterion_call_handles_both_signatures():
  class Old(torch.nn.Module):
    def forward(self, predictions, targets, masks, num_crowds):
      return ('old', predictions)

  class New(torch.nn.Module):
    def forward(self, net, predictions, targets, masks, num_crowds):
      return ('new', net, predictions)

  assert train_lib.loss_criterion_call(Old())('NET', 'P', 'T', 'M', 'N') == ('old', 'P')
  assert train_lib.loss_criterion_call(New())('NET', 'P', 'T', 'M', 'N') == ('new', 'NET', 'P')


# ---------------------------------------------------------------------------------------------
# A whole run against a fake checkout

FAKE_NOISE = 1e-6

FAKE_FILES = {
    'data/__init__.py': 'from .config import cfg, set_cfg\n',
    'data/config.py': '''
        import types
        cfg = types.SimpleNamespace(name=None)  # like the original: no mask_proto_debug

        def set_cfg(config_name):
            if not config_name.endswith('_config'):
                raise ValueError(config_name)
            cfg.name = config_name[:-len('_config')]
            from yolact_jax.config import get_config
            jax_cfg = get_config(cfg.name)
            cfg.num_classes = jax_cfg.num_classes
            cfg.positive_iou_threshold = jax_cfg.loss.positive_iou_threshold
            cfg.negative_iou_threshold = jax_cfg.loss.negative_iou_threshold
            cfg.ohem_negpos_ratio = jax_cfg.loss.ohem_negpos_ratio
            cfg.freeze_bn = False
        ''',
    'layers/modules/__init__.py': '',
    'layers/modules/multibox_loss.py': '''
        """Stands in for the original's MultiBoxLoss: yolact-jax's loss and its gradient (JAX),
        handed to torch through a surrogate whose gradient w.r.t. each parameter is JAX's."""
        import dataclasses
        import jax
        import numpy as np
        import torch

        from data.config import cfg

        _LOSS_AND_GRADIENT = {}

        class MultiBoxLoss(torch.nn.Module):
            def __init__(self, num_classes, pos_threshold, neg_threshold, negpos_ratio):
                super().__init__()
                assert num_classes == cfg.num_classes and negpos_ratio == cfg.ohem_negpos_ratio

            def forward(self, predictions, targets, masks, num_crowds):  # the 2019 signature
                from yolact_jax.compare.train import our_train_batch
                from yolact_jax.anchors import make_priors
                from yolact_jax.checkpoint.convert import (state_dict_to_variables,
                                                           variables_to_state_dict)
                from yolact_jax.loss import yolact_loss
                from yolact_jax.model.yolact import Yolact as Network
                net = predictions['net']
                jax_cfg = net.jax_cfg
                jax_cfg = dataclasses.replace(jax_cfg, train=dataclasses.replace(
                    jax_cfg.train, batch_size=len(targets)))
                assert set(num_crowds) == {0}
                boxes = np.stack([t[:, :4].numpy() for t in targets])
                labels = np.stack([t[:, 4].numpy() for t in targets]).astype(np.int32)
                gt = {'boxes': boxes, 'labels': labels,
                      'masks': np.stack([m.numpy() for m in masks]).astype(np.uint8)}
                batch = our_train_batch(predictions['image'], gt, jax_cfg)
                variables = state_dict_to_variables(net.state_dict(), jax_cfg)
                key = (repr(jax_cfg), cfg.freeze_bn)
                if key not in _LOSS_AND_GRADIENT:  # jitted once per configuration
                    model = Network(jax_cfg.model, num_classes=jax_cfg.num_classes,
                                    freeze_bn=cfg.freeze_bn)
                    priors = make_priors(jax_cfg)

                    def total(params, batch_stats, batch):
                        preds, _ = model.apply({'params': params, 'batch_stats': batch_stats},
                                               batch['image'], train=True,
                                               mutable=['batch_stats'])
                        return yolact_loss(preds, priors, batch, jax_cfg, None)
                    _LOSS_AND_GRADIENT[key] = jax.jit(jax.value_and_grad(total, has_aux=True))
                (_, terms), grads = _LOSS_AND_GRADIENT[key](
                    variables['params'], variables['batch_stats'], batch)
                grads = variables_to_state_dict({'params': grads,
                                                 'batch_stats': variables['batch_stats']})
                surrogate = sum((p * torch.from_numpy(np.asarray(grads[k]))).sum()
                                for k, p in net.named_state() if p.requires_grad)
                out = {k: torch.tensor(float(terms[k])) for k in ('B', 'C', 'M', 'S')}
                out['B'] = out['B'] + surrogate - surrogate.detach()
                return out
        ''',
    'layers/__init__.py': 'from .detection import Detect\n',
    'layers/detection.py': '''
        import jax
        import numpy as np
        import torch
        from yolact_jax.detect import detect, detect_kwargs

        class Detect(object):
            def __init__(self, jax_cfg):
                self.jax_cfg = jax_cfg
                self.use_fast_nms = False
                self.use_cross_class_nms = False

            def cc_fast_nms(self, *args, **kwargs):  # the original's, since 2019-11-06
                raise NotImplementedError('the fake dispatches on use_cross_class_nms')

            def __call__(self, predictions, net):
                nms = ('cross_class' if self.use_cross_class_nms else
                       'fast' if self.use_fast_nms else 'standard')
                kw = dict(detect_kwargs(self.jax_cfg), nms=nms)
                p = {k: v.numpy() for k, v in predictions.items()}
                d = jax.device_get(detect(p['loc'], p['conf'], p['mask'], p['priors'], **kw))
                out = []
                for b in range(d['valid'].shape[0]):
                    n = int(d['num_detections'][b])
                    out.append({'detection': {
                        'box': torch.tensor(d['boxes'][b, :n]),
                        'class': torch.tensor(d['classes'][b, :n]).long(),
                        'score': torch.tensor(d['scores'][b, :n]),
                        'mask': torch.tensor(d['coefs'][b, :n]),
                        'proto': predictions['proto'][b]}, 'net': net})
                return out
        ''',
    'layers/output_utils.py': '''
        import jax
        import numpy as np
        import torch
        from yolact_jax.config import get_config
        from yolact_jax.postprocess import postprocess as jax_postprocess

        from data.config import cfg

        def postprocess(det_output, w, h, batch_idx=0, interpolation_mode='bilinear',
                        visualize_lincomb=False, crop_masks=True, score_threshold=0):
            if cfg.mask_proto_debug:  # the original reads it; only eval.py sets it
                raise AssertionError('mask_proto_debug must be off')
            dets = det_output[batch_idx]['detection']
            n = dets['score'].shape[0]
            if n == 0:
                return [torch.Tensor()] * 4
            d = {'boxes': dets['box'].numpy()[None], 'coefs': dets['mask'].numpy()[None],
                 'classes': dets['class'].numpy()[None], 'scores': dets['score'].numpy()[None],
                 'valid': np.ones((1, n), bool), 'num_detections': np.array([n])}
            res = jax.device_get(jax_postprocess(d, dets['proto'].numpy()[None],
                                                 np.array([[h, w]]), (h, w)))
            scores = dets['score']
            if get_config(cfg.name).model.use_maskiou:
                # YOLACT++ mask re-scoring: the pair [box scores, mask scores]; the fake has no
                # mask-IoU network, so its mask scores are the box scores
                scores = [scores, scores.clone()]
            return (dets['class'], scores, torch.tensor(res['boxes_px'][0]).long(),
                    torch.tensor(res['masks'][0].astype(np.float32)))
        ''',
    'yolact.py': '''
        """Test fixture standing in for the original's yolact.py (see test_compare_pytorch.py)."""
        import numpy as np
        import torch, torchvision
        import torch.nn as nn
        from torchvision.models.resnet import Bottleneck  # imported, never used
        from dcn_v2 import DCN  # YOLACT++ only: imported, never used

        from data.config import cfg
        from layers import Detect

        torch.cuda.current_device()
        LEGACY_FLOAT = np.float
        use_jit = torch.cuda.device_count() <= 1
        ScriptModuleWrapper = torch.jit.ScriptModule if use_jit else nn.Module
        script_method_wrapper = torch.jit.script_method if use_jit else (lambda fn, _rcn=None: fn)
        NOISE = {noise}


        class FPN(ScriptModuleWrapper):
            @script_method_wrapper
            def forward(self, x):
                return x


        class Yolact(nn.Module):
            def __init__(self):
                super().__init__()
                from yolact_jax.config import get_config
                self.jax_cfg = get_config(cfg.name)
                self.fpn = FPN()
                self.detect = Detect(self.jax_cfg)
                self.variables = None

            def load_state_dict(self, state_dict, strict=True, assign=False):
                from yolact_jax.checkpoint.convert import state_dict_to_variables
                self.variables = state_dict_to_variables(
                    {k: v.numpy() for k, v in state_dict.items()}, self.jax_cfg)
                self.keys = list(state_dict)
                self.tensors = nn.ParameterList(
                    nn.Parameter(v.clone(), requires_grad=v.is_floating_point()
                                 and not k.endswith(('running_mean', 'running_var')))
                    for k, v in state_dict.items())

            def named_state(self):
                return zip(self.keys, self.tensors)

            def state_dict(self):
                return {k: v.detach().clone() for k, v in self.named_state()}

            def train(self, mode=True):
                super().train(mode)
                if mode and cfg.freeze_bn:  # the original's freeze_bn(): BN affine frozen
                    for k, v in self.named_state():
                        if v.dim() == 1 and ('bn' in k or 'downsample.1' in k):
                            v.requires_grad = False
                return self

            def load_weights(self, path):
                self.load_state_dict(torch.load(path))

            def forward(self, x):
                if self.training:  # everything happens in the fake MultiBoxLoss
                    return {'net': self, 'image': x.numpy().transpose(0, 2, 3, 1)}
                import jax
                from yolact_jax.anchors import make_priors
                from yolact_jax.model.yolact import Yolact as Network
                network = Network(self.jax_cfg.model, num_classes=self.jax_cfg.num_classes)
                out = jax.device_get(network.apply(
                    self.variables, x.numpy().transpose(0, 2, 3, 1), train=False))
                rng = np.random.default_rng(0)
                noisy = lambda a: torch.from_numpy(
                    (a + rng.uniform(-NOISE, NOISE, a.shape)).astype(np.float32))
                preds = {'loc': noisy(out['loc']), 'mask': noisy(out['coefs']),
                          'conf': torch.softmax(torch.tensor(out['conf']), -1),
                          'priors': torch.tensor(make_priors(self.jax_cfg)),
                          'proto': noisy(out['proto'])}
                return self.detect(preds, self)
        '''.replace('{noise}', repr(FAKE_NOISE)),
}


@pytest.fixture
def fake_checkout(tmp_path):
  repo = tmp_path / 'fake_yolact'
  for name, text in FAKE_FILES.items():
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
  yield repo
  for name in original.ORIGINAL_MODULES:
    for key in [k for k in sys.modules if k == name or k.startswith(name + '.')]:
      if str(repo) in str(getattr(sys.modules[key], '__file__', '')):
        del sys.modules[key]
  if str(repo) in sys.path:
    sys.path.remove(str(repo))


def test_whole_run_against_a_fake_checkout(fake_checkout, tmp_path):
  out = tmp_path / 'compare.json'
  report = cli.main(['--yolact-repo', str(fake_checkout), '--config', 'yolact_tiny',
                     '--random-weights', '0', '--num-images', '3', '--batch-size', '2',
                     '--warmup', '1', '--repeats', '2', '--match-iou', '0.9',
                     '--out', str(out)])
  assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=float))
  assert '## Speed' in out.with_suffix('.md').read_text()

  s = report['settings']
  assert s['original_commit'] is None and s['batch_size'] == 2 and s['nms'] == 'fast'
  machine = report['machine']
  assert machine['cpu_count_total'] >= 1 and len(machine['load_average_before_timing']) == 3
  assert isinstance(machine['thread_env'], dict)
  original_detect = s['detect_settings']['original']
  assert original_detect['use_fast_nms'] and not original_detect['use_cross_class_nms']
  assert s['detect_settings']['ours']['nms'] == 'fast'
  if not torch.cuda.is_available():
    assert s['shims']['cuda_calls_for_cpu']
  for name in shims.STUBBED_WHEN_MISSING:
    assert s['shims'][f'{name}_stub'] == (not import_stubs.module_available(name))
  assert s['shims']['dcn_v2_torch'] == (not shims.dcn_v2_usable(torch))
  raw = report['raw_outputs']
  assert set(raw) == set(outputs.RAW_KEYS)
  for key in ('loc', 'mask', 'proto'):  # the fake adds uniform noise of FAKE_NOISE
    bound = FAKE_NOISE + 1e-5  # + float32 noise (the fake runs the network un-jitted)
    assert 0 < raw[key]['max_abs'] <= bound, (key, raw[key])
    assert raw[key]['batches'] == 2 and raw[key]['within_reference_tolerance']
  # conf (softmax probabilities) has no added noise: float32 noise only, as above
  assert raw['conf']['max_abs'] < 1e-5 and raw['priors']['max_abs'] == 0.0

  det = report['detections']
  assert det['total']['images'] == 3 and len(det['per_image']) == 3
  assert det['total']['num_ours'] > 0
  assert det['total']['agreement'] >= 0.95
  assert det['total']['mask_iou_mean'] >= 0.99
  assert [e['image_hw'] for e in det['per_image']] == [list(s) for s in
                                                       inputs.SEEDED_IMAGE_SIZES[:3]]

  speed = report['speed']
  for side in ('ours', 'original'):
    for stage in ('network', 'end_to_end'):
      t = speed[side][stage]
      assert t['runs'] == 2 and t['median_ms'] > 0 and t['images_per_s'] > 0
  assert speed['speedup']['end_to_end'] > 0 and speed['ours_compile_s'] > 0
  # the fake's stand-ins are gone again
  assert not any(n.split('.')[0] in (*shims.STUBBED_WHEN_MISSING, 'dcn_v2') for n in sys.modules
                 if getattr(sys.modules[n], '__is_stub__', False))
  assert all(name not in np.__dict__ for name in NUMPY_ALIASES_MISSING)


def test_whole_run_with_a_yolact_plus_preset(fake_checkout, tmp_path):
  """yolact_plus_tiny: DCN layers (randomised offsets) through the state_dict both ways, 9
  anchors, the original's [box, mask] score pair, the DCN stand-in recorded."""
  report = cli.main(['--yolact-repo', str(fake_checkout), '--config', 'yolact_plus_tiny',
                     '--random-weights', '0', '--num-images', '2', '--skip-speed',
                     '--float64_yardstick', '--out', str(tmp_path / 'c.json')])
  s = report['settings']
  assert s['yolact_plus']['num_anchors'] == 9 and any(s['yolact_plus']['dcn_layers'])
  assert s['yolact_plus']['use_maskiou'] and s['yolact_plus']['rescore_mask']
  assert s['shims']['dcn_v2_torch'] == (not shims.dcn_v2_usable(torch))
  raw = report['raw_outputs']
  assert all(raw[k]['within_reference_tolerance'] for k in ('loc', 'mask', 'proto'))
  det = report['detections']['total']
  assert det['num_ours'] > 0 and det['agreement'] >= 0.95
  assert det['mask_score_abs_diff_max'] is not None
  assert 'YOLACT++: DCN layers per stage' in (tmp_path / 'c.md').read_text()
  # the fake's float64 copy computes what its float32 one does (JAX inside, the same noise), so
  # the original's own error is 0 and its detections agree with themselves exactly
  yardstick = report['float64_yardstick']
  assert set(yardstick['raw_outputs']) == set(outputs.YARDSTICK_KEYS)
  assert yardstick['raw_outputs']['proto']['original_max'] == 0.0
  assert yardstick['raw_outputs']['proto']['ours_max'] > 0
  assert yardstick['detections']['original']['agreement'] == 1.0
  assert yardstick['detections']['ours']['agreement'] >= 0.95
  assert '## Against the original in float64' in (tmp_path / 'c.md').read_text()


def test_whole_run_with_a_checkpoint_file(fake_checkout, tmp_path):
  """--weights: the original loads it with its own load_weights, ours through the converter."""
  from yolact_jax.checkpoint.convert import save_pth
  cfg = get_config('yolact_tiny')
  x = np.random.default_rng(1).normal(size=(1, cfg.max_size, cfg.max_size, 3)).astype(np.float32)
  from yolact_jax.checkpoint.convert import variables_to_state_dict
  weights = tmp_path / 'tiny.pth'
  save_pth(variables_to_state_dict(weights_lib.random_variables(cfg, 5, x)), weights)
  report = cli.main(['--yolact-repo', str(fake_checkout), '--config', 'yolact_tiny',
                     '--weights', str(weights), '--num-images', '1', '--skip-speed',
                     '--nms', 'standard', '--out', str(tmp_path / 'c.json')])
  assert report['settings']['weights'] == str(weights)
  loc = report['raw_outputs']['loc']
  assert loc['max_abs'] <= FAKE_NOISE + 1e-5
  assert report['detections']['total']['agreement'] >= 0.95
  assert set(report['speed']) == {'ours_compile_s'}


def test_whole_run_with_a_training_step(fake_checkout, tmp_path):
  """--train-step: the fake's loss and gradient are ours (a separately jitted function), applied
  by torch's SGD, so losses and the parameter update must agree up to float32 noise: both sides
  get the same batch, weights, learning rate, momentum, weight decay and frozen BatchNorm."""
  report = cli.main(['--yolact-repo', str(fake_checkout), '--config', 'yolact_tiny',
                     '--random-weights', '0', '--num-images', '2', '--batch-size', '1',
                     '--warmup', '0', '--repeats', '1', '--train-step',
                     '--train-batch-size', '2', '--train-objects', '2', '--train-warmup', '0',
                     '--train-repeats', '2', '--out', str(tmp_path / 'c.json')])
  train = report['train_step']
  assert train['batch_size'] == 2 and train['freeze_bn'] and train['num_positives'] > 0
  assert train['learning_rate'] == pytest.approx(1e-4)  # warm-up start, as train.py
  for key in ('B', 'C', 'M', 'S', 'total'):
    assert train['losses'][key]['rel_diff'] < 1e-4, (key, train['losses'][key])
  u = train['update']
  assert u['tensors_changed'] > 0 and u['tensors_unchanged'] > 0  # BN frozen on both sides
  assert u['relative'] < 1e-3, u
  assert train['original_self']['update']['tensors_changed'] == u['tensors_changed']
  speed = train['speed']
  assert speed['ours']['train_step']['runs'] == 2 and speed['original']['train_step']['runs'] == 2
  assert speed['speedup']['train_step'] > 0 and train['ours_compile_s'] > 0
  text = (tmp_path / 'c.md').read_text()
  for part in ('## Training step (batch 2', '| total |', 'Parameter update', 'against itself',
               '| train_step |'):
    assert part in text, part


def test_ours_stablehlo_runs_the_exported_program(fake_checkout, tmp_path):
  """--ours stablehlo: the end-to-end program from its serialized jax.export form gives the
  same matches as the live program."""
  out = tmp_path / 'compare.json'
  report = cli.main(['--yolact_repo', str(fake_checkout), '--config', 'yolact_tiny',
                     '--random_weights', '0', '--num_images', '2', '--batch_size', '2',
                     '--warmup', '1', '--repeats', '1', '--match_iou', '0.9', '--skip_speed',
                     '--ours', 'stablehlo', '--out', str(out)])
  assert report['settings']['ours'] == 'stablehlo'
  total = report['detections']['total']
  assert total['images'] == 2 and total['num_ours'] > 0
  assert total['matched'] == total['num_ours'] == total['num_original']
  assert total['mask_iou_mean'] >= 0.99


def test_ours_onnx_runs_the_converted_program(fake_checkout, tmp_path):
  """--ours onnx: the end-to-end program converted by jax2onnx, in ONNX Runtime, gives the same
  matches as the live program."""
  pytest.importorskip('onnxruntime', reason='--ours onnx needs onnxruntime')
  pytest.importorskip('jax2onnx', reason='--ours onnx converts with jax2onnx (docs/serving.md)')
  report = cli.main(['--yolact_repo', str(fake_checkout), '--config', 'yolact_tiny',
                     '--random_weights', '0', '--num_images', '2', '--batch_size', '2',
                     '--warmup', '1', '--repeats', '1', '--ours', 'onnx',
                     '--out', str(tmp_path / 'compare.json')])
  assert report['settings']['ours'] == 'onnx'
  total = report['detections']['total']
  assert total['images'] == 2 and total['num_ours'] > 0
  assert total['matched'] == total['num_ours'] == total['num_original']
  assert report['speed']['ours']['end_to_end']['runs'] == 1
