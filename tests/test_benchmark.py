"""scripts/benchmark.py (over yolact_jax.bench) on the tiny preset: every section runs and the
JSON has every field.

Time values are only checked to be positive and finite (the machine is shared and noisy).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scripts import benchmark as cli
from yolact_jax.bench import convgrad, convnet, grid, machine, report as report_lib, timing
from yolact_jax.bench import inputs as bench_inputs
from yolact_jax.config import get_config
from yolact_jax.model.shapes import feature_sizes, proto_size

TINY_ARGS = ['--presets', 'yolact_tiny', '--batch-sizes', '1', '--train-presets', 'yolact_tiny',
             '--repeats', '2', '--warmup', '1', '--image-hw', '48,64', '--nms-classes', '8',
             '--nms-top-k', '50', '--matmul-probe-size', '64', '--quiet']

TIMING_FIELDS = ('lower_s', 'compile_s', 'median_ms', 'p10_ms', 'p90_ms', 'mean_ms', 'min_ms')
MEMORY_FIELDS = ('argument_bytes', 'output_bytes', 'temp_bytes', 'alias_bytes',
                 'program_total_bytes')


def positive_finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_stage(stage: dict, name: str) -> None:
  assert stage['stage'] == name
  for field in TIMING_FIELDS:
    assert positive_finite(stage[field]), (name, field, stage[field])
  assert stage['p10_ms'] <= stage['median_ms'] <= stage['p90_ms']
  assert stage['runs'] == 2  # --repeats 2
  assert positive_finite(stage['flops']), (name, stage['flops'])
  for field in MEMORY_FIELDS:
    assert isinstance(stage['memory'][field], int), (name, field)
  assert stage['memory']['program_total_bytes'] > 0


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp('bench') / 'bench.json'
  returned = cli.main(TINY_ARGS + ['--out', str(out)])
  written = json.loads(out.read_text())
  return returned, written, out


def test_json_is_written_and_matches_the_return_value(report):
  returned, written, out = report
  assert returned == written
  markdown = out.with_suffix('.md').read_text()
  for heading in ('## Inference', '## NMS', '## Train step', '## FLOPs'):
    assert heading in markdown
  assert 'yolact_tiny' in markdown


def test_machine_info(report):
  m = report[1]['machine']
  for field in ('jax', 'flax', 'platform', 'device_kind', 'cpu_model', 'date_utc', 'xla_flags',
                'glibc_tunables'):
    assert isinstance(m[field], str), field
  assert m['transparent_huge_pages'] in ('always', 'madvise', 'never', None)
  assert m['cpu_cores_usable'] >= 1 and m['device_count'] >= 1
  for field in ('load_average_start', 'load_average_end'):
    assert len(m[field]) == 3 and all(x >= 0 for x in m[field])
  assert positive_finite(m['max_rss_bytes_end'])


def test_inference_stages(report):
  (case,) = report[1]['inference']
  assert 'error' not in case, case.get('traceback')
  assert (case['preset'], case['batch'], case['dtype']) == ('yolact_tiny', 1, 'float32')
  names = [s['stage'] for s in case['stages']]
  assert names == ['network', 'detect_fast', 'detect_cross_class', 'detect_standard',
                   'postprocess', 'end_to_end', 'end_to_end_uint8']
  for stage in case['stages']:
    check_stage(stage, stage['stage'])
  assert case['image_hw'] == [48, 64]
  assert positive_finite(case['max_rss_bytes'])


def test_nms_variants(report):
  nms = report[1]['nms']
  assert (nms['num_classes'], nms['top_k']) == (8, 50)
  assert [v['nms'] for v in nms['variants']] == ['fast', 'cross_class', 'standard']
  for v in nms['variants']:
    assert 'error' not in v, v.get('traceback')
    assert [s['stage'] for s in v['stages']] == ['nms_only', 'detect']
    for stage in v['stages']:
      check_stage(stage, stage['stage'])
    assert 0 < v['kept_by_nms'] <= v['candidates_valid']
  per_class = nms['variants'][0]['candidate_shape']
  assert per_class == [1, 8, 50] and nms['variants'][1]['candidate_shape'] == [1, 50]


def test_train_step(report):
  (case,) = report[1]['train']
  assert 'error' not in case, case.get('traceback')
  (stage,) = case['stages']
  check_stage(stage, 'train_step')
  assert positive_finite(stage['images_per_s'])
  assert case['loss_finite'] and case['batch'] == 2
  assert positive_finite(case['max_rss_bytes'])


def test_flops_section(report):
  flops = report[1]['flops']
  assert '2 FLOPs' in flops['convention']
  assert positive_finite(flops['peak']['float32']['tflops'])
  programs = {(r['section'], r['stage']) for r in flops['rows']}
  assert {('inference', 'network'), ('inference', 'end_to_end'),
          ('train', 'train_step')} <= programs
  for row in flops['rows']:
    assert positive_finite(row['gflops']) and positive_finite(row['achieved_tflops'])
    assert positive_finite(row['fraction_of_peak'])
  (probe,) = flops['matmul_probe']
  assert probe['xla_flops'] == probe['convention_flops'] == 2 * 64 ** 3
  assert positive_finite(probe['achieved_tflops'])


# ---------------------------------------------------------------------------------------------
# Pure helpers


def test_summarize_times_percentiles():
  s = timing.summarize_times([0.001 * i for i in range(1, 11)])
  assert s['runs'] == 10 and s['min_ms'] == pytest.approx(1.0)
  assert s['median_ms'] == pytest.approx(5.5)
  assert s['p10_ms'] == pytest.approx(1.9) and s['p90_ms'] == pytest.approx(9.1)


def test_time_calls_stops_after_the_budget_but_keeps_the_minimum():
  calls = []
  times = timing.time_calls(lambda: calls.append(1), warmup=2, repeats=100, max_seconds=0.0)
  assert len(times) == timing.MIN_TIMED_RUNS and len(calls) == 2 + timing.MIN_TIMED_RUNS


def test_time_calls_hands_every_result_to_wait():
  results = iter(range(5))
  waited = []
  times = timing.time_calls(lambda: next(results), repeats=3, warmup=2, wait=waited.append)
  assert waited == [0, 1, 2, 3, 4] and len(times) == 3
  assert len(timing.time_calls(lambda: None, repeats=2, warmup=0, wait=None)) == 2


def test_cpu_peak_assumption():
  assert machine.fp32_flops_per_cycle(['avx2', 'fma'], 'AuthenticAMD') == 32
  assert machine.fp32_flops_per_cycle(['avx512f', 'fma'], 'GenuineIntel') == 64
  assert machine.fp32_flops_per_cycle(['sse2'], None) == 16
  assert machine.cpu_peak_gflops(2, 2500.0, 32) == pytest.approx(160.0)
  assert machine.cpu_peak_gflops(2, None, 32) is None


def test_gpu_peak_table_matches_device_kinds():
  cpu = {'flags': [], 'vendor': None, 'mhz': None}
  peak, _ = machine.device_peak_tflops('NVIDIA H100 80GB HBM3', 'gpu', 'bfloat16', cpu, 1)
  assert peak == pytest.approx(989.4)
  peak, _ = machine.device_peak_tflops('NVIDIA H100 PCIe', 'gpu', 'float32', cpu, 1)
  assert peak == pytest.approx(51.2)
  peak, _ = machine.device_peak_tflops('NVIDIA H200', 'gpu', 'float32', cpu, 1)
  assert peak == pytest.approx(66.9)
  assert machine.device_peak_tflops('Some GPU', 'gpu', 'float32', cpu, 1)[0] is None
  assert machine.device_peak_tflops('Some GPU', 'gpu', 'float32', cpu, 1, override=5.0)[0] == 5.0


def test_synthetic_train_batch_layout():
  cfg = get_config('yolact_tiny')
  batch = bench_inputs.synthetic_train_batch(cfg, 3, objects=2)
  slots, hp, hs = cfg.train.max_instances, proto_size(cfg), feature_sizes(cfg)[0]
  assert batch['image'].shape == (3, cfg.max_size, cfg.max_size, 3)
  assert batch['masks_proto'].shape == (3, slots, hp, hp)
  assert batch['masks_segm'].shape == (3, slots, hs, hs)
  assert batch['valid'].sum() == 6 and not batch['is_crowd'].any()
  assert batch['masks_proto'][:, :2].reshape(6, -1).any(axis=1).all()  # every object drawn
  assert not batch['masks_proto'][:, 2:].any()  # empty slots stay empty
  assert (batch['boxes'][..., 2:] > batch['boxes'][..., :2]).all(axis=-1)[batch['valid']].all()


def test_object_masks_rectangle_and_ellipse():
  boxes = np.array([[0.25, 0.25, 0.75, 0.75]] * 2, np.float32)
  rect, ellipse = bench_inputs.object_masks(boxes, np.array([0, 1]), 8)
  assert rect.sum() == 16 and rect[2:6, 2:6].all()
  assert 0 < ellipse.sum() < 16 and not ellipse[2, 2]


def test_synthetic_detect_inputs_are_peaked():
  inputs = bench_inputs.synthetic_detect_inputs(2, num_priors=2000, num_classes=80, objects=10)
  assert inputs['conf'].shape == (2, 2000, 81)
  np.testing.assert_allclose(inputs['conf'].sum(-1), 1.0, rtol=1e-5)
  best_fg = inputs['conf'][..., 1:].max(-1)
  assert (best_fg > 0.05).sum() > 50 and best_fg.max() > 0.5  # confident clusters
  assert np.median(best_fg) < 0.05  # most priors are background


def test_resolve_cases():
  args = cli.build_parser().parse_args([])
  inference, train = grid.resolve_cases(args, 'cpu')
  assert inference == list(grid.CPU_INFERENCE_CASES) and train == list(grid.CPU_TRAIN_CASES)
  inference, _ = grid.resolve_cases(args, 'full')
  assert len(inference) == len(grid.FULL_INFERENCE_PRESETS) * 2 * 2
  args = cli.build_parser().parse_args(['--presets', 'yolact_base', '--batch-sizes', '1,8',
                                          '--dtypes', 'bfloat16'])
  assert grid.resolve_cases(args, 'cpu')[0] == [('yolact_base', 1, 'bfloat16'),
                                                 ('yolact_base', 8, 'bfloat16')]
  with pytest.raises(SystemExit):
    grid.resolve_cases(cli.build_parser().parse_args(['--presets', 'yolact_tiny', '--dtypes',
                                                         'float16']), 'cpu')


def test_unknown_section_is_an_error():
  with pytest.raises(SystemExit):
    cli.main(['--only', 'inferense'])


def test_machine_slug():
  assert machine.machine_slug({'platform': 'cpu', 'cpu_model': 'AMD EPYC',
                             'cpu_cores_usable': 2}) == 'cpu-amd-epyc-2c'
  assert machine.machine_slug({'platform': 'gpu',
                             'device_kind': 'NVIDIA H100 80GB HBM3'}) == 'nvidia-h100-80gb-hbm3'


def test_convgrad_case_times_forward_and_both_gradients():
  opts = timing.TimingOptions(warmup=1, repeats=2, max_seconds=10.0)
  case = convgrad.conv_gradient_case('tiny 3x3/2', 16, 4, 8, 3, 2, 1, 'float32', opts)
  assert [s['stage'] for s in case['stages']] == ['forward', 'input_gradient', 'weight_gradient']
  for stage in case['stages']:
    check_stage(stage, stage['stage'])
  ours = convgrad.conv_gradient_case('tiny 1x1', 16, 4, 8, 1, 1, 1, 'float32', opts,
                                     'yolact_jax')
  assert case['impl'] == 'xla' and ours['impl'] == 'yolact_jax'
  for stage in ours['stages']:
    check_stage(stage, stage['stage'])
  report = {'machine': {'date_utc': 'now', 'device_kind': 'cpu', 'platform': 'cpu',
                        'cpu_model': 'x', 'cpu_cores_usable': 1, 'jax': 'j',
                        'load_average_start': [1.0, 1.0, 1.0]},
            'convgrad': [case, ours, {'conv': 'broken', 'impl': 'xla', 'error': 'OOM'}]}
  text = report_lib.markdown_report(report)
  assert '## Convolution gradients' in text and '| tiny 3x3/2 | xla | 16 | 1 |' in text
  assert '| tiny 1x1 | yolact_jax | 16 | 1 |' in text
  assert '| broken | xla | failed: OOM |' in text


def test_convgrad_pytorch_case_times_the_original_kernels():
  pytest.importorskip('torch')
  opts = timing.TimingOptions(warmup=1, repeats=2, max_seconds=10.0)
  case = convgrad.pytorch_gradient_case('tiny 3x3/2', 16, 4, 8, 3, 2, 1, 'float32', opts)
  assert case['impl'] == 'pytorch' and case['threads'] >= 1
  assert [s['stage'] for s in case['stages']] == ['forward', 'input_gradient', 'weight_gradient']
  for stage in case['stages']:
    assert stage['runs'] == 2 and 0 < stage['min_ms'] <= stage['median_ms'] <= stage['max_ms']
  report = {'machine': {'date_utc': 'now', 'device_kind': 'cpu', 'platform': 'cpu',
                        'cpu_model': 'x', 'cpu_cores_usable': 1, 'jax': 'j',
                        'load_average_start': [1.0, 1.0, 1.0]}, 'convgrad': [case]}
  assert '| tiny 3x3/2 | pytorch | 16 | 1 |' in report_lib.markdown_report(report)
  with pytest.raises(ValueError, match='float32 only'):
    convgrad.pytorch_gradient_case('tiny', 16, 4, 8, 3, 2, 1, 'bfloat16', opts)


def test_network_convolutions_are_every_convolution_of_the_train_step():
  convs = convnet.network_convolutions('yolact_resnet50', 2)
  # ResNet-50: the stem, 16 bottlenecks of 3, 4 downsample shortcuts (53); FPN: 3 lateral,
  # 3 output, 2 downsample layers (8); ProtoNet: 3 at P3, 1 after the upsample, 1x1 to the
  # prototypes (5); the shared head at 5 levels: upfeature, box, class, coefficients (20);
  # the semantic segmentation head (1).
  assert sum(c['count'] for c in convs) == 53 + 8 + 5 + 20 + 1
  stem = convs[0]
  assert (stem['conv'], stem['input_gradient']) == ('7x7/2 3->64 @550x550', False)
  assert all(c['input_gradient'] for c in convs[1:])
  by_name = {c['conv']: c for c in convs}
  assert len(by_name) == len(convs)  # each distinct convolution once
  for side in (69, 35, 18, 9, 5):  # the class-score layer (81 classes x 3 anchors) per level
    assert by_name[f'3x3/1 256->243 @{side}x{side}']['count'] == 1
  assert by_name['3x3/1 256->256 @69x69']['count'] == 5  # FPN P3 output, ProtoNet x3, upfeature
  assert by_name['3x3/1 256->256 @138x138']['count'] == 1
  assert all(c['padding'] == c['kernel'] // 2 for c in convs)


def test_convnet_sums_every_convolution_with_its_count():
  opts = timing.TimingOptions(warmup=0, repeats=2, max_seconds=10.0)
  result = convnet.run_convnet('yolact_tiny', 1, opts, lambda msg: None, impls=('yolact_jax',))
  convs = result['convolutions']
  assert result['num_convolutions'] == sum(c['count'] for c in convs) > len(convs)
  stem = convs[0]['impls']['yolact_jax']
  assert [s['stage'] for s in stem['stages']] == ['forward', 'weight_gradient']
  expected = {stage: 0.0 for stage in convgrad.STAGES}
  for conv in convs:
    for stage in conv['impls']['yolact_jax']['stages']:
      check_stage(stage, stage['stage'])
      expected[stage['stage']] += conv['count'] * stage['median_ms']
  totals = result['totals']['yolact_jax']
  assert totals['complete']
  for stage, ms in expected.items():
    assert totals[f'{stage}_ms'] == pytest.approx(ms)
  assert totals['total_ms'] == pytest.approx(sum(expected.values()))
  # A failed convolution leaves the totals marked incomplete, in the JSON and the report.
  convs[1]['impls']['yolact_jax'] = {'conv': convs[1]['conv'], 'impl': 'yolact_jax',
                                     'error': 'OOM'}
  result['totals'] = {'yolact_jax': convnet.network_totals(convs, 'yolact_jax')}
  assert not result['totals']['yolact_jax']['complete']
  text = report_lib.markdown_report({'machine': {
      'date_utc': 'now', 'device_kind': 'cpu', 'platform': 'cpu', 'cpu_model': 'x',
      'cpu_cores_usable': 1, 'jax': 'j', 'load_average_start': [1.0, 1.0, 1.0]},
      'convnet': result})
  assert '## Convolutions of the network' in text
  assert '| ours (incomplete: a convolution failed) |' in text
  assert f'| {convs[1]["conv"]} | {convs[1]["count"]} | failed: OOM |' in text


def test_grid_takes_the_yolact_plus_presets():
  assert {'yolact_plus_base', 'yolact_plus_resnet50'} <= set(grid.FULL_INFERENCE_PRESETS)
  assert {'yolact_plus_base', 'yolact_plus_resnet50'} <= {c[0] for c in grid.FULL_TRAIN_CASES}
  args = cli.build_parser().parse_args(['--presets', 'yolact_plus_resnet50,yolact_plus_base',
                                        '--train-presets', 'yolact_plus_resnet50'])
  inference, train = grid.resolve_cases(args, 'cpu')
  assert inference == [('yolact_plus_resnet50', 1, 'float32'), ('yolact_plus_resnet50', 8,
                                                                'float32'),
                       ('yolact_plus_base', 1, 'float32'), ('yolact_plus_base', 8, 'float32')]
  assert train == [('yolact_plus_resnet50', 2, 'float32')]
  for preset in grid.FULL_INFERENCE_PRESETS + grid.DCN_PRESETS:
    get_config(preset)  # every preset of the grids exists


def test_unknown_inference_stage_is_an_error():
  with pytest.raises(SystemExit, match='inference stage'):
    cli.main(['--only', 'inference', '--inference-stages', 'network,netwrok'])


def test_inference_stages_can_be_limited():
  from yolact_jax.bench import inference
  opts = timing.TimingOptions(warmup=0, repeats=2, max_seconds=10.0)
  case = inference.inference_case('yolact_tiny', 1, 'float32', (48, 64), ['fast'], opts,
                                  stages=('network', 'end_to_end'))
  assert [s['stage'] for s in case['stages']] == ['network', 'end_to_end']


def test_dcn_layer_calls_find_every_dcn_of_the_network():
  from yolact_jax.bench import dcn
  from yolact_jax.model.backbone import dcn_blocks
  cfg = get_config('yolact_plus_tiny')
  calls = dcn.dcn_layer_calls(cfg, 2, np.float32, train=True)
  b = cfg.model.backbone
  expected = sum(sum(dcn_blocks(n, d, b.dcn_interval)) for n, d in zip(b.layers, b.dcn_layers))
  assert expected > 0 and sum(c['count'] for c in calls) == expected
  assert all(len(c['names']) == c['count'] and c['input_shape'][0] == 2 for c in calls)
  assert all(name.startswith('backbone/') and name.endswith('conv2')
             for c in calls for name in c['names'])


def test_dcn_layer_alone_forward_and_backward():
  from yolact_jax.bench import dcn
  opts = timing.TimingOptions(warmup=0, repeats=2, max_seconds=10.0)
  entry = dcn.dcn_layer_calls(get_config('yolact_plus_tiny'), 1, np.float32, train=False)[-1]
  for backward, stage in ((False, 'forward'), (True, 'forward_backward')):
    layer = dcn.time_layer(entry, backward, opts)
    assert layer['dcn']['stage'] == layer['plain_conv']['stage'] == stage
    assert positive_finite(layer['dcn']['median_ms'])
    assert positive_finite(layer['plain_conv']['median_ms'])
    assert layer['count'] == entry['count'] and layer['input_shape'] == list(entry['input_shape'])


def test_dcn_case_shares_and_report(monkeypatch):
  """The section's bookkeeping, with stand-in timings (the real programs are timed by the
  layer test above and by the section's own runs)."""
  from yolact_jax.bench import dcn
  record = lambda ms: {'stage': 'x', 'median_ms': ms, 'p10_ms': ms, 'p90_ms': ms}  # noqa: E731
  seen = []
  monkeypatch.setattr(dcn, '_whole_network', lambda p, b, d, overrides, o: (
      seen.append(('network', tuple(overrides))) or record(60.0 if overrides else 100.0)))
  monkeypatch.setattr(dcn, 'train_case', lambda p, b, d, o, overrides=(): (
      seen.append(('train', tuple(overrides))) or {'stages': [record(150 if overrides else 300)]}))
  monkeypatch.setattr(dcn, 'time_layer', lambda entry, backward, o: {
      'input_shape': list(entry['input_shape']), 'features': 8, 'stride': 1,
      'count': entry['count'], 'dcn': record(10.0), 'plain_conv': record(2.0)})
  opts = timing.TimingOptions(warmup=0, repeats=2, max_seconds=10.0)
  earlier = {'inference': [{'preset': 'yolact_plus_tiny', 'batch': 1, 'dtype': 'float32',
                            'stages': [record(100.0) | {'stage': 'network'}]}]}
  (case,) = dcn.run_dcn(['yolact_plus_tiny'], 'float32', 1, 2, opts, lambda msg: None, earlier)
  assert 'error' not in case, case.get('traceback')
  assert seen == [('network', (dcn.NO_DCN,)), ('train', ()), ('train', (dcn.NO_DCN,))]
  layers = case['network']['dcn_layers']
  assert layers == case['train_step']['dcn_layers'] == 3
  assert case['network']['share_by_difference'] == pytest.approx(0.4)
  assert case['network']['share_alone'] == pytest.approx(10.0 * layers / 100)
  assert case['train_step']['share_by_difference'] == pytest.approx(0.5)
  assert case['train_step']['plain_convs_alone_ms'] == pytest.approx(2.0 * layers)
  report = {'machine': {'date_utc': 'now', 'device_kind': 'cpu', 'platform': 'cpu',
                        'cpu_model': 'x', 'cpu_cores_usable': 1, 'jax': 'j',
                        'load_average_start': [1.0, 1.0, 1.0]},
            'dcn': [case, {'preset': 'yolact_tiny', 'error': 'ValueError: no DCN'}]}
  text = report_lib.markdown_report(report)
  assert '## DCN (YOLACT++)' in text and '| yolact_plus_tiny | network, batch 1 | 3 |' in text
  assert '| yolact_plus_tiny | train step, batch 2 | 3 |' in text and '| 40% |' in text
  assert '| yolact_tiny | failed: ValueError' in text and '| 5.0 |' in text
  with pytest.raises(ValueError, match='no DCN'):
    dcn.dcn_case('yolact_tiny', 'float32', 1, 0, opts, lambda msg: None)


def test_exported_section_times_both_and_matches_the_live_program(tmp_path):
  """--only exported on the CPU: the served StableHLO program gives the live detections, and
  both are timed; the markdown has the section's table."""
  out = tmp_path / 'exported.json'
  results = cli.main(['--only', 'exported', '--presets', 'yolact_tiny', '--batch-sizes', '2',
                      '--dtypes', 'float32,bfloat16', '--repeats', '2', '--warmup', '1',
                      '--image-hw', '48,64', '--quiet', '--out', str(out)])
  (case,) = results['exported']  # bfloat16 cases are skipped: the artefact is float32 here
  assert case['platform'] == 'cpu' and case['artefact_platforms'] == ['cpu']
  for side in ('live', 'exported'):
    assert positive_finite(case[side]['median_ms']) and case[side]['runs'] == 2
  a = case['agreement']
  assert a['images'] == 2 and a['num_original'] > 0 and a['matched'] == a['num_original']
  assert a['mask_iou_mean'] == 1.0 and case['reference'] == 'the live program'
  text = out.with_suffix('.md').read_text()
  assert '## Exported program (StableHLO)' in text and '| yolact_tiny | 2 | 48x64 | cpu |' in text


def test_onnx_profile_summary_by_stage_and_operator():
  """A hand-made ONNX Runtime trace: kernels placed by their node's index (fused and NCHWc
  kernels by the node they carry the name of), averaged over the runs."""
  from yolact_jax.bench.onnx_profile import summarize_profile

  def kernel(name, op, us):
    return {'cat': 'Node', 'name': f'{name}_kernel_time', 'dur': us, 'args': {'op_name': op}}

  order = {'conv_a': 0, 'relu': 1, 'conv_b': 2, 'topk': 3, 'matmul': 4}
  events = [kernel('conv_a_nchwc', 'Conv', 4000), kernel('ReorderOutput_token_7', 'ReorderOutput',
                                                          400),
            kernel('conv_b', 'Conv', 2000), kernel('topk', 'TopK', 600),
            kernel('matmul', 'MatMul', 1000), kernel('matmul', 'MatMul', 1000),
            {'cat': 'Session', 'name': 'model_run', 'dur': 99999},
            {'cat': 'Node', 'name': 'topk_fence_before', 'dur': 5, 'args': {'op_name': 'TopK'}}]
  summary = summarize_profile(events, order, last_network=2, runs=2)
  assert summary['network']['ops'] == {'Conv': 3.0, 'ReorderOutput': 0.2}
  assert summary['after_network']['ops'] == {'MatMul': 1.0, 'TopK': 0.3}
  assert summary['total_ms'] == pytest.approx(4.5)


def test_write_results_json_and_markdown_beside(tmp_path):
  """numpy values become plain JSON (non-finite as null), the folder is made, the markdown goes
  beside with .md, and without markdown no .md is written."""
  out = report_lib.write_results(tmp_path / 'new' / 'r.json',
                                 {'ms': np.float32(1.5), 'n': np.int64(3), 'bad': float('nan')},
                                 '# table\n')
  assert json.loads(out.read_text()) == {'ms': 1.5, 'n': 3, 'bad': None}
  assert out.with_suffix('.md').read_text() == '# table\n'
  plain = report_lib.write_results(tmp_path / 'plain.json', [1, 2])
  assert json.loads(plain.read_text()) == [1, 2] and not plain.with_suffix('.md').exists()


def test_thp_mode_reads_the_bracketed_choice(tmp_path):
  path = tmp_path / 'enabled'
  path.write_text('always [madvise] never\n')
  assert machine.thp_mode(str(path)) == 'madvise'
  path.write_text('[always] madvise never\n')
  assert machine.thp_mode(str(path)) == 'always'
  assert machine.thp_mode(str(tmp_path / 'missing')) is None


def test_train_step_split_from_program_medians():
  """Hand-made medians: the network's backward is what the step leaves of the timed parts."""
  from yolact_jax.bench.step_breakdown import split_step
  split = split_step({'forward': 100.0, 'step': 420.0, 'loss_grad': 70.0, 'optimizer': 20.0})
  assert split == {'network_forward': 100.0, 'loss': 70.0, 'network_backward': 230.0,
                   'optimizer': 20.0, 'step': 420.0}
  assert sum(v for k, v in split.items() if k != 'step') == split['step']


def test_train_step_breakdown_programs_nest(tmp_path):
  """The breakdown of yolact_tiny's step: every program timed in each round, and XLA's FLOP
  counts nest as the programs do (the forward, the loss and the optimiser inside the step, with
  the backward's twice the forward's besides; the loss's parts inside the loss)."""
  from scripts import train_step_breakdown
  out = tmp_path / 'breakdown.json'
  train_step_breakdown.main(['--config', 'yolact_tiny', '--batch_size', '2', '--rounds', '2',
                             '--out', str(out)])
  result = json.loads(out.read_text())
  programs = result['programs']
  assert all(p['runs'] == 2 and positive_finite(p['median_ms']) for p in programs.values())
  for p in programs.values():  # counted over the timed calls, warm-up left out
    assert len(p['page_faults']) == len(p['system_s']) == 2
    assert p['page_faults_per_call'] == sum(p['page_faults']) / 2
  flop = {name: p['gflop'] for name, p in programs.items()}
  parts = flop['forward'] + flop['loss_grad'] + flop['optimizer']
  assert 0 < flop['optimizer'] and 1.5 < (flop['step'] - parts) / flop['forward'] < 2.5
  assert 0 < max(flop['match'], flop['ohem'], flop['mask_loss']) < flop['loss_grad']
  assert result['split_ms']['step'] == programs['step']['median_ms']
  assert '| **step** |' in out.with_suffix('.md').read_text()


def test_cost_curve_points_from_a_compare_report():
  """A report with inference at batch 4 and a train step at batch 2: two rows, per image and
  speed-up computed from the medians."""
  from yolact_jax.bench.curves import markdown, points

  def speed(stage, ours, original):
    return {'ours': {stage: {'median_ms': ours}}, 'original': {stage: {'median_ms': original}}}

  report = {'settings': {'config': 'yolact_resnet50', 'batch_size': 4, 'ours': 'onnx'},
            'speed': speed('end_to_end', 2000.0, 3000.0),
            'train_step': {'batch_size': 2, 'speed': speed('train_step', 5000.0, 4000.0)}}
  rows = points(report, 550)
  assert [(r['what'], r['batch'], r['ours']) for r in rows] == [
      ('end_to_end', 4, 'onnx'), ('train_step', 2, 'live')]
  assert rows[0]['ours_ms_per_image'] == 500 and rows[0]['speedup'] == 1.5
  assert rows[1]['original_ms_per_image'] == 2000 and rows[1]['speedup'] == 0.8
  table = markdown(rows)
  assert '| `yolact_resnet50` | 550 | 4 | onnx | 500 / 750 | 1.50x |' in table
  assert '| `yolact_resnet50` | 550 | 2 | live | 2500 / 2000 | 0.80x |' in table
