"""Cost curves from ``yolact-jax compare`` reports: time per image against batch and input size,
ours beside the original's, for sizing a job (``scripts/cost_curves.py`` draws them).

Each report gives one point: its end-to-end inference (``speed``) and, where it has one, its
train step (``train_step.speed``). Pure functions over the reports' JSON.
"""

from __future__ import annotations

from typing import Any, Sequence


def points(report: dict[str, Any], input_size: int) -> list[dict[str, Any]]:
  """The report's measurements as rows: what ('end_to_end' or 'train_step'), preset, input
  size, batch, our path, median ms per batch on each side, ms per image and the speed-up."""
  settings = report['settings']
  rows = []

  def row(what: str, batch: int, ours_kind: str, speed: dict[str, Any], stage: str) -> None:
    ours, original = speed['ours'][stage]['median_ms'], speed['original'][stage]['median_ms']
    rows.append({'what': what, 'preset': settings['config'], 'input_size': input_size,
                 'batch': batch, 'ours': ours_kind, 'ours_ms': ours, 'original_ms': original,
                 'ours_ms_per_image': ours / batch, 'original_ms_per_image': original / batch,
                 'speedup': original / ours})

  if report.get('speed'):
    row('end_to_end', settings['batch_size'], settings.get('ours', 'live'), report['speed'],
        'end_to_end')
  train = report.get('train_step')
  if train and train.get('speed'):
    row('train_step', train['batch_size'], 'live', train['speed'], 'train_step')
  return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
  """One table per measurement, rows by preset, input size and batch."""
  out = []
  for what, title in (('end_to_end', 'End to end (inference)'), ('train_step', 'Train step')):
    chosen = sorted((r for r in rows if r['what'] == what),
                    key=lambda r: (r['preset'], r['input_size'], r['batch']))
    if not chosen:
      continue
    out += [f'{title}:', '', '| preset | input | batch | ours | ms per image, ours / original '
            '| ours / original speed |', '|---|---|---|---|---|---|']
    out += [f"| `{r['preset']}` | {r['input_size']} | {r['batch']} | {r['ours']} | "
            f"{r['ours_ms_per_image']:.0f} / {r['original_ms_per_image']:.0f} | "
            f"{r['speedup']:.2f}x |" for r in chosen]
    out.append('')
  return '\n'.join(out)
