"""Cost curves (time per image against batch and input size, ours beside the original's) from
``yolact-jax compare`` reports: a table and a plot.

  python scripts/cost_curves.py results/compare_speed/*.json results/compare_train_step/*.json \
      --out results/cost_curves.json

Writes the rows (JSON), the tables (``.md``) and the plot (``.png``, the [plots] extra): per
image against batch (end to end and train step of one preset at one size), and against input
size (end to end at batch 1). Live-program reports are left out of the inference rows where the
same point has an ONNX one (the best path).
"""

from __future__ import annotations

import argparse
import json
import pathlib


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('reports', nargs='+', help='compare JSON reports')
  parser.add_argument('--batch_preset', default='yolact_resnet50',
                      help='the preset of the curves against batch')
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)

  from yolact_jax.bench.curves import markdown, points
  from yolact_jax.bench.report import write_results
  from yolact_jax.config import get_config

  rows = []
  for path in args.reports:
    report = json.loads(pathlib.Path(path).read_text())
    if 'settings' not in report:
      continue
    size = get_config(report['settings']['config']).max_size
    rows += [dict(row, report=str(path)) for row in points(report, size)]
  best = {(r['preset'], r['input_size'], r['batch']) for r in rows
          if r['what'] == 'end_to_end' and r['ours'] == 'onnx'}
  rows = [r for r in rows if not (r['what'] == 'end_to_end' and r['ours'] != 'onnx'
                                  and (r['preset'], r['input_size'], r['batch']) in best)]
  table = markdown(rows)
  out = write_results(args.out, rows, '# Cost curves\n\n' + table)
  plot(rows, args.batch_preset, out.with_suffix('.png'))
  print(table)


def plot(rows: list[dict], batch_preset: str, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import matplotlib.ticker
  fig, (by_batch, by_size) = plt.subplots(1, 2, figsize=(10, 4))
  for what, marker in (('end_to_end', 'o'), ('train_step', 's')):
    chosen = sorted((r for r in rows if r['what'] == what and r['preset'] == batch_preset),
                    key=lambda r: r['batch'])
    if what == 'end_to_end' and chosen:
      chosen = [r for r in chosen if r['input_size'] == chosen[0]['input_size']]
    if chosen:
      batches = [r['batch'] for r in chosen]
      label = 'inference' if what == 'end_to_end' else 'train step'
      by_batch.plot(batches, [r['ours_ms_per_image'] for r in chosen], marker + '-',
                    label=f'ours, {label}' + (' (ONNX Runtime)' if what == 'end_to_end' else ''))
      by_batch.plot(batches, [r['original_ms_per_image'] for r in chosen], marker + '--',
                    label=f'original, {label}')
  by_batch.set(xscale='log', yscale='log', xlabel='batch', ylabel='ms per image',
               title=f'{batch_preset} against batch')
  by_batch.set_xticks([1, 2, 4, 8], ['1', '2', '4', '8'])
  by_batch.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
  sized = sorted((r for r in rows if r['what'] == 'end_to_end' and r['batch'] == 1
                  and r['preset'] != batch_preset), key=lambda r: r['input_size'])
  if sized:
    sizes = [r['input_size'] for r in sized]
    by_size.plot(sizes, [r['ours_ms_per_image'] for r in sized], 'o-', label='ours (ONNX Runtime)')
    by_size.plot(sizes, [r['original_ms_per_image'] for r in sized], 'o--', label='original')
    for r in sized:
      by_size.annotate(r['preset'], (r['input_size'], r['original_ms_per_image']), fontsize=7)
  by_size.set(xlabel='input size (px)', ylabel='ms per image',
              title='ResNet-101 presets against input size, batch 1')
  for axes in (by_batch, by_size):
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == '__main__':
  main()
