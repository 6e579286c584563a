#!/usr/bin/env python3
"""End-to-end train.py throughput against the bare training step: is the CIFAR recipe as fast as the model allows?

Measures in one run, on one machine, with the recipe's settings (``configs/cifar10_lt_r100.yaml``: resnet32_camc_lt,
batch 128, bf16 autocast + channels_last where the device supports them):

1. the bare training step: forward with labels, ``CamcLoss``, backward, SGD step, on one batch already in memory;
2. ``train.py`` with its default loader (``--in-memory auto``: decoded images, batched pad-crop-flip on the device);
3. ``train.py --in-memory off`` (the PIL loader with ``-j 2`` workers).

Rows 2 and 3 train on CIFAR-10-LT IF 100 (12,406 images) and take the rate of their last training epoch from
train.py's own log (the first one warms up). The evaluation pass over the test split is timed too, and the 200-epoch
wall time of the recipe is projected from both: 200 training epochs plus one evaluation every ``--eval-interval``.

    python benchmarks/train_throughput.py --data-dir DIR       # class-per-folder tree with train/ and test/
    python benchmarks/train_throughput.py --tar ../shared/datasets/cifar10-jpeg.tar.gz
"""
import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

import timm
import timm_camc  # noqa: F401  (registers the models)
from bench_utils import data_dir_or_tar, machine_info
from timm_camc.loss import CamcLoss, create_loss

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / 'configs' / 'cifar10_lt_r100.yaml'
TRAIN_IMAGES = 12406  # CIFAR-10-LT at IF 100

parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
parser.add_argument('--data-dir', default='', help='class-per-folder tree with train/ and test/')
parser.add_argument('--tar', default='', help='or the CIFAR-10 JPEG archive, extracted to a temporary folder')
parser.add_argument('--epochs', type=int, default=2, help='train.py epochs per row (the last one is measured)')
parser.add_argument('--steps', type=int, default=40, help='timed bare steps')
parser.add_argument('--eval-interval', type=int, default=None, help='default: the config\'s')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'train_throughput_cpu.json'))


def bare_step_rate(cfg: dict, device: torch.device, steps: int) -> float:
    """Images/s of the recipe's training step on a batch already on the device (bf16 + channels_last as train.py
    would use them)."""
    torch.manual_seed(0)
    model = timm.create_model(cfg['model'], num_classes=10, cosine_scale=cfg['cosine_scale']).to(device)
    channels_last = cfg.get('channels_last', False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch = cfg['batch_size']
    x = torch.randn(batch, 3, 32, 32, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = CamcLoss(create_loss('ce', [100] * 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    use_amp = cfg.get('amp', False) and (device.type == 'cuda' or torch.ops.mkldnn._is_mkldnn_bf16_supported())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()

    def step():
        with autocast:
            loss = loss_fn(model(x, y), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    for _ in range(5):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def train_py(data_dir: str, out: str, name: str, epochs: int, device: str, *extra: str) -> dict:
    """Run train.py with the recipe; the last epoch's training rate and the evaluation rate from its log."""
    command = [sys.executable, 'train.py', '-c', str(CONFIG), '--data-dir', data_dir, '--epochs', str(epochs),
               '--output', out, '--experiment', name, '--device', device, '--log-interval', '1000', *extra]
    start = time.perf_counter()
    res = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f'{" ".join(command)} failed:\n{res.stderr[-3000:]}')
    train = re.findall(rf'Train: {epochs - 1} \[\s*\d+/\d+ \(100%\)\].*?([\d.]+) img/s', res.stderr)
    evals = re.findall(r'Eval: \[\s*\d+/\d+\]\s+([\d.]+) img/s', res.stderr)
    loader = 'in-memory' if 'In-memory training loader' in res.stderr else 'PIL'
    return dict(command=' '.join(command[1:]), loader=loader, train_img_s=float(train[-1]),
                eval_img_s=float(evals[-1]) if evals else None, wall_s=round(wall, 1))


def main():
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = yaml.safe_load(CONFIG.read_text())
    eval_interval = args.eval_interval or cfg.get('eval_interval', 1)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = data_dir_or_tar(args.data_dir, args.tar, tmp)
        rows = dict(bare_step=dict(train_img_s=round(bare_step_rate(cfg, device, args.steps), 1)))
        out = str(Path(tmp) / 'runs')
        rows['train_py_default'] = train_py(data_dir, out, 'default', args.epochs, args.device)
        rows['train_py_pil'] = train_py(data_dir, out, 'pil', args.epochs, args.device, '--in-memory', 'off')
        rows['bare_step_after'] = dict(train_img_s=round(bare_step_rate(cfg, device, args.steps), 1))
    bare = (rows['bare_step']['train_img_s'] + rows['bare_step_after']['train_img_s']) / 2
    test_images = 10000
    for key in ('train_py_default', 'train_py_pil'):
        row = rows[key]
        row['vs_bare_step'] = round(row['train_img_s'] / bare, 3)
        train_s = cfg['epochs'] * TRAIN_IMAGES / row['train_img_s']
        eval_s = (cfg['epochs'] // eval_interval) * test_images / row['eval_img_s'] if row['eval_img_s'] else 0.
        row['projected_200_epochs_min'] = round((train_s + eval_s) / 60, 1)
    record = dict(
        benchmark='train_throughput', config=str(CONFIG.relative_to(REPO)), eval_interval=eval_interval,
        bare_step_img_s=round(bare, 1), rows=rows,
        targets=dict(vs_bare_step='>= 0.9', projected_200_epochs_min='<= 100 (this CPU)'),
        created_utc=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), **machine_info(args.device))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))


if __name__ == '__main__':
    main()
