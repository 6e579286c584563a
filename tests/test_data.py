"""Long-tailed subsets, list files and image datasets, on real CIFAR-10 JPEG images where it matters."""
import shutil

import pytest
import torch

from timm_camc.data import (
    CorruptImageError, ImageListDataset, create_lt_datasets, create_train_transform, long_tail_counts,
    long_tail_indices, read_list_file, write_list_file,
)


def test_cifar10_counts_at_imbalance_100():
    assert long_tail_counts(5000, 10, 100) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def test_step_profile_and_balanced():
    assert long_tail_counts(500, 10, 10, profile='step') == [500] * 5 + [50] * 5
    assert long_tail_counts(100, 4, 1) == [100] * 4


@pytest.mark.parametrize('kwargs, match', [
    (dict(imbalance=0.5), 'must be >= 1'),
    (dict(imbalance=1e6), r'leaves classes \[.*\] with no image'),
    (dict(profile='linear'), 'Unknown long-tail profile'),
])
def test_long_tail_counts_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        long_tail_counts(**dict(dict(max_count=500, num_classes=10, imbalance=10), **kwargs))


def test_long_tail_indices_is_per_class_seeded_and_deterministic():
    targets = torch.arange(4).repeat_interleave(50).tolist()
    counts = [50, 20, 8, 3]
    a = long_tail_indices(targets, counts, seed=0)
    assert a == long_tail_indices(targets, counts, seed=0)
    assert a != long_tail_indices(targets, counts, seed=1)
    assert [sum(targets[i] == c for i in a) for c in range(4)] == counts
    with pytest.raises(ValueError, match='Class 2 .* has no images'):
        long_tail_indices([0, 1, 3], [1, 1, 1, 1], class_names=['a', 'b', 'c', 'd'])


def test_list_file_roundtrip_and_errors(tmp_path):
    path = tmp_path / 'sub' / 'list.txt'
    samples = [('train/cat/0001.jpg', 3), ('train/dir with space/x.jpg', 0)]
    write_list_file(str(path), samples, header='a header\nsecond line')
    assert read_list_file(str(path)) == samples
    assert not list(path.parent.glob('.tmp-*'))
    bad = tmp_path / 'bad.txt'
    bad.write_text('a.jpg 1\n# comment\nb.jpg cat\n')
    with pytest.raises(ValueError, match=r'bad\.txt:3: expected "relative/path label"'):
        read_list_file(str(bad))
    with pytest.raises(FileNotFoundError, match='List file not found'):
        read_list_file(str(tmp_path / 'missing.txt'))


def test_image_dataset_missing_and_corrupt_images(cifar10_small, tmp_path):
    root = tmp_path / 'data'
    shutil.copytree(cifar10_small / 'test' / 'cat', root / 'cat')
    good = sorted(p.name for p in (root / 'cat').iterdir())
    (root / 'cat' / good[1]).write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')

    with pytest.raises(FileNotFoundError, match=r'1 of 3 listed images do not exist .*nope\.jpg'):
        ImageListDataset(str(root), [(f'cat/{good[0]}', 0), ('cat/nope.jpg', 0), (f'cat/{good[2]}', 0)])

    samples = [(f'cat/{n}', 0) for n in good[:3]]
    strict = ImageListDataset(str(root), samples)
    assert strict[0][0].size == (32, 32)
    with pytest.raises(CorruptImageError, match=good[1]):
        strict[1]

    lenient = ImageListDataset(str(root), samples, skip_corrupt=True)
    img, target = lenient[1]  # the next readable image instead
    assert img.size == (32, 32) and target == 0 and lenient.num_skipped == 1


def test_long_tailed_subset_of_real_images(cifar10_small, tmp_path):
    train, val, info = create_lt_datasets(
        str(cifar10_small), val_split='test', imbalance=10, lt_seed=0, output_dir=str(tmp_path))
    assert info.class_counts == long_tail_counts(100, 10, 10) == [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    assert info.class_names[:3] == ['airplane', 'automobile', 'bird']
    assert len(train) == sum(info.class_counts) and len(val) == 200
    # the written list file reproduces the subset exactly
    assert read_list_file(info.subset_list) == train.samples
    again, _, _ = create_lt_datasets(str(cifar10_small), val_split='', imbalance=10, lt_seed=0)
    assert again.samples == train.samples
    other, _, _ = create_lt_datasets(str(cifar10_small), val_split='', imbalance=10, lt_seed=1)
    assert other.samples != train.samples

    img, target = train[0]
    transform = create_train_transform((3, 32, 32), train_crop_mode='pad', use_prefetcher=False,
                                       mean=(0.5,) * 3, std=(0.5,) * 3)
    assert transform(img).shape == (3, 32, 32)


def test_dataset_errors(cifar10_small, tmp_path):
    with pytest.raises(FileNotFoundError, match='Data folder not found'):
        create_lt_datasets(str(tmp_path / 'nowhere'))
    (tmp_path / 'empty' / 'train').mkdir(parents=True)
    with pytest.raises(ValueError, match='No images found under'):
        create_lt_datasets(str(tmp_path / 'empty'), val_split='')
    with pytest.raises(ValueError, match='leaves classes'):
        create_lt_datasets(str(cifar10_small), val_split='', imbalance=1000)
    with pytest.raises(ValueError, match=r'2 classes have no training image: \[10, 11\]'):
        create_lt_datasets(str(cifar10_small), val_split='', num_classes=12)
    with pytest.raises(ValueError, match=r'labels \[10\] are outside \[0, 5\)'):
        lst = tmp_path / 'list.txt'
        write_list_file(str(lst), [('train/cat/' + p.name, 10) for p in (cifar10_small / 'train' / 'cat').iterdir()])
        create_lt_datasets(str(cifar10_small), train_list=str(lst), val_split='', num_classes=5)
