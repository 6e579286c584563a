""" Helpers shared by train.py, validate.py and the hub publisher

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
import argparse
import logging
import os
from typing import Any, Dict

import torch
import torch.nn as nn

from .layers import NormedLinear

__all__ = ['CAMC_ARG_NAMES', 'camc_model_kwargs', 'read_checkpoint_args', 'tau_normalize_']

_logger = logging.getLogger(__name__)

# training option -> model kwarg, for models with a CAMC head
CAMC_ARG_NAMES = dict(
    camc='camc', cosine_scale='cosine_scale', learn_scale='learn_scale', proto_momentum='proto_momentum',
    camc_topk='camc_topk', aux_weight='aux_weight',
)


def camc_model_kwargs(model_name: str, args: Any) -> Dict[str, Any]:
    """Model kwargs of the CAMC head from training options (an argparse namespace or a dict of them).

    Empty for models without a CAMC head, so the same options also drive plain timm baselines.
    """
    if '_camc_' not in model_name:
        return {}
    values = args if isinstance(args, dict) else vars(args)
    kwargs = {kwarg: values[name] for name, kwarg in CAMC_ARG_NAMES.items() if values.get(name) is not None}
    if values.get('linear_classifier') is not None:
        kwargs['norm_classifier'] = not values['linear_classifier']
    return kwargs


def read_checkpoint_args(path: str) -> Dict[str, Any]:
    """The training options stored in a train.py checkpoint (``{}`` for a bare state dict).

    Raises:
        FileNotFoundError: No such file.
        RuntimeError: Not a readable PyTorch checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}')
    if path.endswith('.safetensors'):
        return {}
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as e:
        raise RuntimeError(f'Cannot read checkpoint {path}: {e}') from e
    args = checkpoint.get('args') if isinstance(checkpoint, dict) else None
    if args is None:
        return {}
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)


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
