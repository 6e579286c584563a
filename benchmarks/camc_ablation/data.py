"""The ablation's data: a class-per-folder tree (the CIFAR-10 JPEG archive by default), long-tailed with the library,
decoded once at one size into uint8 .npy arrays that every worker loads."""
import hashlib
import json
import logging
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import timm
from timm.data import resolve_data_config
from timm.data.transforms import str_to_pil_interp
from timm_camc.data import ImageListDataset, decode_images, long_tail_counts, long_tail_indices

from .protocol import DEFAULT_MODEL, IMG_SIZE, REPO

__all__ = ['ARCHIVE_NAME', 'ARCHIVE_SHA256', 'find_archive', 'extract_archive', 'lt_counts', 'select_samples',
           'prepare_data', 'normalization']

_logger = logging.getLogger('ablation')

ARCHIVE_NAME = 'cifar10-jpeg.tar.gz'
ARCHIVE_SHA256 = '323060915b46425be8b0590442ab183a24e94c86b85d3e0ce7a12359ff856e54'  # shared/datasets/README.md
CIFAR10_CFG = f'{DEFAULT_MODEL}.cifar10_lt_r100'  # its mean / std normalise the archive's images


def find_archive(explicit: str = '') -> Path:
    """The CIFAR-10 JPEG archive: ``--data-tar``, ``$TIMM_CAMC_CIFAR10_TAR``, ``shared/datasets/`` beside or in the
    repository, or the git-ignored ``data/`` of the repository (a copy that travels to another machine)."""
    candidates = [explicit, os.environ.get('TIMM_CAMC_CIFAR10_TAR', ''),
                  REPO.parent / 'shared' / 'datasets' / ARCHIVE_NAME, REPO / 'shared' / 'datasets' / ARCHIVE_NAME,
                  REPO / 'data' / ARCHIVE_NAME]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        f'CIFAR-10 JPEG archive not found (tried {[str(c) for c in candidates if c]}): pass --data-tar or --data-dir')


def extract_archive(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` once (a marker records which archive); returns ``dest``."""
    stamp = f'{archive.resolve()} {archive.stat().st_size} {int(archive.stat().st_mtime)}'
    marker = dest / '.extracted'
    if marker.is_file() and marker.read_text() == stamp:
        return dest
    partial = dest.with_name(dest.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    start = time.time()
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, 'data_filter'):
            tar.extractall(partial, filter='data')
        else:  # Python without extraction filters: refuse absolute paths and '..'
            for member in tar.getmembers():
                if member.name.startswith('/') or '..' in Path(member.name).parts:
                    raise ValueError(f'Unsafe path in {archive}: {member.name}')
            tar.extractall(partial)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(partial, dest)
    marker.write_text(stamp)
    _logger.info(f'Extracted {archive} into {dest} in {time.time() - start:.1f}s')
    return dest


def lt_counts(train_per_class_max: int, num_classes: int, imbalance: float) -> Tuple[List[int], float]:
    """Per-class counts of the long-tailed training set, and the imbalance factor they actually have.

    ``long_tail_counts(n_max, K, IF)``: [5000, 2997, 1796, ...] for the full CIFAR-10-LT at IF 100, the same profile
    from a smaller ``n_max`` for reduced runs. With ``n_max < IF`` the profile would leave the tail classes empty, so
    the imbalance is lowered to ``n_max`` (the tail keeps one image).
    """
    effective = min(float(imbalance), float(train_per_class_max))
    if effective < imbalance:
        _logger.warning(f'{train_per_class_max} images in the largest class cannot hold imbalance {imbalance:g}: '
                        f'using {effective:g}')
    return long_tail_counts(train_per_class_max, num_classes, effective), effective


def select_samples(
        data_dir: Path, train_per_class_max: int, imbalance: float, lt_seed: int, test_per_class: int,
) -> Dict[str, Any]:
    """The long-tailed training subset (as ``create_lt_datasets`` builds it) and the first ``test_per_class`` test
    images of each class. Returns the two ``ImageListDataset`` and the selected indices."""
    train_ds = ImageListDataset.from_folder(str(data_dir / 'train'))
    class_to_idx = {name: i for i, name in enumerate(train_ds.class_names)}
    test_ds = ImageListDataset.from_folder(str(data_dir / 'test'), class_to_idx=class_to_idx)
    num_classes = len(train_ds.class_names)
    full_counts = np.bincount(np.asarray(train_ds.targets), minlength=num_classes)
    n_max = min(train_per_class_max, int(full_counts.max()))
    counts, effective = lt_counts(n_max, num_classes, imbalance)
    train_idx = long_tail_indices(train_ds.targets, counts, seed=lt_seed, class_names=train_ds.class_names)
    test_targets = np.asarray(test_ds.targets)
    test_idx = sorted(int(i) for c in range(num_classes) for i in np.flatnonzero(test_targets == c)[:test_per_class])
    return dict(train_ds=train_ds, test_ds=test_ds, train_idx=train_idx, test_idx=test_idx, counts=counts,
                n_max=n_max, imbalance=effective, num_classes=num_classes,
                class_names=list(train_ds.class_names))


class _Resized(torch.utils.data.Dataset):
    """A dataset's images resized to (height, width) where they differ (``decode_images`` needs one size).

    ``decode_images`` sets ``transform`` (its decoder) and reads ``filename`` (its error messages), as on the dataset
    itself; images already at the size pass untouched, so CIFAR's 32 x 32 JPEGs decode as they always did.
    """

    def __init__(self, dataset: ImageListDataset, size: Tuple[int, int], interpolation: str = 'bilinear'):
        self.dataset, self.size, self.interpolation = dataset, size, str_to_pil_interp(interpolation)
        self.transform = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[Any, int]:
        img, label = self.dataset[index]
        if img.size != self.size[::-1]:  # PIL sizes are (width, height)
            img = img.resize(self.size[::-1], self.interpolation)
        return (img if self.transform is None else self.transform(img)), label

    def filename(self, index: int) -> str:
        return self.dataset.filename(index)


def _decode(ds: ImageListDataset, indices: Sequence[int], img_size: int,
            interpolation: str) -> Tuple[np.ndarray, np.ndarray]:
    """The library's decoder (clear errors for unreadable files), at ``img_size``, as (N, H, W, 3) arrays."""
    size = (img_size, img_size)
    images, labels = decode_images(_Resized(ds, size, interpolation), indices, size=size)
    return images.permute(0, 2, 3, 1).numpy(), labels.numpy()


def normalization(model_name: str, cifar: bool) -> Dict[str, Any]:
    """Mean, std and resize interpolation of the inputs: the model's data config (its default pretrained cfg; timm's
    ImageNet defaults without one), except that the CIFAR-10 archive keeps the CIFAR-10 statistics whatever the
    model. ``resnet32_camc_lt``'s default cfg is that CIFAR-10 one."""
    source = CIFAR10_CFG if cifar else model_name
    cfg = timm.get_pretrained_cfg(source)
    data_cfg = resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg is not None else None)
    return dict(mean=list(data_cfg['mean']), std=list(data_cfg['std']), interpolation=data_cfg['interpolation'],
                source=f'{source} pretrained cfg' if cfg is not None else 'timm defaults')


def prepare_data(
        data_dir: Optional[str], data_tar: str, work_dir: Path, train_per_class_max: int, imbalance: float,
        lt_seed: int, test_per_class: int, img_size: int = IMG_SIZE, interpolation: str = 'bilinear',
) -> Dict[str, Any]:
    """Decoded uint8 arrays of the training subset and the test images, cached as .npy under ``work_dir``.

    Args:
        data_dir: A tree ``train/<class>/*``, ``test/<class>/*`` (any classes, any image size); empty: the archive.
        data_tar: The CIFAR-10 JPEG archive (default: ``find_archive``), when there is no ``data_dir``.
        work_dir: Extraction and cache folder.
        train_per_class_max: Images of the largest class (at most what the data has).
        imbalance: Imbalance factor n_max / n_min of the exponential profile.
        lt_seed: Seed of the per-class shuffle.
        test_per_class: Test images per class (the first ones).
        img_size: Height and width the images are decoded at (resized with ``interpolation`` where they differ).
        interpolation: PIL interpolation name.

    Returns:
        The metadata the workers load the arrays from (paths, class counts, names, what was selected).
    """
    start = time.time()
    archive_sha256 = None
    if data_dir:
        root = Path(data_dir)
        source = str(root.resolve())
        dataset = root.resolve().name
    else:
        archive = find_archive(data_tar)
        archive_sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
        if archive_sha256 != ARCHIVE_SHA256:
            _logger.warning(f'{archive} is not the expected CIFAR-10 JPEG archive (sha256 {archive_sha256})')
        root = extract_archive(archive, work_dir / 'cifar10-jpeg')
        source = str(archive.resolve())
        dataset = ARCHIVE_NAME
    sel = select_samples(root, train_per_class_max, imbalance, lt_seed, test_per_class)
    train_ds, test_ds = sel['train_ds'], sel['test_ds']
    key_src = json.dumps(dict(
        root=str(root.resolve()), train=[train_ds.samples[i] for i in sel['train_idx']],
        test=[test_ds.samples[i] for i in sel['test_idx']], size=img_size, interpolation=interpolation))
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    cache = work_dir / 'cache' / key
    paths = {name: str(cache / f'{name}.npy') for name in ('train_x', 'train_y', 'test_x', 'test_y')}
    if not all(Path(p).is_file() for p in paths.values()):
        partial = cache.with_name(key + '.partial')
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for split, ds, idx in (('train', train_ds, sel['train_idx']), ('test', test_ds, sel['test_idx'])):
            images, labels = _decode(ds, idx, img_size, interpolation)
            np.save(partial / f'{split}_x.npy', images)
            np.save(partial / f'{split}_y.npy', labels)
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(partial, cache)
        _logger.info(f'Decoded {len(sel["train_idx"])} training and {len(sel["test_idx"])} test images into {cache}')
    counts = sel['counts']
    meta = dict(
        paths=paths, source=source, dataset=dataset, archive_sha256=archive_sha256, class_names=sel['class_names'],
        num_classes=sel['num_classes'], img_size=img_size,
        class_counts=[int(c) for c in counts], train_size=int(sum(counts)), test_size=len(sel['test_idx']),
        train_per_class_max=sel['n_max'], imbalance=sel['imbalance'], lt_seed=lt_seed,
        test_per_class=test_per_class, prepare_s=round(time.time() - start, 2))
    _logger.info(f'Data ready in {meta["prepare_s"]}s: {meta["train_size"]} training images {counts}, '
                 f'{meta["test_size"]} test images')
    return meta
