""" ``python -m timm_camc.visualize {cam,plot}``: the command line of the pictures

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import argparse
import logging
from typing import Optional, Sequence

import torch

from timm.data import resolve_data_config

from timm_camc.data import create_image_dataset
from timm_camc.checkpoint import create_eval_model

from ._matplotlib import _import_matplotlib
from .cam import dataset_cam_overlays
from .plot import plot_per_class_accuracy

__all__ = ['main']

_logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m timm_camc.visualize', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    plot = sub.add_parser('plot', help='per-class accuracy against training frequency of validate.py results')
    plot.add_argument('--results', nargs='+', required=True, metavar='JSON', help='validate.py results files')
    plot.add_argument('--labels', nargs='+', default=None, metavar='NAME', help='legend label per results file')
    plot.add_argument('--out', required=True, metavar='FILE', help='image to write (.png, .pdf, .svg)')
    plot.add_argument('--title', default=None)
    plot.add_argument('--many-thresh', type=int, default=None, help='default: from the results (100)')
    plot.add_argument('--few-thresh', type=int, default=None, help='default: from the results (20)')

    cam = sub.add_parser('cam', help='CAM overlay PNGs of dataset images')
    cam.add_argument('--model', required=True, metavar='NAME',
                     help='registry name (with --checkpoint), hf-hub:org/name or local-dir:path')
    cam.add_argument('--checkpoint', default='', metavar='PATH', help='train.py checkpoint or weights file')
    cam.add_argument('--use-ema', action='store_true', help='the EMA weights of the checkpoint')
    cam.add_argument('--pretrained', action='store_true', help='the pretrained weights of a registry name')
    cam.add_argument('--num-classes', type=int, default=None, help='classes (default: checkpoint / model)')
    cam.add_argument('--data-dir', required=True, metavar='DIR', help='dataset root')
    cam.add_argument('--split', default='test', metavar='NAME', help='split (class-per-folder tree) under --data-dir')
    cam.add_argument('--val-list', default='', metavar='FILE', help='list file (relative/path label) instead')
    cam.add_argument('--count', type=int, default=16, metavar='N', help='images, taking each class in turn')
    cam.add_argument('--indices', type=int, nargs='+', default=None, metavar='I', help='these dataset indices')
    cam.add_argument('--out-dir', required=True, metavar='DIR')
    cam.add_argument('--min-size', type=int, default=160, help='shorter side of the displayed image, at least')
    cam.add_argument('--cmap', default='jet', help='matplotlib colormap')
    cam.add_argument('-b', '--batch-size', type=int, default=32, metavar='N')
    cam.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line (see the module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == 'plot':
        out = plot_per_class_accuracy(args.results, args.out, labels=args.labels, title=args.title,
                                      many_thresh=args.many_thresh, few_thresh=args.few_thresh)
        _logger.info(f'Wrote {out}')
        return 0

    _import_matplotlib()
    model, ckpt_args = create_eval_model(
        args.model, args.checkpoint, num_classes=args.num_classes, use_ema=args.use_ema, pretrained=args.pretrained)
    model.to(args.device)
    dataset = create_image_dataset(args.data_dir, args.split, args.val_list, ckpt_args.get('class_names'))
    paths = dataset_cam_overlays(
        model, dataset, args.out_dir, count=args.count, indices=args.indices,
        data_config=resolve_data_config(model=model), batch_size=args.batch_size, min_size=args.min_size,
        cmap=args.cmap)
    _logger.info(f'Wrote {len(paths)} CAM overlays to {args.out_dir}')
    return 0
