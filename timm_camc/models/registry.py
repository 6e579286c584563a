""" Which registered models are timm-camc's, and their head options as model kwargs

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from typing import Any, Dict

import timm

from ..layers import HEAD_OPTIONS

__all__ = ['camc_model_kwargs', 'is_camc_model']


def is_camc_model(model_name: str) -> bool:
    """Whether a registered model name (with or without a pretrained tag) is one of timm-camc's CAMC models."""
    arch = model_name.split('.')[0]
    if not timm.is_model(arch):
        return False
    return timm.models.model_entrypoint(arch).__module__.startswith('timm_camc.')


def camc_model_kwargs(model_name: str, args: Any) -> Dict[str, Any]:
    """Model kwargs of the CAMC head (``HEAD_OPTIONS``, same names) from training options: an argparse namespace or
    a dict of them, such as a checkpoint's.

    Empty for models without a CAMC head, so the same options also drive plain timm baselines.
    """
    if not is_camc_model(model_name):
        return {}
    values = dict(args if isinstance(args, dict) else vars(args))
    if 'norm_classifier' not in values and values.get('linear_classifier') is not None:
        values['norm_classifier'] = not values['linear_classifier']  # checkpoints from before --no-norm-classifier
    return {o.name: values[o.name] for o in HEAD_OPTIONS if values.get(o.name) is not None}
