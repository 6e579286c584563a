#!/usr/bin/env python3
"""Memory and time of validate.py's metric accumulation at iNaturalist 2018's 8,142 classes.

Random logits and labels, batch by batch, as ``timm_camc.engine.evaluate`` feeds ``LongTailMetrics.update`` and then
``compute()``. Three ways are measured, each in a fresh process so that its peak memory is its own:

* ``old``: the accumulation before issue 10 item 13 (a K x K ``bincount`` per batch added into a K x K matrix, and
  three host syncs per batch: the label-range check, the top-5 hits and the matrix sum),
* ``new``: ``LongTailMetrics`` as validate.py uses it (per-class correct and support counts updated in place),
* ``new_confusion``: ``LongTailMetrics(confusion=True)``, the K x K matrix accumulated by ``index_add_``.

Peak memory is the growth of the process's peak resident set size (``ru_maxrss``) from just before the metrics are
created to after ``compute()``, or the growth of ``torch.cuda.max_memory_allocated`` on CUDA. The time per batch
covers the updates after one warm-up batch plus one ``compute()``.

    python benchmarks/metrics_large_k.py
    python benchmarks/metrics_large_k.py --device cuda --batches 50
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench_utils import machine_info
from timm_camc.metrics import LongTailMetrics

parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
parser.add_argument('--num-classes', type=int, default=8_142)
parser.add_argument('--batch-size', type=int, default=256)
parser.add_argument('--batches', type=int, default=10)
parser.add_argument('--device', default='cpu')
parser.add_argument('--note', default='', help='free text stored with the result (e.g. the machine was busy)')
parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'metrics_large_k.json'))
parser.add_argument('--child', default='', help=argparse.SUPPRESS)

APPROACHES = ('old', 'new', 'new_confusion')


class OldMetrics:
    """The accumulation that LongTailMetrics.update did before: a K x K bincount per batch, three host syncs."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.confmat = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.top5_hits = torch.zeros((), dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        K = self.num_classes
        preds = logits.argmax(1)
        for labels in (targets, preds):  # the range check of both, each a host sync
            if ((labels < 0) | (labels >= K)).any():
                raise ValueError('out of range')
        self.confmat += torch.bincount(targets * K + preds, minlength=K * K).reshape(K, K)
        self.top5_hits += (logits.topk(5, dim=1).indices == targets.unsqueeze(1)).any(dim=1).sum()

    def compute(self) -> dict:
        confmat = self.confmat.cpu()
        support, correct = confmat.sum(1), confmat.diagonal()
        return dict(top1=100. * int(correct.sum()) / int(support.sum()), top5_hits=int(self.top5_hits))


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def run_child(args) -> dict:
    device = torch.device(args.device)
    K, B = args.num_classes, args.batch_size
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(B, K, device=device, generator=gen)
    targets = torch.randint(0, K, (B,), device=device, generator=gen)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _peak_rss_bytes()
    if args.child == 'old':
        metrics = OldMetrics(K, device)
    else:
        metrics = LongTailMetrics(K, confusion=args.child == 'new_confusion', device=device)
    metrics.update(logits, targets)  # warm-up
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.batches):
        metrics.update(logits, targets)
    result = metrics.compute()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    out = dict(
        approach=args.child,
        ms_per_batch=round(1000 * elapsed / args.batches, 3),
        peak_rss_mib=round(_peak_rss_bytes() / 2 ** 20, 1),
        peak_rss_growth_mib=round((_peak_rss_bytes() - base_rss) / 2 ** 20, 1),
        top1=result['top1'],
    )
    if device.type == 'cuda':
        out['peak_cuda_growth_mib'] = round((torch.cuda.max_memory_allocated() - base) / 2 ** 20, 1)
    return out


def main():
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    rows = []
    for approach in APPROACHES:
        cmd = [sys.executable, __file__, '--child', approach, '--num-classes', str(args.num_classes),
               '--batch-size', str(args.batch_size), '--batches', str(args.batches), '--device', args.device]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    record = dict(
        benchmark='metrics_large_k', num_classes=args.num_classes, batch_size=args.batch_size, batches=args.batches,
        what='LongTailMetrics.update per batch + one compute(), random logits (validate.py accumulation)',
        note=args.note, results=rows, machine=machine_info(args.device),
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + '\n')
    print(f'Wrote {args.out}')


if __name__ == '__main__':
    main()
