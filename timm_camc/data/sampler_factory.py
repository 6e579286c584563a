""" The long-tail samplers by name: ``SAMPLERS``, ``create_sampler`` and the training options each sampler takes

Copyright 2026, the timm-camc authors. Apache-2.0.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping

from .samplers import ClassAwareSampler, ClassPowerSampler, InstanceBalancedSampler, LongTailSampler, \
    ProgressiveSampler, RepeatFactorSampler, TargetsType

__all__ = ['SamplerEntry', 'SAMPLERS', 'SAMPLER_NAMES', 'create_sampler', 'sampler_options']


@dataclass(frozen=True)
class SamplerEntry:
    """A sampler that ``create_sampler`` knows.

    Attributes:
        factory: The sampler class.
        fixed: Kwargs the name fixes (``'sqrt'`` is ``ClassPowerSampler`` with power 0.5); giving them is an error.
        required: Kwargs that must be given -> what they mean, for the error message.
        options: Sampler kwarg -> the train.py option (argparse dest) it comes from (``sampler_options``).
    """
    factory: Callable[..., LongTailSampler]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    required: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)


_POWER = 'q (class j drawn with probability proportional to n_j ** q)'
SAMPLERS: Dict[str, SamplerEntry] = {
    'instance': SamplerEntry(InstanceBalancedSampler),
    'class_balanced': SamplerEntry(ClassPowerSampler, fixed=dict(power=0.)),
    'sqrt': SamplerEntry(ClassPowerSampler, fixed=dict(power=0.5)),
    'power': SamplerEntry(ClassPowerSampler, required=dict(power=_POWER), options=dict(power='sampler_power')),
    'progressive': SamplerEntry(
        ProgressiveSampler, required=dict(total_epochs='T (epochs until sampling is class-balanced)'),
        options=dict(total_epochs='epochs')),
    'class_aware': SamplerEntry(ClassAwareSampler),
    'repeat_factor': SamplerEntry(RepeatFactorSampler, options=dict(threshold='repeat_threshold')),
}
SAMPLER_NAMES = tuple(SAMPLERS)


def _sampler_entry(name: str) -> SamplerEntry:
    entry = SAMPLERS.get(str(name).lower().replace('-', '_'))
    if entry is None:
        raise ValueError(f"Unknown sampler '{name}', valid names: {', '.join(SAMPLER_NAMES)}")
    return entry


def sampler_options(name: str, options: Mapping[str, Any]) -> Dict[str, Any]:
    """The kwargs of sampler ``name`` from training options (e.g. ``vars(args)`` of train.py); unset (None) ones are
    left out."""
    entry = _sampler_entry(name)
    return {kwarg: options[opt] for kwarg, opt in entry.options.items() if options.get(opt) is not None}


def create_sampler(name: str, targets: TargetsType, **kwargs) -> LongTailSampler:
    """Create a long-tail sampler by name.

    Args:
        name: One of ``SAMPLERS``: ``'instance'`` (``InstanceBalancedSampler``), ``'class_balanced'``
            (``ClassPowerSampler``, power 0), ``'sqrt'`` (power 0.5), ``'power'`` (needs ``power=``), ``'progressive'``
            (``ProgressiveSampler``, needs ``total_epochs=``), ``'class_aware'`` (``ClassAwareSampler``) or
            ``'repeat_factor'`` (``RepeatFactorSampler``). Case and ``-`` / ``_`` are ignored.
        targets: Class label of each dataset sample.
        **kwargs: Passed to the sampler (``num_samples``, ``num_replicas``, ``rank``, ``seed``, ``num_classes`` and
            the sampler's own options).

    Returns:
        The sampler.
    """
    entry = _sampler_entry(name)
    for key in entry.fixed:
        if key in kwargs:
            raise ValueError(f"sampler '{name}' fixes the {key}; use create_sampler('power', ..., power=q) instead")
    for key, meaning in entry.required.items():
        if key not in kwargs:
            raise ValueError(f"sampler '{name}' needs {key}={meaning}")
    return entry.factory(targets, **entry.fixed, **kwargs)
