#!/usr/bin/env python3
""" Evaluate a model on a (balanced) test set: top-1/5, many- / medium- / few-shot and per-class accuracy

    python validate.py --model resnet32_camc_lt --checkpoint output/train/run/last.pth.tar \\
        --data-dir data/cifar10-jpeg --split test
    python validate.py --model hf-hub:timm-camc/resnet32_camc_lt.cifar10_lt_r100 --data-dir ... --split test
    python validate.py --model local-dir:path/to/published --data-dir ... --val-list val.txt --train-counts counts.json

The training class counts (for the shot groups ``many_shot`` / ``medium_shot`` / ``few_shot``: > 100, 20-100, < 20
training images) come from the checkpoint written by train.py, or from ``--train-counts`` (a JSON list, a JSON object
with ``class_counts`` such as ``lt_subset.json``, or one count per line). A long-tailed 10-class set such as
CIFAR-10-LT also gets the class groups ``head`` / ``medium`` / ``tail`` (3 / 4 / 3 classes by training count),
reported under ``class_groups`` (``head_classes`` ... in the printed line and the CSV). Results are printed and
written as JSON (and a CSV row).

Distributed (``torchrun``), each rank evaluates its own share of the samples and every sample is counted once
(timm's distributed eval sampler would pad the ranks with repeated samples).

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import argparse
import csv
import json
import logging
import os
import sys
from contextlib import suppress
from functools import partial

import torch

import timm
import timm_camc  # noqa: F401, registers the models
from timm.data import create_loader, resolve_data_config
from timm.utils import init_distributed_device, setup_default_logging
from timm_camc.data import CorruptImageError, RankShard, create_image_dataset, dataset_class_names
from timm_camc.engine import evaluate
from timm_camc.metrics import LongTailMetrics, default_class_groups
from timm_camc.checkpoint import create_eval_model, summarize_load_error
from timm_camc.layers import tau_normalize_

_logger = logging.getLogger('validate')

parser = argparse.ArgumentParser(description='timm-camc validation with many / medium / few-shot accuracy')
parser.add_argument('--model', required=True, metavar='NAME',
                    help='registry name (with --checkpoint), hf-hub:org/name or local-dir:path')
parser.add_argument('--checkpoint', default='', metavar='PATH', help='train.py checkpoint or weights file')
parser.add_argument('--use-ema', action='store_true', help='evaluate the EMA weights of the checkpoint')
parser.add_argument('--pretrained', action='store_true', help='load the pretrained weights of a registry name')
parser.add_argument('--data-dir', metavar='DIR', default='', help='dataset root')
parser.add_argument('--dataset', default='', metavar='NAME', help="timm dataset source such as torch/cifar10")
parser.add_argument('--split', default='validation', metavar='NAME', help='split (folder) to evaluate')
parser.add_argument('--allow-empty-classes', action='store_true',
                    help='score a folder with empty class folders or classes the model does not know (otherwise an '
                         'error names them)')
parser.add_argument('--val-list', default='', metavar='FILE', help='list file (relative/path label) under --data-dir')
parser.add_argument('--dataset-download', action='store_true', help='download a torch/* dataset')
parser.add_argument('--num-classes', type=int, default=None, help='classes (default: checkpoint / model)')
parser.add_argument('--train-counts', default='', metavar='FILE', help='training class counts (see above)')
parser.add_argument('--many-thresh', type=int, default=100, help='many-shot: more training images than this')
parser.add_argument('--few-thresh', type=int, default=20, help='few-shot: fewer training images than this')
parser.add_argument('--tau-norm', type=float, default=None, metavar='TAU',
                    help='post-hoc tau-normalisation of a linear classifier (Kang et al. 2020)')
parser.add_argument('-b', '--batch-size', type=int, default=256, metavar='N')
parser.add_argument('-j', '--workers', type=int, default=2, metavar='N')
parser.add_argument('--img-size', type=int, default=None, metavar='N')
parser.add_argument('--crop-pct', type=float, default=None)
parser.add_argument('--amp', action='store_true', help='bfloat16 autocast')
parser.add_argument('--channels-last', action='store_true')
parser.add_argument('--no-prefetcher', action='store_true')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
parser.add_argument('--results-file', default='', metavar='FILE', help='JSON results (default: next to checkpoint)')
parser.add_argument('--results-csv', default='', metavar='FILE', help='also append a CSV row here')
parser.add_argument('--log-interval', type=int, default=50)
parser.add_argument('--cam-dir', default='', metavar='DIR', help='write CAM overlay PNGs of --cam-count images here')
parser.add_argument('--cam-count', type=int, default=16, metavar='N', help='images for --cam-dir, each class in turn')
parser.add_argument('--plot', default='', metavar='FILE',
                    help='plot per-class accuracy against training frequency (needs matplotlib: timm-camc[viz])')


def load_train_counts(path: str):
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [int(line) for line in text.split() if line.strip()]
    if isinstance(data, dict):
        data = data.get('class_counts') or data.get('train_info', {}).get('class_counts')
    if not isinstance(data, list) or not all(isinstance(c, int) and c >= 0 for c in data):
        raise SystemExit(f'--train-counts {path}: expected a list of class counts')
    return data


def main(argv=None):
    setup_default_logging()
    args = parser.parse_args(argv)
    device = init_distributed_device(args)

    model_name = args.model
    try:
        model, ckpt_args = create_eval_model(
            model_name, args.checkpoint, num_classes=args.num_classes, use_ema=args.use_ema,
            pretrained=args.pretrained)
    except (RuntimeError, ValueError) as e:  # an unreadable or non-fitting checkpoint: one line, not a traceback
        raise ValueError(summarize_load_error(str(e))) from None
    if ckpt_args.get('model') and ckpt_args['model'] != model_name and ':' not in model_name:
        _logger.warning(f'Checkpoint was trained as {ckpt_args["model"]}, evaluating it as {model_name}')
    if args.tau_norm is not None:
        tau_normalize_(model.get_classifier(), args.tau_norm)
    model.to(device).eval()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    num_classes = model.num_classes

    counts = ckpt_args.get('class_counts')
    if args.train_counts:
        counts = load_train_counts(args.train_counts)
    if counts is not None and len(counts) != num_classes:
        raise SystemExit(f'{len(counts)} training class counts for a {num_classes}-class model')
    if counts is None:
        if args.plot:
            raise ValueError('--plot needs the training class counts: pass --train-counts FILE')
        _logger.warning('No training class counts (checkpoint or --train-counts): no many- / medium- / few-shot '
                        'groups')

    if args.dataset:
        dataset = timm.data.create_dataset(args.dataset, root=args.data_dir, split=args.split,
                                           download=args.dataset_download)
    else:
        dataset = create_image_dataset(args.data_dir, args.split, args.val_list, ckpt_args.get('class_names'),
                                       allow_empty_classes=args.allow_empty_classes)
    data_config = resolve_data_config(vars(args), model=model)
    eval_dataset, shard_loader = dataset, False
    if args.distributed and not isinstance(dataset, torch.utils.data.IterableDataset):
        eval_dataset, shard_loader = RankShard(dataset, args.rank, args.world_size), True
    loader = create_loader(
        eval_dataset, input_size=data_config['input_size'], batch_size=args.batch_size, is_training=False,
        interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
        num_workers=args.workers, crop_pct=data_config['crop_pct'], device=device,
        use_prefetcher=not args.no_prefetcher, distributed=args.distributed and not shard_loader)

    metrics = LongTailMetrics(
        num_classes, train_counts=counts, many_thresh=args.many_thresh, few_thresh=args.few_thresh,
        class_groups=default_class_groups(num_classes, counts), device=device)
    amp_autocast = partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16) if args.amp else suppress
    result = evaluate(model, loader, metrics, device, amp_autocast=amp_autocast, channels_last=args.channels_last,
                      log_interval=args.log_interval)
    result.update(model=model_name, checkpoint=args.checkpoint, use_ema=args.use_ema, data_dir=args.data_dir,
                  split=args.val_list or args.split, class_counts=counts, tau_norm=args.tau_norm,
                  class_names=dataset_class_names(dataset))
    if args.rank != 0:
        return 0

    summary = {k: result.get(k) for k in ('top1', 'top5', *LongTailMetrics.shot_group_names)}
    summary.update({f'{k}_classes': v for k, v in (result.get('class_groups') or {}).items()})
    print(json.dumps(dict(model=model_name, **{k: round(v, 2) for k, v in summary.items() if v is not None})))
    results_file = args.results_file or 'results.json'
    if not args.results_file and args.checkpoint:
        results_file = args.checkpoint.removesuffix('.tar').removesuffix('.pth') + '-results.json'
    with open(results_file, 'w') as f:
        json.dump(result, f, indent=2)
    _logger.info(f'Wrote {results_file}')
    if args.results_csv:
        new = not os.path.exists(args.results_csv)
        with open(args.results_csv, 'a', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=['model', 'checkpoint', 'split', *summary])
            if new:
                writer.writeheader()
            writer.writerow(dict(model=model_name, checkpoint=args.checkpoint, split=result['split'], **summary))
    if args.plot:
        from timm_camc.visualize import plot_per_class_accuracy
        _logger.info(f'Wrote {plot_per_class_accuracy(result, args.plot)}')
    if args.cam_dir:
        from timm_camc.visualize import dataset_cam_overlays
        paths = dataset_cam_overlays(model, dataset, args.cam_dir, count=args.cam_count, data_config=data_config,
                                     device=device, class_names=result['class_names'])
        _logger.info(f'Wrote {len(paths)} CAM overlays to {args.cam_dir}')
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError, CorruptImageError, ImportError) as e:  # bad input, the message says why
        _logger.error(f'{type(e).__name__}: {e}')
        sys.exit(2)
