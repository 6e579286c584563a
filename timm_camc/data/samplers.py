""" Samplers for long-tailed training

Index samplers that re-balance a long-tailed training set by class, for ``torch.utils.data.DataLoader(sampler=...)``.
All of them are built from the dataset's class labels (``targets``, one int per sample) and share one base class:

* ``InstanceBalancedSampler``: a random permutation of the dataset per epoch (plain shuffling).
* ``ClassPowerSampler``: class ``j`` drawn with probability ``p_j ∝ n_j ** q`` (``q = 0`` class-balanced,
  ``q = 0.5`` square-root, ``q = 1`` instance-balanced with replacement), then a uniform random sample of it.
* ``ProgressiveSampler``: progressively-balanced sampling, ``p_j(t) = (1 - t / T) * p_j^IB + (t / T) * p_j^CB``.
  Paper: `Decoupling Representation and Classifier for Long-Tailed Recognition` - https://arxiv.org/abs/1910.09217
* ``ClassAwareSampler``: cycles over the classes in a random order, ``samples_per_class`` samples per class visit.
  Paper: `Relay Backpropagation for Effective Learning of Deep Convolutional Neural Networks`
  - https://arxiv.org/abs/1512.05830
* ``RepeatFactorSampler``: LVIS repeat-factor sampling for single-label data, each sample repeated
  ``max(1, sqrt(t / f_c))`` times (stochastically rounded). Paper: `LVIS: A Dataset for Large Vocabulary Instance
  Segmentation` - https://arxiv.org/abs/1908.03195

Every epoch draws one global sequence of ``total_size = ceil(num_samples / num_replicas) * num_replicas`` indices from
a generator seeded with ``seed + epoch``, and rank ``r`` of ``num_replicas`` takes ``global[r::num_replicas]``: the
ranks get equal lengths, disjoint positions of the same sequence, and together the whole of it. Call
``set_epoch(epoch)`` before each epoch, as with ``torch.utils.data.DistributedSampler``. The sequences are built with
tensor ops (no per-sample Python), so an epoch at iNaturalist 2018 scale takes well under a second.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    'LongTailSampler', 'InstanceBalancedSampler', 'ClassPowerSampler', 'ProgressiveSampler', 'ClassAwareSampler',
    'RepeatFactorSampler', 'class_counts',
]

TargetsType = Union[Sequence[int], np.ndarray, torch.Tensor]


def _check_int(name: str, value, min_value: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f'{name} must be an integer, got {value!r}')
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f'{name} must be >= {min_value}, got {value}')
    return value


def _check_float(name: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, got {value!r}')
    if positive and value <= 0:
        raise ValueError(f'{name} must be > 0, got {value!r}')
    return float(value)


def _as_targets(targets: TargetsType) -> torch.Tensor:
    """Validate class labels and return them as a 1-D int64 CPU tensor."""
    if isinstance(targets, torch.Tensor):
        t = targets.detach().cpu()
        if t.numel() == 0:
            raise ValueError('targets is empty: a sampler needs one class label per dataset sample')
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise ValueError(f'targets must hold integer class labels, got a tensor of {t.dtype}')
    else:
        try:
            a = np.asarray(targets)
        except (TypeError, ValueError) as e:
            raise ValueError(f'targets must be a sequence of integer class labels: {e}') from e
        if a.size == 0:
            raise ValueError('targets is empty: a sampler needs one class label per dataset sample')
        if a.dtype.kind not in 'iu':
            raise ValueError(
                f'targets must hold integer class labels, got dtype {a.dtype} '
                f'(e.g. {a.reshape(-1)[0]!r}); cast whole-number labels with int() first')
        t = torch.from_numpy(a.astype(np.int64, copy=False))
    if t.ndim != 1:
        raise ValueError(f'targets must be 1-D (one class label per sample), got shape {tuple(t.shape)}')
    t = t.long()
    if bool((t < 0).any()):
        first = int(torch.nonzero(t < 0)[0, 0])
        raise ValueError(
            f'targets must be >= 0, got {int(t[first])} at index {first}; '
            f'remove unlabelled or ignored samples from the dataset before sampling')
    return t


def class_counts(targets: TargetsType, num_classes: Optional[int] = None) -> torch.Tensor:
    """Number of samples of each class.

    Args:
        targets: Class label of each sample (a sequence, numpy array or tensor of non-negative ints).
        num_classes: Length of the result; default ``max(targets) + 1``. Classes without samples count 0.

    Returns:
        An int64 tensor of ``num_classes`` counts.
    """
    targets = _as_targets(targets)
    max_label = int(targets.max())
    if num_classes is None:
        num_classes = max_label + 1
    else:
        num_classes = _check_int('num_classes', num_classes, 1)
        if max_label >= num_classes:
            raise ValueError(f'targets contain label {max_label}, out of range for num_classes={num_classes}')
    return torch.bincount(targets, minlength=num_classes)


def _world(num_replicas: Optional[int], rank: Optional[int]) -> Tuple[int, int]:
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    num_replicas = _check_int('num_replicas', num_replicas, 1)
    rank = _check_int('rank', rank, 0)
    if rank >= num_replicas:
        raise ValueError(f'rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas}, got {rank}')
    return num_replicas, rank


def _wrap(indices: torch.Tensor, size: int) -> torch.Tensor:
    """The first ``size`` entries of ``indices`` repeated end to end (truncate, or pad by wrapping around)."""
    if len(indices) < size:
        indices = indices.repeat(math.ceil(size / len(indices)))
    return indices[:size]


def _ceil_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.div(a + b - 1, b, rounding_mode='floor')


class LongTailSampler(Sampler[int]):
    """Base class: one seeded global index sequence per epoch, sharded across distributed ranks by position.

    Subclasses implement ``_sample(epoch, generator)``, returning ``total_size`` dataset indices, and
    ``class_probs(epoch)``.

    Attributes:
        targets: Class label of each dataset sample, an int64 tensor.
        counts: Samples per class (``n_j``), an int64 tensor of ``num_classes``.
        num_samples: Indices drawn per epoch over all ranks (before padding to a multiple of ``num_replicas``).
        total_size: Length of the global sequence, ``ceil(num_samples / num_replicas) * num_replicas``.
    """

    def __init__(
            self,
            targets: TargetsType,
            num_samples: Optional[int] = None,
            num_replicas: Optional[int] = None,
            rank: Optional[int] = None,
            seed: int = 0,
            num_classes: Optional[int] = None,
    ):
        """
        Args:
            targets: Class label of each dataset sample (a sequence, numpy array or tensor of non-negative ints).
            num_samples: Indices per epoch over all ranks; default depends on the sampler (``len(targets)`` for most).
            num_replicas: Number of distributed ranks; default the world size when ``torch.distributed`` is
                initialized, else 1.
            rank: This process's rank; default the distributed rank when initialized, else 0.
            seed: Base seed; epoch ``e`` is drawn with seed ``seed + e``, identically on every rank.
            num_classes: Number of classes (length of ``counts`` and ``class_probs``); default ``max(targets) + 1``.
        """
        super().__init__()
        self.targets = _as_targets(targets)
        self.counts = class_counts(self.targets, num_classes)
        self.num_classes = len(self.counts)
        self.num_replicas, self.rank = _world(num_replicas, rank)
        self.seed = _check_int('seed', seed)
        default_num_samples = self._default_num_samples()  # also a hook for per-dataset setup in subclasses
        self.num_samples = _check_int('num_samples', default_num_samples if num_samples is None else num_samples, 1)
        self.total_size = math.ceil(self.num_samples / self.num_replicas) * self.num_replicas
        self.epoch = 0
        self._class_index = None

    def _default_num_samples(self) -> int:
        return len(self.targets)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose sequence ``__iter__`` yields (and, for epoch-dependent samplers, its probabilities).

        Args:
            epoch: Epoch number, >= 0; the same on every rank.
        """
        self.epoch = _check_int('epoch', epoch, 0)

    def _epoch(self, epoch: Optional[int]) -> int:
        return self.epoch if epoch is None else _check_int('epoch', epoch, 0)

    def global_indices(self, epoch: Optional[int] = None) -> torch.Tensor:
        """The epoch's full index sequence, before sharding across ranks.

        Args:
            epoch: Epoch to draw; default the one from ``set_epoch``.

        Returns:
            An int64 tensor of ``total_size`` dataset indices, identical on every rank.
        """
        epoch = self._epoch(epoch)
        generator = torch.Generator()
        generator.manual_seed(self.seed + epoch)
        indices = self._sample(epoch, generator)
        assert indices.shape == (self.total_size,) and indices.dtype == torch.int64
        return indices

    def indices(self, epoch: Optional[int] = None) -> torch.Tensor:
        """This rank's share of the epoch's sequence, ``global_indices(epoch)[rank::num_replicas]``.

        Args:
            epoch: Epoch to draw; default the one from ``set_epoch``.
        """
        return self.global_indices(epoch)[self.rank::self.num_replicas]

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """Intended probability of each class in the epoch's sequence (a float64 tensor of ``num_classes``).

        Args:
            epoch: Epoch to describe; default the one from ``set_epoch``.
        """
        raise NotImplementedError

    def _sample(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def _by_class(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Dataset indices sorted by class, and the start of each class's run in them."""
        if self._class_index is None:
            order = torch.argsort(self.targets, stable=True)
            starts = torch.cumsum(self.counts, 0) - self.counts
            self._class_index = order, starts
        return self._class_index

    def _draw_in_classes(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A uniformly random sample (with replacement) of each class in ``classes``."""
        order, starts = self._by_class()
        n = self.counts[classes]
        # float64: floor(u * n) < n for every u in [0, 1), which float32 rounding does not guarantee for n > 2 ** 11
        offset = (torch.rand(len(classes), generator=generator, dtype=torch.float64) * n).long()
        return order[starts[classes] + torch.minimum(offset, n - 1)]

    def _draw_by_probs(self, probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        classes = torch.multinomial(probs, self.total_size, replacement=True, generator=generator)
        return self._draw_in_classes(classes, generator)

    def _instance_probs(self) -> torch.Tensor:
        return self.counts.double() / len(self.targets)

    def _balanced_probs(self) -> torch.Tensor:
        present = (self.counts > 0).double()
        return present / present.sum()

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.total_size // self.num_replicas

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(num_samples={self.num_samples}, num_classes={self.num_classes}, '
            f'num_replicas={self.num_replicas}, rank={self.rank}, seed={self.seed}, epoch={self.epoch})')


class InstanceBalancedSampler(LongTailSampler):
    """Plain shuffling: a random permutation of the dataset each epoch, without replacement.

    With ``num_samples`` above the dataset size the permutation wraps around (as ``DistributedSampler`` pads), below
    it the permutation is cut short. With the default ``num_samples`` the ranks together see every sample once (plus
    at most ``num_replicas - 1`` repeats that even out the ranks).
    """

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """Expected class frequencies, ``n_j / N``."""
        return self._instance_probs()

    def _sample(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        return _wrap(torch.randperm(len(self.targets), generator=generator), self.total_size)


def _power_probs(counts: torch.Tensor, power: float) -> torch.Tensor:
    present = counts > 0
    # normalise before the power so that neither large nor negative powers overflow
    base = counts.double() / (counts.max() if power >= 0 else counts[present].min())
    weights = torch.where(present, base.pow(power), torch.zeros_like(base))
    return weights / weights.sum()


class ClassPowerSampler(LongTailSampler):
    """Class-re-balanced sampling with replacement: class ``j`` drawn with ``p_j ∝ n_j ** power``.

    ``power=0`` is class-balanced, ``0.5`` square-root and ``1`` instance-balanced sampling (with replacement).
    Each draw picks a class from ``p``, then a uniformly random sample of that class. Classes without samples
    get ``p_j = 0``.
    """

    def __init__(
            self,
            targets: TargetsType,
            power: float,
            **kwargs,
    ):
        """
        Args:
            targets: Class label of each dataset sample.
            power: Exponent ``q`` of ``p_j ∝ n_j ** q``.
            **kwargs: ``num_samples``, ``num_replicas``, ``rank``, ``seed``, ``num_classes`` of ``LongTailSampler``.
        """
        self.power = _check_float('power', power)
        super().__init__(targets, **kwargs)
        self._probs = _power_probs(self.counts, self.power)

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """``p_j ∝ n_j ** power`` (the same every epoch)."""
        return self._probs.clone()

    def _sample(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        return self._draw_by_probs(self._probs, generator)


class ProgressiveSampler(LongTailSampler):
    """Progressively-balanced sampling: from instance- to class-balanced over ``total_epochs``.

    ``p_j(t) = (1 - t / T) * n_j / N + (t / T) / C``, with ``t`` the epoch from ``set_epoch`` clipped to ``[0, T]``,
    ``T = total_epochs`` and ``C`` the number of classes with samples. Draws are with replacement: a class from
    ``p(t)``, then a uniformly random sample of it.
    """

    def __init__(
            self,
            targets: TargetsType,
            total_epochs: int,
            **kwargs,
    ):
        """
        Args:
            targets: Class label of each dataset sample.
            total_epochs: Epoch ``T`` at which sampling becomes fully class-balanced.
            **kwargs: ``num_samples``, ``num_replicas``, ``rank``, ``seed``, ``num_classes`` of ``LongTailSampler``.
        """
        self.total_epochs = _check_int('total_epochs', total_epochs, 1)
        super().__init__(targets, **kwargs)

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """``p_j(t) = (1 - t / T) * p_j^IB + (t / T) * p_j^CB`` for ``t = clip(epoch, 0, T)``."""
        alpha = min(self._epoch(epoch), self.total_epochs) / self.total_epochs
        return (1. - alpha) * self._instance_probs() + alpha * self._balanced_probs()

    def _sample(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        return self._draw_by_probs(self.class_probs(epoch), generator)


class ClassAwareSampler(LongTailSampler):
    """Class-aware sampling: visit every class once per cycle in random order, ``samples_per_class`` draws a visit.

    Each cycle is a fresh random permutation of the classes that have samples; a visit takes ``samples_per_class``
    consecutive draws of the class. A class's draws walk through a random permutation of its samples, reshuffled
    each time it is used up, so within a class no sample repeats before all have been drawn. The sequence restarts
    each epoch (it is a function of ``seed + epoch``), so the epoch length ``num_samples`` need not be a whole
    number of cycles.
    """

    def __init__(
            self,
            targets: TargetsType,
            samples_per_class: int = 1,
            **kwargs,
    ):
        """
        Args:
            targets: Class label of each dataset sample.
            samples_per_class: Consecutive draws per class visit.
            **kwargs: ``num_samples``, ``num_replicas``, ``rank``, ``seed``, ``num_classes`` of ``LongTailSampler``.
        """
        self.samples_per_class = _check_int('samples_per_class', samples_per_class, 1)
        super().__init__(targets, **kwargs)

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """Expected class frequencies: uniform over the classes with samples (exact, by symmetry of the cycles)."""
        return self._balanced_probs()

    def _sample(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        size, k = self.total_size, self.samples_per_class
        present = torch.nonzero(self.counts).squeeze(1)
        num_present = len(present)

        # class of each draw: one random class permutation per cycle, each class repeated k times
        num_visits = math.ceil(size / k)
        num_cycles = math.ceil(num_visits / num_present)
        keys = torch.rand(num_cycles, num_present, generator=generator, dtype=torch.float64)
        visit_class = present[torch.argsort(keys, dim=1).flatten()[:num_visits]]
        classes = visit_class.repeat_interleave(k)[:size]

        # draws of the same class before each draw: k per earlier cycle, plus its position within the visit
        pos = torch.arange(size)
        occurrence = torch.div(pos, k * num_present, rounding_mode='floor') * k + pos % k

        # per class, enough passes over its samples for its draws, each pass a fresh permutation of the samples,
        # laid out class after class: a class's j-th draw is entry j of its block
        n = self.counts
        passes = _ceil_div(torch.bincount(classes, minlength=self.num_classes), n.clamp(min=1))
        block_len = passes * n
        block_start = torch.cumsum(block_len, 0) - block_len
        pass_class = torch.repeat_interleave(torch.arange(self.num_classes), passes)
        pass_len = n[pass_class]
        pass_start = torch.cumsum(pass_len, 0) - pass_len
        elem_pass = torch.repeat_interleave(torch.arange(len(pass_class)), pass_len)
        # shuffle within each pass: a random permutation, stably regrouped by pass
        perm = torch.randperm(len(elem_pass), generator=generator)
        perm = perm[torch.argsort(elem_pass[perm], stable=True)]
        in_class = perm - pass_start[elem_pass[perm]]  # position within the class, random order within each pass
        order, starts = self._by_class()
        block = order[starts[pass_class[elem_pass]] + in_class]
        return block[block_start[classes] + occurrence]


class RepeatFactorSampler(LongTailSampler):
    """Repeat-factor sampling (LVIS) for single-label data.

    Class ``c`` with frequency ``f_c = n_c / N`` gets the repeat factor ``r_c = max(1, sqrt(threshold / f_c))``,
    and every sample of it ``r_i = r_c``. Each epoch a sample is repeated ``floor(r_i) + Bernoulli(frac(r_i))``
    times and the repeats are shuffled. Since the number of repeats varies from epoch to epoch while distributed
    ranks need a fixed, equal length, the shuffled repeats are cut to, or extended by wrapping around (further draws
    without replacement from the same repeats) to, ``total_size``; ``num_samples`` defaults to
    ``round(sum_i r_i)``, the expected number of repeats.
    """

    def __init__(
            self,
            targets: TargetsType,
            threshold: float = 0.001,
            **kwargs,
    ):
        """
        Args:
            targets: Class label of each dataset sample.
            threshold: Frequency ``t`` below which classes are over-sampled (LVIS uses 0.001).
            **kwargs: ``num_samples``, ``num_replicas``, ``rank``, ``seed``, ``num_classes`` of ``LongTailSampler``
                (here ``num_samples`` defaults to ``round(sum_i r_i)``).
        """
        self.threshold = _check_float('threshold', threshold, positive=True)
        self.class_repeat_factors = None
        super().__init__(targets, **kwargs)

    def _default_num_samples(self) -> int:
        # runs inside the base __init__ once counts exist, whether or not num_samples is given
        freq = self.counts.double() / len(self.targets)
        factors = torch.sqrt(self.threshold / freq.clamp(min=1e-300)).clamp(min=1.)
        self.class_repeat_factors = torch.where(self.counts > 0, factors, torch.ones_like(factors))
        self.repeat_factors = self.class_repeat_factors[self.targets]
        return max(1, round(float(self.repeat_factors.sum())))

    def class_probs(self, epoch: Optional[int] = None) -> torch.Tensor:
        """Expected class frequencies, ``∝ n_c * r_c`` (the expected repeats of the class)."""
        weights = self.counts.double() * self.class_repeat_factors
        return weights / weights.sum()

    def _sample(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        factors = self.repeat_factors
        whole = factors.floor()
        extra = torch.rand(len(factors), generator=generator, dtype=torch.float64) < factors - whole
        repeats = whole.long() + extra.long()
        pool = torch.repeat_interleave(torch.arange(len(factors)), repeats)
        pool = pool[torch.randperm(len(pool), generator=generator)]
        return _wrap(pool, self.total_size)
