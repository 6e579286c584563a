""" CAM calibrations: the pooling maps of the CAMC head

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
  With ``balanced_q`` the prediction behind ``q`` is logit-adjusted by the label frequencies the head has seen in
  training (``softmax(z - log pi)``), so that the maps do not inherit the head-class bias of plain CE.
* ``'batch'`` (variant D): correlation across images. In training, ``R`` correlates each position with the other
  images of the same class in the batch (the mean of their normalised pooled features, with gradient, so the
  shared regions are reinforced in both images); an image without a same-class partner in the batch, and every
  image at inference, uses the prototypes as ``'global'`` does.
* ``'target'`` (variant C): calibration as a training objective only. In training, the map of the ground-truth
  class (``q`` one-hot on the label) gives a calibrated feature whose logits take the auxiliary loss, and the
  plain logits the main loss. Inference is the plain classifier: the calibration costs nothing there.
* ``'class'`` (variant A): one map per class, ``M_k = W_hat_k F``, ``R_k = P_hat_k F_hat``, and a pooled feature
  per class ``g_k``; scored without materialising B x K x C via ``<w_k, g_k> = sum_p a_kp M_kp`` and
  ``|g_k|^2 = a_k^T (F^T F) a_k``. Cost O(B * K * C * N).

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from typing import Dict, Final, Optional, Tuple, Type

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .classifier import _sq_norm, _upcast, l2_normalize

__all__ = [
    'GlobalCalibration', 'BatchCalibration', 'TargetCalibration', 'ClassCalibration', 'CALIBRATIONS',
]


def _standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Zero-mean, unit-variance over the last dim (the spatial positions of a map)."""
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, correction=0, keepdim=True)
    return (x - mean) / (std + eps)


def _same_class(target: torch.Tensor) -> torch.Tensor:
    """B x B boolean matrix: ``[i, j]`` is True where samples i and j have the same label (the diagonal included)."""
    return target.unsqueeze(0) == target.unsqueeze(1)


class _Calibration(nn.Module):
    """Shared parts of the calibrations: the map conv ``phi`` and the class prototypes.

    ``forward(x, pooled, weight, row_scale, q, target)`` takes the feature map, its plain pooled feature, the raw
    classifier weights, the per-class scale that normalises them (``1 / |w_k|`` for the cosine classifier), the
    class weights ``q`` of the maps (B x K, no gradient; None for a calibration whose ``uses_q`` is False: the head
    then skips that B x K x C product) and the labels in training (None at inference). It returns the raw
    projections ``<w_k, .>`` and squared norms of the plain pooled feature and of the calibrated one(s), for the
    classifier's ``logits_from_projection``.

    ``q`` is the plain prediction (``prediction_weights``), or, for a ``train_only`` calibration, the one-hot
    label: such a calibration runs only in training, with labels, and inference is the plain classifier.

    With ``balanced_q`` a ``label_counts`` buffer counts the labels of the training batches (gathered over DDP
    ranks, after the sampler: what the classifier's bias follows), and ``q`` is predicted from the logits minus
    their log frequency. Without it the buffer is not part of the state dict.
    """
    uses_q: Final[bool]
    train_only: Final[bool]
    nonneg_map: Final[bool]
    balanced_q: Final[bool]
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
            balanced_q: bool = False,
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
        if balanced_q and (not self._uses_q or self._train_only):
            raise ValueError(f'balanced_q re-weights the prediction behind the maps; the {type(self).__name__} '
                             f'does not use the prediction')
        self.uses_q = self._uses_q
        self.train_only = self._train_only
        self.nonneg_map = nonneg_map
        self.balanced_q = balanced_q
        self.momentum = momentum
        self.topk = topk if 0 < topk < num_classes else 0  # 0: all classes
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, **dd)
        self.register_buffer('prototypes', torch.zeros(num_classes, num_features, **dd))
        # at least float32 whatever the model's dtype: counts are integers far beyond what bf16 holds
        count_dtype = torch.promote_types(dtype or torch.get_default_dtype(), torch.float32)
        self.register_buffer(
            'label_counts', torch.zeros(num_classes, device=device, dtype=count_dtype), persistent=balanced_q)
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

    def prediction_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """The class weights ``q`` of the maps from the plain logits: their softmax, logit-adjusted by the label
        frequencies seen in training with ``balanced_q`` (uniform before any training step)."""
        logits = _upcast(logits)
        if self.balanced_q:
            counts = self.label_counts.clamp_min(1.)
            logits = logits - torch.log(counts / counts.sum()).to(logits.dtype)
        return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def update_prototypes(self, pooled: torch.Tensor, target: torch.Tensor) -> None:
        """EMA update of the prototypes of the classes in the batch (gathered over DDP ranks), and with
        ``balanced_q`` of the label counts.

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
        same = _same_class(target).to(feats.dtype)
        class_means = (same @ feats) / same.sum(1, keepdim=True)  # each sample's class mean in the batch
        updated = self.momentum * self.prototypes[target] + (1. - self.momentum) * class_means
        self.prototypes.index_copy_(0, target, updated)  # rows of one class are identical: duplicates agree
        if self.balanced_q:
            self.label_counts.index_add_(0, target, torch.ones_like(target, dtype=self.label_counts.dtype))


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
            q: Optional[torch.Tensor], target: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The calibrated pooled feature ``g`` that the classifier scores."""
        # the class maps use the classifier as a CAM does, as a constant: the classifier learns from the logits,
        # the backbone from both (and no K x C gradient arises outside the logits product)
        a = self._pool_weights(*self._maps(x, pooled, weight, row_scale, q, target))  # B x 1 x N
        return torch.bmm(x.flatten(2), a.transpose(1, 2)).squeeze(2)

    def _prototype_direction(
            self, v: torch.Tensor, pooled: torch.Tensor, target: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """The direction ``R`` correlates the positions with: the expected prototype ``v`` (B x C)."""
        return v

    def _maps(
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor], target: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The expected class map ``(q W_hat) F`` and prototype map ``(q P_hat) F_hat``, both B x 1 x H x W."""
        assert q is not None, 'the global calibration is weighted by class probabilities q'
        q = q.detach().to(x.dtype)
        u, v = self._expected_directions(weight.detach().to(x.dtype), row_scale.detach().to(x.dtype), q)
        v = self._prototype_direction(v, pooled, target)
        m = torch.einsum('bc,bchw->bhw', u, x).unsqueeze(1)
        r = torch.einsum('bc,bchw->bhw', v, l2_normalize(x, dim=1)).unsqueeze(1)
        return m, r

    def calibration_map(
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor], classes: torch.Tensor,
    ) -> torch.Tensor:
        """The map ``A`` (B x H x W, in (0, 1)) that reweights the pooling at inference; one per image (``classes``
        unused)."""
        return self._attention(*self._maps(x, pooled, weight, row_scale, q))[:, 0]

    def forward(
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor], target: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        g = self.pre_logits(x, pooled, weight, row_scale, q, target)
        feats = torch.cat([pooled.to(g.dtype), g])  # one product with W for both: half the K x C gradient traffic
        proj, sq_norm = F.linear(feats, weight.to(g.dtype)).chunk(2), _sq_norm(feats).chunk(2)
        return proj[0], sq_norm[0], proj[1], sq_norm[1]


class BatchCalibration(GlobalCalibration):
    """Variant D: the global calibration whose prototype map, in training, correlates each position with the other
    images of the same class in the batch.

    The direction is the mean of those images' normalised pooled features, with gradient: a region that an image
    shares with its classmates is reinforced in both. An image without a same-class partner in the batch, and every
    image at inference (no labels), uses the expected prototype as ``'global'`` does; the prototypes are the EMA of
    the same features, so inference sees what training saw, averaged. Under DDP the partners come from the rank's
    own batch.
    """

    def _prototype_direction(
            self, v: torch.Tensor, pooled: torch.Tensor, target: Optional[torch.Tensor],
    ) -> torch.Tensor:
        if target is None:
            return v
        itself = torch.eye(target.shape[0], dtype=torch.bool, device=target.device)
        others = (_same_class(target) & ~itself).to(v.dtype)
        count = others.sum(1, keepdim=True)
        peers = (others @ l2_normalize(pooled, dim=-1).to(v.dtype)) / count.clamp_min(1.)
        return torch.where(count > 0, peers, v)


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
            q: Optional[torch.Tensor], target: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Class-specific pooling has no single pooled feature: the head's plain pooled feature is returned."""
        return pooled

    def forward(
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor], target: Optional[torch.Tensor] = None,
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
            self, x: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, row_scale: torch.Tensor,
            q: Optional[torch.Tensor], classes: torch.Tensor,
    ) -> torch.Tensor:
        """The map ``A_k`` (B x H x W) of class ``classes[b]`` for each image."""
        m, r = self._maps(x, weight)
        attn = self._attention(m * row_scale.to(x.dtype)[:, None, None], r)
        return attn[torch.arange(x.shape[0], device=x.device), classes]


CALIBRATIONS: Dict[str, Type[_Calibration]] = {
    'global': GlobalCalibration,  # variant B
    'batch': BatchCalibration,  # variant D
    'class': ClassCalibration,  # variant A
    'target': TargetCalibration,  # variant C (training only)
}
