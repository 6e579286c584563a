"""The in-memory loader (decoded images, batched tensor augmentation) against the PIL path, and seeded augmentation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from timm_camc.data import ImageListDataset, InMemoryEvalLoader, InMemoryTrainLoader, create_sampler, \
    create_train_loader, create_train_transform, decode_images
from timm_camc.data.in_memory import augment_batches, augment_epoch, crop_flip, in_memory_blockers, normalize, \
    random_crop_flip_params

ZERO, ONE = (0., 0., 0.), (1., 1., 1.)


def _coordinate_image() -> np.ndarray:
    """32 x 32 RGB whose red channel encodes the column (4 + 8 x), green the row (4 + 8 y); blue is 255."""
    x = np.arange(32)
    image = np.empty((32, 32, 3), dtype=np.uint8)
    image[..., 0] = 4 + 8 * x[None, :]
    image[..., 1] = 4 + 8 * x[:, None]
    image[..., 2] = 255
    return image


def _decode_params(crops: torch.Tensor):
    """Crop offsets and flips back from crops (N, 3, 32, 32) uint8 of the coordinate image padded by 4."""
    crops = crops.long()
    top = (crops[:, 1, 16, 16] - 4) // 8 - 12
    flip = crops[:, 0, 16, 17] < crops[:, 0, 16, 16]
    left = (crops[:, 0, 16, 16] - 4) // 8 - 12 + flip.long()
    return top, left, flip


def _histogram(values: torch.Tensor) -> torch.Tensor:
    return torch.bincount(values, minlength=9).double() / len(values)


@pytest.mark.parametrize('top,left,flip', [(0, 0, False), (8, 8, False), (3, 6, False), (4, 4, True), (7, 1, True)])
def test_crop_flip_matches_torchvision(top, left, flip, monkeypatch):
    transforms = pytest.importorskip('torchvision.transforms')
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    monkeypatch.setattr(transforms.RandomCrop, 'get_params', staticmethod(lambda img, size: (top, left, 32, 32)))
    reference = transforms.Compose([transforms.RandomCrop(32, padding=4),
                                    transforms.RandomHorizontalFlip(p=1. if flip else 0.)])
    padded = F.pad(images, (4, 4, 4, 4))
    n = len(images)
    ours = crop_flip(padded, torch.full((n,), top), torch.full((n,), left), torch.full((n,), flip), 32)
    for img, out in zip(images, ours):
        assert torch.equal(out, reference(img))


def test_crop_params_in_bounds_and_centre_crop_is_identity():
    top, left, flip = random_crop_flip_params(20000, 4, torch.Generator().manual_seed(0), torch.device('cpu'))
    for offsets in (top, left):
        assert offsets.min() == 0 and offsets.max() == 8 and len(torch.unique(offsets)) == 9
    assert 0.45 < flip.float().mean() < 0.55
    _, _, never = random_crop_flip_params(1000, 4, torch.Generator().manual_seed(0), torch.device('cpu'), hflip=0.)
    assert not never.any()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    padded = F.pad(images, (4, 4, 4, 4))
    four = torch.full((4,), 4)
    assert torch.equal(crop_flip(padded, four, four, torch.zeros(4, dtype=torch.bool), 32), images)
    assert torch.equal(crop_flip(padded, four, four, torch.ones(4, dtype=torch.bool), 32), images.flip(-1))


def test_augment_epoch_is_seeded_and_normalised():
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    padded = F.pad(images, (4, 4, 4, 4))
    labels = torch.arange(10)
    order = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    runs = [augment_epoch(padded, labels, order, torch.Generator().manual_seed(7), mean, std, torch.float32,
                          channels_last=True, chunk=3) for _ in range(2)]
    (x, y), (x2, _) = runs
    assert torch.equal(x, x2) and torch.equal(y, labels[order])
    assert x.shape == (8, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert -2. - 1e-6 <= x.min() and x.max() <= 2. + 1e-6  # (0 - 0.5) / 0.25 and (1 - 0.5) / 0.25
    top, left, flip = random_crop_flip_params(3, 4, torch.Generator().manual_seed(7), torch.device('cpu'))
    expected = normalize(crop_flip(padded[order[:3]], top, left, flip, 32), mean, std)
    assert torch.allclose(x[:3], expected)  # the first chunk of 3 draws its offsets first
    batches = list(augment_batches(padded, labels, order, torch.Generator().manual_seed(7), mean, std, chunk=3))
    assert torch.equal(torch.cat([b for b, _ in batches]), x.contiguous())  # the buffer is the batches, in order


def test_same_augmentation_distribution_as_the_pil_path():
    """Crop offsets and flip rate of the in-memory path and of the PIL 'pad' transform, recovered from the pixels."""
    n = 4000
    image = _coordinate_image()
    transform = create_train_transform((3, 32, 32), train_crop_mode='pad', use_prefetcher=True)
    torch.manual_seed(0)
    pil = Image.fromarray(image)
    pil_crops = torch.stack([torch.from_numpy(transform(pil)) for _ in range(n)])
    padded = F.pad(torch.from_numpy(image).permute(2, 0, 1)[None], (4, 4, 4, 4))
    batches = augment_batches(padded, torch.zeros(1, dtype=torch.long), torch.zeros(n, dtype=torch.long),
                              torch.Generator().manual_seed(0), torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1),
                              chunk=512)
    ours = torch.cat([(x * 255).round().to(torch.uint8) for x, _ in batches])
    for crops in (pil_crops, ours):
        assert crops[:, 2].float().mean() > 200  # blue 255 except the padding: decoding sees real crops
    (pt, pl, pf), (ot, ol, of) = _decode_params(pil_crops), _decode_params(ours)
    for pil_offsets, our_offsets in ((pt, ot), (pl, ol)):
        for hist in (_histogram(pil_offsets), _histogram(our_offsets)):
            assert (hist - 1 / 9).abs().max() < 0.025, hist  # 9 offsets, uniform (5 sd at n = 4000)
        assert (_histogram(pil_offsets) - _histogram(our_offsets)).abs().max() < 0.035
    for rate in (pf.double().mean(), of.double().mean()):
        assert abs(rate - 0.5) < 0.04
    # the recovered parameters reproduce the crops exactly
    assert torch.equal(crop_flip(padded.expand(16, -1, -1, -1), ot[:16], ol[:16], of[:16], 32), ours[:16])


def _ids(n: int) -> torch.Tensor:
    """Images whose pixels all equal their index (to follow them through the loader): uint8 (n, 3, 32, 32)."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()


def _epoch(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_in_memory_loader_follows_the_sampler_and_is_seeded_by_epoch():
    targets = [0] * 40 + [1] * 10 + [2] * 5
    images = _ids(len(targets))
    sampler = create_sampler('class_balanced', targets, seed=3)
    loader = InMemoryTrainLoader(images, torch.tensor(targets), sampler, 8, mean=ZERO, std=ONE, seed=3)
    assert len(loader) == len(targets) // 8
    history = [_epoch(loader, e) for e in range(3)]
    sampler.set_epoch(2)
    order = torch.tensor(list(sampler))[:len(loader) * 8]
    x = torch.cat([b for b, _ in history[2]])
    centre = (x[:, 0, 16, 16] * 255).round().long()  # the centre pixel survives every crop
    assert torch.equal(centre, order) and torch.equal(torch.cat([y for _, y in history[2]]), torch.tensor(targets)[order])
    # an epoch depends on (seed, epoch) only: a fresh loader (a resumed run) replays epoch 2 exactly
    fresh = InMemoryTrainLoader(images, torch.tensor(targets), create_sampler('class_balanced', targets, seed=3), 8,
                                mean=ZERO, std=ONE, seed=3)
    replay = _epoch(fresh, 2)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(history[2], replay))
    assert not torch.equal(torch.cat([b for b, _ in history[1]]), x)
    other_rank = InMemoryTrainLoader(images, torch.tensor(targets), create_sampler('class_balanced', targets, seed=3),
                                     8, mean=ZERO, std=ONE, seed=3, rank=1)
    assert not torch.equal(torch.cat([b for b, _ in _epoch(other_rank, 2)]), x)


def test_in_memory_eval_loader_is_timm_eval_at_crop_pct_1():
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    loader = InMemoryEvalLoader(images, torch.arange(10), 4, mean=mean, std=std, channels_last=True)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b for b, _ in batches])
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-6) and batches[0][0].is_contiguous(memory_format=torch.channels_last)


def test_decode_images_and_blockers(tmp_path):
    for i, size in enumerate((32, 32, 40)):
        folder = tmp_path / 'train' / f'c{i}'
        folder.mkdir(parents=True)
        Image.fromarray(np.full((size, size, 3), i * 50, dtype=np.uint8)).save(folder / 'a.png')
    ds = ImageListDataset.from_folder(str(tmp_path / 'train'))
    images, labels = decode_images(ds, [1, 0])
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8 and labels.tolist() == [1, 0]
    assert int(images[0, 0, 0, 0]) == 50 and ds.transform is None
    with pytest.raises(ValueError, match=r'c2/a.png is 40x40, but the in-memory loader needs every image at 32x32'):
        decode_images(ds)
    assert ds.transform is None  # restored after the error
    assert in_memory_blockers('pad') == []
    blockers = in_memory_blockers('rrc', color_jitter=0.4, num_images=10 ** 6, input_size=(3, 224, 224),
                                  max_bytes=2 ** 30)
    assert len(blockers) == 3 and 'rrc' in blockers[0] and '140.2 GiB' in blockers[2]


@pytest.mark.parametrize('workers', [0, 2])
def test_pil_loader_augmentation_depends_only_on_seed_epoch_sample(tmp_path, workers):
    """Persistent workers, any worker count, any resume point: the same crops for (seed, epoch, position)."""
    for c in range(3):
        folder = tmp_path / 'train' / f'c{c}'
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(_coordinate_image()).save(folder / f'{i}.png')
    ds = ImageListDataset.from_folder(str(tmp_path / 'train'))

    def loader(num_workers):
        sampler = create_sampler('instance', ds.targets, seed=5)
        transform = create_train_transform((3, 32, 32), train_crop_mode='pad', use_prefetcher=True)
        return sampler, create_train_loader(ds, sampler, 6, transform, num_workers=num_workers, use_prefetcher=True,
                                            mean=ZERO, std=ONE, seed=5)

    def epoch(sampler, loader, e):
        sampler.set_epoch(e)
        return torch.cat([x for x, _ in loader])

    sampler, run = loader(workers)
    straight = [epoch(sampler, run, e) for e in range(3)]
    sampler, resumed = loader(workers)  # a new process: fresh (persistent) workers, started at epoch 2
    assert torch.equal(epoch(sampler, resumed, 2), straight[2])
    sampler, single = loader(0)
    assert torch.equal(epoch(sampler, single, 1), straight[1])  # the worker count does not matter
    assert not torch.equal(straight[1], straight[2])
    top, left, flip = _decode_params((straight[1] * 255).round().to(torch.uint8))
    assert len(torch.unique(top * 9 + left)) > 8  # real random crops, not a constant
