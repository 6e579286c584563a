""" See what the model sees: class activation map overlays and per-class accuracy against training frequency

* ``cam_overlays`` / ``dataset_cam_overlays``: one PNG per image with the input, the class activation map (CAM) of
  the predicted class, the CAM of the true class and, for models with CAMC on, CAMC's calibration map ``A``, each
  overlaid on the image. The maps come from ``model.explain()``, the head code that computes the logits.
* ``plot_per_class_accuracy``: per-class accuracy of one or several ``validate.py`` results with the classes sorted
  by training images, the training count on a log-scaled twin axis and the many / medium / few-shot bands.

Command line::

    python -m timm_camc.visualize plot --results ce.json camc.json --labels CE CAMC --out per_class.png
    python -m timm_camc.visualize cam --model resnet32_camc_lt --checkpoint output/train/run/last.pth.tar \\
        --data-dir data/cifar10-jpeg --split test --count 20 --out-dir output/cams

Drawing needs matplotlib (``pip install timm-camc[viz]``); computing the maps (``explain_images``) does not.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import argparse
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from timm.data import create_transform, resolve_data_config

from timm_camc.data import create_image_dataset, dataset_class_names, dataset_targets
from timm_camc.utils import create_eval_model

__all__ = [
    'CamExplanation', 'explain_images', 'overlay_map', 'cam_figure', 'cam_overlays', 'dataset_cam_overlays',
    'cam_file_name', 'plot_per_class_accuracy', 'main',
]

_logger = logging.getLogger(__name__)

_MATPLOTLIB_HINT = 'pip install "timm-camc[viz]" (or pip install matplotlib)'
_MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*')
_BANDS = {'many': ('#e2efda', '#38761d'), 'medium': ('#fff2cc', '#9c6500'), 'few': ('#f8d7d7', '#a61c1c')}  # fill, text


def _import_matplotlib():
    """matplotlib (Agg, no pyplot: no global backend state), or an ImportError that says how to install it."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f'Drawing CAM overlays and plots needs matplotlib: {_MATPLOTLIB_HINT}') from e
    return matplotlib, Figure


@dataclass
class CamExplanation:
    """The maps of one image, ready to draw (all arrays at display resolution, float32 in [0, 1]).

    Attributes:
        index: Index of the image (in the dataset, or in the list given).
        target: True class.
        pred: Predicted class.
        prob_target: Softmax probability of the true class.
        prob_pred: Softmax probability of the predicted class.
        image: The model input, de-normalised and upscaled (H x W x 3).
        cam_pred: Min-max normalised CAM of the predicted class, upsampled bilinearly (H x W).
        cam_target: The same for the true class.
        calibration: Min-max normalised CAMC calibration map ``A`` (of the predicted class for the per-class
            variant), or None for models without calibration.
        calibration_range: ``(min, max)`` of ``A`` before normalisation (``A`` is in (0, 1)), or None.
    """
    index: int
    target: int
    pred: int
    prob_target: float
    prob_pred: float
    image: np.ndarray
    cam_pred: np.ndarray
    cam_target: np.ndarray
    calibration: Optional[np.ndarray] = None
    calibration_range: Optional[Tuple[float, float]] = None

    @property
    def correct(self) -> bool:
        return self.pred == self.target


def _min_max(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each map (B x h x w) scaled to [0, 1]; a flat map becomes all zeros."""
    flat = maps.flatten(1)
    low = flat.min(1).values[:, None, None]
    span = (flat.max(1).values - flat.min(1).values)[:, None, None]
    return torch.where(span > eps, (maps - low) / span.clamp_min(eps), torch.zeros_like(maps))


def _upsample(maps: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of B x h x w maps to ``size`` (a convex combination: [0, 1] stays [0, 1])."""
    return F.interpolate(maps[:, None], size=size, mode='bilinear', align_corners=False)[:, 0]


@torch.no_grad()
def explain_images(
        model: torch.nn.Module,
        images: Sequence[Any],
        targets: Sequence[int],
        indices: Optional[Sequence[int]] = None,
        data_config: Optional[Mapping[str, Any]] = None,
        batch_size: int = 32,
        device: Optional[Union[str, torch.device]] = None,
        min_size: int = 160,
) -> List[CamExplanation]:
    """Predicted- and true-class CAMs and the CAMC calibration map of images, at display resolution.

    The images go through the model's evaluation transform; the displayed image is that model input de-normalised,
    so the maps line up with what the model saw. The model runs in eval mode without gradients (its mode is
    restored afterwards) on its own device unless ``device`` is given.

    Args:
        model: A model with ``explain(x, classes=None)`` (the ``*_camc_*`` models).
        images: Input images (PIL, or whatever the evaluation transform takes).
        targets: True class of each image.
        indices: Index reported for each image (default: its position in ``images``).
        data_config: timm data config (``resolve_data_config``) for the transform (default: the model's).
        batch_size: Images per forward pass.
        device: Device to run on (default: the model's).
        min_size: Images are upscaled by an integer factor until their shorter side is at least this many pixels.

    Returns:
        One ``CamExplanation`` per image, in order.
    """
    if not hasattr(model, 'explain'):
        raise TypeError(f'{type(model).__name__} has no explain(): CAM overlays need a timm-camc model')
    if len(images) != len(targets):
        raise ValueError(f'{len(images)} images but {len(targets)} targets')
    indices = list(range(len(images))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(images):
        raise ValueError(f'{len(images)} images but {len(indices)} indices')
    data_config = dict(data_config or resolve_data_config(model=model))
    transform = create_transform(**data_config)
    mean = torch.tensor(data_config['mean']).view(1, -1, 1, 1)
    std = torch.tensor(data_config['std']).view(1, -1, 1, 1)
    if device is None:
        device = next(model.parameters()).device
    num_classes = model.num_classes
    bad = [int(t) for t in targets if not 0 <= int(t) < num_classes]
    if bad:
        raise ValueError(f'targets must be in [0, {num_classes}), got {bad[:10]}')

    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = torch.stack([transform(img) for img in images[start:start + batch_size]])
            y = torch.as_tensor([int(t) for t in targets[start:start + batch_size]], dtype=torch.long)
            x_dev = x.to(device)
            pred_out = model.explain(x_dev)
            target_out = model.explain(x_dev, classes=y.to(device))
            probs = torch.softmax(pred_out['logits'].float(), dim=-1).cpu()
            preds = pred_out['classes'].cpu()

            height, width = x.shape[-2:]
            factor = max(1, math.ceil(min_size / min(height, width)))
            size = (height * factor, width * factor)
            shown = F.interpolate((x * std + mean).clamp(0, 1), size=size, mode='bicubic', align_corners=False)
            shown = shown.clamp(0, 1).permute(0, 2, 3, 1).numpy()
            cam_pred = _upsample(_min_max(pred_out['cam'].float().cpu()), size).numpy()
            cam_target = _upsample(_min_max(target_out['cam'].float().cpu()), size).numpy()
            calib = pred_out.get('calibration')
            if calib is not None:
                calib = calib.float().cpu()
                flat = calib.flatten(1)
                calib_range = list(zip(flat.min(1).values.tolist(), flat.max(1).values.tolist()))
                calib = _upsample(_min_max(calib), size).numpy()

            for i in range(x.shape[0]):
                pred, target = int(preds[i]), int(y[i])
                out.append(CamExplanation(
                    index=indices[start + i], target=target, pred=pred,
                    prob_target=float(probs[i, target]), prob_pred=float(probs[i, pred]),
                    image=shown[i], cam_pred=cam_pred[i], cam_target=cam_target[i],
                    calibration=None if calib is None else calib[i],
                    calibration_range=None if calib is None else calib_range[i],
                ))
    finally:
        model.train(was_training)
    return out


def overlay_map(image: np.ndarray, heatmap: np.ndarray, cmap: str = 'jet', alpha: float = 0.5) -> np.ndarray:
    """Blend a colour-mapped heat map onto an image.

    Args:
        image: RGB image (H x W x 3) in [0, 1].
        heatmap: Map (H x W) in [0, 1].
        cmap: matplotlib colormap name.
        alpha: Weight of the coloured map.

    Returns:
        The blended RGB image (H x W x 3, float32 in [0, 1]).
    """
    matplotlib, _ = _import_matplotlib()
    if image.shape[:2] != heatmap.shape:
        raise ValueError(f'image {image.shape[:2]} and map {heatmap.shape} sizes differ')
    colored = matplotlib.colormaps[cmap](np.clip(heatmap, 0, 1))[..., :3]
    return ((1 - alpha) * image + alpha * colored).astype(np.float32)


def _class_name(class_names: Optional[Sequence[str]], index: int) -> str:
    return str(class_names[index]) if class_names is not None else f'class {index}'


def cam_figure(
        explanation: CamExplanation,
        class_names: Optional[Sequence[str]] = None,
        cmap: str = 'jet',
        alpha: float = 0.5,
        dpi: int = 100,
):
    """The overlay figure of one image: input | CAM of the prediction | CAM of the true class | calibration map.

    Panels are placed at their exact pixel size (no resampling when saved at ``dpi``), in one row under a title
    giving the true and predicted classes and whether the prediction is right.

    Args:
        explanation: The maps of the image (``explain_images``).
        class_names: Class names (default: class indices).
        cmap: matplotlib colormap of the maps.
        alpha: Weight of the coloured map over the image.
        dpi: Resolution the figure is meant to be saved at.

    Returns:
        A ``matplotlib.figure.Figure`` (not registered with pyplot: it is freed when dropped).
    """
    _, Figure = _import_matplotlib()
    e = explanation
    true_name, pred_name = _class_name(class_names, e.target), _class_name(class_names, e.pred)
    panels = [
        (e.image, f'input\ntrue: {true_name}'),
        (overlay_map(e.image, e.cam_pred, cmap, alpha), f'CAM of prediction\n{pred_name}  p={e.prob_pred:.2f}'),
        (overlay_map(e.image, e.cam_target, cmap, alpha), f'CAM of true class\n{true_name}  p={e.prob_target:.2f}'),
    ]
    if e.calibration is not None:
        low, high = e.calibration_range
        detail = f'flat, A={low:.2f}' if high - low < 1e-6 else f'A in [{low:.2f}, {high:.2f}]'
        panels.append((overlay_map(e.image, e.calibration, cmap, alpha), f'CAMC calibration\n{detail}'))

    height, width = e.image.shape[:2]
    pad, gap, top, bottom = 10, 14, 62, 10  # pixels
    fig_w = 2 * pad + len(panels) * width + (len(panels) - 1) * gap
    fig_h = top + height + bottom
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi)
    verdict = 'correct' if e.correct else 'wrong'
    fig.text(0.5, 1 - 4 / fig_h, f'#{e.index}  true: {true_name}  |  predicted: {pred_name}  ({verdict})',
             ha='center', va='top', fontsize=9, fontweight='bold', color='#1a7f37' if e.correct else '#c0392b')
    for i, (rgb, title) in enumerate(panels):
        ax = fig.add_axes(((pad + i * (width + gap)) / fig_w, bottom / fig_h, width / fig_w, height / fig_h))
        ax.imshow(rgb, interpolation='nearest', aspect='auto')
        ax.set_title(title, fontsize=8, pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _file_part(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-') or 'x'


def cam_file_name(explanation: CamExplanation, class_names: Optional[Sequence[str]] = None) -> str:
    """``cam_{index:05d}_{true}_{pred}.png`` (class names, or indices without names)."""
    e = explanation
    if class_names is None:
        true_part, pred_part = str(e.target), str(e.pred)
    else:
        true_part, pred_part = _file_part(str(class_names[e.target])), _file_part(str(class_names[e.pred]))
    return f'cam_{e.index:05d}_{true_part}_{pred_part}.png'


def cam_overlays(
        model: torch.nn.Module,
        images: Sequence[Any],
        targets: Sequence[int],
        out_dir: Union[str, os.PathLike],
        class_names: Optional[Sequence[str]] = None,
        indices: Optional[Sequence[int]] = None,
        data_config: Optional[Mapping[str, Any]] = None,
        batch_size: int = 32,
        device: Optional[Union[str, torch.device]] = None,
        min_size: int = 160,
        cmap: str = 'jet',
        alpha: float = 0.5,
        dpi: int = 100,
) -> List[Path]:
    """Write one CAM overlay PNG per image (see ``cam_figure``), named by ``cam_file_name``.

    Args:
        model: A model with ``explain()``.
        images: Input images (PIL).
        targets: True class of each image.
        out_dir: Output folder (created).
        class_names: Class names for titles and file names (default: class indices).
        indices: Index of each image for titles and file names (default: its position).
        data_config: timm data config of the evaluation transform (default: the model's).
        batch_size: Images per forward pass.
        device: Device to run on (default: the model's).
        min_size: Shorter side of the displayed image, at least (integer upscaling).
        cmap: matplotlib colormap.
        alpha: Weight of the coloured map.
        dpi: PNG resolution (panels are drawn at one image pixel per PNG pixel).

    Returns:
        The written files, in the order of the images.
    """
    _import_matplotlib()  # fail before running the model
    if class_names is not None and len(class_names) != model.num_classes:
        raise ValueError(f'{len(class_names)} class names for a {model.num_classes}-class model')
    explanations = explain_images(
        model, images, targets, indices=indices, data_config=data_config, batch_size=batch_size, device=device,
        min_size=min_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for e in explanations:
        path = out_dir / cam_file_name(e, class_names)
        cam_figure(e, class_names, cmap=cmap, alpha=alpha, dpi=dpi).savefig(path, dpi=dpi)
        paths.append(path)
    return paths


def _spread_indices(targets: Sequence[int], count: int) -> List[int]:
    """``count`` indices taking each class in turn (first image of every class, then the second, ...)."""
    by_class: Dict[int, List[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    chosen, rank = [], 0
    while len(chosen) < count and any(rank < len(v) for v in by_class.values()):
        for c in sorted(by_class):
            if rank < len(by_class[c]) and len(chosen) < count:
                chosen.append(by_class[c][rank])
        rank += 1
    return chosen


def _raw_items(dataset: torch.utils.data.Dataset, indices: Sequence[int]) -> Tuple[List[Any], List[int]]:
    """Untransformed images and labels of ``dataset[i]`` (its ``transform`` is switched off meanwhile)."""
    has_transform = hasattr(dataset, 'transform')
    saved = dataset.transform if has_transform else None
    try:
        if has_transform:
            dataset.transform = None  # a loader factory may have set the tensor transform of the evaluation
        items = [dataset[i] for i in indices]
    finally:
        if has_transform:
            dataset.transform = saved
    return [img for img, _ in items], [int(t) for _, t in items]


def dataset_cam_overlays(
        model: torch.nn.Module,
        dataset: torch.utils.data.Dataset,
        out_dir: Union[str, os.PathLike],
        count: int = 16,
        indices: Optional[Sequence[int]] = None,
        class_names: Optional[Sequence[str]] = None,
        **kwargs,
) -> List[Path]:
    """CAM overlays of dataset images: the given ``indices``, or ``count`` images taken from each class in turn.

    The dataset returns ``(image, label)``; its ``transform`` (e.g. the one a loader factory set) is switched off
    while reading, and the model's evaluation transform of ``data_config`` is applied instead.

    Args:
        model: A model with ``explain()``.
        dataset: Labelled image dataset (``ImageListDataset``, timm or torchvision datasets).
        out_dir: Output folder.
        count: Number of images when ``indices`` is not given (the first of every class, then the second, ...;
            evenly spaced over the dataset when it exposes no labels).
        indices: Dataset indices to draw.
        class_names: Class names (default: the dataset's ``class_names`` or ``classes``).
        **kwargs: Passed to ``cam_overlays`` (``data_config``, ``device``, ``batch_size``, ``cmap``, ...).

    Returns:
        The written files.
    """
    _import_matplotlib()
    if indices is None:
        try:
            indices = _spread_indices(dataset_targets(dataset), count)
        except TypeError:
            indices = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(count, len(dataset)))})
    indices = [int(i) for i in indices]
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise ValueError(f'indices outside the dataset (0..{len(dataset) - 1}): {bad[:10]}')
    if class_names is None:
        class_names = dataset_class_names(dataset)
    images, targets = _raw_items(dataset, indices)
    return cam_overlays(model, images, targets, out_dir, class_names=class_names, indices=indices, **kwargs)


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
    fig.legend(handles=handles, loc='outside lower center', ncol=2, fontsize=8, frameon=False)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m timm_camc.visualize', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    plot = sub.add_parser('plot', help='per-class accuracy against training frequency of validate.py results')
    plot.add_argument('--results', nargs='+', required=True, metavar='JSON', help='validate.py results files')
    plot.add_argument('--labels', nargs='+', default=None, metavar='NAME', help='legend label per results file')
    plot.add_argument('--out', required=True, metavar='FILE', help='image to write (.png, .pdf, .svg)')
    plot.add_argument('--title', default=None)
    plot.add_argument('--many-thresh', type=int, default=None, help='default: from the results (100)')
    plot.add_argument('--few-thresh', type=int, default=None, help='default: from the results (20)')

    cam = sub.add_parser('cam', help='CAM overlay PNGs of dataset images')
    cam.add_argument('--model', required=True, metavar='NAME',
                     help='registry name (with --checkpoint), hf-hub:org/name or local-dir:path')
    cam.add_argument('--checkpoint', default='', metavar='PATH', help='train.py checkpoint or weights file')
    cam.add_argument('--use-ema', action='store_true', help='the EMA weights of the checkpoint')
    cam.add_argument('--pretrained', action='store_true', help='the pretrained weights of a registry name')
    cam.add_argument('--num-classes', type=int, default=None, help='classes (default: checkpoint / model)')
    cam.add_argument('--data-dir', required=True, metavar='DIR', help='dataset root')
    cam.add_argument('--split', default='test', metavar='NAME', help='split (class-per-folder tree) under --data-dir')
    cam.add_argument('--val-list', default='', metavar='FILE', help='list file (relative/path label) instead')
    cam.add_argument('--count', type=int, default=16, metavar='N', help='images, taking each class in turn')
    cam.add_argument('--indices', type=int, nargs='+', default=None, metavar='I', help='these dataset indices')
    cam.add_argument('--out-dir', required=True, metavar='DIR')
    cam.add_argument('--min-size', type=int, default=160, help='shorter side of the displayed image, at least')
    cam.add_argument('--cmap', default='jet', help='matplotlib colormap')
    cam.add_argument('-b', '--batch-size', type=int, default=32, metavar='N')
    cam.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == 'plot':
        out = plot_per_class_accuracy(args.results, args.out, labels=args.labels, title=args.title,
                                      many_thresh=args.many_thresh, few_thresh=args.few_thresh)
        _logger.info(f'Wrote {out}')
        return 0

    _import_matplotlib()
    model, ckpt_args = create_eval_model(
        args.model, args.checkpoint, num_classes=args.num_classes, use_ema=args.use_ema, pretrained=args.pretrained)
    model.to(args.device)
    dataset = create_image_dataset(args.data_dir, args.split, args.val_list, ckpt_args.get('class_names'))
    paths = dataset_cam_overlays(
        model, dataset, args.out_dir, count=args.count, indices=args.indices,
        data_config=resolve_data_config(model=model), batch_size=args.batch_size, min_size=args.min_size,
        cmap=args.cmap)
    _logger.info(f'Wrote {len(paths)} CAM overlays to {args.out_dir}')
    return 0


if __name__ == '__main__':
    from timm.utils import setup_default_logging
    setup_default_logging()
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError, ImportError) as e:  # bad input or missing extra: the message says what
        _logger.error(f'{type(e).__name__}: {e}')
        sys.exit(2)
