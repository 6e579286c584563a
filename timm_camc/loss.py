""" Losses for CAMC models and long-tailed recognition

* ``CamcLoss`` wraps any criterion so it takes a ``CamcOutput`` (calibrated logits plus the auxiliary plain logits).
* ``LogitAdjustedLoss``: logit-adjusted cross-entropy, `Long-tail learning via logit adjustment`
  - https://arxiv.org/abs/2007.07314 (Menon et al., 2021); ``tau=1`` is the balanced softmax of
  `Balanced Meta-Softmax for Long-Tailed Visual Recognition` - https://arxiv.org/abs/2007.10740 (Ren et al., 2020).
* ``LDAMLoss``: label-distribution-aware margin loss with deferred re-weighting (DRW), `Learning Imbalanced
  Datasets with Label-Distribution-Aware Margin Loss` - https://arxiv.org/abs/1906.07413 (Cao et al., 2019).
* ``ClassBalancedCrossEntropy``: cross-entropy weighted by the inverse effective number of samples,
  `Class-Balanced Loss Based on Effective Number of Samples` - https://arxiv.org/abs/1901.05555 (Cui et al., 2019).
* ``create_loss``: build any of them (or plain cross-entropy) by name from ``LOSSES``, which also names the training
  options each one takes (``loss_options``); ``classifier_loss_kwargs`` holds what a loss must know about the
  classifier (LDAM's scale).

Every loss takes hard targets (int64 class indices, shape B) or soft targets (B x K probabilities, e.g. from
timm's ``Mixup``), keeps its per-class tensors as (non-persistent) buffers so ``.to(device)`` moves them, and has
``set_epoch(epoch)`` so a training loop can call it on any criterion; only ``LDAMLoss`` (its DRW) and ``CamcLoss`` (a
calibration warm-up) change with the epoch.

Class weights follow ``nn.CrossEntropyLoss``: with hard targets the loss is the weighted mean
``sum_i w_{y_i} CE_i / sum_i w_{y_i}``. With soft targets it is ``sum_i sum_k w_k y_ik CE_ik / sum_i sum_k w_k y_ik``
(``CE_ik = -log p_ik``), so a one-hot soft target gives exactly the hard-target loss. (``nn.CrossEntropyLoss``
itself divides by the batch size for probability targets, which would make the two differ.)

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.loss import SoftTargetCrossEntropy

from timm_camc.layers import CamcOutput

__all__ = [
    'CamcLoss', 'CrossEntropy', 'LogitAdjustedLoss', 'LDAMLoss', 'ClassBalancedCrossEntropy', 'LOSSES', 'LossEntry',
    'classifier_loss_kwargs', 'create_loss', 'effective_number_weights', 'loss_options',
]

ClassCounts = Union[Sequence[float], torch.Tensor]


def _class_counts(cls_num_list: ClassCounts, loss_name: str) -> torch.Tensor:
    """Validated per-class training counts as a float64 vector; every class needs at least one sample."""
    counts = torch.as_tensor(cls_num_list, dtype=torch.float64).detach().cpu()
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f'{loss_name}: cls_num_list must be a non-empty 1-D list of class counts, '
                         f'got shape {tuple(counts.shape)}')
    if not torch.isfinite(counts).all():
        raise ValueError(f'{loss_name}: cls_num_list must be finite')
    bad = (counts <= 0).nonzero().flatten().tolist()
    if bad:
        shown = ', '.join(str(i) for i in bad[:20]) + (', ...' if len(bad) > 20 else '')
        raise ValueError(
            f'{loss_name}: every class needs a positive training count, but {len(bad)} class(es) have none '
            f'(indices {shown}); drop them from the label space or give them a count')
    return counts


def effective_number_weights(cls_num_list: ClassCounts, beta: float = 0.9999) -> torch.Tensor:
    """Class weights from the effective number of samples (Cui et al., 2019).

    ``w_j = (1 - beta) / (1 - beta ** n_j)``, normalised to sum to the number of classes K. ``beta=0`` gives
    uniform weights, ``beta -> 1`` inverse class frequency.

    Args:
        cls_num_list: Training samples per class (all positive).
        beta: Hyper-parameter in [0, 1).

    Returns:
        float32 tensor of K weights.
    """
    if not 0. <= beta < 1.:
        raise ValueError(f'beta must be in [0, 1), got {beta}')
    counts = _class_counts(cls_num_list, 'effective_number_weights')
    if beta == 0.:
        weights = torch.ones_like(counts)
    else:
        # 1 - beta ** n computed as -expm1(n * log(beta)), exact for beta close to 1
        weights = (1. - beta) / -torch.expm1(counts * math.log(beta))
    return (weights * (counts.numel() / weights.sum())).float()


def _is_soft(logits: torch.Tensor, target: torch.Tensor) -> bool:
    return target.shape == logits.shape and target.is_floating_point()


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(Class-weighted) mean cross-entropy for hard or soft targets; see the module docstring for the weighting."""
    if weight is not None:
        # compute in at least the weights' precision instead of rounding them to bf16 / fp16 logits
        dtype = torch.promote_types(logits.dtype, weight.dtype)
        logits, weight = logits.to(dtype), weight.to(dtype)
    if not _is_soft(logits, target):
        return F.cross_entropy(logits, target, weight=weight)
    log_prob = F.log_softmax(logits, dim=-1)
    if weight is None:
        return -(target * log_prob).sum(dim=-1).mean()
    weighted_target = target * weight.to(log_prob.dtype)
    return -(weighted_target * log_prob).sum() / weighted_target.sum()


def _one_hot_like(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft targets as they are, hard targets as one-hot rows, in the dtype of ``logits``."""
    if _is_soft(logits, target):
        return target.to(logits.dtype)
    return F.one_hot(target, logits.shape[-1]).to(logits.dtype)


class CamcLoss(nn.Module):
    """Wraps a criterion so it also takes a ``CamcOutput``: ``L(z) + aux_weight * L(aux logits)``.

    A plain logits tensor (eval mode, or a model without calibration) is passed to the criterion unchanged.

    With ``calib_warmup`` epochs, the loss of those epochs is ``(1 + aux_weight) * L(plain logits)``: the plain
    classifier alone, at the weight the whole loss has once the calibration joins. The calibrated logits enter with
    weight zero, so the map conv ``phi`` gets a zero gradient and stays at its flat start (where the calibrated
    logits equal the plain ones), and every parameter still takes part in the backward pass, as DDP needs. The
    prototypes keep learning meanwhile. ``set_epoch`` switches the calibration on.
    """

    def __init__(self, criterion: nn.Module, calib_warmup: int = 0):
        super().__init__()
        if calib_warmup < 0:
            raise ValueError(f'calib_warmup must be >= 0 epochs, got {calib_warmup}')
        self.criterion = criterion
        self.calib_warmup = calib_warmup
        self.calibrating = calib_warmup == 0

    def set_epoch(self, epoch: int) -> None:
        """Switches the calibration on after the warm-up and forwards the epoch to the wrapped criterion when it
        has a ``set_epoch`` (e.g. ``LDAMLoss``)."""
        self.calibrating = epoch >= self.calib_warmup
        set_epoch = getattr(self.criterion, 'set_epoch', None)
        if callable(set_epoch):
            set_epoch(epoch)

    def forward(self, output: Union[torch.Tensor, CamcOutput], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, CamcOutput):
            return self.criterion(output, target)
        if output.aux_logits is None:
            return self.criterion(output.logits, target)
        if not self.calibrating:
            if output.plain_logits is None:
                raise ValueError('A calibration warm-up needs the plain logits in CamcOutput.plain_logits')
            unused = output.logits.sum() + output.aux_logits.sum()
            return (1. + output.aux_weight) * self.criterion(output.plain_logits, target) + 0. * unused
        loss = self.criterion(output.logits, target)
        if output.aux_weight > 0:
            loss = loss + output.aux_weight * self.criterion(output.aux_logits, target)
        return loss


class CrossEntropy(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` (with optional label smoothing) that also takes soft targets.

    Soft targets go to timm's ``SoftTargetCrossEntropy`` without further smoothing: timm's ``Mixup`` already
    folds its label smoothing into the targets it makes.
    """

    def __init__(self, label_smoothing: float = 0.):
        """
        Args:
            label_smoothing: Label smoothing for hard targets.
        """
        super().__init__(label_smoothing=label_smoothing)
        self.soft_criterion = SoftTargetCrossEntropy()

    def set_epoch(self, epoch: int) -> None:
        """No-op: plain cross-entropy does not change with the epoch."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _is_soft(input, target):
            return self.soft_criterion(input, target)
        return super().forward(input, target)


class LogitAdjustedLoss(nn.Module):
    """Logit-adjusted cross-entropy: ``CE(logits + tau * log(prior), y)`` with the training class prior.

    Training against the prior-shifted logits makes the model's own (unadjusted) logits the balanced
    prediction, so nothing changes at inference. ``tau=1`` is the balanced softmax.
    """

    def __init__(self, cls_num_list: ClassCounts, tau: float = 1.):
        """
        Args:
            cls_num_list: Training samples per class; every class needs a positive count (log(0) is undefined).
            tau: Strength of the adjustment (0 gives plain cross-entropy).
        """
        super().__init__()
        counts = _class_counts(cls_num_list, type(self).__name__)
        self.tau = float(tau)
        self.register_buffer('log_prior', (counts / counts.sum()).log().float(), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.log_prior.numel()

    def set_epoch(self, epoch: int) -> None:
        """No-op: the adjustment does not change with the epoch."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _cross_entropy(logits + self.tau * self.log_prior, target)

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}, tau={self.tau}'


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss with optional deferred re-weighting (LDAM-DRW).

    The target-class logit is lowered by a class margin ``m_j`` proportional to ``n_j ** -1/4`` (largest margin
    ``max_margin``, for the rarest class), the result is multiplied by ``scale`` and fed to cross-entropy.
    With soft targets every logit ``k`` is lowered by ``m_k * y_k``. From epoch ``drw_epoch`` on (see
    ``set_epoch``), the cross-entropy is weighted by ``effective_number_weights(cls_num_list, beta)``.

    LDAM expects cosine logits (normalised features and classifier rows, values in [-1, 1]) that it scales
    itself. A CAMC model with ``norm_classifier=True`` already outputs ``s * cos`` (``s`` the model's
    ``cosine_scale``, 16 by default): pass ``logit_scale_in=s`` so the logits are divided by ``s`` first.
    For a plain linear classifier (``norm_classifier=False``) keep ``logit_scale_in=1``; the margin then acts
    on raw logits, where ``scale`` should usually be 1 as well.
    """

    def __init__(
            self,
            cls_num_list: ClassCounts,
            max_margin: float = 0.5,
            scale: float = 30.,
            drw_epoch: Optional[int] = None,
            beta: float = 0.9999,
            logit_scale_in: float = 1.,
    ):
        """
        Args:
            cls_num_list: Training samples per class (all positive).
            max_margin: Margin of the rarest class; the others are smaller by ``(n_min / n_j) ** 1/4``.
            scale: Scale applied to the margin-adjusted logits before the cross-entropy.
            drw_epoch: First epoch with class re-weighting, or None to never re-weight.
            beta: Effective-number hyper-parameter of the re-weighting, in [0, 1).
            logit_scale_in: The incoming logits are divided by this first (the model's cosine scale).
        """
        super().__init__()
        name = type(self).__name__
        counts = _class_counts(cls_num_list, name)
        if max_margin < 0:
            raise ValueError(f'{name}: max_margin must be >= 0, got {max_margin}')
        if scale <= 0 or logit_scale_in <= 0:
            raise ValueError(f'{name}: scale and logit_scale_in must be positive, got {scale}, {logit_scale_in}')
        if drw_epoch is not None and drw_epoch < 0:
            raise ValueError(f'{name}: drw_epoch must be >= 0 or None, got {drw_epoch}')
        margins = counts.pow(-0.25)
        margins = margins * (max_margin / margins.max())
        self.max_margin = float(max_margin)
        self.scale = float(scale)
        self.logit_scale_in = float(logit_scale_in)
        self.drw_epoch = drw_epoch
        self.beta = float(beta)
        self.register_buffer('margins', margins.float(), persistent=False)
        self.register_buffer('drw_weight', effective_number_weights(counts, beta), persistent=False)
        self.drw_active = False
        self.set_epoch(0)

    @property
    def num_classes(self) -> int:
        return self.margins.numel()

    @property
    def weight(self) -> Optional[torch.Tensor]:
        """The class weights in use at the current epoch, or None before re-weighting starts."""
        return self.drw_weight if self.drw_active else None

    def set_epoch(self, epoch: int) -> None:
        """Switches deferred re-weighting on from ``drw_epoch`` on (and off again before it)."""
        self.drw_active = self.drw_epoch is not None and epoch >= self.drw_epoch

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # at least the buffers' precision: margins of ~0.1 on bf16 cosines, scaled by 30, would lose too much
        cosine = logits.to(torch.promote_types(logits.dtype, self.margins.dtype)) / self.logit_scale_in
        margin = _one_hot_like(cosine, target) * self.margins
        return _cross_entropy(self.scale * (cosine - margin), target, self.weight)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, max_margin={self.max_margin}, scale={self.scale}, '
                f'drw_epoch={self.drw_epoch}, beta={self.beta}, logit_scale_in={self.logit_scale_in}')


class ClassBalancedCrossEntropy(nn.Module):
    """Cross-entropy weighted by ``effective_number_weights(cls_num_list, beta)`` (Cui et al., 2019)."""

    def __init__(self, cls_num_list: ClassCounts, beta: float = 0.9999):
        """
        Args:
            cls_num_list: Training samples per class (all positive).
            beta: Effective-number hyper-parameter in [0, 1).
        """
        super().__init__()
        counts = _class_counts(cls_num_list, type(self).__name__)
        self.beta = float(beta)
        self.register_buffer('weight', effective_number_weights(counts, beta), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.weight.numel()

    def set_epoch(self, epoch: int) -> None:
        """No-op: the class weights do not change with the epoch."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _cross_entropy(logits, target, self.weight)

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}, beta={self.beta}'


def _cross_entropy_loss(cls_num_list: Optional[ClassCounts] = None, **kwargs) -> nn.Module:
    return CrossEntropy(**kwargs)  # the class counts are not used


def _balanced_softmax(cls_num_list: ClassCounts, **kwargs) -> nn.Module:
    if kwargs.pop('tau', 1.) != 1.:
        raise ValueError("'balanced_softmax' is logit adjustment with tau=1; use 'logit_adjusted' for another tau")
    return LogitAdjustedLoss(cls_num_list, tau=1., **kwargs)


@dataclass(frozen=True)
class LossEntry:
    """A loss that ``create_loss`` knows.

    Attributes:
        factory: ``factory(cls_num_list, **kwargs)`` builds the loss.
        needs_counts: The loss needs the training samples per class.
        options: Loss kwarg -> the train.py option (argparse dest) it comes from (``loss_options``).
    """
    factory: Callable[..., nn.Module]
    needs_counts: bool = True
    options: Mapping[str, str] = field(default_factory=dict)


# the losses, their options and, in classifier_loss_kwargs, what they need to know about the classifier: the one home
# of these rules for train.py and the ablation
LOSSES: Dict[str, LossEntry] = {
    'ce': LossEntry(_cross_entropy_loss, needs_counts=False, options=dict(label_smoothing='smoothing')),
    'logit_adjusted': LossEntry(LogitAdjustedLoss, options=dict(tau='la_tau')),
    'balanced_softmax': LossEntry(_balanced_softmax),
    'ldam': LossEntry(LDAMLoss, options=dict(
        max_margin='ldam_margin', scale='ldam_scale', drw_epoch='drw_epoch', beta='cb_beta')),
    'class_balanced': LossEntry(ClassBalancedCrossEntropy, options=dict(beta='cb_beta')),
}


def _loss_key(name: str) -> str:
    key = name.lower().replace('-', '_')
    if key not in LOSSES:
        raise ValueError(f'Unknown loss {name!r}, expected one of {", ".join(LOSSES)}')
    return key


def loss_options(name: str, options: Mapping[str, Any]) -> Dict[str, Any]:
    """The kwargs of loss ``name`` from training options (e.g. ``vars(args)`` of train.py); unset (None) ones are left
    to the loss's defaults."""
    entry = LOSSES[_loss_key(name)]
    return {kwarg: options[opt] for kwarg, opt in entry.options.items() if options.get(opt) is not None}


def classifier_loss_kwargs(name: str, cosine_scale: Optional[float]) -> Dict[str, Any]:
    """What loss ``name`` needs to know about the classifier it trains (defaults that explicit kwargs override).

    LDAM puts its margins on cosine similarities and scales them itself: on a cosine classifier of scale ``s``
    (``cosine_scale``) it divides the logits by ``s`` first (``logit_scale_in``) and uses scale 30 (Cao et al.);
    on a linear classifier (``cosine_scale=None``) the logits are already scaled, so scale 1. Other losses need
    nothing.
    """
    if _loss_key(name) != 'ldam':
        return {}
    if cosine_scale is None:
        return dict(scale=1.)
    return dict(scale=30., logit_scale_in=float(cosine_scale))


def create_loss(name: str, cls_num_list: Optional[ClassCounts] = None, **kwargs) -> nn.Module:
    """Creates a loss by name.

    Names (``LOSSES``): 'ce' (``CrossEntropy``; kwarg ``label_smoothing``), 'logit_adjusted' (``LogitAdjustedLoss``;
    kwarg ``tau``), 'balanced_softmax' (``LogitAdjustedLoss`` with ``tau=1``), 'ldam' (``LDAMLoss``; its kwargs) and
    'class_balanced' (``ClassBalancedCrossEntropy``; kwarg ``beta``). Wrap the result in ``CamcLoss`` to train a
    CAMC model with its auxiliary loss.

    Args:
        name: Loss name (case-insensitive, '-' and '_' alike).
        cls_num_list: Training samples per class; required by every loss but 'ce', which ignores it.
        **kwargs: Passed to the loss class.
    """
    entry = LOSSES[_loss_key(name)]
    if entry.needs_counts and cls_num_list is None:
        raise ValueError(f'Loss {name!r} needs cls_num_list (the number of training samples per class)')
    return entry.factory(cls_num_list, **kwargs)
