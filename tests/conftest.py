"""Shared fixtures: a small class-per-folder tree of real CIFAR-10 JPEG images.

The images come from ``../shared/datasets/cifar10-jpeg.tar.gz`` next to the repository (CI has it; a user's clone
does not, and the tests that need it are skipped there). ``TIMM_CAMC_CIFAR10_TAR`` points elsewhere.
"""
import hashlib
import os
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CIFAR10_TAR = Path(os.environ.get('TIMM_CAMC_CIFAR10_TAR', REPO.parent / 'shared' / 'datasets' / 'cifar10-jpeg.tar.gz'))
CIFAR10_SHA256 = '323060915b46425be8b0590442ab183a24e94c86b85d3e0ce7a12359ff856e54'
CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


def extract_cifar10_subset(dest: Path, train_per_class: int, test_per_class: int) -> Path:
    """Extract the first N images per class of each split (archive order) into ``dest/{train,test}/<class>/``."""
    if not CIFAR10_TAR.is_file():
        pytest.skip(f'real-image tests need {CIFAR10_TAR} (the shared CIFAR-10 JPEG archive), absent in this clone')
    digest = hashlib.sha256(CIFAR10_TAR.read_bytes()).hexdigest()
    assert digest == CIFAR10_SHA256, f'{CIFAR10_TAR} is not the expected archive (sha256 {digest})'
    wanted = dict(train=train_per_class, test=test_per_class)
    taken = {}
    with tarfile.open(CIFAR10_TAR) as tar:
        for member in tar:
            parts = member.name.split('/')
            if not member.isfile() or len(parts) != 3 or parts[0] not in wanted:
                continue
            key = (parts[0], parts[1])
            if taken.get(key, 0) >= wanted[parts[0]]:
                continue
            taken[key] = taken.get(key, 0) + 1
            target = dest / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            if len(taken) == 20 and all(taken[k] >= wanted[k[0]] for k in taken):
                break
    return dest


@pytest.fixture(scope='session')
def cifar10_small(tmp_path_factory) -> Path:
    """100 training and 20 test images per class of the real CIFAR-10 JPEGs."""
    return extract_cifar10_subset(tmp_path_factory.mktemp('cifar10'), train_per_class=100, test_per_class=20)
