""" Training and evaluation loops shared by train.py and validate.py

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import inspect
import logging
import math
import os
import sys
import time
from contextlib import suppress
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.utils import AverageMeter, dispatch_clip_grad, reduce_tensor, unwrap_model
from tqdm import tqdm

from .layers import CamcOutput
from .metrics import LongTailMetrics

__all__ = ['NonFiniteLossError', 'accepts_target', 'interactive', 'train_one_epoch', 'evaluate']

_logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


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
            if bool(nonfinite):
                raise NonFiniteLossError(
                    f'Non-finite loss in epoch {epoch} (at or before step {batch_idx}/{num_batches}): stopping. '
                    f'The last checkpoint written is the last good one; lower the learning rate, use gradient '
                    f'clipping (--clip-grad) or check the data.')
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
