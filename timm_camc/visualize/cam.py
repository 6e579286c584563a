""" Class activation map overlays: the input, the CAM of the predicted and of the true class and CAMC's calibration map

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from timm.data import create_transform, resolve_data_config

from timm_camc.data import dataset_class_names, dataset_targets

from ._matplotlib import _import_matplotlib

__all__ = ['CamExplanation', 'explain_images', 'overlay_map', 'cam_figure', 'cam_overlays', 'dataset_cam_overlays',
           'cam_file_name']


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
