"""The training studies' reports: a markdown summary and a picture (loss terms side by side;
drift over the steps beside the original's own), from the study's JSON-ready dict."""

from __future__ import annotations

import pathlib
from typing import Any, Sequence

# Two runs of the same float32 chaos differ from each other by about as much as either does from
# a third: ours within this factor of the original's own drift counts as within its noise.
DRIFT_BAR = 2.0
# Drifts below this are the float32 rounding of the updates themselves (the same sums in another
# order): both sides' drifts are raised to it before their ratio is taken.
DRIFT_FLOOR = 1e-5
CHECKPOINTS = (1, 10, 100, 500, 1000, 3000)


def _fmt(value: float | None, spec: str = '.3g') -> str:
  return '-' if value is None else format(value, spec)


def drift_ratios(row: dict) -> dict[str, float | None]:
  """Per group: ours' drift from the original over the original's own (perturbed input), both
  at least ``DRIFT_FLOOR`` (None for a group that did not move: frozen)."""
  ours, own = row['drift']['ours'], row['drift']['original_perturbed']
  return {g: (max(ours[g], DRIFT_FLOOR) / max(own[g], DRIFT_FLOOR)
              if ours.get(g) is not None and own.get(g) is not None else None) for g in own}


def steps_verdict(study: dict) -> dict[str, Any]:
  """At the last step: each group's drift ratio (:func:`drift_ratios`), the worst, and whether
  every group is within ``DRIFT_BAR`` of the original's own drift."""
  last = [r for r in study['steps'] if 'drift' in r][-1]
  ratios = drift_ratios(last)
  known = {g: r for g, r in ratios.items() if r is not None}
  worst = max(known, key=known.get) if known else None
  return {'step': last['step'], 'ratios': ratios, 'worst_group': worst,
          'worst_ratio': known.get(worst), 'bar': DRIFT_BAR,
          'within': all(r <= DRIFT_BAR for r in known.values())}


def steps_markdown(report: dict) -> str:
  study, s = report['study'], report['settings']
  rows = {r['step']: r for r in study['steps'] if 'drift' in r}
  shown = [n for n in CHECKPOINTS if n in rows] + ([max(rows)] if max(rows) not in CHECKPOINTS
                                                   else [])
  groups = [g for g in rows[shown[0]]['drift']['original_perturbed']]
  lines = [f"# Training side by side: {s['config']}, {len(study['steps'])} steps", '',
           f"Batch {study['batch_size']}, BatchNorm {'frozen' if study['freeze_bn'] else 'trained'}"
           f", optimiser {s['optimizer']}, data seed {s['data_seed']}, weights seed "
           f"{s['weights_seed']}, {s['threads']} threads. {s['original_config']}", '',
           'Drift = ||theta_ours - theta_original|| / ||theta_original - theta_0|| per tensor group; '
           'the original\'s own: the same with its input perturbed by 1e-6 instead of ours '
           f'(ratios of drifts below {DRIFT_FLOOR:g}, float32 rounding of the updates, count as 1).',
           '',
           '| step | ' + ' | '.join(f'{g} ours / own' for g in groups) + ' |',
           '|---|' + '---|' * len(groups)]
  for n in shown:
    d = rows[n]['drift']
    lines.append(f'| {n} | ' + ' | '.join(
        f"{_fmt(d['ours'].get(g))} / {_fmt(d['original_perturbed'].get(g))}" for g in groups)
        + ' |')
  v = report['verdict']
  lines += ['', f"At step {v['step']} the largest ratio of ours to the original's own drift is "
            f"{_fmt(v['worst_ratio'])} ({v['worst_group']}): "
            + ('within' if v['within'] else 'BEYOND') + f" the {v['bar']:g}x bar.", '',
            '| step | loss terms ours | loss terms original |', '|---|---|---|']
  for n in shown:
    r = rows[n]
    terms = [k for k in ('B', 'C', 'M', 'S', 'I', 'total') if k in r['original']]
    lines.append(f'| {n} | ' + ', '.join(f"{k} {r['ours'].get(k, float('nan')):.4f}"
                                          for k in terms)
                 + ' | ' + ', '.join(f"{k} {r['original'][k]:.4f}" for k in terms) + ' |')
  skipped = {side: sum(not r[side]['finite'] for r in study['steps'])
             for side in ('ours', 'original', 'original_perturbed')}
  lines += ['', f"Skipped (non-finite) steps: ours {skipped['ours']}, original "
            f"{skipped['original']}, original perturbed {skipped['original_perturbed']}.",
            '', f"Command: `{s['command']}`"]
  return '\n'.join(lines)


def run_markdown(report: dict) -> str:
  study, s = report['study'], report['settings']
  lines = [f"# Whole runs side by side: {s['config']}, {study['iterations']} iterations", '',
           f"Batch {study['batch_size']}, BatchNorm {'frozen' if study['freeze_bn'] else 'trained'}"
           f", optimiser {s['optimizer']}, weights seed {s['weights_seed']}, {s['threads']} "
           f"threads; {s['num_val']} validation images of the synthetic dataset, every model "
           f"scored by the same COCO evaluator. {s['original_config']}", '',
           '| run | data seed | box mAP | mask mAP | mask AP50 | final loss (mean of the last '
           '100 steps) |', '|---|---|---|---|---|---|']
  for r in study['runs']:
    tail = [x['total'] for x in r['losses'][-100:]]
    lines.append(f"| {r['side']} | {r['data_seed']} | {100 * r['box_map']:.1f} | "
                 f"{100 * r['mask_map']:.1f} | {100 * r['mask_ap50']:.1f} | "
                 f"{sum(tail) / len(tail):.3f} |")
  v = study['verdict']
  lines += ['', "The mean of our runs against the original's seed-to-seed spread:", '']
  for metric, x in v.items():
    lines.append(f"* {metric}: ours {100 * x['ours_mean']:.1f} (runs "
                 f"{100 * x['ours_min']:.1f}-{100 * x['ours_max']:.1f}), original "
                 f"{100 * x['original_mean']:.1f} (runs {100 * x['original_min']:.1f}-"
                 f"{100 * x['original_max']:.1f}, spread {100 * x['original_spread']:.1f}): "
                 + ('inside' if x['inside'] else 'outside')
                 + (f"; difference {x['t']:+.1f} standard errors"
                    + (' (consistent)' if x['consistent'] else ' (beyond 2)') if 't' in x else ''))
  lines += ['', f"Command: `{s['command']}`"]
  return '\n'.join(lines)


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def steps_figure(report: dict, path: pathlib.Path) -> None:
  """Loss terms of both sides over the steps, and each group's drift beside the original's own
  (log scale)."""
  plt = _plt()
  steps = report['study']['steps']
  terms = [k for k in ('total', 'B', 'C', 'M', 'S', 'I') if k in steps[0]['original']]
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  x = [r['step'] for r in steps]
  for k, colour in zip(terms, plt.rcParams['axes.prop_cycle'].by_key()['color']):
    axes[0].plot(x, [r['original'][k] for r in steps], color=colour, lw=1, label=f'{k} original')
    axes[0].plot(x, [r['ours'].get(k, float('nan')) for r in steps], color=colour, lw=1,
                 ls='--', label=f'{k} ours')
  axes[0].set(xlabel='step', ylabel='loss', yscale='log', title='loss terms')
  axes[0].legend(fontsize=7, ncol=2)
  drifted = [r for r in steps if 'drift' in r]
  x = [r['step'] for r in drifted]
  groups = list(drifted[0]['drift']['original_perturbed'])
  for g, colour in zip(groups, plt.rcParams['axes.prop_cycle'].by_key()['color']):
    axes[1].plot(x, [r['drift']['ours'].get(g) or float('nan') for r in drifted], color=colour,
                 lw=1.2, label=f'{g}: ours vs original')
    axes[1].plot(x, [r['drift']['original_perturbed'].get(g) or float('nan') for r in drifted],
                 color=colour, lw=1, ls=':', label=f'{g}: original vs itself (1e-6 input)')
  axes[1].set(xlabel='step', ylabel='relative parameter distance', yscale='log',
              title='drift from the original')
  axes[1].legend(fontsize=6)
  fig.suptitle(f"{report['settings']['config']}: training side by side with the original")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def run_figure(report: dict, path: pathlib.Path, window: int = 50) -> None:
  """Every run's total loss (moving average over ``window`` steps) in one picture."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for r in report['study']['runs']:
    values = [x['total'] for x in r['losses']]
    smooth = [sum(values[max(0, i - window + 1):i + 1]) / len(values[max(0, i - window + 1):i + 1])
              for i in range(len(values))]
    ax.plot(range(1, len(values) + 1), smooth, lw=1.5 if r['side'] == 'ours' else 1,
            ls='-' if r['side'] == 'ours' else '--',
            label=f"{r['side']}, data seed {r['data_seed']} (mask mAP {100 * r['mask_map']:.1f})")
  ax.set(xlabel='iteration', ylabel=f'total loss ({window}-step mean)', yscale='log',
         title=f"{report['settings']['config']}: whole runs, ours and the original")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(report: dict, out: pathlib.Path, markdown: str, figure: Any) -> Sequence[pathlib.Path]:
  """``out`` (.json), its .md and .png."""
  import json
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(report, indent=1, default=float) + '\n')
  out.with_suffix('.md').write_text(markdown + '\n')
  figure(report, out.with_suffix('.png'))
  return out, out.with_suffix('.md'), out.with_suffix('.png')
