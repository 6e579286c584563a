""" In-memory loaders: decoded uint8 images held on the device, augmented a batch at a time with tensor ops

Small-image datasets (CIFAR-sized long-tailed sets) are bound by the loader, not by the network: PIL decoding and
per-image transforms cannot feed a ResNet-32 on a GPU, and on a 2-core CPU the loader workers take cores from the
training step. Decoded once, the whole training set fits in memory (CIFAR-10-LT: 12,406 x 3 x 40 x 40 bytes, 60 MB
padded), and the CIFAR recipe's augmentation (pad 4, random 32 x 32 crop, horizontal flip) is one gather per batch.

Seeding: the crops and flips of an epoch come from a generator seeded with ``augment_seed(seed, epoch, rank)`` and
are drawn batch by batch in sampling order, so an epoch's inputs depend only on (seed, epoch, rank) and the sampler's
order, never on how many epochs this process has run before (a resumed run replays the interrupted epoch exactly).

The same functions build the epoch buffers of the CIFAR-10-LT ablation (``benchmarks/ablation.py``).

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import logging
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.data

from timm.data.transforms import ToNumpy

__all__ = [
    'InMemoryEvalLoader', 'InMemoryTrainLoader', 'augment_batches', 'augment_epoch', 'augment_seed', 'crop_flip',
    'decode_images', 'in_memory_blockers', 'normalize', 'random_crop_flip_params', 'PAD_CROP_PADDING',
]

_logger = logging.getLogger(__name__)

PAD_CROP_PADDING = 4  # the CIFAR recipe's zero padding before the random crop, for both training paths


def augment_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Seed of the crop / flip generator of one (seed, epoch, rank); 32 bits, all that torch's CPU generator uses."""
    return (seed * 1_000_003 + epoch + rank * 100_003) % 2 ** 32


def decode_images(
        dataset: torch.utils.data.Dataset,
        indices: Optional[Sequence[int]] = None,
        size: Optional[Tuple[int, int]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Decode images of ``dataset`` (``dataset[i]`` -> (PIL image, label)) into one uint8 tensor.

    The dataset's own loader is used (so a missing or corrupt file raises its error naming the file), with its
    ``transform`` switched off for the duration.

    Args:
        dataset: A dataset with a settable ``transform`` (``ImageListDataset``, ``LongTailSubset``, timm's datasets).
        indices: Samples to decode, in this order (default: all).
        size: Required (height, width); default that of the first image.

    Returns:
        Images (N, 3, H, W) uint8 and labels (N,) int64, on the CPU.

    Raises:
        ValueError: An image of another size (the in-memory path needs one size; the message names the file).
    """
    indices = range(len(dataset)) if indices is None else indices
    transform = dataset.transform
    dataset.transform = ToNumpy()  # PIL -> uint8 CHW array
    try:
        images, labels = None, torch.empty(len(indices), dtype=torch.int64)
        for j, i in enumerate(indices):
            img, label = dataset[i]
            if images is None:
                shape = img.shape if size is None else (3, *size)
                images = torch.empty((len(indices), *shape), dtype=torch.uint8)
            if img.shape != images.shape[1:]:
                name = getattr(dataset, 'filename', lambda _: f'sample {i}')(i) or f'sample {i}'
                raise ValueError(
                    f'{name} is {img.shape[2]}x{img.shape[1]}, but the in-memory loader needs every image at '
                    f'{images.shape[3]}x{images.shape[2]}: use --in-memory off (the PIL loader resizes)')
            images[j] = torch.from_numpy(img)
            labels[j] = int(label)
    finally:
        dataset.transform = transform
    if images is None:
        raise ValueError('No images to decode')
    return images, labels


def crop_flip(
        padded: torch.Tensor,
        top: torch.Tensor,
        left: torch.Tensor,
        flip: torch.Tensor,
        size: int,
) -> torch.Tensor:
    """Batched crop of ``size`` x ``size`` windows at (``top``, ``left``) of padded images, mirrored where ``flip``.

    The same as torchvision's ``RandomCrop(size, padding)`` (crop of the padded image at offset ``(top, left)``)
    followed by ``RandomHorizontalFlip`` when ``flip``, for a whole batch in one gather.

    Args:
        padded: Images (N, C, H + 2p, W + 2p), any dtype.
        top: Row offsets (N,), int64 in [0, 2p].
        left: Column offsets (N,), int64 in [0, 2p].
        flip: Horizontal flip flags (N,), bool.
        size: Output height and width.

    Returns:
        (N, C, size, size) tensor of ``padded``'s dtype.
    """
    n, c, height, width = padded.shape
    steps = torch.arange(size, device=padded.device)
    rows = top[:, None] + steps  # N x size
    cols = torch.where(flip[:, None], left[:, None] + (size - 1) - steps, left[:, None] + steps)
    index = (rows[:, :, None] * width + cols[:, None, :]).reshape(n, 1, size * size).expand(n, c, size * size)
    return padded.reshape(n, c, height * width).gather(2, index).reshape(n, c, size, size)


def random_crop_flip_params(
        n: int,
        pad: int,
        generator: torch.Generator,
        device: torch.device,
        hflip: float = 0.5,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Uniform crop offsets in [0, 2 * pad] and flips with probability ``hflip`` for ``n`` images (``generator``)."""
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < hflip
    return top, left, flip


def normalize(
        images_u8: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> ``(x / 255 - mean) / std`` in ``dtype`` (mean, std broadcastable to (1, 3, 1, 1))."""
    x = ((images_u8.float() / 255. - mean) / std).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def augment_batches(
        padded: torch.Tensor,
        labels: torch.Tensor,
        order: torch.Tensor,
        generator: torch.Generator,
        mean: torch.Tensor,
        std: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        pad: int = 4,
        chunk: int = 128,
        hflip: float = 0.5,
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Training inputs of ``order``, ``chunk`` images at a time: randomly cropped and flipped, normalised.

    Args:
        padded: The training images, uint8 (N, 3, H + 2 pad, W + 2 pad), zero-padded (torchvision's fill).
        labels: Their labels (N,).
        order: Dataset indices, in sampling order.
        generator: Generator of the crop offsets and flips; each chunk draws its offsets before the next one.
        mean, std: Normalisation, broadcastable to (1, 3, 1, 1).
        dtype: Dtype of the images.
        channels_last: Yield channels-last images.
        pad: Padding already applied to ``padded``.
        chunk: Images per yielded batch.
        hflip: Horizontal flip probability.

    Yields:
        Images (<= chunk, 3, H, W) and their labels.
    """
    size = padded.shape[-1] - 2 * pad
    for start in range(0, len(order), chunk):
        idx = order[start:start + chunk]
        top, left, flip = random_crop_flip_params(len(idx), pad, generator, padded.device, hflip)
        x = crop_flip(padded[idx], top, left, flip, size)
        yield normalize(x, mean, std, dtype, channels_last), labels[idx]


def augment_epoch(
        padded: torch.Tensor,
        labels: torch.Tensor,
        order: torch.Tensor,
        generator: torch.Generator,
        mean: torch.Tensor,
        std: torch.Tensor,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        pad: int = 4,
        chunk: int = 4096,
        hflip: float = 0.5,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One epoch of ``augment_batches`` in one buffer (the ablation's static-address epoch inputs).

    Returns:
        Images (len(order), 3, H, W) in ``dtype`` and labels (len(order),).
    """
    size = padded.shape[-1] - 2 * pad
    out = torch.empty((len(order), padded.shape[1], size, size), dtype=dtype, device=padded.device)
    if channels_last:
        out = out.contiguous(memory_format=torch.channels_last)
    start = 0
    for x, _ in augment_batches(padded, labels, order, generator, mean, std, dtype, channels_last, pad, chunk, hflip):
        out[start:start + len(x)] = x
        start += len(x)
    return out, labels[order]


def _stats(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


class InMemoryTrainLoader:
    """Training batches from decoded images on ``device``, in the order of a (long-tail) sampler.

    A drop-in for the training loader of ``create_train_loader``: iterating yields ``(input, target)`` on
    ``device``, normalised float32 (channels-last if asked), ``len()`` batches per epoch (the last incomplete batch
    is dropped, as there). Call ``set_epoch(epoch)`` before each epoch; it also sets the sampler's epoch.

    Args:
        images: Decoded images (N, 3, H, W) uint8 (``decode_images``), at the training size.
        labels: Labels (N,).
        sampler: A ``LongTailSampler`` (or any sampler with ``set_epoch``) over the N images, this rank's share.
        batch_size: Batch size per process.
        device: Where the images live and the batches are built.
        mean: Normalisation mean (0-1 scale, per channel).
        std: Normalisation std.
        padding: Zero padding before the random crop (the CIFAR recipe's 4).
        hflip: Horizontal flip probability.
        seed: Run seed; with the epoch and ``rank`` it seeds the augmentation.
        rank: Distributed rank.
        channels_last: Yield channels-last batches.
    """

    def __init__(
            self,
            images: torch.Tensor,
            labels: torch.Tensor,
            sampler: torch.utils.data.Sampler,
            batch_size: int,
            device: torch.device = torch.device('cpu'),
            mean: Sequence[float] = (0.485, 0.456, 0.406),
            std: Sequence[float] = (0.229, 0.224, 0.225),
            padding: int = PAD_CROP_PADDING,
            hflip: float = 0.5,
            seed: int = 0,
            rank: int = 0,
            channels_last: bool = False,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f'images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}')
        if len(labels) != len(images):
            raise ValueError(f'{len(images)} images but {len(labels)} labels')
        self.device = torch.device(device)
        self.padded = F.pad(images, (padding,) * 4).to(self.device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.sampler = sampler
        self.batch_size = batch_size
        self.mean, self.std = _stats(mean, self.device), _stats(std, self.device)
        self.padding, self.hflip = padding, hflip
        self.seed, self.rank = seed, rank
        self.channels_last = channels_last
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(f'Batch size {batch_size} is larger than the {len(sampler)} samples per epoch (and rank)')

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.int64)[:len(self) * self.batch_size]
        generator = torch.Generator(device=self.device)
        generator.manual_seed(augment_seed(self.seed, self.epoch, self.rank))
        return augment_batches(
            self.padded, self.labels, order.to(self.device), generator, self.mean, self.std,
            channels_last=self.channels_last, pad=self.padding, chunk=self.batch_size, hflip=self.hflip)


class InMemoryEvalLoader:
    """Evaluation batches from decoded images on ``device``, in dataset order, normalised (no resize or crop).

    Equivalent to timm's evaluation transform when the images already have the input size and ``crop_pct`` is 1.
    """

    def __init__(
            self,
            images: torch.Tensor,
            labels: torch.Tensor,
            batch_size: int,
            device: torch.device = torch.device('cpu'),
            mean: Sequence[float] = (0.485, 0.456, 0.406),
            std: Sequence[float] = (0.229, 0.224, 0.225),
            channels_last: bool = False,
    ):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.batch_size = batch_size
        self.mean, self.std = _stats(mean, self.device), _stats(std, self.device)
        self.channels_last = channels_last

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.images), self.batch_size):
            x = self.images[start:start + self.batch_size]
            yield normalize(x, self.mean, self.std, channels_last=self.channels_last), \
                self.labels[start:start + self.batch_size]


def in_memory_blockers(
        train_crop_mode: str = 'pad',
        color_jitter: float = 0.,
        auto_augment: Optional[str] = None,
        re_prob: float = 0.,
        num_images: int = 0,
        input_size: Tuple[int, int, int] = (3, 32, 32),
        max_bytes: float = float('inf'),
) -> List[str]:
    """Why a training recipe cannot run on the in-memory loader (an empty list: it can).

    The in-memory loader implements the CIFAR recipe only (pad, random crop, horizontal flip); other transforms
    need the PIL loader.
    """
    blockers = []
    if train_crop_mode != 'pad':
        blockers.append(f"--train-crop-mode {train_crop_mode} (only 'pad' runs in memory)")
    if color_jitter:
        blockers.append('--color-jitter')
    if auto_augment:
        blockers.append('--aa')
    if re_prob:
        blockers.append('--reprob')
    size = num_images * input_size[0] * input_size[1] * input_size[2]
    if size > max_bytes:
        blockers.append(f'{num_images} images need {size / 2 ** 30:.1f} GiB, over the {max_bytes / 2 ** 30:g} GiB '
                        f'budget (--in-memory-max-gb)')
    return blockers
