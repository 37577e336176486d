"""The comparison's report as markdown, and the warning about an oversubscribed machine."""

from __future__ import annotations

from typing import Any

from yolact_jax.compare.outputs import REFERENCE_TOLERANCE, YARDSTICK_FACTOR

THREAD_ENV_VARS = ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS', 'GOMP_SPINCOUNT', 'KMP_BLOCKTIME',
                   'MKL_NUM_THREADS', 'XLA_FLAGS')


def _fmt(value: float | None, spec: str = '.4f') -> str:
  return '-' if value is None else format(value, spec)


def _outputs_section(report: dict[str, Any]) -> list[str]:
  s = report['settings']
  lines = ['## Raw head outputs (ours - original)', '',
           '| output | shape | max abs diff | mean abs diff | max abs value | within reference '
           'tolerance |', '|---|---|---|---|---|---|']
  for key, d in report['raw_outputs'].items():
    if 'max_abs' not in d:
      lines.append(f'| {key} | {d} | | | | |')
      continue
    lines.append(f'| {key} | {"x".join(map(str, d["shape"]))} | {d["max_abs"]:.3g} | '
                 f'{d["mean_abs"]:.3g} | {d["max_abs_value"]:.3g} | '
                 f'{"yes" if d["within_reference_tolerance"] else "no"} |')
  det = report['detections']['total']
  return lines + [
      '', f'Reference tolerance (shared/reference/README.md): max <= '
      f'{REFERENCE_TOLERANCE["max_abs"]}, mean <= {REFERENCE_TOLERANCE["mean_abs"]}; '
      '`conf` is compared as softmax probabilities.', '',
      f'## Detections (class + box IoU >= {s["match_iou"]})', '',
      '| images | ours | original | matched | agreement | mask IoU mean | mask IoU min | '
      'max score diff | max mask score diff |', '|---|---|---|---|---|---|---|---|---|',
      f'| {det["images"]} | {det["num_ours"]} | {det["num_original"]} | {det["matched"]} | '
      f'{det["agreement"]:.2%} | {_fmt(det["mask_iou_mean"])} | {_fmt(det["mask_iou_min"])} | '
      f'{_fmt(det["score_abs_diff_max"], ".3g")} | '
      f'{_fmt(det.get("mask_score_abs_diff_max"), ".3g")} |', '',
      'Scores are the box scores; mask scores are the mask-re-scored ones of YOLACT++ (class '
      'score x predicted mask IoU; without re-scoring they are the scores).', '']


def _yardstick_section(yardstick: dict[str, Any]) -> list[str]:
  lines = ['## Against the original in float64 (the true function on these weights)', '',
           '| output | ours max | original max | ratio | ours mean | original mean | ratio | '
           f'within {YARDSTICK_FACTOR}x |', '|---|---|---|---|---|---|---|---|']
  for key, d in yardstick['raw_outputs'].items():
    lines.append(f'| {key} | {d["ours_max"]:.3g} | {d["original_max"]:.3g} | '
                 f'{d["ratio_max"]:.2f} | {d["ours_mean"]:.3g} | {d["original_mean"]:.3g} | '
                 f'{d["ratio_mean"]:.2f} | {"yes" if d["within_factor"] else "no"} |')
  lines += ['', '| float32 side | detections matched to float64 | agreement | mask IoU mean | '
            'mask IoU min |', '|---|---|---|---|---|']
  for side, det in yardstick.get('detections', {}).items():
    lines.append(f'| {side} | {det["matched"]} of {det["num_original"]} | '
                 f'{det["agreement"]:.2%} | {_fmt(det["mask_iou_mean"])} | '
                 f'{_fmt(det["mask_iou_min"])} |')
  return lines + ['', "Each side's float32 outputs against the original run in float64 on the "
                  "same weights and inputs: ours should be no further from the true function "
                  f"than {YARDSTICK_FACTOR}x the original's own float32 error "
                  '(shared/reference/README.md).', '']


def _speed_section(speed: dict[str, Any]) -> list[str]:
  lines = ['## Speed (median, p10-p90 ms per batch)', '',
           '| stage | ours | original | ours images/s | original images/s | speed-up |',
           '|---|---|---|---|---|---|']
  for stage in ('network', 'end_to_end'):
    o, t = speed.get('ours', {}).get(stage), speed.get('original', {}).get(stage)
    if not o or not t:
      continue
    lines.append(f'| {stage} | {o["median_ms"]:.1f} ({o["p10_ms"]:.1f}-{o["p90_ms"]:.1f}) | '
                 f'{t["median_ms"]:.1f} ({t["p10_ms"]:.1f}-{t["p90_ms"]:.1f}) | '
                 f'{o["images_per_s"]:.2f} | {t["images_per_s"]:.2f} | '
                 f'{speed["speedup"][stage]:.2f}x |')
  return lines + ['', f'Our compile time (not in the figures above): '
                  f'{speed.get("ours_compile_s", float("nan")):.1f} s.']


def _plus_lines(settings: dict[str, Any]) -> list[str]:
  """A sentence on the YOLACT++ parts of the preset (none for YOLACT)."""
  plus = settings.get('yolact_plus') or {}
  if not any(plus.get('dcn_layers') or ()) and not plus.get('use_maskiou'):
    return []
  dcn = ('the pure-PyTorch stand-in (yolact_jax.compare.dcn_torch)'
         if (settings.get('shims') or {}).get('dcn_v2_torch') else 'its compiled dcn_v2')
  return [f'YOLACT++: DCN layers per stage {plus.get("dcn_layers")} (interval '
          f'{plus.get("dcn_interval")}), the original\'s DCN being {dcn}; '
          f'{plus.get("num_anchors")} anchors per location; mask-IoU network '
          f'{"on" if plus.get("use_maskiou") else "off"}, mask re-scoring '
          f'{"on" if plus.get("rescore_mask") else "off"}, box re-scoring '
          f'{"on" if plus.get("rescore_bbox") else "off"}.', '']


def markdown_report(report: dict[str, Any]) -> str:
  """The report's figures as markdown."""
  s = report['settings']
  mmdet = s.get('reference') == 'mmdet'
  where = (f'{s.get("original_commit")} (its YOLACT built from its own config file, our sizes)'
           if mmdet else f'original at {s["yolact_repo"]} (commit {s.get("original_commit")})')
  lines = [f'Preset {s["config"]}, weights: {s["weights"]}, inputs: {s["inputs"]}, batch '
           f'{s["batch_size"]}, device {s["device"]}, threads {s["threads"]}, NMS {s["nms"]}. '
           f'Machine: {report["machine"]["cpu_model"]}, load {report["machine"]["load_average"]}, '
           f'host memory {report["machine"].get("host_memory")} (both sides); '
           f'torch {report["machine"]["torch"]}, jax {report["machine"]["jax"]}; {where}.', '']
  lines += _plus_lines(s)
  lines += _outputs_section(report)
  if report.get('float64_yardstick'):
    lines += _yardstick_section(report['float64_yardstick'])
  lines += _speed_section(report['speed'])
  if 'train_step' in report:
    lines += [''] + train_markdown(report['train_step'])
  warning = oversubscription_warning(report['machine'])
  if warning and ('ours' in report['speed'] or 'speed' in report.get('train_step', {})):
    lines += ['', f'**Warning:** {warning}']
  body = '\n'.join(lines)
  if mmdet:  # the reference side is mmdetection's YOLACT (the report's 'original' entries)
    body = body.replace("the original's", "mmdetection's").replace('the original', 'mmdetection')
    body = body.replace('original', 'mmdetection')
  title = 'mmdetection\'s YOLACT' if mmdet else 'the original PyTorch YOLACT'
  return f'# yolact-jax vs {title} ({report["date_utc"]})\n\n{body}'


def _update_lines(train: dict[str, Any]) -> list[str]:
  u = train['update']
  worst = '-' if u['worst_key_relative'] is None else f'{u["worst_key_relative"]:.3g}'
  lines = ['', f'Parameter update (new - old), ours vs original, over {u["tensors_changed"]} '
           f'updated tensors ({u["tensors_unchanged"]} unchanged on both sides): max abs '
           f'difference {u["max_abs_update_diff"]:.3g} against a largest update of '
           f'{u["max_abs_update"]:.3g} (relative {u["relative"]:.3g}); worst tensor '
           f'`{u["worst_key"]}` (its difference / its largest update {worst}; per tensor '
           f'median {u["per_tensor_relative_median"] or 0:.3g}, p90 '
           f'{u["per_tensor_relative_p90"] or 0:.3g}).']
  base = train.get('original_self')
  if base:
    b = base['update']
    lines += ['', f'For scale, the original against itself with its input perturbed by '
              f'{base["input_noise_relative"]:g} (relative): max abs update difference '
              f'{b["max_abs_update_diff"]:.3g} (relative {b["relative"]:.3g}; per tensor median '
              f'{b["per_tensor_relative_median"] or 0:.3g}, p90 '
              f'{b["per_tensor_relative_p90"] or 0:.3g}), total loss difference '
              f'{base["losses"]["total"]["abs_diff"]:.3g}.']
  return lines


def train_markdown(train: dict[str, Any]) -> list[str]:
  """The training-step section of the report."""
  lines = [f'## Training step (batch {train["batch_size"]}, {train["objects_per_image"]} objects '
           f'per image, BatchNorm {"frozen" if train["freeze_bn"] else "training"}, lr '
           f'{train["learning_rate"]:g}, momentum {train["momentum"]}, weight decay '
           f'{train["weight_decay"]})', '',
           f'First step from the same weights on the same batch ({train["num_positives"]} '
           'positive priors in the batch):', '',
           '| loss term | ours | original | abs diff | rel diff |', '|---|---|---|---|---|']
  for key, d in train['losses'].items():
    if d.get('ours') is None:
      lines.append(f'| {key} | - | {d["original"]:.6g} | | |')
    else:
      lines.append(f'| {key} | {d["ours"]:.6g} | {d["original"]:.6g} | {d["abs_diff"]:.3g} | '
                   f'{d["rel_diff"]:.3g} |')
  lines += _update_lines(train)
  speed = train.get('speed')
  if speed:
    o, t = speed['ours']['train_step'], speed['original']['train_step']
    lines += ['', '| stage | ours ms | original ms | ours images/s | original images/s | '
              'speed-up |', '|---|---|---|---|---|---|',
              f'| train_step | {o["median_ms"]:.1f} ({o["p10_ms"]:.1f}-{o["p90_ms"]:.1f}) | '
              f'{t["median_ms"]:.1f} ({t["p10_ms"]:.1f}-{t["p90_ms"]:.1f}) | '
              f'{o["images_per_s"]:.3g} | {t["images_per_s"]:.3g} | '
              f'{speed["speedup"]["train_step"]:.2f}x |']
  lines += ['', f'Our train-step compile time (not above): {train["ours_compile_s"]:.1f} s.']
  return lines


def oversubscription_warning(machine: dict[str, Any]) -> str | None:
  """A sentence when the 1-minute load average (before or after timing) exceeded the machine's
  CPU count: other work competed for the cores and the speed figures are not representative."""
  cpus = machine.get('cpu_count_total')
  loads = [machine.get(k) for k in ('load_average_before_timing', 'load_average')]
  worst = max((load[0] for load in loads if load), default=None)
  if not cpus or worst is None or worst <= cpus + 0.5:
    return None
  return (f'the machine was oversubscribed (1-minute load {worst:.2f} on {cpus} CPUs): other '
          'work competed for the cores, and multi-threaded PyTorch (OpenMP threads spin-waiting '
          'at barriers) is hurt far more than XLA by that. Compare with --threads 1 or '
          'OMP_WAIT_POLICY=PASSIVE, or measure on an idle machine.')
