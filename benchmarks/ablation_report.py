#!/usr/bin/env python3
"""Markdown tables of CAMC ablation results (the JSON files of ``benchmarks/ablation.py``, CIFAR-10-LT or any
``--data-dir`` dataset).

One table per setting (scale, epochs, data), rows in the order of the ablation's row table, every accuracy the mean
+- sample standard deviation over seeds, and for each CAMC row the paired per-seed difference of top-1 to its plain
counterpart. Anything but the full protocol is labelled as what it is; ``--benchmark`` (the README's results table)
refuses it outright.

    python benchmarks/ablation_report.py benchmarks/results/ablation_cpu_dry_run.json
    python benchmarks/ablation_report.py results/ablation_gpu.json --benchmark --out table.md
"""
import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from camc_ablation.protocol import DEFAULT_MODEL, IMG_SIZE, full_profile

__all__ = ['SCALE_NOTES', 'NotBenchmarkError', 'scale_note', 'load_records', 'merge_repeats', 'render', 'main']

SCALE_NOTES = {
    'full': 'Full protocol: CIFAR-10-LT from the JPEG images, ResNet-32, LDAM-DRW schedule, 200 epochs, full '
            'balanced test split.',
    'reduced': '**Not the benchmark result.** Reduced-scale GPU run (fewer epochs, images or runs than the '
               'protocol); not comparable to 200-epoch numbers.',
    'cpu-short-schedule': '**Not the 200-epoch benchmark. CPU scale:** the full long-tailed training set (largest '
                          'class 5000) and test split of the dataset in the title and the LDAM-DRW recipe, with its '
                          'schedule scaled to the epochs in the title (warm-up, then x0.01 at 80 % and x0.0001 at '
                          '90 % of them). Compare rows within this table only.',
    'cpu-reduced': '**Not the benchmark result.** Reduced-scale CPU run (a subset of the images, a short '
                   'schedule): a smoke test of the pipeline on real data, too short and too noisy to rank methods.',
    'cpu-dry-run': '**Not the benchmark result. CPU dry run**: checks that the pipeline runs end to end and writes '
                   'well-formed results; it says nothing about accuracy.',
    'measure': '**Not the benchmark result.** Throughput measurement (a few epochs); the accuracies are meaningless.',
    'mixed': '**Mixed scales**: see each table.',
}

METRICS = (('top1', 'Top-1'), ('head', 'Head'), ('medium', 'Medium'), ('tail', 'Tail'),
           ('many_shot', 'Many'), ('medium_shot', 'Med.-shot'), ('few_shot', 'Few'))


class NotBenchmarkError(ValueError):
    """Results that are not the full protocol were asked for as the benchmark table."""


def scale_note(scale: str) -> str:
    return SCALE_NOTES.get(scale, f'**Not the benchmark result** (scale {scale!r}).')


def load_records(paths: Sequence[str]) -> List[Dict[str, Any]]:
    """Records from result files (an object with ``records``, or a bare list of records)."""
    records = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        recs = doc['records'] if isinstance(doc, dict) else doc
        for rec in recs:
            for key in ('row', 'seed', 'scale', 'epochs', 'epochs_completed'):
                if key not in rec:
                    raise ValueError(f'{path}: a record without {key!r}: not an ablation result')
        records.extend(recs)
    return records


def effective_scale(rec: Mapping[str, Any]) -> str:
    """The record's scale; CPU runs on the full long-tailed profile and test split with a shorter schedule, which
    ablation.py recorded as 'cpu-reduced' before this distinction (CIFAR-10-LT) and before it applied to
    ``--data-dir`` datasets, are 'cpu-short-schedule'."""
    complete = rec['epochs_completed'] == rec['epochs'] >= 5
    if rec['scale'] == 'cpu-reduced' and full_profile(rec.get('data', {})) and complete:
        return 'cpu-short-schedule'
    return rec['scale']


# what records from before --data-dir / --model / --img-size ran on: the CIFAR-10 archive, ResNet-32 at 32 x 32
_ARCHIVE = 'cifar10-jpeg.tar.gz'


def _setting(rec: Mapping[str, Any]) -> Tuple:
    data = rec.get('data', {})
    return (effective_scale(rec), rec['epochs'], data.get('train_per_class_max'), data.get('imbalance'),
            data.get('test_per_class'), data.get('dataset', _ARCHIVE), rec.get('model', DEFAULT_MODEL),
            data.get('img_size', IMG_SIZE))


def _fmt(values: Sequence[float], signed: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return '—'
    mean = statistics.fmean(values)
    text = f'{mean:+.1f}' if signed else f'{mean:.1f}'
    if len(values) > 1:
        text += f' ± {statistics.stdev(values):.1f}'
    return text


def merge_repeats(records: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """One record per (setting, row, seed). A run repeated in another result file must have the same results (the
    ablation is deterministic on one machine: same initialisation, data order and kernels), or the table would mix
    two measurements of one cell.

    Raises:
        ValueError: A repeated run with other results.
    """
    kept: Dict[Tuple, Mapping[str, Any]] = {}
    for rec in records:
        key = (_setting(rec), rec['row'], rec['seed'])
        first = kept.setdefault(key, rec)
        if first is not rec and (first.get('top1'), first.get('per_class')) != (rec.get('top1'), rec.get('per_class')):
            raise ValueError(f'{rec["row"]} seed {rec["seed"]} was run twice with different results (top-1 '
                             f'{first.get("top1")} and {rec.get("top1")}): render those result files separately')
    return list(kept.values())


def _title(recs: Sequence[Mapping[str, Any]], n_seeds: int) -> str:
    rec = recs[0]
    data = rec.get('data', {})
    incomplete = '' if rec['epochs_completed'] == rec['epochs'] else f' (planned {rec["epochs"]})'
    dataset = data.get('dataset', _ARCHIVE)
    dataset = 'CIFAR-10-LT' if dataset == _ARCHIVE else f'{dataset} (long-tailed)'
    model = 'ResNet-32' if rec.get('model', DEFAULT_MODEL) == DEFAULT_MODEL else rec['model']
    if data.get('img_size', IMG_SIZE) != IMG_SIZE:
        model += f' at {data["img_size"]} x {data["img_size"]}'
    return (f'{dataset} (IF {data.get("imbalance", 0):g}, {data.get("train_size")} training images, largest class '
            f'{data.get("train_per_class_max")}; {data.get("test_size")} test images), {model}, '
            f'{rec["epochs_completed"]} epochs{incomplete}, {n_seeds} seed{"s" if n_seeds > 1 else ""}, '
            f'{rec.get("device_name", "?")}, '
            f'{_commits(recs)} - scale: `{effective_scale(rec)}`')


def _commits(recs: Sequence[Mapping[str, Any]]) -> str:
    commits = list(dict.fromkeys(r.get('git_commit', '?') for r in recs))
    return ('commit ' if len(commits) == 1 else 'commits ') + ', '.join(commits)


def _table(records: Sequence[Mapping[str, Any]]) -> List[str]:
    by_row: Dict[str, List[Mapping[str, Any]]] = {}
    for rec in sorted(records, key=lambda r: (r.get('row_order', 99), r['row'], r['seed'])):
        by_row.setdefault(rec['row'], []).append(rec)
    corr = any(r.get('map_cam_corr') is not None for r in records)  # CAMC rows of runs that measured it
    header = ['Row', 'Method', 'Classifier', 'Loss', 'Seeds'] + [name for _, name in METRICS] + ['Δ top-1 (paired)']
    header += ['A vs CAM'] if corr else []
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    notes = []
    for name, recs in by_row.items():
        first = recs[0]
        cells = [f'`{name}`', first.get('row_label', ''), first.get('classifier', ''), first.get('loss', ''),
                 ','.join(str(r['seed']) for r in recs)]
        cells += [_fmt([r.get(key) for r in recs]) for key, _ in METRICS]
        delta = '—'
        base = by_row.get(first.get('baseline') or '')
        if base:
            base_by_seed = {r['seed']: r.get('top1') for r in base}
            diffs = [r['top1'] - base_by_seed[r['seed']] for r in recs
                     if r.get('top1') is not None and base_by_seed.get(r['seed']) is not None]
            if diffs:
                per_seed = ', '.join(f's{r["seed"]} {r["top1"] - base_by_seed[r["seed"]]:+.2f}' for r in recs
                                     if r.get('top1') is not None and base_by_seed.get(r['seed']) is not None)
                delta = f'{_fmt(diffs, signed=True)} vs `{first["baseline"]}` ({per_seed})'
        cells.append(delta)
        if corr:
            values = [r['map_cam_corr'] for r in recs if r.get('map_cam_corr') is not None]
            cells.append(f'{statistics.fmean(values):+.2f}' if values else '—')
        lines.append('| ' + ' | '.join(cells) + ' |')
        for r in recs:
            if not r.get('complete', r['epochs_completed'] == r['epochs']):
                notes.append(f'`{name}` seed {r["seed"]}: stopped after {r["epochs_completed"]} of {r["epochs"]} '
                             f'epochs ({r.get("stop_reason")})')
    if notes:
        lines += ['', 'Incomplete runs: ' + '; '.join(notes) + '.']
    return lines


def render(records: Sequence[Mapping[str, Any]], benchmark: bool = False) -> str:
    """Markdown for ``records``: one labelled table per setting.

    Args:
        records: Ablation records.
        benchmark: Produce the benchmark table: raise ``NotBenchmarkError`` unless every record is a complete run of
            the full protocol.
    """
    if not records:
        return 'No results.'
    if benchmark:
        bad = sorted({f'{r["scale"]}' + ('' if r.get('complete') else ', incomplete') for r in records
                      if r['scale'] != 'full' or not r.get('complete')})
        if bad:
            raise NotBenchmarkError(
                f'Refusing to present these results as the benchmark: they include runs that are not complete runs '
                f'of the full 200-epoch protocol ({"; ".join(bad)}). Render them without --benchmark, labelled as '
                f'what they are.')
    settings: Dict[Tuple, List[Mapping[str, Any]]] = {}
    for rec in merge_repeats(records):
        settings.setdefault(_setting(rec), []).append(rec)
    out = []
    for key in sorted(settings, key=lambda k: (k[0] != 'full', str(k))):
        recs = settings[key]
        n_seeds = len({r['seed'] for r in recs})
        out += [f'**{_title(recs, n_seeds)}**', '', scale_note(effective_scale(recs[0])), '']
        out += _table(recs)
        out += ['', 'Accuracies in %, mean ± standard deviation over seeds (one value: one seed). Head / medium / '
                    'tail: classes 0-2 / 3-6 / 7-9; many / medium / few-shot: > 100, 20-100, < 20 training images. '
                    'Δ top-1: the row minus its plain counterpart, per seed (same initialisation and data order).'
                + (' A vs CAM: median over the test images of the spatial correlation between the calibration map A '
                   'and the CAM of the predicted class (mean over seeds).'
                   if any(r.get('map_cam_corr') is not None for r in recs) else ''),
                '']
    return '\n'.join(out).rstrip() + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('results', nargs='+', help='ablation_*.json files')
    parser.add_argument('--benchmark', action='store_true',
                        help='the README benchmark table: refuse anything but complete full-protocol runs')
    parser.add_argument('--out', default='', help='write the markdown here (default: stdout)')
    args = parser.parse_args(argv)
    try:
        text = render(load_records(args.results), benchmark=args.benchmark)
    except ValueError as e:  # NotBenchmarkError included
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
