""" Class Activation Map Calibration (CAMC) head

A classifier head for long-tailed recognition that pools the final feature map with weights derived from
calibrated class activation maps instead of a plain global average, on top of a cosine-normalised classifier.

Paper: `Calibrating Class Activation Maps for Long-Tailed Visual Recognition` - https://arxiv.org/abs/2108.12757
(Zhang, Lin, Lai, Ding, Wu, 2021). Only the abstract is available to this project: the calibration variants below
are the reconstruction documented in the project's CAMC notes, not a port of official code.

The calibrations (variants A to D, the map ``A`` and the class prototypes) are in ``calibration.py``; this
module holds the head that pools, classifies and calibrates, and what it returns in training.

Large K is memory-bound, not FLOP-bound: the classifier rows are never normalised into a K x C copy (logits are
scaled by ``1 / |w_k|`` instead), the plain and calibrated features share one product with ``W``, and the
prototype update touches only the rows of the classes in the batch.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from timm.layers import SelectAdaptivePool2d

from .calibration import CALIBRATIONS, _Calibration
from .classifier import LinearClassifier, NormedLinear, _sq_norm

__all__ = ['CamcOutput', 'CamcHead', 'check_class_indices']


class CamcOutput(NamedTuple):
    """What a CAMC model returns from ``model(x, target)`` in training.

    Attributes:
        logits: The logits used for prediction (calibrated when CAMC is on, except for a training-only calibration).
        aux_logits: The plain (un-calibrated) classifier logits (for a training-only calibration: the calibrated
            ones), or None when the head has no calibration.
        aux_weight: Weight of the auxiliary loss on ``aux_logits`` (a model hyper-parameter).
        plain_logits: The plain classifier's logits (one of the two above; for a loss that trains the plain
            classifier alone, e.g. during a calibration warm-up).
    """
    logits: torch.Tensor
    aux_logits: Optional[torch.Tensor]
    aux_weight: float
    plain_logits: Optional[torch.Tensor] = None


def check_class_indices(labels: torch.Tensor, num_classes: int, what: str = 'labels') -> None:
    """Checks that integer class indices lie in [0, num_classes) without a host sync on an accelerator.

    On the CPU a ``ValueError`` lists the bad values. On an accelerator (and the meta device), and while compiling or
    capturing a CUDA graph, the check runs on the device (``torch._assert_async``): reading the result on the host
    would stall the stream once per call, so a bad label fails the next synchronising call instead, with this message.
    """
    if labels.device.type != 'cpu' or torch.compiler.is_compiling():
        torch._assert_async(((labels >= 0) & (labels < num_classes)).all(),
                            f'{what} out of range [0, {num_classes})')
        return
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        values = torch.unique(labels[bad]).tolist()
        shown = ', '.join(str(v) for v in values[:20]) + (', ...' if len(values) > 20 else '')
        raise ValueError(f'{what} out of range [0, {num_classes}): {int(bad.sum())} value(s): {shown}')


class CamcHead(nn.Module):
    """Pooling + (cosine) classifier + optional CAM calibration.

    ``forward(x)`` maps an unpooled feature map to logits and needs no labels. In training,
    ``forward_train(x, target)`` also updates the class prototypes and returns the logits of the auxiliary loss
    (the plain logits; for the training-only ``'target'`` calibration, the calibrated ones). ``num_classes=0`` gives
    pooled features, and ``pool_type=''`` with it the unpooled map.
    """
    # state-dict entries sized by num_classes (label_counts: only with balanced_q)
    class_tensors = ('fc.weight', 'fc.bias', 'calib.prototypes', 'calib.label_counts')

    def __init__(
            self,
            in_features: int,
            num_classes: int,
            pool_type: str = 'avg',
            camc: Optional[str] = 'global',
            norm_classifier: bool = True,
            cosine_scale: float = 16.,
            learn_scale: bool = False,
            proto_momentum: float = 0.9,
            camc_topk: int = 32,
            nonneg_map: bool = False,
            balanced_q: bool = False,
            aux_weight: float = 0.5,
            drop_rate: float = 0.,
            device=None,
            dtype=None,
    ):
        """
        Args:
            in_features: Channels of the feature map.
            num_classes: Number of classes, 0 to remove the classifier.
            pool_type: Global pooling for the plain logits and pre-logits ('' only with ``num_classes=0``).
            camc: Calibration variant, one of ``CALIBRATIONS`` ('global', 'batch', 'class', 'target'), or None / '' /
                'none'.
            norm_classifier: Cosine classifier with scale ``s`` (True) or a plain linear one (False).
            cosine_scale: The cosine classifier scale ``s``.
            learn_scale: Learn ``s``.
            proto_momentum: EMA momentum of the class prototypes.
            camc_topk: 'global' calibration over the ``camc_topk`` most probable classes only (0: all classes).
            nonneg_map: Non-negative weights in the map conv ``phi``: ``A`` can only highlight what the class and
                prototype maps highlight.
            balanced_q: Weight the maps by the logit-adjusted prediction (by the label frequencies seen in training)
                instead of the plain one ('global' and 'batch' only).
            aux_weight: Weight of the auxiliary loss (carried in ``CamcOutput``).
            drop_rate: Dropout on the final feature map in training.
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if num_classes < 0:
            raise ValueError(f'num_classes must be >= 0, got {num_classes}')
        camc = None if camc in (None, '', 'none') else camc
        if camc is not None and camc not in CALIBRATIONS:
            raise ValueError(f'Unknown camc mode {camc!r}, expected one of {sorted(CALIBRATIONS)} or None')
        if not pool_type and num_classes:
            raise ValueError('Pooling can only be disabled (pool_type=\'\') together with num_classes=0')
        if aux_weight < 0:
            raise ValueError(f'aux_weight must be >= 0, got {aux_weight}')
        self.num_classes = num_classes
        self.camc = camc
        self.aux_weight = float(aux_weight)
        self.drop_rate = drop_rate
        self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))
        pooled_features = in_features * self.global_pool.feat_mult()

        self.calib: Optional[_Calibration] = None
        if num_classes == 0:
            self.fc = nn.Identity()
        else:
            if norm_classifier:
                self.fc = NormedLinear(
                    pooled_features, num_classes, scale=cosine_scale, learn_scale=learn_scale, **dd)
            else:
                self.fc = LinearClassifier(pooled_features, num_classes, **dd)
            if camc is not None:
                if pooled_features != in_features:
                    raise ValueError(f'CAMC needs a pooling that keeps the channel count, not {pool_type!r}')
                self.calib = CALIBRATIONS[camc](
                    in_features, num_classes, momentum=proto_momentum, topk=camc_topk, nonneg_map=nonneg_map,
                    balanced_q=balanced_q, **dd)

    def reset_parameters(self) -> None:
        if hasattr(self.fc, 'reset_parameters'):
            self.fc.reset_parameters()
        if self.calib is not None:
            self.calib.reset_parameters()

    def _calib_q(
            self, pooled: torch.Tensor, row_scale: torch.Tensor, target: Optional[torch.Tensor],
    ) -> Optional[torch.Tensor]:
        """The class weights ``q`` of the maps (no gradient): the plain prediction, or the one-hot label for a
        training-only calibration; None for a calibration that does not use them."""
        if self.calib is None or not self.calib.uses_q:
            return None
        if self.calib.train_only:
            assert target is not None, 'a training-only calibration is weighted by the labels'
            return F.one_hot(target, self.num_classes).to(pooled.dtype)
        with torch.no_grad():
            logits = self.fc.logits_from_projection(F.linear(pooled, self.fc.weight), _sq_norm(pooled), row_scale)
            return self.calib.prediction_weights(logits)

    def _calibrates(self, target: Optional[torch.Tensor]) -> bool:
        """Whether the calibration runs: always, except a training-only one without labels."""
        if self.calib is None:
            return False
        return target is not None or not self.calib.train_only

    def _logits(
            self, x: torch.Tensor, target: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(calibrated logits, plain logits, plain pooled features) of a feature map (both logits are the plain ones
        when the calibration does not run)."""
        pooled = self.global_pool(x)
        if self.calib is None or not self._calibrates(target):
            plain = self.fc(pooled)
            return plain, plain, pooled
        weight, row_scale = self.fc.weight, self.fc.row_scale()
        q = self._calib_q(pooled, row_scale, target)
        proj_plain, sq_plain, proj, sq_norm = self.calib(x, pooled, weight, row_scale, q, target)
        plain = self.fc.logits_from_projection(proj_plain, sq_plain, row_scale)
        return self.fc.logits_from_projection(proj, sq_norm, row_scale), plain, pooled

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        if pre_logits:
            pooled = self.global_pool(x)
            if self.calib is None or not self._calibrates(None):
                return pooled
            row_scale = self.fc.row_scale()
            q = self._calib_q(pooled, row_scale, None)
            return self.calib.pre_logits(x, pooled, self.fc.weight, row_scale, q, None)
        return self._logits(x)[0]

    @torch.jit.unused
    def explain(self, x: torch.Tensor, classes: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """The maps behind the logits, for visualisation, from the code that computes them.

        Args:
            x: Unpooled feature map (B, C, H, W).
            classes: Class per image for the class maps (default: the predicted class).

        Returns:
            ``logits`` (B x K), ``classes`` (B), ``cam``: the class activation map ``W_hat_c F`` of each image's class
            (B x H x W; the cosine classifier's normalised weight rows), and with CAMC ``calibration``: the map ``A``
            in (0, 1) that reweights the pooling (B x H x W).
        """
        if self.num_classes == 0:
            raise ValueError('explain() needs a classifier (num_classes > 0)')
        logits, _, pooled = self._logits(x)
        if classes is None:
            classes = logits.argmax(-1)
        weight, row_scale = self.fc.weight, self.fc.row_scale()
        rows = weight[classes] * row_scale[classes].unsqueeze(-1)
        out = dict(logits=logits, classes=classes, cam=torch.einsum('bc,bchw->bhw', rows.to(x.dtype), x))
        if self.calib is not None:
            # a training-only calibration shows the map of each image's class, as its training loss sees it
            q = self._calib_q(pooled, row_scale, classes if self.calib.train_only else None)
            out['calibration'] = self.calib.calibration_map(x, pooled, weight, row_scale, q, classes)
        return out

    @torch.jit.unused
    def forward_train(self, x: torch.Tensor, target: torch.Tensor) -> CamcOutput:
        """Training forward with labels: updates the prototypes and returns both logits.

        Args:
            x: Unpooled feature map (B, C, H, W).
            target: Class indices (B,), int64 in [0, num_classes).
        """
        self._check_target(target, x.shape[0])
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        logits, plain, pooled = self._logits(x, target)
        if self.calib is None:
            return CamcOutput(logits, None, 0., plain)
        self.calib.update_prototypes(pooled, target)
        if self.calib.train_only:  # predictions stay plain; the calibrated feature takes the auxiliary loss
            return CamcOutput(plain, logits, self.aux_weight, plain)
        return CamcOutput(logits, plain, self.aux_weight, plain)

    def _check_target(self, target: torch.Tensor, batch_size: int) -> None:
        if self.num_classes == 0:
            raise ValueError('The classifier was removed (num_classes=0): there are no classes for the labels')
        if target.dtype != torch.long or target.shape != (batch_size,):
            raise ValueError(
                f'target must be int64 class indices of shape ({batch_size},), got {target.dtype} of shape '
                f'{tuple(target.shape)} (soft / mixup targets go to the loss, not to the model)')
        # on an accelerator the range is checked on the device: no host sync per step, safe in CUDA graph capture
        check_class_indices(target, self.num_classes, 'labels')
