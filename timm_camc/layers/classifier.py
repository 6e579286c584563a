""" Classifiers of the CAMC head: the cosine classifier with scale ``s`` and a plain linear one

Both expose ``row_scale()`` and ``logits_from_projection(proj, sq_norm, row_scale)``, the two hooks through which a
calibration scores its own pooled features without a K x C copy of the weights.

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['NormedLinear', 'LinearClassifier', 'l2_normalize', 'tau_normalize_']


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least float32: reductions (norms, softmax) never run in half precision."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def l2_normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-6) -> torch.Tensor:
    """L2-normalise along ``dim``, computing the norm in float32 and returning the input dtype.

    Squares overflow float16 beyond 256 and the default ``1e-12`` eps underflows it, so the norm is never
    taken in reduced precision.
    """
    return F.normalize(_upcast(x), dim=dim, eps=eps).to(x.dtype)


def _sq_norm(x: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm over the last dim, kept as a column, in at least float32."""
    return _upcast(x).pow(2).sum(-1, keepdim=True)


class NormedLinear(nn.Module):
    """Cosine classifier: ``logits_k = s * <w_k / |w_k|, x / |x|>``.

    Weights are initialised like ``nn.Linear`` (uniform +-1/sqrt(in_features)): with normalised weights the
    weight norm sets the effective learning rate of the weight direction, so the init must match a linear
    baseline for comparisons to be fair.
    """

    def __init__(
            self,
            in_features: int,
            out_features: int,
            scale: float = 16.,
            learn_scale: bool = False,
            device=None,
            dtype=None,
    ):
        """
        Args:
            in_features: Feature dimension.
            out_features: Number of classes.
            scale: The scalar ``s`` multiplying the cosine similarities.
            learn_scale: Make ``s`` a trainable parameter initialised at ``scale``.
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if scale <= 0:
            raise ValueError(f'NormedLinear scale must be positive, got {scale}')
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **dd))
        if learn_scale:
            self.scale = nn.Parameter(torch.full((), float(scale), **dd))
        else:
            self.scale = float(scale)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def row_scale(self) -> torch.Tensor:
        """``1 / |w_k|`` per class. The rows are never normalised into a K x C copy: at large K that copy and its
        backward cost more memory traffic than the matrix product itself."""
        norm = torch.linalg.vector_norm(_upcast(self.weight), dim=1)
        return norm.clamp_min(1e-6).reciprocal().to(self.weight.dtype)

    def logits_from_projection(
            self, proj: torch.Tensor, sq_norm: torch.Tensor, row_scale: torch.Tensor,
    ) -> torch.Tensor:
        """Logits from raw projections ``<w_k, g>`` (B x K), ``|g|^2`` (B x 1 or B x K) and ``row_scale()``."""
        inv_feat_norm = torch.rsqrt(_upcast(sq_norm).clamp_min(1e-12)).to(proj.dtype)
        return self.scale * proj * inv_feat_norm * row_scale.to(proj.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_from_projection(F.linear(x, self.weight), _sq_norm(x), self.row_scale())

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, scale={float(self.scale):.4g}'


class LinearClassifier(nn.Linear):
    """``nn.Linear`` with the two hooks a calibration needs, so CAMC also runs on a plain linear classifier."""

    def row_scale(self) -> torch.Tensor:
        """Class maps of a linear classifier use the raw weights."""
        return torch.ones_like(self.weight[:, 0])

    def logits_from_projection(
            self, proj: torch.Tensor, sq_norm: torch.Tensor, row_scale: torch.Tensor,
    ) -> torch.Tensor:
        return proj + self.bias


@torch.no_grad()
def tau_normalize_(classifier: nn.Module, tau: float) -> None:
    """Post-hoc tau-normalisation of a linear classifier (Kang et al. 2020): ``w_k <- w_k / |w_k|^tau``.

    A cosine classifier ignores the weight norms, so there it changes nothing and is refused.
    """
    if isinstance(classifier, NormedLinear):
        raise ValueError('tau-normalisation rescales weight norms, which a cosine (normalised) classifier ignores')
    weight = getattr(classifier, 'weight', None)
    if weight is None or weight.ndim != 2:
        raise ValueError(f'tau-normalisation needs a linear classifier, got {type(classifier).__name__}')
    weight.div_(torch.linalg.vector_norm(weight, dim=1, keepdim=True).clamp_min(1e-12).pow(tau))
