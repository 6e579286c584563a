""" Long-tailed training and validation datasets from a folder tree, list files or timm's dataset sources

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch.utils.data

from timm.data import create_dataset

from .dataset import ImageListDataset, LongTailSubset, dataset_class_names, dataset_targets
from .long_tail import long_tail_counts, long_tail_indices, read_list_file, write_list_file

__all__ = ['LongTailInfo', 'create_image_dataset', 'create_lt_datasets', 'class_counts_of', 'write_lt_subset']

_logger = logging.getLogger(__name__)


@dataclass
class LongTailInfo:
    """What a run needs to know about its training set (saved with checkpoints and results)."""
    num_classes: int
    class_counts: List[int]
    class_names: Optional[List[str]] = None
    imbalance: float = 0.
    profile: str = ''
    seed: int = 0
    subset_list: str = ''  # list file of the long-tailed training subset, when one was built from files
    extra: dict = field(default_factory=dict)
    indices: Optional[List[int]] = field(default=None, repr=False)  # the subset's indices into the full training set

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop('indices')
        return d


def write_lt_subset(output_dir: str, info: LongTailInfo, train_ds: torch.utils.data.Dataset) -> None:
    """Write a long-tailed subset to ``output_dir`` so that the run can be reproduced exactly: ``lt_subset.json``
    (the info with the selected indices) and, for image datasets, the list file ``lt_train.txt``."""
    if info.indices is None:
        return
    if isinstance(train_ds, ImageListDataset):
        info.subset_list = os.path.join(output_dir, 'lt_train.txt')
        write_list_file(
            info.subset_list, train_ds.samples,
            header=f'long-tailed subset of {train_ds.root}: profile {info.profile}, imbalance {info.imbalance:g}, '
                   f'seed {info.seed}; paths relative to that folder')
    with open(os.path.join(output_dir, 'lt_subset.json'), 'w') as f:
        json.dump(dict(info.to_dict(), indices=info.indices), f)


def class_counts_of(targets: List[int], num_classes: int) -> List[int]:
    counts = [0] * num_classes
    for t in targets:
        counts[t] += 1
    return counts


def create_image_dataset(
        root: str,
        split: str = '',
        list_file: str = '',
        class_names: Optional[Sequence[str]] = None,
        **kwargs,
) -> ImageListDataset:
    """Images from a list file under ``root`` (``relative/path label`` lines) or the class-per-folder tree
    ``root/split``: the one builder of train.py's, validate.py's and the CAM tool's datasets.

    ``class_names`` (the training set's, or a checkpoint's) fixes the label order, so an evaluation split is labelled
    as the model was trained; a folder of a class not in it is an error (see ``ImageListDataset.from_folder``).
    Other kwargs go to ``ImageListDataset`` (``skip_corrupt``; ``allow_empty_classes`` for folders).
    """
    if list_file:
        kwargs.pop('allow_empty_classes', None)
        return ImageListDataset(root, read_list_file(list_file), class_names=class_names, **kwargs)
    class_to_idx = {n: i for i, n in enumerate(class_names)} if class_names else None
    return ImageListDataset.from_folder(os.path.join(root, split), class_to_idx=class_to_idx, **kwargs)


def create_lt_datasets(
        data_dir: str,
        dataset: str = '',
        train_split: str = 'train',
        val_split: str = 'validation',
        train_list: str = '',
        val_list: str = '',
        download: bool = False,
        imbalance: float = 0.,
        profile: str = 'exp',
        lt_seed: int = 0,
        num_classes: Optional[int] = None,
        skip_corrupt: bool = False,
        output_dir: str = '',
        allow_empty_classes: bool = False,
) -> Tuple[torch.utils.data.Dataset, Optional[torch.utils.data.Dataset], LongTailInfo]:
    """Training and validation datasets, the training set made long-tailed when ``imbalance > 1``.

    Sources: ``train_list`` / ``val_list`` (``relative/path label`` files under ``data_dir``), a timm dataset name
    such as ``torch/cifar10`` (with ``download``), or by default a class-per-folder tree ``data_dir/<split>/<class>``.
    The validation split is left balanced. With ``output_dir``, the subset is written there by ``write_lt_subset``
    (or call it later, once the run's output folder exists).

    Raises:
        FileNotFoundError: Missing data folder, split folder, list file or listed image.
        ValueError: No images, a class folder without images (unless ``allow_empty_classes``), a class without
            training images, training or validation labels beyond ``num_classes``.
    """
    if dataset.startswith(('torch/', 'hfds/', 'hfids/', 'tfds/', 'wds/')):
        try:
            train_ds = create_dataset(dataset, root=data_dir, split=train_split, is_training=True, download=download)
            val_ds = create_dataset(dataset, root=data_dir, split=val_split, download=download) if val_split else None
        except (OSError, RuntimeError) as e:  # torchvision: not found / download failed (no internet)
            action = 'could not be downloaded' if download else 'is not there (add --dataset-download)'
            raise FileNotFoundError(
                f'Dataset {dataset} in {data_dir!r} {action}: {e}. Without internet, give a class-per-folder '
                f'tree (train/<class>/*, plus a validation split) with --data-dir and no --dataset.') from e
    elif dataset:
        raise ValueError(f'Unknown dataset source {dataset!r}: leave it empty for an image folder or list files, '
                         f'or use one of timm\'s sources such as torch/cifar10')
    else:
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f'Data folder not found: {data_dir!r}')
        options = dict(skip_corrupt=skip_corrupt, allow_empty_classes=allow_empty_classes)
        train_ds = create_image_dataset(data_dir, train_split, train_list, **options)
        val_ds = None
        if val_list or val_split:
            if not val_list and not os.path.isdir(os.path.join(data_dir, val_split)):
                splits = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
                raise FileNotFoundError(
                    f'Validation folder not found: {os.path.join(data_dir, val_split)!r} (folders there: {splits}). '
                    f"Name it with --val-split, e.g. --val-split test, or --val-split '' to train without one")
            val_ds = create_image_dataset(data_dir, val_split, val_list, train_ds.class_names, **options)

    targets = dataset_targets(train_ds)
    class_names = dataset_class_names(train_ds)
    num_classes = num_classes or (len(class_names) if class_names else max(targets) + 1)
    bad = sorted({t for t in targets if not 0 <= t < num_classes})
    if bad:
        raise ValueError(f'Training labels {bad[:10]} are outside [0, {num_classes}): check --num-classes')
    full_counts = class_counts_of(targets, num_classes)
    if val_ds is not None:
        bad = sorted({t for t in dataset_targets(val_ds) if not 0 <= t < num_classes})
        if bad:
            raise ValueError(f'Validation labels {bad[:10]} are outside the {num_classes} training classes '
                             f'[0, {num_classes}): check --val-list or --num-classes')

    info = LongTailInfo(num_classes=num_classes, class_counts=full_counts,
                        class_names=list(class_names) if class_names else None)
    if imbalance and imbalance > 1:
        wanted = long_tail_counts(max(full_counts), num_classes, imbalance, profile)
        indices = long_tail_indices(targets, wanted, seed=lt_seed, class_names=class_names)
        if isinstance(train_ds, ImageListDataset):
            train_ds = ImageListDataset(
                train_ds.root, [train_ds.samples[i] for i in indices], class_names=train_ds.class_names,
                skip_corrupt=skip_corrupt)
        else:
            train_ds = LongTailSubset(train_ds, indices)
        info.class_counts = class_counts_of(dataset_targets(train_ds), num_classes)
        info.imbalance, info.profile, info.seed, info.indices = float(imbalance), profile, lt_seed, list(indices)
        if output_dir:
            write_lt_subset(output_dir, info, train_ds)

    empty = [i for i, n in enumerate(info.class_counts) if n == 0]
    if empty:
        names = [class_names[i] if class_names and i < len(class_names) else i for i in empty[:10]]
        raise ValueError(f'{len(empty)} classes have no training image: {names}. Fix the data or --num-classes.')
    _logger.info(f'Training set: {sum(info.class_counts)} images, {num_classes} classes, '
                 f'{max(info.class_counts)} to {min(info.class_counts)} per class')
    return train_ds, val_ds, info
