""" Datasets for long-tailed training: image lists and folders, long-tailed subsets of any labelled dataset

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import logging
import multiprocessing
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch.utils.data
from PIL import Image

from timm.data.readers.img_extensions import get_img_extensions
from timm.data.readers.reader_image_folder import find_images_and_targets

__all__ = [
    'CorruptImageError', 'DatasetView', 'ImageListDataset', 'LongTailSubset', 'RankShard', 'dataset_class_names',
    'dataset_targets',
]

_logger = logging.getLogger(__name__)


class CorruptImageError(OSError):
    """An image file that exists but cannot be decoded."""


class ImageListDataset(torch.utils.data.Dataset):
    """Images given as ``(path relative to root, label)`` pairs: a list file, or a class-per-folder tree.

    Every listed file is checked to exist when the dataset is built, so a wrong path fails before training starts.
    An unreadable image raises ``CorruptImageError`` naming the file, or with ``skip_corrupt=True`` is skipped
    (the next image is returned), logged and counted in ``num_skipped`` (shared by the loader's workers).
    """

    def __init__(
            self,
            root: str,
            samples: Sequence[Tuple[str, int]],
            class_names: Optional[Sequence[str]] = None,
            transform: Optional[Callable] = None,
            target_transform: Optional[Callable] = None,
            skip_corrupt: bool = False,
    ):
        if not os.path.isdir(root):
            raise FileNotFoundError(f'Data folder not found: {root}')
        if not samples:
            raise ValueError(f'No images under {root}')
        self.root = root
        self.samples = [(p, int(t)) for p, t in samples]
        missing = [p for p, _ in self.samples if not os.path.isfile(os.path.join(root, p))]
        if missing:
            raise FileNotFoundError(
                f'{len(missing)} of {len(self.samples)} listed images do not exist under {root}, e.g. {missing[:5]}')
        self.targets = [t for _, t in self.samples]
        self.class_names = list(class_names) if class_names is not None else None
        self.transform = transform
        self.target_transform = target_transform
        self.skip_corrupt = skip_corrupt
        self._skipped = multiprocessing.Value('i', 0)

    @classmethod
    def from_folder(
            cls,
            folder: str,
            class_to_idx: Optional[Dict[str, int]] = None,
            allow_empty_classes: bool = False,
            **kwargs,
    ) -> 'ImageListDataset':
        """A class-per-sub-folder tree (timm's folder reader); ``class_to_idx`` aligns a val split with train.

        timm's reader drops class folders without images (the model would silently get fewer classes) and, given
        ``class_to_idx``, the images of classes not in it (they would silently go unscored). Both are errors naming
        the folders, unless ``allow_empty_classes``.
        """
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'Data folder not found: {folder}')
        known = class_to_idx
        images, class_to_idx = find_images_and_targets(folder, class_to_idx=class_to_idx)
        if not images:
            raise ValueError(f'No images found under {folder}: expected one sub-folder of images per class')
        if not allow_empty_classes:
            _check_class_folders(folder, images, known)
        samples = [(os.path.relpath(path, folder), target) for path, target in images]
        names = sorted(class_to_idx, key=class_to_idx.get)
        return cls(folder, samples, class_names=names, **kwargs)

    @property
    def num_skipped(self) -> int:
        return self._skipped.value

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> Image.Image:
        path = os.path.join(self.root, self.samples[index][0])
        try:
            with open(path, 'rb') as f:
                return Image.open(f).convert('RGB')
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise CorruptImageError(f'Cannot read image {path}: {e}') from e

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            try:
                img = self._load(i)
            except CorruptImageError as e:
                if not self.skip_corrupt:
                    raise
                with self._skipped.get_lock():
                    self._skipped.value += 1
                _logger.warning(f'Skipped: {e} ({self.num_skipped} skipped so far)')
                continue
            target = self.samples[i][1]
            if self.transform is not None:
                img = self.transform(img)
            if self.target_transform is not None:
                target = self.target_transform(target)
            return img, target
        raise CorruptImageError(f'No readable image in {self.root}')

    def filename(self, index: int) -> str:
        return self.samples[index][0]


def _check_class_folders(folder: str, images: Sequence[Tuple[str, int]], known: Optional[Dict[str, int]]) -> None:
    used = {os.path.relpath(path, folder).split(os.sep)[0] for path, _ in images}
    subfolders = sorted(d.name for d in os.scandir(folder) if d.is_dir() and not d.name.startswith('.'))
    empty = [d for d in subfolders if d not in used and not _has_image(os.path.join(folder, d))]
    if empty:
        raise ValueError(f'{len(empty)} class folder(s) of {folder} hold no image: {empty[:10]}. Add images, remove '
                         f'the folder, or pass --allow-empty-classes to train or score without them')
    if known is not None:
        unknown = [d for d in subfolders if d not in known and _has_image(os.path.join(folder, d))]
        if unknown:
            raise ValueError(f'{folder} has images of {len(unknown)} class(es) that the training classes do not '
                             f'include: {unknown[:10]}. They would go unscored; pass --allow-empty-classes to accept')


def _has_image(folder: str) -> bool:
    extensions = get_img_extensions()
    return any(os.path.splitext(f)[1].lower() in extensions for _, _, files in os.walk(folder) for f in files)


class DatasetView(torch.utils.data.Dataset):
    """A dataset over another one that forwards ``transform`` to it (timm's loader factories set
    ``dataset.transform``; a plain ``torch.utils.data.Subset`` would drop it)."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    @property
    def transform(self) -> Optional[Callable]:
        return self.dataset.transform

    @transform.setter
    def transform(self, transform: Optional[Callable]) -> None:
        self.dataset.transform = transform


class RankShard(DatasetView):
    """The samples ``rank, rank + world_size, ...`` of a dataset: every sample on exactly one rank, none repeated.

    timm's distributed eval sampler pads the ranks to equal length with repeated samples, which the metrics would
    count twice. Evaluation needs no equal lengths (the model is not wrapped in DDP; the counts are summed once at the
    end), so each rank takes its share as it is.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f'rank {rank} is not in [0, {world_size})')
        super().__init__(dataset)
        self.indices = range(rank, len(dataset), world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]


class LongTailSubset(DatasetView):
    """A subset of a labelled dataset that keeps ``targets`` and forwards ``transform`` to the source dataset."""

    def __init__(self, dataset: torch.utils.data.Dataset, indices: Sequence[int]):
        super().__init__(dataset)
        self.indices = list(indices)
        source_targets = dataset_targets(dataset)
        self.targets = [int(source_targets[i]) for i in self.indices]
        self.class_names = dataset_class_names(dataset)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]

    def filename(self, index: int) -> Optional[str]:
        source = getattr(self.dataset, 'filename', None)
        return source(self.indices[index]) if source is not None else None


def dataset_targets(dataset: torch.utils.data.Dataset) -> List[int]:
    """Labels of every sample of a dataset that exposes them (``targets``, or timm's reader samples)."""
    targets = getattr(dataset, 'targets', None)
    if targets is None:
        reader = getattr(dataset, 'reader', None)
        if reader is not None and hasattr(reader, 'samples'):
            targets = [t for _, t in reader.samples]
    if targets is None:
        raise TypeError(f'{type(dataset).__name__} does not expose its labels (no `targets`): a long-tailed '
                        f'subset or a class-aware sampler needs them')
    return [int(t) for t in targets]


def dataset_class_names(dataset: torch.utils.data.Dataset) -> Optional[List[str]]:
    """The class names of a dataset in label order: ours (``class_names``) or torchvision's (``classes``); None."""
    return getattr(dataset, 'class_names', None) or getattr(dataset, 'classes', None)
