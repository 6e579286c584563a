""" Training loader with a long-tail sampler, on timm's transforms, collate and prefetcher

timm's ``create_loader`` picks its own sampler; training with a class-balanced (or any other) sampler needs the
same pieces put together around a given sampler. Evaluation loaders come from timm's ``create_loader`` unchanged.

Random augmentation is seeded per sample: the sampler's indices travel to the workers with a seed made of (run seed,
epoch, rank, position in the epoch), and the worker seeds Python's, NumPy's and torch's generators with it before
loading the sample. An epoch's augmentation then depends only on (seed, epoch, sample), whatever the worker count,
worker persistence or the epoch a run was resumed at.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import hashlib
import random
from functools import partial
from typing import Callable, Optional, Tuple

import numpy as np
import torch
import torch.utils.data
from torchvision import transforms

from timm.data import create_transform
from timm.data.loader import PrefetchLoader, _worker_init, fast_collate
from timm.data.transforms import MaybeToTensor, ToNumpy

from .dataset import DatasetView
from .in_memory import PAD_CROP_PADDING, augment_seed

__all__ = [
    'SeededDataset', 'SeededSampler', 'check_pad_crop', 'create_train_loader', 'create_train_transform',
    'TRAIN_CROP_MODES',
]

TRAIN_CROP_MODES = ('pad', 'rrc', 'rkrc')


def check_pad_crop(dataset: torch.utils.data.Dataset, input_size: Tuple[int, int, int],
                   padding: int = PAD_CROP_PADDING) -> None:
    """Raise a ValueError naming the fix when the 'pad' recipe cannot crop ``input_size`` from the dataset's images.

    The recipe crops the input size from the images padded by ``padding``: images far smaller than the model's input
    (a timm model's 224 px default on 32 px CIFAR images) would otherwise fail inside a loader worker. The first
    image stands for all of them; call it before a transform is set, so it is the image as read.
    """
    image = dataset[0][0]
    if not hasattr(image, 'size'):
        return
    width, height = image.size
    if height + 2 * padding < input_size[1] or width + 2 * padding < input_size[2]:
        raise ValueError(
            f'--train-crop-mode pad crops {input_size[2]}x{input_size[1]} (the model\'s input size) from the training '
            f'images, {width}x{height} padded by {padding}: pass --img-size {max(width, height)}, or --train-crop-mode '
            f'rrc for images larger than the input')


def create_train_transform(
        input_size: Tuple[int, int, int],
        train_crop_mode: str = 'rrc',
        use_prefetcher: bool = True,
        mean: Tuple[float, ...] = (0.485, 0.456, 0.406),
        std: Tuple[float, ...] = (0.229, 0.224, 0.225),
        hflip: float = 0.5,
        padding: int = PAD_CROP_PADDING,
        **kwargs,
) -> Callable:
    """Training transform: timm's ``create_transform``, plus the CIFAR recipe ('pad': pad by ``padding`` pixels,
    random crop back to size, horizontal flip) that timm does not offer.

    Args:
        input_size: (C, H, W).
        train_crop_mode: 'pad' (CIFAR), or timm's 'rrc' (random resized crop) / 'rkrc'.
        use_prefetcher: Leave normalisation to timm's ``PrefetchLoader`` (uint8 arrays out).
        mean: Normalisation mean (without the prefetcher).
        std: Normalisation std (without the prefetcher).
        hflip: Horizontal flip probability.
        padding: Padding of the 'pad' mode.
        **kwargs: timm ``create_transform`` arguments for the other modes (color_jitter, auto_augment, re_prob, ...).
    """
    if train_crop_mode not in TRAIN_CROP_MODES:
        raise ValueError(f'Unknown train crop mode {train_crop_mode!r}, expected one of {TRAIN_CROP_MODES}')
    if train_crop_mode != 'pad':
        return create_transform(
            input_size, is_training=True, use_prefetcher=use_prefetcher, mean=mean, std=std, hflip=hflip,
            train_crop_mode=train_crop_mode, **kwargs)
    steps = [transforms.RandomCrop(input_size[-2:], padding=padding), transforms.RandomHorizontalFlip(hflip)]
    if use_prefetcher:
        steps.append(ToNumpy())
    else:
        steps += [MaybeToTensor(), transforms.Normalize(torch.tensor(mean), torch.tensor(std))]
    return transforms.Compose(steps)


def _sample_seed(epoch_seed: bytes, position: int) -> int:
    """A 32-bit seed per position (torch's CPU generator and NumPy's global one use 32 bits), well mixed so that
    nearby positions and epochs get unrelated streams."""
    digest = hashlib.blake2b(position.to_bytes(8, 'little'), digest_size=4, key=epoch_seed).digest()
    return int.from_bytes(digest, 'little')


class SeededSampler(torch.utils.data.Sampler):
    """Yields ``(index, seed)``: the wrapped sampler's indices with a seed per position of the epoch.

    The epoch is the wrapped sampler's (``set_epoch`` on it, as usual).
    """

    def __init__(self, sampler: torch.utils.data.Sampler, seed: int = 0, rank: int = 0):
        if not hasattr(sampler, 'epoch'):
            raise TypeError(f'{type(sampler).__name__} has no epoch (set_epoch): per-epoch augmentation seeds need one')
        self.sampler, self.seed, self.rank = sampler, seed, rank

    def __iter__(self):
        base = augment_seed(self.seed, self.sampler.epoch, self.rank).to_bytes(4, 'little')
        return ((index, _sample_seed(base, position)) for position, index in enumerate(self.sampler))

    def __len__(self) -> int:
        return len(self.sampler)


class SeededDataset(DatasetView):
    """Loads ``dataset[index]`` for a ``(index, seed)`` key after seeding the random generators that transforms use
    (Python's ``random``, NumPy's global generator and torch's default CPU generator) with ``seed``."""

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]):
        index, seed = key
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        return self.dataset[index]


def create_train_loader(
        dataset: torch.utils.data.Dataset,
        sampler: torch.utils.data.Sampler,
        batch_size: int,
        transform: Callable,
        num_workers: int = 2,
        use_prefetcher: bool = True,
        device: torch.device = torch.device('cpu'),
        mean: Tuple[float, ...] = (0.485, 0.456, 0.406),
        std: Tuple[float, ...] = (0.229, 0.224, 0.225),
        channels: int = 3,
        img_dtype: torch.dtype = torch.float32,
        re_prob: float = 0.,
        re_mode: str = 'pixel',
        re_count: int = 1,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        collate_fn: Optional[Callable] = None,
        seed: int = 0,
        rank: int = 0,
):
    """A training loader drawing batches from ``sampler`` (drop_last, so every DDP rank gets the same batch size).

    The augmentation of each sample is seeded from (``seed``, the sampler's epoch, ``rank``, its position in the
    epoch); call ``sampler.set_epoch(epoch)`` before each epoch. With the prefetcher, normalisation (and random
    erasing) run on ``device`` in timm's ``PrefetchLoader``, whose random erasing draws from ``device``'s generator.
    """
    dataset.transform = transform
    loader = torch.utils.data.DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=SeededSampler(sampler, seed, rank),
        num_workers=num_workers,
        collate_fn=collate_fn or (fast_collate if use_prefetcher else torch.utils.data.dataloader.default_collate),
        pin_memory=pin_memory,
        drop_last=True,
        worker_init_fn=partial(_worker_init, worker_seeding='all'),
        persistent_workers=persistent_workers and num_workers > 0,
    )
    if len(loader) == 0:
        raise ValueError(f'Batch size {batch_size} is larger than the {len(sampler)} samples per epoch (and rank)')
    if use_prefetcher:
        loader = PrefetchLoader(
            loader, mean=mean, std=std, channels=channels, device=device, img_dtype=img_dtype,
            re_prob=re_prob, re_mode=re_mode, re_count=re_count,
        )
    return loader
