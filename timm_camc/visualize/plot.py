""" Per-class accuracy against training frequency, for one or several validate.py results

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._matplotlib import _import_matplotlib

__all__ = ['plot_per_class_accuracy']

_MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*')
_BANDS = {'many': ('#e2efda', '#38761d'), 'medium': ('#fff2cc', '#9c6500'), 'few': ('#f8d7d7', '#a61c1c')}  # fill, text


def _load_results(result: Union[Mapping[str, Any], str, os.PathLike]) -> Tuple[Dict[str, Any], Optional[Path]]:
    if isinstance(result, Mapping):
        return dict(result), None
    path = Path(result)
    try:
        with open(path) as f:
            return json.load(f), path
    except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not a JSON results file: {e}') from e


def _default_labels(results: Sequence[Dict[str, Any]], paths: Sequence[Optional[Path]]) -> List[str]:
    """The model names; where they repeat, the run folder of the checkpoint or the results file name."""
    labels = [str(r.get('model') or (p.stem if p else f'results {i}')) for i, (r, p) in enumerate(zip(results, paths))]
    for i, (r, p) in enumerate(zip(results, paths)):
        if labels.count(labels[i]) > 1:
            run = Path(r['checkpoint']).parent.name if r.get('checkpoint') else (p.stem if p else '')
            labels[i] = f'{labels[i]} ({run})' if run else labels[i]
    return [label if labels.count(label) == 1 else f'{label} #{i}' for i, label in enumerate(labels)]


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean that skips NaN (classes without test images)."""
    valid = ~np.isnan(values)
    kernel = np.ones(window)
    sums = np.convolve(np.where(valid, values, 0.), kernel, mode='same')
    counts = np.convolve(valid.astype(float), kernel, mode='same')
    return np.divide(sums, counts, out=np.full_like(sums, np.nan), where=counts > 0)


def plot_per_class_accuracy(
        results: Union[Mapping[str, Any], str, os.PathLike, Sequence[Union[Mapping[str, Any], str, os.PathLike]]],
        out_file: Union[str, os.PathLike],
        labels: Optional[Sequence[str]] = None,
        title: Optional[str] = None,
        many_thresh: Optional[int] = None,
        few_thresh: Optional[int] = None,
        figsize: Optional[Tuple[float, float]] = None,
        dpi: int = 120,
) -> Path:
    """Per-class accuracy against training-set frequency, for one or several ``validate.py`` results.

    Classes are sorted by training images (descending) along x; each result's per-class accuracy is drawn with its
    own colour and marker (with a running mean for many classes); the training count is drawn as grey bars on a
    log-scaled right axis; many / medium / few-shot classes (> ``many_thresh``, ``few_thresh`` to ``many_thresh``,
    < ``few_thresh`` training images) are shaded.

    Args:
        results: A results dict of ``validate.py``, a path to its JSON file, or a list of them (compared on one plot;
            all must come from the same training class counts).
        out_file: Image file to write (format from the suffix, e.g. ``.png``, ``.pdf``).
        labels: Legend label per result (default: the model name, made unique with the run folder).
        title: Plot title.
        many_thresh: Many-shot threshold (default: from the results, else 100).
        few_thresh: Few-shot threshold (default: from the results, else 20).
        figsize: Figure size in inches (default: grows with the number of classes).
        dpi: Resolution of raster output.

    Returns:
        The written file.

    Raises:
        ValueError: Results without training class counts, with different classes or counts, or labels that do
            not match the results.
    """
    _, Figure = _import_matplotlib()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import ScalarFormatter

    if isinstance(results, (Mapping, str, os.PathLike)):
        results = [results]
    if not results:
        raise ValueError('No results to plot')
    loaded = [_load_results(r) for r in results]
    dicts, paths = [d for d, _ in loaded], [p for _, p in loaded]
    if labels is None:
        labels = _default_labels(dicts, paths)
    elif len(labels) != len(dicts):
        raise ValueError(f'{len(labels)} labels for {len(dicts)} results')
    labels = [str(label) for label in labels]

    for label, r in zip(labels, dicts):
        if not isinstance(r.get('per_class'), list):
            raise ValueError(f'{label}: no per-class accuracy ("per_class"): not a validate.py results file')
        if r.get('class_counts') is None:
            raise ValueError(
                f'{label}: no training class counts ("class_counts") in the results: run validate.py with '
                f'--train-counts FILE (or on a train.py checkpoint, which stores them)')
        if len(r['class_counts']) != len(r['per_class']):
            raise ValueError(f'{label}: {len(r["class_counts"])} class counts but {len(r["per_class"])} classes')
    sizes = {label: len(r['per_class']) for label, r in zip(labels, dicts)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f'The results have different numbers of classes: {sizes}')
    counts = np.asarray(dicts[0]['class_counts'], dtype=float)
    for label, r in zip(labels[1:], dicts[1:]):
        if not np.array_equal(np.asarray(r['class_counts'], dtype=float), counts):
            raise ValueError(f'{labels[0]} and {label} were trained on different class counts: the classes cannot '
                             f'be placed on one frequency axis')
    names = next((r['class_names'] for r in dicts if r.get('class_names')), None)
    for label, r in zip(labels, dicts):
        if r.get('class_names') and list(r['class_names']) != list(names):
            raise ValueError(f'{label} names its classes differently from the other results (another class order?)')
    many_thresh = many_thresh if many_thresh is not None else dicts[0].get('many_thresh') or 100
    few_thresh = few_thresh if few_thresh is not None else dicts[0].get('few_thresh') or 20

    num_classes = len(counts)
    order = np.argsort(-counts, kind='stable')
    x = np.arange(num_classes)
    sorted_counts = counts[order]
    if figsize is None:
        figsize = (min(max(8., 0.45 * num_classes + 3.), 18.), 5.5)
    fig = Figure(figsize=figsize, dpi=dpi, layout='constrained')
    ax = fig.add_subplot()
    ax_count = ax.twinx()
    ax.set_zorder(ax_count.get_zorder() + 1)  # accuracy in front of the count bars
    ax.patch.set_visible(False)

    ax_count.bar(x, np.maximum(sorted_counts, 0.5), width=0.6, color='0.86', zorder=0)
    ax_count.set_yscale('log')
    ax_count.set_ylim(0.5, max(sorted_counts.max(), many_thresh) * 3)
    ax_count.yaxis.set_major_formatter(ScalarFormatter())
    ax_count.set_ylabel('training images (log scale)')
    for thresh in (many_thresh, few_thresh):
        ax_count.axhline(thresh, color='0.45', lw=0.8, ls=':')

    bands = [
        ('many', sorted_counts > many_thresh, f'> {many_thresh}'),
        ('medium', (sorted_counts >= few_thresh) & (sorted_counts <= many_thresh), f'{few_thresh}-{many_thresh}'),
        ('few', sorted_counts < few_thresh, f'< {few_thresh}'),
    ]
    handles = []
    for key, mask, text in bands:
        if not mask.any():
            continue
        fill, dark = _BANDS[key]
        left, right = x[mask].min() - 0.5, x[mask].max() + 0.5  # contiguous: classes are sorted by count
        ax_count.axvspan(left, right, color=fill, lw=0, zorder=-1)
        ax.text((left + right) / 2, 1.01, f'{key}-shot: {int(mask.sum())} classes', ha='center', va='bottom',
                fontsize=8, color=dark, transform=ax.get_xaxis_transform())
        handles.append(Patch(color=fill, label=f'{key}-shot: {text} training images'))
    handles.append(Patch(color='0.86', label='training images per class (right axis)'))
    handles.append(Line2D([], [], color='0.45', lw=0.8, ls=':', label=f'{few_thresh} / {many_thresh} training images'))

    many_classes = num_classes > 50
    for i, (label, r) in enumerate(zip(labels, dicts)):
        acc = np.asarray([np.nan if a is None else a for a in r['per_class']], dtype=float)[order]
        color = f'C{i % 10}'
        legend = _legend_label(label, r)
        if many_classes:
            ax.scatter(x, acc, s=9, marker=_MARKERS[i % len(_MARKERS)], color=color, alpha=0.45, lw=0)
            handles.append(ax.plot(x, _running_mean(acc, max(5, num_classes // 25)), color=color, lw=1.8,
                                   marker=_MARKERS[i % len(_MARKERS)], markevery=max(1, num_classes // 12),
                                   label=f'{legend} (running mean)')[0])
        else:
            dodge = (i - (len(dicts) - 1) / 2) * min(0.12, 0.6 / len(dicts))
            handles.append(ax.plot(x + dodge, acc, color=color, lw=1, marker=_MARKERS[i % len(_MARKERS)], ms=6,
                                   mec='white', mew=0.6, label=legend)[0])

    ax.set_xlim(-0.5, num_classes - 0.5)
    ax.set_ylim(-3, 103)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel('per-class accuracy (%)')
    if names is not None and num_classes <= 50:
        ax.set_xticks(x, [str(names[j]) for j in order], rotation=45, ha='right', fontsize=8)
        ax.set_xlabel('class (sorted by training images, most first)')
    else:
        ax.set_xlabel('class rank by training images (most first)')
    ax.grid(axis='y', color='0.9', lw=0.6)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, pad=18)
    # two columns only while the entries fit side by side (a run's entry lists its groups and gets long)
    longest = max(len(h.get_label()) for h in handles)
    fig.legend(handles=handles, loc='outside lower center', ncol=2 if longest * 2 * 8 * 0.55 / 72 < figsize[0] else 1,
               fontsize=8, frameon=False)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=dpi)
    return out_file


def _legend_label(label: str, result: Mapping[str, Any]) -> str:
    """``label: top-1 .., many-shot .., ..., head classes ..``: the shot groups (by training count) and the class
    groups (``class_groups``) under their own names, so that the two mediums cannot be confused."""
    parts = [f'top-1 {result["top1"]:.1f}'] if result.get('top1') is not None else []
    parts += [f'{k.replace("_", "-")} {result[k]:.1f}' for k in ('many_shot', 'medium_shot', 'few_shot')
              if result.get(k) is not None]
    parts += [f'{k} classes {v:.1f}' for k, v in (result.get('class_groups') or {}).items() if v is not None]
    return f'{label}: ' + ', '.join(parts) if parts else label
