#!/usr/bin/env python3
"""Does the long-tail loader keep up with the training step? resnet32_camc_lt on CIFAR-sized JPEGs.

Measures, in one run, images/s of (1) the training loader alone (decode + pad-crop/flip + class-balanced sampler +
timm's fast collate and prefetcher), (2) the training step alone (forward + backward + SGD on a batch already in
memory) and (3) both together, as train.py runs them. The loader never starves the step when (1) is well above (2)
and (3) is close to (2).

    python benchmarks/loader_vs_step.py --data-dir DIR            # class-per-folder tree with train/
    python benchmarks/loader_vs_step.py --tar ../shared/datasets/cifar10-jpeg.tar.gz
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import timm
import timm_camc
from timm.data import resolve_data_config
from bench_utils import data_dir_or_tar, machine_info
from timm_camc.data import create_lt_datasets, create_sampler, create_train_loader, create_train_transform

parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
parser.add_argument('--data-dir', default='', help='class-per-folder tree with a train/ split')
parser.add_argument('--tar', default='', help='or the CIFAR-10 JPEG archive, extracted to a temporary folder')
parser.add_argument('--imbalance', type=float, default=100.)
parser.add_argument('--sampler', default='class_balanced')
parser.add_argument('--batch-size', type=int, default=128)
parser.add_argument('--workers', type=int, default=2)
parser.add_argument('--batches', type=int, default=40, help='timed batches per measurement')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'loader_vs_step.json'))


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _rate(n_images, start, device):
    _sync(device)
    return n_images / (time.perf_counter() - start)


def main():
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = data_dir_or_tar(args.data_dir, args.tar, tmp, prefix='train/')
        train_ds, _, info = create_lt_datasets(data_dir, val_split='', imbalance=args.imbalance)
        model = timm.create_model('resnet32_camc_lt', num_classes=info.num_classes).to(device).train()
        cfg = resolve_data_config(model=model)
        sampler = create_sampler(args.sampler, train_ds.targets, seed=0)
        transform = create_train_transform(cfg['input_size'], train_crop_mode='pad', mean=cfg['mean'], std=cfg['std'])
        loader = create_train_loader(train_ds, sampler, args.batch_size, transform, num_workers=args.workers,
                                     device=device, mean=cfg['mean'], std=cfg['std'])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = timm_camc.CamcLoss(torch.nn.CrossEntropyLoss())

        def step(x, y):
            loss = loss_fn(model(x, y), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def batches():
            while True:
                sampler.set_epoch(sampler.epoch + 1)
                yield from loader

        it = batches()
        x, y = next(it)  # workers started, first batch ready
        for _ in range(3):
            step(x, y)

        start = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        loader_rate = _rate(args.batches * args.batch_size, start, device)

        start = time.perf_counter()
        for _ in range(args.batches):
            step(x, y)
        step_rate = _rate(args.batches * args.batch_size, start, device)

        start = time.perf_counter()
        for _ in range(args.batches):
            step(*next(it))
        both_rate = _rate(args.batches * args.batch_size, start, device)

    record = dict(
        benchmark='loader_vs_step', model='resnet32_camc_lt', sampler=args.sampler, imbalance=args.imbalance,
        train_images=len(train_ds), batch_size=args.batch_size, workers=args.workers, **machine_info(args.device),
        loader_img_s=loader_rate, step_img_s=step_rate, loader_and_step_img_s=both_rate,
        loader_over_step=loader_rate / step_rate, end_to_end_over_step=both_rate / step_rate,
    )
    print(f'loader alone {loader_rate:.0f} img/s | step alone {step_rate:.0f} img/s | together {both_rate:.0f} img/s '
          f'(loader / step {record["loader_over_step"]:.2f}x, together / step {record["end_to_end_over_step"]:.2f}x)')
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
