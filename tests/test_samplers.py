"""Long-tail samplers: class statistics over many epochs, determinism, sharding across ranks, class-aware cycles,
use under timm's DataLoader / fast_collate / PrefetchLoader / Mixup, and input validation."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from timm.data import FastCollateMixup, Mixup
from timm.data.loader import PrefetchLoader, fast_collate
from timm.data.transforms import ToNumpy

import timm_camc.data.samplers as samplers_module
from timm_camc.data import (
    SAMPLER_NAMES,
    ClassAwareSampler,
    ClassPowerSampler,
    InstanceBalancedSampler,
    LongTailSampler,
    ProgressiveSampler,
    RepeatFactorSampler,
    class_counts,
    create_sampler,
)

CIFAR10_LT = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
COUNTS = [c // 10 for c in CIFAR10_LT]  # CIFAR-10-LT (imbalance 100) scaled down 10x: 500 .. 5, N = 1236
K, N = len(COUNTS), sum(COUNTS)
EPOCHS = 200
THRESHOLD = 0.05  # repeat factors from 1 (head) to sqrt(0.05 / (5 / 1236)) ~ 3.5 (tail)

# every sampler, with the options it needs
KWARGS = {
    'instance': {},
    'class_balanced': {},
    'sqrt': {},
    'power': dict(power=1.5),
    'progressive': dict(total_epochs=10),
    'class_aware': dict(samples_per_class=2),
    'repeat_factor': dict(threshold=THRESHOLD),
}


def _targets(counts=COUNTS, seed=0):
    """Shuffled labels with the given class counts, as a dataset lists them."""
    targets = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(targets)
    return targets


def _expected_probs(name, counts=COUNTS, epoch=0):
    """The intended p_j, written out independently of the module."""
    n = np.asarray(counts, dtype=np.float64)
    present = (n > 0).astype(np.float64)
    if name == 'instance':
        p = n
    elif name in ('class_balanced', 'class_aware'):
        p = present
    elif name == 'sqrt':
        p = np.sqrt(n)
    elif name == 'power':
        p = n ** KWARGS['power']['power']
    elif name == 'progressive':
        t = min(max(epoch, 0), KWARGS['progressive']['total_epochs']) / KWARGS['progressive']['total_epochs']
        p = (1 - t) * n / n.sum() + t * present / present.sum()
    elif name == 'repeat_factor':
        freq = n / n.sum()
        p = n * np.maximum(1., np.sqrt(THRESHOLD / np.where(n > 0, freq, 1.)))
    else:
        raise AssertionError(name)
    return torch.from_numpy(p / p.sum())


def _class_frequencies(sampler, epochs):
    hist = sum(
        torch.bincount(sampler.targets[sampler.global_indices(e)], minlength=sampler.num_classes) for e in epochs)
    return hist.double() / hist.sum(), int(hist.sum())


def _assert_close_to(freq, probs, num_draws):
    """Every class within 5 binomial standard deviations (plus a little) of its intended probability."""
    tol = 5 * torch.sqrt(probs * (1 - probs) / num_draws) + 2e-4
    err = (freq - probs).abs()
    assert bool((err <= tol).all()), f'frequencies {freq.tolist()}\nexpected {probs.tolist()}\nerror {err.tolist()}'


# --- statistics ---

@pytest.mark.parametrize('name', [n for n in SAMPLER_NAMES if n != 'progressive'])
def test_class_frequencies_over_epochs(name):
    sampler = create_sampler(name, _targets(), **KWARGS[name])
    expected = _expected_probs(name)
    torch.testing.assert_close(sampler.class_probs(), expected, rtol=1e-12, atol=1e-12)
    freq, num_draws = _class_frequencies(sampler, range(EPOCHS))
    _assert_close_to(freq, expected, num_draws)


@pytest.mark.parametrize('epoch', [0, 3, 5, 10, 25])
def test_progressive_class_frequencies(epoch):
    sampler = create_sampler('progressive', _targets(), num_samples=100_000, **KWARGS['progressive'])
    expected = _expected_probs('progressive', epoch=epoch)
    sampler.set_epoch(epoch)
    torch.testing.assert_close(sampler.class_probs(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sampler.class_probs(epoch), expected, rtol=1e-12, atol=1e-12)
    freq, num_draws = _class_frequencies(sampler, [epoch])
    _assert_close_to(freq, expected, num_draws)


def test_progressive_moves_from_instance_to_class_balanced():
    sampler = ProgressiveSampler(_targets(), total_epochs=4)
    torch.testing.assert_close(sampler.class_probs(0), _expected_probs('instance'))
    torch.testing.assert_close(sampler.class_probs(4), _expected_probs('class_balanced'))
    torch.testing.assert_close(sampler.class_probs(100), _expected_probs('class_balanced'))
    head = [float(sampler.class_probs(e)[0]) for e in range(5)]
    assert head == sorted(head, reverse=True) and head[0] > head[-1]


def test_instance_sampler_is_a_permutation_each_epoch():
    sampler = InstanceBalancedSampler(_targets())
    first, second = sampler.global_indices(0), sampler.global_indices(1)
    assert torch.equal(first.sort().values, torch.arange(N))
    assert torch.equal(second.sort().values, torch.arange(N))
    assert not torch.equal(first, second)


def test_instance_sampler_wraps_around():
    sampler = InstanceBalancedSampler(_targets(), num_samples=2 * N + 100)
    indices = sampler.global_indices()
    assert torch.equal(indices[:N].sort().values, torch.arange(N))
    assert torch.equal(indices[N:2 * N], indices[:N]) and torch.equal(indices[2 * N:], indices[:100])
    short = InstanceBalancedSampler(_targets(), num_samples=100).global_indices()
    assert len(short) == 100 and len(set(short.tolist())) == 100


@pytest.mark.parametrize('name', ['class_balanced', 'sqrt'])
def test_power_sampler_draws_uniformly_within_each_class(name):
    targets = _targets()
    sampler = create_sampler(name, targets)
    draws = torch.cat([sampler.global_indices(e) for e in range(EPOCHS)])
    per_instance = torch.bincount(draws, minlength=N).double()
    assert bool((per_instance > 0).all()), 'some samples are never drawn'
    for c in range(K):
        observed = per_instance[torch.from_numpy(targets == c)]
        expected = observed.sum() / len(observed)
        chi2, dof = float(((observed - expected) ** 2 / expected).sum()), len(observed) - 1
        assert chi2 < dof + 6 * math.sqrt(2 * dof) + 10, f'class {c}: chi2 {chi2:.1f} with {dof} dof'


def test_power_one_is_instance_balanced_and_empty_classes_are_never_drawn():
    targets = np.array([0, 0, 0, 2, 2, 4])  # classes 1, 3 and 5 have no samples
    for power in (-1., 0., 0.5, 1.):
        sampler = ClassPowerSampler(targets, power=power, num_classes=6, num_samples=3000)
        probs = sampler.class_probs()
        assert probs.shape == (6,) and torch.isfinite(probs).all()
        assert probs[[1, 3, 5]].eq(0).all() and abs(float(probs.sum()) - 1) < 1e-12
        drawn = set(targets[sampler.global_indices().numpy()].tolist())
        assert drawn == {0, 2, 4}
    torch.testing.assert_close(
        ClassPowerSampler(targets, power=1.).class_probs(), torch.tensor([3., 0., 2., 0., 1.], dtype=torch.float64) / 6)
    torch.testing.assert_close(
        ClassPowerSampler(targets, power=-1.).class_probs()[[0, 2, 4]],
        torch.tensor([1 / 3, 1 / 2, 1.], dtype=torch.float64) / (1 / 3 + 1 / 2 + 1))


def test_repeat_factor_repeats_each_sample_about_r_times():
    targets = _targets()
    sampler = RepeatFactorSampler(targets, threshold=THRESHOLD)
    n = np.asarray(COUNTS, dtype=np.float64)
    r = np.maximum(1., np.sqrt(THRESHOLD / (n / N)))
    assert sampler.num_samples == round(float((n * r).sum()))
    torch.testing.assert_close(sampler.repeat_factors, torch.from_numpy(r[targets]))
    per_epoch = torch.stack([torch.bincount(sampler.global_indices(e), minlength=N) for e in range(EPOCHS)]).double()
    mean = per_epoch.mean(0)
    assert float((mean - torch.from_numpy(r[targets])).abs().max()) < 0.2
    # head samples (r = 1) come once an epoch; the tail ones floor(r) or ceil(r) times, up to the few cut or wrapped
    tail = torch.from_numpy(targets == K - 1)
    tail_counts = per_epoch[:, tail]
    low, high = math.floor(r[-1]), math.ceil(r[-1])
    assert float(((tail_counts >= low) & (tail_counts <= high)).double().mean()) > 0.95


# --- determinism ---

@pytest.mark.parametrize('name', SAMPLER_NAMES)
def test_seed_and_epoch_determine_the_sequence(name):
    targets = _targets()
    a = create_sampler(name, targets, seed=3, **KWARGS[name])
    b = create_sampler(name, targets.tolist(), seed=3, **KWARGS[name])  # any input format, same sequence
    a.set_epoch(4)
    b.set_epoch(4)
    first = list(a)
    assert all(type(i) is int for i in first) and len(first) == len(a)
    assert first == list(a) == list(b) == a.indices(4).tolist()
    a.set_epoch(5)
    assert list(a) != first
    c = create_sampler(name, torch.from_numpy(targets), seed=4, **KWARGS[name])
    c.set_epoch(4)
    assert list(c) != first


# --- distributed ---

@pytest.mark.parametrize('name', SAMPLER_NAMES)
def test_ranks_shard_one_global_sequence(name):
    targets = _targets()
    ranks = [create_sampler(name, targets, num_samples=1000, num_replicas=3, rank=r, **KWARGS[name]) for r in range(3)]
    for s in ranks:
        s.set_epoch(7)
    shards = [torch.tensor(list(s)) for s in ranks]
    assert [len(s) for s in ranks] == [334] * 3 == [len(x) for x in shards]
    full = ranks[0].global_indices()
    assert len(full) == ranks[0].total_size == 1002
    for s in ranks[1:]:
        assert torch.equal(s.global_indices(), full)
    # each rank takes its own positions (r, r + 3, ...): disjoint, together all of them, in order
    positions = [set(range(r, 1002, 3)) for r in range(3)]
    assert not (positions[0] & positions[1] or positions[0] & positions[2] or positions[1] & positions[2])
    for r in range(3):
        assert shards[r].tolist() == [int(full[p]) for p in sorted(positions[r])]
    assert torch.equal(torch.stack(shards, dim=1).flatten(), full)


@pytest.mark.parametrize('num_images', [N, N - 1])
def test_instance_ranks_cover_every_index(num_images):
    targets = _targets()[:num_images]
    ranks = [InstanceBalancedSampler(targets, num_replicas=3, rank=r) for r in range(3)]
    shards = [list(s) for s in ranks]
    assert len({len(x) for x in shards}) == 1
    union = [i for x in shards for i in x]
    assert set(union) == set(range(num_images))
    assert len(union) == math.ceil(num_images / 3) * 3  # padding only to even out the ranks


def test_world_size_and_rank_from_torch_distributed(monkeypatch):
    fake = SimpleNamespace(
        is_available=lambda: True, is_initialized=lambda: True, get_world_size=lambda: 4, get_rank=lambda: 2)
    monkeypatch.setattr(samplers_module, 'dist', fake)
    sampler = ClassAwareSampler(_targets(), num_samples=1001)
    assert (sampler.num_replicas, sampler.rank, sampler.total_size, len(sampler)) == (4, 2, 1004, 251)
    assert list(sampler) == sampler.global_indices()[2::4].tolist()
    fake.is_initialized = lambda: False
    sampler = ClassAwareSampler(_targets())
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (1, 0, N)


# --- class-aware ---

@pytest.mark.parametrize('samples_per_class', [1, 3])
def test_class_aware_cycles(samples_per_class):
    k = samples_per_class
    targets = _targets()
    cycles = 4
    sampler = ClassAwareSampler(targets, samples_per_class=k, num_samples=cycles * K * k + 2 * k + 1)
    labels = targets[sampler.global_indices().numpy()]
    visits = labels[:cycles * K * k].reshape(cycles, K, k)
    assert (visits == visits[..., :1]).all(), 'a visit mixes classes'
    orders = visits[..., 0]
    for order in orders:
        assert sorted(order.tolist()) == list(range(K)), 'a cycle misses or repeats a class'
    assert len({tuple(o) for o in orders.tolist()}) > 1, 'every cycle has the same class order'
    tail = labels[cycles * K * k:]
    assert (tail[:k] == tail[0]).all() and (tail[k:2 * k] == tail[k]).all() and tail[0] != tail[k]


def test_class_aware_walks_through_each_class_before_repeating():
    targets = _targets()
    sampler = ClassAwareSampler(targets, samples_per_class=2, num_samples=20 * N)
    indices = sampler.global_indices().numpy()
    for c in range(K):
        members = np.flatnonzero(targets == c)
        drawn = indices[targets[indices] == c]
        full = len(drawn) // len(members)
        assert full >= 2
        passes = drawn[:full * len(members)].reshape(full, len(members))
        for p in passes:
            assert sorted(p.tolist()) == members.tolist()
        if len(members) > 1:
            assert not all((p == passes[0]).all() for p in passes), f'class {c}: every pass in the same order'


def test_class_aware_skips_empty_classes():
    targets = np.array([0, 0, 0, 3, 3, 5])
    sampler = ClassAwareSampler(targets, num_classes=7, num_samples=30)
    labels = targets[sampler.global_indices().numpy()].reshape(10, 3)
    assert all(sorted(row) == [0, 3, 5] for row in labels.tolist())
    torch.testing.assert_close(
        sampler.class_probs(), torch.tensor([1, 0, 0, 1, 0, 1, 0], dtype=torch.float64) / 3)


# --- with timm's loader ---

class _TinyDataset(Dataset):
    def __init__(self, targets, as_pil):
        self.targets = targets
        self.as_pil = as_pil
        self.transform = ToNumpy()

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        img = np.full((6, 5, 3), index % 256, dtype=np.uint8)  # H x W x C, value = index
        img[0, 0] = (1, 2, 3)
        if self.as_pil:
            img = Image.fromarray(img)
        return self.transform(img), int(self.targets[index])


@pytest.mark.parametrize('as_pil,fast_mixup', [(True, False), (False, False), (True, True)])
def test_dataloader_fast_collate_prefetch_mixup(as_pil, fast_mixup):
    targets = _targets()[:200]
    dataset = _TinyDataset(targets, as_pil)
    sampler = ClassAwareSampler(targets, samples_per_class=2, num_replicas=2, rank=1, seed=5)
    sampler.set_epoch(3)
    mixup_args = dict(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=K)
    collate = FastCollateMixup(**mixup_args) if fast_mixup else fast_collate
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, drop_last=True, collate_fn=collate, num_workers=0)
    loader = PrefetchLoader(loader, device=torch.device('cpu'))
    mixup = None if fast_mixup else Mixup(**mixup_args)
    assert len(loader) == len(sampler) // 4
    order = sampler.indices().tolist()
    for step, (x, y) in zip(range(3), loader):
        assert x.shape == (4, 3, 6, 5) and x.dtype == torch.float32 and torch.isfinite(x).all()
        if mixup is None:
            assert y.shape == (4, K)
        else:
            batch = order[4 * step:4 * step + 4]
            assert y.tolist() == [int(targets[i]) for i in batch]  # the loader follows the sampler
            # images keep their index: the pixel after un-normalising is index % 256
            mean, std = loader.mean.flatten(), loader.std.flatten()
            pixel = x[:, :, 1, 1] * std + mean
            torch.testing.assert_close(pixel, torch.tensor(batch).float()[:, None].expand(4, 3) % 256)
            x, y = mixup(x, y)
            assert x.shape == (4, 3, 6, 5) and y.shape == (4, K)
        torch.testing.assert_close(y.sum(1), torch.ones(4))
        assert bool((y >= 0).all())


# --- helpers and validation ---

def test_class_counts():
    targets = [3, 0, 3, 1, 3]
    expected = torch.tensor([1, 1, 0, 3])
    assert torch.equal(class_counts(targets), expected)
    assert torch.equal(class_counts(np.array(targets, dtype=np.int32)), expected)
    wide = class_counts(torch.tensor(targets, dtype=torch.int16), num_classes=6)
    assert torch.equal(wide, torch.tensor([1, 1, 0, 3, 0, 0]))
    assert class_counts(targets).dtype == torch.int64


def test_factory_builds_the_named_samplers():
    targets = _targets()
    assert isinstance(create_sampler('instance', targets), InstanceBalancedSampler)
    assert create_sampler('class_balanced', targets).power == 0.
    assert create_sampler('Sqrt', targets).power == 0.5
    assert create_sampler('power', targets, power=2.).power == 2.
    assert create_sampler('progressive', targets, total_epochs=90).total_epochs == 90
    assert create_sampler('class-aware', targets, samples_per_class=4).samples_per_class == 4
    assert create_sampler('repeat_factor', targets, threshold=0.1).threshold == 0.1
    for name in SAMPLER_NAMES:
        assert isinstance(create_sampler(name, targets, **KWARGS[name]), LongTailSampler)


@pytest.mark.parametrize('make,match', [
    (lambda: InstanceBalancedSampler([]), 'empty'),
    (lambda: InstanceBalancedSampler(np.array([], dtype=np.int64)), 'empty'),
    (lambda: InstanceBalancedSampler(torch.tensor([], dtype=torch.long)), 'empty'),
    (lambda: InstanceBalancedSampler([0, 2, -1, 1]), r'>= 0, got -1 at index 2'),
    (lambda: InstanceBalancedSampler([[0, 1], [1, 0]]), '1-D'),
    (lambda: InstanceBalancedSampler([0.5, 1.0]), 'integer class labels'),
    (lambda: InstanceBalancedSampler(torch.tensor([0., 1.])), 'integer class labels'),
    (lambda: InstanceBalancedSampler(['cat', 'dog']), 'integer class labels'),
    (lambda: InstanceBalancedSampler([0, 1], num_classes=1), 'label 1, out of range for num_classes=1'),
    (lambda: InstanceBalancedSampler([0, 1], num_samples=0), 'num_samples must be >= 1'),
    (lambda: InstanceBalancedSampler([0, 1], num_samples=2.5), 'num_samples must be an integer'),
    (lambda: InstanceBalancedSampler([0, 1], num_replicas=0), 'num_replicas must be >= 1'),
    (lambda: InstanceBalancedSampler([0, 1], num_replicas=3, rank=3), r'rank must be in \[0, 2\]'),
    (lambda: InstanceBalancedSampler([0, 1], rank=-1), 'rank must be >= 0'),
    (lambda: InstanceBalancedSampler([0, 1], seed=1.5), 'seed must be an integer'),
    (lambda: InstanceBalancedSampler([0, 1]).set_epoch(-1), 'epoch must be >= 0'),
    (lambda: ClassPowerSampler([0, 1], power=float('nan')), 'power must be a finite number'),
    (lambda: ClassPowerSampler([0, 1], power='sqrt'), 'power must be a finite number'),
    (lambda: ProgressiveSampler([0, 1], total_epochs=0), 'total_epochs must be >= 1'),
    (lambda: ClassAwareSampler([0, 1], samples_per_class=0), 'samples_per_class must be >= 1'),
    (lambda: RepeatFactorSampler([0, 1], threshold=0.), 'threshold must be > 0'),
    (lambda: create_sampler('power', [0, 1]), 'needs power='),
    (lambda: create_sampler('progressive', [0, 1]), 'needs total_epochs='),
    (lambda: create_sampler('class_balanced', [0, 1], power=1.), 'fixes the power'),
    (lambda: class_counts([0, 5], num_classes=3), 'out of range'),
])
def test_bad_input_raises(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_unknown_sampler_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown sampler 'balanced'") as info:
        create_sampler('balanced', [0, 1])
    for name in SAMPLER_NAMES:
        assert name in str(info.value)
