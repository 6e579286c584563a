"""What a run leaves behind: its JSON record (with the scale it may claim), and the summary of a --measure run."""
import hashlib
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

import timm
import timm_camc
from bench_utils import cpu_model, git
from timm_camc.data.in_memory import PAD_CROP_PADDING

from . import budget
from .protocol import BENCHMARK_RECIPE, CIFAR10_CLASSES, DEFAULT_MODEL, FULL_EPOCHS, IMG_SIZE, REPO, full_profile
from .rows import ROW_INDEX
from .trainer import RunTrainer, TrainConfig

__all__ = ['scale_label', 'device_name', 'environment', 'make_record', 'measure_summary']


def scale_label(device_type: str, epochs_planned: int, epochs_completed: int, data: Mapping[str, Any],
                cfg: TrainConfig, measure: bool = False) -> str:
    """'full' only for the whole protocol: CIFAR-10-LT (10 classes at 32 x 32) with the full profile, the benchmark
    recipe and model, 200 planned and completed epochs.
    Otherwise 'measure', 'cpu-dry-run' (CPU, < 5 epochs or < 100 images in the largest class),
    'cpu-short-schedule' (CPU, the full long-tailed profile of the dataset - CIFAR-10-LT or a ``--data-dir`` tree -
    and the recipe, with fewer epochs), 'cpu-reduced' or 'reduced'."""
    if measure:
        return 'measure'
    recipe = all(getattr(cfg, k) == v for k, v in BENCHMARK_RECIPE.items()) and cfg.model == DEFAULT_MODEL
    profile = full_profile(data)
    # CIFAR-10's setting (records and callers from before --data-dir / --img-size state no classes or size)
    cifar = data.get('num_classes', CIFAR10_CLASSES) == CIFAR10_CLASSES and data.get('img_size', IMG_SIZE) == IMG_SIZE
    if recipe and cifar and profile and epochs_planned == epochs_completed == FULL_EPOCHS:
        return 'full'
    if device_type == 'cpu':
        if epochs_completed < 5 or data['train_per_class_max'] < 100:
            return 'cpu-dry-run'
        return 'cpu-short-schedule' if recipe and profile and epochs_planned == epochs_completed else 'cpu-reduced'
    return 'reduced'


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{cpu_model()} ({os.cpu_count()} threads)'


def environment() -> Dict[str, Any]:
    """Versions, git commit and a hash of the code that ran (the device copy of the tree may have no .git)."""
    digest = hashlib.sha256()
    code = [REPO / 'benchmarks' / 'ablation.py', *Path(__file__).parent.glob('*.py'),
            *(REPO / 'timm_camc').rglob('*.py')]
    for path in sorted(p.resolve() for p in code):
        digest.update(path.relative_to(REPO).as_posix().encode())
        digest.update(path.read_bytes())
    commit = git('rev-parse', '--short', 'HEAD') or os.environ.get('TIMM_CAMC_GIT_COMMIT', '') or 'unknown'
    return dict(
        git_commit=commit, git_dirty=bool(git('status', '--porcelain', '--untracked-files=no')),
        code_sha256=digest.hexdigest()[:16], torch=torch.__version__, timm=timm.__version__,
        timm_camc=timm_camc.__version__, python=platform.python_version(),
        command=' '.join(['python', *sys.argv]))


def make_record(t: RunTrainer, metrics: Optional[Mapping[str, Any]], ctx: Mapping[str, Any],
                epoch_times: Sequence[float]) -> Dict[str, Any]:
    row, cfg, data = t.spec.row, t.cfg, ctx['data']
    epochs = t.schedule.epochs
    complete = t.epochs_completed == epochs and t.status in ('active', 'done')
    rec = dict(
        benchmark='cifar10_lt_ablation', row=row.name, row_label=row.label, row_order=ROW_INDEX.get(row.name, 99),
        tier=row.tier, baseline=row.baseline, classifier=row.classifier, camc=row.camc, model=cfg.model,
        model_kwargs=dict(row.model_kwargs), loss=row.loss, loss_kwargs=dict(row.loss_kwargs),
        loss_module=f'{type(t.loss_fn.criterion).__name__}({t.loss_fn.criterion.extra_repr()})',
        sampler=row.sampler, seed=t.spec.seed,
        epochs=epochs, epochs_completed=t.epochs_completed, complete=complete,
        stop_reason=None if complete else (t.stop_reason or 'unknown'),
        scale=scale_label(t.device.type, epochs, t.epochs_completed, data, cfg, ctx.get('measure', False)),
        schedule=t.schedule.to_dict(),
        recipe=dict(batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                    weight_decay=cfg.weight_decay, weight_decay_on='weights (not biases or norm parameters)',
                    steps_per_epoch=t.steps, drop_last=True,
                    augmentation=f'pad {PAD_CROP_PADDING} + random crop {t.data.img_size}, horizontal flip'),
        data={k: data[k] for k in ('source', 'archive_sha256', 'imbalance', 'train_per_class_max', 'class_counts',
                                   'train_size', 'test_per_class', 'test_size', 'lt_seed', 'dataset', 'num_classes',
                                   'class_names', 'img_size')},
        normalization=ctx['normalization'],
        train_loss=t.train_losses[-1] if t.train_losses else None,
        train_loss_curve=[round(x, 5) for x in t.train_losses],
        setup_s=round(t.setup_s, 2), epoch_s_median=round(float(np.median(epoch_times)), 4) if epoch_times else None,
        wall_s=round(budget.now() - ctx['run_start'], 2), device=str(t.device), device_name=device_name(t.device),
        amp=cfg.amp or 'fp32', channels_last=cfg.channels_last, cuda_graphs=t.graph_info, compiled=t.compiled,
        concurrent_runs=ctx['concurrent'], process=ctx['worker'], procs=ctx['procs'],
        **ctx['env'],
    )
    if metrics is not None:
        groups = metrics.get('class_groups') or {}
        rec.update(
            top1=metrics['top1'], top5=metrics['top5'], head=groups.get('head'), medium=groups.get('medium'),
            tail=groups.get('tail'), many_shot=metrics.get('many_shot'), medium_shot=metrics.get('medium_shot'),
            few_shot=metrics.get('few_shot'), shot_group_sizes=metrics.get('shot_group_sizes'),
            per_class=metrics['per_class'], test_samples=metrics['num_samples'],
            map_cam_corr=metrics.get('map_cam_corr'))
    return rec


def measure_summary(records: Sequence[Mapping[str, Any]], elapsed_s: float, time_budget: float,
                    reserve: float, margin: float) -> str:
    """Throughput of a --measure run (per process and together) and what it means for 200-epoch runs.

    Args:
        records: The measure run's records.
        elapsed_s: Wall time of the whole measure run.
        time_budget: The budget of the real run to plan for (0: none).
        reserve: Seconds the real run keeps for evaluation and writing.
        margin: The fit's safety factor.
    """
    lines = []
    by_proc: Dict[int, List[Mapping[str, Any]]] = {}
    for r in records:
        by_proc.setdefault(r['process'], []).append(r)
    rate, setup = 0., 0.
    for proc, recs in sorted(by_proc.items()):
        epoch_s = recs[0]['epoch_s_median'] or float('nan')
        proc_setup = sum(r['setup_s'] for r in recs)
        rate += len(recs) / epoch_s
        setup = max(setup, proc_setup)
        graphs = sum(bool(r['cuda_graphs'].get('used')) for r in recs)
        lines.append(f'process {proc}: {len(recs)} runs at once, {epoch_s:.3f}s per epoch: {1 / epoch_s:.2f} '
                     f'epochs/s per run, {len(recs) / epoch_s:.2f} together; set-up {proc_setup:.1f}s; '
                     f'CUDA graphs {graphs}/{len(recs)}')
        for r in recs:
            check = r['cuda_graphs'].get('check') or {}
            lines.append(f'    {r["row"]:<22} s{r["seed"]}  set-up {r["setup_s"]:.1f}s  graph check '
                         f'{check.get("rel_update_diff", "-")}  train loss {r["train_loss"]}')
    n_runs = len(records)
    start_up = max(elapsed_s - sum(r['wall_s'] for r in records[:1]) - setup, 0.)
    lines.append(f'aggregate {rate:.2f} epochs/s. {n_runs} runs x {FULL_EPOCHS} epochs need '
                 f'{n_runs * FULL_EPOCHS / max(rate, 1e-9):.0f}s of training, after ~{start_up:.0f}s start-up and '
                 f'{setup:.0f}s set-up')
    if time_budget:
        training = time_budget - reserve - start_up - setup
        fit = rate * training / (FULL_EPOCHS * margin)
        lines.append(f'--time-budget {time_budget:.0f}: ~{training:.0f}s of training hold {fit:.1f} runs of '
                     f'{FULL_EPOCHS} epochs (margin {margin}), or all {n_runs} runs for '
                     f'{rate * training / (n_runs * margin):.0f} epochs')
    return '\n'.join(lines)
