#!/usr/bin/env python3
"""Cost of the CAMC head: resnext50_camc_lt against timm's resnext50_32x4d, measured in one run.

Training step (forward + backward) and inference throughput are timed with the two models alternated round by
round (so drift in machine speed hits both), at each class count. Peak memory of a training step comes from
``torch.cuda.max_memory_allocated`` on CUDA, and from a fresh subprocess per model (peak RSS) on the CPU.
FLOPs are counted with ``torch.utils.flop_counter`` for the head alone and for the whole model.

    python benchmarks/head_overhead.py                     # 2-core CPU: batch 8, 224 px, K = 1000 and 8142
    python benchmarks/head_overhead.py --device cuda --batch-size 256 --amp bf16 --channels-last
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import timm
import timm_camc
from timm_camc import CamcLoss
from bench_utils import machine_info

CAMC_MODEL = 'resnext50_camc_lt'
BASE_MODEL = 'resnext50_32x4d'

parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
parser.add_argument('--device', default='cpu')
parser.add_argument('--batch-size', type=int, default=8)
parser.add_argument('--img-size', type=int, default=224)
parser.add_argument('--classes', type=int, nargs='+', default=[1000, 8142])
parser.add_argument('--rounds', type=int, default=5, help='alternating rounds per measurement')
parser.add_argument('--steps', type=int, default=2, help='timed steps per model per round')
parser.add_argument('--amp', choices=['', 'bf16', 'fp16'], default='')
parser.add_argument('--channels-last', action='store_true')
parser.add_argument('--camc', default='global', help="calibration variant of the CAMC model ('global', 'class')")
parser.add_argument('--out', default='', help='JSON to write (default: benchmarks/results/head_overhead_<device>.json)')
parser.add_argument('--memory-probe', nargs=2, metavar=('MODEL', 'CLASSES'), help=argparse.SUPPRESS)


def _create(name, num_classes, args):
    torch.manual_seed(0)
    kwargs = dict(camc=args.camc) if name == CAMC_MODEL else {}
    model = timm.create_model(name, num_classes=num_classes, **kwargs).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _batch(num_classes, args):
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, num_classes, (args.batch_size,), device=args.device)


def _autocast(args):
    if not args.amp:
        return nullcontext()
    return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16 if args.amp == 'bf16' else torch.float16)


def _sync(args):
    if torch.device(args.device).type == 'cuda':
        torch.cuda.synchronize()


def train_step(model, x, y, args, loss_fn=CamcLoss(nn.CrossEntropyLoss())):
    """One forward + backward as train.py runs it: CAMC models get the labels (prototypes, auxiliary loss)."""
    with _autocast(args):
        output = model(x, y) if isinstance(model, timm_camc.CamcResNet) else model(x)
        loss = loss_fn(output, y)
    loss.backward()
    model.zero_grad(set_to_none=True)


@torch.inference_mode()
def infer_step(model, x, y, args):
    with _autocast(args):
        model(x)


def alternate(models, step, x, y, args):
    """Images/s of each model, median over rounds, the order of models flipped every round."""
    times = {name: [] for name in models}
    for name, model in models.items():  # warm-up
        step(model, x, y, args)
    order = list(models)
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            _sync(args)
            start = time.perf_counter()
            for _ in range(args.steps):
                step(models[name], x, y, args)
            _sync(args)
            times[name].append((time.perf_counter() - start) / args.steps)
    return {name: args.batch_size / statistics.median(t) for name, t in times.items()}


def peak_memory(name, num_classes, args):
    """Peak memory (MiB) of training steps: the CUDA allocator peak, or on the CPU the peak RSS of a fresh
    process in total (with the weights and the torch libraries) and above its RSS just before the first step."""
    if torch.device(args.device).type == 'cuda':
        model = _create(name, num_classes, args).train()
        x, y = _batch(num_classes, args)
        train_step(model, x, y, args)
        torch.cuda.reset_peak_memory_stats()
        train_step(model, x, y, args)
        return dict(peak_mib=torch.cuda.max_memory_allocated() / 2 ** 20)
    cmd = [sys.executable, __file__, '--memory-probe', name, str(num_classes), '--device', args.device,
           '--batch-size', str(args.batch_size), '--img-size', str(args.img_size), '--camc', args.camc]
    cmd += ['--channels-last'] if args.channels_last else []
    cmd += ['--amp', args.amp] if args.amp else []
    probe = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return dict(peak_mib=probe['peak_rss_mib'], step_mib=probe['step_rss_mib'])


def _current_rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def count_flops(model, x):
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / x.shape[0]


@torch.no_grad()
def flops(num_classes, args):
    """FLOPs per image of the whole model and of the head alone (eval mode, fp32, on the CPU)."""
    out = {}
    x = torch.randn(1, 3, args.img_size, args.img_size)
    for name in (BASE_MODEL, CAMC_MODEL):
        model = timm.create_model(name, num_classes=num_classes, **(dict(camc=args.camc) if name == CAMC_MODEL else {}))
        model.eval()
        feats = model.forward_features(x)
        out[name] = dict(model=count_flops(model, x), head=count_flops(model.forward_head, feats))
    return out


def main():
    args = parser.parse_args()
    if args.memory_probe:
        name, num_classes = args.memory_probe[0], int(args.memory_probe[1])
        model = _create(name, num_classes, args).train()
        x, y = _batch(num_classes, args)
        before = _current_rss_mib()
        for _ in range(2):
            train_step(model, x, y, args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(dict(peak_rss_mib=peak, step_rss_mib=peak - before)))
        return

    record = dict(
        benchmark='head_overhead', models=[CAMC_MODEL, BASE_MODEL], camc=args.camc, **machine_info(args.device),
        batch_size=args.batch_size, img_size=args.img_size, amp=args.amp or 'fp32', channels_last=args.channels_last,
        rounds=args.rounds, steps=args.steps, results=[],
    )
    for num_classes in args.classes:
        models = {name: _create(name, num_classes, args) for name in (BASE_MODEL, CAMC_MODEL)}
        x, y = _batch(num_classes, args)
        for m in models.values():
            m.train()
        train = alternate(models, train_step, x, y, args)
        for m in models.values():
            m.eval()
        infer = alternate(models, infer_step, x, y, args)
        del models
        memory = {name: peak_memory(name, num_classes, args) for name in (BASE_MODEL, CAMC_MODEL)}
        fl = flops(num_classes, args)
        row = dict(
            num_classes=num_classes,
            train_img_s=train, infer_img_s=infer, peak_memory_mib=memory, flops_per_image=fl,
            train_ratio=train[CAMC_MODEL] / train[BASE_MODEL],
            infer_ratio=infer[CAMC_MODEL] / infer[BASE_MODEL],
            memory_overhead={k: memory[CAMC_MODEL][k] / memory[BASE_MODEL][k] - 1. for k in memory[CAMC_MODEL]},
            camc_head_extra_flops=fl[CAMC_MODEL]['head'] - fl[BASE_MODEL]['head'],
        )
        record['results'].append(row)
        print(
            f'K={num_classes}: train {train[CAMC_MODEL]:.2f} vs {train[BASE_MODEL]:.2f} img/s '
            f'({row["train_ratio"]:.3f}x), infer {infer[CAMC_MODEL]:.2f} vs {infer[BASE_MODEL]:.2f} img/s '
            f'({row["infer_ratio"]:.3f}x), peak memory {memory[CAMC_MODEL]} vs {memory[BASE_MODEL]} MiB '
            f'(overhead {row["memory_overhead"]}), head {fl[CAMC_MODEL]["head"] / 1e6:.1f} vs '
            f'{fl[BASE_MODEL]["head"] / 1e6:.1f} MFLOPs/img (model {fl[CAMC_MODEL]["model"] / 1e9:.2f} vs '
            f'{fl[BASE_MODEL]["model"] / 1e9:.2f} GFLOPs/img)', flush=True)

    out = Path(args.out or Path(__file__).parent / 'results' / f'head_overhead_{torch.device(args.device).type}.json')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + '\n')
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
