#!/usr/bin/env python3
"""Speed of the long-tail samplers: construction plus one epoch of indices at iNaturalist 2018 scale.

The targets are synthetic, with the totals of iNaturalist 2018 (437,513 training images over 8,142 classes) and
its head / tail sizes (1,000 and 2 images, an imbalance of 500): ``n(x) = n_min * IF ** (1 - x ** beta)`` for ``x``
from 0 (head) to 1 (tail), ``beta`` solved so that the counts sum to the total (``beta = 1`` is the plain
exponential profile, which cannot reach both the totals and the imbalance with integer counts; ``beta ~ 0.51``
gives a median class of 13 images). Labels are shuffled, as a dataset's are. Each sampler is timed from a Python
list of labels (as a dataset gives them) through ``list(iter(sampler))``, which is what a DataLoader consumes; the
best of ``--repeats`` runs is reported (on a shared machine the median can be far slower).

    python benchmarks/sampler_speed.py
    python benchmarks/sampler_speed.py --num-replicas 8 --threads 1
"""
import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench_utils import machine_info
from timm_camc.data import create_sampler

parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
parser.add_argument('--num-images', type=int, default=437_513)
parser.add_argument('--num-classes', type=int, default=8_142)
parser.add_argument('--max-count', type=int, default=1000)
parser.add_argument('--imbalance', type=float, default=500.)
parser.add_argument('--num-replicas', type=int, default=1, help='time rank 0 of this many')
parser.add_argument('--repeats', type=int, default=5)
parser.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: leave the default)')
parser.add_argument('--epochs', type=int, default=200, help='total_epochs of the progressive sampler')
parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'sampler_speed.json'))

SAMPLERS = [
    ('instance', {}),
    ('class_balanced', {}),
    ('sqrt', {}),
    ('power', dict(power=0.25)),
    ('progressive', None),  # total_epochs from --epochs, timed at the middle epoch
    ('class_aware', dict(samples_per_class=1)),
    ('class_aware', dict(samples_per_class=4)),
    ('repeat_factor', dict(threshold=0.001)),
]


def long_tail_profile(total: int, num_classes: int, max_count: int, imbalance: float) -> np.ndarray:
    """Integer class counts, head first: ``max_count`` down to ``max_count / imbalance``, summing to ``total``."""
    min_count = max_count / imbalance
    x = np.linspace(0., 1., num_classes)

    def counts(beta):
        return min_count * imbalance ** (1. - x ** beta)

    lo, hi = 1e-3, 1e3  # the sum grows with beta
    if not counts(lo).sum() <= total <= counts(hi).sum():
        raise ValueError(f'no profile from {max_count} to {min_count:g} sums to {total} over {num_classes} classes')
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if counts(mid).sum() > total else (mid, hi)
    real = counts(math.sqrt(lo * hi))
    real *= total / real.sum()
    out = np.floor(real).astype(np.int64)
    out[np.argsort(out - real)[:total - out.sum()]] += 1  # largest remainders round up
    return out


def main():
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    counts = long_tail_profile(args.num_images, args.num_classes, args.max_count, args.imbalance)
    labels = np.repeat(np.arange(args.num_classes), counts)
    np.random.default_rng(0).shuffle(labels)
    targets = labels.tolist()
    print(
        f'{len(targets):,} images, {args.num_classes:,} classes, counts {counts.max()} .. {counts.min()} '
        f'(median {int(np.median(counts))}), rank 0 of {args.num_replicas}, {torch.get_num_threads()} threads')

    rows = []
    for name, kwargs in SAMPLERS:
        kwargs = dict(total_epochs=args.epochs) if kwargs is None else kwargs
        build, epoch, total = [], [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            sampler = create_sampler(name, targets, num_replicas=args.num_replicas, rank=0, **kwargs)
            t1 = time.perf_counter()
            sampler.set_epoch(args.epochs // 2 + r)
            indices = list(iter(sampler))
            t2 = time.perf_counter()
            assert len(indices) == len(sampler) and isinstance(indices[0], int)
            build.append(t1 - t0)
            epoch.append(t2 - t1)
            total.append(t2 - t0)
        label = name + ''.join(f' {k}={v}' for k, v in kwargs.items())
        rows.append(dict(
            sampler=label,
            num_samples=sampler.num_samples,
            per_rank=len(sampler),
            build_s=min(build),
            epoch_s=min(epoch),
            total_s=min(total),
            total_median_s=statistics.median(total),
        ))

    header = (
        f'{"sampler":<32} {"num_samples":>11} {"per rank":>9} {"build s":>8} {"epoch s":>8} {"total s":>8} '
        f'{"median":>8}')
    print(header)
    print('-' * len(header))
    for row in rows:
        print(
            f'{row["sampler"]:<32} {row["num_samples"]:>11,} {row["per_rank"]:>9,} {row["build_s"]:>8.3f} '
            f'{row["epoch_s"]:>8.3f} {row["total_s"]:>8.3f} {row["total_median_s"]:>8.3f}')

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = dict(
        machine=machine_info('cpu'),
        config=dict(vars(args), counts_max=int(counts.max()), counts_min=int(counts.min())),
        results=rows,
    )
    out.write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
