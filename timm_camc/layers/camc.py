""" Class Activation Map Calibration (CAMC) head

A classifier head for long-tailed recognition that pools the final feature map with weights derived from
calibrated class activation maps instead of a plain global average, on top of a cosine-normalised classifier.

Paper: `Calibrating Class Activation Maps for Long-Tailed Visual Recognition` - https://arxiv.org/abs/2108.12757
(Zhang, Lin, Lai, Ding, Wu, 2021). Only the abstract is available to this project: the calibration variants below
are the reconstruction documented in the project's CAMC notes, not a port of official code.

Notation (per image): ``F`` the C x N final feature map (N = H * W), ``W`` the K x C classifier weights,
``P`` a K x C buffer of class prototypes (EMA of L2-normalised pooled features, updated from labels in training).
A hat is L2 normalisation. Every calibration computes pooling weights ``a = (1 + A) / sum(1 + A)`` from a map
``A = sigmoid(phi([standardise(M), R]))`` where ``M`` is a class activation map, ``R`` a prototype-correlation
map and ``phi`` one small conv shared by all classes. ``phi`` starts at zero, so at initialisation ``A`` is flat
and the head equals its plain (cosine) classifier. With ``nonneg_map`` the conv weights of ``phi`` are ``|theta|``:
``A`` then grows with the class map and the prototype map, so it can only highlight what they highlight (a free
``phi`` may learn the opposite sign and reinforce the background). Those weights start at 1e-4, not at zero,
because ``|theta|`` has no gradient at zero.

* ``'global'`` (variant B): expected maps under the detached plain prediction ``q``:
  ``M = (q W_hat) F``, ``R = (q P_hat) F_hat``; one calibrated pooled feature ``g`` scored by the classifier.
  ``q`` is truncated to its ``topk`` most probable classes (renormalised; 32 by default, 0 for all), and the
  class maps use ``W`` as a constant, as a CAM does: the classifier learns from the logits, the backbone from
  the logits and the maps. Cost O(B * C * (N + topk)) on top of the classifier, for any K.
* ``'target'`` (variant C): calibration as a training objective only. In training, the map of the ground-truth
  class (``q`` one-hot on the label) gives a calibrated feature whose logits take the auxiliary loss, and the
  plain logits the main loss. Inference is the plain classifier: the calibration costs nothing there.
* ``'class'`` (variant A): one map per class, ``M_k = W_hat_k F``, ``R_k = P_hat_k F_hat``, and a pooled feature
  per class ``g_k``; scored without materialising B x K x C via ``<w_k, g_k> = sum_p a_kp M_kp`` and
  ``|g_k|^2 = a_k^T (F^T F) a_k``. Cost O(B * K * C * N).

Large K is memory-bound, not FLOP-bound: the classifier rows are never normalised into a K x C copy (logits are
scaled by ``1 / |w_k|`` instead), the plain and calibrated features share one product with ``W``, and the
prototype update touches only the rows of the classes in the batch.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from typing import Dict, Final, NamedTuple, Optional, Tuple, Type

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from timm.layers import SelectAdaptivePool2d

from .classifier import LinearClassifier, NormedLinear, _sq_norm, _upcast, l2_normalize

__all__ = [
    'CamcOutput', 'GlobalCalibration', 'TargetCalibration', 'ClassCalibration', 'CamcHead', 'check_class_indices',
    'CALIBRATIONS',
]


class CamcOutput(NamedTuple):
    """What a CAMC model returns from ``model(x, target)`` in training.

    Attributes:
        logits: The logits used for prediction (calibrated when CAMC is on, except for a training-only calibration).
        aux_logits: The plain (un-calibrated) classifier logits (for a training-only calibration: the calibrated
            ones), or None when the head has no calibration.
        aux_weight: Weight of the auxiliary loss on ``aux_logits`` (a model hyper-parameter).
    """
    logits: torch.Tensor
    aux_logits: Optional[torch.Tensor]
    aux_weight: float


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


def _standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero-mean, unit-variance over the last dim (the spatial positions of a map)."""
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, correction=0, keepdim=True)
    return (x - mean) / (std + eps)


class _Calibration(nn.Module):
    """Shared parts of the calibrations: the map conv ``phi`` and the class prototypes.

    ``forward(x, pooled, weight, row_scale, q)`` takes the feature map, its plain pooled feature, the raw
    classifier weights, the per-class scale that normalises them (``1 / |w_k|`` for the cosine classifier) and the
    class weights ``q`` of the maps (B x K, no gradient; None for a calibration whose ``uses_q`` is False: the head
    then skips that B x K x C product). It returns the raw projections ``<w_k, .>`` and squared norms of the plain
    pooled feature and of the calibrated one(s), for the classifier's ``logits_from_projection``.

    ``q`` is the plain prediction, or, for a ``train_only`` calibration, the one-hot label: such a calibration
    runs only in training, with labels, and inference is the plain classifier.
    """
    uses_q: Final[bool]
    train_only: Final[bool]
    nonneg_map: Final[bool]
    # per subclass; copied to the instance in __init__, where TorchScript reads them
    _uses_q = True
    _train_only = False

    def __init__(
            self,
            num_features: int,
            num_classes: int,
            momentum: float = 0.9,
            topk: int = 32,
            nonneg_map: bool = False,
            kernel_size: int = 3,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if not 0. <= momentum < 1.:
            raise ValueError(f'prototype momentum must be in [0, 1), got {momentum}')
        if topk < 0:
            raise ValueError(f'topk must be >= 0 (0: all classes), got {topk}')
        self.uses_q = self._uses_q
        self.train_only = self._train_only
        self.nonneg_map = nonneg_map
        self.momentum = momentum
        self.topk = topk if 0 < topk < num_classes else 0  # 0: all classes
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, **dd)
        self.register_buffer('prototypes', torch.zeros(num_classes, num_features, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # zero phi: A is flat at init, so the head starts exactly as its plain classifier (|theta| needs a nonzero
        # start to get a gradient; 1e-4 keeps A within 1e-3 of flat)
        if self.nonneg_map:
            nn.init.constant_(self.conv.weight, 1e-4)
        else:
            nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def _attention(self, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The calibration map ``A`` (B, G, H, W) from activation maps ``m`` and prototype maps ``r`` (same shape)."""
        B, G, H, W = m.shape
        maps = torch.stack([_standardise(m.flatten(2)).reshape(B, G, H, W), r], dim=2).reshape(B * G, 2, H, W)
        if self.nonneg_map:
            attn = F.conv2d(maps, self.conv.weight.abs(), self.conv.bias, padding=self.kernel_size // 2)
        else:
            attn = self.conv(maps)
        return torch.sigmoid(attn).reshape(B, G, H, W)

    def _pool_weights(self, m: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Pooling weights ``a = (1 + A) / sum(1 + A)`` (B, G, N)."""
        attn = 1. + self._attention(m, r).flatten(2)
        return attn / attn.sum(-1, keepdim=True)

    @torch.no_grad()
    def update_prototypes(self, pooled: torch.Tensor, target: torch.Tensor) -> None:
        """EMA update of the prototypes of the classes in the batch (gathered over DDP ranks).

        Touches only the rows of those classes: O(B * C) work, whatever the number of classes. Under DDP every
        rank must pass the same batch size (timm's training loader drops the last incomplete batch).
        """
        feats = l2_normalize(pooled.detach(), dim=-1).to(self.prototypes.dtype)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            all_feats = feats.new_empty((world * feats.shape[0], feats.shape[1]))
            all_target = target.new_empty((world * target.shape[0],))
            dist.all_gather_into_tensor(all_feats, feats.contiguous())
            dist.all_gather_into_tensor(all_target, target.contiguous())
            feats, target = all_feats, all_target
        same = (target.unsqueeze(0) == target.unsqueeze(1)).to(feats.dtype)  # B x B, same class
        class_means = (same @ feats) / same.sum(1, keepdim=True)  # each sample's class mean in the batch
        updated = self.momentum * self.prototypes[target] + (1. - self.momentum) * class_means
        self.prototypes.index_copy_(0, target, updated)  # rows of one class are identical: duplicates agree


class GlobalCalibration(_Calibration):
    """Variant B: one calibrated map per image from the prediction-weighted class maps.

    With ``topk > 0`` the expected class direction and prototype are taken over the ``topk`` most probable
    classes (renormalised), which avoids two K x C products per step at large K; ``topk=0`` uses all classes.
    """

    def _expected_directions(
            self, weight: torch.Tensor, row_scale: torch.Tensor, q: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``u = sum_k q_k w_k / |w_k|`` and ``v = sum_k q_k p_k / |p_k|``, both B x C."""
        if self.topk:
            q, idx = q.topk(self.topk, dim=1)
            q = q / q.sum(1, keepdim=True)
            w = weight[idx] * row_scale[idx].unsqueeze(-1)  # B x T x C
            p = l2_normalize(self.prototypes[idx], dim=-1)
            return torch.bmm(q.unsqueeze(1), w).squeeze(1), torch.bmm(q.unsqueeze(1), p.to(q.dtype)).squeeze(1)
        p_scale = torch.linalg.vector_norm(_upcast(self.prototypes), dim=1).clamp_min(1e-6).reciprocal()
        return (q * row_scale) @ weight, (q * p_scale.to(q.dtype)) @ self.prototypes.to(q.dtype)

    def pre_logits(
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """The calibrated pooled feature ``g`` that the classifier scores (``pooled`` unused)."""
        # the class maps use the classifier as a CAM does, as a constant: the classifier learns from the logits,
        # the backbone from both (and no K x C gradient arises outside the logits product)
        a = self._pool_weights(*self._maps(x, weight, row_scale, q))  # B x 1 x N
        return torch.bmm(x.flatten(2), a.transpose(1, 2)).squeeze(2)

    def _maps(
            self, x: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor, q: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The expected class map ``(q W_hat) F`` and prototype map ``(q P_hat) F_hat``, both B x 1 x H x W."""
        assert q is not None, 'the global calibration is weighted by class probabilities q'
        q = q.detach().to(x.dtype)
        u, v = self._expected_directions(weight.detach().to(x.dtype), row_scale.detach().to(x.dtype), q)
        m = torch.einsum('bc,bchw->bhw', u, x).unsqueeze(1)
        r = torch.einsum('bc,bchw->bhw', v, l2_normalize(x, dim=1)).unsqueeze(1)
        return m, r

    def calibration_map(
            self, x: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor, q: Optional[torch.Tensor],
            classes: torch.Tensor,
    ) -> torch.Tensor:
        """The map ``A`` (B x H x W, in (0, 1)) that reweights the pooling; one per image (``classes`` unused)."""
        return self._attention(*self._maps(x, weight, row_scale, q))[:, 0]

    def forward(
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.pre_logits(x, pooled, weight, row_scale, q)
        feats = torch.cat([pooled.to(g.dtype), g])  # one product with W for both: half the K x C gradient traffic
        proj, sq_norm = F.linear(feats, weight.to(g.dtype)).chunk(2), _sq_norm(feats).chunk(2)
        return proj[0], sq_norm[0], proj[1], sq_norm[1]


class TargetCalibration(GlobalCalibration):
    """Variant C: the global calibration weighted by the label (``q`` one-hot), in training only.

    The calibrated feature of the ground-truth class's map must also classify correctly (the head's auxiliary loss);
    inference is the plain classifier. ``topk`` is 1: a one-hot ``q`` has one class.
    """
    _train_only = True

    def __init__(self, num_features: int, num_classes: int, topk: int = 32, **kwargs):
        super().__init__(num_features, num_classes, topk=1, **kwargs)


class ClassCalibration(_Calibration):
    """Variant A: a calibrated map and pooled feature per class (``topk`` and ``q`` are not used)."""
    _uses_q = False

    def pre_logits(
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Class-specific pooling has no single pooled feature: the head's plain pooled feature is returned."""
        return pooled

    def forward(
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The calibrated projection ``<w_k, g_k>`` and ``|g_k|^2`` are B x K."""
        m, r = self._maps(x, weight)
        a = self._pool_weights(m * row_scale.to(x.dtype)[:, None, None], r)  # B x K x N
        proj = (a * m.flatten(2)).sum(-1)
        flat = x.flatten(2)
        gram = torch.bmm(flat.transpose(1, 2), flat)  # B x N x N
        sq_norm = (torch.bmm(a, gram) * a).sum(-1)
        return F.linear(pooled, weight.to(pooled.dtype)), _sq_norm(pooled), proj, sq_norm

    def _maps(self, x: torch.Tensor, weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw class maps ``W F`` and prototype maps ``P_hat F_hat``, both B x K x H x W."""
        m = torch.einsum('kc,bchw->bkhw', weight.to(x.dtype), x)
        p = l2_normalize(self.prototypes, dim=1).to(x.dtype)
        return m, torch.einsum('kc,bchw->bkhw', p, l2_normalize(x, dim=1))

    def calibration_map(
            self, x: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor, q: Optional[torch.Tensor],
            classes: torch.Tensor,
    ) -> torch.Tensor:
        """The map ``A_k`` (B x H x W) of class ``classes[b]`` for each image."""
        m, r = self._maps(x, weight)
        attn = self._attention(m * row_scale.to(x.dtype)[:, None, None], r)
        return attn[torch.arange(x.shape[0], device=x.device), classes]


CALIBRATIONS: Dict[str, Type[_Calibration]] = {
    'global': GlobalCalibration,  # variant B
    'class': ClassCalibration,  # variant A
    'target': TargetCalibration,  # variant C (training only)
}


class CamcHead(nn.Module):
    """Pooling + (cosine) classifier + optional CAM calibration.

    ``forward(x)`` maps an unpooled feature map to logits and needs no labels. In training,
    ``forward_train(x, target)`` also updates the class prototypes and returns the logits of the auxiliary loss
    (the plain logits; for the training-only ``'target'`` calibration, the calibrated ones). ``num_classes=0`` gives
    pooled features, and ``pool_type=''`` with it the unpooled map.
    """
    class_tensors = ('fc.weight', 'fc.bias', 'calib.prototypes')  # state-dict entries sized by num_classes

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
            camc: Calibration variant, one of ``CALIBRATIONS`` ('global', 'class', 'target'), or None / '' / 'none'.
            norm_classifier: Cosine classifier with scale ``s`` (True) or a plain linear one (False).
            cosine_scale: The cosine classifier scale ``s``.
            learn_scale: Learn ``s``.
            proto_momentum: EMA momentum of the class prototypes.
            camc_topk: 'global' calibration over the ``camc_topk`` most probable classes only (0: all classes).
            nonneg_map: Non-negative weights in the map conv ``phi``: ``A`` can only highlight what the class and
                prototype maps highlight.
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
                    in_features, num_classes, momentum=proto_momentum, topk=camc_topk, nonneg_map=nonneg_map, **dd)

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
            return torch.softmax(_upcast(logits), dim=-1)

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
        proj_plain, sq_plain, proj, sq_norm = self.calib(x, pooled, weight, row_scale, q)
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
            return self.calib.pre_logits(x, pooled, self.fc.weight, row_scale, self._calib_q(pooled, row_scale, None))
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
            out['calibration'] = self.calib.calibration_map(x, weight, row_scale, q, classes)
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
            return CamcOutput(logits, None, 0.)
        self.calib.update_prototypes(pooled, target)
        if self.calib.train_only:  # predictions stay plain; the calibrated feature takes the auxiliary loss
            return CamcOutput(plain, logits, self.aux_weight)
        return CamcOutput(logits, plain, self.aux_weight)

    def _check_target(self, target: torch.Tensor, batch_size: int) -> None:
        if self.num_classes == 0:
            raise ValueError('The classifier was removed (num_classes=0): there are no classes for the labels')
        if target.dtype != torch.long or target.shape != (batch_size,):
            raise ValueError(
                f'target must be int64 class indices of shape ({batch_size},), got {target.dtype} of shape '
                f'{tuple(target.shape)} (soft / mixup targets go to the loss, not to the model)')
        # on an accelerator the range is checked on the device: no host sync per step, safe in CUDA graph capture
        check_class_indices(target, self.num_classes, 'labels')
