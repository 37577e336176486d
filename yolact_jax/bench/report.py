"""The benchmark's results as markdown tables, and as plain JSON values; what the benchmark
scripts share (the results writer, the train-step scripts' arguments)."""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
from typing import Any, Callable, Sequence

import numpy as np


def fmt_load(load: Sequence[float] | None) -> str:
  return '-' if not load else '/'.join(f'{x:.2f}' for x in load)


def mib(value: int | None) -> str:
  return '-' if value is None else f'{value / 2**20:.0f}'


def to_jsonable(value: Any) -> Any:
  """numpy scalars/arrays and tuples -> plain JSON types; non-finite floats -> None."""
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_jsonable(value.tolist())
  if isinstance(value, np.bool_):
    return bool(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value) if math.isfinite(value) else None
  return value


def train_step_parser(description: str, rounds: int) -> argparse.ArgumentParser:
  """The arguments of the train-step benchmark scripts: ``--config``, ``--batch_size``,
  ``--rounds`` (default ``rounds``), ``--out`` (the JSON to write) and, as in every command,
  ``--host_memory``."""
  from yolact_jax.cli.common import Parser
  parser = Parser(description=description)
  parser.add_argument('--config', default='yolact_resnet50')
  parser.add_argument('--batch_size', type=int, default=2)
  parser.add_argument('--rounds', type=int, default=rounds)
  parser.add_argument('--out', required=True)
  return parser


def write_results(out: str | os.PathLike, result: Any, markdown: str | None = None
                  ) -> pathlib.Path:
  """A benchmark's result as JSON at ``out`` (its folder made) and, given, ``markdown`` beside
  it (``out`` with ``.md``); returns ``out`` as a path."""
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(to_jsonable(result), indent=1) + '\n')
  if markdown is not None:
    out.with_suffix('.md').write_text(markdown)
  return out


def _ms(stage: dict | None) -> str:
  if not stage or stage.get('median_ms') is None:
    return '-'
  return f'{stage["median_ms"]:.2f} ({stage["p10_ms"]:.2f}-{stage["p90_ms"]:.2f})'


def _columns(*names: str) -> list[str]:
  """A markdown table's header and separator lines."""
  return ['| ' + ' | '.join(names) + ' |', '|' + '---|' * len(names)]


def _head(title: str, note: str, *columns: str) -> list[str]:
  """A section's title, its note, and its table's header."""
  return [f'## {title}', '', note, '', *_columns(*columns)]


def _row(*cells: Any) -> str:
  return '| ' + ' | '.join(map(str, cells)) + ' |'


def _failed_row(*cells: Any, error: str) -> str:
  """A table row for a case that failed: its identifying cells, then the error's start."""
  return _row(*cells, f'failed: {error[:80]}')


def _case_rows(cases: list[dict], cells: Callable[[dict], list[Any]]) -> list[str]:
  """One row per (preset, batch, dtype) case: preset, input size, batch, dtype, then
  ``cells(case)``; a failed case's row ends with its error instead."""
  rows = []
  for case in cases:
    if 'error' in case:
      rows.append(_failed_row(case['preset'], '', case['batch'], case['dtype'],
                              error=case['error']))
      continue
    rows.append(_row(case['preset'], case['input_size'], case['batch'], case['dtype'],
                     *cells(case)))
  return rows


def _stage(case: dict, name: str) -> dict | None:
  return next((s for s in case.get('stages', []) if s['stage'] == name), None)


def _header(m: dict[str, Any]) -> list[str]:
  return [f'# yolact-jax benchmark ({m["date_utc"]})', '',
          f'Machine: {m["device_kind"]} ({m["platform"]}), CPU {m["cpu_model"]}, '
          f'{m["cpu_cores_usable"]} usable cores; jax {m["jax"]}; load average (1/5/15 min) '
          f'at start {fmt_load(m["load_average_start"])}, at end '
          f'{fmt_load(m.get("load_average_end"))}; commit {m.get("git_commit")}.', '',
          'Times: median (p10-p90) ms over the timed runs after warm-up, outputs blocked on. '
          'Compile times are separate and cold.', '']


def _inference_table(cases: list[dict]) -> list[str]:
  lines = _head('Inference',
                '`end_to_end`: network input -> network + Detect + postprocess, results copied '
                'to the host (the scope of the original\'s `eval.py --benchmark`); `e2e uint8` '
                'adds the on-device resize and normalisation. fps = images / end_to_end median.',
                'preset', 'size', 'batch', 'dtype', 'network', 'detect fast',
                'detect cross-class', 'detect standard', 'postprocess', 'end_to_end', 'fps',
                'e2e uint8', 'e2e compile s')
  return lines + _case_rows(cases, _inference_cells) + ['']


def _inference_cells(case: dict) -> list[str]:
  e2e = _stage(case, 'end_to_end')
  fps = case['batch'] / (e2e['median_ms'] / 1e3) if e2e else None
  compile_s = e2e['lower_s'] + e2e['compile_s'] if e2e else None
  return [*(_ms(_stage(case, name)) for name in (
              'network', 'detect_fast', 'detect_cross_class', 'detect_standard', 'postprocess')),
          _ms(e2e), '-' if fps is None else f'{fps:.2f}', _ms(_stage(case, 'end_to_end_uint8')),
          '-' if compile_s is None else f'{compile_s:.1f}']


def _nms_table(n: dict[str, Any]) -> list[str]:
  lines = _head('NMS', f'{n["num_classes"]} classes x top {n["top_k"]}, batch {n["batch"]}; '
                f'inputs: {n["inputs"]}. `nms_only`: the rule on prepared ranked candidates; '
                '`detect`: decode + top-k + NMS + global top-100.',
                'nms', 'candidates (valid)', 'kept', 'nms_only ms', 'detect ms', 'detections')
  for v in n['variants']:
    if 'error' in v:
      lines.append(_failed_row(v['nms'], error=v['error']))
      continue
    lines.append(f'| {v["nms"]} | {"x".join(map(str, v["candidate_shape"]))} '
                 f'({v["candidates_valid"]}) | {v["kept_by_nms"]} | '
                 f'{_ms(_stage(v, "nms_only"))} | {_ms(_stage(v, "detect"))} | '
                 f'{v["detections"]} |')
  return lines + ['']


def _train_table(cases: list[dict]) -> list[str]:
  lines = _head('Train step',
                'Memory: the compiled step\'s argument + output + temp - alias bytes (XLA memory '
                'analysis); device peak where reported (GPU); process max RSS.',
                'preset', 'size', 'batch', 'dtype', 'BN', 'step ms', 'images/s', 'compile s',
                'program MiB', 'device peak MiB', 'max RSS MiB')
  return lines + _case_rows(cases, _train_cells) + ['']


def _train_cells(case: dict) -> list[str]:
  s = case['stages'][0]
  return ['frozen' if case['freeze_bn'] else 'batch stats', _ms(s), f'{s["images_per_s"]:.2f}',
          f'{s["lower_s"] + s["compile_s"]:.1f}', mib(s['memory']['program_total_bytes']),
          mib(case['device_peak_bytes']), mib(case['max_rss_bytes'])]


def _convgrad_table(cases: list[dict]) -> list[str]:
  lines = _head('Convolution gradients',
                'Each convolution alone (jitted): forward, input gradient, weight gradient; '
                'GFLOP/s from XLA\'s cost analysis. `xla`: `jax.lax.conv_general_dilated`; '
                '`yolact_jax`: the network\'s convolution (`yolact_jax/ops/conv.py`: 1x1 '
                'convolutions and weight gradients as matrix products on CPU where they pay); '
                '`pytorch`: PyTorch\'s (the original\'s kernels, NCHW), where installed.',
                'convolution', 'impl', 'input', 'batch', 'dtype', 'forward ms', 'dx ms', 'dw ms',
                'dw / forward', 'forward GFLOP/s', 'dw GFLOP/s')
  for c in cases:
    if 'error' in c:
      lines.append(_failed_row(c['conv'], c['impl'], error=c['error']))
      continue
    f, dx, dw = (_stage(c, n) for n in ('forward', 'input_gradient', 'weight_gradient'))
    rate = lambda s: '-' if not s['flops'] else f'{s["flops"] / s["median_ms"] / 1e6:.0f}'  # noqa: E731
    lines.append(f'| {c["conv"]} | {c["impl"]} | {c["input_size"]} | {c["batch"]} | '
                 f'{c["dtype"]} | '
                 f'{_ms(f)} | {_ms(dx)} | {_ms(dw)} | '
                 f'{dw["median_ms"] / f["median_ms"]:.1f} | {rate(f)} | {rate(dw)} |')
  return lines + ['']


def _convnet_table(result: dict[str, Any]) -> list[str]:
  impls = result['impls']
  names = {'yolact_jax': 'ours', 'pytorch': 'PyTorch'}
  lines = ['## Convolutions of the network', '',
           f'Every convolution of `{result["preset"]}`\'s train step at batch {result["batch"]} '
           f'({result["num_convolutions"]} convolutions, {len(result["convolutions"])} distinct), '
           'each jitted and timed alone (median ms), summed over the network with its count. '
           '`ours`: the network\'s convolution (`yolact_jax/ops/conv.py`); `PyTorch`: the '
           'original\'s kernels (NCHW), where installed.', '',
           *_columns('convolutions', 'forward ms', 'input gradient ms', 'weight gradient ms',
                     'total ms per step')]
  for impl in impls:
    t = result['totals'][impl]
    mark = '' if t['complete'] else ' (incomplete: a convolution failed)'
    lines.append(_row(f'{names.get(impl, impl)}{mark}', f'{t["forward_ms"]:.0f}',
                      f'{t["input_gradient_ms"]:.0f}', f'{t["weight_gradient_ms"]:.0f}',
                      f'**{t["total_ms"]:.0f}**'))

  def cells(conv: dict, impl: str) -> tuple[str, float | None]:
    case = conv['impls'].get(impl, {})
    if 'error' in case or not case:
      return f'failed: {case.get("error", "not run")[:40]}', None
    ms = {s['stage']: s['median_ms'] for s in case['stages']}
    text = ' / '.join('-' if k not in ms else f'{ms[k]:.1f}'
                      for k in ('forward', 'input_gradient', 'weight_gradient'))
    return text, conv['count'] * sum(ms.values())

  rows = []
  for conv in result['convolutions']:
    per = [cells(conv, impl) for impl in impls]
    gap = (per[0][1] - per[1][1]) if len(per) > 1 and None not in (per[0][1], per[1][1]) else None
    rows.append((gap, _row(conv['conv'], conv['count'], *(c[0] for c in per),
                           *(('-' if gap is None else f'{gap:+.0f}',) if len(impls) > 1 else ()))))
  rows.sort(key=lambda r: -r[0] if r[0] is not None else 0.0)
  head = ['convolution', 'count', *(f'{names.get(i, i)} forward / dx / dw ms' for i in impls)]
  if len(impls) > 1:
    head.append(f'{names.get(impls[0], impls[0])} - {names.get(impls[1], impls[1])}, ms per step')
  return lines + ['', *_columns(*head), *(r[1] for r in rows), '']


def _flops_section(f: dict[str, Any]) -> list[str]:
  lines = ['## FLOPs', '', f'Convention: {f["convention"]}.', '']
  for dtype, peak in f['peak'].items():
    value = '-' if peak['tflops'] is None else f'{peak["tflops"] * 1e3:.1f} GFLOP/s'
    lines.append(f'* peak {dtype}: {value} ({peak["source"]})')
  for p in f['matmul_probe']:
    if 'error' not in p:
      lines.append(f'* matmul probe {p["size"]}x{p["size"]} {p["dtype"]}: '
                   f'{p["achieved_tflops"] * 1e3:.1f} GFLOP/s')
  lines += ['', *_columns('section', 'preset', 'batch', 'dtype', 'program', 'GFLOPs/image',
                          'achieved GFLOP/s', 'fraction of peak')]
  for r in f['rows']:
    if r['stage'] not in ('network', 'end_to_end', 'train_step'):
      continue
    achieved = '-' if r['achieved_tflops'] is None else f'{r["achieved_tflops"] * 1e3:.1f}'
    frac = '-' if r.get('fraction_of_peak') is None else f'{r["fraction_of_peak"]:.1%}'
    per_image = '-' if r['gflops_per_image'] is None else f'{r["gflops_per_image"]:.2f}'
    lines.append(f'| {r["section"]} | {r["preset"]} | {r["batch"]} | {r["dtype"]} | '
                 f'{r["stage"]} | {per_image} | {achieved} | {frac} |')
  return lines + ['']


def _pct(value: float | None) -> str:
  return '-' if value is None else f'{value:.0%}'


def _dcn_rows(case: dict, part: str, label: str) -> list[str]:
  d = case.get(part)
  if not d:
    return []
  fmt = lambda v: '-' if v is None else f'{v:.0f}'  # noqa: E731
  return [f'| {case["preset"]} | {label} | {d["dcn_layers"]} | {_ms(d["with_dcn"])} | '
          f'{_ms(d["without_dcn"])} | {_pct(d["share_by_difference"])} | '
          f'{fmt(d["dcn_layers_alone_ms"])} | {fmt(d["plain_convs_alone_ms"])} | '
          f'{_pct(d["share_alone"])} |']


def _dcn_layer_rows(case: dict) -> list[str]:
  lines = []
  for part, label in (('network', 'forward'), ('train_step', 'forward + backward')):
    for layer in (case.get(part) or {}).get('layers', []):
      if 'error' in layer:
        lines.append(_failed_row(case['preset'], label, layer['input_shape'],
                                 error=layer['error']))
        continue
      lines.append(f'| {case["preset"]} | {label} | {"x".join(map(str, layer["input_shape"]))} '
                   f'-> {layer["features"]}, stride {layer["stride"]} | {layer["count"]} | '
                   f'{_ms(layer["dcn"])} | {_ms(layer["plain_conv"])} | '
                   f'{layer["dcn"]["median_ms"] / layer["plain_conv"]["median_ms"]:.1f} |')
  return lines


def _dcn_table(cases: list[dict]) -> list[str]:
  lines = _head('DCN (YOLACT++)',
                'The DCN layers\' share, two ways: the whole program with DCN against the same '
                'preset with `model.backbone.dcn_layers` zeroed (plain 3x3 convs; share = '
                'difference / with), and each distinct DCN layer timed alone at its real shape, '
                'summed over the layers (share = sum / with). Network: forward at the network '
                'batch; train step: forward + backward at the train batch.',
                'preset', 'program', 'DCN layers', 'with DCN ms', 'without DCN ms',
                'share by difference', 'DCN layers alone ms', 'plain convs alone ms',
                'share alone')
  for case in cases:
    if 'error' in case:
      lines.append(_failed_row(case['preset'], error=case['error']))
      continue
    lines += _dcn_rows(case, 'network', f'network, batch {case["batch"]}')
    lines += _dcn_rows(case, 'train_step', f'train step, batch {case["train_batch"]}')
  lines += ['', *_columns('preset', 'pass', 'input -> out channels', 'count', 'DCN ms',
                          'plain conv ms', 'DCN / plain')]
  for case in cases:
    if 'error' not in case:
      lines += _dcn_layer_rows(case)
  return lines + ['']


def _exported_table(cases: list[dict]) -> list[str]:
  lines = _head('Exported program (StableHLO)',
                'uint8 images in, detections out, on the default device: the live Predictor and '
                'the program exported with jax.export, serialized and loaded by '
                'yolact_jax.serving; then the artefact\'s detections matched (class + box IoU >= '
                '0.9) against a reference.',
                'preset', 'batch', 'images', 'platform', 'live ms', 'exported ms', 'reference',
                'matched', 'mask IoU mean')
  for case in cases:
    if 'error' in case:
      lines.append(_failed_row(case['preset'], case['batch'], error=case['error']))
      continue
    a = case['agreement']
    iou = '-' if a['mask_iou_mean'] is None else f'{a["mask_iou_mean"]:.4f}'
    lines.append(f'| {case["preset"]} | {case["batch"]} | {"x".join(map(str, case["image_hw"]))} '
                 f'| {case["platform"]} | {_ms(case["live"])} | {_ms(case["exported"])} | '
                 f'{case["reference"]} | {a["matched"]} of {a["num_original"]} | {iou} |')
  return lines + ['']


# (results key, table of that section), in the report's order.
SECTION_TABLES = (('inference', _inference_table), ('nms', _nms_table), ('train', _train_table),
                  ('convgrad', _convgrad_table), ('convnet', _convnet_table),
                  ('dcn', _dcn_table),
                  ('exported', _exported_table), ('flops', _flops_section))


def markdown_report(results: dict[str, Any]) -> str:
  """The results' headline figures as markdown: a header on the machine, then a table per
  section present."""
  lines = _header(results['machine'])
  for key, table in SECTION_TABLES:
    if results.get(key):
      lines += table(results[key])
  return '\n'.join(lines)
