""" Long-tailed subsets and list files

* ``long_tail_counts``: per-class image counts of an exponential or step profile with imbalance factor
  IF = n_max / n_min (Cui et al. 2019, Cao et al. 2019), ``n_i = int(n_max * IF ** (-i / (K - 1)))``.
* ``long_tail_indices``: the LDAM-DRW construction: each class's indices shuffled with one seeded generator,
  class by class in label order, keeping the first ``n_i``.
* ``read_list_file`` / ``write_list_file``: the ``relative/path label`` format of ImageNet-LT, Places-LT and
  iNaturalist 2018 (Liu et al. 2019; Van Horn et al. 2018).

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import logging
import os
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ['long_tail_counts', 'long_tail_indices', 'read_list_file', 'write_list_file', 'PROFILES']

_logger = logging.getLogger(__name__)

PROFILES = ('exp', 'step')


def long_tail_counts(
        max_count: int,
        num_classes: int,
        imbalance: float,
        profile: str = 'exp',
        step_fraction: float = 0.5,
) -> List[int]:
    """Per-class image counts of a long-tailed profile, head class first.

    Args:
        max_count: Images of the largest class.
        num_classes: Number of classes.
        imbalance: Imbalance factor ``n_max / n_min`` (>= 1; 1 keeps the data balanced).
        profile: 'exp' (exponential decay) or 'step' (the last ``step_fraction`` of the classes get
            ``max_count / imbalance``).
        step_fraction: Fraction of minority classes of the step profile.

    Returns:
        Counts for classes 0..K-1, e.g. CIFAR-10 at IF 100: [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50].
    """
    if profile not in PROFILES:
        raise ValueError(f'Unknown long-tail profile {profile!r}, expected one of {PROFILES}')
    if imbalance < 1:
        raise ValueError(f'The imbalance factor is n_max / n_min and must be >= 1, got {imbalance}')
    if num_classes < 1 or max_count < 1:
        raise ValueError(f'Need at least one class and one image, got {num_classes} classes, max_count {max_count}')
    if profile == 'exp':
        if num_classes == 1:
            return [int(max_count)]
        counts = [int(max_count * imbalance ** (-i / (num_classes - 1))) for i in range(num_classes)]
    else:
        if not 0 < step_fraction < 1:
            raise ValueError(f'step_fraction must be in (0, 1), got {step_fraction}')
        num_head = num_classes - int(num_classes * step_fraction)
        counts = [int(max_count)] * num_head + [int(max_count / imbalance)] * (num_classes - num_head)
    empty = [i for i, n in enumerate(counts) if n == 0]
    if empty:
        raise ValueError(
            f'Imbalance factor {imbalance} leaves classes {empty[:10]} with no image ({max_count} images in the '
            f'largest class): lower the imbalance factor (at most {max_count}).')
    return counts


def long_tail_indices(
        targets: Sequence[int],
        counts: Sequence[int],
        seed: int = 0,
        class_names: Optional[Sequence[str]] = None,
) -> List[int]:
    """Indices of a long-tailed subset: per class (in label order), a seeded shuffle, then the first ``counts[c]``.

    Args:
        targets: Label of every sample of the full (balanced) dataset.
        counts: Wanted images per class.
        seed: Seed of the one generator that shuffles the classes in turn.
        class_names: Names for error messages.

    Returns:
        Sorted sample indices of the subset.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if len(counts) <= int(targets.max(initial=-1)):
        raise ValueError(f'counts has {len(counts)} classes but the labels go up to {int(targets.max())}')
    rng = np.random.RandomState(seed)
    selected = []
    for c, wanted in enumerate(counts):
        idx = np.flatnonzero(targets == c)
        if len(idx) == 0:
            name = f' ({class_names[c]})' if class_names is not None else ''
            raise ValueError(f'Class {c}{name} has no images in the source dataset')
        if len(idx) < wanted:
            _logger.warning(f'Class {c} has {len(idx)} images, fewer than the {wanted} its profile asks for: '
                            f'keeping all {len(idx)}.')
        rng.shuffle(idx)
        selected.append(idx[:wanted])
    return sorted(np.concatenate(selected).tolist())


def read_list_file(path: str) -> List[Tuple[str, int]]:
    """Read ``relative/path label`` lines (blank lines and ``#`` comments skipped).

    Raises:
        FileNotFoundError: The list file does not exist.
        ValueError: A malformed line, with its line number.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'List file not found: {path}')
    samples = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                raise ValueError(f'{path}:{line_no}: expected "relative/path label", got {line!r}')
            if int(parts[1]) < 0:
                raise ValueError(f'{path}:{line_no}: negative label {parts[1]}')
            samples.append((parts[0], int(parts[1])))
    if not samples:
        raise ValueError(f'List file {path} lists no images')
    return samples


def write_list_file(path: str, samples: Sequence[Tuple[str, int]], header: str = '') -> None:
    """Write ``relative/path label`` lines atomically (a temporary file renamed into place)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-', suffix='.txt')
    try:
        with os.fdopen(fd, 'w') as f:
            for line in header.splitlines():
                f.write(f'# {line}\n')
            for rel_path, label in samples:
                if '\n' in rel_path:
                    raise ValueError(f'Path with a line break cannot go into a list file: {rel_path!r}')
                f.write(f'{rel_path} {label}\n')
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
