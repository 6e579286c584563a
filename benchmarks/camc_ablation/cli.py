"""The command line of the ablation (``benchmarks/ablation.py``): options, results file, and the run."""
import argparse
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

import ablation_report
from timm_camc.models import is_camc_model

from . import budget
from .data import ARCHIVE_NAME, normalization, prepare_data
from .protocol import DEFAULT_MODEL, FULL_EPOCHS, FULL_TEST_PER_CLASS, FULL_TRAIN_PER_CLASS, IMG_SIZE, REPO
from .records import environment, measure_summary
from .rows import ROW_INDEX, ROWS, plan_runs, select_rows
from .trainer import TrainConfig
from .workers import Driver

__all__ = ['parser', 'main']

_logger = logging.getLogger('ablation')

parser = argparse.ArgumentParser(
    description='Paired ablation of the CAMC head: every row of the project\'s "Proof" table in one prepared run, on '
                'CIFAR-10-LT (default) or any class-per-folder --data-dir.',
    epilog='See benchmarks/README_ABLATION.md.', formatter_class=argparse.RawDescriptionHelpFormatter)
group = parser.add_argument_group('Grid')
group.add_argument('--rows', default='all', help=f'comma-separated rows or "all": {", ".join(ROW_INDEX)}')
group.add_argument('--seeds', default='0,1', help='comma-separated seeds (weights, data order and augmentation)')
group.add_argument('--list-rows', action='store_true', help='print the row table and exit')
group = parser.add_argument_group('Data')
group.add_argument('--data-dir', default='',
                   help='a tree train/<class>/*, test/<class>/* (any classes and image size; default: the CIFAR-10 '
                        'JPEG archive)')
group.add_argument('--data-tar', default='', help=f'the {ARCHIVE_NAME} archive (default: shared/datasets/)')
group.add_argument('--work-dir', default='/tmp/timm_camc_ablation', help='extraction and .npy cache')
group.add_argument('--imbalance', type=float, default=100., help='imbalance factor n_max / n_min')
group.add_argument('--lt-seed', type=int, default=0, help='seed of the long-tailed subset')
group.add_argument('--train-per-class-max', type=int, default=FULL_TRAIN_PER_CLASS,
                   help='images of the largest class (5000: the full CIFAR-10-LT); the profile keeps its shape')
group.add_argument('--test-per-class', type=int, default=FULL_TEST_PER_CLASS, help='test images per class')
group.add_argument('--img-size', type=int, default=IMG_SIZE,
                   help='height and width the images are decoded at (resized where they differ)')
group = parser.add_argument_group('Model')
group.add_argument('--model', default=DEFAULT_MODEL,
                   help='any CAMC model (*_camc_lt); the rows set its head options. Inputs are normalised with its '
                        'pretrained cfg\'s mean / std, or CIFAR-10\'s for the CIFAR-10 archive')
group = parser.add_argument_group('Recipe')
group.add_argument('--epochs', type=int, default=FULL_EPOCHS)
group.add_argument('--batch-size', type=int, default=128)
group.add_argument('--lr', type=float, default=0.1)
group.add_argument('--momentum', type=float, default=0.9)
group.add_argument('--nesterov', action='store_true', help='Nesterov momentum (LDAM-DRW uses plain momentum)')
group.add_argument('--weight-decay', type=float, default=2e-4)
group.add_argument('--warmup-epochs', type=int, default=5)
group = parser.add_argument_group('Engineering')
group.add_argument('--device', default='', help='cuda or cpu (default: cuda when available)')
group.add_argument('--procs', type=int, default=1, help='processes; the runs are dealt out round-robin')
group.add_argument('--streams', type=int, default=0, help='runs trained at once per process (0: all of them)')
group.add_argument('--amp', choices=('bf16', 'none'), default=None, help='default: bf16 on CUDA, none on the CPU')
group.add_argument('--channels-last', action=argparse.BooleanOptionalAction, default=None,
                   help='default: on for CUDA')
group.add_argument('--cuda-graphs', action=argparse.BooleanOptionalAction, default=True)
group.add_argument('--graph-check', action=argparse.BooleanOptionalAction, default=True,
                   help='compare a replayed step with an eager one for every run before training')
group.add_argument('--compile', action='store_true', help='torch.compile the model (experimental; off by default)')
group.add_argument('--threads', type=int, default=0,
                   help='torch CPU threads per process (0: cores / procs); on a busy CPU 1 can be much faster')
group = parser.add_argument_group('Time')
group.add_argument('--time-budget', type=float, default=0.,
                   help='seconds from start; runs stop cleanly (and are evaluated) before exceeding it (0: none)')
group.add_argument('--fit', choices=('none', 'auto', 'rows', 'epochs'), default='none',
                   help='after --calib-epochs, keep the runs / epochs that fit the time budget (see fit_plan)')
group.add_argument('--calib-epochs', type=int, default=3, help='epochs measured before fitting')
group.add_argument('--fit-margin', type=float, default=1.15, help='safety factor on the predicted time')
group.add_argument('--reserve', type=float, default=20., help='seconds kept for evaluation and writing')
group.add_argument('--measure', action='store_true', help='train --measure-epochs epochs of every run, report epochs/s')
group.add_argument('--measure-epochs', type=int, default=4)
group = parser.add_argument_group('Output')
group.add_argument('--out', default=str(REPO / 'benchmarks' / 'results'), help='results folder')
group.add_argument('--tag', default='', help='results file ablation_<tag>.json (default: from the scale)')
group.add_argument('--log-every', type=int, default=10, help='log the training losses every N epochs')
group.add_argument('--log-file', default='', help='also write the log here')



def _default_tag(args: argparse.Namespace, device_type: str) -> str:
    if args.measure:
        return 'measure'
    full = (args.epochs == FULL_EPOCHS and args.train_per_class_max == FULL_TRAIN_PER_CLASS
            and args.test_per_class == FULL_TEST_PER_CLASS)
    if device_type == 'cpu':
        return 'cpu_dry_run' if args.epochs < 5 or args.train_per_class_max < 100 else 'cpu_reduced'
    return 'gpu' if full else 'gpu_reduced'  # --fit may still shorten a 'gpu' run: the records' scale tells


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the ablation of a command line; returns the results file's path, the records, failures, skipped runs and
    fit plans (``{}`` for ``--list-rows``)."""
    args = parser.parse_args(argv)
    if args.list_rows:
        width = max(len(row.name) for row in ROWS)
        for row in ROWS:
            print(f'{row.name:<{width}} tier {row.tier}  {row.classifier:<12} {row.loss:<15} {row.label}')
        return {}
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
    start = budget.now()
    os.environ.setdefault('CUDA_DEVICE_MAX_CONNECTIONS', '32')  # one hardware queue per stream (before CUDA init)
    args.device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    device_type = torch.device(args.device).type
    if device_type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda, but CUDA is not available')
    rows = select_rows(args.rows)
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    runs = plan_runs(rows, seeds)
    amp = args.amp or ('bf16' if device_type == 'cuda' else 'none')
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        model=args.model, weight_decay=args.weight_decay, nesterov=args.nesterov, warmup_epochs=args.warmup_epochs,
        amp='' if amp == 'none' else amp,
        channels_last=args.channels_last if args.channels_last is not None else device_type == 'cuda',
        cuda_graphs=args.cuda_graphs and device_type == 'cuda', graph_check=args.graph_check, compile=args.compile)
    if args.fit != 'none' and not args.time_budget:
        parser.error('--fit needs --time-budget')
    if not is_camc_model(args.model):
        parser.error(f'--model {args.model}: not a CAMC model (the rows set head options); e.g. {DEFAULT_MODEL}')
    out_dir = Path(args.out)
    out_path = out_dir / f'ablation_{args.tag or _default_tag(args, device_type)}.json'
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(args.log_file, mode='w') if args.log_file else logging.NullHandler()
    log_file.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
    logging.getLogger().addHandler(log_file)
    _logger.info(f'{len(runs)} runs ({len(rows)} rows x seeds {seeds}), {args.epochs} epochs, device {args.device}, '
                 f'{args.procs} process(es), results -> {out_path}')

    work_dir = Path(args.work_dir)
    norm = normalization(args.model, cifar=not args.data_dir)
    data = prepare_data(args.data_dir, args.data_tar, work_dir, args.train_per_class_max, args.imbalance,
                        args.lt_seed, args.test_per_class, args.img_size, norm['interpolation'])
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.procs) if args.procs > 1 else 0)
    job = dict(cfg=cfg, data=data, normalization=norm, env=environment(), device=args.device, procs=args.procs,
               streams=args.streams, threads=threads, start=start,
               deadline=start + args.time_budget if args.time_budget else float('inf'),
               fit=args.fit, calib_epochs=args.calib_epochs, measure=args.measure,
               measure_epochs=args.measure_epochs, config=dict(vars(args), amp=amp, resolved=asdict(cfg)))
    if args.time_budget:
        job['deadline'] -= args.reserve  # training stops in time to evaluate and write the results
    driver = Driver(args, runs, job, out_path)
    driver.run()
    _logger.info(f'Done in {budget.now() - start:.0f}s: {len(driver.records)} records, {len(driver.failed)} failed, '
                 f'{len(driver.skipped)} skipped -> {out_path}')
    if args.measure:
        _logger.info('Throughput:\n' + measure_summary(driver.records, budget.now() - start, args.time_budget,
                                                        args.reserve, args.fit_margin))
    elif driver.records:
        _logger.info('\n' + ablation_report.render(driver.records))
    logging.getLogger().removeHandler(log_file)
    log_file.close()
    return dict(path=str(out_path), records=driver.records, failed=driver.failed, skipped=driver.skipped,
                fit=driver.plans)
