"""The learning-rate schedule: train.py's (``configs/cifar10_lt_r100.yaml``, timm's multistep scheduler), scaled.

The recipe's config states LDAM-DRW's schedule in timm's terms: ``warmup_epochs: 4`` and ``warmup_lr: 0.02`` give
0.02, 0.04, 0.06, 0.08, then ``lr`` 0.1 (timm's warm-up reaches ``lr`` at epoch index ``warmup_epochs``), and
``decay_milestones: [161, 181]`` with ``decay_rate: 0.01`` decay from the 0-based epochs 160 and 180 (timm applies
milestone m from epoch index m - 1). The ablation runs that schedule, and for another number of epochs the same one
scaled: W = min(5, epochs // 5) warm-up epochs (``warmup_epochs = W - 1``, ``warmup_lr = lr / W``) and the decays at
80 % and 90 % of the epochs (the config's fractions). Its learning rates are read from the scheduler timm builds from
those settings, through the helper train.py uses (``timm.scheduler.scheduler_kwargs``), so the two cannot drift.
"""
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Optional, Tuple, Union

import torch
import yaml
from timm.scheduler import create_scheduler_v2, scheduler_kwargs

from .protocol import RECIPE_CONFIG

__all__ = ['Schedule', 'read_recipe']


def read_recipe(path: Union[str, Path] = RECIPE_CONFIG) -> Dict[str, Any]:
    """The training config (a train.py ``-c`` YAML) whose multistep schedule the ablation scales."""
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    if cfg.get('sched') != 'multistep':
        raise ValueError(f'{path}: the ablation scales a multistep schedule, not sched {cfg.get("sched")!r}')
    return cfg


@dataclass(frozen=True)
class Schedule:
    """The recipe's schedule, scaled to ``epochs``: linear warm-up, then step decays at fractions of the epochs.

    Attributes:
        epochs: Length of the run.
        lr: Peak learning rate.
        warmup_epochs: W, the epochs of the warm-up, at ``lr * (e + 1) / W`` (timm's ``warmup_epochs`` is W - 1).
        decay_at: Fractions of ``epochs`` from which the learning rate decays (again) by ``decay_rate``.
        decay_rate: Factor of each decay.
        config: The train.py YAML (``read_recipe``) whose other scheduler settings apply unchanged.
    """
    epochs: int
    lr: float
    warmup_epochs: int
    decay_at: Tuple[float, ...]
    decay_rate: float
    config: str = str(RECIPE_CONFIG)

    @classmethod
    def for_epochs(cls, epochs: int, lr: Optional[float] = None, warmup_epochs: Optional[int] = None,
                   config: Union[str, Path] = RECIPE_CONFIG) -> 'Schedule':
        """The config's schedule for a run of ``epochs``.

        Args:
            epochs: Length of the run.
            lr: Peak learning rate (default: the config's).
            warmup_epochs: Warm-up epochs W of a long run (default: the config's, 5), shortened to a fifth of the
                run for runs under 5 W epochs.
            config: A train.py YAML with ``sched: multistep``.
        """
        cfg = read_recipe(config)
        warmup = cfg.get('warmup_epochs', 0) + 1 if warmup_epochs is None else warmup_epochs
        return cls(epochs=epochs, lr=cfg['lr'] if lr is None else lr, warmup_epochs=min(warmup, epochs // 5),
                   decay_at=tuple((m - 1) / cfg['epochs'] for m in cfg['decay_milestones']),
                   decay_rate=cfg['decay_rate'], config=str(config))

    @property
    def milestones(self) -> Tuple[int, ...]:
        """0-based first epochs of the decays (160 and 180 of 200)."""
        return tuple(self.epoch_at(f) for f in self.decay_at)

    @property
    def decay_factors(self) -> Tuple[float, ...]:
        """Factor on ``lr`` from each milestone on (0.01, 0.0001)."""
        return tuple(self.decay_rate ** (i + 1) for i in range(len(self.decay_at)))

    def epoch_at(self, fraction: float) -> int:
        """The epoch a fraction of the way through the run."""
        return int(round(fraction * self.epochs))

    @property
    def drw_epoch(self) -> int:
        """First epoch of LDAM's deferred re-weighting: the first decay (160 of 200)."""
        return self.milestones[0]

    def timm_config(self) -> Dict[str, Any]:
        """The config with its schedule settings for this run, in timm's conventions (as a ``-c`` YAML states them)."""
        w = self.warmup_epochs
        return dict(read_recipe(self.config), sched='multistep', epochs=self.epochs, lr=self.lr,
                    warmup_epochs=max(w - 1, 0), warmup_lr=self.lr / max(w, 1),
                    decay_milestones=[m + 1 for m in self.milestones], decay_rate=self.decay_rate)

    @cached_property
    def lrs(self) -> Tuple[float, ...]:
        """The learning rate of every epoch, as timm's scheduler sets it at the start of the epoch (train.py calls
        ``step(epoch)`` after each epoch, which sets the next one's)."""
        cfg = self.timm_config()
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg['lr'])
        scheduler, _ = create_scheduler_v2(optimizer, **scheduler_kwargs(SimpleNamespace(**cfg)))
        lrs = []
        for epoch in range(self.epochs):
            scheduler.step(epoch)
            lrs.append(optimizer.param_groups[0]['lr'])
        return tuple(lrs)

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch``: 0.02, 0.04, ..., 0.1 in warm-up, then x0.01 and x0.0001 of ``lr``
        (epochs past the end keep the last one)."""
        if epoch < 0:
            raise ValueError(f'epoch {epoch} < 0')
        return self.lrs[min(epoch, self.epochs - 1)]

    def to_dict(self) -> Dict[str, Any]:
        """The record's ``schedule``."""
        return dict(epochs=self.epochs, lr=self.lr, warmup_epochs=self.warmup_epochs, decay_at=list(self.decay_at),
                    decay_factors=list(self.decay_factors), milestones=list(self.milestones), drw_epoch=self.drw_epoch)
