#!/usr/bin/env python3
"""CIFAR-10-LT ablation of the CAMC head: every row of the project's "Proof" table in one prepared run.

ResNet-32 (``resnet32_camc_lt``) on the long-tailed CIFAR-10 JPEG images (exponential profile, IF 100, the LDAM-DRW
construction: per-class shuffle with seed 0, then the first n_i), the LDAM-DRW schedule (SGD with momentum 0.9,
weight decay 2e-4, lr 0.1, batch 128, 5 warm-up epochs at 0.02, 0.04, ..., 0.1, lr x0.01 from 80 % and x0.0001 from
90 % of the epochs, i.e. epochs 160 and 180 of 200, random crop with 4-pixel padding and horizontal flip), evaluated
on the balanced test split. The rows are declared in ``ROWS``; each (row, seed) pair is one run, and every run of a
seed starts from the same weights and sees the same images in the same order with the same augmentation.

Engineering for one GPU, where ResNet-32 on 12.4k images is bound by kernel launches, not by arithmetic:

* the JPEGs are decoded once into uint8 .npy arrays (cached in ``--work-dir``) and held on the device as uint8;
* each epoch is augmented on the device in a few batched kernels (pad-4 random crop as one gather, the flip folded
  into the gather index), in the order of the library's seeded sampler, into a normalised (bf16) epoch buffer;
* each run's training step (forward with labels, loss, backward, SGD step) is captured once in a CUDA graph; the
  learning rate lives in a device tensor read by the fused SGD kernel, so the schedule needs no re-capture
  (LDAM's deferred re-weighting gets a second graph); a self-check compares one replayed step with one eager step;
* the runs of a process replay their graphs on separate CUDA streams, so their kernels overlap on the GPU;
  ``--procs`` splits the runs over processes.

On the CPU the same code runs eagerly. ``--fit auto`` measures the throughput during the first epochs and then
keeps the runs (in priority order) and the epochs that finish within ``--time-budget``; anything short of the full
protocol is labelled as such in the results (``scale``), and ``ablation_report.py`` refuses to call it the benchmark.

    python benchmarks/ablation.py --device cpu --epochs 2 --train-per-class-max 50 --test-per-class 20 \\
        --rows ce,cosine_s16,camc_global --seeds 0                      # CPU dry run, says nothing about accuracy
    python benchmarks/ablation.py --device cuda --measure               # ~1 min: epochs/s of every run
    python benchmarks/ablation.py --device cuda --fit auto --time-budget 480 --out "$OUT"   # the ablation
    python benchmarks/ablation_report.py benchmarks/results/ablation_gpu.json --benchmark   # README table

See benchmarks/README_ABLATION.md.
"""
import argparse
import contextlib
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import queue
import shutil
import sys
import tarfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import timm
import timm_camc
from timm.optim import param_groups_weight_decay
from timm_camc.data import ImageListDataset, create_sampler, decode_images, long_tail_counts, long_tail_indices
from timm_camc.data.in_memory import augment_epoch, augment_seed, normalize
from timm_camc.layers import HEAD_DEFAULTS
from timm_camc.loss import CamcLoss, classifier_loss_kwargs, create_loss
from timm_camc.metrics import LongTailMetrics, default_class_groups

import ablation_report
from bench_utils import cpu_model, git

_logger = logging.getLogger('ablation')


def _now() -> float:
    """Wall clock of the time budget (a function, so that tests can replace it)."""
    return time.time()

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = 'resnet32_camc_lt'
NUM_CLASSES = 10
FULL_TRAIN_PER_CLASS = 5000  # CIFAR-10 train images per class: n_max of the long-tailed profile
FULL_TEST_PER_CLASS = 1000
FULL_EPOCHS = 200
BENCHMARK_RECIPE = dict(lr=0.1, momentum=0.9, weight_decay=2e-4, batch_size=128, nesterov=False)
PAD = 4
IMG_SIZE = 32
ARCHIVE_NAME = 'cifar10-jpeg.tar.gz'
ARCHIVE_SHA256 = '323060915b46425be8b0590442ab183a24e94c86b85d3e0ce7a12359ff856e54'  # shared/datasets/README.md


# ---------------------------------------------------------------------------------------------------------------------
# The rows

@dataclass(frozen=True)
class Row:
    """One row of the ablation table.

    Attributes:
        name: Key used on the command line and in the results.
        label: What the row is, for the table.
        model_kwargs: Kwargs of ``timm.create_model(MODEL_NAME, ...)``.
        loss: ``timm_camc.loss.create_loss`` name; LDAM's ``drw_epoch`` comes from the schedule (80 % of the
            epochs) and, with a cosine classifier, ``logit_scale_in`` from the model's ``cosine_scale``.
        loss_kwargs: Kwargs of the loss.
        sampler: ``timm_camc.data.create_sampler`` name.
        calib_warmup: Fraction of the epochs trained as the plain classifier before the calibration joins
            (``CamcLoss``'s ``calib_warmup``, in epochs of the schedule).
        tier: Priority when the time budget cannot hold every run (0 first). Tier 0 is the central comparison:
            does CAMC beat the plain normalised classifier, alone and with logit adjustment. Tier 3: the method
            candidates of issue 12 (run when named).
        baseline: The row's plain counterpart; the report gives the paired per-seed difference to it.
    """
    name: str
    label: str
    model_kwargs: Mapping[str, Any]
    loss: str = 'ce'
    loss_kwargs: Mapping[str, Any] = field(default_factory=dict)
    sampler: str = 'instance'
    calib_warmup: float = 0.
    tier: int = 0
    baseline: str = ''

    @property
    def classifier(self) -> str:
        if not self.model_kwargs.get('norm_classifier', True):
            return 'linear'
        return f"cosine s={self.model_kwargs.get('cosine_scale', 16.):g}"

    @property
    def camc(self) -> str:
        return self.model_kwargs.get('camc', 'global')


LINEAR = dict(camc='none', norm_classifier=False)


def _cosine(scale: float) -> Dict[str, Any]:
    return dict(camc='none', norm_classifier=True, cosine_scale=scale)


def _camc(variant: str, norm_classifier: bool = True, scale: float = 16.) -> Dict[str, Any]:
    return dict(camc=variant, norm_classifier=norm_classifier, cosine_scale=scale, proto_momentum=0.9, camc_topk=32,
                aux_weight=0.5)


_LA = dict(tau=1.)
# LDAM-DRW's own recipe; its scale (30 on cosines, 1 on the raw logits of a linear classifier) comes from the
# classifier, by timm_camc.loss.classifier_loss_kwargs
_LDAM = dict(max_margin=0.5, beta=0.9999)

ROWS: Tuple[Row, ...] = (
    Row('ce', 'Plain CE', LINEAR),
    Row('cosine_s8', 'Normalised classifier', _cosine(8.), tier=2),
    Row('cosine_s16', 'Normalised classifier', _cosine(16.)),
    Row('cosine_s32', 'Normalised classifier', _cosine(32.), tier=2),
    Row('camc_global', 'CAMC global (B) + normalised classifier', _camc('global'), baseline='cosine_s16'),
    Row('camc_class', 'CAMC class (A) + normalised classifier', _camc('class'), tier=1, baseline='cosine_s16'),
    Row('camc_global_linear', 'CAMC global (B) without the normalised classifier', _camc('global', False), tier=1,
        baseline='ce'),
    Row('la_linear', 'Logit-adjusted CE (tau=1)', LINEAR, 'logit_adjusted', _LA),
    Row('la_cosine', 'Logit-adjusted CE (tau=1) + normalised classifier', _cosine(16.), 'logit_adjusted', _LA),
    Row('camc_global_la', 'CAMC global (B) + logit-adjusted CE', _camc('global'), 'logit_adjusted', _LA,
        baseline='la_cosine'),
    # issue 12 candidates, each on top of the best re-balancing (logit adjustment) against la_cosine
    Row('camc_nonneg_la', 'CAMC global (B), non-negative map conv, + logit-adjusted CE',
        dict(_camc('global'), nonneg_map=True), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('camc_target_la', 'CAMC target (C, training only) + logit-adjusted CE', _camc('target'), 'logit_adjusted',
        _LA, tier=3, baseline='la_cosine'),
    Row('camc_global_la_aux1', 'CAMC global (B), auxiliary weight 1, + logit-adjusted CE',
        dict(_camc('global'), aux_weight=1.), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('camc_nonneg_la_aux1', 'CAMC global (B), non-negative map conv, auxiliary weight 1, + logit-adjusted CE',
        dict(_camc('global'), nonneg_map=True, aux_weight=1.), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('camc_global_la_warm25', 'CAMC global (B), calibrating after a warm-up of 25 % of the epochs, + LA',
        _camc('global'), 'logit_adjusted', _LA, calib_warmup=0.25, tier=3, baseline='la_cosine'),
    Row('camc_batch_la', 'CAMC batch (D: correlation across the batch in training) + logit-adjusted CE',
        _camc('batch'), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('camc_global_bq', 'CAMC global (B), maps from the balanced (logit-adjusted) prediction, plain CE',
        dict(_camc('global'), balanced_q=True), tier=3, baseline='camc_global'),
    Row('camc_global_la_m99', 'CAMC global (B), prototype momentum 0.99, + logit-adjusted CE',
        dict(_camc('global'), proto_momentum=0.99), 'logit_adjusted', _LA, tier=3, baseline='la_cosine'),
    Row('la_cosine_s32', 'Logit-adjusted CE (tau=1) + normalised classifier s=32', _cosine(32.), 'logit_adjusted', _LA,
        tier=3),
    Row('camc_global_la_s32', 'CAMC global (B) + logit-adjusted CE, cosine scale 32', _camc('global', scale=32.),
        'logit_adjusted', _LA, tier=3, baseline='la_cosine_s32'),
    Row('ldam_drw', 'LDAM-DRW on a linear classifier (margins on raw logits, scale 1)', LINEAR, 'ldam',
        _LDAM, tier=2),
    Row('ldam_drw_norm', 'LDAM-DRW (its normalised classifier, scale 30: the published recipe)', _cosine(16.), 'ldam',
        _LDAM, tier=1),
    Row('camc_global_ldam_drw', 'CAMC global (B) + LDAM-DRW', _camc('global'), 'ldam', _LDAM, tier=1,
        baseline='ldam_drw_norm'),
)
ROW_INDEX = {row.name: i for i, row in enumerate(ROWS)}


def select_rows(spec: str) -> List[Row]:
    """Rows named in a comma-separated list ('all' for every row), in table order."""
    if spec.strip() == 'all':
        return list(ROWS)
    names = [n.strip() for n in spec.split(',') if n.strip()]
    unknown = [n for n in names if n not in ROW_INDEX]
    if unknown:
        raise ValueError(f'Unknown rows {unknown}; known: {", ".join(ROW_INDEX)}')
    return [ROWS[i] for i in sorted({ROW_INDEX[n] for n in names})]


@dataclass(frozen=True)
class RunSpec:
    row: Row
    seed: int
    seed_index: int

    @property
    def key(self) -> str:
        return f'{self.row.name}/s{self.seed}'


def plan_runs(rows: Sequence[Row], seeds: Sequence[int]) -> List[RunSpec]:
    """All (row, seed) runs in priority order: tiers 0 and 1 with their first two seeds (row by row, so CAMC rows and
    their counterparts get two seeds before anything else), then each further tier seed by seed, then any further
    seeds."""
    first = [RunSpec(r, s, i) for tier in (0, 1) for r in rows if r.tier == tier for i, s in enumerate(seeds[:2])]
    later = sorted({r.tier for r in rows if r.tier >= 2})
    rest = [RunSpec(r, s, i) for tier in later for i, s in enumerate(seeds[:2]) for r in rows if r.tier == tier]
    more = [RunSpec(r, s, i + 2) for i, s in enumerate(seeds[2:]) for r in sorted(rows, key=lambda r: r.tier)]
    return first + rest + more


# ---------------------------------------------------------------------------------------------------------------------
# The schedule

@dataclass(frozen=True)
class Schedule:
    """LDAM-DRW's schedule, scaled to ``epochs``: linear warm-up, then step decays at fractions of the epochs."""
    epochs: int
    lr: float = 0.1
    warmup_epochs: int = 5
    decay_at: Tuple[float, ...] = (0.8, 0.9)
    decay_factors: Tuple[float, ...] = (0.01, 0.0001)

    @classmethod
    def for_epochs(cls, epochs: int, lr: float = 0.1, warmup_epochs: int = 5) -> 'Schedule':
        """Warm-up of ``warmup_epochs`` epochs (shortened to a fifth of the run for runs under 25 epochs)."""
        return cls(epochs=epochs, lr=lr, warmup_epochs=min(warmup_epochs, epochs // 5))

    @property
    def milestones(self) -> Tuple[int, ...]:
        return tuple(int(round(f * self.epochs)) for f in self.decay_at)

    def epoch_at(self, fraction: float) -> int:
        """The epoch a fraction of the way through the run."""
        return int(round(fraction * self.epochs))

    @property
    def drw_epoch(self) -> int:
        """First epoch of LDAM's deferred re-weighting: the first decay (160 of 200)."""
        return self.milestones[0]

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: 0.02, 0.04, ..., 0.1 in warm-up, then x0.01 and x0.0001 of ``lr``."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        factor = 1.
        for milestone, decay in zip(self.milestones, self.decay_factors):
            if epoch >= milestone:
                factor = decay
        return self.lr * factor

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), milestones=list(self.milestones), drw_epoch=self.drw_epoch)


# ---------------------------------------------------------------------------------------------------------------------
# Data: extract once, long-tailed subset with the library, decode once to .npy

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


def _decode(ds: ImageListDataset, indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """The library's decoder (clear errors for unreadable files and other sizes), cached as (N, H, W, 3) arrays."""
    images, labels = decode_images(ds, indices, size=(IMG_SIZE, IMG_SIZE))
    return images.permute(0, 2, 3, 1).numpy(), labels.numpy()


def prepare_data(
        data_dir: Optional[str], data_tar: str, work_dir: Path, train_per_class_max: int, imbalance: float,
        lt_seed: int, test_per_class: int,
) -> Dict[str, Any]:
    """Decoded uint8 arrays of the training subset and the test images, cached as .npy under ``work_dir``.

    Returns the metadata the workers load the arrays from (paths, class counts, names, what was selected).
    """
    start = time.time()
    archive_sha256 = None
    if data_dir:
        root = Path(data_dir)
        source = str(root.resolve())
    else:
        archive = find_archive(data_tar)
        archive_sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
        if archive_sha256 != ARCHIVE_SHA256:
            _logger.warning(f'{archive} is not the expected CIFAR-10 JPEG archive (sha256 {archive_sha256})')
        root = extract_archive(archive, work_dir / 'cifar10-jpeg')
        source = str(archive.resolve())
    sel = select_samples(root, train_per_class_max, imbalance, lt_seed, test_per_class)
    train_ds, test_ds = sel['train_ds'], sel['test_ds']
    key_src = json.dumps(dict(
        root=str(root.resolve()), train=[train_ds.samples[i] for i in sel['train_idx']],
        test=[test_ds.samples[i] for i in sel['test_idx']]))
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    cache = work_dir / 'cache' / key
    paths = {name: str(cache / f'{name}.npy') for name in ('train_x', 'train_y', 'test_x', 'test_y')}
    if not all(Path(p).is_file() for p in paths.values()):
        partial = cache.with_name(key + '.partial')
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for split, ds, idx in (('train', train_ds, sel['train_idx']), ('test', test_ds, sel['test_idx'])):
            images, labels = _decode(ds, idx)
            np.save(partial / f'{split}_x.npy', images)
            np.save(partial / f'{split}_y.npy', labels)
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(partial, cache)
        _logger.info(f'Decoded {len(sel["train_idx"])} training and {len(sel["test_idx"])} test images into {cache}')
    counts = sel['counts']
    meta = dict(
        paths=paths, source=source, archive_sha256=archive_sha256, class_names=sel['class_names'],
        num_classes=sel['num_classes'],
        class_counts=[int(c) for c in counts], train_size=int(sum(counts)), test_size=len(sel['test_idx']),
        train_per_class_max=sel['n_max'], imbalance=sel['imbalance'], lt_seed=lt_seed,
        test_per_class=test_per_class, prepare_s=round(time.time() - start, 2))
    _logger.info(f'Data ready in {meta["prepare_s"]}s: {meta["train_size"]} training images {counts}, '
                 f'{meta["test_size"]} test images')
    return meta


# ---------------------------------------------------------------------------------------------------------------------
# Model, loss, optimizer

def build_model(row: Row, seed: int) -> nn.Module:
    """The row's model, initialised identically for every row of a seed.

    Every model gets the backbone and classifier weights of one reference model (the plain linear ResNet-32 created
    under ``torch.manual_seed(seed)``); the CAMC map conv starts at zero and the prototypes empty, as always. Without
    this, the head's parameters (drawn before the backbone's re-initialisation) would shift the backbone's random
    stream, and rows would differ in their initialisation, not only in their method.
    """
    torch.manual_seed(seed)
    reference = timm.create_model(MODEL_NAME, num_classes=NUM_CLASSES, **LINEAR).state_dict()
    torch.manual_seed(seed)
    model = timm.create_model(MODEL_NAME, num_classes=NUM_CLASSES, **row.model_kwargs)
    own = model.state_dict()
    shared = {k: v for k, v in reference.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return model


def build_loss(row: Row, class_counts: Sequence[int], schedule: Schedule) -> CamcLoss:
    """``CamcLoss(create_loss(...))`` with the row's kwargs over what the loss needs to know about the classifier
    (``classifier_loss_kwargs``, the rule train.py uses); LDAM's DRW epoch comes from the schedule."""
    head = dict(HEAD_DEFAULTS, **row.model_kwargs)
    kwargs = dict(classifier_loss_kwargs(row.loss, head['cosine_scale'] if head['norm_classifier'] else None),
                  **row.loss_kwargs)
    if row.loss == 'ldam':
        kwargs.setdefault('drw_epoch', schedule.drw_epoch)
    return CamcLoss(create_loss(row.loss, list(class_counts), **kwargs),
                    calib_warmup=schedule.epoch_at(row.calib_warmup))


def _criterion_state(loss_fn: nn.Module) -> Dict[str, Any]:
    """The plain attributes of the loss and of the criterion it wraps (e.g. ``calibrating``, ``drw_active``)."""
    state = {}
    for module in (loss_fn, getattr(loss_fn, 'criterion', loss_fn)):
        state.update({k: v for k, v in vars(module).items()
                      if not k.startswith('_') and isinstance(v, (bool, int, float, str, type(None)))})
    return state


def loss_modes(loss_fn: nn.Module, epochs: int) -> Tuple[Tuple[str, ...], Dict[Tuple, int]]:
    """What ``set_epoch`` switches in a criterion over ``epochs`` (e.g. LDAM's ``drw_active``).

    A captured CUDA graph holds the code path of one such state, so each distinct state (mode) gets its own graph.

    Returns:
        The names of the attributes that change with the epoch, and one representative epoch per mode (keyed by the
        values of those attributes, see ``loss_mode``).
    """
    states = []
    for epoch in range(epochs):
        loss_fn.set_epoch(epoch)
        states.append(_criterion_state(loss_fn))
    loss_fn.set_epoch(0)
    names = tuple(sorted(k for k in states[0] if any(s.get(k) != states[0][k] for s in states)))
    modes: Dict[Tuple, int] = {}
    for epoch, state in enumerate(states):
        modes.setdefault(tuple(state[k] for k in names), epoch)
    return names, modes


def loss_mode(loss_fn: nn.Module, names: Sequence[str]) -> Tuple:
    """The current mode of a criterion: the values of the epoch-dependent attributes ``names``."""
    state = _criterion_state(loss_fn)
    return tuple(state.get(k) for k in names)


# ---------------------------------------------------------------------------------------------------------------------
# One run

class DeviceData:
    """The decoded images of one process on its device: uint8 training images (pre-padded) and test images."""

    def __init__(self, meta: Mapping[str, Any], device: torch.device):
        paths = meta['paths']
        train = torch.from_numpy(np.load(paths['train_x'])).permute(0, 3, 1, 2).contiguous()
        self.train_padded = F.pad(train, (PAD, PAD, PAD, PAD)).to(device)
        self.train_y = torch.from_numpy(np.load(paths['train_y'])).to(device)
        self.test_x = torch.from_numpy(np.load(paths['test_x'])).permute(0, 3, 1, 2).contiguous().to(device)
        self.test_y = torch.from_numpy(np.load(paths['test_y'])).to(device)
        for name, y in (('training', self.train_y), ('test', self.test_y)):
            if int(y.min()) < 0 or int(y.max()) >= meta['num_classes']:  # the one label check (graphs skip theirs)
                raise ValueError(f'{name} labels outside [0, {meta["num_classes"]})')
        self.train_targets = np.load(paths['train_y']).tolist()
        self.class_counts = list(meta['class_counts'])
        self.device = device
        if device.type == 'cuda':
            torch.cuda.synchronize(device)  # the runs read these from their own streams


@dataclass
class TrainConfig:
    """What every worker needs: the recipe and the engineering switches (picklable)."""
    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    nesterov: bool = False
    warmup_epochs: int = 5
    amp: str = 'bf16'
    channels_last: bool = True
    cuda_graphs: bool = True
    graph_check: bool = True
    compile: bool = False
    eval_batch_size: int = 1000


class RunTrainer:
    """Model, loss, optimizer, epoch buffers and (on CUDA) the captured training step of one (row, seed) run.

    All of the run's device work is issued on its own CUDA stream, so the runs of a process overlap on the GPU.
    """

    def __init__(self, spec: RunSpec, data: DeviceData, cfg: TrainConfig, schedule: Schedule, mean, std):
        self.spec = spec
        self.data = data
        self.cfg = cfg
        self.schedule = schedule
        self.device = data.device
        self.cuda = self.device.type == 'cuda'
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.amp_dtype = torch.bfloat16 if cfg.amp == 'bf16' else None
        self.input_dtype = self.amp_dtype or torch.float32
        self.mean, self.std = mean, std
        self.status = 'active'  # active | done | stopped | failed | skipped
        self.stop_reason: Optional[str] = None
        self.epochs_completed = 0
        self.train_losses: List[float] = []
        self.graph_info: Dict[str, Any] = dict(used=False)
        self.compiled = False
        num_train = len(data.train_targets)
        self.steps = num_train // cfg.batch_size  # the last incomplete batch is dropped (static shapes)
        if self.steps == 0:
            raise ValueError(f'{num_train} training images are fewer than one batch of {cfg.batch_size}')
        start = time.time()
        with self._on_stream():
            model = build_model(spec.row, spec.seed).to(self.device)
            if cfg.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.model = model.train()
            self.forward = model
            if cfg.compile:
                self.forward = torch.compile(model, dynamic=False)
                self.compiled = True
            self.loss_fn = build_loss(spec.row, data.class_counts, schedule).to(self.device)
            self.lr = torch.tensor(schedule.lr_at(0), dtype=torch.float32, device=self.device)
            self.optimizer = torch.optim.SGD(
                param_groups_weight_decay(model, cfg.weight_decay), lr=self.lr, momentum=cfg.momentum,
                nesterov=cfg.nesterov, fused=True)
            self.sampler = create_sampler(spec.row.sampler, data.train_targets, seed=spec.seed, num_replicas=1, rank=0)
            self.generator = torch.Generator(device=self.device)
            self.x = torch.empty((cfg.batch_size, 3, IMG_SIZE, IMG_SIZE), dtype=self.input_dtype, device=self.device)
            if cfg.channels_last:
                self.x = self.x.contiguous(memory_format=torch.channels_last)
            self.y = torch.zeros(cfg.batch_size, dtype=torch.long, device=self.device)
            self.loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
            self.init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.graphs: Dict[Tuple, Any] = {}
            self.graph = None
            self.mode_names: Tuple[str, ...] = ()
            if self.cuda and cfg.cuda_graphs:
                self._setup_graphs()
        self.sync()
        self.setup_s = time.time() - start

    # -- helpers ------------------------------------------------------------------------------------------------------
    def _on_stream(self):
        return torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype, cache_enabled=False)  # graphs: no cast cache

    def sync(self) -> None:
        if self.cuda:
            self.stream.synchronize()

    def set_schedule(self, schedule: Schedule) -> None:
        """Switch to a schedule of another length (only between epochs, while the two agree so far)."""
        self.schedule = schedule
        criterion = self.loss_fn.criterion
        if self.spec.row.loss == 'ldam' and 'drw_epoch' not in self.spec.row.loss_kwargs:
            criterion.drw_epoch = schedule.drw_epoch
        self.loss_fn.calib_warmup = schedule.epoch_at(self.spec.row.calib_warmup)

    def reset(self) -> None:
        """Back to the initial weights, buffers and empty momentum, in place (captured graphs stay valid)."""
        with self._on_stream(), torch.no_grad():
            self.model.load_state_dict(self.init_state)
            for state in self.optimizer.state.values():
                buf = state.get('momentum_buffer')
                if buf is not None:
                    buf.zero_()  # one step from a zero buffer equals torch's first step (buffer = gradient)
            self.loss_sum.zero_()

    def _snapshot(self) -> torch.Tensor:
        return torch.cat([v.detach().float().flatten() for v in self.model.state_dict().values()
                          if v.is_floating_point()])

    # -- training -----------------------------------------------------------------------------------------------------
    def _step_body(self) -> None:
        with self._autocast():
            output = self.forward(self.x, self.y)
            loss = self.loss_fn(output, self.y)
        loss.backward()
        self.optimizer.step()
        self.loss_sum.add_(loss.detach().float())

    def _eager_step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._step_body()

    def _setup_graphs(self) -> None:
        """Warm up (cuDNN autotuning, lazy kernel loading, the compile if any) in every loss mode, capture one graph
        per mode, check a replayed step against an eager one, and return to the initial state."""
        try:
            self.mode_names, modes = loss_modes(self.loss_fn, self.schedule.epochs)
            for epoch in modes.values():
                self.begin_epoch(epoch, select_graph=False)
                for i in range(3):
                    self._load_batch(i % self.steps)
                    self._eager_step()
            self.sync()
            self.reset()
            for key, epoch in modes.items():
                self.loss_fn.set_epoch(epoch)
                self.graphs[key] = self._capture_step()
            self.loss_fn.set_epoch(0)
            self.graph_info = dict(used=True, modes=len(self.graphs))
            if self.cfg.graph_check:
                self.graph_info['check'] = self._check_graphs(modes)
        except Exception as e:  # fall back to eager steps rather than lose the run
            _logger.warning(f'{self.spec.key}: CUDA graph capture failed, training eagerly: {e!r}')
            self.graphs = {}
            self.graph_info = dict(used=False, error=repr(e)[:500])
            self.sync()
        self.reset()

    def _capture_step(self):
        """The training step as a CUDA graph: gradients are allocated by the captured backward (none exist before),
        so each replay overwrites them; inputs are the static ``x`` / ``y``, the learning rate the ``lr`` tensor."""
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph, stream=self.stream):
            self._step_body()
        return graph

    def _check_graphs(self, modes: Mapping[Tuple, int]) -> Dict[str, Any]:
        """One replayed and one eager step from the same state, batch and a learning rate unlike the one at capture
        time: the updates of every weight and buffer must agree (bf16 noise aside), or graphs are switched off."""
        worst = 0.
        for key, epoch in modes.items():
            deltas = []
            for replay in (True, False):
                self.reset()
                self.begin_epoch(epoch)
                self.lr.fill_(0.0731)  # not a schedule value: a learning rate baked into the graph would show
                self._load_batch(0)
                before = self._snapshot()
                if replay:
                    self.graphs[key].replay()
                else:
                    self._eager_step()
                deltas.append(self._snapshot() - before)
            self.sync()
            err = float((deltas[0] - deltas[1]).norm() / deltas[1].norm().clamp_min(1e-12))
            worst = max(worst, err)
        ok = worst < 0.05
        if not ok:
            _logger.error(f'{self.spec.key}: a replayed step differs from an eager one (relative {worst:.3g}): '
                          f'training eagerly')
            self.graphs = {}
            self.graph_info['used'] = False
        return dict(ok=ok, rel_update_diff=worst)

    def begin_epoch(self, epoch: int, select_graph: bool = True) -> None:
        """Learning rate, loss mode, and the epoch's augmented inputs in sampling order (on the run's stream)."""
        with self._on_stream():
            self.lr.fill_(self.schedule.lr_at(epoch))
            self.loss_fn.set_epoch(epoch)
            if select_graph and self.graphs:
                mode = loss_mode(self.loss_fn, self.mode_names)
                self.graph = self.graphs.get(mode)
                if self.graph is None:
                    _logger.warning(f'{self.spec.key}: no graph for loss mode {dict(zip(self.mode_names, mode))}: '
                                    f'eager steps this epoch')
            order = self.sampler.global_indices(epoch)[:self.steps * self.cfg.batch_size].to(self.device)
            self.generator.manual_seed(augment_seed(self.spec.seed, epoch))
            self.epoch_x, self.epoch_y = augment_epoch(
                self.data.train_padded, self.data.train_y, order, self.generator, self.mean, self.std,
                self.input_dtype, self.cfg.channels_last)

    def _load_batch(self, step: int) -> None:
        b = self.cfg.batch_size
        self.x.copy_(self.epoch_x[step * b:(step + 1) * b])
        self.y.copy_(self.epoch_y[step * b:(step + 1) * b])

    def train_step(self, step: int) -> None:
        with self._on_stream():
            self._load_batch(step)
            if self.graph is not None:
                self.graph.replay()
            else:
                self._eager_step()

    def guarded(self, fn: Callable, *args) -> None:
        """``fn(*args)``; an exception fails this run (logged, recorded), not the others of the process."""
        try:
            fn(*args)
        except Exception as e:
            _logger.exception(f'{self.spec.key} failed in epoch {self.epochs_completed}')
            self.status, self.stop_reason = 'failed', f'error: {e!r}'[:500]

    def end_epoch(self) -> None:
        """Mean training loss of the epoch (after the device work is done); a non-finite loss stops the run."""
        self.sync()
        with self._on_stream():
            loss = float(self.loss_sum) / self.steps
            self.loss_sum.zero_()
        self.train_losses.append(loss)
        self.epochs_completed += 1
        if not math.isfinite(loss):
            self.status, self.stop_reason = 'failed', 'non_finite_loss'

    @torch.no_grad()
    def evaluate(self) -> Dict[str, Any]:
        """Top-1, per-class and class-group accuracy on the test images (``LongTailMetrics``); for a CAMC row also
        ``map_cam_corr``, the median over the test images of the spatial correlation between the calibration map
        ``A`` and the CAM of the predicted class (does the calibration highlight what the class map highlights?)."""
        self.model.eval()
        metrics = LongTailMetrics(NUM_CLASSES, train_counts=self.data.class_counts,
                                  class_groups=default_class_groups(NUM_CLASSES, self.data.class_counts))
        head = getattr(self.model, 'head', None)
        explain = getattr(head, 'calib', None) is not None
        corrs = []
        with self._on_stream():
            for start in range(0, len(self.data.test_y), self.cfg.eval_batch_size):
                x = normalize(self.data.test_x[start:start + self.cfg.eval_batch_size], self.mean, self.std,
                              torch.float32, self.cfg.channels_last)
                with (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype
                      else contextlib.nullcontext()):
                    if explain:
                        out = self.model.explain(x)
                        logits = out['logits']
                        corrs.append(spatial_correlation(out['calibration'].float(), out['cam'].float()))
                    else:
                        logits = self.model(x)
                metrics.update(logits.float(), self.data.test_y[start:start + self.cfg.eval_batch_size])
        self.sync()
        result = metrics.compute()
        if corrs:
            result['map_cam_corr'] = float(torch.cat(corrs).nanmedian())
        return result


def spatial_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over the positions of each pair of maps (B x H x W each), NaN for a flat map."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


# ---------------------------------------------------------------------------------------------------------------------
# Fitting the runs into the time budget

def fit_plan(
        reports: Sequence[Mapping[str, Any]], priority: Sequence[str], requested_epochs: int, done_epochs: int,
        time_left: float, policy: str, core: Sequence[str], min_epochs: int = 25, margin: float = 1.15,
) -> Dict[str, Any]:
    """Which runs to keep, and for how many epochs, so that they end within ``time_left`` seconds.

    Throughput is modelled as a constant aggregate rate A (epochs per second, summed over the runs that were
    measured concurrently): n runs of E epochs need ``n * (E - done) / A`` more seconds, times ``margin``.

    Policies: 'epochs' keeps every run and lowers the epochs; 'rows' keeps the epochs and drops runs from the end of
    ``priority``; 'auto' does 'rows' as long as the ``core`` runs all fit, and otherwise keeps only the core and
    lowers their epochs (a full schedule for the central comparison before breadth).

    Args:
        reports: Per process: ``runs`` (keys measured concurrently) and ``epoch_s`` (seconds per epoch of them).
        priority: Run keys, most important first.
        requested_epochs: Epochs asked for.
        done_epochs: Epochs already trained by every run.
        time_left: Seconds left for training.
        policy: 'auto', 'rows' or 'epochs'.
        core: Run keys that 'auto' keeps.
        min_epochs: Fewest epochs to plan (the warm-up of the schedule must not change).
        margin: Safety factor on the predicted time.

    Returns:
        ``epochs``, ``keep`` (run keys), ``drop`` (run keys), ``rate`` (A), ``predicted_s`` and ``policy``.
    """
    measured = [k for r in reports for k in r['runs']]
    rate = sum(len(r['runs']) / max(r['epoch_s'], 1e-9) for r in reports if r['runs'])
    ordered = [k for k in priority if k in measured]

    def seconds(n: int, epochs: int) -> float:
        return n * max(epochs - done_epochs, 0) / max(rate, 1e-9) * margin

    def max_epochs(n: int) -> int:
        epochs = done_epochs + int(time_left * max(rate, 1e-9) / (margin * max(n, 1)))
        epochs = min(requested_epochs, epochs)
        if epochs < requested_epochs and epochs >= 30:
            epochs -= epochs % 10  # round schedule: milestones at whole epochs
        return max(epochs, min_epochs, done_epochs + 1)

    keep, epochs = ordered, requested_epochs
    if policy in ('rows', 'auto'):
        n = len(ordered)
        while n > 0 and seconds(n, requested_epochs) > time_left:
            n -= 1
        keep = ordered[:n]
        if policy == 'auto':
            core_set = [k for k in ordered if k in set(core)]
            if not set(core_set) <= set(keep):
                keep = core_set
                epochs = max_epochs(len(keep))
        elif n == 0:
            keep, epochs = ordered[:1], max_epochs(1)
    elif policy == 'epochs':
        epochs = max_epochs(len(keep))
    else:
        raise ValueError(f'Unknown fit policy {policy!r}')
    return dict(policy=policy, epochs=epochs, keep=list(keep), drop=[k for k in ordered if k not in keep],
                rate_epochs_per_s=rate, predicted_s=seconds(len(keep), epochs), time_left_s=time_left)


# ---------------------------------------------------------------------------------------------------------------------
# Records

def scale_label(device_type: str, epochs_planned: int, epochs_completed: int, data: Mapping[str, Any],
                cfg: TrainConfig, measure: bool = False) -> str:
    """'full' only for the whole protocol: full data, the benchmark recipe, 200 planned and completed epochs.
    Otherwise 'measure', 'cpu-dry-run' (CPU, < 5 epochs or < 100 images in the largest class),
    'cpu-short-schedule' (CPU, the full data and recipe with fewer epochs), 'cpu-reduced' or 'reduced'."""
    if measure:
        return 'measure'
    recipe = all(getattr(cfg, k) == v for k, v in BENCHMARK_RECIPE.items())
    full_data = (data['train_per_class_max'] == FULL_TRAIN_PER_CLASS and data['test_per_class'] == FULL_TEST_PER_CLASS
                 and data['lt_seed'] == 0)
    if recipe and full_data and epochs_planned == epochs_completed == FULL_EPOCHS:
        return 'full'
    if device_type == 'cpu':
        if epochs_completed < 5 or data['train_per_class_max'] < 100:
            return 'cpu-dry-run'
        return 'cpu-short-schedule' if recipe and full_data and epochs_planned == epochs_completed else 'cpu-reduced'
    return 'reduced'


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{cpu_model()} ({os.cpu_count()} threads)'


def environment() -> Dict[str, Any]:
    """Versions, git commit and a hash of the code that ran (the device copy of the tree may have no .git)."""
    digest = hashlib.sha256()
    for path in sorted([Path(__file__).resolve(), *(REPO / 'timm_camc').rglob('*.py')]):
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    commit = git('rev-parse', '--short', 'HEAD') or os.environ.get('TIMM_CAMC_GIT_COMMIT', '') or 'unknown'
    return dict(
        git_commit=commit, git_dirty=bool(git('status', '--porcelain', '--untracked-files=no')),
        code_sha256=digest.hexdigest()[:16], torch=torch.__version__, timm=timm.__version__,
        timm_camc=timm_camc.__version__, python=platform.python_version(),
        command=' '.join(['python', *sys.argv]))


def make_record(t: RunTrainer, metrics: Optional[Mapping[str, Any]], ctx: Mapping[str, Any],
                epoch_times: Sequence[float]) -> Dict[str, Any]:
    row, cfg, data = t.spec.row, t.cfg, ctx['data']
    epochs = t.schedule.epochs
    complete = t.epochs_completed == epochs and t.status in ('active', 'done')
    rec = dict(
        benchmark='cifar10_lt_ablation', row=row.name, row_label=row.label, row_order=ROW_INDEX.get(row.name, 99),
        tier=row.tier, baseline=row.baseline, classifier=row.classifier, camc=row.camc, model=MODEL_NAME,
        model_kwargs=dict(row.model_kwargs), loss=row.loss, loss_kwargs=dict(row.loss_kwargs),
        loss_module=f'{type(t.loss_fn.criterion).__name__}({t.loss_fn.criterion.extra_repr()})',
        sampler=row.sampler, seed=t.spec.seed,
        epochs=epochs, epochs_completed=t.epochs_completed, complete=complete,
        stop_reason=None if complete else (t.stop_reason or 'unknown'),
        scale=scale_label(t.device.type, epochs, t.epochs_completed, data, cfg, ctx.get('measure', False)),
        schedule=t.schedule.to_dict(),
        recipe=dict(batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                    weight_decay=cfg.weight_decay, weight_decay_on='weights (not biases or norm parameters)',
                    steps_per_epoch=t.steps, drop_last=True, augmentation='pad 4 + random crop 32, horizontal flip'),
        data={k: data[k] for k in ('source', 'archive_sha256', 'imbalance', 'train_per_class_max', 'class_counts',
                                   'train_size', 'test_per_class', 'test_size', 'lt_seed')},
        train_loss=t.train_losses[-1] if t.train_losses else None,
        train_loss_curve=[round(x, 5) for x in t.train_losses],
        setup_s=round(t.setup_s, 2), epoch_s_median=round(float(np.median(epoch_times)), 4) if epoch_times else None,
        wall_s=round(_now() - ctx['run_start'], 2), device=str(t.device), device_name=device_name(t.device),
        amp=cfg.amp or 'fp32', channels_last=cfg.channels_last, cuda_graphs=t.graph_info, compiled=t.compiled,
        concurrent_runs=ctx['concurrent'], process=ctx['worker'], procs=ctx['procs'],
        **ctx['env'],
    )
    if metrics is not None:
        groups = metrics.get('class_groups') or {}
        rec.update(
            top1=metrics['top1'], top5=metrics['top5'], head=groups.get('head'), medium=groups.get('medium'),
            tail=groups.get('tail'), many_shot=metrics.get('many_shot'), medium_shot=metrics.get('medium_shot'),
            few_shot=metrics.get('few_shot'), shot_group_sizes=metrics.get('shot_group_sizes'),
            per_class=metrics['per_class'], test_samples=metrics['num_samples'],
            map_cam_corr=metrics.get('map_cam_corr'))
    return rec


# ---------------------------------------------------------------------------------------------------------------------
# Workers

class _InlineComm:
    """Worker <-> driver messages when the worker runs in the driver's process."""

    def __init__(self, driver: 'Driver'):
        self.driver = driver

    def fit(self, report: Dict[str, Any]) -> Dict[str, Any]:
        return self.driver.decide([report])

    def send(self, kind: str, payload: Any) -> None:
        self.driver.handle(kind, payload)


class _QueueComm:
    def __init__(self, worker: int, outbox, inbox):
        self.worker, self.outbox, self.inbox = worker, outbox, inbox

    def fit(self, report: Dict[str, Any]) -> Dict[str, Any]:
        self.outbox.put(('fit', report))
        return self.inbox.get()

    def send(self, kind: str, payload: Any) -> None:
        self.outbox.put((kind, payload))


def _device_for(spec: str, worker: int) -> torch.device:
    device = torch.device(spec)
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise RuntimeError('--device cuda but CUDA is not available')
        if device.index is None:
            device = torch.device('cuda', worker % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def run_worker(worker: int, runs: Sequence[RunSpec], job: Mapping[str, Any], comm) -> None:
    """Train ``runs`` (``streams`` at a time), evaluate them and send one record each."""
    threads = torch.get_num_threads()
    if job['threads']:
        torch.set_num_threads(job['threads'])
    try:
        _run_worker(worker, runs, job, comm)
    finally:
        torch.set_num_threads(threads)  # the worker may run inside the driver's process


def _run_worker(worker: int, runs: Sequence[RunSpec], job: Mapping[str, Any], comm) -> None:
    cfg: TrainConfig = job['cfg']
    try:
        device = _device_for(job['device'], worker)
        if device.type == 'cuda':
            torch.backends.cudnn.benchmark = True
        data = DeviceData(job['data'], device)
        cifar = timm.get_pretrained_cfg(f'{MODEL_NAME}.cifar10_lt_r100')
        mean = torch.tensor(cifar.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(cifar.std, device=device).view(1, 3, 1, 1)
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        if cfg.compile:  # one compiled model per run: dynamo's default cache would fall back to eager after 8
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 4 * len(runs))
            torch._dynamo.config.accumulated_cache_size_limit = max(
                torch._dynamo.config.accumulated_cache_size_limit, 8 * len(runs))
    except Exception as e:
        for spec in runs:
            comm.send('failed', dict(run=spec.key, error=f'worker {worker} setup: {e!r}', trace=traceback.format_exc()))
        comm.send('done', worker)
        return
    streams = job['streams'] or len(runs)
    waves = [list(runs[i:i + streams]) for i in range(0, len(runs), streams)]
    # fit after the first calib_epochs epochs, and again calib_epochs later on the rate of the runs that were kept
    fitting = job['fit'] != 'none' and not job['measure']
    fit_points = {job['calib_epochs'], 2 * job['calib_epochs']} if fitting else set()
    if fit_points and len(waves) > 1:
        _logger.warning(f'worker {worker}: --fit needs all runs of a process at once (--streams 0): not fitting')
        fit_points = set()
    schedule = Schedule.for_epochs(cfg.epochs, cfg.lr, cfg.warmup_epochs)
    for wave in waves:
        trainers = []
        for spec in wave:
            try:
                trainers.append(RunTrainer(spec, data, cfg, schedule, mean, std))
            except Exception as e:
                comm.send('failed', dict(run=spec.key, error=repr(e), trace=traceback.format_exc()))
        if not trainers:
            continue
        _logger.info(f'worker {worker}: {len(trainers)} runs set up ({sum(t.setup_s for t in trainers):.1f}s); '
                     f'cuda graphs: {sum(t.graph_info.get("used", False) for t in trainers)}/{len(trainers)}')
        epoch_times: List[float] = []
        run_start = _now()
        epoch = 0
        stop_at = job['measure_epochs'] if job['measure'] else None
        while True:
            active = [t for t in trainers if t.status == 'active']
            if not active or epoch >= schedule.epochs or (stop_at is not None and epoch >= stop_at):
                break
            if epoch in fit_points:
                fit_points.discard(epoch)
                plan = comm.fit(dict(worker=worker, runs=[t.spec.key for t in active], epoch=epoch,
                                     epochs=schedule.epochs,
                                     epoch_s=float(np.median(epoch_times[-job['calib_epochs']:]))))
                if plan['epochs'] != schedule.epochs:
                    schedule = Schedule.for_epochs(plan['epochs'], cfg.lr, cfg.warmup_epochs)
                    for t in trainers:
                        t.set_schedule(schedule)
                for t in active:
                    if t.spec.key not in plan['keep']:
                        t.status, t.stop_reason = 'skipped', 'dropped to fit the time budget'
                continue
            estimate = max(epoch_times[-3:]) if epoch_times else 0.
            if _now() + estimate > job['deadline']:
                for t in active:
                    t.status, t.stop_reason = 'stopped', 'time_budget'
                _logger.warning(f'worker {worker}: time budget reached before epoch {epoch}: stopping '
                                f'{len(active)} runs and evaluating them as they are')
                break
            tick = _now()
            for t in active:
                t.guarded(t.begin_epoch, epoch)
            for step in range(active[0].steps):
                for t in active:
                    if t.status == 'active':
                        t.guarded(t.train_step, step)
            for t in active:
                if t.status == 'active':
                    t.guarded(t.end_epoch)
            epoch_times.append(_now() - tick)
            comm.send('progress', dict(worker=worker, epoch=epoch, epoch_s=epoch_times[-1],
                                       losses={t.spec.key: t.train_losses[-1] for t in active}))
            epoch += 1
        if stop_at is not None:
            for t in trainers:
                if t.status == 'active':
                    t.status, t.stop_reason = 'stopped', 'measure'
        ctx = dict(data=job['data'], env=job['env'], run_start=run_start, concurrent=len(trainers), worker=worker,
                   procs=job['procs'], measure=job['measure'])
        for t in trainers:
            if t.status == 'skipped':
                comm.send('skipped', dict(run=t.spec.key, reason=t.stop_reason, epochs_completed=t.epochs_completed))
                continue
            if t.status == 'active':
                t.status = 'done'
            try:
                metrics = t.evaluate()
            except Exception as e:
                metrics = None
                t.stop_reason = f'evaluation failed: {e!r}'
            comm.send('record', make_record(t, metrics, ctx, epoch_times))
        del trainers
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    comm.send('done', worker)


def _worker_main(worker: int, runs, job, outbox, inbox, log_level: int) -> None:
    logging.basicConfig(level=log_level, format=f'%(asctime)s [w{worker}] %(message)s', datefmt='%H:%M:%S')
    comm = _QueueComm(worker, outbox, inbox)
    try:
        run_worker(worker, runs, job, comm)
    except Exception as e:  # never leave the driver waiting
        outbox.put(('failed', dict(run=f'worker{worker}', error=repr(e), trace=traceback.format_exc())))
        outbox.put(('done', worker))


# ---------------------------------------------------------------------------------------------------------------------
# The driver

class Driver:
    """Splits the runs over processes, answers their fit requests, and writes the results as they arrive."""

    def __init__(self, args: argparse.Namespace, runs: Sequence[RunSpec], job: Dict[str, Any], out_path: Path):
        self.args, self.runs, self.job, self.out_path = args, list(runs), job, out_path
        self.records: List[Dict[str, Any]] = []
        self.failed: List[Dict[str, Any]] = []
        self.skipped: List[Dict[str, Any]] = []
        self.plans: List[Dict[str, Any]] = []
        self.progress: Dict[int, Any] = {}
        self.start = job['start']

    def decide(self, reports: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        priority = [r.key for r in self.runs]
        # the core: the first two seeds of the most important tier in this run (tier 0 in the full grid)
        measured = {k for r in reports for k in r['runs']}
        top = min((r.row.tier for r in self.runs if r.key in measured), default=0)
        core = [r.key for r in self.runs if r.row.tier == top and r.seed_index < 2]
        time_left = self.job['deadline'] - _now()
        plan = fit_plan(reports, priority, max(r['epochs'] for r in reports), min(r['epoch'] for r in reports),
                        time_left, self.args.fit, core, margin=self.args.fit_margin)
        plan.update(at_epoch=min(r['epoch'] for r in reports), reports=list(reports))
        self.plans.append(plan)
        _logger.info(f'Fit ({plan["policy"]}) at epoch {plan["at_epoch"]}: {plan["rate_epochs_per_s"]:.2f} epochs/s '
                     f'over all runs, {time_left:.0f}s left -> {len(plan["keep"])} runs x {plan["epochs"]} epochs '
                     f'(predicted {plan["predicted_s"]:.0f}s); dropped: {plan["drop"] or "none"}')
        self.write()
        return plan

    def handle(self, kind: str, payload: Any) -> None:
        if kind == 'record':
            self.records.append(payload)
            r = payload
            _logger.info(f'{r["row"]}/s{r["seed"]}: top-1 {r.get("top1")} after {r["epochs_completed"]}/'
                         f'{r["epochs"]} epochs ({r["scale"]})')
            self.write()
        elif kind == 'failed':
            self.failed.append(payload)
            _logger.error(f'{payload["run"]} failed: {payload["error"]}\n{payload.get("trace", "")}')
            self.write()
        elif kind == 'skipped':
            self.skipped.append(payload)
        elif kind == 'progress':
            self.progress[payload['worker']] = payload
            if payload['epoch'] % self.args.log_every == 0:
                losses = ', '.join(f'{k} {v:.3f}' for k, v in payload['losses'].items())
                _logger.info(f'w{payload["worker"]} epoch {payload["epoch"]} {payload["epoch_s"]:.2f}s '
                             f'({_now() - self.start:.0f}s elapsed): {losses}')
                self.write()  # how far the runs got, should the process be killed

    def write(self) -> None:
        records = sorted(self.records, key=lambda r: (r['row_order'], r['seed']))
        scales = sorted({r['scale'] for r in records})
        doc = dict(
            benchmark='cifar10_lt_ablation',
            scale=scales[0] if len(scales) == 1 else ('mixed: ' + ', '.join(scales) if scales else 'none'),
            note=ablation_report.scale_note(scales[0] if len(scales) == 1 else 'mixed'),
            created_utc=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            elapsed_s=round(_now() - self.start, 1), config=self.job['config'], fit=self.plans,
            data={k: v for k, v in self.job['data'].items() if k != 'paths'},
            runs_planned=[r.key for r in self.runs],
            progress=self.progress, skipped=self.skipped, failed=self.failed, records=records, **self.job['env'])
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out_path.with_name('.' + self.out_path.name + '.tmp')
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, self.out_path)

    def run(self) -> None:
        procs = max(1, min(self.args.procs, len(self.runs)))
        shares = [self.runs[i::procs] for i in range(procs)]  # round-robin: every process gets high-priority runs
        if procs == 1:
            try:
                run_worker(0, shares[0], self.job, _InlineComm(self))
            except Exception as e:
                self.handle('failed', dict(run='worker0', error=repr(e), trace=traceback.format_exc()))
            self.write()
            return
        ctx = mp.get_context('spawn')
        outbox = ctx.Queue()
        inboxes = [ctx.Queue() for _ in range(procs)]
        workers = [ctx.Process(target=_worker_main, args=(w, shares[w], self.job, outbox, inboxes[w],
                                                          _logger.getEffectiveLevel()))
                   for w in range(procs)]
        for p in workers:
            p.start()
        done, fit_reports = set(), {}
        while len(done) < procs:
            try:
                kind, payload = outbox.get(timeout=1.0)
            except queue.Empty:
                for w, p in enumerate(workers):
                    if w not in done and not p.is_alive():
                        self.handle('failed', dict(run=f'worker{w}', error=f'process exited with {p.exitcode}'))
                        done.add(w)
                kind = None
            if kind == 'done':
                done.add(payload)
            elif kind == 'fit':
                fit_reports[payload['worker']] = payload
            elif kind is not None:
                self.handle(kind, payload)
            waiting = [w for w in range(procs) if w not in done]
            if fit_reports and all(w in fit_reports for w in waiting):
                plan = self.decide([fit_reports[w] for w in sorted(fit_reports)])
                for w in fit_reports:
                    inboxes[w].put(plan)
                fit_reports = {}
        for p in workers:
            p.join(timeout=30)
        self.write()


# ---------------------------------------------------------------------------------------------------------------------
# Command line

parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
group = parser.add_argument_group('Grid')
group.add_argument('--rows', default='all', help=f'comma-separated rows or "all": {", ".join(ROW_INDEX)}')
group.add_argument('--seeds', default='0,1', help='comma-separated seeds (weights, data order and augmentation)')
group.add_argument('--list-rows', action='store_true', help='print the row table and exit')
group = parser.add_argument_group('Data')
group.add_argument('--data-dir', default='', help='an extracted tree with train/<class>/ and test/<class>/')
group.add_argument('--data-tar', default='', help=f'the {ARCHIVE_NAME} archive (default: shared/datasets/)')
group.add_argument('--work-dir', default='/tmp/timm_camc_ablation', help='extraction and .npy cache')
group.add_argument('--imbalance', type=float, default=100., help='imbalance factor n_max / n_min')
group.add_argument('--lt-seed', type=int, default=0, help='seed of the long-tailed subset')
group.add_argument('--train-per-class-max', type=int, default=FULL_TRAIN_PER_CLASS,
                   help='images of the largest class (5000: the full CIFAR-10-LT); the profile keeps its shape')
group.add_argument('--test-per-class', type=int, default=FULL_TEST_PER_CLASS, help='test images per class')
group = parser.add_argument_group('Recipe')
group.add_argument('--epochs', type=int, default=FULL_EPOCHS)
group.add_argument('--batch-size', type=int, default=128)
group.add_argument('--lr', type=float, default=0.1)
group.add_argument('--momentum', type=float, default=0.9)
group.add_argument('--nesterov', action='store_true', help='Nesterov momentum (LDAM-DRW uses plain momentum)')
group.add_argument('--weight-decay', type=float, default=2e-4)
group.add_argument('--warmup-epochs', type=int, default=5)
group = parser.add_argument_group('Engineering')
group.add_argument('--device', default='', help='cuda or cpu (default: cuda when available)')
group.add_argument('--procs', type=int, default=1, help='processes; the runs are dealt out round-robin')
group.add_argument('--streams', type=int, default=0, help='runs trained at once per process (0: all of them)')
group.add_argument('--amp', choices=('bf16', 'none'), default=None, help='default: bf16 on CUDA, none on the CPU')
group.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None,
                   help='default: on for CUDA')
group.add_argument('--cuda-graphs', action=argparse.BooleanOptionalAction, default=True)
group.add_argument('--graph-check', action=argparse.BooleanOptionalAction, default=True,
                   help='compare a replayed step with an eager one for every run before training')
group.add_argument('--compile', action='store_true', help='torch.compile the model (experimental; off by default)')
group.add_argument('--threads', type=int, default=0,
                   help='torch CPU threads per process (0: cores / procs); on a busy CPU 1 can be much faster')
group = parser.add_argument_group('Time')
group.add_argument('--time-budget', type=float, default=0.,
                   help='seconds from start; runs stop cleanly (and are evaluated) before exceeding it (0: none)')
group.add_argument('--fit', choices=('none', 'auto', 'rows', 'epochs'), default='none',
                   help='after --calib-epochs, keep the runs / epochs that fit the time budget (see fit_plan)')
group.add_argument('--calib-epochs', type=int, default=3, help='epochs measured before fitting')
group.add_argument('--fit-margin', type=float, default=1.15, help='safety factor on the predicted time')
group.add_argument('--reserve', type=float, default=20., help='seconds kept for evaluation and writing')
group.add_argument('--measure', action='store_true', help='train --measure-epochs epochs of every run, report epochs/s')
group.add_argument('--measure-epochs', type=int, default=4)
group = parser.add_argument_group('Output')
group.add_argument('--out', default=str(REPO / 'benchmarks' / 'results'), help='results folder')
group.add_argument('--tag', default='', help='results file ablation_<tag>.json (default: from the scale)')
group.add_argument('--log-every', type=int, default=10, help='log the training losses every N epochs')
group.add_argument('--log-file', default='', help='also write the log here')


def _default_tag(args: argparse.Namespace, device_type: str) -> str:
    if args.measure:
        return 'measure'
    full = (args.epochs == FULL_EPOCHS and args.train_per_class_max == FULL_TRAIN_PER_CLASS
            and args.test_per_class == FULL_TEST_PER_CLASS)
    if device_type == 'cpu':
        return 'cpu_dry_run' if args.epochs < 5 or args.train_per_class_max < 100 else 'cpu_reduced'
    return 'gpu' if full else 'gpu_reduced'  # --fit may still shorten a 'gpu' run: the records' scale tells


def measure_summary(records: Sequence[Mapping[str, Any]], elapsed_s: float, time_budget: float,
                    reserve: float, margin: float) -> str:
    """Throughput of a --measure run (per process and together) and what it means for 200-epoch runs.

    Args:
        records: The measure run's records.
        elapsed_s: Wall time of the whole measure run.
        time_budget: The budget of the real run to plan for (0: none).
        reserve: Seconds the real run keeps for evaluation and writing.
        margin: The fit's safety factor.
    """
    lines = []
    by_proc: Dict[int, List[Mapping[str, Any]]] = {}
    for r in records:
        by_proc.setdefault(r['process'], []).append(r)
    rate, setup = 0., 0.
    for proc, recs in sorted(by_proc.items()):
        epoch_s = recs[0]['epoch_s_median'] or float('nan')
        proc_setup = sum(r['setup_s'] for r in recs)
        rate += len(recs) / epoch_s
        setup = max(setup, proc_setup)
        graphs = sum(bool(r['cuda_graphs'].get('used')) for r in recs)
        lines.append(f'process {proc}: {len(recs)} runs at once, {epoch_s:.3f}s per epoch: {1 / epoch_s:.2f} '
                     f'epochs/s per run, {len(recs) / epoch_s:.2f} together; set-up {proc_setup:.1f}s; '
                     f'CUDA graphs {graphs}/{len(recs)}')
        for r in recs:
            check = r['cuda_graphs'].get('check') or {}
            lines.append(f'    {r["row"]:<22} s{r["seed"]}  set-up {r["setup_s"]:.1f}s  graph check '
                         f'{check.get("rel_update_diff", "-")}  train loss {r["train_loss"]}')
    n_runs = len(records)
    start_up = max(elapsed_s - sum(r['wall_s'] for r in records[:1]) - setup, 0.)
    lines.append(f'aggregate {rate:.2f} epochs/s. {n_runs} runs x {FULL_EPOCHS} epochs need '
                 f'{n_runs * FULL_EPOCHS / max(rate, 1e-9):.0f}s of training, after ~{start_up:.0f}s start-up and '
                 f'{setup:.0f}s set-up')
    if time_budget:
        training = time_budget - reserve - start_up - setup
        fit = rate * training / (FULL_EPOCHS * margin)
        lines.append(f'--time-budget {time_budget:.0f}: ~{training:.0f}s of training hold {fit:.1f} runs of '
                     f'{FULL_EPOCHS} epochs (margin {margin}), or all {n_runs} runs for '
                     f'{rate * training / (n_runs * margin):.0f} epochs')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parser.parse_args(argv)
    if args.list_rows:
        for row in ROWS:
            print(f'{row.name:<22} tier {row.tier}  {row.classifier:<12} {row.loss:<15} {row.label}')
        return {}
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
    start = _now()
    os.environ.setdefault('CUDA_DEVICE_MAX_CONNECTIONS', '32')  # one hardware queue per stream (before CUDA init)
    args.device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    device_type = torch.device(args.device).type
    if device_type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda, but CUDA is not available')
    rows = select_rows(args.rows)
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    runs = plan_runs(rows, seeds)
    amp = args.amp or ('bf16' if device_type == 'cuda' else 'none')
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, nesterov=args.nesterov, warmup_epochs=args.warmup_epochs,
        amp='' if amp == 'none' else amp,
        channels_last=args.channels_last if args.channels_last is not None else device_type == 'cuda',
        cuda_graphs=args.cuda_graphs and device_type == 'cuda', graph_check=args.graph_check, compile=args.compile)
    if args.fit != 'none' and not args.time_budget:
        parser.error('--fit needs --time-budget')
    out_dir = Path(args.out)
    out_path = out_dir / f'ablation_{args.tag or _default_tag(args, device_type)}.json'
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(args.log_file, mode='w') if args.log_file else logging.NullHandler()
    log_file.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
    logging.getLogger().addHandler(log_file)
    _logger.info(f'{len(runs)} runs ({len(rows)} rows x seeds {seeds}), {args.epochs} epochs, device {args.device}, '
                 f'{args.procs} process(es), results -> {out_path}')

    work_dir = Path(args.work_dir)
    data = prepare_data(args.data_dir, args.data_tar, work_dir, args.train_per_class_max, args.imbalance,
                        args.lt_seed, args.test_per_class)
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.procs) if args.procs > 1 else 0)
    job = dict(cfg=cfg, data=data, env=environment(), device=args.device, procs=args.procs, streams=args.streams,
               threads=threads, start=start, deadline=start + args.time_budget if args.time_budget else float('inf'),
               fit=args.fit, calib_epochs=args.calib_epochs, measure=args.measure,
               measure_epochs=args.measure_epochs, config=dict(vars(args), amp=amp, resolved=asdict(cfg)))
    if args.time_budget:
        job['deadline'] -= args.reserve  # training stops in time to evaluate and write the results
    driver = Driver(args, runs, job, out_path)
    driver.run()
    _logger.info(f'Done in {_now() - start:.0f}s: {len(driver.records)} records, {len(driver.failed)} failed, '
                 f'{len(driver.skipped)} skipped -> {out_path}')
    if args.measure:
        _logger.info('Throughput:\n' + measure_summary(driver.records, _now() - start, args.time_budget,
                                                        args.reserve, args.fit_margin))
    elif driver.records:
        _logger.info('\n' + ablation_report.render(driver.records))
    logging.getLogger().removeHandler(log_file)
    log_file.close()
    return dict(path=str(out_path), records=driver.records, failed=driver.failed, skipped=driver.skipped,
                fit=driver.plans)


if __name__ == '__main__':
    main()
