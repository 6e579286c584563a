""" Training and evaluation loops shared by train.py and validate.py

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import csv
import inspect
import logging
import math
import os
import shutil
import sys
import time
from contextlib import suppress
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.utils import AverageMeter, CheckpointSaver, dispatch_clip_grad, reduce_tensor, unwrap_model
from tqdm import tqdm

from .layers import CamcOutput
from .metrics import LongTailMetrics

__all__ = [
    'AtomicCheckpointSaver', 'NonFiniteLossError', 'accepts_target', 'check_finite_state', 'evaluate', 'interactive', 'train_one_epoch',
    'write_summary_row',
]

_logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def _any_rank(flag: torch.Tensor) -> torch.Tensor:
    """``flag`` (a bool tensor) OR-ed over the distributed ranks."""
    flag = flag.to(torch.int32)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag.bool()


def check_finite_state(epoch: int, model: nn.Module, model_ema=None, eval_metrics: Optional[Dict] = None) -> None:
    """Raise ``NonFiniteLossError`` if a parameter or buffer of the model (or its EMA) or the evaluation loss is not
    finite: a finite training loss does not prove a finite model (BN running statistics can overflow first).

    One device sync for all the tensors, so it is cheap to call before every save.
    """
    bad = []
    for what, module in (('model', model), ('EMA', getattr(model_ema, 'module', None))):
        if module is None:
            continue
        tensors = {n: t for n, t in unwrap_model(module).state_dict().items() if t.is_floating_point()}
        if not tensors:
            continue
        flags = torch.stack([torch.isfinite(t).all() for t in tensors.values()])  # one sync for all of them
        if not bool(flags.all()):
            names = [n for n, ok in zip(tensors, flags.tolist()) if not ok]
            bad.append(f'{what} tensors {names[:3]}' + (f' and {len(names) - 3} more' if len(names) > 3 else ''))
    if eval_metrics is not None and not math.isfinite(eval_metrics.get('loss', 0.)):
        bad.append('the evaluation loss')
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        device = next(iter(unwrap_model(model).state_dict().values())).device
        if bool(_any_rank(torch.tensor(bool(bad), device=device))) and not bad:
            bad.append('the model of another rank')
    if bad:
        raise NonFiniteLossError(f'Non-finite values after epoch {epoch} in {"; ".join(bad)}: stopping without '
                                 f'saving this epoch.')


class AtomicCheckpointSaver(CheckpointSaver):
    """timm's checkpoint saver, with no instant at which a checkpoint file is missing or half-written.

    timm writes a temporary file and renames it, but unlinks the old file first (``_replace``) and removes
    ``model_best`` before re-linking it (``_duplicate``). Here every file is complete on disk (``fsync``) before it
    atomically replaces the old one, so a run killed at any point keeps a readable ``last`` and ``model_best``.
    """

    def _save(self, save_path, epoch, metric=None):
        super()._save(save_path, epoch, metric)
        with open(save_path, 'rb') as f:
            os.fsync(f.fileno())

    def _replace(self, src, dst):
        os.replace(src, dst)

    def _duplicate(self, src, dst):
        tmp = dst + '.tmp'
        if os.path.lexists(tmp):
            os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # no hard links on this file system
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)


def write_summary_row(path: str, row: Dict) -> None:
    """Add (or, for an epoch already there, replace) ``row`` in the summary CSV, atomically.

    The header is the union of all rows' columns (an epoch without evaluation leaves its eval columns empty, and a
    later evaluated epoch adds them to the header), so ``csv.DictReader`` reads every row right. A row of the same
    or a later epoch (left by a run killed after it was written) is dropped first, so a resumed run never repeats
    an epoch.
    """
    rows, fields = [], []
    if os.path.isfile(path):
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if int(r['epoch']) < int(row['epoch'])]
    fields += [k for k in row if k not in fields]
    rows.append(row)
    tmp = path + '.tmp'
    with open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval='')
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def accepts_target(model: nn.Module) -> bool:
    """Whether ``model(x, target)`` is supported (CAMC models: prototype update and auxiliary logits)."""
    return 'target' in inspect.signature(unwrap_model(model).forward).parameters


def interactive() -> bool:
    """Live progress bars on an interactive terminal; plain log lines under CI or when output is redirected."""
    return sys.stderr.isatty() and not os.environ.get('CI')


def _progress_bar(loader, desc: str, enabled: bool) -> Optional[tqdm]:
    """A tqdm bar over the loader (ETA built in, images/s in its postfix) when ``enabled``, else None."""
    if not enabled:
        return None
    return tqdm(loader, total=len(loader), desc=desc, unit='batch', dynamic_ncols=True, leave=False, file=sys.stderr)


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f'{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def train_one_epoch(
        epoch: int,
        model: nn.Module,
        loader,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable,
        device: torch.device,
        lr_scheduler=None,
        amp_autocast=suppress,
        loss_scaler=None,
        model_ema=None,
        mixup_fn: Optional[Callable] = None,
        clip_grad: Optional[float] = None,
        clip_mode: str = 'norm',
        pass_target: bool = False,
        channels_last: bool = False,
        num_updates: int = 0,
        log_interval: int = 50,
        distributed: bool = False,
        frozen_backbone: bool = False,
        progress: Optional[bool] = None,
) -> Dict[str, float]:
    """One epoch of training.

    With ``pass_target`` the hard labels go to the model (``model(x, y)``); mixup's soft targets go to the loss
    and their dominant class to the model. The loss is checked for finiteness at every log interval and at the
    end of the epoch (one device sync each), raising ``NonFiniteLossError`` before anything is saved.
    With ``frozen_backbone`` (classifier re-training) everything but the head stays in eval mode (BN statistics).
    Progress: a live bar on an interactive terminal (``progress=None``: ``interactive()``), log lines otherwise.
    """
    model.train()
    if frozen_backbone:
        for name, module in unwrap_model(model).named_children():
            if name != 'head':
                module.eval()
    losses_m = AverageMeter()
    data_time_m = AverageMeter()
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    num_batches = len(loader)
    last_idx = num_batches - 1
    start = end = time.time()
    seen = 0
    bar = _progress_bar(loader, f'Train {epoch}', interactive() if progress is None else progress)
    for batch_idx, (input, target) in enumerate(loader if bar is None else bar):
        data_time_m.update(time.time() - end)
        input, target = input.to(device), target.to(device)
        if mixup_fn is not None:
            input, target = mixup_fn(input, target)
        if channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        with amp_autocast():
            if pass_target:
                labels = target.argmax(-1) if target.ndim == 2 else target
                output = model(input, labels)
            else:
                output = model(input)
            loss = loss_fn(output, target)
        nonfinite |= ~torch.isfinite(loss.detach())

        optimizer.zero_grad(set_to_none=True)
        if loss_scaler is not None:
            loss_scaler(
                loss, optimizer, clip_grad=clip_grad, clip_mode=clip_mode,
                parameters=[p for p in model.parameters() if p.requires_grad])
        else:
            loss.backward()
            if clip_grad is not None:
                dispatch_clip_grad([p for p in model.parameters() if p.requires_grad], value=clip_grad, mode=clip_mode)
            optimizer.step()
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        num_updates += 1
        seen += input.shape[0]
        losses_m.update(loss.detach(), input.shape[0])  # device tensor: no sync per step
        if lr_scheduler is not None:
            lr_scheduler.step_update(num_updates=num_updates, metric=None)

        if batch_idx % log_interval == 0 or batch_idx == last_idx:
            if distributed:  # every rank stops together, none is left waiting in the next all-reduce
                nonfinite = _any_rank(nonfinite)
            if bool(nonfinite):
                raise NonFiniteLossError(
                    f'Non-finite loss in epoch {epoch} (at or before step {batch_idx}/{num_batches}): stopping.')
            elapsed = time.time() - start
            rate = seen / max(elapsed, 1e-9)
            loss_avg = float(losses_m.avg)
            if distributed:
                world_size = torch.distributed.get_world_size()
                loss_avg = reduce_tensor(torch.tensor(loss_avg, device=device), world_size).item()
            lr = optimizer.param_groups[0]['lr']
            eta = elapsed / (batch_idx + 1) * (last_idx - batch_idx)
            if bar is not None:
                bar.set_postfix_str(f'loss {loss_avg:#.4g}  lr {lr:.2e}  {rate:.0f} img/s', refresh=False)
            if bar is None or batch_idx == last_idx:
                _logger.info(
                    f'Train: {epoch} [{batch_idx:>4d}/{num_batches} ({100. * (batch_idx + 1) / num_batches:>3.0f}%)]  '
                    f'Loss: {loss_avg:#.4g}  LR: {lr:.3e}  {rate:.1f} img/s  ETA {_eta(eta)}')
        end = time.time()
    if bar is not None:
        bar.close()
    return {'loss': float(losses_m.avg)}


@torch.no_grad()
def evaluate(
        model: nn.Module,
        loader,
        metrics: LongTailMetrics,
        device: torch.device,
        amp_autocast=suppress,
        channels_last: bool = False,
        log_interval: int = 50,
        log_suffix: str = '',
        progress: Optional[bool] = None,
) -> Dict:
    """Accuracy of ``model`` over ``loader``: top-1/5, per class and per class group (``metrics.compute()``),
    plus the mean cross-entropy (``loss``). Reduced over DDP ranks by ``metrics.sync()``."""
    model.eval()
    metrics.reset()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.float64, device=device)
    num_batches = len(loader)
    start = time.time()
    bar = _progress_bar(loader, f'Eval{log_suffix}', interactive() if progress is None else progress)
    for batch_idx, (input, target) in enumerate(loader if bar is None else bar):
        input, target = input.to(device), target.to(device)
        if channels_last:
            input = input.contiguous(memory_format=torch.channels_last)
        with amp_autocast():
            output = model(input)
        if isinstance(output, (tuple, list, CamcOutput)):
            output = output[0]
        output = output.float()
        loss_sum += F.cross_entropy(output, target, reduction='sum').double()
        count += target.shape[0]
        metrics.update(output, target)
        if bar is None and (batch_idx % log_interval == 0 or batch_idx == num_batches - 1):
            elapsed = time.time() - start
            _logger.info(f'Eval{log_suffix}: [{batch_idx:>4d}/{num_batches}]  '
                         f'{count.item() / max(elapsed, 1e-9):.1f} img/s')
    if bar is not None:
        bar.close()
    metrics.sync()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    result = metrics.compute()
    result['loss'] = float(loss_sum / count.clamp_min(1))
    if not math.isfinite(result['loss']):
        _logger.warning('Non-finite evaluation loss')
    return result
